"""Cold start: time to result from a fresh process, Hydra against the bare kernel and Dask.

    python -m bench.cold [--quick] [--samples 1e10] [--repeat 3] [--json PATH]

Side by side in one run, interleaved (A B C A B C …, medians reported), each from a fresh
interpreter, on every core, the same numba kernel and the same samples:

* ``hydra submit pi --samples N --local`` (Redis, monitor and one ``rq worker hydra`` per
  core started for this one job, then stopped; its page starts only if the job runs past 2 s);
* the bare kernel: one forked process per core, no queue;
* Dask: ``LocalCluster`` (one single-threaded process per core) mapping the kernel.

Then where Hydra's cold start goes, phase by phase, timed from the CLI's side: interpreter and
imports (``python -c 'import …'`` for each module a process needs), starting Redis, the workers'
start until their hello is handled, the first assignment, the kernel, the end of the job, and
stopping the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, table, write_json

SEED = 2026
IMPORTS = {
    "interpreter (python -c pass)": "pass",
    "hydra.cli (the CLI)": "import hydra.cli",
    "hydra.monitor (monitor process)": "import hydra.monitor, hydra.events",
    "rq + hydra.worker (worker process; numba loads with the kernel)": "import rq.cli, hydra.worker",
    "numba": "import numba",
    "kernel loaded from numba's cache": "from hydra.tasks.pi.kernel import count_inside_samples as f; f(0, 0, 1)",
    "web.server (page process)": "import web.server",
    "dask.distributed": "import dask.distributed",
}


# -- the contestants, each in a fresh process ----------------------------------------------------


def _share(args: tuple[int, int, int]) -> int:
    from hydra.tasks.pi.kernel import count_inside_samples

    return count_inside_samples(*args)


def _pieces(samples: int, n: int) -> list[tuple[int, int, int]]:
    step = -(-samples // n)
    return [(SEED, first, min(step, samples - first)) for first in range(0, samples, step)]


def bare(samples: int) -> int:
    import multiprocessing

    cores = os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        return sum(pool.map(_share, _pieces(samples, cores), chunksize=1))


def dask(samples: int) -> int:
    from dask.distributed import Client, LocalCluster

    cores = os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as cluster,
        Client(cluster) as client,
    ):
        return sum(client.gather(client.map(_share, _pieces(samples, 4 * cores), pure=False)))


def timed(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return elapsed, done.stdout


def contestants(samples: int) -> dict[str, list[str]]:
    return {
        "hydra --local": [sys.executable, "-m", "hydra", "submit", "pi", "--samples", str(samples), "--local"]
        + ["--json"],
        "bare (fork per core)": [sys.executable, "-m", "bench.cold", "--run", "bare", "--samples", str(samples)],
        "dask LocalCluster": [sys.executable, "-m", "bench.cold", "--run", "dask", "--samples", str(samples)],
    }


def inside_of(name: str, stdout: str) -> int:
    if name.startswith("hydra"):
        return int(json.loads(stdout)["inside"])
    return int(stdout.strip().splitlines()[-1])


# -- where Hydra's cold start goes -----------------------------------------------------------------


def import_times(repeat: int) -> dict[str, float]:
    out = {}
    for label, code in IMPORTS.items():
        runs = []
        for _ in range(repeat):
            try:
                runs.append(timed([sys.executable, "-c", code])[0])
            except RuntimeError:
                break
        if runs:
            out[label] = statistics.median(runs)
    return out


def phases(samples: int) -> dict[str, float]:
    """One ``submit --local`` done step by step here as the CLI does it (no page for a job this short,
    submitted as soon as Redis answers), each step timed in seconds from the start."""
    from hydra.connection import connect
    from hydra.local import LocalCluster
    from hydra.queue import SubmitOptions, submit

    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    cluster = LocalCluster(None, prefork=["pi"])
    server = cluster.redis
    assert server is not None
    server.start()
    marks["redis started"] = time.perf_counter() - t0
    cluster.redis, cluster._url = None, server.url  # started here: the cluster must not start it again
    try:
        cluster.start()
        marks["monitor and the worker fork process spawned"] = time.perf_counter() - t0
        client = connect(cluster.url)
        job_id = submit(client, "pi", {"samples": samples, "seed": SEED}, SubmitOptions())
        marks["job submitted"] = time.perf_counter() - t0
        wall0 = time.time() - (time.perf_counter() - t0)
        job = f"hydra:job:{job_id}"
        probes = {
            "first chunk assigned": lambda: client.hget(job, "started"),
            "every worker's hello handled (imports done)": lambda: client.zcard("hydra:live") >= cluster.n_workers,
            "first result accepted (the probe chunk)": lambda: client.llen(f"{job}:trace"),
            "job done (seen by the CLI)": lambda: client.hget(job, "state") == b"done",
        }
        while probes:
            for label, probe in list(probes.items()):
                if probe():
                    marks[label] = time.perf_counter() - t0
                    del probes[label]
            time.sleep(0.002)
        finished = float(client.hget(job, "finished") or 0)
        if finished:
            marks["job done (in Redis)"] = finished - wall0
        marks["chunks stolen at the tail (a count)"] = int(client.hget(job, "stolen") or 0)
        client.close()
    finally:
        stop_started = time.perf_counter()
        cluster.redis = server
        cluster.stop()
        marks["cluster stopped"] = time.perf_counter() - t0
        marks["  of which stopping"] = time.perf_counter() - stop_started
    return marks


# -- the command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e9 samples, one round (CI)")
    parser.add_argument("--samples", type=float, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--run", choices=("bare", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, nargs="?", const=OUT / "cold.json")
    args = parser.parse_args(argv)
    samples = int(args.samples or (1e9 if args.quick else 1e10))
    if samples < 1:
        raise SystemExit("bench.cold: --samples must be at least 1")
    if args.run:
        print(bare(samples) if args.run == "bare" else dask(samples))
        return
    repeat = args.repeat or (1 if args.quick else 3)
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in contestants(samples)}
    answers: dict[str, int] = {}
    for _ in range(repeat):
        for name, command in contestants(samples).items():
            elapsed, stdout = timed(command)
            times[name].append(elapsed)
            answers[name] = inside_of(name, stdout)
    if len(set(answers.values())) != 1:
        raise SystemExit(f"bench.cold: the contestants disagree: {answers}")
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    base = medians["bare (fork per core)"]
    out: dict[str, Any] = {
        "samples": samples,
        "cores": os.cpu_count(),
        "repeat": repeat,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "inside": answers["bare (fork per core)"],
        "seconds": times,
        "median_s": medians,
        "vs_bare": {name: m / base for name, m in medians.items()},
    }
    rows = [[name, medians[name], min(times[name]), max(times[name]), medians[name] / base] for name in medians]
    print(f"cold start, pi {samples:.3g} samples, {out['cores']} cores, load {out['load_before']}→{out['load_after']}")
    print(table(rows, ["", "median s", "min", "max", "x bare"]), flush=True)
    out["imports_s"] = import_times(repeat)
    out["hydra_phases_s"] = phases(samples)
    print("\nimports, each from a fresh interpreter (median s):")
    print(table([[k, v] for k, v in out["imports_s"].items()], ["", "s"]))
    print("\nhydra --local, phase by phase (s from the start, one run):")
    print(table([[k, v] for k, v in out["hydra_phases_s"].items()], ["", "s"]))
    write_json(args.json, out)


if __name__ == "__main__":
    main()
