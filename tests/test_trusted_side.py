"""The trusted side in one process, against a real redis-server: dispatch, collection, the Lua scripts.

No worker processes here: the tests play the volunteers by reading inboxes and pushing messages
into outboxes themselves, so every rule (exactly once, assignments, distinct volunteers,
quarantine, attempts) is checked deterministically.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import types
from collections.abc import Iterator

import pytest
from redis import Redis

from hydra import keys
from hydra.collector import Collector
from hydra.queue import SubmitOptions, cancel, read_job, submit
from hydra.settings import Settings
from hydra.tasks.pi.kernel import BLOCK, count_inside_samples


class FakeWorker:
    """A volunteer's worker driven by the test: says hello, reads its inbox, answers."""

    def __init__(
        self, collector: Collector, user: str, wid: str = "w1", tasks: dict[str, str] | None = None, device: str = "cpu"
    ) -> None:
        self.collector, self.user, self.wid, self.device = collector, user, wid, device
        self.redis = collector.redis
        self.name = keys.worker_name(user, wid)
        self.tasks = tasks or {"pi": "1", "mandelbrot": "1"}

    def hello(self) -> str:
        msg = {
            "t": "hello",
            "w": self.wid,
            "tasks": self.tasks,
            "device": self.device,
            "zone": "",
            "host": "h",
            "pid": 1,
        }
        return self.send(msg)

    def send(self, message: dict, blob: bytes = b"") -> str:
        return self.collector.handle(self.user, json.dumps(message).encode() + b"\n" + blob)

    def inbox(self) -> list[dict]:
        return [json.loads(m) for m in self.redis.lrange(keys.inbox(self.user, self.wid), 0, -1)]

    def take(self) -> dict | None:
        """Pop the next chunk descriptor (skipping control messages)."""
        while raw := self.redis.lpop(keys.inbox(self.user, self.wid)):
            message = json.loads(raw)
            if message["t"] == "chunk":
                return message
        return None

    def answer(self, chunk: dict, *, cheat: int = 0) -> str:
        return self.send(self.result(chunk, cheat=cheat))

    def result(self, chunk: dict, *, cheat: int = 0) -> dict:
        start = chunk["first"] * BLOCK
        n = min((chunk["first"] + chunk["count"]) * BLOCK, chunk["params"]["samples"]) - start
        inside = count_inside_samples(chunk["seed"], start, n) + cheat
        result = {"t": "result", "w": self.wid, "job": chunk["job"], "chunk": chunk["chunk"], "a": chunk["a"]}
        return {**result, "sums": {"inside": inside}, "seconds": 0.1}


@pytest.fixture
def collector(client) -> Collector:
    return Collector(client, Settings())


def pi_job(client, samples: int = 40 * BLOCK, **options) -> str:
    opts = SubmitOptions(**{"chunk_units": 4, **options})
    return submit(client, "pi", {"samples": samples, "seed": 5}, opts)


@contextlib.contextmanager
def running(monitor) -> Iterator[None]:
    """The monitor's loop on a thread of its own for the block; stopped, woken and joined after it."""
    stop = threading.Event()
    loop = threading.Thread(target=monitor.run, args=(stop,))
    loop.start()
    try:
        yield
    finally:
        stop.set()
        monitor.wake()
        loop.join(30)


def round_trips_on(client: Redis, monkeypatch) -> list:
    """Record the round trips made on ``client``'s connections (a command, or "pipeline"), and only
    those: another test's heartbeat thread may still be running in this process. The list of active
    jobs that dispatchers cache for 0.2 s stays fresh meanwhile: on a slow machine that time can
    run out between a test's warm-up and what it measures."""
    from redis.client import Pipeline

    from hydra import dispatch

    trips: list = []
    single, piped = Redis.execute_command, Pipeline.execute

    def command(self, *args, **options):
        if self.connection_pool is client.connection_pool:
            trips.append(args[0])
        return single(self, *args, **options)

    def pipeline(self, *args, **options):
        if self.connection_pool is client.connection_pool:
            trips.append("pipeline")
        return piped(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", command)
    monkeypatch.setattr(Pipeline, "execute", pipeline)
    monkeypatch.setattr(dispatch, "_CACHE_SECONDS", 3600.0)
    return trips


def run_to_end(workers: list[FakeWorker], rounds: int = 1000) -> None:
    for _ in range(rounds):
        busy = False
        for worker in workers:
            chunk = worker.take()
            if chunk:
                busy = True
                worker.answer(chunk)
        if not busy:
            return


def test_hello_welcomes_and_queues_two_chunks_ahead(client, collector):
    job_id = pi_job(client)
    worker = FakeWorker(collector, "alice")
    assert worker.hello() == "hello"
    inbox = worker.inbox()
    assert inbox[0]["t"] == "welcome" and inbox[0]["worker"] == "alice/w1"
    chunks = [m for m in inbox if m["t"] == "chunk"]
    assert len(chunks) == 2 and {c["job"] for c in chunks} == {job_id}
    assert chunks[0]["first"] == 0 and chunks[1]["first"] == 4
    assert client.pttl(keys.alive("alice", "w1")) > 0
    assert read_job(client, job_id)["state"] == "running"


def test_results_count_exactly_once_and_the_job_is_exact(client, collector):
    job_id = pi_job(client, samples=40 * BLOCK - 123)
    a, b = FakeWorker(collector, "alice"), FakeWorker(collector, "bob")
    a.hello(), b.hello()
    first = a.take()
    assert a.answer(first) == "accepted"
    assert a.answer(first) in ("refused", "stale")  # a replay finds no assignment
    run_to_end([a, b])
    record = read_job(client, job_id)
    assert record["state"] == "done"
    assert record["sum:inside"] == count_inside_samples(5, 0, 40 * BLOCK - 123)
    assert record["display_done"] == 40 * BLOCK - 123
    assert client.zcard(keys.DEADLINES) == 0 and not client.exists(keys.chunks(job_id))


def test_a_drained_batch_is_handled_as_its_messages_would_be_one_by_one(client, collector):
    """Results drained together share round trips, not outcomes: each counts once, a forged or
    replayed one among them is refused alone, and each worker that answered is topped up."""
    job_id = pi_job(client, samples=40 * BLOCK)
    w1, w2, bob = (
        FakeWorker(collector, "alice", "w1"),
        FakeWorker(collector, "alice", "w2"),
        FakeWorker(collector, "bob"),
    )
    for worker in (w1, w2, bob):
        worker.hello()
    mine = [w1.take(), w1.take(), w2.take(), w2.take()]
    bobs = bob.take()
    batch = [w1.result(mine[0]), w1.result(mine[1]), {**w2.result(mine[2])}, w1.result(mine[0])]  # a replay
    batch += [{**w1.result(bobs), "w": "w1"}, w2.result(mine[3])]  # w1 quotes bob's assignment
    client.rpush(keys.outbox("alice"), *(json.dumps(m).encode() + b"\n" for m in batch))
    assert collector.drain("alice") == len(batch)
    record = read_job(client, job_id)
    assert record["units_done"] == sum(c["count"] for c in mine)
    assert [e for e in client.lrange(keys.ERRORS, 0, -1) if b"another's live assignment" in e]
    for worker in (w1, w2):
        assert int(client.hget(keys.worker(worker.name), "chunks")) == 2
        assert client.scard(keys.held(worker.name)) == 2, "topped up again after its results"
    assert int(client.hget(keys.COUNTS, "done:samples")) == sum(c["count"] for c in mine) * BLOCK
    rate = float(client.hget(keys.worker(w1.name), "rate:pi"))
    assert rate > 0 and float(client.zscore(keys.rates("pi"), w1.name)) == rate
    assert bob.answer(bobs) == "accepted"
    run_to_end([w1, w2, bob])
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 40 * BLOCK)


def test_a_result_for_a_chunk_given_to_someone_else_is_refused(client, collector):
    job_id = pi_job(client)
    a, b = FakeWorker(collector, "alice"), FakeWorker(collector, "bob")
    a.hello(), b.hello()
    chunk = a.take()
    forged = {**chunk}
    outcome = b.answer(forged)  # bob quotes alice's live assignment: forged, not stale
    assert outcome == "refused"
    assert read_job(client, job_id)["units_done"] == 0
    assert a.answer(chunk) == "accepted"


def test_impossible_sums_are_refused_and_requeued(client, collector):
    job_id = pi_job(client)
    a = FakeWorker(collector, "alice")
    a.hello()
    chunk = a.take()
    assert a.answer(chunk, cheat=10**12) == "refused"
    record = read_job(client, job_id)
    assert record["units_done"] == 0 and record["sum:inside"] == 0
    errors = b" ".join(client.lrange(keys.ERRORS, 0, -1)).decode()
    assert "inside count out of range" in errors


def test_verify_2_needs_two_distinct_volunteers_not_two_workers(client, collector):
    job_id = pi_job(client, samples=4 * BLOCK, verify="2")
    one, two = FakeWorker(collector, "mallory", "w1"), FakeWorker(collector, "mallory", "w2")
    one.hello()
    two.hello()
    chunk = one.take()
    assert chunk is not None and two.take() is None  # the only chunk; the copy may not go to mallory again
    assert one.answer(chunk) == "awaiting confirmation"
    assert two.take() is None and read_job(client, job_id)["units_done"] == 0
    honest = FakeWorker(collector, "alice")
    honest.hello()
    copy = honest.take()
    assert copy["first"] == chunk["first"] and copy["count"] == chunk["count"]
    assert honest.answer(copy) == "accepted; job done"
    grants = [json.loads(e) for e in client.lrange(keys.LEDGER, 0, -1)]
    assert sorted(g["volunteer"] for g in grants) == ["alice", "mallory"]


def test_a_disagreement_goes_to_a_third_volunteer_and_the_liar_is_quarantined(client, collector):
    job_id = pi_job(client, samples=4 * BLOCK, verify="2")
    liar, honest, third = (FakeWorker(collector, u) for u in ("mallory", "alice", "carol"))
    liar.hello()
    chunk = liar.take()
    assert liar.answer(chunk, cheat=1) == "awaiting confirmation"
    honest.hello()
    assert honest.answer(honest.take()) == "awaiting confirmation"  # 1 against 1: nobody wins yet
    third.hello()
    assert third.answer(third.take()) == "accepted; job done"
    assert client.sismember(keys.QUARANTINE, "mallory")
    assert client.zscore(keys.QUARANTINE_UNFINISHED, "mallory"), "marked for the passes to finish its clean-up"
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 4 * BLOCK)
    assert not [json.loads(e) for e in client.lrange(keys.LEDGER, 0, -1) if b"mallory" in e]
    # A quarantined volunteer's workers get nothing more.
    pi_job(client)
    FakeWorker(collector, "mallory", "w9").hello()
    assert FakeWorker(collector, "mallory", "w9").take() is None


