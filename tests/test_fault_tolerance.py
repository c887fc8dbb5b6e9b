"""Real kills, real restarts: the job still ends with the exact count, counted once."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path

import pytest

from hydra import keys
from hydra.connection import connect
from hydra.local import RedisServer, spawn, stop_process
from hydra.queue import SubmitOptions, job_status, read_job, result_of, submit, wait_for_job
from hydra.tasks.pi.kernel import count_inside_samples
from tests.conftest import run_cli, wait_until

pytestmark = pytest.mark.slow


def assert_no_leftovers(client, job_id: str) -> None:
    """An ended job leaves nothing in the deadline set, the active set or workers' held sets."""
    assert not [m for m in client.zrange(keys.DEADLINES, 0, -1) if m.decode().startswith(job_id)]
    assert client.zscore(keys.ACTIVE, job_id) is None
    for name in client.zrange(keys.LIVE, 0, -1):
        assert not [m for m in client.smembers(keys.held(name.decode())) if m.decode().startswith(job_id)]
    assert not client.exists(keys.chunks(job_id), keys.pending(job_id), keys.wanted(job_id))


def test_chaos_sigkill_a_worker_every_second(client, cluster_factory):
    samples, seed = 16_000_000_000, 99
    cluster = cluster_factory(3)
    cluster.wait_for_workers(3)
    job_id = submit(
        client, "pi", {"samples": samples, "seed": seed}, SubmitOptions(chunk_seconds=0.5, max_attempts=1000)
    )
    stop, kills = threading.Event(), []

    def chaos() -> None:
        rng = random.Random(1)
        while not stop.wait(1.0):
            alive = [p for p in cluster.workers if p.poll() is None]
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills.append(victim.pid)
            cluster.add_worker()

    thread = threading.Thread(target=chaos)
    thread.start()
    try:
        status = wait_for_job(client, job_id, timeout=240)
    finally:
        stop.set()
        thread.join()
    assert status["state"] == "done", status
    assert len(kills) >= 2
    assert result_of(client, job_id)["inside"] == count_inside_samples(seed, 0, samples)
    assert read_job(client, job_id)["units_done"] == read_job(client, job_id)["units_total"]
    assert_no_leftovers(client, job_id)


def test_killed_worker_chunk_is_requeued_and_monitor_can_be_replaced(client, cluster_factory):
    # Seconds of work per worker on a fast machine: the worker must still be running a chunk when
    # it is killed, after the waits for the first monitor's children to go (3e9 samples were done by then).
    samples, seed = 30_000_000_000, 5
    cluster = cluster_factory(2, monitor=False)
    env = cluster.child_env()
    first_monitor = spawn(["python", "-m", "hydra", "monitor"], env=env)
    cluster.wait_for_workers(2)
    # No speculative copies: the killed worker's chunk must come back through the monitor's requeue.
    job_id = submit(client, "pi", {"samples": samples, "seed": seed}, SubmitOptions(chunk_seconds=1.0, speculate=False))
    wait_until(lambda: client.zcard(keys.DEADLINES) >= 2, what="two running chunks")
    wait_until(lambda: any(c.get("name") == "hydra-signer" for c in client.client_list()), what="its signer")
    first_monitor.send_signal(signal.SIGKILL)
    first_monitor.wait()
    # Its notification listener (a child process) notices and goes too: no orphan stays subscribed.
    wait_until(lambda: client.execute_command("PUBSUB", "NUMPAT") == 0, 10, what="the listener of the killed monitor")
    # So does its ledger signer (another child process, with a named connection).
    wait_until(
        lambda: not any(c.get("name") == "hydra-signer" for c in client.client_list()), 10, what="the killed signer"
    )
    cluster.kill_worker(cluster.workers[0])
    second_monitor = spawn(["python", "-m", "hydra", "monitor"], env=env)
    try:
        status = wait_for_job(client, job_id, timeout=180)
    finally:
        stop_process(second_monitor)
    assert status["state"] == "done"
    assert status["requeued"] >= 1
    assert result_of(client, job_id)["inside"] == count_inside_samples(seed, 0, samples)


def test_redis_restart_mid_job_gives_the_undisturbed_result(tmp_path: Path, cluster_factory):
    from hydra.local import LocalCluster

    # The ACL file keeps the local workers' volunteer users across the restart, as in a deployment.
    (tmp_path / "users.acl").touch()
    aof = ["--appendonly", "yes", "--appendfsync", "everysec", "--aclfile", str(tmp_path / "users.acl")]
    server = RedisServer(tmp_path, extra=aof).start()
    cluster = LocalCluster(2, redis_url=server.url)
    client = connect(server.url)
    try:
        cluster.start()
        samples, seed = 4_000_000_000, 11
        job_id = submit(client, "pi", {"samples": samples, "seed": seed}, SubmitOptions(chunk_seconds=0.5))
        wait_until(lambda: job_status(client, job_id)["progress"] > 0.2, timeout=120, what="20% progress")
        server.stop()
        server.start()
        status = wait_for_job(client, job_id, timeout=240)
        assert status["state"] == "done", status
        assert result_of(client, job_id)["inside"] == count_inside_samples(seed, 0, samples)
        record = read_job(client, job_id)
        assert record["units_done"] == record["units_total"]
        assert all(p.poll() is None for p in cluster.workers), "a worker died with the Redis restart"
    finally:
        client.close()
        cluster.stop()
        server.stop()


def test_worker_survives_malformed_inbox_messages(client, cluster_factory):
    cluster = cluster_factory(1)
    (name,) = cluster.wait_for_workers(1)
    user, wid = keys.split_worker(name)
    inbox = keys.inbox(user, wid)
    for junk in (
        b"garbage{not-json",
        b"[]",
        b'{"t":"chunk"}',
        b'{"t":"chunk","job":"0123456789ab","chunk":0,"a":1,'
        b'"task":"os.system","version":"1","params":{},"seed":1,"first":0,"count":1}',
        b'{"t":"?"}',
    ):
        client.rpush(inbox, junk)
    job_id = submit(client, "pi", {"samples": "2e7", "seed": 3}, SubmitOptions())
    assert wait_for_job(client, job_id, timeout=60)["state"] == "done"
    assert cluster.workers[0].poll() is None
    assert result_of(client, job_id)["inside"] == count_inside_samples(3, 0, 20_000_000)


def test_a_chunk_that_always_raises_fails_the_job_cleanly(redis_server, client, cluster_factory):
    healthy = cluster_factory(1)
    earlier = submit(client, "pi", {"samples": "1e7"}, SubmitOptions())
    wait_for_job(client, earlier, timeout=60)
    before = client.hgetall(keys.job(earlier))
    healthy.stop()
    faulty = cluster_factory(1, env={"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker", "HYDRA_FAULT": "raise"})
    job_id = submit(client, "pi", {"samples": "1e8"}, SubmitOptions(max_attempts=3))
    status = wait_for_job(client, job_id, timeout=60)
    assert status["state"] == "failed"
    assert "failed 3 times" in status["error"] and "injected fault" in status["error"]
    assert faulty.workers[0].poll() is None
    shown = run_cli("--redis-url", redis_server.url, "status", job_id)
    assert "injected fault" in shown.stdout
    result = run_cli("--redis-url", redis_server.url, "result", job_id)
    assert result.returncode != 0 and result.stderr.count("\n") == 1 and "failed" in result.stderr
    assert_no_leftovers(client, job_id)
    assert client.hgetall(keys.job(earlier)) == before
