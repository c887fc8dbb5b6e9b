"""The Join page: how a volunteer installs the exact Hydra the cluster runs and starts a worker.

``/join`` shows the commands; ``/join/<wheel>`` serves the wheel (see :mod:`hydra.wheel`).
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request, send_file

from hydra import __version__
from hydra.settings import QUEUE_NAME, WORKER_CLASS
from hydra.wheel import WHEEL_NAME, find_wheel

bp = Blueprint("join", __name__)


@bp.get("/join")
def join():
    wheel = find_wheel(current_app.config.get("WHEEL_DIR"))
    return render_template(
        "join.html",
        version=__version__,
        wheel_url=request.host_url + "join/" + WHEEL_NAME,
        wheel_ready=wheel is not None,
        worker_class=WORKER_CLASS,
        queue=QUEUE_NAME,
    )


@bp.get(f"/join/{WHEEL_NAME}")
def wheel():
    path = find_wheel(current_app.config.get("WHEEL_DIR"))
    if path is None:
        abort(503, description="the wheel is not ready yet (being built at start), or this server has none")
    return send_file(path, mimetype="application/octet-stream", download_name=WHEEL_NAME, max_age=300)
