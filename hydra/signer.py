"""The ledger's signer: a child process of the monitor that folds new ledger entries into the
Merkle tree and the credit board, and signs heads, beside the monitor's loop.

Signing is work per result (parse each entry, hash it, move its volunteer's standing), not work
that is due: in the loop it took 7-8 % of the monitor's time at N = 10,000 on two cores, and a
small slice in each periodic pass was the largest part of slow passes. In a process of its own it
runs while the loop waits for Redis, on another core where there is one. It signs as the loop did
(:func:`hydra.ledger.sign_slice`, whose compare-and-set lets any number of signers run) and sends
the page's ``credit`` event at most once a second. It also sends the page's once-a-second cluster
summary (:class:`hydra.workers.ClusterSummary`: a dozen reads, 3-8 ms of a periodic pass at
N = 10,000). Where processes cannot be forked, or while the child is being restarted, the monitor
does both in its loop as before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import redis as redis_lib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis import Redis

from hydra import credit, ledger
from hydra.collector import record_error
from hydra.events import Events
from hydra.workers import ClusterSummary

log = logging.getLogger(__name__)

# Entries folded and signed at a time: small when little waits (a head soon after each result),
# up to SLICE_MAX when a backlog built up (a big slice costs less per entry: 32 µs an entry at
# 2,048, 69 µs at 32, bench.sign).
SLICE_MIN = 32
SLICE_MAX = 2048
# How long the signer waits when nothing is left to sign, and how often it checks its monitor lives.
WAIT = 0.25
CREDIT_EVENT_SECONDS = 1.0
CLIENT_NAME = "hydra-signer"


class Signer:
    """The monitor's handle on its signer child (None of it where the platform does not fork)."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process

    @classmethod
    def start(cls, redis: Redis, key: Ed25519PrivateKey, events_url: str | None) -> Signer | None:
        if "fork" not in multiprocessing.get_all_start_methods():
            return None
        process = multiprocessing.get_context("fork").Process(
            target=sign_forever, args=(redis, key, events_url, os.getpid()), name="hydra-signer", daemon=True
        )
        process.start()
        return cls(process)

    def alive(self) -> bool:
        return self._process.is_alive()

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(5)


class Slicer:
    """Signs the ledger a slice at a time and sends the page's ``credit`` event at most once a
    second, from the signed standings only: the signer child's work, and the monitor's loop's where
    there is no child."""

    def __init__(self, key: Ed25519PrivateKey, events: Events) -> None:
        self.key = key
        self.events = events
        self._changed = False
        self._emitted = -1e9

    def sign(self, redis: Redis, wanted: int) -> int:
        """Fold and sign up to ``wanted`` entries (kept between SLICE_MIN and SLICE_MAX); returns
        how many more wait (0 when none, or another signer signed these first)."""
        batch = min(max(wanted, SLICE_MIN), SLICE_MAX)
        signed = ledger.sign_slice(redis, self.key, prepare=credit.board_fold, batch=batch)
        self._changed = self._changed or signed.head is not None
        now = time.monotonic()
        if self._changed and self.events.redis_url and now - self._emitted >= CREDIT_EVENT_SECONDS:
            # Not the unsigned standings: folding what waits (thousands of entries when results
            # pour in) is the signing's work, a slice at a time.
            self.events.emit("credit", credit.credit_event(redis, unsigned=False))
            self._changed, self._emitted = False, now
        return signed.left if signed.head else 0


def sign_forever(redis: Redis, key: Ed25519PrivateKey, events_url: str | None, parent: int) -> None:
    """The child: sign what the ledger gains until the monitor goes away."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the monitor's handlers are not its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Its own connections, named for CLIENT LIST (an operator sees the signer; a test sees it go).
    pool = redis.connection_pool
    redis = Redis(
        connection_pool=type(pool)(
            connection_class=pool.connection_class, **{**pool.connection_kwargs, "client_name": CLIENT_NAME}
        )
    )
    events = Events(events_url)
    slicer, summary = Slicer(key, events), ClusterSummary(events)
    left = 0
    while os.getppid() == parent:
        left = _safely(redis, "signing the ledger", functools.partial(slicer.sign, redis, left)) or 0
        _safely(redis, "sending the cluster summary", functools.partial(summary.send_if_due, redis))
        if not left:
            time.sleep(WAIT)


def _safely(redis: Redis, what: str, work: Callable[[], Any]) -> Any:
    """``work()``, or None where it failed: a damaged ledger or record must not stop the child (it
    waits and tries again), nor one of its two jobs stop the other."""
    try:
        return work()
    except (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.BusyLoadingError) as exc:
        log.warning("signer: Redis unavailable (%s); retrying", exc)
    except Exception as exc:
        with contextlib.suppress(redis_lib.RedisError):
            record_error(redis, f"monitor: {what} failed: {exc}")
    return None
