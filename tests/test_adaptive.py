"""Adaptive chunking on real workers of unequal speed."""

from __future__ import annotations

import pytest

from hydra import keys
from hydra.queue import SubmitOptions, result_of, submit, units_by_worker, wait_for_job
from hydra.tasks.pi.kernel import count_inside_samples

pytestmark = pytest.mark.slow
SLOW = {"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker"}


def test_a_tenth_speed_worker_does_about_a_tenth_of_the_work(client, cluster_factory):
    cluster = cluster_factory(0)
    cluster.add_worker(SLOW | {"HYDRA_THROTTLE": "1"})
    cluster.add_worker(SLOW | {"HYDRA_THROTTLE": "0.1"})
    names = cluster.wait_for_workers(2)
    warm = submit(client, "pi", {"samples": "2e8", "seed": 1}, SubmitOptions(chunk_seconds=0.5))
    wait_for_job(client, warm, timeout=120)
    samples, seed = 20_000_000_000, 21  # long enough that the tail does not decide the shares
    job_id = submit(client, "pi", {"samples": samples, "seed": seed}, SubmitOptions(chunk_seconds=0.5))
    assert wait_for_job(client, job_id, timeout=300)["state"] == "done"
    assert result_of(client, job_id)["inside"] == count_inside_samples(seed, 0, samples)
    done = units_by_worker(client, job_id)
    slow = min(names, key=lambda n: float(client.hget(f"hydra:worker:{n}", "rate:pi")))
    share = done.get(keys.split_worker(slow)[0], 0) / sum(done.values())  # units are counted per volunteer
    # Ideal share of a worker at 1/10 of the other's speed is 1/11 ≈ 0.09.
    assert 0.02 < share < 0.25, (share, done)
