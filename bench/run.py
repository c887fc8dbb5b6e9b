"""The whole benchmark suite: one table of bare kernel, Hydra and Dask on the same cores.

    python -m bench [--quick] [--workers N]

For each workload: the bare numba kernel (one process per core, no Redis), Hydra end to end
(warm ``rq worker hydra`` processes, a monitor, a local Redis) and Dask
(``dask.distributed.LocalCluster``, one single-threaded process per core, the same kernel and as
many tasks as Hydra made chunks), all measured in this run. Then, without ``--quick``, the
heterogeneous-workers, recovery and scale-out benchmarks. Writes ``bench/out/suite.json`` and
``bench/out/suite.png``. ``--quick`` uses small sizes and exists so CI can check the suite runs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import OUT, WarmCluster, bare_pi, cores, save, table
from bench.mandel import VIEWS
from bench.mandel import bare as bare_mandel
from hydra.queue import read_job


def _dask_pi(args: tuple[int, int, int]) -> int:
    from hydra.tasks.pi.kernel import count_inside_samples

    return count_inside_samples(*args)


def _dask_stripe(args: tuple) -> int:
    from hydra.tasks.mandelbrot.kernel import escape_counts

    cx, cy, span, size, max_iter, first, count = args
    out = np.empty((count, size), np.uint16)
    return escape_counts(cx, cy, span, size, size, max_iter, first, count, out)


def _pieces(total: int, n: int) -> list[tuple[int, int]]:
    step = -(-total // n)
    return [(first, min(step, total - first)) for first in range(0, total, step)]


class DaskRunner:
    def __init__(self, workers: int) -> None:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        )
        self.client = Client(self.cluster)
        self.client.gather(self.client.map(_dask_pi, [(0, i, 1) for i in range(workers * 2)]))
        self.client.gather(self.client.map(_dask_stripe, [(0.0, 0.0, 1.0, 8, 10, 0, 1)] * workers * 2, pure=False))

    def timed(self, fn, args: list) -> tuple[float, int]:
        start = time.perf_counter()
        total = sum(self.client.gather(self.client.map(fn, args, pure=False)))
        return time.perf_counter() - start, total

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def throughput(quick: bool, workers: int) -> list[dict[str, Any]]:
    samples = 2 * 10**8 if quick else 10**10
    size = 512 if quick else 4096
    rows: list[dict[str, Any]] = []
    dask = DaskRunner(workers)
    try:
        with WarmCluster(workers) as cluster:
            cluster.run("mandelbrot", {"width": 256, "height": 256})
            bare_s, inside = bare_pi(samples, 2026, workers)
            result = cluster.run("pi", {"samples": samples, "seed": 2026})
            chunks = int(read_job(cluster.client, result["job"])["next_chunk"])
            dask_s, dask_inside = dask.timed(_dask_pi, [(2026, f, n) for f, n in _pieces(samples, chunks)])
            assert result["inside"] == inside == dask_inside
            rows.append(
                {
                    "workload": f"pi {samples:.0e} samples",
                    "unit": "samples/s",
                    "work": samples,
                    "bare": bare_s,
                    "hydra": result["seconds"],
                    "dask": dask_s,
                    "chunks": chunks,
                }
            )
            for name, view in VIEWS.items():
                bare_s, iterations = bare_mandel(view, size, workers)
                result = cluster.run("mandelbrot", {"width": size, "height": size, **view})
                chunks = int(read_job(cluster.client, result["job"])["next_chunk"])
                cx, cy = (float(v) for v in view["center"].split(","))
                args = [(cx, cy, view["span"], size, view["max_iter"], f, n) for f, n in _pieces(size, chunks)]
                dask_s, dask_iterations = dask.timed(_dask_stripe, args)
                assert result["iterations"] == iterations == dask_iterations
                rows.append(
                    {
                        "workload": f"mandelbrot {name} {size}²",
                        "unit": "pixels/s",
                        "work": size * size,
                        "bare": bare_s,
                        "hydra": result["seconds"],
                        "dask": dask_s,
                        "chunks": chunks,
                    }
                )
    finally:
        dask.close()
    return rows


def chart(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    x = np.arange(len(rows))
    for offset, key, colour in ((-0.2, "hydra", "#5b8def"), (0.2, "dask", "#f39c4a")):
        ax.bar(x + offset, [r["bare"] / r[key] for r in rows], 0.4, label=key.capitalize(), color=colour)
    ax.axhline(1.0, color="#444", linestyle="--", linewidth=1, label="bare kernel")
    ax.set_xticks(x, [r["workload"] for r in rows], fontsize=8)
    ax.set_ylabel("throughput / bare kernel")
    ax.legend(fontsize=8)
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "suite.png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the suite runs")
    parser.add_argument("--workers", type=int, default=cores())
    args = parser.parse_args()
    rows = throughput(args.quick, args.workers)
    print(
        table(
            [
                [
                    r["workload"],
                    r["chunks"],
                    r["work"] / r["bare"],
                    r["work"] / r["hydra"],
                    r["work"] / r["dask"],
                    r["bare"] / r["hydra"],
                    r["dask"] / r["hydra"],
                ]
                for r in rows
            ],
            ["workload", "chunks", "bare /s", "hydra /s", "dask /s", "hydra/bare", "hydra/dask"],
        )
    )
    save("suite", {"workers": args.workers, "quick": args.quick, "rows": rows})
    chart(rows)
    print("wrote bench/out/suite.json and bench/out/suite.png")
    if not args.quick:
        from bench import hetero, recovery, scale

        for module in (hetero, recovery, scale):
            print(f"\n== {module.__name__}")
            module.main([])


if __name__ == "__main__":
    main()
