"""What the monitor hears from Redis: which volunteer's outbox got a message and when, and which
worker's heartbeat expired (keyspace notifications).

The arrival times are the trusted clock for speeds (a chunk is timed from when its worker could
start it until its result arrived), so they must be taken when Redis sends the notice, not when a
busy monitor gets round to it: a result read before its stamp came is timed by an estimate, and
under load the monitor's own lag then counts as the volunteers' work (speeds read low, chunks
shrink, and more chunks load the monitor more). A listener *thread* beside the monitor's loop has
to win the GIL from that loop: with 10,000 simulated volunteers saturating two cores, it stamped
75 % of results before the loop read them, this process 100 % (bench.swarm).

So a small child process (forked, where the platform forks) does nothing but read the notices,
stamp them and forward one line each over a socket pair; the monitor reads those lines, without a
round trip to Redis, whenever it waits or drains. Only trusted processes write the stamps:
volunteers cannot forge a notice, only choose when to push.
"""

from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing
import os
import select
import signal
import socket
import threading
import time

import redis as redis_lib
from redis import Redis

from hydra import keys

# Bytes the socket pair buffers each way where the kernel allows (a monitor busy for a quarter
# second at 5,000 messages a second has some 40 KB waiting).
_BUFFER = 1 << 22
# How often the child checks that the monitor still lives (it exits when it does not).
_PARENT_CHECK = 0.5
# Notices forwarded in one write at most.
_BATCH = 256
# Volunteers whose last notice's time is kept (Notifications.last_noted); past this many, forgotten.
_MAX_NOTED = 100_000


