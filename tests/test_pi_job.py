"""A π job end to end on a real redis-server with real ``rq worker hydra`` processes."""

from __future__ import annotations

import json
import math

from hydra.queue import SubmitOptions, job_status, result_of, submit, wait_for_job
from hydra.tasks.pi.kernel import BLOCK, count_inside_reference
from tests.conftest import run_cli

SAMPLES = 64 * BLOCK + 12345  # a short last block, too


def run_job(client, **options) -> dict:
    job_id = submit(client, "pi", {"samples": SAMPLES, "seed": 7}, SubmitOptions(**options))
    status = wait_for_job(client, job_id, timeout=120)
    assert status["state"] == "done", status
    return result_of(client, job_id)


def test_inside_count_is_identical_for_any_workers_and_chunking(client, cluster_factory):
    cluster = cluster_factory(1)
    cluster.wait_for_workers(1)
    one_worker = run_job(client)
    cluster.add_worker()
    cluster.wait_for_workers(2)
    two_workers = run_job(client)
    fixed_small = run_job(client, chunk_units=3)
    fixed_large = run_job(client, chunk_units=40)
    counts = {r["inside"] for r in (one_worker, two_workers, fixed_small, fixed_large)}
    assert len(counts) == 1, counts
    assert two_workers["samples"] == SAMPLES
    assert fixed_small["workers"] >= 1


def test_result_matches_the_reference_definition(client, cluster_factory):
    cluster_factory(2).wait_for_workers(2)
    samples = 3 * BLOCK + 17
    job_id = submit(client, "pi", {"samples": samples, "seed": 123}, SubmitOptions(chunk_units=1))
    wait_for_job(client, job_id, timeout=60)
    assert result_of(client, job_id)["inside"] == count_inside_reference(123, 0, samples)


def test_pi_lies_within_five_standard_errors(client, cluster_factory):
    cluster_factory(2)
    result = run_job(client)
    assert abs(result["pi"] - math.pi) < 5 * result["stderr"]
    assert result["stderr"] > 0


def test_progress_is_a_read_and_reaches_one(client, cluster_factory):
    cluster_factory(1)
    job_id = submit(client, "pi", {"samples": SAMPLES, "seed": 1}, SubmitOptions())
    seen = []
    wait_for_job(client, job_id, timeout=60, on_progress=lambda s: seen.append(s["progress"]))
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert job_status(client, job_id)["done"] == SAMPLES


def test_cli_submit_json_then_result_json_agree(redis_server, cluster_factory):
    cluster_factory(1)
    url = redis_server.url
    submitted = run_cli("--redis-url", url, "submit", "pi", "--samples", "2e7", "--json")
    assert submitted.returncode == 0, submitted.stderr
    result = json.loads(submitted.stdout)
    for key in ("job", "pi", "stderr", "samples", "inside", "seconds", "samples_per_second", "workers"):
        assert key in result
    assert result["samples"] == 20_000_000
    again = run_cli("--redis-url", url, "result", result["job"], "--json")
    assert json.loads(again.stdout) == result


def test_detach_returns_the_job_id_and_the_job_goes_on(redis_server, client, cluster_factory):
    detached = run_cli("--redis-url", redis_server.url, "submit", "pi", "--samples", "1e7", "--detach")
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    assert job_status(client, job_id)["state"] == "queued"
    cluster_factory(1)
    assert wait_for_job(client, job_id, timeout=60)["state"] == "done"
    status = run_cli("--redis-url", redis_server.url, "status", job_id)
    assert "done" in status.stdout


def test_cancel_removes_every_ticket_and_chunk(redis_server, client):
    job_id = submit(client, "pi", {"samples": "1e9"}, SubmitOptions(chunk_units=10))
    assert client.zcard(f"hydra:job:{job_id}:pending") > 50 and client.zscore("hydra:active", job_id)
    cancelled = run_cli("--redis-url", redis_server.url, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert client.zscore("hydra:active", job_id) is None and client.zcard("hydra:deadlines") == 0
    assert not client.exists(f"hydra:job:{job_id}:chunks", f"hydra:job:{job_id}:pending")
    assert job_status(client, job_id)["state"] == "cancelled"
    assert client.ttl(f"hydra:job:{job_id}") > 0
    again = run_cli("--redis-url", redis_server.url, "cancel", job_id)
    assert again.returncode != 0 and "already ended" in again.stderr