def test_a_cheater_caught_late_has_every_vouched_result_redone_even_in_finished_jobs(client, collector):
    # verify auto: the first job finishes on the cheater's word; then it is caught elsewhere.
    done_job = pi_job(client, samples=4 * BLOCK, verify="auto")
    cheater = FakeWorker(collector, "mallory")
    cheater.hello()
    client.hset(keys.volunteer("mallory"), "clean", 10**9)  # a long honest record: spot checks are rare
    chunk = cheater.take()
    salt = 0
    while collector._needs_check(done_job, str(chunk["chunk"]), "mallory"):  # a salt that skips the 5 % check
        salt += 1
        client.hset(keys.job(done_job), "salt", f"s{salt}")
    assert cheater.answer(chunk, cheat=1) == "accepted; job done"
    assert read_job(client, done_job)["state"] == "done"
    assert read_job(client, done_job)["sum:inside"] == count_inside_samples(5, 0, 4 * BLOCK) + 1
    # Caught under verify 2 in another job.
    trap = pi_job(client, samples=4 * BLOCK, verify="2")
    collector.dispatcher.forget_active()
    collector.dispatcher.serve_idle(1000, None)  # what the monitor's next pass does
    bad = cheater.take()
    assert bad["job"] == trap
    cheater.answer(bad, cheat=1)
    honest = [FakeWorker(collector, user) for user in ("alice", "carol")]
    for w in honest:
        w.hello()
    run_to_end(honest)
    assert client.sismember(keys.QUARANTINE, "mallory")
    # The finished job was reopened and its bad range redone by honest volunteers: exact again.
    record = read_job(client, done_job)
    assert record["state"] == "done" and record["sum:inside"] == count_inside_samples(5, 0, 4 * BLOCK)
    kinds = [json.loads(e)["kind"] for e in client.lrange(keys.LEDGER, 0, -1) if b"mallory" in e]
    assert "reverse" in kinds


def test_a_dead_worker_gives_its_chunks_back_and_attempts_fail_a_poison_chunk(client, collector):
    job_id = pi_job(client, max_attempts=2)
    a = FakeWorker(collector, "alice")
    a.hello()
    first = a.inbox()[1]
    assert collector.gone(a.name, "vanished") == 2
    record = read_job(client, job_id)
    assert int(record["requeued"]) == 2
    # Only the chunk that was running counts an attempt (the other waited in the inbox).
    attempts = {c["first"]: c["attempt"] for c in map(json.loads, client.hvals(keys.chunks(job_id)))}
    assert attempts[first["first"]] == 1 and sum(attempts.values()) == 1
    b = FakeWorker(collector, "bob")
    b.hello()
    chunk = b.take()
    assert chunk["first"] == first["first"]
    b.send({"t": "error", "w": b.wid, "job": chunk["job"], "chunk": chunk["chunk"], "a": chunk["a"], "reason": "boom"})
    record = read_job(client, job_id)
    assert record["state"] == "failed" and "failed 2 times" in record["error"]
    assert client.zcard(keys.DEADLINES) == 0


def test_cancel_clears_assignments_and_late_results_are_ignored(client, collector):
    job_id = pi_job(client)
    a = FakeWorker(collector, "alice")
    a.hello()
    chunk = a.take()
    assert cancel(client, job_id)
    assert client.zcard(keys.DEADLINES) == 0 and not client.exists(keys.pending(job_id))
    assert a.answer(chunk) in ("stale", "refused")
    assert read_job(client, job_id)["units_done"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"t":"hello"}',
        b'{"t":"hello","w":"../x","tasks":{}}',
        b'{"t":"result","w":"w1","job":"zz","chunk":0,"a":1,"sums":{}}',
        b'{"t":"result","w":"w1","job":"0123456789ab","chunk":-1,"a":1,"sums":{}}',
        b'{"t":"nope","w":"w1"}',
        b'{"t":"hello","w":"w1","tasks":{"pi":"1"},"zone":"$$$"}',
    ],
)
def test_malformed_messages_are_refused_and_recorded(client, collector, raw):
    job_id = pi_job(client)
    before = client.hgetall(keys.job(job_id))
    assert collector.handle("alice", raw) == "refused"
    assert client.hgetall(keys.job(job_id)) == before
    assert client.llen(keys.ERRORS) == 1


def test_an_oversized_message_cuts_the_volunteer_off(client, collector):
    from hydra.volunteers import add_volunteer

    add_volunteer(client, "flood", "redis://127.0.0.1:1/0")
    assert collector.handle("volunteer-flood", b"x" * (21 * 1024 * 1024)) == "cut off"
    assert client.hexists(keys.CUTOFF, "volunteer-flood")
    assert "off" in client.acl_getuser("volunteer-flood")["flags"]


def test_a_result_from_a_volunteer_quarantined_since_its_assignment_frees_the_chunk(client, collector):
    """A volunteer can be quarantined by an earlier result of the same batch, before the monitor
    requeues its work: its result is ignored and the chunk it alone held is pending again, never
    left running with no holder (no deadline would ever requeue it, and the job would hang)."""
    job_id = pi_job(client, samples=16 * BLOCK)
    mallory = FakeWorker(collector, "mallory")
    mallory.hello()
    chunk = mallory.take()
    client.sadd(keys.QUARANTINE, "mallory")  # as ACCEPT does for a loser, earlier in the same pipeline
    assert mallory.answer(chunk) == "ignored"
    record = json.loads(client.hget(keys.chunks(job_id), chunk["chunk"]))
    assert record["state"] == "pending" and not record.get("holders")
    collector.quarantined("mallory")  # what the monitor does next: its other chunk is requeued
    honest = FakeWorker(collector, "alice")
    honest.hello()
    run_to_end([honest])
    record = read_job(client, job_id)
    assert record["state"] == "done" and record["sum:inside"] == count_inside_samples(5, 0, 16 * BLOCK)


def test_stale_results_are_allowed_in_proportion_to_a_volunteers_live_workers(client, collector):
    """Every race of copies leaves a stale result behind, so a volunteer with many workers sends
    many (at a job's tail, or while the monitor is behind its deadlines) and is not cut off for it;
    a volunteer with one worker that keeps replaying its result still is."""
    from hydra.collector import MAX_STRIKES, STALE_ALLOWED, STALE_PER_WORKER
    from hydra.volunteers import add_volunteer

    add_volunteer(client, "big", "redis://127.0.0.1:1/0")
    add_volunteer(client, "solo", "redis://127.0.0.1:1/0")
    pi_job(client, samples=400 * BLOCK)
    big = [FakeWorker(collector, "volunteer-big", f"w{i}") for i in range(8)]
    answered = []
    for worker in big:
        worker.hello()
        chunk = worker.take()
        assert worker.answer(chunk) == "accepted"
        answered.append((worker, chunk))
    replays = STALE_ALLOWED + 3 * len(big)  # past the flat allowance, within 8 workers' share
    assert replays <= STALE_ALLOWED + STALE_PER_WORKER * len(big)
    outcomes = [worker.answer(chunk) for worker, chunk in (answered * replays)[:replays]]
    assert outcomes == ["stale"] * replays
    assert not client.hexists(keys.CUTOFF, "volunteer-big")

    solo = FakeWorker(collector, "volunteer-solo")
    solo.hello()
    chunk = solo.take()
    assert solo.answer(chunk) == "accepted"
    allowed = STALE_ALLOWED + STALE_PER_WORKER
    outcomes = [solo.answer(chunk) for _ in range(allowed + MAX_STRIKES)]
    assert outcomes[:allowed] == ["stale"] * allowed
    assert outcomes[-1] == "cut off" and set(outcomes[allowed:-1]) == {"refused"}
    assert client.hexists(keys.CUTOFF, "volunteer-solo")


def test_a_malformed_job_record_is_set_aside_by_status_page_and_monitor(redis_server, client):
    from hydra.monitor import Monitor
    from hydra_web.app import create_app
    from tests.conftest import run_cli

    good = pi_job(client)
    bad = pi_job(client)
    client.hset(keys.job(bad), mapping={"units_done": "lots", "params": "{not json"})
    listing = run_cli("--redis-url", redis_server.url, "status")
    assert listing.returncode == 0 and good in listing.stdout and "Traceback" not in listing.stderr
    one = run_cli("--redis-url", redis_server.url, "status", bad)
    assert one.returncode != 0 and one.stderr.count("\n") == 1 and "malformed" in one.stderr
    app = create_app({"REDIS_URL": redis_server.url, "WEB_TOKEN": "", "MESSAGE_QUEUE": False})
    assert app.test_client().get("/").status_code == 200
    from hydra_web.views import snapshot

    assert [j["job"] for j in snapshot(client, read_only=True)["jobs"]] == [good]  # what a browser gets first
    monitor = Monitor(client, Settings())
    worker = FakeWorker(monitor.collector, "alice")
    worker.hello()
    for _ in range(3):
        assert monitor.run_pass().acted
    assert worker.take()["job"] == good  # the bad job is skipped, the good one served


def test_one_volunteer_cannot_fail_a_job_by_failing_its_chunks(client, collector):
    job_id = pi_job(client, max_attempts=2)
    mallory = FakeWorker(collector, "mallory")
    mallory.hello()
    for _ in range(5):  # errors on everything it is given
        chunk = mallory.take()
        if chunk is None:
            break
        mallory.send(
            {"t": "error", "w": "w1", "job": chunk["job"], "chunk": chunk["chunk"], "a": chunk["a"], "reason": "no"}
        )
    assert read_job(client, job_id)["state"] == "running"  # one attempt per volunteer per chunk
    honest = FakeWorker(collector, "alice")
    honest.hello()
    run_to_end([honest])
    assert read_job(client, job_id)["state"] == "done"
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 40 * BLOCK)


def test_a_worker_whose_job_ended_gets_work_again(client, collector):
    first = pi_job(client)
    alice = FakeWorker(collector, "alice")
    alice.hello()
    chunk = alice.take()
    cancel(client, first)
    second = pi_job(client)
    collector.dispatcher.forget_active()
    assert alice.answer(chunk) == "stale"  # its late result is ignored, and it has room again
    assert any(m["t"] == "chunk" and m["job"] == second for m in alice.inbox())


def test_a_result_quoting_an_assignment_never_given_is_refused_and_recorded(client, collector):
    job_id = pi_job(client)
    alice = FakeWorker(collector, "alice")
    alice.hello()
    chunk = alice.take()
    assert alice.answer({**chunk, "a": 10**6}) == "refused"
    assert b"was not assigned" in b" ".join(client.lrange(keys.ERRORS, 0, -1))
    assert read_job(client, job_id)["units_done"] == 0


def test_hellos_beyond_the_workers_cap_are_refused(client, collector, monkeypatch):
    from hydra import collector as collector_module

    monkeypatch.setattr(collector_module, "MAX_WORKERS", 3)
    outcomes = [FakeWorker(collector, "hydra-heads", f"h{i}").hello() for i in range(5)]
    assert outcomes == ["hello"] * 3 + ["refused"] * 2
    assert client.scard(keys.user_workers("hydra-heads")) == 3


