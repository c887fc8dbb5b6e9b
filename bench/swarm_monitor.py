"""``hydra monitor`` for the scale benchmarks: the real monitor, with the null task known and its
periodic passes timed.

    python -m bench.swarm_monitor [--stats PATH] [--profile PATH] [hydra monitor options]

It registers :mod:`bench.nulltask`, wraps :meth:`hydra.monitor.Monitor.run_pass` and
:meth:`~hydra.monitor.Monitor.handle_notifications` to time every call, then runs ``hydra
monitor`` unchanged. On exit (SIGTERM) it writes the timings to ``--stats`` as JSON and, with
``--profile``, a cProfile dump of the whole run (read it with :mod:`pstats`).

It also notes where the monitor's main loop spends its wall time, second by second (on the
monotonic clock, which the benchmark shares): waiting for a message (``idle``), draining outboxes,
periodic passes, serving idle workers, and, inside those, waiting for Redis's replies. A loop that
is never idle is saturated whatever its CPU share says: its CPU and its round trips add up.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.nulltask import register
from hydra import cli
from hydra.collector import Collector
from hydra.dispatch import Dispatcher
from hydra.monitor import Monitor, Notifications

TIMINGS: dict[str, list[float]] = {"pass": [], "notifications": [], "notified": []}
# The parts of a pass (seconds each took), and those of the passes over 10 ms (the first 20).
PARTS = ("_check_deadlines", "_drain_unheard", "_clean_up_quarantined", "_emit", "_sign_ledger", "_housekeeping")
CURRENT: dict[str, float] = {}
SLOW: list[dict[str, float]] = []
# Wall seconds of the main loop per part, per whole second of the monotonic clock.
LOOP: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)


# Planned assignments (ASSIGNs queued in a batch's pipeline), those refused by reason, and the
# assignments then made one by one: several dispatchers splitting the same pending chunk collide.
ASSIGNS: collections.Counter[str] = collections.Counter()


def _note(name: str) -> None:
    """Count ``name`` in all (ASSIGNS) and per second of the monotonic clock (LOOP, as ``n:name``)."""
    ASSIGNS[name] += 1
    LOOP[f"n:{name}"][int(time.monotonic())] += 1


def _count_settle(method: Any) -> Any:
    def wrapper(self: Dispatcher, plans: list, replies: list, *args: Any, **kwargs: Any) -> Any:
        for plan in plans:
            for reply in replies[plan.start : plan.start + plan.planned]:
                _note("planned")
                if not (isinstance(reply, list) and reply[0] == b"ok"):
                    reason = reply[1] if isinstance(reply, list) and len(reply) > 1 else type(reply).__name__
                    _note(f"refused:{reason.decode() if isinstance(reason, bytes) else reason}")
        return method(self, plans, replies, *args, **kwargs)

    return wrapper


# How the monitor timed each result, against what the simulated volunteer (honest here) says: its
# chunk's seconds of work, and when it finished (``done_at``, on the clock the processes share).
# The monitor times a chunk from when it was assigned or the worker's previous result arrived,
# whichever is later, to when this result arrived: by the listener's stamp, or, for a message
# taken before its stamp reached the drain, as Collector._unheard_arrival estimates it. Measured
# over worked is what sizes the next chunks: above 1, the worker is taken for slower than it is.
TIMING: dict[str, list[float]] = collections.defaultdict(list)


def _time_results(method: Any) -> Any:
    def wrapper(self: Any, item: Any, arrived: float, speed: list[Any], work: float) -> Any:
        last = float(speed[0][0]) if speed[0][0] else 0.0
        worked, done_at = item.message.get("seconds"), item.message.get("done_at")
        if isinstance(worked, float) and worked > 0 and isinstance(done_at, float) and len(TIMING["late"]) < 200_000:
            TIMING["measured_over_worked"].append(max(arrived - max(item.at, last), 1e-3) / worked)
            TIMING["late" if item.arrived is not None else "late_unstamped"].append(arrived - done_at)
            # From when the monitor counts the chunk as startable to when the volunteer started it.
            TIMING["start_wait"].append(done_at - worked - max(item.at, last))
        return method(self, item, arrived, speed, work)

    return wrapper


def _count_one(method: Any) -> Any:
    def wrapper(self: Dispatcher, view: Any, position: int, peeks: dict) -> Any:
        _note("one_by_one")
        peek = next(iter(peeks.values()), None)
        why = "no peek" if peek is None else "copies wanted" if peek.wanted else "more heads" if peek.more else "tail"
        _note(f"one_by_one:{why}")
        return method(self, view, position, peeks)

    return wrapper


def _count(name: str, method: Any) -> Any:
    """Count the main thread's calls of ``method`` per second (as :func:`_loop` times them)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            _note(name)
        return method(*args, **kwargs)

    return wrapper


