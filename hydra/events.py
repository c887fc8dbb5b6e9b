"""Events for the live page, emitted through Flask-SocketIO's Redis message queue.

Any Hydra process creates an :class:`Events` and emits; the web processes relay to browsers.
Progress is coalesced with a short-lived Redis gate (``hydra:emit:<job>``, 100 ms), so however
many chunks land per second a job yields at most ~10 progress events a second, from whichever
process passes the gate first. Emitting never blocks or breaks the work: failures are logged once.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from redis import Redis

from hydra import keys

log = logging.getLogger(__name__)

CHANNEL = "hydra-socketio"
PROGRESS_INTERVAL_MS = 100


class Events:
    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self._emitter: Any = None
        self._broken = False
        self._listening = False
        self._listening_checked = -1e9
        self._emitted: dict[str, float] = {}

    @classmethod
    def from_env(cls) -> Events:
        return cls(os.environ.get("HYDRA_REDIS_URL") or os.environ.get("RQ_REDIS_URL"))

    def connect(self) -> None:
        """Make the emitter now (importing Flask-SocketIO takes about 0.1 s), not at the first event:
        a long-running process calls this at start so no later step pays for it."""
        if self._broken or not self.redis_url or self._emitter is not None:
            return
        try:
            from flask_socketio import SocketIO

            self._emitter = SocketIO(message_queue=self.redis_url, channel=CHANNEL)
        except Exception as exc:  # the page is a view; the work must go on without it
            log.warning("cannot emit events to the page (%s); carrying on without them", exc)
            self._broken = True

    def emit(self, name: str, data: Any) -> None:
        self.connect()
        if self._broken or not self.redis_url:
            return
        try:
            self._emitter.emit(name, data, namespace="/")
        except Exception as exc:  # the page is a view; the work must go on without it
            log.warning("cannot emit events to the page (%s); carrying on without them", exc)
            self._broken = True

    def page_is_listening(self, redis: Redis) -> bool:
        """Whether any web process subscribes to the events (checked at most once a second).

        Lets workers skip work done only for the page, such as drawing a stripe's preview.
        """
        now = time.monotonic()
        if now - self._listening_checked > 1.0:
            try:
                self._listening = bool(self.redis_url) and redis.pubsub_numsub(CHANNEL)[0][1] > 0
            except Exception:
                self._listening = False
            self._listening_checked = now
        return self._listening

    def job_progress(self, redis: Redis, job_id: str, *, force: bool = False) -> None:
        """Emit the job's status if no other process did so in the last 100 ms (or if ``force``)."""
        if not self.redis_url:
            return
        now = time.monotonic()
        if not force and now - self._emitted.get(job_id, -1e9) < PROGRESS_INTERVAL_MS / 1000:
            return  # this process emitted for the job moments ago: no need to ask Redis
        self._emitted[job_id] = now
        if len(self._emitted) > 10000:
            self._emitted.clear()
        from hydra.queue import job_status, parse_job

        try:
            # The gate and what the status needs most in one round trip (a pass sends one event per
            # active job: five round trips each, before).
            pipe = redis.pipeline(transaction=False)
            if not force:
                pipe.set(keys.emit_gate(job_id), 1, nx=True, px=PROGRESS_INTERVAL_MS)
            pipe.hgetall(keys.job(job_id))
            pipe.hlen(keys.job_workers(job_id))
            *gate, raw, workers = pipe.execute()
            if gate and not gate[0]:
                return  # another process sent it moments ago
            self.emit("job", job_status(redis, job_id, parse_job(job_id, raw), workers=workers))
        except Exception as exc:
            log.debug("no progress event for %s: %s", job_id, exc)
