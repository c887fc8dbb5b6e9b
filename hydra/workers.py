"""Reading the worker list for people: a bounded summary for the page, and pages of the full list.

The summary has the same size with ten workers or a hundred thousand: counts by task, device and
zone (kept as running totals by the monitor), the slowest and the newest few workers, and CO2 per
zone (:func:`hydra.carbon.summary.carbon_summary`, bounded too), so the monitor's once-a-second
``workers`` event keeps the page's zone chart live. The full
list is read a page at a time (``offset``/``limit``), newest first. Host names are the operator's
to see (CLI); the page shows worker names, devices, zones and speeds only.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any

from redis import Redis

from hydra import keys
from hydra.carbon.summary import carbon_summary

SHOWN = 8
SHOWN_GROUPS = 16  # tasks, devices and zones named in the summary; the rest are summed
SUMMARY_SECONDS = 1.0
# Throughput is averaged over this long: results land once per chunk (seconds apart), so a
# one-second window would read zero between them.
THROUGHPUT_WINDOW = 5.0


def _describe(redis: Redis, names: list[str], *, private: bool = False) -> list[dict[str, Any]]:
    if not names:
        return []
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
        pipe.zscore(keys.LIVE, name)
    replies = pipe.execute()
    now = time.time()
    out = []
    for i, name in enumerate(names):
        info = {k.decode(): v.decode(errors="replace") for k, v in replies[2 * i].items()}
        if not info:
            continue
        try:
            tasks = json.loads(info.get("tasks", "{}"))
        except ValueError:
            tasks = {}
        last_seen = _float(info.get("last_seen"))
        row: dict[str, Any] = {
            "name": name,
            "volunteer": info.get("user", keys.split_worker(name)[0]),
            "device": info.get("device", "cpu"),
            "zone": info.get("zone", ""),
            "state": "alive" if replies[2 * i + 1] is not None else "gone",
            "tasks": tasks if isinstance(tasks, dict) else {},
            "chunks": int(_float(info.get("chunks"))),
            "rates": {k[5:]: _float(v) for k, v in info.items() if k.startswith("rate:")},
            "last_seen": last_seen,
            "seen_ago": max(0.0, now - last_seen),
        }
        if private:
            row["host"] = info.get("host", "?")
            row["pid"] = int(_float(info.get("pid")))
            if row["state"] == "gone":
                row["gone_reason"] = info.get("gone_reason", "")
        out.append(row)
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def worker_summary(redis: Redis, counts: dict[bytes, bytes] | None = None) -> dict[str, Any]:
    """Counts, the slowest and the newest workers: bounded whatever the number of workers, and read
    in four round trips (the monitor sends it once a second, from a pass: it took up to a dozen).
    ``counts``: ``hydra:counts`` as the caller read it in the first (read here when None)."""
    pipe = redis.pipeline(transaction=False)
    if counts is None:
        pipe.hgetall(keys.COUNTS)
    pipe.zrevrange(keys.LIVE, 0, SHOWN - 1).zcard(keys.LIVE).zcard(keys.IDLE)
    *read, raw_newest, live, idle = pipe.execute()
    raw_counts = read[0] if counts is None else counts
    grouped: dict[str, dict[str, int]] = {"task": {}, "device": {}, "zone": {}}
    for field, value in ((k.decode(), v.decode()) for k, v in raw_counts.items()):
        kind, _, name = field.partition(":")
        if kind in grouped and int(_float(value)) > 0:
            grouped[kind][name] = int(_float(value))
    slowest: list[str] = []
    tasks = sorted(grouped["task"])[:8]
    if tasks:
        pipe = redis.pipeline(transaction=False)
        for task in tasks:
            pipe.zrange(keys.rates(task), 0, 1)
        slowest = [n.decode() for names in pipe.execute() for n in names]
    slowest, newest = list(dict.fromkeys(slowest))[:SHOWN], [n.decode() for n in raw_newest]
    described = {row["name"]: row for row in _describe(redis, list(dict.fromkeys(slowest + newest)))}
    return {
        "count": int(live),
        "idle": int(idle),
        "by_task": _largest(grouped["task"]),
        "by_device": _largest(grouped["device"]),
        "by_zone": _largest(grouped["zone"]),
        "slowest": [described[n] for n in slowest if n in described],
        "newest": [described[n] for n in newest if n in described],
        "carbon": carbon_summary(redis),
    }


def _largest(counts: dict[str, int], limit: int = SHOWN_GROUPS) -> dict[str, int]:
    """The ``limit`` largest groups, then one summing the rest: zones come from hellos, so a
    summary holds a bounded number of them however many the live workers name."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown, rest = dict(ranked[:limit]), ranked[limit:]
    if rest:  # no zone or task name holds a space or parentheses, so this label is no group's name
        shown[f"other ({len(rest)})"] = sum(n for _, n in rest)
    return shown


def worker_page(redis: Redis, offset: int = 0, limit: int = 50, *, private: bool = False) -> dict[str, Any]:
    """One page of the live workers, newest first."""
    offset, limit = max(0, int(offset)), min(max(1, int(limit)), 500)
    names = [n.decode() for n in redis.zrevrange(keys.LIVE, offset, offset + limit - 1)]
    return {"total": int(redis.zcard(keys.LIVE)), "offset": offset, "workers": _describe(redis, names, private=private)}


def worker_list(redis: Redis, limit: int = 500) -> list[dict[str, Any]]:
    """The live workers with their hosts, for the operator's CLI (``hydra workers``)."""
    return worker_page(redis, 0, limit, private=True)["workers"]


class ClusterSummary:
    """The page's once-a-second ``workers`` event (:func:`worker_summary`) and ``cluster`` event
    (live workers, throughput per unit). Sent by the monitor's signer child beside the loop (it took
    3-8 ms of a periodic pass at N = 10,000), else by a pass; once a second for the whole cluster,
    whichever monitor's process sends it (a gate key in Redis)."""

    def __init__(self, events: Any) -> None:
        self.events = events
        self._last = -1e9
        self._history: collections.deque[tuple[float, dict[str, float]]] = collections.deque()

    def send_if_due(self, redis: Redis) -> bool:
        """Send both events if a second has passed here and no process sent them in the last second;
        returns whether it sent them."""
        now = time.monotonic()
        if not self.events.redis_url or now - self._last < SUMMARY_SECONDS:
            return False
        self._last = now
        counts = redis.hgetall(keys.COUNTS)  # read once for both events
        done = {k.decode()[5:]: _float(v) for k, v in counts.items() if k.startswith(b"done:")}
        self._history.append((now, done))  # kept every second, sent or not: the window stays whole
        while len(self._history) > 2 and now - self._history[1][0] >= THROUGHPUT_WINDOW:
            self._history.popleft()
        if not redis.set(keys.SUMMARY_GATE, 1, nx=True, px=int(SUMMARY_SECONDS * 900)):
            return False  # another monitor's process sent it moments ago
        summary = worker_summary(redis, counts)
        self.events.emit("workers", summary)
        then, before = self._history[0]
        throughput = {
            # A counter absent then was 0: nothing of that unit had been done yet.
            unit: max(0.0, (value - before.get(unit, 0.0)) / (now - then))
            for unit, value in done.items()
            if now > then
        }
        self.events.emit("cluster", {"time": time.time(), "workers": summary["count"], "throughput": throughput})
        return True
