"""The scheduler side: create a job and its chunks, read and end jobs.

Cutting: an *adaptive* job starts as one pending chunk holding every unit; the dispatcher
(:mod:`hydra.dispatch`) splits off a piece sized to each worker's measured speed when it assigns
work. A *fixed* job is cut here into equal chunks of ``chunk_units`` units that are never split:
the proof of concept's static scheme, kept for comparison. Nothing here talks to volunteers: the
monitor serves idle workers as soon as a job is active.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

from hydra import keys, progress
from hydra.carbon.accounting import status_fields
from hydra.errors import HydraError, InvalidInput, JobFailed, MalformedRecord, NoSuchJob
from hydra.scripts import Scripts, job_script_keys
from hydra.settings import Settings
from hydra.tasks import get_task

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
ENDED = ("done", "failed", "cancelled")
MAX_CHUNKS = 100_000


@dataclass(frozen=True)
class SubmitOptions:
    chunk_seconds: float = 2.0
    max_attempts: int = 3
    result_ttl: int = 7 * 24 * 3600
    # None: adaptive chunks. An integer: fixed chunks of that many units, never split.
    chunk_units: int | None = None
    # Let the monitor queue copies of slow chunks at the tail of the job.
    speculate: bool = True
    # "1": trust each result; "2": every chunk confirmed by a second worker; "auto": spot checks.
    verify: str = "1"
    max_active_jobs: int = 100
    carbon_aware: bool = False  # hydra.carbon.options: wait for cleaner zones and hours, within the deadline
    deadline: float | None = None  # seconds from submission; only with carbon_aware

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> SubmitOptions:
        base = cls(
            chunk_seconds=settings.chunk_seconds,
            max_attempts=settings.max_attempts,
            result_ttl=settings.result_ttl,
            max_active_jobs=settings.max_active_jobs,
        )
        return cls(**{**base.__dict__, **{k: v for k, v in changes.items() if v is not None}})


def live_workers(redis: Redis) -> list[str]:
    """Names (``<user>/<wid>``) of the workers the monitor counts as alive."""
    return [n.decode() for n in redis.zrange(keys.LIVE, 0, -1)]


def new_job_id() -> str:
    return secrets.token_hex(6)


def submit(redis: Redis, task_name: str, params: Mapping[str, Any], options: SubmitOptions | None = None) -> str:
    """Check the parameters, write the job record and its chunks, enqueue the tickets; return the job id."""
    options = options or SubmitOptions()
    task = get_task(task_name)
    parsed = task.parse(params)
    plan = task.plan(parsed)
    if options.chunk_units is not None and options.chunk_units < 1:
        raise InvalidInput(f"--chunk-units must be at least 1, got {options.chunk_units}")
    if options.verify not in ("1", "2", "auto"):
        raise InvalidInput(f"--verify must be 1, 2 or auto, got {options.verify!r}")
    step = plan.units_total if options.chunk_units is None else options.chunk_units
    if count_active_jobs(redis) >= options.max_active_jobs:
        raise InvalidInput(f"{options.max_active_jobs} active jobs already; wait for one to end or cancel one")
    if -(-plan.units_total // step) > MAX_CHUNKS:
        raise InvalidInput(f"that would make more than {MAX_CHUNKS} chunks; use larger chunks")
    job_id = new_job_id()
    seed = int(parsed.get("seed", 0))
    chunks = [
        (i, first, min(step, plan.units_total - first)) for i, first in enumerate(range(0, plan.units_total, step))
    ]
    # What every descriptor of this job carries (a JSON fragment the ASSIGN script splices in).
    spec = json.dumps({"task": task.name, "version": task.version, "params": parsed, "seed": seed})[1:-1]
    now = time.time()
    record = {
        "id": job_id,
        "task": task.name,
        "version": task.version,
        "spec": spec,
        "params": json.dumps(parsed),
        "seed": seed,
        "state": "queued",
        "units_total": plan.units_total,
        "units_claimed": 0,
        "units_done": 0,
        "next_chunk": len(chunks),
        "display_unit": task.display_unit,
        "display_total": task.display_size(parsed, 0, plan.units_total),
        "created": now,
        "chunk_seconds": options.chunk_seconds,
        "max_attempts": options.max_attempts,
        "result_ttl": options.result_ttl,
        "chunking": "adaptive" if options.chunk_units is None else "fixed",
        "speculate": int(options.speculate),
        "verify": options.verify,
        "salt": secrets.token_hex(16),
        "reduce": json.dumps(task.reductions()),
        **{f"sum:{name}": value for name, value in task.initial_sums().items()},
    }
    if options.carbon_aware:  # hydra.carbon.gate reads it: hold work for cleaner zones and hours, until then
        record["carbon_deadline"] = now + (options.deadline or 24 * 3600)
    pipe = redis.pipeline()
    pipe.hset(keys.job(job_id), mapping=record)
    if plan.data:
        pipe.set(keys.data(job_id), plan.data)
    pipe.hset(
        keys.chunks(job_id),
        mapping={
            i: json.dumps({"first": first, "count": count, "state": "pending", "attempt": 0})
            for i, first, count in chunks
        },
    )
    pipe.zadd(keys.pending(job_id), {str(i): first for i, first, _ in chunks})
    pipe.zadd(keys.JOBS, {job_id: now})
    pipe.zadd(keys.ACTIVE, {job_id: now})
    pipe.execute()
    _serve_idle_workers(redis)
    return job_id


def _serve_idle_workers(redis: Redis) -> None:
    """Give the new job to workers waiting for work now, rather than at the monitor's next pass.

    The scheduler is trusted, so it may dispatch; a failure here only delays the job by one pass."""
    from hydra.dispatch import Dispatcher

    try:
        Dispatcher(redis, Settings.from_env(), one_probe_each=False).serve_idle(1000, budget=0.05)
    except Exception as exc:
        log.debug("no immediate dispatch: %s", exc)


def count_active_jobs(redis: Redis) -> int:
    return int(redis.zcard(keys.ACTIVE))


def read_job(redis: Redis, job_id: str) -> dict[str, Any]:
    """The job record with numbers and params decoded; raises :class:`NoSuchJob`."""
    return parse_job(job_id, redis.hgetall(keys.job(job_id)) if _plausible_id(job_id) else {})


def parse_job(job_id: str, raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """:func:`read_job`'s record from the job hash as ``HGETALL`` read it (for a caller that read it
    in a round trip of its own)."""
    if not raw:
        raise NoSuchJob(f"no job {job_id!r} (it never existed, or its results expired)")
    try:
        record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        record["params"] = json.loads(record["params"])
        for name in ("units_total", "units_claimed", "units_done", "display_total", "max_attempts", "seed"):
            record[name] = int(record[name])
        record["display_done"] = int(record.get("display_done", 0))
        for name in ("created", "started", "finished", "chunk_seconds"):
            if name in record:
                record[name] = float(record[name])
        for name in [k for k in record if k.startswith("sum:")]:
            record[name] = int(record[name])
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise MalformedRecord(f"job {job_id} has a malformed record ({type(exc).__name__}: {exc})") from None
    return record


def _plausible_id(job_id: str) -> bool:
    return isinstance(job_id, str) and 0 < len(job_id) <= 64 and job_id.isalnum()


def job_status(
    redis: Redis, job_id: str, record: Mapping[str, Any] | None = None, *, workers: int | None = None
) -> dict[str, Any]:
    """What a person (CLI, page) wants to know about a job, as a JSON-ready dict. ``record`` (as
    :func:`read_job` returns it) and ``workers`` (how many took part): where the caller read them.

    Raises :class:`MalformedRecord` (one line) for a record no Hydra process would have written."""
    try:
        return _job_status(redis, job_id, record, workers)
    except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
        raise MalformedRecord(f"job {job_id} has a malformed record ({type(exc).__name__}: {exc})") from None


def _job_status(
    redis: Redis, job_id: str, record: Mapping[str, Any] | None = None, workers: int | None = None
) -> dict[str, Any]:
    record = record or read_job(redis, job_id)
    task = get_task(record["task"])
    now = time.time()
    end = record.get("finished", now)
    started = record.get("started")
    done_units = record["units_done"]
    # Counted by the trusted side as results are accepted (a short last block counts as what it holds).
    display_done = record.get("display_done") or 0
    if done_units == record["units_total"]:
        display_done = record["display_total"]
    elapsed = end - record["created"]
    speed = progress.rate(display_done, started, record["created"], end)
    status: dict[str, Any] = {
        "job": job_id,
        "task": record["task"],
        "state": record["state"],
        "params": record["params"],
        "unit": record["display_unit"],
        "done": display_done,
        "total": record["display_total"],
        "progress": display_done / record["display_total"] if record["display_total"] else 1.0,
        "rate": speed,
        "eta": progress.eta(display_done, record["display_total"], speed, elapsed, record["state"] in ACTIVE),
        "elapsed": elapsed,
        "created": record["created"],
        "chunking": record["chunking"],
        "workers": redis.hlen(keys.job_workers(job_id)) if workers is None else workers,
        "requeued": int(record.get("requeued", 0)),
        **status_fields(record),  # co2_grams, energy_kwh, energy_measured so far (hydra.carbon.accounting)
    }
    if record.get("error"):
        status["error"] = record["error"]
    from hydra.task_workers import waiting_for

    if detail := waiting_for(redis, record):  # no live worker runs this task version: say so
        status["detail"] = detail
    if record["state"] == "done":
        status["result"] = result_of(redis, job_id, record)
    elif done_units:
        status["estimate"] = task.summarize(record)
    return status


def result_of(redis: Redis, job_id: str, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The finished job's result: the task's summary plus timing and the workers that took part."""
    record = record or read_job(redis, job_id)
    if record["state"] != "done":
        reason = f": {record['error']}" if record.get("error") else ""
        raise JobFailed(f"job {job_id} is {record['state']}{reason}")
    seconds = record["finished"] - record["created"]
    speed = progress.rate(record["display_total"], record.get("started"), record["created"], record["finished"])
    summary = get_task(record["task"]).summarize(record)
    from hydra.carbon.accounting import result_fields

    return {
        "job": job_id,
        "task": record["task"],
        **summary,
        **result_fields(record),
        "seconds": seconds,
        f"{record['display_unit']}_per_second": speed or None,
        "workers": redis.hlen(keys.job_workers(job_id)),
    }


