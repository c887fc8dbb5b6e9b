"""The simulated volunteers of :mod:`bench.swarm`: Hydra's real protocol, on bare connections.

Each group of volunteers shares one ACL user (a volunteer with several machines) and two
connections: one waits on the group's inboxes with a multi-key ``BLPOP``, the other pushes the
group's messages to its outbox and refreshes its heartbeats with ``PEXPIRE``. A simulated volunteer
answers each chunk with the exact sum after ``count`` milliseconds (one unit = 1 ms of simulated
work), so the trusted side measures its speed and sizes its chunks as it would for a real kernel.

The connections are asyncio protocols that write pre-encoded RESP commands and parse replies with
hiredis, and a chunk's work is a timer, not a task: the benchmark measures Redis and the trusted
side, and a simulator that spends a millisecond of CPU per chunk (redis-py's asyncio client does
about a third of that) would take the machine they share from them at N = 10,000.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from hydra import keys

UNITS_PER_SECOND = 1000  # a simulated volunteer of speed 1 does one unit a millisecond


def encode(*parts: str | bytes | int) -> bytes:
    """One command in RESP, as Redis reads it."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Connection(asyncio.Protocol):
    """A bare Redis connection: commands go out as bytes, and each reply goes to the callback that
    was queued with its command (Redis answers in order). ``None`` as a callback ignores the reply."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self.reader = hiredis.Reader()
        self.callbacks: collections.deque[Callable[[Any], None] | None] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.on_lost = on_lost
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.open = False
            self.on_lost()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            callback = self.callbacks.popleft()
            if isinstance(reply, hiredis.ReplyError):  # the group stalls, and the run says why
                print(f"swarm: Redis refused a simulated volunteer's command: {reply}", file=sys.stderr)
            elif callback is not None:
                callback(reply)

    def send(self, command: bytes, callback: Callable[[Any], None] | None = None) -> None:
        if self.open and self.transport is not None:
            self.callbacks.append(callback)
            self.transport.write(command)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


async def open_connection(url: str, on_lost: Callable[[], None]) -> Connection:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    _, conn = await loop.create_connection(lambda: Connection(on_lost), host, port)
    authed = loop.create_future()
    conn.send(encode("AUTH", unquote(parts.username or "default"), unquote(parts.password or "")), authed.set_result)
    if await authed != b"OK":
        raise RuntimeError(f"a simulated volunteer could not log in as {parts.username}")
    return conn


class Sim:
    """One simulated volunteer (one worker): runs its chunks one after another, on timers."""

    def __init__(self, wid: str, group: Group) -> None:
        self.wid = wid
        self.group = group
        self.alive = keys.alive(group.user, wid)
        self.speed = 1.0
        self.welcomed = False
        self.heartbeat = 1.0
        self.refreshed = -float("inf")  # when its heartbeat was last refreshed (monotonic seconds)
        self.asked: collections.deque[float] = collections.deque()  # when each unanswered result went out
        self.chunks: collections.deque[dict[str, Any]] = collections.deque()  # held, not yet started
        self.busy = False
        self.hello_at: float | None = None  # when it first asked for work (its first hello)
        self.first_at: float | None = None  # when its first chunk came

    def hello(self) -> None:
        self.welcomed = False
        self.asked.clear()
        if self.hello_at is None:
            self.hello_at = time.monotonic()
        message = {
            "t": "hello",
            "w": self.wid,
            "tasks": {"null": "1"},
            "device": "cpu",
            "zone": "",
            "host": "swarm",
            "pid": os.getpid(),
            "cores": 1,
        }
        self.group.push(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def take(self, chunk: dict[str, Any]) -> None:
        self.chunks.append(chunk)
        if not self.busy:
            self.start_next()

    def start_next(self) -> None:
        chunk = self.chunks.popleft()
        seconds = chunk["count"] / UNITS_PER_SECOND / self.speed
        self.busy = True
        self.group.loop.call_later(seconds, self.finish, chunk, seconds)

    def finish(self, chunk: dict[str, Any], seconds: float) -> None:
        self.busy = False
        swarm = self.group.swarm
        now = time.monotonic()
        swarm.worked.append((now, seconds))
        header = {
            "t": "result",
            "w": self.wid,
            "job": chunk["job"],
            "chunk": chunk["chunk"],
            "a": chunk["a"],
            "sums": {"n": chunk["count"]},
            "seconds": round(seconds, 6),
            "done_at": time.time(),
        }
        self.asked.append(now)
        swarm.results.append(now)
        self.group.push(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        if self.welcomed and now - self.refreshed >= self.heartbeat / 2:  # as the real worker does
            self.group.refresh(self, now)
        if self.chunks:
            self.start_next()


class Group:
    """Volunteers sharing one ACL user: one receiving and one sending connection."""

    def __init__(self, swarm: Any, url: str, user: str, wids: list[str]) -> None:
        self.swarm = swarm
        self.url = url
        self.user = user
        self.sims = {keys.inbox(user, w).encode(): Sim(w, self) for w in wids}
        self.outbox = keys.outbox(user)
        self.blpop = encode("BLPOP", *self.sims, 1)
        self.loop = asyncio.get_running_loop()
        self.recv: Connection | None = None
        self.conn: Connection | None = None
        self.out: list[tuple[bytes, Callable[[Any], None] | None]] = []  # written at the end of this turn
        self.beat_timer: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        self.recv = await open_connection(self.url, self.lost)
        self.conn = await open_connection(self.url, self.lost)

    def start(self) -> None:
        assert self.recv is not None
        self.recv.send(self.blpop, self.received)
        self.schedule_beat()
        for sim in self.sims.values():
            sim.hello()

    def lost(self) -> None:
        """Cut off by the monitor (``CLIENT KILL USER``): counted once, and the group falls silent."""
        if self.recv is not None and self.conn is not None:
            self.swarm.disconnected += 1
            recv, conn, self.recv, self.conn = self.recv, self.conn, None, None
            recv.close()
            conn.close()
        if self.beat_timer is not None:
            self.beat_timer.cancel()

    def push(self, payload: bytes) -> None:
        self.send(encode("RPUSH", self.outbox, payload))

    def refresh(self, sim: Sim, now: float) -> None:
        """Refresh ``sim``'s heartbeat, on the way of what the group writes this turn."""
        sim.refreshed = now
        self.send(encode("PEXPIRE", sim.alive, int(sim.heartbeat * 3000)), self.beat_answer(sim))

    def send(self, command: bytes, callback: Callable[[Any], None] | None = None) -> None:
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append((command, callback))

    def flush(self) -> None:
        batch, self.out = self.out, []
        if self.conn is not None:
            for command, callback in batch:
                self.conn.send(command, callback)

    def received(self, reply: list[bytes] | None) -> None:
        if self.recv is None:
            return
        self.recv.send(self.blpop, self.received)  # wait again at once: the next chunk may be queued
        if reply is None:
            return
        now = time.monotonic()
        sim = self.sims[reply[0]]
        message = json.loads(reply[1])
        kind = message.get("t")
        if kind == "chunk":
            if sim.asked:
                asked = sim.asked.popleft()
                self.swarm.latencies.append((asked, now - asked))
            elif sim.first_at is None and sim.hello_at is not None:  # its first: asked for by its hello
                sim.first_at = now
                self.swarm.firsts.append((sim.hello_at, now))
            sim.take(message)
        elif kind == "welcome":
            sim.heartbeat = float(message.get("heartbeat", 1.0))
            sim.refreshed = now
            sim.welcomed = True
        elif kind == "stop":
            self.swarm.stopped += 1

    def schedule_beat(self) -> None:
        period = min((s.heartbeat for s in self.sims.values()), default=1.0)
        self.beat_timer = self.loop.call_later(period / 2, self.beat)

    def beat(self) -> None:
        """The heartbeats a worker's own thread would send: those of volunteers whose results
        refreshed nothing for one and a half periods."""
        if self.conn is None:
            return
        now = time.monotonic()
        for sim in self.sims.values():
            if sim.welcomed and now - sim.refreshed >= 1.5 * sim.heartbeat:
                self.refresh(sim, now)
        self.schedule_beat()

    def beat_answer(self, sim: Sim) -> Callable[[int], None]:
        def answer(alive: int) -> None:
            if not alive and sim.welcomed:
                self.swarm.lapsed += 1
                sim.hello()

        return answer

    def close(self) -> None:
        if self.beat_timer is not None:
            self.beat_timer.cancel()
        for conn in (self.recv, self.conn):
            if conn is not None:
                conn.close()
        self.recv = self.conn = None