def test_a_measured_idle_worker_steals_a_chunk_still_waiting_in_a_slow_holders_inbox(client, collector):
    # Two chunks of 4 units, both to alice; no speculative copies, so that only a steal gives bob work.
    job_id = pi_job(client, samples=8 * BLOCK, speculate=False)
    a, b = FakeWorker(collector, "alice"), FakeWorker(collector, "bob")
    a.hello()
    running = a.take()  # alice started one; the other waits in her inbox
    b.hello()
    assert b.take() is None, "bob is unmeasured: his finish time is a guess, he steals nothing"
    client.hset(keys.worker(b.name), "rate:pi", 1e12)  # now measured, and far faster than alice
    assert collector.dispatcher.fill(b.name) == 0, "alice is unmeasured: she keeps what she was given"
    client.zadd(keys.rates("pi"), {a.name: 1.0})  # alice measured: one unit a second
    collector.dispatcher.forget_active()
    assert collector.dispatcher.fill(b.name) == 1
    stolen = b.take()
    assert stolen is not None and stolen["first"] == 4 and stolen["count"] == 4
    assert a.take() is None, "the stolen descriptor left alice's inbox atomically"
    record = read_job(client, job_id)
    assert int(record["stolen"]) == 1 and int(record.get("requeued", 0)) == 0
    holders = json.loads(client.hget(keys.chunks(job_id), stolen["chunk"]))["holders"]
    assert list(holders) == [b.name]
    assert a.answer(running) == "accepted" and b.answer(stolen) == "accepted; job done"
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 8 * BLOCK)


def test_a_volunteers_workers_wait_for_one_probe_and_are_sized_by_its_speed(client, collector, monkeypatch):
    """Workers of a volunteer with no measured speed do not each take a probe: one does, the others
    wait idle (not served, behind the other idle workers) until its result measures the volunteer,
    then get chunks sized by that speed. Another volunteer, or a worker on another kind of device,
    is not held up, and a probe that does not come back within PROBE_PATIENCE lets a sibling probe
    in its place."""
    from hydra import dispatch, queue
    from hydra.dispatch import Dispatcher
    from hydra.tasks import TASKS

    samples = 4096 * BLOCK
    carol = [FakeWorker(collector, "carol", f"w{i}") for i in range(3)]
    for worker in carol:
        worker.hello()  # no job yet: they wait in hydra:idle
    monkeypatch.setattr(queue, "_serve_idle_workers", lambda redis: None)  # served below instead
    job_id = submit(client, "pi", {"samples": samples, "seed": 5}, SubmitOptions(chunk_seconds=2.0))
    probe = TASKS["pi"].probe_units({"samples": samples, "seed": 5})
    collector.dispatcher.forget_active()
    assert collector.dispatcher.serve_idle(budget=None) == 3, (
        "the two left waiting count as served: not a slice for nothing"
    )
    probes = [[m["count"] for m in w.inbox() if m["t"] == "chunk"] for w in carol]
    assert probes == [[probe, probe], [], []], "one worker probes for its volunteer"
    client.zadd(keys.IDLE, {"other/w1": time.time()}, nx=True)  # an idle worker of someone else
    idle = [n.decode() for n in client.zrange(keys.IDLE, 0, -1)]
    assert idle == ["other/w1", carol[1].name, carol[2].name], "the waiting ones go behind"
    dave = FakeWorker(collector, "dave")
    dave.hello()
    assert [m["count"] for m in dave.inbox() if m["t"] == "chunk"] == [probe, probe], "dave is not held up"
    gpu = FakeWorker(collector, "carol", "gpu", device="cuda")
    gpu.hello()
    assert [m["count"] for m in gpu.inbox() if m["t"] == "chunk"] == [probe, probe], "a GPU probes for itself"
    client.zrem(keys.IDLE, "other/w1")
    parked = client.zmscore(keys.IDLE, [carol[1].name, carol[2].name])
    assert all(score > time.time() for score in parked), "not to be served before PROBE_PATIENCE"
    collector.dispatcher.serve_idle()
    assert not any(m["t"] == "chunk" for w in carol[1:] for m in w.inbox()), "nor served meanwhile"

    assert carol[0].answer(carol[0].take()) == "accepted"  # carol is measured now: they are servable
    collector.dispatcher.serve_idle()
    for worker in carol[1:]:
        sized = [m["count"] for m in worker.inbox() if m["t"] == "chunk"]
        assert len(sized) == 2 and min(sized) > probe, "sized by carol's speed"
    assert client.zcard(keys.IDLE) == 0

    frank = [FakeWorker(collector, "frank", f"w{i}") for i in range(2)]
    for worker in frank:
        worker.hello()
    assert not any(m["t"] == "chunk" for m in frank[1].inbox()), "frank/w1 waits for frank/w0's probe"
    client.zadd(keys.IDLE, {frank[1].name: time.time()})  # due now, for the scheduler's dispatcher:
    Dispatcher(client, Settings(), one_probe_each=False).serve_idle(budget=None)  # it would never hear back
    assert [m["count"] for m in frank[1].inbox() if m["t"] == "chunk"] == [probe, probe]

    monkeypatch.setattr(dispatch, "PROBE_PATIENCE", 0.0)  # erin's first prober never answers
    erin = [FakeWorker(collector, "erin", f"w{i}") for i in range(2)]
    for worker in erin:
        worker.hello()
    assert all([m["count"] for m in w.inbox() if m["t"] == "chunk"] == [probe, probe] for w in erin)
    run_to_end([*carol, gpu, dave, *frank, *erin])
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, samples)


def test_a_chunk_its_holder_already_took_is_not_stolen(client, collector):
    job_id = pi_job(client, samples=8 * BLOCK)
    a, b = FakeWorker(collector, "alice"), FakeWorker(collector, "bob")
    a.hello()
    first, second = a.take(), a.take()  # both started (popped): nothing is left to steal
    b.hello()
    client.hset(keys.worker(b.name), "rate:pi", 1e12)
    collector.dispatcher.forget_active()
    given = collector.dispatcher.fill(b.name)
    chunks = [m for m in b.inbox() if m["t"] == "chunk"]
    # bob may get a speculative copy, never the chunk itself: alice still holds both
    assert all(json.loads(client.hget(keys.chunks(job_id), str(c["chunk"])))["holders"].get(a.name) for c in chunks)
    assert given == len(chunks) and int(read_job(client, job_id).get("stolen", 0)) == 0
    assert a.answer(first) == "accepted" and a.answer(second) == "accepted; job done"


def test_the_monitor_serves_idle_workers_between_messages_not_a_few_per_pass(client, collector):
    from hydra.monitor import Monitor

    monitor = Monitor(client, Settings())
    workers = [FakeWorker(monitor.collector, f"v{i}") for i in range(150)]
    for worker in workers:
        worker.hello()  # no job yet: every one waits in hydra:idle
    assert client.zcard(keys.IDLE) == 150
    # Submitted without the scheduler's own quick serving, as if its process died right after.
    from hydra import queue

    serve, queue._serve_idle_workers = queue._serve_idle_workers, lambda redis: None
    try:
        job_id = submit(client, "pi", {"samples": 400 * BLOCK, "seed": 5}, SubmitOptions(chunk_units=1))
    finally:
        queue._serve_idle_workers = serve
    monitor.dispatcher.forget_active()  # its list of active jobs is cached for 0.2 s
    rounds = 0
    while monitor.serve_waiting(time.monotonic()):
        rounds += 1
        assert rounds < 100
    assert client.zcard(keys.IDLE) == 0, "every idle worker got work in slices, without a single pass"
    assert all(w.inbox() for w in workers)
    assert not monitor.serve_waiting(time.monotonic()), "nothing left to serve: it backs off"
    run_to_end(workers)
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 400 * BLOCK)


@pytest.mark.parametrize("idle_first", [True, False])
def test_idle_workers_that_waited_longer_than_the_results_are_served_between_rounds(client, monkeypatch, idle_first):
    """Whoever asked for work first gets it first: between two rounds of results, idle workers are
    served if the one waiting longest waited longer than the next round's oldest result; else the
    results go on, and the idle ones are served after the drain, by the loop, as before."""
    from hydra import monitor as monitor_module
    from hydra import queue
    from hydra.monitor import Monitor, Notifications, enable_notifications
    from tests.conftest import wait_until

    monkeypatch.setattr(monitor_module, "DRAIN_ROUND_USERS", 2)  # six volunteers' results: three rounds
    monitor = Monitor(client, Settings())
    enable_notifications(client)
    listener = monitor._listener = Notifications(client, 0).start()
    try:
        busy = [FakeWorker(monitor.collector, f"busy{i}") for i in range(6)]
        idle = [FakeWorker(monitor.collector, f"idle{i}") for i in range(20)]
        for worker in busy + idle:
            worker.hello()  # no job yet: every one waits in hydra:idle
        # Submitted without the scheduler's own quick serving, as if its process died right after.
        monkeypatch.setattr(queue, "_serve_idle_workers", lambda redis: None)
        submit(client, "pi", {"samples": 400 * BLOCK, "seed": 5}, SubmitOptions(chunk_units=1))
        monitor.dispatcher.forget_active()
        for worker in busy:
            assert monitor.dispatcher.fill(worker.name) == 2
        listener.take()  # the hellos were handled above
        for worker in busy:
            client.rpush(keys.outbox(worker.user), json.dumps(worker.result(worker.take())).encode() + b"\n")
        wait_until(lambda: len(listener.heard()) == 6, 10, what="the listener hearing six results")
        if not idle_first:  # the idle ones started waiting after the results were sent
            client.zadd(keys.IDLE, {w.name: time.time() for w in idle}, xx=True)
        assert monitor.handle_notifications(listener, budget=5) == 6
        assert all(client.scard(keys.held(w.name)) == 2 for w in busy), "the busy ones topped up"
        if idle_first:
            assert client.zcard(keys.IDLE) == 0, "served between the rounds"
            assert all(w.inbox() for w in idle)
        else:
            assert client.zcard(keys.IDLE) == 20, "the results waited longer: theirs first"
            while monitor.serve_waiting(time.monotonic()):
                pass
            assert client.zcard(keys.IDLE) == 0, "and then the loop serves them"
    finally:
        listener.close()


