"""What the page's credit standings cost as the board grows, side by side in one run.

    python -m bench.board [--sizes 1000,10000,100000] [--json PATH]

Against a real ``redis-server``, a board of N volunteers' standings is written as the monitor
writes it (``hydra:credit:board`` and, with it, the rank by credit). For each N it times the top 20
read two ways: from the whole board, as ``hydra credit`` reads it (every standing, ranked), and from
the top of the rank (:func:`hydra.credit.signed_top`, what the monitor's once-a-second ``credit``
event and ``/api/credit`` read), checks that both give the same rows, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import OUT, side_by_side, sizes, write_json
from hydra import credit, ledger
from hydra.connection import connect
from hydra.local import RedisServer

TOP = credit.TOP


def fill(client: Any, n: int) -> None:
    client.delete(ledger.BOARD, ledger.RANK, ledger.TOTALS)
    for lo in range(0, n, 5000):
        board = {
            f"volunteer-{i:06d}": credit.Standing(
                f"volunteer-{i:06d}", credit=(i * 7919) % 100_003, chunks=i % 50, grants=i % 50, rac=1.5, last=1.7e9
            )
            for i in range(lo, min(n, lo + 5000))
        }
        client.hset(ledger.BOARD, mapping={name: json.dumps(asdict(s)) for name, s in board.items()})
    credit.signed_top(client, TOP)  # the rank is built once, as for a board from before it existed


def best_of(call: Callable[[], Any], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated board sizes")
    parser.add_argument("--json", type=Path, nargs="?", const=OUT / "board.json")
    args = parser.parse_args(argv)
    now = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            client = connect(server.url)
            for n in sizes(args.sizes, "bench.board"):
                fill(client, n)
                whole = credit.ranked(credit.board(client, unsigned_limit=0), now)[:TOP]
                if credit.signed_top(client, TOP, now)[0] != whole:
                    raise SystemExit(f"bench.board: the top of the rank differs from the whole board's at N={n}")
                full = best_of(lambda: credit.ranked(credit.board(client, unsigned_limit=0), now)[:TOP])
                top = best_of(lambda: credit.signed_top(client, TOP, now))
                rows.append({"volunteers": n, "whole_board_ms": full * 1000, "signed_top_ms": top * 1000})
            client.close()
        finally:
            server.stop()
    header = ["volunteers", "whole board ms", "top of the rank ms", "whole / top"]
    print(side_by_side(rows, "volunteers", "whole_board_ms", "signed_top_ms", header))
    write_json(args.json, {"top": TOP, "rows": rows})


if __name__ == "__main__":
    main()
