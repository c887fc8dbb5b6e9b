"""The cost of verified results, and how fast a cheater is caught.

    python -m bench.verify [--samples 1e10]

Three warm honest workers run the same π job with no verification, ``--verify auto`` and
``--verify 2``; throughput is compared in one run. Then a fourth worker that cheats on 10 % of its
chunks (the test-only ``hydra.faults.FaultyWorker`` with ``HYDRA_FAULT=cheat:0.1``) joins an
``auto`` job of small fixed chunks:
printed is how many chunks it had finished when it was quarantined.
"""

from __future__ import annotations

import argparse
import time

from bench.common import WarmCluster, save, table
from hydra import keys
from hydra.queue import SubmitOptions, submit, units_by_worker, wait_for_job
from hydra.tasks.base import parse_count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="1e10")
    args = parser.parse_args(argv)
    samples = parse_count("samples", args.samples, low=1, high=10**16)
    rows, data = [], {}
    with WarmCluster(3) as cluster:
        for mode in ("1", "auto", "2"):
            result = cluster.run("pi", {"samples": samples, "seed": 5}, verify=mode)
            data[mode] = result["seconds"]
        base = data["1"]
        for mode, label in (("1", "no verification"), ("auto", "--verify auto"), ("2", "--verify 2")):
            rows.append([label, data[mode], samples / data[mode], base / data[mode]])
        cluster.add_worker(
            {"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker", "HYDRA_FAULT": "cheat:0.1"}, volunteer="cheat"
        )
        cluster.wait_ready()
        client = cluster.client
        name = "volunteer-cheat"
        job_id = submit(client, "pi", {"samples": 4000 * 2**20, "seed": 6}, SubmitOptions(chunk_units=2, verify="auto"))
        while not client.sismember(keys.QUARANTINE, name):
            if (
                client.hget(keys.job(job_id), "state") != b"running"
                and client.hget(keys.job(job_id), "state") != b"queued"
            ):
                break
            time.sleep(0.01)
        caught = client.sismember(keys.QUARANTINE, name)
        # Its results that were counted before it was caught (each reversed since): its grants in the ledger.
        chunks = sum(f'"kind":"grant","volunteer":"{name}"'.encode() in e for e in client.lrange(keys.LEDGER, 0, -1))
        wait_for_job(client, job_id, timeout=600)
        counted = units_by_worker(client, job_id).get(name, 0)
    print(table(rows, ["", "seconds", "samples/s", "throughput vs none"]))
    verdict = f"caught after {chunks} chunks" if caught else "not caught"
    print(f"a worker cheating on 10% of its chunks: {verdict}; its units still counted at the end: {counted}")
    save("verify", {"seconds": data, "cheater_caught": bool(caught), "cheater_chunks": chunks})


if __name__ == "__main__":
    main()
