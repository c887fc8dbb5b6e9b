"""``hydra web``: serve the page (Werkzeug's threaded server with WebSocket support)."""

from __future__ import annotations

import logging

from web.app import create_app, socketio

log = logging.getLogger(__name__)


def serve(redis_url: str, host: str = "127.0.0.1", port: int = 5000) -> None:
    app = create_app({"REDIS_URL": redis_url})
    log.info("page on http://%s:%d", host, port)
    socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=True, log_output=False)
