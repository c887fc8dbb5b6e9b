"""How fast a SIGKILLed worker's chunk runs again, and what the kill costs the job.

    python -m bench.recovery [--samples 2e10]

Two warm workers run a long π job; once both hold a chunk, one is killed with SIGKILL. Printed:
(a) seconds from the kill until the lost chunk is claimed by another worker, (b) the job's wall
time against an undisturbed run of the same job in the same script. A "40 × 2-second chunk"
rule, the proof of concept's, would give 80 s for (a).
"""

from __future__ import annotations

import argparse
import json
import signal
import time

from bench.common import WarmCluster, save, table
from hydra import keys
from hydra.queue import SubmitOptions, result_of, submit, wait_for_job
from hydra.tasks.base import parse_count


def killed_run(cluster: WarmCluster, samples: int) -> tuple[float, float]:
    client = cluster.client
    job_id = submit(client, "pi", {"samples": samples, "seed": 3}, SubmitOptions())
    while client.zcard(keys.DEADLINES) < 2:
        time.sleep(0.01)
    member = client.zrange(keys.DEADLINES, 0, 0)[0].decode()
    _, chunk_id, nonce = keys.parse_assignment(member)
    holders = json.loads(client.hget(keys.chunks(job_id), chunk_id))["holders"]
    holder = next(name for name, held in holders.items() if held["nonce"] == nonce)
    pid = int(client.hget(keys.worker(holder), "pid"))
    victim = next(p for p in cluster.workers if p.pid == pid)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    while True:  # the chunk runs again once a live worker holds it (or it is already done)
        raw = client.hget(keys.chunks(job_id), chunk_id)
        if raw is None or set(json.loads(raw).get("holders") or {}) - {holder}:
            break
        time.sleep(0.01)
    recovered = time.time() - killed_at
    cluster.add_worker()
    wait_for_job(client, job_id, timeout=3600)
    return recovered, result_of(client, job_id)["seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="2e10")
    args = parser.parse_args(argv)
    samples = parse_count("samples", args.samples, low=1, high=10**16)
    with WarmCluster(2) as cluster:
        undisturbed = cluster.run("pi", {"samples": samples, "seed": 3})["seconds"]
        recovered, disturbed = killed_run(cluster, samples)
    rows = [
        ["time until the lost chunk runs again", f"{recovered:.2f} s", "80 s (40 × 2 s rule)"],
        ["job wall time, undisturbed", f"{undisturbed:.2f} s", ""],
        ["job wall time, one worker killed", f"{disturbed:.2f} s", f"slowdown {disturbed / undisturbed:.2f}×"],
    ]
    print(table(rows, ["", "measured", "compare"]))
    save(
        "recovery", {"recovery_seconds": recovered, "undisturbed_seconds": undisturbed, "disturbed_seconds": disturbed}
    )


if __name__ == "__main__":
    main()
