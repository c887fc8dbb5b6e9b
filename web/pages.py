"""Routes the page reads beyond its snapshot: one job's own view, job history, CO2 per zone, and worker
lists a page at a time."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request

from hydra import keys
from hydra.carbon.summary import carbon_summary
from hydra.errors import InvalidInput, NoSuchJob
from hydra.queue import job_status
from hydra.tasks import TASKS
from hydra.workers import worker_page

bp = Blueprint("pages", __name__)

MAX_LIMIT = 100


def _paging(default_limit: int) -> tuple[int, int]:
    try:
        offset = int(request.args.get("offset", 0))
        limit = int(request.args.get("limit", default_limit))
    except ValueError:
        raise InvalidInput("offset and limit must be whole numbers") from None
    if offset < 0 or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"offset must be at least 0 and limit between 1 and {MAX_LIMIT}")
    return offset, limit


def _redis():
    return current_app.extensions["hydra_redis"]


@bp.get("/jobs/<job_id>")
def job_view(job_id: str):
    """The page, opened on one job (its row selected, its chart or picture shown)."""
    job_status(_redis(), job_id)  # 404 for an unknown job
    return render_template(
        "index.html", read_only=not current_app.config["WEB_TOKEN"], tasks=sorted(TASKS), job_id=job_id
    )


@bp.get("/api/jobs")
def api_jobs():
    """Jobs newest first, ``limit`` from ``offset``: {"total", "offset", "jobs"}."""
    offset, limit = _paging(20)
    redis = _redis()
    jobs = []
    for raw in redis.zrevrange(keys.JOBS, offset, offset + limit - 1):
        try:
            jobs.append(job_status(redis, raw.decode()))
        except NoSuchJob:
            continue
    return jsonify({"total": int(redis.zcard(keys.JOBS)), "offset": offset, "jobs": jobs})


@bp.get("/api/carbon")
def api_carbon():
    """CO2 per grid zone (the most emitting zones, then "other") and the totals: a location-based estimate."""
    return jsonify(carbon_summary(_redis()))


@bp.get("/api/workers")
def api_workers():
    """Live workers newest first, ``limit`` from ``offset`` (no host names: the page is public)."""
    offset, limit = _paging(50)
    return jsonify(worker_page(_redis(), offset, limit))
