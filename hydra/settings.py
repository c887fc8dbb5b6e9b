"""Typed settings, read from arguments and ``HYDRA_*`` environment variables in one place.

Nothing is read at import time: call :meth:`Settings.from_env` where a process starts.
Per-job knobs (chunk seconds, attempts) travel in the job record instead, so that every
worker applies the submitter's choice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hydra.errors import InvalidInput

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE_NAME = "hydra"
WORKER_CLASS = "hydra.worker.HydraWorker"


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    # Target wall time of one chunk on the worker that runs it.
    chunk_seconds: float = 2.0
    # How long finished, failed and cancelled jobs keep their records and results.
    result_ttl: int = 7 * 24 * 3600
    # A worker refreshes its liveness key every heartbeat_interval; it expires after heartbeat_ttl.
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 3.0
    # A chunk's deadline is start + deadline_factor × expected time + deadline_slack.
    deadline_factor: float = 3.0
    deadline_slack: float = 5.0
    max_attempts: int = 3
    # Submissions are refused while this many jobs are queued or running.
    max_active_jobs: int = 100
    monitor_interval: float = 0.25
    device: str = "auto"
    # Accept any TLS certificate from Redis (development only; a warning is printed).
    tls_insecure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``HYDRA_<FIELD>`` variables, then explicit non-None overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"HYDRA_{f.name.upper()}")
            if raw is None and f.name == "redis_url":
                raw = env.get("RQ_REDIS_URL")
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, type(getattr(cls, f.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.chunk_seconds <= 0 or self.chunk_seconds > 3600:
            raise InvalidInput(f"chunk seconds must be in (0, 3600], got {self.chunk_seconds}")
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise InvalidInput("HYDRA_HEARTBEAT_TTL must exceed HYDRA_HEARTBEAT_INTERVAL")
        if self.max_attempts < 1:
            raise InvalidInput("max attempts must be at least 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidInput(f"HYDRA_DEVICE must be auto, cpu or cuda, got {self.device!r}")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidInput(f"HYDRA_{name.upper()}={raw!r} is not true or false")
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"HYDRA_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
