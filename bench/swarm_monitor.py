"""``hydra monitor`` for the scale benchmarks: the real monitor, with the null task known and its
periodic passes timed.

    python -m bench.swarm_monitor [--stats PATH] [--profile PATH] [hydra monitor options]

It registers :mod:`bench.nulltask`, wraps :meth:`hydra.monitor.Monitor.run_pass` and
:meth:`~hydra.monitor.Monitor.handle_notifications` to time every call, then runs ``hydra
monitor`` unchanged. On exit (SIGTERM) it writes the timings to ``--stats`` as JSON and, with
``--profile``, a cProfile dump of the whole run (read it with :mod:`pstats`).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import time
from pathlib import Path
from typing import Any

from bench.nulltask import register
from hydra import cli
from hydra.monitor import Monitor

TIMINGS: dict[str, list[float]] = {"pass": [], "notifications": [], "notified": []}
# The parts of a pass (seconds each took), and those of the passes over 10 ms (the first 20).
PARTS = ("_check_deadlines", "_emit", "_sign_ledger", "_housekeeping")
CURRENT: dict[str, float] = {}
SLOW: list[dict[str, float]] = []


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


def summary() -> dict[str, Any]:
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", type=Path)
    parser.add_argument("--profile", type=Path)
    args, rest = parser.parse_known_args()
    register()
    for part in PARTS:
        setattr(Monitor, part, _part(part, getattr(Monitor, part)))
    Monitor.run_pass = _timed("pass", Monitor.run_pass)  # type: ignore[method-assign]
    Monitor.handle_notifications = _timed("notifications", Monitor.handle_notifications)  # type: ignore[method-assign]
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