def test_the_monitor_measures_what_a_message_costs_its_loop_on_full_rounds_only(client, monkeypatch):
    """What a message costs the loop (the dispatcher's floor for cutting a job's tail) is measured on
    rounds that hold a backlog's worth of messages, never on a trickle (whose round trips more
    messages would share), and moves as a running average."""
    from hydra import monitor as monitor_module
    from hydra.monitor import COST_WEIGHT, Monitor, Notifications, enable_notifications
    from tests.conftest import wait_until

    monkeypatch.setattr(monitor_module, "MEASURED_ROUND", 4)
    monitor = Monitor(client, Settings())
    enable_notifications(client)
    listener = monitor._listener = Notifications(client, 0).start()
    try:
        submit(client, "pi", {"samples": 400 * BLOCK, "seed": 5}, SubmitOptions(chunk_units=1))
        workers = [FakeWorker(monitor.collector, f"v{i}") for i in range(4)]
        for worker in workers:
            worker.hello()
        listener.take()  # the hellos were handled above

        def results(senders: list[FakeWorker]) -> int:
            for worker in senders:
                client.rpush(keys.outbox(worker.user), json.dumps(worker.result(worker.take())).encode() + b"\n")
            wait_until(lambda: len(listener.heard()) == len(senders), 10, what="the listener hearing the results")
            return monitor.handle_notifications(listener, budget=5)

        assert results(workers[:3]) == 3
        monitor._measure_message_cost()
        assert monitor.dispatcher.message_cost == 0.0, "three messages are a trickle: not measured"
        assert results(workers) == 4
        seconds, messages = monitor._drained
        assert messages == 4 and seconds > 0
        client.set(keys.MONITOR_LEASE, "another monitor", px=60_000)  # each monitor measures its own loop
        assert not monitor.run_pass().acted
        assert monitor.dispatcher.message_cost == pytest.approx(seconds / 4)
        assert monitor._drained == (0.0, 0)
        monitor._drained = (3 * seconds, 4)  # three times as slow: the average moves part of the way
        monitor._measure_message_cost()
        assert monitor.dispatcher.message_cost == pytest.approx(seconds / 4 * (1 + 2 * COST_WEIGHT))
    finally:
        listener.close()


def test_a_result_drained_before_its_arrival_stamp_never_takes_a_later_results_stamp(client, collector):
    """Under load a drain pops messages whose keyspace notification the listener has not heard yet;
    their stamps, heard later, must be skipped, not paired with later results (which would then
    look early: the worker measured far faster than it is, and given chunks far too big)."""
    import collections

    pi_job(client)
    alice = FakeWorker(collector, "alice")
    alice.hello()
    first, second = alice.take(), alice.take()

    def push(chunk: dict) -> None:
        start = chunk["first"] * BLOCK
        sums = {"inside": count_inside_samples(chunk["seed"], start, chunk["count"] * BLOCK)}
        header = {"t": "result", "w": "w1", "job": chunk["job"], "chunk": chunk["chunk"], "a": chunk["a"]}
        client.rpush(keys.outbox("alice"), json.dumps({**header, "sums": sums, "seconds": 0.1}).encode() + b"\n")

    push(first)
    assert collector.drain("alice", collections.deque()) == 1  # its stamp is not heard yet
    last = float(client.hget(keys.worker(alice.name), "last_result"))
    stale = last + 1e-4  # the first result's stamp, heard only now
    push(second)
    assert collector.drain("alice", collections.deque([stale, time.time()])) == 1
    assert float(client.hget(keys.worker(alice.name), "last_result")) != stale


def test_a_results_co2_is_billed_before_it_is_accepted_so_a_done_job_has_all_of_it(client, collector, monkeypatch):
    """The job reads done the moment its last result is accepted: that result's energy and CO2 must
    already be in the totals, even if the collector dies right after accepting it."""
    job_id = pi_job(client, samples=8 * BLOCK)
    alice = FakeWorker(collector, "alice")
    alice.hello()
    first, second = alice.take(), alice.take()
    assert alice.answer(first) == "accepted"
    before = float(client.hget(keys.job(job_id), "energy_j"))
    assert before > 0

    def dies(*args, **kwargs):
        raise RuntimeError("the monitor was killed here")

    monkeypatch.setattr(collector.dispatcher, "fill_many", dies)
    alice.answer(second)  # the handler crashes after the accept (a strike, as for any crash)
    record = read_job(client, job_id)
    assert record["state"] == "done"
    assert float(client.hget(keys.job(job_id), "energy_j")) > before, "the last result's energy was billed"


def test_a_redis_that_lost_its_scripts_still_bills_accepts_and_tops_up(client, collector):
    """After a Redis restart its script cache is empty: the pipelined EVALSHAs fail, and the result
    is billed, accepted and its worker topped up all the same."""
    job_id = pi_job(client)
    alice = FakeWorker(collector, "alice")
    alice.hello()
    first, second = alice.take(), alice.take()
    assert alice.answer(first) == "accepted"
    energy = float(client.hget(keys.job(job_id), "energy_j"))
    client.script_flush()
    assert alice.answer(second) == "accepted"
    assert float(client.hget(keys.job(job_id), "energy_j")) > energy, "billed by the script's body"
    assert client.scard(keys.held(alice.name)) == 2, "topped up after the planned assignments failed"
    run_to_end([alice])
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 40 * BLOCK)


def test_a_drained_batch_costs_three_round_trips_however_many_workers_answered(client, collector, monkeypatch):
    """Take the outbox, read what the results quote, then accept them and top every worker up: the
    round trips do not grow with the batch (the top-ups are planned from one peek of the job)."""
    job_id = pi_job(client, samples=400 * BLOCK, chunk_units=1)
    workers = [FakeWorker(collector, "alice", f"w{i}") for i in range(20)]
    for worker in workers:
        worker.hello()

    def all_answer() -> None:
        batch = [worker.result(worker.take()) for worker in workers]
        client.rpush(keys.outbox("alice"), *(json.dumps(m).encode() + b"\n" for m in batch))

    all_answer()
    assert collector.drain("alice") == 20  # Redis learns every script here: the next batch is measured
    all_answer()
    trips = round_trips_on(client, monkeypatch)
    assert collector.drain("alice") == 20
    monkeypatch.undo()
    assert len(trips) <= 3, trips
    assert all(client.scard(keys.held(w.name)) == 2 for w in workers), "every worker topped up again"
    firsts = sorted(m["first"] for w in workers for m in w.inbox() if m["t"] == "chunk")
    assert len(firsts) == len(set(firsts)) == 40, "no piece given twice"
    run_to_end(workers)
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 400 * BLOCK)


def test_overdue_assignments_get_a_copy_then_are_taken_back_and_a_dead_holders_are_requeued(client):
    """The deadline pass reads what is due in a few round trips and acts on each entry as it must:
    first deadline, a copy is wanted; second, the assignment is taken back; a holder whose heartbeat
    is gone gives back all it held; a malformed entry is dropped and recorded."""
    from hydra.monitor import Monitor

    monitor = Monitor(client, Settings())
    job_id = pi_job(client)
    alice, bob = FakeWorker(monitor.collector, "alice"), FakeWorker(monitor.collector, "bob")
    alice.hello(), bob.hello()
    late = alice.take()
    late_member = keys.assignment(job_id, late["chunk"], late["a"])
    dead = [keys.assignment(job_id, m["chunk"], m["a"]) for m in bob.inbox() if m["t"] == "chunk"]
    client.delete(keys.alive("bob", "w1"))  # its expiry notice lost: only its deadline tells
    client.zadd(keys.DEADLINES, {late_member: 0, dead[0]: 0, "not:an:entry": 0})

    report = monitor.run_pass()
    assert any("copy wanted" in line for line in report.copied), report
    assert client.zscore(keys.wanted(job_id), late["chunk"]) is not None
    assert client.zscore(keys.DEADLINES, late_member) > time.time(), "a second deadline, later"
    assert any("bob/w1 gone" in line for line in report.requeued), report
    assert client.scard(keys.held(bob.name)) == 0 and client.zscore(keys.LIVE, bob.name) is None
    assert client.zscore(keys.DEADLINES, "not:an:entry") is None
    assert any(b"malformed deadline entry" in e for e in client.lrange(keys.ERRORS, 0, -1))

    client.zadd(keys.DEADLINES, {late_member: 0})
    report = monitor.run_pass()
    assert any("taken back from late alice/w1" in line for line in report.requeued), report
    assert not client.sismember(keys.held(alice.name), late_member)
    assert alice.answer(late) in ("stale", "refused")  # its answer no longer counts
    run_to_end([alice])
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 40 * BLOCK)


def test_a_monitor_behind_on_its_messages_does_not_call_chunks_late_whose_results_it_has_not_read(client):
    """Deadlines are judged as of when the oldest message the monitor heard and has not handled yet
    arrived: under load, results waiting in its own backlog do not make their chunks look overdue
    (each copy asked for then is work wasted, and the backlog grows). Once it caught up, they do."""
    from hydra.monitor import Monitor, Notifications, enable_notifications
    from tests.conftest import wait_until

    monitor = Monitor(client, Settings())
    enable_notifications(client)
    listener = monitor._listener = Notifications(client, 0).start()
    try:
        job_id = pi_job(client)
        alice, bob = FakeWorker(monitor.collector, "alice"), FakeWorker(monitor.collector, "bob")
        alice.hello(), bob.hello()
        listener.take()  # the hellos were handled above
        chunk = alice.take()
        client.rpush(keys.outbox("alice"), json.dumps(alice.result(chunk)).encode() + b"\n")
        wait_until(lambda: listener.backlog(time.time()) > 0, 10, what="the listener hearing the result")
        late = bob.take()  # bob's chunk is due now, after alice's unread result arrived
        client.zadd(keys.DEADLINES, {keys.assignment(job_id, late["chunk"], late["a"]): time.time()})
        monitor.run_pass()
        assert client.zcard(keys.wanted(job_id)) == 0, "not late as of the monitor's backlog"
        assert monitor.handle_notifications(listener, budget=5) == 1
        assert listener.backlog(time.time()) == 0
        monitor.run_pass()
        assert client.zscore(keys.wanted(job_id), late["chunk"]) is not None, "late once caught up"
    finally:
        listener.close()


def test_many_volunteers_results_cost_three_round_trips_together_and_keep_their_own_outcomes(
    client, collector, monkeypatch
):
    """The monitor drains the volunteers it heard from together: their outboxes are taken in one
    round trip and their results read and accepted in two more, however many volunteers answered.
    Each result keeps its own outcome: a forged one among them is refused and recorded alone."""
    job_id = pi_job(client, samples=400 * BLOCK, chunk_units=1)
    workers = [FakeWorker(collector, f"v{i}") for i in range(16)]
    for worker in workers:
        worker.hello()

    def all_answer(forger: FakeWorker | None = None) -> dict | None:
        kept = None
        for worker in workers:
            chunk = worker.take()
            message = worker.result(chunk)
            if worker is forger:
                message["a"] += 1000  # an assignment it was never given
                kept = chunk
            client.rpush(keys.outbox(worker.user), json.dumps(message).encode() + b"\n")
        return kept

    all_answer()
    assert collector.drain_many({w.user: None for w in workers}) == 16  # Redis learns every script here
    all_answer()
    trips = round_trips_on(client, monkeypatch)
    assert collector.drain_many({w.user: None for w in workers}) == 16
    monkeypatch.undo()
    assert len(trips) <= 3, trips
    kept = all_answer(forger=workers[3])
    assert collector.drain_many({w.user: None for w in workers}) == 16
    forged = [e for e in client.lrange(keys.ERRORS, 0, -1) if b"refused a message from volunteer" in e]
    assert len(forged) == 1 and b"volunteer v3:" in forged[0], forged
    assert workers[3].answer(kept) == "accepted", "its real assignment is still its own"
    for worker in workers:
        assert int(client.hget(keys.worker(worker.name), "chunks")) == 3
        assert client.scard(keys.held(worker.name)) == 2, "every worker topped up again"
    firsts = sorted(m["first"] for w in workers for m in w.inbox() if m["t"] == "chunk")
    assert len(firsts) == len(set(firsts)), "no piece given twice"
    run_to_end(workers)
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 400 * BLOCK)


