"""What one result costs the trusted side, alone and in a batch, side by side in one run.

In one process against a real ``redis-server``: V volunteers with W workers each say hello to the
real collector; then, round after round, every worker's next chunk descriptor is answered with a
null result pushed into its volunteer's outbox, and the collector drains the outboxes as the
monitor does. Four volunteers with one worker each, drained one at a time, is the worst case
(every batch holds one result: its round trips are paid by that result alone); four with fifty
workers each is what a busy volunteer account looks like (results of many workers drained
together); sixty-four with one worker each, drained together (``Collector.drain_many``, as the
monitor does with the volunteers it heard from), is a crowd of single-worker volunteers. It prints
the collector's CPU and Redis's CPU per result, the Redis commands per result (those the scripts
run included), and each row's ratio to the first. The simulated volunteers' own work (popping
inboxes, pushing results) runs in the same Redis and is counted in its CPU; it is the same per
result in every row.

    python -m bench.collect [--results 8000] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, table, write_json
from bench.nulltask import register
from hydra import keys
from hydra.collector import Collector
from hydra.connection import connect
from hydra.local import RedisServer
from hydra.queue import SubmitOptions, submit
from hydra.settings import Settings

ROWS = [  # (volunteers, workers each, drained together)
    (4, 1, False),
    (4, 50, False),
    (64, 1, True),
]


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def commands(client: Any) -> int:
    return int(client.info("stats")["total_commands_processed"])


def measure(volunteers: int, workers: int, together: bool, results: int) -> dict[str, Any]:
    """Collector CPU, Redis CPU and commands per result with ``volunteers`` volunteers of ``workers``
    workers each, their outboxes drained one by one or ``together``."""
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            client = connect(server.url)
            collector = Collector(client, Settings())
            submit(client, "null", {"units": 10 * (results + 4 * volunteers * workers)}, SubmitOptions(chunk_units=10))
            users = [f"v{i}" for i in range(volunteers)]
            hello = {"t": "hello", "tasks": {"null": "1"}, "device": "cpu", "zone": "", "host": "bench", "pid": 1}
            for user in users:
                for w in range(workers):
                    collector.handle(user, json.dumps({**hello, "w": f"w{w}"}).encode() + b"\n")

            def answer(user: str) -> None:
                pipe = client.pipeline(transaction=False)
                for w in range(workers):
                    pipe.lpop(keys.inbox(user, f"w{w}"))
                out = []
                for w, raw in enumerate(pipe.execute()):
                    chunk = json.loads(raw) if raw else {}
                    if chunk.get("t") == "chunk":
                        header = {"t": "result", "w": f"w{w}", "job": chunk["job"], "chunk": chunk["chunk"]}
                        header |= {"a": chunk["a"], "sums": {"n": chunk["count"]}, "seconds": 0.01}
                        out.append(json.dumps(header).encode() + b"\n")
                if out:
                    client.rpush(keys.outbox(user), *out)

            def drain() -> int:
                if together:
                    return collector.drain_many(dict.fromkeys(users))
                return sum(collector.drain(user) for user in users)

            for user in users:  # a first round teaches Redis every script
                answer(user)
            drain()
            handled, cpu = 0, 0.0
            redis0, commands0 = redis_cpu(client), commands(client)
            while handled < results:
                for user in users:
                    answer(user)
                started = time.process_time()
                handled += drain()
                cpu += time.process_time() - started
            redis_used, sent = redis_cpu(client) - redis0, commands(client) - commands0
            client.close()
        finally:
            server.stop()
    return {
        "volunteers": volunteers,
        "workers_per_volunteer": workers,
        "drained_together": together,
        "results": handled,
        "collector_us_per_result": cpu / handled * 1e6,
        "redis_us_per_result": redis_used / handled * 1e6,
        "redis_commands_per_result": sent / handled,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=8000)
    parser.add_argument("--json", type=Path, nargs="?", const=OUT / "collect.json")
    args = parser.parse_args(argv)
    if args.results < 100:
        raise SystemExit("bench.collect: --results must be at least 100")
    register()
    rows = [measure(v, w, together, args.results) for v, w, together in ROWS]
    alone = rows[0]
    print(
        table(
            [
                [
                    r["volunteers"],
                    r["workers_per_volunteer"],
                    "together" if r["drained_together"] else "one by one",
                    round(r["collector_us_per_result"]),
                    round(r["redis_us_per_result"]),
                    round(r["redis_commands_per_result"], 1),
                    f"{r['collector_us_per_result'] / alone['collector_us_per_result']:.2f}",
                    f"{r['redis_us_per_result'] / alone['redis_us_per_result']:.2f}",
                ]
                for r in rows
            ],
            [
                "volunteers",
                "workers each",
                "outboxes drained",
                "collector µs/result",
                "Redis µs/result",
                "commands/result",
                "collector × first",
                "Redis × first",
            ],
        )
    )
    ratios = {
        f"{r['volunteers']}x{r['workers_per_volunteer']}{' together' if r['drained_together'] else ''}": {
            "collector": r["collector_us_per_result"] / alone["collector_us_per_result"],
            "redis": r["redis_us_per_result"] / alone["redis_us_per_result"],
        }
        for r in rows[1:]
    }
    write_json(args.json, {"rows": rows, "over_first_row": ratios})


if __name__ == "__main__":
    main()
