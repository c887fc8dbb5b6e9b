"""π end to end against the bare kernel on the same cores, in one run.

    python -m bench.pi [--samples 1e10] [--workers N]

Bare: the numba kernel, one process per core, no Redis. Hydra: the same number of warm
``rq worker hydra`` processes (kernels loaded, speeds measured), a monitor and a local Redis; the
time is the job's wall time from submit to the last chunk counted.
"""

from __future__ import annotations

import argparse

from bench.common import WarmCluster, bare_pi, cores, save, table
from hydra.tasks.base import parse_count


def measure(samples: int, workers: int, seed: int = 2026, repeats: int = 1) -> dict:
    best_bare, best_hydra = float("inf"), float("inf")
    with WarmCluster(workers) as cluster:
        for _ in range(repeats):
            bare_seconds, bare_inside = bare_pi(samples, seed, workers)
            result = cluster.run("pi", {"samples": samples, "seed": seed})
            assert result["inside"] == bare_inside, "Hydra and the bare kernel disagree"
            best_bare, best_hydra = min(best_bare, bare_seconds), min(best_hydra, result["seconds"])
    return {
        "samples": samples,
        "workers": workers,
        "bare_seconds": best_bare,
        "hydra_seconds": best_hydra,
        "bare_rate": samples / best_bare,
        "hydra_rate": samples / best_hydra,
        "ratio": best_bare / best_hydra,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="1e10")
    parser.add_argument("--workers", type=int, default=cores())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    r = measure(parse_count("samples", args.samples, low=1, high=10**16), args.workers, repeats=args.repeats)
    print(
        table(
            [["bare kernel", r["bare_seconds"], r["bare_rate"]], ["hydra", r["hydra_seconds"], r["hydra_rate"]]],
            ["", "seconds", "samples/s"],
        )
    )
    print(
        f"hydra / bare = {r['ratio']:.3f}  ({r['workers']} processes, {r['samples']:.3g} samples, best of "
        f"{args.repeats})"
    )
    save("pi", r)


if __name__ == "__main__":
    main()