def test_a_crashing_batch_of_volunteers_is_redone_volunteer_by_volunteer(client, collector, monkeypatch):
    """Whatever one volunteer's results do to the shared batch, only that volunteer is held to
    account: the batch is handled again volunteer by volunteer, and the others' results count."""
    job_id = pi_job(client)
    alice, bob, mallory = (FakeWorker(collector, user) for user in ("alice", "bob", "mallory"))
    for worker in (alice, bob, mallory):
        worker.hello()
    check = collector._check_result

    def crashes_on_mallory(user, item):
        if user == "mallory":
            raise RuntimeError("a result no check foresaw")
        return check(user, item)

    monkeypatch.setattr(collector, "_check_result", crashes_on_mallory)
    for worker in (alice, bob, mallory):
        client.rpush(keys.outbox(worker.user), json.dumps(worker.result(worker.take())).encode() + b"\n")
    assert collector.drain_many({"alice": None, "bob": None, "mallory": None}) == 3
    errors = [e for e in client.lrange(keys.ERRORS, 0, -1) if b"refused a message" in e]
    assert len(errors) == 1 and b"volunteer mallory:" in errors[0], errors
    assert int(client.hget(keys.worker(alice.name), "chunks")) == 1
    assert int(client.hget(keys.worker(bob.name), "chunks")) == 1
    assert int(client.hget(keys.worker(mallory.name), "chunks")) == 0
    monkeypatch.undo()
    run_to_end([alice, bob, mallory])
    record = read_job(client, job_id)
    assert record["state"] == "done" and record["sum:inside"] == count_inside_samples(5, 0, 40 * BLOCK)


def answer_together(client, collector, workers: list[FakeWorker], trips=None) -> list:
    """Each worker starts its next chunk and answers it; the results wait in the volunteer's outbox
    and are drained as one batch. With ``trips`` (a monkeypatch), returns the drain's round trips."""
    chunks = [w.take() for w in workers]
    results = [json.dumps(w.result(c)).encode() + b"\n" for w, c in zip(workers, chunks, strict=True)]
    client.rpush(keys.outbox(workers[0].user), *results)
    counted = round_trips_on(client, trips) if trips else []
    assert collector.drain(workers[0].user) == len(workers)
    if trips:
        trips.undo()
    return counted


def test_at_a_jobs_tail_a_batch_with_nothing_worth_taking_costs_no_steals_or_copies(client, collector, monkeypatch):
    """At a job's end (nothing pending) a batch of workers that nothing is worth giving is settled
    after one look at the chunk expected to end last, not after a steal's and a speculative copy's
    round trips each; workers that would finish that chunk sooner still take it."""
    job_id = pi_job(client, samples=24 * BLOCK, chunk_units=1)
    workers = [FakeWorker(collector, "alice", f"w{i}") for i in range(8)]
    for worker in workers:
        worker.hello()  # 16 of the 24 chunks given
    answer_together(client, collector, workers)  # the last 8 given: nothing pending now
    assert client.zcard(keys.pending(job_id)) == 0
    collector.dispatcher.scripts.last_running(keys=[keys.running(job_id), keys.chunks(job_id)])  # Redis learns it
    now = time.time()  # every running chunk is expected to end now: nothing is worth stealing or copying
    client.zadd(keys.running(job_id), {m: now for m in client.zrange(keys.running(job_id), 0, -1)})
    trips = answer_together(client, collector, workers, monkeypatch)  # each holds one, not started
    assert len(trips) <= 4, " ".join(trips)  # take, read, accept, one look at the tail
    assert all(client.scard(keys.held(w.name)) == 1 for w in workers)

    # A straggler: w0's queued chunk is now expected to end in 1,000 s. Two workers with room find
    # it worth taking: one steals it from w0's inbox (it was never started there).
    queued = workers[0].inbox()[0]
    client.zadd(keys.running(job_id), {str(queued["chunk"]): time.time() + 1000})
    answer_together(client, collector, workers[1:3])
    assert workers[0].inbox() == [], "taken back from the straggler's inbox"
    takers = [m for w in workers[1:3] for m in w.inbox() if m["chunk"] == queued["chunk"]]
    assert len(takers) == 1 and takers[0]["first"] == queued["first"]
    run_to_end(workers)
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 24 * BLOCK)


def test_a_wanted_copy_takes_one_worker_out_of_a_batch_not_the_whole_batch(client, collector, monkeypatch):
    """A chunk that wants a copy goes to the first worker of a batch that may take it, one by one;
    the rest of the batch is still topped up from the pending chunks in the batch's round trips."""
    job_id = pi_job(client, samples=60 * BLOCK, chunk_units=1)
    bob = FakeWorker(collector, "bob")
    bob.hello()
    overdue = bob.take()
    workers = [FakeWorker(collector, "alice", f"w{i}") for i in range(8)]
    for worker in workers:
        worker.hello()
    answer_together(client, collector, workers)  # Redis learns every script here
    client.zadd(keys.wanted(job_id), {str(overdue["chunk"]): time.time()})  # as the deadline pass does
    trips = answer_together(client, collector, workers, monkeypatch)
    assert len(trips) <= 5, " ".join(trips)  # take, read, accept and top up; one worker's copy: read it, assign it
    copies = [m for w in workers for m in w.inbox() if m.get("chunk") == overdue["chunk"]]
    assert len(copies) == 1, "the copy went to a worker of the batch"
    assert client.zcard(keys.wanted(job_id)) == 0
    assert all(client.scard(keys.held(w.name)) == 2 for w in workers), "every worker topped up"
    run_to_end([bob, *workers])
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, 60 * BLOCK)


def test_a_plan_refused_because_another_dispatcher_moved_first_is_planned_again_in_one_round(client, collector):
    """Two dispatchers read the same head of pending work; the slower one's planned pieces are
    refused. Its workers are planned again from a fresh peek, together, not served one by one."""
    from hydra.dispatch import Dispatcher

    job_id = pi_job(client, samples=60 * BLOCK, chunk_units=1)
    workers = [FakeWorker(collector, "alice", f"w{i}") for i in range(4)]
    for worker in workers:
        worker.hello()
        while worker.take():  # hand back nothing: the worker simply runs its two chunks ...
            pass
    for worker in workers:  # ... and is told it holds none (a fresh state for this test)
        client.delete(keys.held(worker.name))
    slow = Dispatcher(client, Settings())
    pipe = client.pipeline(transaction=False)
    asked = slow.queue_peek(pipe, job_id, len(workers))
    stale = {job_id: (pipe.execute()[0], asked)}
    other = FakeWorker(collector, "bob")
    other.hello()  # another dispatcher takes the head the stale peek shows
    one_by_one = []
    original = Dispatcher._assign_one
    Dispatcher._assign_one = lambda self, *a: one_by_one.append(a) or original(self, *a)  # type: ignore[method-assign]
    try:
        given = slow.fill_many(dict.fromkeys(w.name for w in workers), stale)
    finally:
        Dispatcher._assign_one = original  # type: ignore[method-assign]
    assert given == {w.name: 2 for w in workers}
    assert one_by_one == [], "planned again together, not one by one"
    firsts = [m["first"] for w in [*workers, other] for m in w.inbox() if m["t"] == "chunk"]
    assert len(firsts) == len(set(firsts)) == 10, "no piece given twice"


def test_a_ledger_backlog_is_signed_in_a_few_big_slices_between_messages(client):
    """Under a stream of results a turn of the monitor's loop can last a quarter second, and one
    small slice a turn fell ever further behind (at N = 2,000 on two cores, 34,000 entries unsigned
    when the job ended). A backlog is signed as it stands, up to LEDGER_SLICE_MAX entries a slice:
    5,000 entries take a few heads, not 157; every entry reaches the standings once, and each
    volunteer's list of its entries is in ledger order."""

    from hydra import credit, ledger
    from hydra.monitor import LEDGER_SLICE_MAX, Monitor
    from tests.conftest import wait_until

    total = 5000
    client.rpush(
        ledger.LEDGER,
        *(
            ledger.format_entry("grant", f"v{i % 7}", "0123456789ab", "pi", i, 8, 1000 + i, f"{i:064x}", 1.764e9)
            for i in range(total)
        ),
    )
    monitor = Monitor(client, Settings())
    with running(monitor):
        wait_until(lambda: int(client.hget(ledger.STATE, "size") or 0) == total, 60, what="the backlog signed")
    sizes = [head.size for head in ledger.heads(client)]
    assert sizes[-1] == total and len(sizes) <= 8, sizes
    assert all(0 < b - a <= LEDGER_SLICE_MAX for a, b in zip([0, *sizes[:-1]], sizes, strict=True)), sizes
    standings = credit.board(client)
    assert sum(s.credit for s in standings.values()) == sum(1000 + i for i in range(total))
    assert sum(s.chunks for s in standings.values()) == total
    for v in range(7):
        assert [int(i) for i in client.lrange(ledger.by_volunteer_key(f"v{v}"), 0, -1)] == list(range(v, total, 7))


def test_the_ledger_is_signed_by_a_child_of_the_monitor_and_a_killed_one_is_replaced(client):
    """The monitor's loop leaves signing to a child process (hydra.signer) that runs beside it; one
    killed with SIGKILL is replaced at the next pass, and what was added meanwhile is signed once."""
    import os
    import signal

    from hydra import credit, ledger
    from hydra.monitor import Monitor
    from tests.conftest import wait_until

    def add(start: int, n: int) -> None:
        entries = (
            ledger.format_entry("grant", f"v{i % 3}", "0123456789ab", "pi", i, 8, 1000, f"{i:064x}", 1.764e9)
            for i in range(start, start + n)
        )
        client.rpush(ledger.LEDGER, *entries)

    def signed() -> int:
        return int(client.hget(ledger.STATE, "size") or 0)

    monitor = Monitor(client, Settings())
    with running(monitor):
        wait_until(lambda: monitor._signer is not None, 30, what="the signer started")
        first = monitor._signer._process.pid
        assert first != os.getpid()
        add(0, 100)
        wait_until(lambda: signed() == 100, 30, what="the first entries signed")
        os.kill(first, signal.SIGKILL)
        add(100, 50)
        wait_until(lambda: signed() == 150, 30, what="the entries added after the kill signed")
        wait_until(lambda: monitor._signer._process.pid != first, 30, what="another signer")
        assert monitor._signer.alive()
    assert monitor._signer is None, "the monitor stopped its signer"
    standings = credit.board(client, unsigned_limit=0)
    assert sum(s.chunks for s in standings.values()) == 150 and sum(s.credit for s in standings.values()) == 150_000
    sizes = [head.size for head in ledger.heads(client)]
    assert sizes == sorted(set(sizes)) and sizes[-1] == 150


