"""What the page shows, read from Redis: the snapshot a browser gets first, and π traces."""

from __future__ import annotations

import math
from typing import Any

from redis import Redis

from hydra import keys
from hydra.errors import NoSuchJob
from hydra.queue import list_jobs, read_job
from hydra.workers import worker_summary

TRACE_POINTS = 400


def pi_point(samples: int, inside: int) -> list[float]:
    """[samples, estimate, standard error] of a π job after ``samples`` samples."""
    p = inside / samples
    return [samples, 4 * p, 4 * math.sqrt(p * (1 - p) / samples)]


def pi_trace(redis: Redis, job_id: str) -> list[list[float]]:
    """The π estimate after each chunk (at most TRACE_POINTS points, evenly thinned)."""
    try:
        total = read_job(redis, job_id)["params"]["samples"]
    except NoSuchJob:
        return []
    raw = redis.lrange(keys.trace(job_id), 0, -1)
    step = max(1, len(raw) // TRACE_POINTS)
    chosen = raw[::step] + ([raw[-1]] if raw and (len(raw) - 1) % step else [])
    points = []
    for entry in chosen:
        # Each point is "samples counted, inside so far" (the last block may be short, and early).
        samples, inside = (int(x) for x in entry.split()[:2])
        samples = min(samples, total)
        if samples:
            points.append(pi_point(samples, inside))
    return points


# Jobs in the snapshot: the newest; older ones are paged in by the page (/api/jobs).
SNAPSHOT_JOBS = 20


def snapshot(redis: Redis, *, read_only: bool) -> dict[str, Any]:
    jobs = list_jobs(redis, SNAPSHOT_JOBS)
    return {
        "jobs": jobs,
        "jobs_total": int(redis.zcard(keys.JOBS)),
        # The bounded summary (no host names: the page is public); the full list is paged (/api/workers).
        "workers": worker_summary(redis),
        "traces": {j["job"]: pi_trace(redis, j["job"]) for j in jobs[:20] if j["task"] == "pi"},
        "read_only": read_only,
    }
