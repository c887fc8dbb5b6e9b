"""The Flask application factory, its routes and its Socket.IO handlers.

Events reach browsers through Flask-SocketIO's Redis message queue (channel ``hydra-socketio``):
workers, the monitor and the scheduler emit with write-only emitters (:mod:`hydra.events`), and
every web process relays them, so any number of web processes can serve the page. A browser that
connects first gets one ``snapshot`` event, then the stream: ``job`` (coalesced progress),
``tile`` (a finished Mandelbrot stripe), ``workers`` and ``cluster`` (once a second, from the
monitor).

Mutating requests (submit, cancel) need the token ``HYDRA_WEB_TOKEN`` in the ``X-Hydra-Token``
header: a custom header cannot be sent cross-site without a CORS preflight, which the app never
grants, so it also protects against CSRF. Without a configured token the page is read-only.
Socket.IO accepts only the page's own origin (or ``HYDRA_WEB_ORIGINS``).
"""

from __future__ import annotations

import hmac
import os
import tempfile
from pathlib import Path
from typing import Any

import redis as redis_lib
from flask import Blueprint, Flask, current_app, jsonify, render_template, request, send_file
from flask_socketio import SocketIO, emit

from hydra.connection import connect
from hydra.errors import HydraError, InvalidInput, NoSuchJob
from hydra.events import CHANNEL, Events
from hydra.queue import SubmitOptions, cancel, job_status, read_job, submit
from hydra.secrets import check_secrets
from hydra.settings import Settings
from hydra.tasks import TASKS

from .credit import bp as credit_bp
from .join import bp as join_bp
from .pages import bp as pages_bp
from .tasks_api import bp as tasks_bp
from .views import snapshot

socketio = SocketIO()
bp = Blueprint("hydra", __name__)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        REDIS_URL=Settings.from_env().redis_url,
        WEB_TOKEN=os.environ.get("HYDRA_WEB_TOKEN", ""),
        WEB_ORIGINS=os.environ.get("HYDRA_WEB_ORIGINS", ""),
        # False only in tests: Flask-SocketIO's test client cannot use a message queue.
        MESSAGE_QUEUE=True,
    )
    app.config.update(config or {})
    app.extensions["hydra_redis"] = connect(app.config["REDIS_URL"])
    app.extensions["hydra_events"] = Events(app.config["REDIS_URL"])
    check_secrets(app.config["REDIS_URL"], app.config["WEB_TOKEN"])
    app.register_blueprint(bp)
    app.register_blueprint(tasks_bp)
    app.register_blueprint(credit_bp)
    app.register_blueprint(join_bp)
    app.register_blueprint(pages_bp)
    origins = [o for o in app.config["WEB_ORIGINS"].split(",") if o] or None
    queue = app.config["REDIS_URL"] if app.config["MESSAGE_QUEUE"] else None
    socketio.init_app(app, message_queue=queue, channel=CHANNEL, async_mode="threading", cors_allowed_origins=origins)
    return app


def _redis() -> redis_lib.Redis:
    return current_app.extensions["hydra_redis"]


def _read_only() -> bool:
    return not current_app.config["WEB_TOKEN"]


def _authorised() -> bool:
    token = current_app.config["WEB_TOKEN"]
    given = request.headers.get("X-Hydra-Token", "")
    return bool(token) and hmac.compare_digest(token.encode(), given.encode())


def _error(message: str, status: int):
    return jsonify({"error": message}), status


@bp.errorhandler(HydraError)
def _hydra_error(exc: HydraError):
    return _error(str(exc), 404 if isinstance(exc, NoSuchJob) else 400)


@bp.errorhandler(redis_lib.RedisError)
def _redis_error(exc: redis_lib.RedisError):
    return _error(f"Redis is unavailable: {exc}", 503)


@bp.get("/")
def index():
    return render_template("index.html", read_only=_read_only(), tasks=sorted(TASKS))


@bp.get("/healthz")
def healthz():
    try:
        _redis().ping()
    except redis_lib.RedisError as exc:
        return jsonify({"ok": False, "error": str(exc)}), 503
    return jsonify({"ok": True})


@bp.get("/api/snapshot")
def api_snapshot():
    return jsonify(snapshot(_redis(), read_only=_read_only()))


@bp.get("/api/jobs/<job_id>")
def api_job(job_id: str):
    return jsonify(job_status(_redis(), job_id))


@bp.post("/api/jobs")
def api_submit():
    if not _authorised():
        return _error("read-only page" if _read_only() else "wrong or missing token", 403)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("params", {}), dict):
        raise InvalidInput('the body must be JSON: {"task": ..., "params": {...}}')
    task = body.get("task")
    if task not in TASKS:
        raise InvalidInput(f"unknown task {task!r}")
    params = {k: v for k, v in body.get("params", {}).items() if v not in (None, "")}
    job_id = submit(_redis(), task, params, SubmitOptions.from_settings(Settings.from_env()))
    current_app.extensions["hydra_events"].job_progress(_redis(), job_id, force=True)
    return jsonify({"job": job_id}), 201


@bp.post("/api/jobs/<job_id>/cancel")
def api_cancel(job_id: str):
    if not _authorised():
        return _error("read-only page" if _read_only() else "wrong or missing token", 403)
    if not cancel(_redis(), job_id):
        raise InvalidInput(f"job {job_id} has already ended")
    current_app.extensions["hydra_events"].job_progress(_redis(), job_id, force=True)
    return jsonify({"job": job_id, "state": "cancelled"})


@bp.get("/jobs/<job_id>/image.png")
def job_image(job_id: str):
    from hydra.outputs import write_job_outputs

    record = read_job(_redis(), job_id)
    if record["task"] != "mandelbrot" or record["state"] != "done":
        raise InvalidInput(f"job {job_id} has no finished image")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"mandelbrot-{job_id}.png"
        write_job_outputs(_redis(), job_id, {"out": path})
        data = path.read_bytes()
    from io import BytesIO

    return send_file(BytesIO(data), mimetype="image/png", download_name=f"mandelbrot-{job_id}.png")


@socketio.on("connect")
def on_connect(auth: Any = None) -> None:
    emit("snapshot", snapshot(_redis(), read_only=_read_only()))