def test_a_result_read_before_its_arrival_stamp_is_timed_within_the_window_it_came_in(client, collector):
    """A monitor behind reads messages whose listener stamp has not reached it: such a result came
    after its outbox was last taken, so it is timed at the middle of that window, not when read.
    Timed when read, the monitor's lag counted as the volunteer's work: under load speeds read low,
    chunks shrank, and more chunks loaded the monitor more (at N = 2,000 on two cores volunteers
    computed half the time, on chunks of 0.9 s where 2 s were asked)."""
    pi_job(client, samples=400 * BLOCK, chunk_units=1)
    alice = FakeWorker(collector, "alice")
    alice.hello()
    first, second = alice.take(), alice.take()
    client.rpush(keys.outbox("alice"), json.dumps(alice.result(first)).encode() + b"\n")
    assert collector.drain("alice") == 1  # no listener here: nothing is stamped
    first_read = time.time()
    client.rpush(keys.outbox("alice"), json.dumps(alice.result(second)).encode() + b"\n")
    time.sleep(0.3)  # the monitor is this far behind: the result waits in the outbox
    before_second = time.time()
    assert collector.drain("alice") == 1
    after_second = time.time()
    timed = float(client.hget(keys.worker(alice.name), "last_result"))
    assert timed <= (first_read + after_second) / 2 < before_second, "timed within the window, not when read"


def test_a_late_stamp_pays_its_debt_and_a_stamp_that_never_comes_is_forgiven(collector):
    """A message taken before its stamp came is owed that stamp: when it comes (within STAMP_GRACE)
    it is skipped, not paired with the next message. But messages pushed before any monitor listened
    (a starting monitor's sweep finds them) are never stamped: their debt is forgiven after
    STAMP_GRACE, or every later result of that volunteer went unstamped (0 % of results stamped in
    bench.swarm --quick, 21 % at N = 2,000, before)."""
    import collections

    from hydra.collector import STAMP_GRACE

    t0 = time.time()
    stamped = collector._stamp("alice", [b"hello"], None)  # a sweep: no stamps
    assert stamped == [(b"hello", None)]
    late_stamp, next_stamp = t0 + 0.001, t0 + 0.002
    stamped = collector._stamp("alice", [b"r1"], collections.deque([late_stamp, next_stamp]))
    assert stamped == [(b"r1", next_stamp)], "the late stamp paid the debt; r1 got its own"

    collector._stamp("bob", [b"hello", b"r0"], None)  # pushed before the listener listened
    collector._unstamped["bob"] = (2, t0 - 2 * STAMP_GRACE)  # ... a while ago
    fresh = time.time()
    stamped = collector._stamp("bob", [b"r1"], collections.deque([fresh]))
    assert stamped == [(b"r1", fresh)], "a debt past its grace is forgiven, not paid with r1's stamp"
    assert "bob" not in collector._unstamped


def test_arrival_stamps_are_taken_when_redis_tells_however_busy_the_monitors_loop_is(client):
    """A push is stamped when Redis tells of it, not when the monitor's loop gets to it: while the
    loop is busy (here it holds the GIL all along), each push is stamped within a second of when it
    was made, in order, and the loop reads the stamps when it next looks. (The listener is a process
    of its own: under a saturated machine's load a thread beside the loop stamped 75 % of results
    before they were read, the process 100 %; see bench.swarm.)"""
    import subprocess
    import sys

    from hydra.monitor import enable_notifications
    from hydra.notifications import Notifications

    enable_notifications(client)
    port = client.connection_pool.connection_kwargs["port"]
    pusher = (
        "import sys, time, redis\n"
        "r = redis.Redis(port=int(sys.argv[1]))\n"
        "for _ in range(300):\n"
        "    before = time.time(); r.rpush(sys.argv[2], b'x'); print(before, time.time())\n"
    )
    listener = Notifications(client, 0).start()
    try:
        with subprocess.Popen(
            [sys.executable, "-c", pusher, str(port), keys.outbox("alice")], stdout=subprocess.PIPE, text=True
        ) as proc:
            busy_until = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < busy_until:  # the loop is busy meanwhile
                sum(range(1000))
            busy_until = time.monotonic() + 1.0
            while time.monotonic() < busy_until:  # and a second more: no thread of this process runs
                sum(range(1000))
            pushed = [tuple(map(float, line.split())) for line in proc.stdout]
        _, arrivals = listener.take()
    finally:
        listener.close()
    stamps = list(arrivals["alice"])
    assert len(stamps) == len(pushed) == 300
    assert stamps == sorted(stamps)
    for stamp, (before, after) in zip(stamps, pushed, strict=True):
        assert before <= stamp < after + 1.0


def test_volunteers_a_drain_left_are_drained_before_those_heard_since(client):
    """A saturated monitor drains what it heard for a budget of time and gives the rest back: the
    rest goes ahead of what was heard meanwhile, each volunteer with its messages in the order
    they came, so volunteers are drained in the order they were heard (put back behind the newer
    ones, leftovers were left again and again: asks waited 28 s at p99 at N = 10,000)."""
    from hydra.notifications import Notifications

    listener = Notifications(client, 0)  # not started: notices are fed in by hand below
    try:
        for user, when in [("a", 1.0), ("b", 2.0), ("c", 3.0), ("a", 4.0)]:
            listener._note(["o", user, str(when)])
        _, arrivals = listener.take()
        assert list(arrivals) == ["a", "b", "c"]
        # "a" was drained; meanwhile "d" and "c" sent more; "b" and "c" are given back.
        for user, when in [("d", 5.0), ("c", 6.0)]:
            listener._note(["o", user, str(when)])
        listener.put_back({user: arrivals[user] for user in ("b", "c")})
        assert listener.backlog(10.0, read=False) == pytest.approx(8.0)  # "b", heard at 2.0, waits
        _, arrivals = listener.take()
        assert list(arrivals) == ["b", "c", "d"]
        assert [list(arrivals[u]) for u in ("b", "c", "d")] == [[2.0], [3.0, 6.0], [5.0]]
    finally:
        listener.close()


def test_where_the_platform_cannot_fork_the_listener_is_a_thread_that_hears_the_same(client, monkeypatch):
    """No fork (Windows): the listener runs as a thread, forwards the same lines, and ends with close."""
    import multiprocessing
    import threading

    from hydra.monitor import enable_notifications
    from hydra.notifications import Notifications
    from tests.conftest import wait_until

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    enable_notifications(client)
    listener = Notifications(client, 0).start()
    thread = listener._child
    assert isinstance(thread, threading.Thread)
    stamps: list[float] = []
    dead: set[str] = set()
    try:
        before = time.time()
        for _ in range(3):
            client.rpush(keys.outbox("alice"), b"x")
        client.set(keys.alive("alice", "w1"), 1, px=1)  # expires at once

        def hear() -> bool:
            gone, arrivals = listener.take()
            dead.update(gone)
            stamps.extend(arrivals.get("alice", ()))
            return len(stamps) == 3 and bool(dead)

        wait_until(hear, 10, what="the thread hearing three pushes and an expiry")
    finally:
        listener.close()
    assert dead == {"alice/w1"}
    assert all(before <= t <= time.time() for t in stamps)
    assert not thread.is_alive()


def test_a_message_whose_notice_was_lost_is_drained_by_the_passes(client, redis_server):
    """Keyspace notices are fire and forget (one sent while the listener reconnects is lost): a
    volunteer's hello pushed with no notice sent is still read by the running monitor's passes,
    which look at every volunteer's outbox in turn, not left waiting for its next message."""

    from hydra.monitor import Monitor
    from hydra.volunteers import add_volunteer
    from tests.conftest import wait_until

    add_volunteer(client, "alice", redis_server.url)
    user = "volunteer-alice"
    monitor = Monitor(client, Settings())
    with running(monitor):
        wait_until(lambda: monitor._listener is not None, 30, what="the monitor listening")
        flags = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
        client.config_set("notify-keyspace-events", "")  # this push sends no notice
        hello = {"t": "hello", "w": "w1", "tasks": {"pi": "1"}, "device": "cpu", "zone": "", "host": "h", "pid": 1}
        client.rpush(keys.outbox(user), json.dumps(hello).encode() + b"\n")
        client.config_set("notify-keyspace-events", flags)
        wait_until(lambda: client.zscore(keys.LIVE, f"{user}/w1") is not None, 30, what="the hello read")
        assert client.llen(keys.outbox(user)) == 0


def test_a_monitor_on_a_managed_redis_that_refuses_config_starts_and_hears_volunteers(client, redis_server):
    """A managed Redis (ElastiCache, Azure, Memorystore) may refuse CONFIG and take its settings
    from the provider: the monitor cannot read notify-keyspace-events there, so it takes them as
    the README asks and goes on, and hears a volunteer's hello. Where it can read them and they
    lack what it needs but it may not change them, it says so in one line instead."""
    from hydra.connection import connect
    from hydra.errors import HydraError
    from hydra.monitor import NOTIFY_FLAGS, Monitor, enable_notifications
    from hydra.volunteers import add_volunteer
    from tests.conftest import wait_until

    client.config_set("notify-keyspace-events", NOTIFY_FLAGS)  # as the provider's settings would
    client.acl_setuser(
        "operator", enabled=True, passwords=["+op"], keys=["*"], channels=["*"], commands=["+@all", "-config"]
    )
    managed = connect(redis_server.url.replace("redis://", "redis://operator:op@"))
    add_volunteer(client, "alice", redis_server.url)
    user = "volunteer-alice"
    try:
        assert enable_notifications(managed) is False
        monitor = Monitor(managed, Settings())
        with running(monitor):
            wait_until(lambda: monitor._listener is not None, 30, what="the monitor listening")
            hello = {"t": "hello", "w": "w1", "tasks": {"pi": "1"}, "device": "cpu", "zone": "", "host": "h", "pid": 1}
            client.rpush(keys.outbox(user), json.dumps(hello).encode() + b"\n")
            wait_until(lambda: client.zscore(keys.LIVE, f"{user}/w1") is not None, 30, what="the hello read")
        client.config_set("notify-keyspace-events", "")
        client.acl_setuser("operator", commands=["+config|get"])  # reads, but may not change them
        with pytest.raises(HydraError, match="notify-keyspace-events to include Klx"):
            enable_notifications(managed)
    finally:
        managed.close()


