"""Mandelbrot: bare kernel vs Hydra with one row per chunk vs Hydra's cost-sized stripes.

    python -m bench.mandel [--size 4096] [--memory]

Two views at 4096²: the full set (max-iter 1000) and a deep view where cost is very uneven
(centre -0.7436,0.1318, span 0.01, max-iter 5000). Bare: the numba kernel, one process per core,
rows dealt round-robin, no Redis. ``--memory`` instead renders 16384² at max-iter 1000 through
Hydra, writes the .npy and PNG, and prints the peak RSS of every process.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import WarmCluster, cores, save, table
from hydra.outputs import write_job_outputs
from hydra.queue import SubmitOptions, result_of, submit, wait_for_job

VIEWS = {
    "full": {"center": "-0.5,0", "span": 3.0, "max_iter": 1000},
    "uneven": {"center": "-0.7436,0.1318", "span": 0.01, "max_iter": 5000},
}


def _rows(args: tuple) -> int:
    from hydra.tasks.mandelbrot.kernel import escape_counts

    cx, cy, span, size, max_iter, start, step = args
    out = np.empty((1, size), np.uint16)
    return sum(escape_counts(cx, cy, span, size, size, max_iter, row, 1, out) for row in range(start, size, step))


def bare(view: dict, size: int, processes: int) -> tuple[float, int]:
    cx, cy = (float(v) for v in view["center"].split(","))
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_rows, [(cx, cy, 1.0, 8, 10, i, processes) for i in range(processes)]))  # load kernels
        start = time.perf_counter()
        iterations = sum(
            pool.map(_rows, [(cx, cy, view["span"], size, view["max_iter"], i, processes) for i in range(processes)])
        )
        return time.perf_counter() - start, iterations


def hydra_run(cluster: WarmCluster, view: dict, size: int, **options) -> tuple[float, int]:
    result = cluster.run("mandelbrot", {"width": size, "height": size, **view}, speculate=False, **options)
    return result["seconds"], result["iterations"]


def throughput(size: int, workers: int) -> None:
    rows, data = [], {}
    with WarmCluster(workers) as cluster:
        cluster.run("mandelbrot", {"width": 256, "height": 256})
        for name, view in VIEWS.items():
            bare_s, iterations = bare(view, size, workers)
            row_s, _ = hydra_run(cluster, view, size, chunk_units=1)
            adaptive_s, _ = hydra_run(cluster, view, size)
            pixels = size * size
            data[name] = {"bare": bare_s, "one_row": row_s, "adaptive": adaptive_s, "iterations": iterations}
            for label, seconds in (
                ("bare kernel", bare_s),
                ("hydra, one row per chunk", row_s),
                ("hydra, adaptive stripes", adaptive_s),
            ):
                rows.append([name, label, seconds, pixels / seconds / 1e6, iterations / seconds, bare_s / seconds])
    print(table(rows, ["view", "", "seconds", "Mpixel/s", "iterations/s", "vs bare"]))
    save("mandel", {"size": size, "workers": workers, "views": data})


def memory(workers: int) -> None:
    size, view = 16384, VIEWS["full"]
    with WarmCluster(workers) as cluster, tempfile.TemporaryDirectory() as tmp:
        job_id = submit(cluster.client, "mandelbrot", {"width": size, "height": size, **view}, SubmitOptions())
        wait_for_job(cluster.client, job_id, timeout=3600)
        seconds = result_of(cluster.client, job_id)["seconds"]
        write_job_outputs(cluster.client, job_id, {"counts": Path(tmp) / "c.npy", "out": Path(tmp) / "m.png"})
        peaks = {f"worker {i}": _peak(p.pid) for i, p in enumerate(cluster.workers)}
        peaks["redis-server"] = _peak(cluster.redis.proc.pid)
        peaks["monitor"] = _peak(cluster.others[0].pid)
        peaks["submitter + assembly"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"16384² max-iter 1000 rendered in {seconds:.1f} s; peak RSS per process:")
    print(table([[name, f"{rss / 2**20:.0f} MiB"] for name, rss in peaks.items()], ["process", "peak RSS"]))
    save("mandel_memory", {"seconds": seconds, "peak_rss": peaks})


def _peak(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=cores())
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args(argv)
    memory(args.workers) if args.memory else throughput(args.size, args.workers)


if __name__ == "__main__":
    main()
