"""Which live workers can run which task version: for ``hydra tasks``, submit's warning and job state.

A worker advertises ``{task name: version}`` in its hello; the trusted side keeps it in the worker's
record (field ``tasks``, JSON). A chunk goes only to a worker advertising the job's version, so a job
whose version no live worker has waits, and says so (:func:`waiting_detail`).
"""

from __future__ import annotations

import json
from collections import Counter

from redis import Redis

from hydra import keys
from hydra.queue import live_workers


def advertised(redis: Redis) -> dict[str, dict[str, str]]:
    """live worker name → {task: version} it advertises (empty if it advertised nothing)."""
    names = live_workers(redis)
    if not names:
        return {}
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.worker(name), "tasks")
    out: dict[str, dict[str, str]] = {}
    for name, raw in zip(names, pipe.execute(), strict=True):
        try:
            tasks = json.loads(raw) if raw else {}
        except ValueError:
            tasks = {}
        out[name] = {str(k): str(v) for k, v in tasks.items()} if isinstance(tasks, dict) else {}
    return out


def live_workers_by_task(redis: Redis) -> dict[str, dict[str, int]]:
    """task name → {version: number of live workers advertising it}, from the running totals the
    monitor keeps as workers join and leave (``version:<task>@<version>`` in ``hydra:counts``):
    one read, whatever the number of workers."""
    counts: dict[str, Counter[str]] = {}
    for field, value in redis.hgetall(keys.COUNTS).items():
        kind, _, rest = field.decode(errors="replace").partition(":")
        name, _, version = rest.rpartition("@")
        if kind == "version" and name and int(float(value)) > 0:
            counts.setdefault(name, Counter())[version] += int(float(value))
    return {name: dict(versions) for name, versions in counts.items()}


def count_for(redis: Redis, task: str, version: str) -> int:
    """How many live workers advertise ``task`` at ``version`` (one read)."""
    return int(float(redis.hget(keys.COUNTS, f"version:{task}@{version}") or 0))


def workers_for(redis: Redis, task: str, version: str) -> list[str]:
    """Live workers that may be given chunks of ``task`` at ``version``."""
    return sorted(name for name, tasks in advertised(redis).items() if tasks.get(task) == version)


def waiting_detail(task: str, version: str) -> str:
    """The state detail of a job no live worker can run."""
    return f"waiting for a worker with {task} {version}"


def submit_warning(redis: Redis, task: str, version: str) -> str | None:
    """A one-line warning for ``hydra submit`` when no live worker runs this task version, else None."""
    if count_for(redis, task, version) > 0:
        return None
    others = live_workers_by_task(redis).get(task, {})
    if others:
        seen = ", ".join(f"{v} ({n})" for v, n in sorted(others.items()))
        return f"no live worker runs {task} {version} (live workers have version {seen}); the job waits"
    return f"no live worker runs {task} {version}; the job waits until one does"


def waiting_for(redis: Redis, record: dict) -> str | None:
    """The job's wait, if no live worker runs its task version and it is not over; else None."""
    if record.get("state") not in ("queued", "running"):
        return None
    task, version = str(record.get("task")), str(record.get("version", ""))
    return None if count_for(redis, task, version) > 0 else waiting_detail(task, version)