def test_a_pass_drains_an_outbox_nobody_heard_of_only_once_the_next_pass_finds_it_still_so(client, monkeypatch):
    """Under load most outboxes a pass finds holding messages unheard of hold one whose notice is on
    its way (the loop drains it moments later), and a busy volunteer's outbox gets a new message
    every few tens of milliseconds: a pass drains only those the next pass finds still so with no
    notice heard in between, not the rest (draining them cost slow passes 1-8 ms at N = 10,000)."""
    from hydra.monitor import Monitor

    monitor = Monitor(client, Settings())
    drained: list[list[str]] = []
    monkeypatch.setattr(monitor.collector, "drain_many", lambda arrivals: drained.append(sorted(arrivals)))
    monkeypatch.setattr(monitor, "_volunteer_users", lambda: ["alice", "bob", "carol", "dave"])

    heard = {"carol"}  # heard of, not handled yet: the loop's to drain
    noted: dict[str, float] = {}
    last_noted = lambda user: noted.get(user, -math.inf)  # noqa: E731
    monitor._listener = types.SimpleNamespace(heard=lambda read=True: heard, last_noted=last_noted)
    for user in ("alice", "bob", "carol", "dave"):
        client.rpush(keys.outbox(user), b"{}\n")
    monitor._drain_unheard()
    assert drained == [], "alice's, bob's and dave's notices may be on their way"
    client.delete(keys.outbox("bob"))  # bob's came, and the loop drained its outbox
    noted["dave"] = time.monotonic()  # dave's came and was drained, and dave pushed another since
    monitor._drain_unheard()
    assert drained == [["alice"]], "alice's notice was lost; dave's are coming"
    monitor._drain_unheard()
    assert drained == [["alice"], ["dave"]], "no notice of dave's last message for a whole pass: lost"


def test_a_volunteers_speed_is_kept_in_redis_by_device_and_read_by_any_monitor(client, collector, monkeypatch):
    """A volunteer's measured speed is remembered in Redis per kind of device: a GPU's speed never
    sizes the same volunteer's CPU workers (a CPU piece sized for a GPU would run far past its
    deadline). And it is read from Redis, not from one monitor's memory: a restarted monitor, or
    another one, sizes a worker whose sibling it never measured, without a probe of its own."""
    from hydra import queue
    from hydra.tasks import TASKS

    samples = 4096 * BLOCK
    monkeypatch.setattr(queue, "_serve_idle_workers", lambda redis: None)  # served below instead
    job_id = submit(client, "pi", {"samples": samples, "seed": 5}, SubmitOptions(chunk_seconds=2.0))
    probe = TASKS["pi"].probe_units({"samples": samples, "seed": 5})
    gpu = FakeWorker(collector, "carol", "gpu", device="cuda")
    gpu.hello()
    gpu.answer(gpu.take())  # measured: carol's GPU speed
    gpu_rate = float(client.hget(keys.worker(gpu.name), "rate:pi"))
    cpu = FakeWorker(collector, "carol", "cpu0")
    cpu.hello()
    assert client.hget(keys.worker(cpu.name), "rate:pi") is None, "a CPU is not sized by a GPU's speed"
    assert [m["count"] for m in cpu.inbox() if m["t"] == "chunk"] == [probe, probe], "it probes for itself"
    late = FakeWorker(collector, "carol", "cpu1")
    late.hello()  # before cpu0 is measured: waits for cpu0's probe, parked in this monitor's memory
    assert not any(m["t"] == "chunk" for m in late.inbox())
    cpu.answer(cpu.take())
    cpu_rate = float(client.hget(keys.worker(cpu.name), "rate:pi"))
    assert cpu_rate != gpu_rate

    restarted = Collector(client, Settings())  # knows nothing of carol but what Redis holds
    client.zadd(keys.IDLE, {late.name: time.time()})  # due now
    restarted.dispatcher.forget_active()
    restarted.dispatcher.serve_idle(budget=None)
    sized = [m["count"] for m in late.inbox() if m["t"] == "chunk"]
    assert len(sized) == 2 and min(sized) > probe, "sized by carol's CPU speed, read from Redis"
    gpu2 = FakeWorker(restarted, "carol", "gpu2", device="cuda")
    gpu2.hello()
    assert float(client.hget(keys.worker(gpu2.name), "rate:pi")) == gpu_rate, "a GPU joins at the GPU's speed"
    cpu2 = FakeWorker(restarted, "carol", "cpu2")
    cpu2.hello()
    assert float(client.hget(keys.worker(cpu2.name), "rate:pi")) == cpu_rate, "and a CPU at the CPU's"
    run_to_end([gpu, cpu, late, gpu2, cpu2])
    assert read_job(client, job_id)["sum:inside"] == count_inside_samples(5, 0, samples)


def hello_message(wid: str, **fields) -> bytes:
    message = {"t": "hello", "w": wid, "tasks": {"pi": "1"}, "device": "cpu", "zone": "", "host": "h", "pid": 1}
    return json.dumps({**message, **fields}).encode() + b"\n"


def test_hellos_drained_together_share_their_round_trips(client, collector, monkeypatch):
    """Many volunteers joining at once (a deployment starts; Redis came back and every heartbeat had
    lapsed) share their round trips: 40 volunteers' hellos cost about what 10 volunteers' do."""
    pi_job(client, samples=4000 * BLOCK)
    client.hset(
        keys.volunteer("v0-0"), keys.device_rate("cpu", "pi"), 1234.5
    )  # a volunteer seen before: its speed is reused
    client.rpush(keys.outbox("first"), hello_message("w1"))
    collector.drain("first")  # Redis learns the scripts (a drain of many finding none drains one by one)
    trips = round_trips_on(client, monkeypatch)
    counted = []
    for round_, n in enumerate((10, 40)):
        users = [f"v{round_}-{i}" for i in range(n)]
        for user in users:
            client.rpush(keys.outbox(user), hello_message("w1"))
        trips.clear()
        assert collector.drain_many(dict.fromkeys(users)) == n
        counted.append(len(trips))
        assert client.zcard(keys.LIVE) == 1 + sum((10, 40)[: round_ + 1])
        for user in users:
            inbox = [json.loads(m) for m in client.lrange(keys.inbox(user, "w1"), 0, -1)]
            assert [m["t"] for m in inbox] == ["welcome", "chunk", "chunk"], user
    # Three round trips and a top-up of two per 32 workers (the second round has no known speeds to
    # read, one round trip less); one by one, a hello made ten.
    assert counted[0] <= 6 and counted[1] <= counted[0] + 2, counted
    assert int(client.hget(keys.COUNTS, "task:pi")) == 51
    assert float(client.hget(keys.worker("v0-0/w1"), "rate:pi")) == 1234.5
    assert float(client.zscore(keys.rates("pi"), "v0-0/w1")) == 1234.5
    assert float(client.hget(keys.COUNTS, "rate:pi")) == 1234.5


def test_hellos_handled_together_leave_what_one_at_a_time_would(client, monkeypatch):
    """The batch keeps every rule of a hello alone: the workers cap counts the batch's own hellos, a
    quarantined volunteer is told to stop, a bad hello is refused alone, a worker saying hello twice
    is counted once, and a volunteer's last speeds are reused. Redis ends as it would one by one."""
    from hydra import collector as collector_module

    monkeypatch.setattr(collector_module, "MAX_WORKERS", 3)
    outboxes = {
        "heads": [hello_message(f"h{i}") for i in range(5)],  # two past the cap
        "alice": [hello_message("w1"), hello_message("w2", device="cuda", zone="NO"), hello_message("w1")],
        "bob": [hello_message("w1", zone="$$$")],  # refused: a bad zone
        "carol": [hello_message("w1", tasks={"pi": "1", "mandelbrot": "1"})],
        "mallory": [hello_message("w1")],  # quarantined
        **{f"u{i}": [hello_message("w1")] for i in range(6)},
    }

    def state(together: bool) -> dict:
        client.flushdb()
        pi_job(client, samples=400 * BLOCK)
        client.hset(
            keys.volunteer("carol"), mapping={"rate:cpu:pi": 1000.0, "rate:cpu:mandelbrot": 20.5, "rate:cuda:pi": 9e9}
        )
        client.sadd(keys.QUARANTINE, "mallory")
        collector = Collector(client, Settings())
        for user, messages in outboxes.items():
            client.rpush(keys.outbox(user), *messages)
        if together:
            collector.drain_many(dict.fromkeys(outboxes))
        else:
            for user, messages in outboxes.items():
                client.delete(keys.outbox(user))
                for message in messages:
                    collector.handle(user, message)
        live = sorted(m.decode() for m in client.zrange(keys.LIVE, 0, -1))
        return {
            "live": live,
            "counts": client.hgetall(keys.COUNTS),
            "workers": {u: sorted(client.smembers(keys.user_workers(u))) for u in outboxes},
            "held": {name: client.scard(keys.held(name)) for name in live},
            "inboxes": {
                f"{u}/{m}": [json.loads(x)["t"] for x in client.lrange(keys.inbox(u, m), 0, -1)]
                for u in ("mallory", "alice")
                for m in ("w1", "w2")
            },
            "rates": {t: client.zrange(keys.rates(t), 0, -1, withscores=True) for t in ("pi", "mandelbrot")},
            "carol": {k: v for k, v in client.hgetall(keys.worker("carol/w1")).items() if k.startswith(b"rate:")},
            "refused": sorted(e.split(b" ", 1)[1] for e in client.lrange(keys.ERRORS, 0, -1)),
        }

    one_by_one, together = state(False), state(True)
    assert together == one_by_one
    assert together["workers"]["heads"] == [b"heads/h0", b"heads/h1", b"heads/h2"]
    assert together["workers"]["bob"] == [] and together["workers"]["mallory"] == []
    assert together["inboxes"]["mallory/w1"] == ["stop"]
    assert together["counts"][b"device:cpu"] == b"%d" % (3 + 1 + 1 + 6) and together["counts"][b"device:cuda"] == b"1"
    assert together["carol"] == {b"rate:pi": b"1000.0", b"rate:mandelbrot": b"20.5"}
    assert sum(b"more than 3 live workers" in e for e in together["refused"]) == 2
    assert sum(b"bad zone" in e for e in together["refused"]) == 1


