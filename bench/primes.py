"""Counting primes: Hydra against its own bare kernel, and against primesieve, on the same cores.

    python -m bench.primes [--below 1e10] [--workers N] [--repeats 3]

* bare kernel: :func:`hydra.tasks.primes.kernel.count_primes` on a process pool, one range per
  process, no Redis;
* run API: the same kernel through ``PrimesTask.run`` in chunks of 64 segments, in one process
  (what a worker does per chunk, without the network), against the bare kernel in one process;
* hydra: a job on a warm local cluster of ``--workers`` ``rq worker hydra`` processes;
* primesieve (the C++ library, if ``pip install primesieve`` works here): one core.

Every row must count the same primes; the figures go to bench/out/primes.json.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

from bench.common import WarmCluster, cores, save, table
from hydra.tasks.params import parse_count
from hydra.tasks.primes import SEGMENT, PrimesTask
from hydra.tasks.primes.kernel import count_primes

CHUNK_SEGMENTS = 64


def _share(args: tuple[int, int, int]) -> int:
    lo, hi, below = args
    return count_primes(lo, hi, below)[0]


def bare(below: int, processes: int) -> tuple[float, int]:
    """Seconds and count of the bare kernel, ``processes`` equal ranges, warm."""
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_share, [(0, 1000, 1000)] * processes))
        step = -(-below // processes)
        parts = [(i * step, min((i + 1) * step, below), below) for i in range(processes)]
        start = time.perf_counter()
        count = sum(pool.map(_share, parts))
        return time.perf_counter() - start, count


def through_run_api(below: int) -> tuple[float, int]:
    """Seconds and count of the task's run() in chunks, in this process."""
    task = PrimesTask()
    params = task.parse({"below": below})
    task.warm_up()
    total = task.plan(params).units_total
    start = time.perf_counter()
    count = 0
    for first in range(0, total, CHUNK_SEGMENTS):
        count += task.run(params, b"", 0, first, min(CHUNK_SEGMENTS, total - first)).sums["primes"]
    return time.perf_counter() - start, count


def primesieve_one_core(below: int) -> tuple[float, int] | None:
    try:
        import primesieve
    except ImportError:
        return None
    primesieve.set_num_threads(1)
    start = time.perf_counter()
    count = primesieve.count_primes(below - 1)  # primes ≤ below − 1 = primes < below
    return time.perf_counter() - start, count


def measure(below: int, workers: int, repeats: int = 1) -> dict:
    best = {"bare_1": float("inf"), "run_api_1": float("inf"), "bare_n": float("inf"), "hydra_n": float("inf")}
    counts = set()
    for _ in range(repeats):
        for key, (seconds, count) in (("bare_1", bare(below, 1)), ("run_api_1", through_run_api(below))):
            best[key] = min(best[key], seconds)
            counts.add(count)
    with WarmCluster(workers) as cluster:
        cluster.run("primes", {"below": 64 * SEGMENT})  # every worker compiles the kernel and gets a speed
        for _ in range(repeats):
            seconds, count = bare(below, workers)
            result = cluster.run("primes", {"below": below})
            best["bare_n"], best["hydra_n"] = min(best["bare_n"], seconds), min(best["hydra_n"], result["seconds"])
            counts |= {count, result["primes"]}
    sieve = primesieve_one_core(below)
    if sieve:
        counts.add(sieve[1])
    assert len(counts) == 1, f"the counts disagree: {counts}"
    return {
        "below": below,
        "primes": counts.pop(),
        "workers": workers,
        **{f"{k}_seconds": v for k, v in best.items()},
        "run_api_ratio": best["bare_1"] / best["run_api_1"],
        "hydra_ratio": best["bare_n"] / best["hydra_n"],
        "primesieve_1_seconds": sieve[0] if sieve else None,
        "primesieve_speedup_over_bare_1": best["bare_1"] / sieve[0] if sieve else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--below", default="1e10")
    parser.add_argument("--workers", type=int, default=cores())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    r = measure(parse_count("below", args.below, low=2, high=10**15), args.workers, args.repeats)
    rows = [
        ["bare kernel, 1 process", r["bare_1_seconds"], r["below"] / r["bare_1_seconds"]],
        ["PrimesTask.run in chunks, 1 process", r["run_api_1_seconds"], r["below"] / r["run_api_1_seconds"]],
        [f"bare kernel, {r['workers']} processes", r["bare_n_seconds"], r["below"] / r["bare_n_seconds"]],
        [f"hydra, {r['workers']} workers", r["hydra_n_seconds"], r["below"] / r["hydra_n_seconds"]],
    ]
    if r["primesieve_1_seconds"]:
        rows.append(["primesieve, 1 thread", r["primesieve_1_seconds"], r["below"] / r["primesieve_1_seconds"]])
    print(table(rows, ["", "seconds", "numbers/s"]))
    print(
        f"{r['primes']:,} primes below {r['below']:.3g}; run API / bare = {r['run_api_ratio']:.3f}; "
        f"hydra / bare = {r['hydra_ratio']:.3f} (best of {args.repeats})"
    )
    save("primes", r)


if __name__ == "__main__":
    main()
