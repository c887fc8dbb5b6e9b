"""What the page needs to know about the installed tasks: their parameters (for the generated form)
and, for a job, the chart points of the series its task declares. Registered by :func:`web.app.create_app`.

``GET /api/tasks``: one entry per installed task: name, version, fingerprint, display unit, the
parameter schema (:func:`hydra.tasks.params.schema`), output files and chart labels.
``GET /api/jobs/<id>/series``: ``{"labels": [...], "points": [[x, y, ...], ...]}`` from the job's
trace (the job's totals after each accepted chunk), at most ``POINTS`` points.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from hydra import keys
from hydra.queue import read_job
from hydra.tasks import get_task, installed, task_fingerprint
from hydra.tasks.params import schema

POINTS = 400

bp = Blueprint("hydra_tasks", __name__)


@bp.get("/api/tasks")
def api_tasks():
    return jsonify(
        [
            {
                "name": name,
                "version": task.version,
                "fingerprint": task_fingerprint(task),
                "unit": task.display_unit,
                "doc": ((type(task).__doc__ or "").strip().splitlines() or [""])[0],
                "params": schema(task.params),
                "outputs": [{"name": o.name, "help": o.help} for o in task.outputs],
                "series": list(task.series),
            }
            for name, task in sorted(installed().items())
        ]
    )


@bp.get("/api/jobs/<job_id>/series")
def api_series(job_id: str):
    redis = current_app.extensions["hydra_redis"]
    record = read_job(redis, job_id)
    task = get_task(record["task"])
    raw = redis.lrange(keys.trace(job_id), 0, -1) if task.series else []
    step = max(1, len(raw) // POINTS)
    chosen = raw[::step] + ([raw[-1]] if raw and (len(raw) - 1) % step else [])
    points = []
    for entry in chosen:
        fields = [int(x) for x in entry.split()]
        totals = dict(zip(task.sums, fields[1:], strict=False))
        point = task.series_point(record["params"], fields[0], totals)
        if point is not None:
            points.append(point)
    return jsonify({"labels": list(task.series), "points": points})