def test_a_pass_cleans_up_after_quarantine_where_unfinished_however_many_are_quarantined(client, monkeypatch):
    """Quarantine is for good, so its set only grows: a pass checks only the volunteers whose
    clean-up may be unfinished (each quarantined by hand is checked once, 100 a pass, then left),
    in the same round trips however many are quarantined, and cleans up only where needed."""
    from hydra.monitor import QUARANTINE_SETTLE, Monitor

    monitor = Monitor(client, Settings())
    pi_job(client)
    mallory = FakeWorker(monitor.collector, "mallory")
    mallory.hello()
    monitor.run_pass()  # the lease, and what a first pass reads once
    monitor.longest_pass = float("inf")  # a longest pass yet is recorded: one round trip more
    trips = round_trips_on(client, monkeypatch)
    counted, settled = [], []
    for quarantined in (10, 300):
        client.sadd(keys.QUARANTINE, *(f"q{i}" for i in range(quarantined)))
        for _ in range(quarantined // 100 + 1):  # each checked once
            monitor.run_pass()
        settled.append(client.zcard(keys.QUARANTINE_UNFINISHED))
        trips.clear()
        monitor.run_pass()
        counted.append(len(trips))
    assert settled == [0, 0] and counted[0] == counted[1], (settled, counted)
    client.sadd(keys.QUARANTINE, "mallory")  # quarantined with a live worker: stopped at the next pass
    monitor.run_pass()
    assert client.zscore(keys.LIVE, mallory.name) is None and client.scard(keys.held(mallory.name)) == 0
    assert [m["t"] for m in mallory.inbox()] == ["stop"], "told to stop (its inbox emptied first)"
    assert mallory.hello() == "quarantined"
    # Watched a while yet (a hello read before its quarantine may still add a worker), then left.
    assert client.zscore(keys.QUARANTINE_UNFINISHED, "mallory") > time.time() - 5
    client.zadd(keys.QUARANTINE_UNFINISHED, {"mallory": time.time() - QUARANTINE_SETTLE - 1})
    for _ in range(4):  # the set grew: each of its 311 volunteers is checked once again, 100 a pass
        monitor.run_pass()
    assert client.zcard(keys.QUARANTINE_UNFINISHED) == 0
    # Let out of quarantine by the operator while still marked: its new worker is left alone.
    client.srem(keys.QUARANTINE, "mallory")
    client.zadd(keys.QUARANTINE_UNFINISHED, {"mallory": time.time()})
    assert mallory.hello() == "hello"
    for _ in range(4):  # the set shrank: each is checked once again
        monitor.run_pass()
    assert client.zscore(keys.LIVE, mallory.name) is not None
    assert client.zscore(keys.QUARANTINE_UNFINISHED, "mallory") is None


def test_the_workers_summary_is_bounded_and_costs_the_same_round_trips_at_any_size(client, collector, monkeypatch):
    """The page's once-a-second ``workers`` event: counts by task and device, the newest and the
    slowest few workers, in the same few round trips with 12 workers or 60."""
    from hydra.workers import SHOWN, worker_summary

    trips = round_trips_on(client, monkeypatch)
    sizes, counted = [], []
    joined: list[str] = []
    for n in (12, 60):
        while len(joined) < n:
            worker = FakeWorker(collector, f"u{len(joined)}")
            worker.hello()
            joined.append(worker.name)
            client.zadd(keys.LIVE, {worker.name: len(joined)})  # joined in this order
            client.zadd(keys.rates("pi"), {worker.name: 1000.0 + len(joined)})
        trips.clear()
        summary = worker_summary(client)
        counted.append(len(trips))
        sizes.append(len(json.dumps(summary)))
        assert summary["count"] == n and summary["by_task"] == {"pi": n, "mandelbrot": n}
        assert summary["by_device"] == {"cpu": n}
        assert [w["name"] for w in summary["newest"]] == joined[::-1][:SHOWN]
        assert [w["name"] for w in summary["slowest"]] == joined[:2], "the two slowest at pi"
    assert counted[0] == counted[1] <= 4, counted
    assert sizes[1] < sizes[0] * 1.2, sizes


def test_the_cluster_summary_is_sent_once_a_second_for_the_cluster_whichever_process_sends_it(client):
    """The ``workers`` and ``cluster`` events go out once a second: from the signer child beside
    each monitor's loop, so with several monitors one of them sends (a gate in Redis). Throughput is
    averaged over the seconds kept, and a counter that is not a number reads as none done."""
    from hydra.workers import ClusterSummary

    sent: list[tuple[str, dict]] = []
    events = types.SimpleNamespace(redis_url="redis://page", emit=lambda name, data: sent.append((name, data)))
    one, other = ClusterSummary(events), ClusterSummary(events)
    client.hset(keys.COUNTS, mapping={"done:samples": 1000, "done:pixels": "garbage"})
    assert one.send_if_due(client)
    assert [name for name, _ in sent] == ["workers", "cluster"]
    assert not one.send_if_due(client), "not again within its second"
    assert not other.send_if_due(client), "another monitor's child: the gate says it was sent"
    assert len(sent) == 2
    client.hset(keys.COUNTS, "done:samples", 5000)
    client.delete(keys.SUMMARY_GATE)  # a second later, as far as the gate and the sender know
    one._last -= 2.0
    one._history[0] = (one._history[0][0] - 2.0, one._history[0][1])  # the first sample, 2 s ago
    assert one.send_if_due(client)
    throughput = sent[-1][1]["throughput"]
    assert 1900 < throughput["samples"] <= 2000, throughput  # 4,000 more in a little over 2 s
    assert throughput["pixels"] == 0


def test_a_jobs_progress_event_costs_two_round_trips_and_goes_out_once_per_interval(client, collector, monkeypatch):
    """A pass sends each active job's progress: the cluster-wide gate and the record in one round
    trip, the task's live workers in another. Another process within the interval sends nothing;
    a forced event (a job that ended) goes out anyway."""
    from hydra.events import Events

    job_id = pi_job(client)
    alice = FakeWorker(collector, "alice")
    alice.hello()
    assert alice.answer(alice.take()) == "accepted"
    sent: list[dict] = []
    one, other = Events("redis://page"), Events("redis://page")
    for events in (one, other):
        monkeypatch.setattr(events, "emit", lambda name, data: sent.append(data))
    trips = round_trips_on(client, monkeypatch)
    one.job_progress(client, job_id)
    assert len(trips) <= 2, trips
    assert len(sent) == 1 and sent[0]["job"] == job_id and sent[0]["workers"] == 1, "alice took part"
    assert sent[0]["state"] == "running" and "detail" not in sent[0], "alice's worker runs pi"
    other.job_progress(client, job_id)
    assert len(sent) == 1, "the gate: sent moments ago by another process"
    other.job_progress(client, job_id, force=True)
    assert len(sent) == 2


def test_made_up_tasks_and_zones_in_hellos_never_grow_the_counts_or_the_summary(client, collector):
    """Hellos are untrusted: a volunteer whose workers say hello again and again, each time with a
    new zone and 63 tasks nobody installed, leaves in ``hydra:counts`` only what its live workers
    are counted under (the summary reads it whole once a second), and the page's summary names at
    most SHOWN_GROUPS zones, however many the live workers name."""
    from hydra.workers import SHOWN_GROUPS, worker_summary

    FakeWorker(collector, "alice").hello()
    made_up = {f"made-up-{i}": "1" for i in range(63)} | {"pi": "2"}
    workers = [FakeWorker(collector, "mallory", f"w{i}", tasks=made_up) for i in range(40)]
    for round_ in range(5):
        for i, worker in enumerate(workers):
            hello = {"t": "hello", "w": worker.wid, "tasks": made_up, "device": "cpu", "zone": f"z{round_}-{i}"}
            assert worker.send(hello) == "hello"
    counts = {k.decode(): int(v) for k, v in client.hgetall(keys.COUNTS).items()}
    assert counts == {
        "device:cpu": 41,
        "zone:?": 1,
        **{f"zone:z4-{i}": 1 for i in range(40)},
        "task:pi": 41,
        "task:mandelbrot": 1,
        "version:pi@1": 1,
        "version:pi@2": 40,
        "version:mandelbrot@1": 1,
    }
    summary = worker_summary(client)
    assert summary["by_task"] == {"pi": 41, "mandelbrot": 1}
    assert len(summary["by_zone"]) == SHOWN_GROUPS + 1 and sum(summary["by_zone"].values()) == 41
    assert summary["by_zone"][f"other ({41 - SHOWN_GROUPS})"] == 41 - SHOWN_GROUPS
    for worker in workers:
        collector.gone(worker.name, "left")
    counts = {k.decode(): int(v) for k, v in client.hgetall(keys.COUNTS).items()}
    assert counts == {
        "device:cpu": 1,
        "zone:?": 1,
        "task:pi": 1,
        "task:mandelbrot": 1,
        "version:pi@1": 1,
        "version:mandelbrot@1": 1,
    }


def test_the_capacity_by_zone_is_kept_as_workers_join_speed_up_and_leave(client, collector):
    """Carbon-aware dispatch weighs each zone's measured capacity. The collector keeps it as totals
    (one read, whatever the number of workers) that always equal the measured rates of the live
    workers summed by zone; a zone whose last worker left has no total left behind."""
    from hydra.carbon.gate import CarbonGate

    pi_job(client, samples=400 * BLOCK)
    zones = {"a/w1": "NO", "a/w2": "NO", "b/w1": "PL", "c/w1": ""}
    workers = {name: FakeWorker(collector, *keys.split_worker(name)) for name in zones}

    def hello(name: str) -> None:
        message = {"t": "hello", "w": workers[name].wid, "tasks": {"pi": "1"}, "device": "cpu", "zone": zones[name]}
        assert workers[name].send(message) == "hello"

    def by_zone() -> dict[str, float]:
        live = {n.decode() for n in client.zrange(keys.LIVE, 0, -1)}
        sums: dict[str, float] = {}
        for name, rate in client.zrange(keys.rates("pi"), 0, -1, withscores=True):
            assert name.decode() in live
            sums[zones[name.decode()]] = sums.get(zones[name.decode()], 0.0) + rate
        return sums

    def kept() -> dict[str, float]:
        totals = {}
        for field, value in client.hgetall(keys.COUNTS).items():
            if parsed := keys.parse_zone_rate(field.decode()):
                totals[parsed[0]] = float(value)
        return totals

    for name in zones:
        hello(name)
    for round_ in range(4):
        for worker in workers.values():
            if chunk := worker.take():
                worker.answer(chunk)
        if round_ == 1:
            collector.gone("b/w1", "left")  # PL's only worker
            zones["a/w2"] = "SE"
            hello("a/w2")  # says hello again from another zone: its volunteer's last speed comes along
        expected = by_zone()
        assert expected and kept().keys() == expected.keys(), (kept(), expected)
        for zone, total in expected.items():
            assert kept()[zone] == pytest.approx(total, rel=1e-9)
    assert "PL" not in kept() and "SE" in kept()
    assert CarbonGate(client).pool("pi", time.time()).capacity == pytest.approx(kept())
    before = kept()
    client.hdel(keys.COUNTS, *(keys.zone_rate(zone, "pi") for zone in before))  # a Redis from before them
    collector.total_zone_rates()  # what a monitor does at start
    assert kept() == pytest.approx(before)
    client.hset(keys.COUNTS, keys.zone_rate("NO", "pi"), 1.0)
    collector.total_zone_rates()  # kept already: left as they are
    assert kept()["NO"] == 1.0


def test_a_worker_whose_record_holds_a_garbage_rate_still_gives_its_work_back(client, collector):
    job_id = pi_job(client)
    worker = FakeWorker(collector, "alice")
    worker.hello()
    client.hset(keys.worker(worker.name), "rate:pi", "garbage")  # written by hand, or by another program
    assert collector.gone(worker.name, "left") >= 1
    assert client.zcard(keys.pending(job_id)) >= 1 and client.scard(keys.held(worker.name)) == 0
    assert client.hget(keys.COUNTS, "task:pi") is None, "counted out all the same"