class Notifications:
    """The notices heard and not yet handled. Used by one thread (the monitor's loop); :meth:`wake`
    may be called from any thread or a signal handler."""

    def __init__(self, redis: Redis, db: int) -> None:
        self._redis = redis
        self._prefix = f"__keyspace@{db}__:"
        self._arrivals: dict[str, collections.deque[float]] = {}
        self._noted: dict[str, float] = {}  # volunteer → when a notice of its outbox was last read here
        self._oldest: float | None = None  # when the oldest message heard and not yet handled came
        self._dead: set[str] = set()
        self._partial = b""
        self._reader, self._writer = socket.socketpair()
        self._wake_reader, self._wake_writer = socket.socketpair()
        for sock in (self._reader, self._writer):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
        self._reader.setblocking(False)
        self._wake_reader.setblocking(False)
        self.error: str | None = None
        self._ready = False
        self._child: multiprocessing.process.BaseProcess | threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> Notifications:
        """Start listening; returns once subscribed, so nothing pushed after this is missed."""
        if "fork" in multiprocessing.get_all_start_methods():
            inherited = (self._reader, self._wake_reader, self._wake_writer)
            self._child = multiprocessing.get_context("fork").Process(
                target=_listen,
                args=(self._redis, self._prefix, self._writer, os.getpid(), inherited),
                name="hydra-notifications",
                daemon=True,
            )
            self._child.start()
            self._writer.close()  # the child's copy is the only one: its end reads as end of file here
        else:  # no fork (Windows): a thread, whose stamps lag when the loop is busy
            self._child = threading.Thread(
                target=_listen, args=(self._redis, self._prefix, self._writer, None, ()), daemon=True
            )
            self._child.start()
        give_up = time.monotonic() + timeout
        while not self._ready:
            if self.error is not None or time.monotonic() > give_up:
                self.close()
                raise redis_lib.ConnectionError(f"could not subscribe to notifications: {self.error or 'timed out'}")
            self._read(max(0.0, min(0.5, give_up - time.monotonic())))
        return self

    # -- reading what the child forwards -------------------------------------------------------------
    def _read(self, timeout: float = 0.0) -> None:
        """Take in what the child forwarded, waiting up to ``timeout`` for the first of it."""
        if timeout > 0:
            select.select([self._reader, self._wake_reader], [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                self._wake_reader.recv(4096)
        chunks = [self._partial]
        while True:
            try:
                data = self._reader.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                data, self.error = b"", self.error or str(exc)
            if not data:
                self.error = self.error or "the listener stopped"
                break
            chunks.append(data)
        lines = b"".join(chunks).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._note(line.decode(errors="replace").split("\t"))

    def _note(self, fields: list[str]) -> None:
        kind = fields[0]
        if kind == "o" and len(fields) == 3:
            when = float(fields[2])
            self._arrivals.setdefault(fields[1], collections.deque()).append(when)
            if len(self._noted) >= _MAX_NOTED:
                self._noted.clear()  # bounded: a volunteer forgotten here only looks unheard for a pass
            self._noted[fields[1]] = time.monotonic()
            self._oldest = self._oldest or when
        elif kind == "x" and len(fields) == 3:
            self._dead.add(keys.worker_name(fields[1], fields[2]))
        elif kind == "ready":
            self._ready = True
        elif kind == "!":
            self.error = "\t".join(fields[1:]) or "the listener failed"

    # -- the monitor's side -------------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        """Until something was heard (or :meth:`wake`), at most ``timeout`` seconds."""
        if not (self._arrivals or self._dead or self.error):
            self._read(timeout)

    def wake(self) -> None:
        """End a :meth:`wait` now (the monitor is asked to stop)."""
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"w")

    def check(self) -> None:
        if self.error is not None:
            raise redis_lib.ConnectionError(f"lost the notification channel: {self.error}")

    def take(self) -> tuple[set[str], dict[str, collections.deque[float]]]:
        """The dead workers and each volunteer's message arrival times heard so far (and forget them)."""
        self._read()
        dead, arrivals = self._dead, self._arrivals
        self._dead, self._arrivals, self._oldest = set(), {}, None
        return dead, arrivals

    def catch_up(self, arrivals: dict[str, collections.deque[float]]) -> None:
        """Add to these volunteers' arrival times those heard since :meth:`take`, just before their
        outboxes are taken, so that what they pushed meanwhile is read with its stamp."""
        self._read()
        for user, times in arrivals.items():
            more = self._arrivals.pop(user, None)
            if more:
                times.extend(more)
        if not self._arrivals:  # else the oldest may have moved out: the backlog reads long, not short
            self._oldest = None

    def heard(self, *, read: bool = True) -> set[str]:
        """The volunteers with messages heard of and not yet handled (with ``read=False``, as far as
        this side has read what the child forwarded: no parsing of a backlog of notices now)."""
        if read:
            self._read()
        return set(self._arrivals)

    def last_noted(self, user: str) -> float:
        """When (monotonic) a notice of ``user``'s outbox was last read here; -inf if none was."""
        return self._noted.get(user, -math.inf)

    def put_back(self, arrivals: dict[str, collections.deque[float]]) -> None:
        """Give back what a drain left (``arrivals``, oldest first): ahead of what was heard since,
        so volunteers are drained in the order they were heard. Put back behind the newer ones, a
        saturated monitor's leftovers were left again and again while newer messages kept coming:
        at N = 10,000 asks waited 28 s at p99, 0.3 s at the median (bench.swarm)."""
        ahead: dict[str, collections.deque[float]] = {}
        for user, times in arrivals.items():
            newer = self._arrivals.pop(user, None)
            if newer:
                times.extend(newer)
            ahead[user] = times
            if times:
                self._oldest = min(self._oldest or times[0], times[0])
        ahead.update(self._arrivals)
        self._arrivals = ahead

    def backlog(self, now: float, *, read: bool = True) -> float:
        """Seconds the oldest message heard and not yet handled has waited (0 when none waits; with
        ``read=False``, of what this side has read so far)."""
        if read:
            self._read()
        oldest = self._oldest
        return max(0.0, now - oldest) if oldest is not None else 0.0

    def close(self) -> None:
        child, self._child = self._child, None
        if isinstance(child, multiprocessing.process.BaseProcess) and child.is_alive():
            child.terminate()
            child.join(5)
        for sock in (self._reader, self._writer, self._wake_reader, self._wake_writer):
            sock.close()
        if isinstance(child, threading.Thread):
            child.join(2 * _PARENT_CHECK)


def _listen(
    redis: Redis, prefix: str, out: socket.socket, parent: int | None, inherited: tuple[socket.socket, ...]
) -> None:
    """The child: subscribe, then stamp and forward every notice until the monitor goes away
    (``parent``: its pid, checked every _PARENT_CHECK seconds; None in a thread, which ends when
    the monitor closes ``out``)."""
    if parent is not None:  # a forked process: the monitor's signal handlers and sockets are not its own
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sock in inherited:
            sock.close()
    try:
        pubsub = redis.pubsub()
        pubsub.psubscribe(f"{prefix}{keys.PREFIX}:v:*:outbox", f"{prefix}{keys.PREFIX}:v:*:alive")
        subscribed = 0
        while (os.getppid() == parent) if parent is not None else out.fileno() != -1:
            message = pubsub.get_message(timeout=_PARENT_CHECK)
            lines: list[bytes] = []
            while message is not None:
                if message["type"] == "psubscribe":
                    subscribed += 1
                    if subscribed == 2:
                        lines.append(b"ready\n")
                elif message["type"] == "pmessage":
                    lines.append(_line(prefix, message["channel"], message["data"]))
                if len(lines) >= _BATCH:
                    break
                message = pubsub.get_message(timeout=0)
            if lines:
                out.sendall(b"".join(lines))
    except OSError:  # the monitor closed its end: it has stopped
        return
    except Exception as exc:
        with contextlib.suppress(OSError):
            out.sendall(f"!\t{exc}".replace("\n", " ").encode() + b"\n")


def _line(prefix: str, channel: bytes, event: bytes) -> bytes:
    """One notice as the line the monitor reads, stamped now; empty for one it does not need (or a
    key whose names would not survive the line: no worker of that name is ever registered)."""
    parsed = keys.parse_volunteer_key(channel.decode(errors="replace")[len(prefix) :])
    if not parsed or any(c in "".join(parsed) for c in "\t\n"):
        return b""
    user, wid, kind = parsed
    if kind == "outbox" and event == b"rpush":
        return f"o\t{user}\t{time.time():.6f}\n".encode()
    if kind == "alive" and event == b"expired":
        return f"x\t{user}\t{wid}\n".encode()
    return b""
