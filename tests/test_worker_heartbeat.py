"""A worker's heartbeat rides on the inbox's round trips: one real worker against a real
redis-server, the test playing the trusted side (the welcome, the heartbeat key, a chunk)."""

from __future__ import annotations

import json
import threading
from typing import Any

from hydra import keys
from hydra.connection import connect
from hydra.worker import Volunteer
from tests.conftest import wait_until

KERNEL_SECONDS = 3.5  # longer than the heartbeat key lives (three periods of 1 s)


class SlowVolunteer(Volunteer):
    """Runs every chunk as one kernel call of KERNEL_SECONDS, then answers it."""

    def run_chunk(self, message: dict[str, Any]) -> None:
        threading.Event().wait(KERNEL_SECONDS)
        self.send_result({"t": "result", "w": self.wid, "job": message["job"], "chunk": 0, "a": 1}, b"")


def _stats(client) -> tuple[int, int, int]:
    """Socket reads Redis made (one per round trip a client makes), and BLPOP and PEXPIRE calls."""
    reads = int(client.info("stats")["total_reads_processed"])
    commands = client.info("commandstats")
    return reads, *(int(commands.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("blpop", "pexpire"))


def test_an_idle_worker_beats_on_its_inbox_round_trips_and_a_busy_one_stays_alive(redis_server, client):
    worker = SlowVolunteer(connect(redis_server.url), wid="w1")
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        hello = client.blpop([worker.outbox], timeout=30)
        assert hello and json.loads(hello[1].partition(b"\n")[0])["t"] == "hello"
        client.set(worker.alive, 1, px=3000)
        client.rpush(worker.inbox, json.dumps({"t": "welcome", "worker": "default/w1", "heartbeat": 1.0}))
        wait_until(worker.welcomed.is_set, timeout=10, what="the welcome")

        # Idle: BLPOP waits a second at a time, and the heartbeat goes with it.
        before = _stats(client)
        threading.Event().wait(4.0)  # the window measured, not a wait for something to happen
        reads, blpops, pexpires = (a - b for a, b in zip(_stats(client), before, strict=True))
        assert blpops >= 3 and pexpires >= 3, (blpops, pexpires)
        assert reads <= blpops + 2, f"{reads} round trips for {blpops} BLPOPs and {pexpires} heartbeats"
        assert client.pttl(worker.alive) > 0

        # Busy in one kernel call longer than the key lives: the heartbeat thread keeps it alive.
        client.rpush(worker.inbox, json.dumps({"t": "chunk", "job": "j", "chunk": 0, "a": 1}))
        answer = client.blpop([worker.outbox], timeout=30)
        assert answer and json.loads(answer[1].partition(b"\n")[0])["t"] == "result", "not a hello again"
        assert client.pttl(worker.alive) > 0
        assert client.llen(worker.outbox) == 0

        # A longer period (the monitor hands them out past 20,000 workers): idle, it polls as seldom.
        client.set(worker.alive, 1, px=9000)  # as the monitor makes it with a welcome: three periods
        client.rpush(worker.inbox, json.dumps({"t": "welcome", "worker": "default/w1", "heartbeat": 3.0}))
        wait_until(lambda: worker.heartbeat == 3.0, timeout=10, what="the new period")
        before = _stats(client)
        threading.Event().wait(7.0)  # the window measured
        reads, blpops, pexpires = (a - b for a, b in zip(_stats(client), before, strict=True))
        assert 2 <= blpops <= 4 and pexpires >= 1, (blpops, pexpires)  # 7 or more polling each second
        assert reads <= blpops + 2 and client.pttl(worker.alive) > 0, (reads, blpops, pexpires)
    finally:
        worker.stopping.set()
        runner.join(timeout=10)
    assert keys.alive("default", "w1") == worker.alive
