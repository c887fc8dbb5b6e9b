"""Heterogeneous volunteers: makespan against the ideal, fixed chunks against adaptive ones.

    python -m bench.hetero [--samples 3e10] [--speeds 1,1,0.25,0.1]

Workers are slowed with the benchmark-only ``hydra.faults.FaultyWorker`` and ``HYDRA_THROTTLE``
(same kernel, then a sleep). The
ideal makespan is the total work divided by the sum of the workers' measured rates. (a) fixed
equal chunks of about 2 s of a full-speed worker, never split nor copied (the proof of concept's
static scheme); (b) Hydra's adaptive chunks with speculative copies for the tail.
"""

from __future__ import annotations

import argparse
import time

from bench.common import OUT, bar_chart, save, table
from hydra import keys
from hydra.connection import connect
from hydra.local import LocalCluster
from hydra.queue import SubmitOptions, live_workers, result_of, submit, wait_for_job
from hydra.tasks.base import parse_count
from hydra.tasks.pi.kernel import BLOCK


def run(client, samples: int, **options) -> tuple[float, dict]:
    job_id = submit(client, "pi", {"samples": samples, "seed": 8}, SubmitOptions(**options))
    wait_for_job(client, job_id, timeout=3600)
    result = result_of(client, job_id)
    return result["seconds"], result


def rates(client) -> dict[str, float]:
    return {n.decode(): s for n, s in client.zrange(keys.rates("pi"), 0, -1, withscores=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="3e10")
    parser.add_argument("--speeds", default="1,1,0.25,0.1")
    args = parser.parse_args(argv)
    samples = parse_count("samples", args.samples, low=1, high=10**16)
    speeds = [float(s) for s in args.speeds.split(",")]
    with LocalCluster(0) as cluster:
        for speed in speeds:
            cluster.add_worker({"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker", "HYDRA_THROTTLE": str(speed)})
        client = connect(cluster.url)
        while len(live_workers(client)) < len(speeds):
            time.sleep(0.05)
        run(client, samples // 10)  # warm-up: kernels loaded, speeds measured
        adaptive_seconds, adaptive = run(client, samples)
        measured = rates(client)
        fast = max(measured.values())
        chunk_units = max(1, int(fast * 2.0 / BLOCK))
        fixed_seconds, fixed = run(client, samples, chunk_units=chunk_units, speculate=False)
        assert fixed["inside"] == adaptive["inside"], "chunking changed the result"
        client.close()
    ideal = samples / sum(measured.values())
    rows = [
        ["ideal (work / sum of rates)", ideal, 1.0],
        ["(a) fixed equal chunks", fixed_seconds, ideal / fixed_seconds],
        ["(b) adaptive chunks", adaptive_seconds, ideal / adaptive_seconds],
    ]
    print(f"workers at speeds {speeds}; measured rates " + ", ".join(f"{r:.3g}" for r in sorted(measured.values())))
    print(table(rows, ["", "makespan s", "efficiency (ideal / makespan)"]))
    save(
        "hetero",
        {
            "speeds": speeds,
            "rates": measured,
            "ideal": ideal,
            "fixed": fixed_seconds,
            "adaptive": adaptive_seconds,
            "samples": samples,
            "fixed_chunk_units": chunk_units,
        },
    )
    bar_chart(
        OUT / "hetero.png",
        f"π {samples:.0e} samples, workers at speeds {args.speeds}",
        ["ideal", "fixed chunks", "adaptive"],
        [ideal, fixed_seconds, adaptive_seconds],
        "makespan (s)",
        reference=ideal,
    )


if __name__ == "__main__":
    main()
