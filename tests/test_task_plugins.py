"""Tasks end to end through real workers: primes, a third-party plug-in, and a version no worker has."""

from __future__ import annotations

import json

import pytest

from hydra.local import LocalCluster
from hydra.queue import SubmitOptions, submit
from hydra.tasks import installed
from hydra.tasks.primes import PrimesTask
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_primes_below_ten_to_the_ninth_on_two_workers():
    done = run_cli("submit", "primes", "--below", "1e9", "--local", "--workers", "2", "--chunk-units", "5", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["primes"] == 50_847_534 and result["below"] == 10**9  # OEIS A006880
    assert result["workers"] >= 1 and result["seconds"] > 0


@pytest.mark.skipif("collatz" not in installed(), reason="pip install -e examples/hydra-collatz")
def test_a_third_party_task_runs_on_stock_rq_workers():
    done = run_cli("submit", "collatz", "--below", "1e6", "--local", "--workers", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 131_434_272
    listed = run_cli("tasks", "--offline", "--json")
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "collatz")
    assert row["version"] == "1" and row["module"] == "hydra_collatz"


def test_a_version_no_live_worker_has_waits_visibly(monkeypatch):
    with LocalCluster(1, web_port=None) as cluster:
        cluster.wait_ready()
        listed = json.loads(run_cli("--redis-url", cluster.url, "tasks", "--json").stdout)
        assert next(r for r in listed if r["name"] == "primes")["workers"] == {"1": 1}
        monkeypatch.setattr(PrimesTask, "version", "2")
        from hydra.connection import connect
        from hydra.task_workers import submit_warning

        client = connect(cluster.url)
        assert "no live worker runs primes 2" in submit_warning(client, "primes", "2")
        job_id = submit(client, "primes", {"below": "1e8"}, SubmitOptions())
        status = run_cli("--redis-url", cluster.url, "status", job_id)
        assert "waiting for a worker with primes 2" in status.stdout
        assert json.loads(run_cli("--redis-url", cluster.url, "status", job_id, "--json").stdout)["done"] == 0
