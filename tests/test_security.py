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
from tests.conftest import run_cli

pytestmark = pytest.mark.slow
TLS_SERVER = next((b for b in ("/usr/bin/redis-server",) if Path(b).exists() and _has_tls(b)), None)


def test_volunteer_user_runs_a_worker_but_reaches_nothing_else(redis_server, client, cluster_factory):
    url = add_volunteer(client, "alice", redis_server.url)
    assert "volunteer-alice:" in url and url != redis_server.url
    cluster = cluster_factory(0)
    cluster.add_worker({"RQ_REDIS_URL": url})
    job_id = submit(client, "pi", {"samples": "2e7"}, SubmitOptions())
    assert wait_for_job(client, job_id, timeout=90)["state"] == "done"
    volunteer = redis_lib.Redis.from_url(url)
    for command in (
        ["CONFIG", "GET", "*"],
        ["FLUSHALL"],
        ["KEYS", "*"],
        ["SCAN", "0"],
        ["INFO"],
        ["RANDOMKEY"],
        ["CLIENT", "LIST"],
        ["SELECT", "1"],
        ["ACL", "LIST"],
        ["EVAL", "while true do end", "0"],
        ["PUBLISH", "rq:pubsub:x", "shutdown"],
        ["HGET", keys.job(job_id), "state"],
        ["HSET", keys.job(job_id), "state", "cancelled"],
        ["DEL", "rq:queue:hydra"],
        ["SET", keys.alive("volunteer-alice", "planted"), "1"],
        ["RPUSH", keys.inbox("volunteer-alice", "w"), "x"],
        ["LPOP", keys.outbox("volunteer-bob")],
        ["SHUTDOWN"],
    ):
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            volunteer.execute_command(*command)
    volunteer.close()
    with pytest.raises(redis_lib.AuthenticationError):
        redis_lib.Redis.from_url(url.replace("volunteer-alice:", "volunteer-alice:wrong")).ping()
    assert remove_volunteer(client, "alice") == 1
    with pytest.raises(redis_lib.AuthenticationError):
        redis_lib.Redis.from_url(url).ping()
    # Its worker was told to stop and exits with one clear line.
    cluster.workers[0].wait(timeout=30)
    log = (cluster.directory / "worker-0.log").read_text()
    assert "revoked" in log and "Traceback" not in log


def test_cli_volunteer_commands(redis_server):
    added = run_cli("--redis-url", redis_server.url, "volunteer", "add", "bob", "--public-host", "hydra.example.org")
    assert added.returncode == 0 and added.stdout.startswith("redis://volunteer-bob:")
    assert "@hydra.example.org:" in added.stdout
    assert "bob" in run_cli("--redis-url", redis_server.url, "volunteer", "list").stdout
    bad = run_cli("--redis-url", redis_server.url, "volunteer", "add", "Bad Name!")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    again = run_cli("--redis-url", redis_server.url, "volunteer", "add", "bob")
    assert again.returncode == 2 and "--rotate" in again.stderr
    rotated = run_cli("--redis-url", redis_server.url, "volunteer", "add", "bob", "--rotate")
    assert rotated.returncode == 0 and rotated.stdout != added.stdout
    assert run_cli("--redis-url", redis_server.url, "volunteer", "remove", "bob").returncode == 0
    assert run_cli("--redis-url", redis_server.url, "volunteer", "remove", "bob").returncode != 0


def test_readme_volunteer_command_never_runs_rq_jobs(tmp_path, redis_server, client, cluster_factory):
    """The README's command (RQ_WORKER_CLASS=… RQ_REDIS_URL=… rq worker hydra) runs Hydra chunks only."""
    cluster_factory(0)  # the monitor
    url = add_volunteer(client, "carol", redis_server.url)
    rq_script = Path(sys.executable).parent / "rq"
    command = [str(rq_script)] if rq_script.exists() else [sys.executable, "-m", "rq.cli"]
    worker = spawn(
        [*command, "worker", "hydra"], env={"RQ_WORKER_CLASS": "hydra.worker.HydraWorker", "RQ_REDIS_URL": url}
    )
    try:
        marker = tmp_path / "created-by-payload"
        Queue("hydra", connection=client).enqueue_call(Path.touch, args=(marker,))
        Queue("hydra", connection=client, serializer=JSONSerializer).enqueue_call(
            "os.system", args=(f"touch {marker}",)
        )
        job_id = submit(client, "pi", {"samples": "1e7"}, SubmitOptions())
        assert wait_for_job(client, job_id, timeout=90)["state"] == "done"
        assert not marker.exists() and worker.poll() is None
        assert client.llen("rq:queue:hydra") == 2  # never even read
    finally:
        stop_process(worker)


def test_a_plain_rq_worker_with_a_volunteer_credential_runs_nothing(tmp_path, redis_server, client):
    """Without Hydra's worker class, rq's own worker cannot even register: no pickle ever loads."""
    url = add_volunteer(client, "dave", redis_server.url)
    marker = tmp_path / "created-by-payload"
    Queue("hydra", connection=client).enqueue_call(Path.touch, args=(marker,))
    done = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "hydra", "--burst"],
        env={**os.environ, "RQ_REDIS_URL": url, "RQ_WORKER_CLASS": "rq.worker.Worker"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "permission" in (done.stdout + done.stderr).lower()
    assert not marker.exists() and client.llen("rq:queue:hydra") == 1


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
def test_a_cheating_volunteer_is_caught_and_the_result_is_the_honest_one(client, cluster_factory, mode):
    cluster = cluster_factory(2)
    cluster.add_worker({"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker", "HYDRA_FAULT": "cheat"}, volunteer="cheater")
    cluster.wait_for_workers(3)
    samples, seed = 400 * 2**20, 17
    job_id = submit(
        client, "pi", {"samples": samples, "seed": seed}, SubmitOptions(chunk_units=10, verify=mode, max_attempts=50)
    )
    assert wait_for_job(client, job_id, timeout=300)["state"] == "done"
    assert result_of(client, job_id)["inside"] == count_inside_samples(seed, 0, samples)
    assert {q.decode() for q in client.smembers(keys.QUARANTINE)} == {"volunteer-cheater"}
    granted = [e for e in client.lrange(keys.LEDGER, 0, -1) if b'"kind":"grant"' in e]
    reversed_ = [e for e in client.lrange(keys.LEDGER, 0, -1) if b'"kind":"reverse"' in e]
    assert sum(b"volunteer-cheater" in e for e in granted) == sum(b"volunteer-cheater" in e for e in reversed_)


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