def _command_name(args: tuple[Any, ...]) -> str:
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    return name.split()[0].upper()


def _count_commands(method: Any, *, many: bool) -> Any:
    """Count the main thread's commands by name per second (``cmd:NAME``), however they are sent."""

    def wrapper(self: Any, arg: Any, *args: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            second = int(time.monotonic())
            for command in arg if many else [(arg, *args)]:
                LOOP[f"n:cmd:{_command_name(command)}"][second] += 1
        return method(self, arg, *args)

    return wrapper


# Commands LeanPipeline packed on the main thread, by (name as sent, second): folded into LOOP's
# ``n:cmd:NAME`` counts by summary(), since the wrapper runs for every command the monitor sends.
PACKED: collections.Counter[tuple[Any, int]] = collections.Counter()


def _count_packed(pack: Any) -> Any:
    """:func:`_count_commands` for hiredis's ``pack_command``, which takes the command as one tuple."""
    main, ident, clock = threading.main_thread().ident, threading.get_ident, time.monotonic

    def wrapper(command: tuple[Any, ...]) -> Any:
        if ident() == main:
            PACKED[command[0], int(clock())] += 1
        return pack(command)

    return wrapper


def _loop(name: str, method: Any, *, main_thread_only: bool = False) -> Any:
    main, ident = threading.main_thread().ident, threading.get_ident

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if main_thread_only and ident() != main:
            return method(*args, **kwargs)
        started = time.monotonic()
        try:
            return method(*args, **kwargs)
        finally:
            LOOP[name][int(started)] += time.monotonic() - started

    return wrapper


def _part(name: str, method: Any) -> Any:
    def wrapper(self: Monitor, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            CURRENT[name] = CURRENT.get(name, 0.0) + time.perf_counter() - started

    return wrapper


def _timed(name: str, method: Any) -> Any:
    def wrapper(self: Monitor, *args: Any, **kwargs: Any) -> Any:
        CURRENT.clear()
        started = time.perf_counter()
        out = method(self, *args, **kwargs)
        spent = time.perf_counter() - started
        if name == "pass":
            if out.acted:
                TIMINGS["pass"].append(spent)
                if spent > 0.010 and len(SLOW) < 20:
                    parts = {k: round(v * 1000, 2) for k, v in CURRENT.items()}
                    SLOW.append({"pass_ms": round(spent * 1000, 2), **parts})
        elif out:  # a batch of notifications handled (the wait for the first one excluded below)
            TIMINGS["notifications"].append(spent)
            TIMINGS["notified"].append(out)
        return out

    return wrapper


# What a message cost the loop as the monitor last measured it (µs; hydra.dispatch.Dispatcher.tail_floor).
MESSAGE_COST: list[float] = []


def _note_message_cost(method: Any) -> Any:
    def wrapper(self: Monitor) -> None:
        method(self)
        MESSAGE_COST[:] = [self.dispatcher.message_cost * 1e6]

    return wrapper


def summary() -> dict[str, Any]:
    for (name, second), n in PACKED.items():
        LOOP[f"n:cmd:{_command_name((name,))}"][second] += n
    PACKED.clear()
    passes = sorted(TIMINGS["pass"])
    batches = sorted(TIMINGS["notifications"])
    return {
        "passes": len(passes),
        "longest_pass_s": passes[-1] if passes else None,
        "pass_p50_s": passes[len(passes) // 2] if passes else None,
        "pass_p99_s": passes[int(len(passes) * 0.99)] if passes else None,
        "passes_over_10ms": sum(p > 0.010 for p in passes),
        # The first passes import and connect what the monitor uses later (events, job status).
        "first_passes_s": TIMINGS["pass"][:3],
        "longest_pass_after_first3_s": max(TIMINGS["pass"][3:], default=None),
        "notification_batches": len(batches),
        "notifications": sum(TIMINGS["notified"]),
        # Includes the wait for the first notification of the batch (up to the pass period).
        "longest_batch_s": batches[-1] if batches else None,
        # Where the time of the slow passes went (ms; serve_idle and the rest are what remains).
        "slow_passes_ms": SLOW,
        "assigns": dict(ASSIGNS),
        "message_cost_us": round(MESSAGE_COST[0], 1) if MESSAGE_COST else None,
        "result_timing": {k: {**(_quantiles(v) or {}), "n": len(v)} for k, v in TIMING.items()},
        "loop_s": {name: {str(k): round(v, 6) for k, v in seconds.items()} for name, seconds in LOOP.items()},
    }


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {f"p{q}": round(ordered[min(len(ordered) - 1, len(ordered) * q // 100)], 3) for q in (10, 50, 90, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", type=Path)
    parser.add_argument("--profile", type=Path)
    args, rest = parser.parse_known_args()
    register()
    for part in PARTS:
        setattr(Monitor, part, _part(part, getattr(Monitor, part)))
    Dispatcher.serve_idle = _part("serve_idle", Dispatcher.serve_idle)  # type: ignore[method-assign]
    Monitor.run_pass = _timed("pass", Monitor.run_pass)  # type: ignore[method-assign]
    Monitor.handle_notifications = _timed("notifications", Monitor.handle_notifications)  # type: ignore[method-assign]
    for name, owner, attr in (
        ("idle", Notifications, "wait"),
        ("drain", Monitor, "handle_notifications"),
        ("pass", Monitor, "run_pass"),
        ("serve", Monitor, "serve_waiting"),
        ("sign", Monitor, "_sign_ledger"),  # between messages, and inside passes (counted in both)
    ):
        setattr(owner, attr, _loop(name, getattr(owner, attr)))
    Monitor._measure_message_cost = _note_message_cost(Monitor._measure_message_cost)  # type: ignore[method-assign]
    Collector._speed = _time_results(Collector._speed)  # type: ignore[method-assign]
    Dispatcher.settle = _count_settle(Dispatcher.settle)  # type: ignore[method-assign]
    Dispatcher._assign_one = _count_one(Dispatcher._assign_one)  # type: ignore[method-assign]
    import redis.connection

    # Waiting for Redis: the socket reads (hydra.connection's reader and redis-py's both make them).
    parser = redis.connection.DefaultParser
    parser.read_from_socket = _loop("redis_wait", parser.read_from_socket, main_thread_only=True)  # type: ignore[method-assign]
    reader = redis.connection.AbstractConnection
    reader.send_packed_command = _count("round_trips", reader.send_packed_command)  # type: ignore[method-assign]
    reader.pack_command = _count_commands(reader.pack_command, many=False)  # type: ignore[method-assign]
    reader.pack_commands = _count_commands(reader.pack_commands, many=True)  # type: ignore[method-assign]
    import hydra.connection

    if hydra.connection.pack_command is not None:  # what LeanPipeline packs itself
        hydra.connection.pack_command = _count_packed(hydra.connection.pack_command)
    profiler = cProfile.Profile() if args.profile else None
    try:
        if profiler:
            profiler.enable()
        cli.main([*rest, "monitor"])
    finally:
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        if args.stats:
            args.stats.write_text(json.dumps(summary()))


if __name__ == "__main__":
    main()
