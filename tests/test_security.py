"""Untrusted networks and volunteers: credentials, TLS, JSON-only workers, verified results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib
from rq import Queue
from rq.serializers import JSONSerializer

from hydra import keys
from hydra.certs import make_certificates
from hydra.connection import connect
from hydra.local import LocalCluster, RedisServer, _has_tls, spawn, stop_process
from hydra.queue import SubmitOptions, result_of, submit, wait_for_job
from hydra.tasks.pi.kernel import count_inside_samples
from hydra.volunteers import add_volunteer, remove_volunteer
from tests.conftest import ROOT, run_cli, wait_until

pytestmark = pytest.mark.slow
TLS_SERVER = next((b for b in ("/usr/bin/redis-server",) if Path(b).exists() and _has_tls(b)), None)


def test_volunteer_user_runs_a_worker_but_nothing_dangerous(redis_server, client, cluster_factory):
    url = add_volunteer(client, "alice", redis_server.url)
    assert "volunteer-alice:" in url and url != redis_server.url
    cluster = cluster_factory(0, monitor=False)
    cluster.add_worker({"RQ_REDIS_URL": url, "HYDRA_REDIS_URL": url})
    job_id = submit(client, "pi", {"samples": "2e7"}, SubmitOptions())
    assert wait_for_job(client, job_id, timeout=90)["state"] == "done"
    volunteer = redis_lib.Redis.from_url(url)
    for command in (
        ["CONFIG", "GET", "*"],
        ["FLUSHALL"],
        ["FLUSHDB"],
        ["KEYS", "*"],
        ["SELECT", "1"],
        ["ACL", "LIST"],
        ["DEBUG", "SLEEP", "0"],
        ["SHUTDOWN"],
        ["SCRIPT", "FLUSH"],
        ["GET", "not-hydra"],
        ["MODULE", "LIST"],
    ):
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            volunteer.execute_command(*command)
    assert volunteer.hget(keys.job(job_id), "state") == b"done"
    volunteer.close()
    with pytest.raises(redis_lib.AuthenticationError):
        redis_lib.Redis.from_url(url.replace("volunteer-alice:", "volunteer-alice:wrong")).ping()
    assert remove_volunteer(client, "alice") == 1
    with pytest.raises(redis_lib.AuthenticationError):
        redis_lib.Redis.from_url(url).ping()


def test_cli_volunteer_commands(redis_server):
    added = run_cli("--redis-url", redis_server.url, "volunteer", "add", "bob", "--public-host", "hydra.example.org")
    assert added.returncode == 0 and added.stdout.startswith("redis://volunteer-bob:")
    assert "@hydra.example.org:" in added.stdout
    assert "bob" in run_cli("--redis-url", redis_server.url, "volunteer", "list").stdout
    bad = run_cli("--redis-url", redis_server.url, "volunteer", "add", "Bad Name!")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert run_cli("--redis-url", redis_server.url, "volunteer", "remove", "bob").returncode == 0
    assert run_cli("--redis-url", redis_server.url, "volunteer", "remove", "bob").returncode != 0


def test_readme_volunteer_command_runs_neither_pickle_nor_foreign_functions(tmp_path, redis_server, client):
    """The exact command the README gives volunteers: RQ_WORKER_CLASS=… RQ_REDIS_URL=… rq worker hydra."""
    rq_script = Path(sys.executable).parent / "rq"
    command = [str(rq_script)] if rq_script.exists() else [sys.executable, "-m", "rq.cli"]
    worker = spawn(
        [*command, "worker", "hydra"],
        env={"RQ_WORKER_CLASS": "hydra.worker.HydraWorker", "RQ_REDIS_URL": redis_server.url},
    )
    try:
        marker = tmp_path / "created-by-payload"
        Queue("hydra", connection=client).enqueue_call(Path.touch, args=(marker,))
        Queue("hydra", connection=client, serializer=JSONSerializer).enqueue_call(
            "os.system", args=(f"touch {marker}",)
        )
        job_id = submit(client, "pi", {"samples": "1e7"}, SubmitOptions())
        assert wait_for_job(client, job_id, timeout=90)["state"] == "done"
        wait_until(lambda: client.zcard("rq:failed:hydra") >= 2, timeout=30, what="both refusals marked failed")
        assert not marker.exists()
        assert worker.poll() is None
    finally:
        stop_process(worker)


@pytest.mark.skipif(TLS_SERVER is None, reason="needs a redis-server built with TLS (Debian's redis-server)")
def test_tls_job_completes_and_an_untrusting_client_is_refused(tmp_path):
    certificates = make_certificates(tmp_path / "certs")
    server = RedisServer(tmp_path, tls=certificates, binary=TLS_SERVER).start()
    try:
        assert server.url.startswith("rediss://")
        with LocalCluster(1, redis_url=server.url) as cluster:
            cluster.wait_ready()
            client = connect(server.url)
            job_id = submit(client, "pi", {"samples": "2e7", "seed": 4}, SubmitOptions())
            assert wait_for_job(client, job_id, timeout=90)["state"] == "done"
            assert result_of(client, job_id)["inside"] == count_inside_samples(4, 0, 20_000_000)
            client.close()
        other_ca = make_certificates(tmp_path / "other")
        untrusting = redis_lib.Redis.from_url(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={other_ca['ca']}")
        with pytest.raises(redis_lib.ConnectionError):
            untrusting.ping()
        plain = redis_lib.Redis(port=server.port, socket_timeout=2)
        with pytest.raises(redis_lib.ConnectionError):
            plain.ping()
        insecure = run_cli("--redis-url", f"rediss://127.0.0.1:{server.port}/0", "--tls-insecure", "status")
        assert insecure.returncode == 0 and "NOT verified" in insecure.stderr
        verified = run_cli("--redis-url", f"rediss://127.0.0.1:{server.port}/0", "status")
        assert verified.returncode != 0 and verified.stderr.count("\n") == 1
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["2", "auto"])
def test_a_cheating_worker_is_caught_and_the_result_is_the_honest_one(client, cluster_factory, mode):
    cluster = cluster_factory(2)
    cluster.add_worker({"HYDRA_FAULT": "cheat"})
    cluster.wait_for_workers(3)
    samples, seed = 400 * 2**20, 17
    job_id = submit(
        client, "pi", {"samples": samples, "seed": seed}, SubmitOptions(chunk_units=10, verify=mode, max_attempts=50)
    )
    assert wait_for_job(client, job_id, timeout=300)["state"] == "done"
    assert result_of(client, job_id)["inside"] == count_inside_samples(seed, 0, samples)
    quarantined = {q.decode() for q in client.smembers(keys.QUARANTINE)}
    cheater = next(
        n.decode()
        for n in client.zrange(keys.WORKERS, 0, -1)
        if client.hget(keys.worker(n.decode()), "pid") == str(cluster.workers[2].pid).encode()
    )
    assert quarantined == {cheater}


def test_active_job_limit(redis_server, client):
    env = {**os.environ, "HYDRA_MAX_ACTIVE_JOBS": "2"}
    for _ in range(2):
        assert run_cli("--redis-url", redis_server.url, "submit", "pi", "--detach", env=env).returncode == 0
    third = run_cli("--redis-url", redis_server.url, "submit", "pi", "--detach", env=env)
    assert third.returncode == 2 and "active jobs" in third.stderr
    assert client.zcard(keys.JOBS) == 2


def test_generated_certificates_verify(tmp_path):
    paths = make_certificates(tmp_path)
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(paths["ca"]), str(paths["cert"])], capture_output=True, text=True
    )
    if done.returncode == 127:
        pytest.skip("openssl not installed")
    assert done.returncode == 0 and "OK" in done.stdout
    assert oct(paths["key"].stat().st_mode)[-3:] == "600"
    assert ROOT.exists()
