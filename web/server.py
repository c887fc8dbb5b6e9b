"""``hydra web``: serve the page with gunicorn, a production WSGI server.

Flask-SocketIO runs in its threading mode under gunicorn's threaded worker, with simple-websocket
providing the WebSocket transport (its documented deployment; no monkey patching, so numba and
redis-py behave as everywhere else). One worker process with many threads: each open socket holds
a thread. More page processes scale out behind a load balancer with sticky sessions, since they
share events through Redis (see app.py).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask

from hydra.errors import HydraError

log = logging.getLogger(__name__)

# Concurrent connections of the one worker process (each browser's socket holds one).
THREADS = 100


def serve(redis_url: str, host: str = "127.0.0.1", port: int = 5000, wheel_dir: str | None = None) -> None:
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise HydraError("`hydra web` needs gunicorn (pip install gunicorn; not available on Windows)") from None

    from hydra.wheel import find_wheel, start_build
    from hydra_web.app import create_app

    config: dict[str, Any] = {"REDIS_URL": redis_url}
    create_app(config)  # fail here, in one line, on a bad URL or placeholder secret, not in the worker
    wheel_dir = wheel_dir or os.environ.get("HYDRA_WHEEL_DIR") or None
    build_dir = None
    if not find_wheel(wheel_dir):
        build_dir = tempfile.TemporaryDirectory(prefix="hydra-wheel-")
        if start_build(Path(build_dir.name)):
            wheel_dir = build_dir.name
        else:
            log.warning("no hydra_volunteer wheel to serve on /join: give --wheel-dir")
    config["WHEEL_DIR"] = wheel_dir

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": THREADS,
                # A stop (Ctrl-C of `hydra up`, `docker compose stop`) does not wait for open sockets.
                "graceful_timeout": 1,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "warning",
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Flask:
            # Built in the worker process, after the fork: no threads or sockets cross it.
            return create_app(config)

    log.info("page on http://%s:%d", host, port)
    try:
        Server().run()
    finally:
        if build_dir:
            build_dir.cleanup()
