"""The files a finished job writes (``hydra submit <task> --<output> PATH``), from its stored chunk blobs.

Which files exist is the task's declaration (``Task.outputs``); how they are written is the task's
``write_outputs``. This module only checks the paths before a job starts and hands the task the
job's blobs, one per accepted chunk, in no particular order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from redis import Redis

from hydra import keys
from hydra.errors import InvalidInput
from hydra.queue import read_job
from hydra.tasks import get_task


def check_writable(path: str | os.PathLike[str], what: str) -> Path:
    """Fail early, before a job is enqueued, if ``path`` cannot be written."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if (
        target.is_dir()
        or not folder.is_dir()
        or not os.access(folder, os.W_OK)
        or (target.exists() and not os.access(target, os.W_OK))
    ):
        raise InvalidInput(f"cannot write {what} to {path}")
    return target


def job_blobs(redis: Redis, job_id: str) -> Iterator[bytes]:
    """The result blobs of a job's accepted chunks, streamed (a big image does not sit in memory)."""
    for _, blob in redis.hscan_iter(keys.blobs(job_id), count=16):
        yield blob


def write_job_outputs(redis: Redis, job_id: str, paths: Mapping[str, str | os.PathLike[str]]) -> list[str]:
    """Write the finished job's files (output name → path); return the paths written."""
    if not paths:
        return []
    record = read_job(redis, job_id)
    task = get_task(record["task"])
    declared = {output.name for output in task.outputs}
    unknown = sorted(set(paths) - declared)
    if unknown:
        raise InvalidInput(f"a {task.name} job has no file to write: --{unknown[0]} is only for jobs that make one")
    checked = {name: check_writable(path, f"--{name}") for name, path in paths.items()}
    task.write_outputs(record["params"], job_blobs(redis, job_id), checked)
    return [str(path) for path in paths.values()]
