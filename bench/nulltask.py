"""A ``null`` task for the scale benchmarks: a chunk costs nothing to compute, so what is measured
is Hydra's own overhead (Redis, the monitor, the protocol), never a kernel.

One unit stands for one millisecond of simulated work: a simulated volunteer of speed 1 sleeps
``count`` ms before it answers (see :mod:`bench.swarm`), so the trusted side measures a speed of
1,000 units a second and sizes chunks to the job's chunk time as it would for a real kernel. A
real worker (:class:`NullWorker`) answers at once. The only sum, ``n``, is the number of units, so
a job is accounted for exactly when ``sum:n`` equals ``units_total``.

Both sides must know the task: :func:`register` adds it to the process's task registry (the
benchmark's own processes, :mod:`bench.swarm_monitor`, and the worker class below call it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InvalidInput
from hydra.tasks.base import ChunkResult, Plan, Task, parse_count
from hydra.worker import HydraWorker

MAX_UNITS = 10**12


class NullTask(Task):
    name = "null"
    version = "1"
    display_unit = "units"
    sums = ("n",)

    def parse(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"units": parse_count("units", params.get("units", "1000"), low=1, high=MAX_UNITS)}

    def plan(self, params: dict[str, Any]) -> Plan:
        return Plan(units_total=params["units"])

    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        return float(count)

    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        return max(1, min(count, int(work)))

    def probe_units(self, params: dict[str, Any]) -> int:
        return 50

    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        return count

    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        return ChunkResult(sums={"n": count})

    def check_result(self, params: dict[str, Any], count: int, result: ChunkResult) -> None:
        super().check_result(params, count, result)
        if result.sums.get("n") != count:
            raise InvalidInput("n must equal the chunk's unit count")

    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"n": int(record.get("sum:n", 0)), "units": record["params"]["units"]}


def register() -> Task:
    """Make the null task known to this process (idempotent): the benchmark's processes load it
    as if a package had installed it (``installed()`` is the cached registry behind TASKS)."""
    from hydra.tasks import installed

    return installed().setdefault(NullTask.name, NullTask())


class NullWorker(HydraWorker):
    """``rq worker hydra`` that also runs the null task (``RQ_WORKER_CLASS=bench.nulltask.NullWorker``)."""


register()