def units_by_worker(redis: Redis, job_id: str) -> dict[str, int]:
    """How many units each worker's results counted for in the job."""
    return {k.decode(): int(v) for k, v in redis.hgetall(keys.job_workers(job_id)).items()}


def cancel(redis: Redis, job_id: str) -> bool:
    """End an active job: its tickets leave the queue and its chunks the deadline set. False if it had ended."""
    read_job(redis, job_id)
    scripts = Scripts(redis)
    return bool(scripts.end(keys=job_script_keys(job_id), args=[job_id, "cancelled", time.time(), "cancelled by user"]))


def list_jobs(redis: Redis, limit: int = 50) -> list[dict[str, Any]]:
    """The newest jobs first; expired ones are skipped, and so is a record this process cannot read
    (malformed, or a task not installed here): one bad record never hides the others."""
    out = []
    for raw in redis.zrevrange(keys.JOBS, 0, limit - 1):
        try:
            out.append(job_status(redis, raw.decode(errors="replace")))
        except NoSuchJob:
            continue
        except (HydraError, KeyError, ValueError, TypeError, ArithmeticError) as exc:
            log.warning("job %r set aside: %s", raw[:64], exc)
    return out


def wait_for_job(
    redis: Redis,
    job_id: str,
    *,
    timeout: float | None = None,
    poll: float = 0.1,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Block until the job has ended (done, failed or cancelled); return its final status.

    Progress is a read of the job record, so this is cheap; raises TimeoutError after ``timeout``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = job_status(redis, job_id)
        if on_progress:
            on_progress(status)
        if status["state"] in ENDED:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status['state']} after {timeout} s")
        time.sleep(poll)
