"""What folding and signing a slice of the ledger costs the monitor, with Redis idle and busy.

    python -m bench.sign [--sizes 32,512,2048] [--slices 40] [--base 100000] [--json PATH]

Against a real ``redis-server`` holding a ledger of ``--base`` signed entries, new entries (from
1,000 volunteers) are appended and signed a slice at a time, as the monitor does
(:func:`hydra.credit.monitor_pass`): first with Redis idle, then while other clients keep it busy
(pipelines of 1,000 ``HINCRBY`` from another process, as results pour in at scale), where every round
trip waits its turn behind theirs. It prints the median milliseconds per slice both ways, side by
side, and the round trips a slice makes. Each head is checked against the root recomputed from
every entry once per size.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.connection

from bench.common import OUT, sizes, table, write_json
from hydra import credit, ledger, merkle
from hydra.connection import connect
from hydra.local import RedisServer

VOLUNTEERS = 1000
_LOAD = """
import sys, redis
client = redis.Redis.from_url(sys.argv[1])
while True:
    pipe = client.pipeline(transaction=False)
    for i in range(1000):
        pipe.hincrby("bench:load", f"f{i}", 1)
    pipe.execute()
"""


def append(client: Any, start: int, n: int) -> None:
    entries = [
        ledger.format_entry("grant", f"v{i % VOLUNTEERS:04d}", "j1", "pi", i, 8, 1000, f"{i:064x}", 1.76e9 + i)
        for i in range(start, start + n)
    ]
    for lo in range(0, n, 10_000):
        client.rpush(ledger.LEDGER, *entries[lo : lo + 10_000])


def time_slices(client: Any, key: Any, size: int, slices: int) -> list[float]:
    """Seconds each of ``slices`` slices of ``size`` new entries took to fold and sign."""
    out = []
    for _ in range(slices):
        append(client, ledger.entry_count(client), size)
        started = time.perf_counter()
        head = credit.monitor_pass(client, key, batch=size)
        out.append(time.perf_counter() - started)
        if head is None or head.size != ledger.entry_count(client):
            raise SystemExit("bench.sign: a slice was not signed whole")
    return out


def round_trips(client: Any, key: Any, size: int) -> int:
    append(client, ledger.entry_count(client), size)
    send = redis.connection.AbstractConnection.send_packed_command
    trips = 0

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return send(self, *args, **kwargs)

    redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        credit.monitor_pass(client, key, batch=size)
    finally:
        redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    return trips


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,512,2048", help="comma-separated slice sizes (entries)")
    parser.add_argument("--slices", type=int, default=40, help="slices timed per size and load")
    parser.add_argument("--base", type=int, default=100_000, help="entries signed before the slices")
    parser.add_argument("--json", type=Path, nargs="?", const=OUT / "sign.json")
    args = parser.parse_args(argv)
    if args.slices < 1 or args.base < 0:
        raise SystemExit("bench.sign: --slices must be at least 1 and --base at least 0")
    slice_sizes = sizes(args.sizes, "bench.sign")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        key = ledger.load_key(Path(tmp) / "ledger.key")
        try:
            client = connect(server.url)
            append(client, 0, args.base)
            while credit.monitor_pass(client, key, batch=20_000):
                pass
            for size in slice_sizes:
                trips = round_trips(client, key, size)
                idle = time_slices(client, key, size, args.slices)
                load = subprocess.Popen([sys.executable, "-c", _LOAD, server.url])
                try:
                    time.sleep(0.5)
                    busy = time_slices(client, key, size, args.slices)
                finally:
                    load.kill()
                    load.wait()
                total = ledger.entry_count(client)
                memory = merkle.MemoryTree(ledger.read_entries(client, 0, total))
                if ledger.latest_head(client).root != merkle.root(memory, total).hex():
                    raise SystemExit("bench.sign: the signed root differs from the one recomputed")
                rows.append(
                    {
                        "slice": size,
                        "round_trips": trips,
                        "idle_ms": statistics.median(idle) * 1000,
                        "busy_ms": statistics.median(busy) * 1000,
                        "busy_p90_ms": statistics.quantiles(busy, n=10)[-1] * 1000 if len(busy) > 1 else busy[0] * 1000,
                    }
                )
            client.close()
        finally:
            server.stop()
    header = ["slice (entries)", "round trips", "Redis idle ms", "Redis busy ms", "busy p90 ms", "busy / idle"]
    cells = [
        [r["slice"], r["round_trips"], f"{r['idle_ms']:.2f}", f"{r['busy_ms']:.2f}", f"{r['busy_p90_ms']:.2f}"]
        + [f"{r['busy_ms'] / r['idle_ms']:.1f}"]
        for r in rows
    ]
    print(table(cells, header))
    write_json(args.json, {"base_entries": args.base, "rows": rows})


if __name__ == "__main__":
    main()
