"""What carbon-aware dispatch's view of capacity by zone costs as the swarm grows, side by side.

    python -m bench.pool [--sizes 1000,10000,100000] [--json PATH]

For a carbon-aware job, the dispatcher weighs each grid zone's measured capacity for the job's
task, refreshed every 5 s. Against a real ``redis-server`` holding N live workers in 40 zones (their
records, their measured rates, and the totals by zone the collector keeps as they join, speed up and
leave), it times that view read two ways: summed from every worker (the rate ranking, then each
worker's zone: what the monitor did before), and from the totals (:meth:`CarbonGate.pool`, one
read); checks that both give the same capacities, and prints the ratio.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.board import best_of
from bench.common import OUT, side_by_side, sizes, write_json
from hydra import keys
from hydra.carbon.gate import CarbonGate
from hydra.connection import connect
from hydra.local import RedisServer

ZONES = [f"zone-{i:02d}" for i in range(39)] + [""]


def fill(client: Any, n: int) -> None:
    client.flushall()
    totals: dict[str, float] = {}
    for lo in range(0, n, 5000):
        pipe = client.pipeline(transaction=False)
        rates = {}
        for i in range(lo, min(n, lo + 5000)):
            name, zone, rate = f"volunteer-{i:06d}/w1", ZONES[i % len(ZONES)], 1e6 * (1 + (i * 7919) % 97)
            pipe.hset(keys.worker(name), mapping={"zone": zone, "device": "cpu", "rate:pi": rate})
            rates[name] = rate
            totals[zone] = totals.get(zone, 0.0) + rate
        pipe.zadd(keys.rates("pi"), rates)
        pipe.execute()
    client.hset(keys.COUNTS, mapping={keys.zone_rate(zone, "pi"): total for zone, total in totals.items()})


def every_worker(client: Any) -> dict[str, float]:
    """The capacity by zone summed from every worker, as the monitor read it before the totals."""
    rates = client.zrange(keys.rates("pi"), 0, -1, withscores=True)
    pipe = client.pipeline(transaction=False)
    for name, _ in rates:
        pipe.hget(keys.worker(name.decode()), "zone")
    capacity: dict[str, float] = {}
    for (_, rate), zone in zip(rates, pipe.execute(), strict=True):
        z = zone.decode() if zone else ""
        capacity[z] = capacity.get(z, 0.0) + float(rate)
    return capacity


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated numbers of live workers")
    parser.add_argument("--json", type=Path, nargs="?", const=OUT / "pool.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            client = connect(server.url)
            for n in sizes(args.sizes, "bench.pool"):
                fill(client, n)
                summed, kept = every_worker(client), CarbonGate(client).pool("pi", time.time()).capacity
                if summed.keys() != kept.keys() or any(not math.isclose(summed[z], kept[z]) for z in summed):
                    raise SystemExit(f"bench.pool: the totals differ from the workers' sum at N={n}")
                whole = best_of(lambda: every_worker(client))
                totals = best_of(lambda: CarbonGate(client).pool("pi", time.time()))
                rows.append({"workers": n, "every_worker_ms": whole * 1000, "totals_ms": totals * 1000})
            client.close()
        finally:
            server.stop()
    header = ["live workers", "every worker ms", "the totals ms", "every worker / totals"]
    print(side_by_side(rows, "workers", "every_worker_ms", "totals_ms", header))
    write_json(args.json, {"zones": len(ZONES), "rows": rows})


if __name__ == "__main__":
    main()
