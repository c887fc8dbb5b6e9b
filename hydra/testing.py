"""Run a job of any task in this process, with no Redis and no workers: for testing a task.

``run_job("primes", {"below": "1e6"}, chunk_units=3)`` does what a cluster does, in one process:
parses the parameters (twice, as the CLI and the scheduler do), plans the job, cuts it into chunks
of ``chunk_units`` units, runs every chunk from a JSON copy of the parameters (what a worker gets)
in a shuffled order, applies the trusted side's checks to every chunk result, combines the sums with
the task's own reductions and returns the task's summary plus the timing fields of a real result.
A task whose result depends on the cut or the order fails here.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.tasks import get_task
from hydra.tasks.base import Task


class TaskContractError(AssertionError):
    """The task broke a rule every task must keep (see docs/tasks.md)."""


def run_job(
    task: str | Task,
    params: Mapping[str, Any] | None = None,
    *,
    chunk_units: int | None = None,
    shuffle: int | None = 0,
    device: str = "cpu",
    outputs: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """The job's result dict, computed here. ``shuffle``: seed of the chunk order (None: in order)."""
    task = get_task(task) if isinstance(task, str) else task
    parsed = task.parse(params or {})
    again = task.parse(json.loads(json.dumps(parsed)))
    if again != parsed:
        raise TaskContractError(f"{task.name}.parse is not idempotent: {parsed} then {again}")
    plan = task.plan(parsed)
    total = plan.units_total
    step = chunk_units or max(1, -(-total // 7))
    ranges = [(first, min(step, total - first)) for first in range(0, total, step)]
    if shuffle is not None:
        random.Random(shuffle).shuffle(ranges)
    sums: dict[str, int] = task.initial_sums()
    blobs: list[bytes] = []
    started = time.perf_counter()
    task.warm_up()
    for first, count in ranges:
        wire = json.loads(json.dumps(parsed))  # what a worker receives in its chunk descriptor
        result = task.run(wire, b"", int(parsed.get("seed", 0) or 0), first, count, device)
        task.check_result(parsed, count, result)
        task.check_sums(parsed, first, count, json.loads(json.dumps(result.sums)))
        sums = task.combine(sums, result.sums)
        if result.blob:
            blobs.append(result.blob)
    seconds = time.perf_counter() - started
    record = {
        "task": task.name,
        "params": parsed,
        "units_total": total,
        "units_done": total,
        "reduce": task.reductions(),
        **{f"sum:{name}": value for name, value in sums.items()},
    }
    out: dict[str, Any] = {"job": "local", "task": task.name, **task.summarize(record)}
    display = task.display_size(parsed, 0, total)
    out.update(
        {
            "seconds": seconds,
            f"{task.display_unit}_per_second": display / seconds if seconds > 0 else None,
            "workers": 1,
            "chunks": len(ranges),
        }
    )
    if outputs:
        task.write_outputs(parsed, iter(blobs), {name: Path(path) for name, path in outputs.items()})
        out["files"] = [str(path) for path in outputs.values()]
    return out
