"""Fixtures that start real processes: a redis-server per test, and real rq workers.

Nothing here sleeps to synchronise: :func:`wait_until` polls a condition with a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from hydra.connection import connect
from hydra.local import LocalCluster, RedisServer, free_port, spawn
from hydra.queue import live_workers

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.02, what: str = ""):
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis_lib.Redis]:
    c = connect(redis_server.url)
    yield c
    c.close()


class Cluster(LocalCluster):
    """LocalCluster on the test's Redis, with helpers to wait for and kill workers."""

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> list[str]:
        c = connect(self.url)
        try:
            return wait_until(
                lambda: (names := live_workers(c)) and len(names) >= n and names, timeout, what=f"{n} live workers"
            )
        finally:
            c.close()

    def kill_worker(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture
def cluster_factory(redis_server: RedisServer) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(workers: int = 1, *, monitor: bool = True, env: dict[str, str] | None = None) -> Cluster:
        cluster = Cluster(workers, monitor=monitor, env=env, redis_url=redis_server.url)
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m hydra ARGS`` as a user would, capturing output."""
    return subprocess.run(
        [sys.executable, "-m", "hydra", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )


def answers(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 now."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_page(redis_url: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``hydra web`` on a free port, once it answers; the process and its URL."""
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "hydra", "web", "--port", str(port)], env={"HYDRA_REDIS_URL": redis_url, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url + "/healthz"), timeout=60, what="the web server")
    return server, url


def long_local_job(env: dict[str, str] | None = None) -> subprocess.Popen:
    """``hydra submit pi --samples 1e13 --local --workers 1`` (hours of work), stderr piped, in its
    own process group like a shell's foreground job."""
    return subprocess.Popen(
        [sys.executable, "-m", "hydra", "submit", "pi", "--samples", "1e13", "--local", "--workers", "1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
