"""Reading the worker list: who is connected, how fast, and what each one runs."""

from __future__ import annotations

import time
from typing import Any

from redis import Redis

from hydra import keys


def worker_list(redis: Redis) -> list[dict[str, Any]]:
    """Every worker seen in the last day, live ones first; ``state`` is ``alive`` or ``gone``."""
    names = [n.decode() for n in redis.zrevrange(keys.WORKERS, 0, -1)]
    if not names:
        return []
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
        pipe.exists(keys.worker_alive(name))
    replies = pipe.execute()
    now = time.time()
    out = []
    for i, name in enumerate(names):
        info = {k.decode(): v.decode() for k, v in replies[2 * i].items()}
        if not info:
            continue
        last_seen = float(info.get("last_seen", 0))
        out.append(
            {
                "name": name,
                "host": info.get("host", "?"),
                "device": info.get("device", "cpu"),
                "pid": int(info.get("pid", 0)),
                "state": "alive" if replies[2 * i + 1] else "gone",
                "current": info.get("current", ""),
                "chunks": int(info.get("chunks", 0)),
                "rates": {k[5:]: float(v) for k, v in info.items() if k.startswith("rate:")},
                "last_seen": last_seen,
                "seen_ago": max(0.0, now - last_seen),
            }
        )
    out.sort(key=lambda w: (w["state"] != "alive", w["name"]))
    return out
