"""Scale-out: speed-up of 1, 2, 4, 8, 16 … workers over one worker on the same π job, in one run.

    python -m bench.scale [--samples 1e11] [--max-workers N]

Worker counts double up to the machine's cores (or ``--max-workers``). Each point is a fresh
warm cluster; the job's wall time is measured from submit to the last chunk. Writes a chart.
"""

from __future__ import annotations

import argparse

from bench.common import OUT, WarmCluster, cores, save, table
from hydra.tasks.base import parse_count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="1e11")
    parser.add_argument("--max-workers", type=int, default=cores())
    args = parser.parse_args(argv)
    samples = parse_count("samples", args.samples, low=1, high=10**16)
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= args.max_workers]
    seconds, inside = {}, set()
    for n in counts:
        with WarmCluster(n) as cluster:
            result = cluster.run("pi", {"samples": samples, "seed": 4})
        seconds[n] = result["seconds"]
        inside.add(result["inside"])
    assert len(inside) == 1, "the worker count changed the result"
    rows = [[n, seconds[n], samples / seconds[n], seconds[1] / seconds[n], seconds[1] / seconds[n] / n] for n in counts]
    print(table(rows, ["workers", "seconds", "samples/s", "speed-up", "efficiency"]))
    save("scale", {"samples": samples, "seconds": seconds})
    _chart(counts, [seconds[1] / seconds[n] for n in counts])


def _chart(counts: list[int], speedups: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(counts, counts, "--", color="#999", label="linear")
    ax.plot(counts, speedups, "o-", color="#5b8def", label="Hydra")
    ax.set_xlabel("workers")
    ax.set_ylabel("speed-up over 1 worker")
    ax.legend()
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "scale.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
