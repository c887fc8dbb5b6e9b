"""Issue 13's attack suite: a volunteer's credential runs its own chunks and can touch nothing else.

Every test plays an attacker holding one volunteer URL from ``hydra volunteer add`` against a
deployment set up as the README says (Redis 7 with the project's redis.conf and a password, a
monitor, honest volunteers running ``rq worker hydra`` with Hydra's worker class), and asserts both
that the attack fails and that the honest job still ends with the exact result of the kernel.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rq import Queue

from hydra import keys, ledger, scripts
from hydra.collector import MAX_MESSAGE, Collector
from hydra.errors import InvalidInput
from hydra.local import RedisServer, spawn, stop_process
from hydra.queue import SubmitOptions, cancel, read_job, submit
from hydra.settings import Settings
from hydra.tasks import TASKS
from hydra.tasks.pi.kernel import BLOCK
from hydra.worker import Volunteer
from tests.attack_helpers import (
    PASSWORD,
    REDIS7,
    HandWorker,
    cut_off,
    deployment,
    redis7_handshake_gap,
    refused_for,
    wait_gone,
)
from tests.conftest import ROOT, run_cli, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(REDIS7 is None, reason="needs a Redis 7 redis-server")]

SAMPLES = 160 * BLOCK  # 10 chunks of 16 blocks (about 0.2 s each)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One deployment for the tests that do not sanction honest volunteers: alice and bob run workers."""
    with deployment(tmp_path_factory.mktemp("site")) as made:
        made.honest_worker("alice")
        made.honest_worker("bob")
        made.wait_for_workers_of("alice")
        made.wait_for_workers_of("bob")
        yield made


def refused(attacker: redis_lib.Redis, commands: list[tuple]) -> list[str]:
    """Run each command as the attacker; return those that were NOT refused by the ACL."""
    allowed = []
    for command in commands:
        try:
            reply = attacker.execute_command(*command)
        except redis_lib.exceptions.NoPermissionError:
            continue
        except redis_lib.ResponseError as exc:
            if "NOPERM" in str(exc) or "no permissions" in str(exc) or "command not allowed" in str(exc):
                continue  # the last: DEBUG is off for every client, before any ACL check
            allowed.append(f"{command[:3]!r} -> error {exc}")
            continue
        allowed.append(f"{command[:3]!r} -> {str(reply)[:80]}")
    return allowed


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


# -- setup -------------------------------------------------------------------------------------------


def test_hydra_volunteer_add_works_on_redis_7_0(tmp_path):
    """`hydra volunteer add` on the Redis 7 of this machine (Debian's 7.0): every other test needs it."""
    server = RedisServer(tmp_path, config_file=ROOT / "redis.conf", extra=["--requirepass", PASSWORD], binary=REDIS7)
    server.start()
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        added = run_cli("--redis-url", url, "volunteer", "add", "alice")
        assert added.returncode == 0, added.stderr
        volunteer = redis_lib.Redis.from_url(added.stdout.strip())
        assert volunteer.execute_command("ACL", "WHOAMI") == b"volunteer-alice"
        volunteer.close()
    finally:
        server.stop()


# -- forged results ------------------------------------------------------------------------------------


def test_forged_results_cannot_be_written_by_any_command(site):
    job_id = site.submit_pi(SAMPLES, 11, verify="auto")
    attacker = site.attacker("mallory")
    me, honest = "volunteer-mallory", site.workers_of("alice")[0]
    job = keys.job(job_id)
    accept_args = [*scripts.job_script_keys(job_id), keys.held(f"{me}/x"), keys.vouched(me)]
    commands = [
        ("HSET", job, "state", "done", "sum:inside", 0),
        ("HINCRBY", job, "units_done", 160),
        ("HGET", job, "salt"),
        ("HGETALL", job),
        ("EVALSHA", sha1(scripts.ACCEPT), len(accept_args), *accept_args, job_id, 0, 1, f"{me}/x", me, 0, "d", ""),
        ("EVAL", scripts.ACCEPT, len(accept_args), *accept_args, job_id, 0, 1, f"{me}/x", me, 0, "d", ""),
        ("SCRIPT", "LOAD", "return 1"),
        ("FUNCTION", "LOAD", "#!lua name=evil\nredis.register_function('f', function() return 1 end)"),
        ("FCALL", "f", 0),
        # verify auto's trust counters and verify 2's second opinion
        ("HINCRBY", keys.volunteer(me), "clean", 1000),
        # the speeds a new worker of the volunteer starts at, and the live count chunks stretch by
        ("HSET", keys.volunteer(me), keys.device_rate("cpu", "pi"), 1e15),
        ("ZADD", keys.LIVE, 0, f"{me}/made-up"),
        ("HSET", keys.chunks(job_id), "0", json.dumps({"first": 0, "count": 16, "state": "pending", "attempt": 0})),
        ("SADD", keys.held(f"{me}/x"), keys.assignment(job_id, 0, 1)),
        ("SADD", keys.held(f"{me}/y"), keys.assignment(job_id, 0, 1)),
        # framing an honest volunteer, and escaping or emptying quarantine
        ("RPUSH", keys.outbox("volunteer-alice"), b'{"t":"result","w":"x"}\n'),
        ("SADD", keys.QUARANTINE, "volunteer-alice"),
        ("SREM", keys.QUARANTINE, me),
        ("DEL", keys.QUARANTINE),
        ("RENAME", keys.outbox(me), keys.outbox("volunteer-fresh")),
        ("RENAME", keys.QUARANTINE, "hydra:quarantine-old"),
        ("ZREM", keys.QUARANTINE_UNFINISHED, me),  # its clean-up left unfinished
        ("DEL", keys.QUARANTINE_UNFINISHED),
        ("ACL", "SETUSER", "volunteer-fresh", "on", ">x", "~*", "+@all"),
        ("ACL", "SETUSER", me, "~*", "+@all"),
        ("HSET", keys.worker(honest), "user", me),
        ("RPUSH", keys.LEDGER, '{"kind":"grant","volunteer":"volunteer-mallory","credit":1000000}'),
        # the standings the page shows: the board, its rank by credit and its total
        ("HSET", ledger.BOARD, me, json.dumps({"volunteer": me, "credit": 10**12})),
        ("ZADD", ledger.RANK, 10**12, me),
        ("ZREM", ledger.RANK, "volunteer-alice"),
        ("HINCRBY", ledger.TOTALS, "credit", 10**12),
        # the signer's scripts (one runs any commands under a compare-and-set) and what it folded
        ("EVAL", ledger._WRITE_IF, 1, ledger.STATE, "size", "", 4, "HSET", ledger.BOARD, me, "{}"),
        ("EVALSHA", sha1(ledger._WRITE_IF), 1, ledger.STATE, "size", "", 4, "HSET", ledger.BOARD, me, "{}"),
        ("EVAL", ledger._READ_SLICE, 2, ledger.STATE, ledger.LEDGER, 10),
        ("HSET", ledger.STATE, "size", 0),
        ("RPUSH", ledger.HEADS, "{}"),
        ("APPEND", ledger.level_key(4), b"\0" * 32),
        ("RPUSH", ledger.by_volunteer_key(me), 0),
        # the CO2 totals (a greener footprint than it has) and the counters ACCEPT moves
        ("HSET", job, "co2_mg", 0, "energy_j", 0),
        ("HINCRBY", keys.CARBON_VOLUNTEER, me, -(10**9)),
        ("HSET", keys.CARBON_ZONE, "NO", 0),
        ("HINCRBYFLOAT", keys.CARBON_ZONE_ENERGY, "NO", -1e9),
        ("HSET", keys.CARBON_ZONE_RAPL, "NO", 0),
        ("HSET", keys.CARBON_ZONE_INTENSITY, "NO", 1),
        ("HINCRBY", keys.COUNTS, "done:samples", 10**9),
        # the capacity carbon-aware dispatch sees in a zone, and the live counts the page shows
        ("HINCRBYFLOAT", keys.COUNTS, keys.zone_rate("NO", "pi"), 1e12),
        ("HDEL", keys.COUNTS, "task:pi"),
        ("HINCRBY", keys.worker(f"{me}/x"), "chunks", 10**6),
        ("HINCRBY", keys.worker(honest), "chunks", -1),
        # the gates of the page's events: held for good, the page would show nothing new
        ("SET", keys.SUMMARY_GATE, 1, "PX", 10**9),
        ("SET", keys.emit_gate(job_id), 1, "PX", 10**9),
    ]
    assert refused(attacker, commands) == []
    site.assert_pi_exact(job_id, SAMPLES, 11)
    assert not site.admin.sismember(keys.QUARANTINE, "volunteer-alice")
    assert site.admin.hget(keys.volunteer(me), "clean") is None
    assert site.admin.hget(keys.volunteer(me), keys.device_rate("cpu", "pi")) is None
    attacker.close()


def test_forged_result_messages_are_refused_and_recorded(site):
    """Results pushed by hand for chunks the attacker does hold: impossible sums, blobs, bad types."""
    forger = HandWorker(site.credential("forger"))
    forger.hello()
    # 80 chunks: pending work remains while the forger sends its eight forgeries (a chunk it failed
    # never comes back to it, so it needs fresh ones).
    job_id = site.submit_pi(8 * SAMPLES, 12, max_attempts=50, speculate=False)
    forgeries = [
        ({"inside": 16 * BLOCK + 1}, b"", "out of range"),
        ({"inside": -1}, b"", "out of range"),
        ({"inside": 2**70}, b"", "64-bit"),
        ({"inside": 1.5}, b"", "64-bit"),
        ({"inside": "12"}, b"", "64-bit"),
        ({"inside": 5, "extra": 1}, b"", "exactly"),
        ({}, b"", "exactly"),
        ({"inside": 5}, b"x" * 4096, "blob"),
    ]
    for sums, blob, why in forgeries:
        chunk = forger.next_chunk(job=job_id)
        forger.result(chunk, sums, blob)
        wait_until(lambda w=why: refused_for(site.errors(), forger.user, w), 30, what=f"refusal: {why}")
    site.assert_pi_exact(job_id, 8 * SAMPLES, 12)
    assert site.admin.hget(keys.job_workers(job_id), forger.user) is None
    forger.close()


def test_a_result_for_a_chunk_not_assigned_to_the_attacker_is_refused_and_recorded(site):
    # The victim holds a live assignment (no tail copies, so nobody else answers it first): the forger
    # quotes it exactly, nonce and all, and must still be refused, since it is not the forger's.
    victim = HandWorker(site.credential("victim"))
    victim.hello()
    job_id = site.submit_pi(SAMPLES, 13, max_attempts=50, speculate=False)
    held = victim.next_chunk(job=job_id)
    forger = HandWorker(site.credential("impostor"))
    forger.hello(tasks={})  # gets nothing: every result it sends quotes someone else's assignment
    forger.result(held, {"inside": 0})
    forger.result({**held, "a": int(held["a"]) + 10**6}, {"inside": 0})

    def refusals() -> int:
        return sum(refused_for([e], forger.user, "not assigned") for e in site.errors())

    wait_until(lambda: refusals() == 2, 30, what="both forgeries refused")
    assert refused_for(site.errors(), forger.user, "another's live assignment")
    victim.result(held, {"inside": exact_inside_range(13, held)})  # the real holder still counts
    site.assert_pi_exact(job_id, SAMPLES, 13)
    assert site.admin.hget(keys.job_workers(job_id), victim.user) is not None
    assert site.admin.hget(keys.job_workers(job_id), forger.user) is None
    forger.close()
    victim.close()


# -- jobs held hostage -----------------------------------------------------------------------------------


def test_jobs_cannot_be_held_hostage_by_any_command(site):
    job_id = site.submit_pi(SAMPLES, 21)
    attacker = site.attacker("hostage")
    alice = site.workers_of("alice")[0]
    user, wid = keys.split_worker(alice)
    commands = [
        ("ZADD", keys.DEADLINES, time.time() + 10**8, keys.assignment(job_id, 0, 1)),
        ("DEL", keys.pending(job_id)),
        ("ZREM", keys.ACTIVE, job_id),
        ("DEL", keys.ACTIVE),
        ("HSET", keys.job(job_id), "state", "cancelled"),
        ("EVALSHA", sha1(scripts.END), 13, *scripts.job_script_keys(job_id), job_id, "cancelled", 0, "x"),
        ("EVAL", scripts.END, 13, *scripts.job_script_keys(job_id), job_id, "cancelled", 0, "x"),
        ("LPOP", keys.inbox(user, wid)),
        ("BLPOP", keys.inbox(user, wid), 0.01),
        ("PEXPIRE", keys.alive(user, wid), 1),
        ("DEL", keys.alive(user, wid)),
        # hydra:idle is scored by when a worker may be served (siblings waiting for a probe: ahead)
        ("ZADD", keys.IDLE, time.time() + 10**8, alice),
        ("ZREM", keys.IDLE, alice),
        ("DEL", "rq:queue:hydra"),
        ("SET", "rq:suspended", 1),
    ]
    assert refused(attacker, commands) == []
    site.assert_pi_exact(job_id, SAMPLES, 21)
    attacker.close()


def test_claiming_chunks_and_sitting_on_them_while_heartbeating_holds_nothing_hostage(site):
    sitters = [HandWorker(site.credential("sitter"), f"s{i}") for i in range(4)]
    for sitter in sitters:
        sitter.hello()
    job_id = site.submit_pi(SAMPLES, 22, speculate=False)  # no tail copies: the deadlines must do it
    started = time.monotonic()

    def ended() -> bool:
        for sitter in sitters:  # the attack: keep every heartbeat alive, never answer
            sitter.beat()
            sitter._read_until("none")
        return read_job(site.admin, job_id)["state"] in ("done", "failed", "cancelled")

    wait_until(ended, 120, interval=0.2, what="the job to end despite the sitters")
    print(f"job with 4 chunk-sitting workers ended in {time.monotonic() - started:.1f} s")
    assert any(s.chunks for s in sitters) or site.admin.hget(keys.job(job_id), "requeued"), "the sitters got no work"
    site.assert_pi_exact(job_id, SAMPLES, 22)
    for sitter in sitters:
        sitter.close()


@pytest.mark.parametrize("how", ["error", "bad sums"])
def test_a_volunteer_cannot_fail_someone_elses_job_by_refusing_its_chunks(tmp_path, how):
    """Every chunk it is given comes back as a kernel error (or a refused result): the job must not
    fail for it (attempts are for honest faults, not for one volunteer's say-so). Its own deployment:
    a failed job leaves the honest workers without work (see the test after this one)."""
    with deployment(tmp_path) as site:
        site.honest_worker("alice")
        site.honest_worker("bob")
        site.wait_for_workers_of("alice")
        site.wait_for_workers_of("bob")
        saboteur = HandWorker(site.credential("saboteur"))
        saboteur.hello()
        # The default max_attempts (3); chunks of about a second keep the honest workers busy, so a
        # requeued chunk goes straight back to the saboteur.
        job_id = site.submit_pi(SAMPLES, 23)
        sabotaged, deadline = 0, time.monotonic() + 120
        while read_job(site.admin, job_id)["state"] in ("queued", "running") and time.monotonic() < deadline:
            item = saboteur.redis.blpop([saboteur.inbox], timeout=0.2)
            if item is None:
                continue
            message = json.loads(item[1])
            if message.get("t") != "chunk":
                continue
            sabotaged += 1
            if how == "error":
                header = {"t": "error", "w": saboteur.wid, "job": message["job"], "chunk": message["chunk"]}
                saboteur.send({**header, "a": message["a"], "reason": "RuntimeError: no"})
            else:
                saboteur.result(message, {"inside": -1})
        print(f"{how}: the saboteur sent back {sabotaged} chunk(s)")
        assert sabotaged > 0
        site.assert_pi_exact(job_id, SAMPLES, 23)
        saboteur.close()


def test_workers_whose_chunks_were_taken_away_get_work_again(tmp_path):
    """A job ends (here: cancelled by the operator) while honest workers hold its chunks: their late
    results are stale, and they must still be given the next job's chunks."""
    with deployment(tmp_path) as site:
        site.honest_worker("alice")
        site.wait_for_workers_of("alice")
        (alice,) = site.workers_of("alice")
        first = site.submit_pi(10 * SAMPLES, 24)
        wait_until(lambda: site.admin.scard(keys.held(alice)) == 2, 30, what="alice holding two chunks")
        assert cancel(site.admin, first)
        second = site.submit_pi(SAMPLES, 25)
        site.assert_pi_exact(second, SAMPLES, 25, timeout=60)


# -- the cluster stopped -----------------------------------------------------------------------------------


def test_the_cluster_cannot_be_stopped_by_any_command(site):
    job_id = site.submit_pi(SAMPLES, 31)
    attacker = site.attacker("stopper")
    me = "volunteer-stopper"
    commands = [
        ("PUBLISH", "rq:pubsub:some-worker", json.dumps({"command": "shutdown"})),
        ("PUBLISH", "hydra-socketio", "fake event"),
        ("SPUBLISH", "hydra-socketio", "fake event"),
        ("SUBSCRIBE", "__keyevent@0__:rpush"),
        ("PSUBSCRIBE", "*"),
        ("EVAL", "while true do end", 0),
        ("EVAL", "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1e6) end", 0),
        ("EVAL_RO", "while true do end", 0),
        ("SCRIPT", "KILL"),
        ("DEBUG", "SLEEP", 5),
        ("CLIENT", "PAUSE", 100000),
        ("CLIENT", "KILL", "TYPE", "normal"),
        ("CONFIG", "SET", "maxmemory", 1),
        ("CONFIG", "SET", "notify-keyspace-events", ""),
        ("FLUSHALL",),
        ("SHUTDOWN", "NOSAVE"),
        ("SETRANGE", keys.outbox(me), 400_000_000, "x"),
        ("SET", keys.alive(me, "x"), "x" * 1000),
        ("LPUSH", keys.outbox(me), "x"),
        ("APPEND", keys.outbox(me), "x"),
        ("ZADD", keys.DEADLINES, 0, "not-an-assignment"),
        ("ZADD", keys.DEADLINES, 0, "abc:def:ghi"),
        ("BGREWRITEAOF",),
        ("MONITOR",),
        ("SWAPDB", 0, 1),
    ]
    assert refused(attacker, commands) == []
    site.assert_pi_exact(job_id, SAMPLES, 31)
    assert site.monitor.poll() is None
    attacker.close()


def test_a_flood_of_writes_cuts_the_volunteer_off_within_seconds(site):
    job_id = site.submit_pi(SAMPLES, 32)
    flooder = site.attacker("flooder")
    user = "volunteer-flooder"
    pushed, started, stopped_by = 0, time.monotonic(), None
    while time.monotonic() - started < 30:
        try:
            pipe = flooder.pipeline(transaction=False)
            for _ in range(200):
                pipe.rpush(keys.outbox(user), b"x" * 1000)
            pipe.execute()
            pushed += 200
        except (redis_lib.ConnectionError, redis_lib.AuthenticationError, redis_lib.ResponseError) as exc:
            stopped_by = exc
            break
    seconds = time.monotonic() - started
    print(f"flooding volunteer cut off after {seconds:.2f} s and {pushed} messages ({type(stopped_by).__name__})")
    assert stopped_by is not None, f"still pushing after {seconds:.0f} s"
    assert seconds < 5
    assert cut_off(site.admin, user)
    assert (
        "flood" in site.admin.hget(keys.CUTOFF, user).decode()
        or "refused" in site.admin.hget(keys.CUTOFF, user).decode()
    )
    with pytest.raises((redis_lib.AuthenticationError, redis_lib.ConnectionError)):
        redis_lib.Redis.from_url(site.credential("flooder")).rpush(keys.outbox(user), b"x")
    wait_until(lambda: site.admin.llen(keys.outbox(user)) == 0, 10, what="its outbox emptied")
    site.assert_pi_exact(job_id, SAMPLES, 32)


def test_a_message_larger_than_any_result_cuts_the_volunteer_off(site):
    job_id = site.submit_pi(SAMPLES, 33)
    big = HandWorker(site.credential("bigmouth"))
    big.hello()
    chunk = big.next_chunk(job=job_id)
    big.result(chunk, {"inside": 0}, b"\0" * (MAX_MESSAGE + 1))
    wait_until(lambda: cut_off(site.admin, big.user), 20, what="the cut-off")
    assert site.admin.llen(big.outbox) == 0
    site.assert_pi_exact(job_id, SAMPLES, 33)
    big.close()


def test_a_hello_flood_of_made_up_workers_is_bounded(tmp_path):
    """Each hello makes the trusted side create keys and hand out chunks; a volunteer must not grow
    them without bound (its own deployment: the made-up workers would starve the other tests)."""
    with deployment(tmp_path) as site:
        site.honest_worker("alice")
        site.wait_for_workers_of("alice")
        user = "volunteer-hydra-heads"
        heads = HandWorker(site.credential("hydra-heads"))
        before = int(site.admin.info("memory")["used_memory"])
        sent = 0
        for batch in range(10):
            pipe = heads.redis.pipeline(transaction=False)
            for i in range(200):
                hello = {"t": "hello", "w": f"h{batch}-{i}", "tasks": {"pi": "1"}, "device": "cpu", "zone": ""}
                pipe.rpush(heads.outbox, json.dumps(hello).encode() + b"\n")
            try:
                pipe.execute()
            except (redis_lib.ConnectionError, redis_lib.AuthenticationError, redis_lib.ResponseError):
                break
            sent += 200
            wait_until(lambda: site.admin.llen(heads.outbox) == 0, 60, what="the hellos handled")
        grown = int(site.admin.info("memory")["used_memory"]) - before
        workers = int(site.admin.scard(keys.user_workers(user)))
        print(f"{sent} hellos: {workers} live workers of one volunteer, Redis grew by {grown / 1e6:.1f} MB")
        job_id = site.submit_pi(SAMPLES, 35)
        site.assert_pi_exact(job_id, SAMPLES, 35)
        assert cut_off(site.admin, user) or workers <= 1000
        heads.close()


def test_malformed_records_crash_nothing(site):
    """Hostile messages and corrupt deadline entries: monitor alive, `hydra status` and the page work."""
    from hydra_web.app import create_app

    job_id = site.submit_pi(SAMPLES, 34, max_attempts=50)
    vandal = HandWorker(site.credential("vandal"))
    vandal.hello()
    chunk = vandal.next_chunk(job=job_id)
    vandal.result(chunk, {"inside": 10**40})
    for raw in (
        b"",
        b"\n",
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"\n",
        b'{"t":"result","w":"w1","job":"' + job_id.encode() + b'","chunk":0,"a":1,"sums":{"inside":NaN}}\n',
        b'{"t":"result","w":"w1","job":null,"chunk":[],"a":{},"sums":[]}\n',
        b'{"t":"hello","w":"w2","tasks":{"pi":{"x":1}}}\n',
        b'{"t":"hello","w":"../../etc","tasks":{}}\n',
        b'{"t":"error","w":"w1","job":"' + job_id.encode() + b'","chunk":-1,"a":1e308}\n',
        b'{"t":"bye","w":"' + b"w" * 1000 + b'"}\n',
        b'{"t":' + b"1" * 5000 + b"}\n",
    ):
        vandal.push(raw)
    # Corrupt entries in the deadline set (only the operator can write there): set aside, not fatal.
    site.admin.zadd(keys.DEADLINES, {"garbage": 0, "a:b": 0, "x:1:2:3": 0, "000000000000:zz:1": 0, f"{job_id}:0:x": 0})
    wait_until(lambda: site.admin.llen(vandal.outbox) == 0, 20, what="the vandal's messages handled")
    wait_until(lambda: site.admin.zscore(keys.DEADLINES, "garbage") is None, 20, what="the bad deadline dropped")
    assert site.monitor.poll() is None, "the monitor exited"
    site.assert_pi_exact(job_id, SAMPLES, 34)
    for args in (["status"], ["status", job_id], ["status", "--json"], ["workers"], ["volunteer", "list"]):
        done = run_cli("--redis-url", site.url, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    page = create_app({"REDIS_URL": site.url, "MESSAGE_QUEUE": False}).test_client()
    assert page.get("/api/snapshot").status_code == 200
    assert page.get(f"/api/jobs/{job_id}").status_code == 200
    assert site.monitor.poll() is None
    vandal.close()


# -- other volunteers' machines ------------------------------------------------------------------------------


def test_nothing_can_be_sent_to_other_volunteers_workers(site):
    job_id = site.submit_pi(SAMPLES, 41)
    attacker = site.attacker("sender")
    user, wid = keys.split_worker(site.workers_of("alice")[0])
    evil = {
        "t": "chunk",
        "job": job_id,
        "chunk": 999,
        "a": 1,
        "task": "mandelbrot",
        "version": "1",
        "params": {"width": 65536, "height": 65536, "max_iter": 10**7, "center": [0, 0], "span": 3.0},
        "seed": 0,
        "first": 0,
        "count": 65536,
        "on_success": "os.system",
    }
    commands = [
        ("RPUSH", keys.inbox(user, wid), json.dumps(evil)),
        ("RPUSH", keys.inbox("volunteer-sender", "w1"), json.dumps(evil)),
        ("RPUSH", keys.inbox(user, wid), json.dumps({"t": "stop", "reason": "gotcha"})),
        ("RPUSH", "rq:queue:hydra", "x"),
        ("HSET", "rq:job:x", "data", "cos\nsystem\n(S'touch /tmp/x'\ntR."),
        ("PUBLISH", f"rq:pubsub:{wid}", json.dumps({"command": "kill-horse"})),
    ]
    assert refused(attacker, commands) == []
    site.assert_pi_exact(job_id, SAMPLES, 41)
    assert site.workers_of("alice"), "alice's worker stopped"
    attacker.close()


def test_a_plain_rq_worker_with_a_volunteer_credential_runs_nothing(site, tmp_path):
    """`rq worker hydra` without the worker class: whatever sits in rq's queue, it runs nothing."""
    from pathlib import Path as P

    marker = tmp_path / "pickle-ran"
    Queue("hydra", connection=site.admin).enqueue_call(P.touch, args=(marker,))  # as if planted
    log = tmp_path / "plain-worker.log"
    env = {"RQ_REDIS_URL": site.credential("plain"), "RQ_WORKER_CLASS": ""}
    rq = Path(sys.executable).parent / "rq"
    command = [str(rq)] if rq.exists() else [sys.executable, "-m", "rq.cli"]
    proc = spawn([*command, "worker", "hydra", "--burst"], env=env, log_path=log)
    try:
        code = wait_gone(proc, 60)
    finally:
        stop_process(proc)
    text = log.read_text()
    assert code != 0, text
    assert "NOPERM" in text or "permission" in text.lower(), text
    assert not marker.exists()
    assert site.admin.llen("rq:queue:hydra") == 1
    site.admin.delete("rq:queue:hydra")


def test_the_worker_rechecks_descriptors_and_caps_memory_and_time(site):
    """A descriptor is written by the trusted side only; still, a worker refuses ones no honest
    monitor writes: chunks over its memory cap, or of days of work."""
    volunteer = Volunteer(redis_lib.Redis.from_url(site.credential("careful")), "c1", device="cpu")
    base = {"t": "chunk", "job": "0123456789ab", "chunk": 0, "a": 1, "seed": 0, "first": 0}
    huge = {
        **base,
        "task": "mandelbrot",
        "version": "1",
        "params": TASKS["mandelbrot"].parse({"width": 65536, "height": 65536, "max_iter": 10**7}),
        "count": 65536,
    }
    with pytest.raises(InvalidInput, match="memory"):
        volunteer.check(huge)
    pi_params = TASKS["pi"].parse({"samples": 10**16, "seed": 0})
    forever = {**base, "task": "pi", "version": "1", "params": pi_params, "count": 10**16 // BLOCK}
    with pytest.raises(InvalidInput):
        volunteer.check(forever)  # 10**16 samples: days on one core
    with pytest.raises(InvalidInput):
        volunteer.check({**base, "task": "pi", "version": "0", "params": pi_params, "count": 1})
    with pytest.raises(InvalidInput):
        volunteer.check({**base, "task": "pi", "version": "1", "params": {**pi_params, "x": 1}, "count": 1})
    volunteer.redis.close()


def test_revoking_a_volunteer_stops_its_workers_with_one_line_and_requeues_its_chunks(site):
    slow = {"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker", "HYDRA_THROTTLE": "0.05"}
    proc = site.honest_worker("leaver", slow)
    (name,) = site.wait_for_workers_of("leaver")
    user = "volunteer-leaver"
    job_id = site.submit_pi(SAMPLES, 51)
    wait_until(lambda: site.admin.scard(keys.held(name)), 30, what="the leaver holding a chunk")
    removed = run_cli("--redis-url", site.url, "volunteer", "remove", "leaver")
    assert removed.returncode == 0, removed.stderr
    assert wait_gone(proc, 30) == 3
    log = (site.cluster.directory / f"worker-{site.cluster.workers.index(proc)}.log").read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert "Traceback" not in log, log
    assert "revoked" in lines[-1], log
    assert site.admin.scard(keys.held(name)) == 0
    assert site.admin.acl_getuser(user) is None
    assert site.admin.keys(f"hydra:v:{user}:*") == []
    assert not site.admin.sismember(keys.VOLUNTEERS, "leaver")
    site.assert_pi_exact(job_id, SAMPLES, 51)  # results it gave before it was revoked count; nothing after


# -- privacy ------------------------------------------------------------------------------------------


def test_a_volunteer_reads_nothing_about_others(site):
    attacker = site.attacker("snoop")
    alice = site.workers_of("alice")[0]
    user, wid = keys.split_worker(alice)
    commands = [
        ("KEYS", "*"),
        ("SCAN", 0),
        ("RANDOMKEY",),
        ("DBSIZE",),
        ("INFO",),
        ("INFO", "clients"),
        ("CLIENT", "LIST"),
        ("CLIENT", "INFO"),
        ("ACL", "LIST"),
        ("ACL", "USERS"),
        ("ACL", "GETUSER", user),
        ("ACL", "LOG"),
        ("CONFIG", "GET", "*"),
        ("SLOWLOG", "GET"),
        ("PUBSUB", "CHANNELS"),
        ("MEMORY", "USAGE", keys.worker(alice)),
        ("OBJECT", "ENCODING", keys.worker(alice)),
        ("TYPE", keys.worker(alice)),
        ("EXISTS", keys.worker(alice)),
        ("HGETALL", keys.worker(alice)),
        ("SMEMBERS", keys.VOLUNTEERS),
        ("ZRANGE", keys.LIVE, 0, -1),
        ("HGETALL", keys.COUNTS),
        ("LRANGE", keys.ERRORS, 0, -1),
        ("LLEN", keys.outbox(user)),
        ("LLEN", keys.inbox(user, wid)),
        ("SMEMBERS", keys.user_workers(user)),
        ("DUMP", keys.worker(alice)),
        ("SORT_RO", keys.LIVE, "ALPHA"),
    ]
    assert refused(attacker, commands) == []
    attacker.close()
    # What the trusted side tells it names nobody else.
    snoop = HandWorker(site.credential("snoop"))
    snoop.hello()
    job_id = site.submit_pi(SAMPLES, 61)
    chunk = snoop.next_chunk(job=job_id)
    text = json.dumps(chunk)
    assert "alice" not in text and "bob" not in text and "host" not in text
    snoop.result(chunk, {"inside": exact_inside_range(61, chunk)})
    site.assert_pi_exact(job_id, SAMPLES, 61)
    snoop.close()


def exact_inside_range(seed: int, chunk: dict) -> int:
    from hydra.tasks.pi.kernel import count_inside_samples

    start = chunk["first"] * BLOCK
    return count_inside_samples(seed, start, min(chunk["count"] * BLOCK, SAMPLES - start))


# -- decompression bomb ----------------------------------------------------------------------------------


def _bomb(inflated: int) -> bytes:
    squeeze = zlib.compressobj(9)
    zeros = b"\0" * (1 << 20)
    out = [squeeze.compress(zeros) for _ in range(inflated >> 20)]
    return b"".join(out) + squeeze.flush()


def test_a_decompression_bomb_in_a_mandelbrot_stripe_is_refused(site, tmp_path):
    from hydra.outputs import job_blobs
    from hydra.tasks.mandelbrot import MandelbrotTask
    from hydra.tasks.mandelbrot.image import assemble

    task = MandelbrotTask()
    params = task.parse({"width": 256, "height": 32, "max_iter": 300})
    bombs = ((_bomb(512 << 20), "over the chunk's bound"), (_bomb(2 << 20), "does not hold its rows"))
    # No tail copies: the honest workers must not finish the bomber's stripes before it answers.
    options = SubmitOptions(chunk_units=4, max_attempts=50, speculate=False)
    bomber = HandWorker(site.credential("bomber"))
    bomber.hello()
    job_id = submit(site.admin, "mandelbrot", params, options)
    for payload, why in bombs:
        chunk = bomber.next_chunk(job=job_id)
        header = struct.pack("<QQ", chunk["first"], chunk["count"])
        plausible = {"iterations": chunk["count"] * params["width"] * 5}  # sums that pass: only the blob is wrong
        bomber.result(chunk, plausible, header + payload)
        wait_until(lambda w=why: refused_for(site.errors(), bomber.user, w), 30, what=f"refusal: {why}")
    from hydra.queue import wait_for_job

    assert wait_for_job(site.admin, job_id, timeout=120)["state"] == "done"
    whole = task.run(params, b"", 0, 0, params["height"])
    assert int(site.admin.hget(keys.job(job_id), "sum:iterations")) == whole.sums["iterations"]
    assemble(params, job_blobs(site.admin, job_id), counts_path=tmp_path / "counts.npy")
    assert np.array_equal(np.load(tmp_path / "counts.npy"), whole.array)
    bomber.close()


# -- verification against sybils -----------------------------------------------------------------------


CHEAT = {"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker", "HYDRA_FAULT": "cheat"}


def _chunk_results(admin: redis_lib.Redis, job_id: str) -> list[dict]:
    return [r for r in (json.loads(v).get("results") for v in admin.hvals(keys.chunks(job_id))) if r]


def test_a_cheating_volunteer_with_two_workers_never_confirms_itself(tmp_path):
    samples, seed = 64 * BLOCK, 71
    with deployment(tmp_path) as site:
        cheaters = [site.honest_worker("cheater", CHEAT) for _ in range(2)]
        site.wait_for_workers_of("cheater", 2)
        job_id = site.submit_pi(samples, seed, verify="2", max_attempts=50)
        # Every chunk gets one result from the cheater, and none a second from the same volunteer.
        wait_until(lambda: len(_chunk_results(site.admin, job_id)) == 4, 60, what="the cheater's results")
        assert all(set(r) == {"volunteer-cheater"} for r in _chunk_results(site.admin, job_id))
        assert read_job(site.admin, job_id)["units_done"] == 0
        site.honest_worker("alice")
        site.honest_worker("bob")
        site.assert_pi_exact(job_id, samples, seed)
        assert {q.decode() for q in site.admin.smembers(keys.QUARANTINE)} == {"volunteer-cheater"}
        for proc in cheaters:
            assert wait_gone(proc, 30) == 3
        assert site.admin.hget(keys.job_workers(job_id), "volunteer-cheater") is None


def test_a_disagreement_between_two_volunteers_goes_to_a_third(tmp_path):
    samples, seed = 64 * BLOCK, 72
    with deployment(tmp_path) as site:
        site.honest_worker("cheater", CHEAT)
        site.honest_worker("alice")
        site.wait_for_workers_of("cheater")
        site.wait_for_workers_of("alice")
        job_id = site.submit_pi(samples, seed, verify="2", max_attempts=50)
        wait_until(lambda: any(len(r) == 2 for r in _chunk_results(site.admin, job_id)), 60, what="a 1-against-1 split")
        assert read_job(site.admin, job_id)["units_done"] == 0  # neither side wins on its own
        assert not site.admin.smembers(keys.QUARANTINE)
        site.honest_worker("bob")
        site.assert_pi_exact(job_id, samples, seed)
        assert {q.decode() for q in site.admin.smembers(keys.QUARANTINE)} == {"volunteer-cheater"}
        assert site.admin.hget(keys.job_workers(job_id), "volunteer-cheater") is None
        granted = {
            entry["volunteer"]
            for entry in map(json.loads, site.admin.lrange(keys.LEDGER, 0, -1))
            if entry["job"] == job_id and entry["kind"] == "grant"
        }
        assert granted == {"volunteer-alice", "volunteer-bob"}


# -- credentials last ---------------------------------------------------------------------------------------


class ComposeRedis(RedisServer):
    """Redis started by the compose file's own redis command (its ACL file in ``directory``)."""

    def start(self, timeout: float = 10.0) -> ComposeRedis:
        import shlex

        import yaml

        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        script = compose["services"]["redis"]["command"][-1]
        script = script.replace("$$", "$").replace("/usr/local/etc/redis/redis.conf", str(ROOT / "redis.conf"))
        script = script.replace("/data/", f"{self.directory}/").replace("exec redis-server", f"exec {REDIS7}")
        script += f" --port {self.port} --bind 127.0.0.1 --dir {shlex.quote(str(self.directory))} --appendonly no"
        self.proc = spawn(["sh", "-c", script], env={"REDIS_PASSWORD": PASSWORD})
        wait_until(lambda: _answers(self.port), timeout, what="the compose Redis")
        return self


def _answers(port: int) -> bool:
    try:
        redis_lib.Redis(port=port, password=PASSWORD, socket_connect_timeout=0.2).ping()
        return True
    except redis_lib.RedisError:
        return False


def _acl_server(directory: Path) -> RedisServer:
    return ComposeRedis(directory)


def test_volunteer_users_survive_a_redis_restart_with_an_aclfile(tmp_path, monkeypatch):
    from hydra import volunteers

    (tmp_path / "users.acl").touch()
    server = _acl_server(tmp_path).start()
    try:
        admin = redis_lib.Redis(port=server.port, password=PASSWORD)
        gap = redis7_handshake_gap(admin)
        monkeypatch.setattr(volunteers, "HANDSHAKE", [r for r in volunteers.HANDSHAKE if r not in gap])
        url = volunteers.add_volunteer(admin, "alice", f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0")
        admin.close()
        assert "volunteer-alice" in (tmp_path / "users.acl").read_text()
        port = server.port
        server.stop()
        server = _acl_server(tmp_path)
        server.port = port
        server.start()
        volunteer = redis_lib.Redis.from_url(url)
        assert volunteer.execute_command("ACL", "WHOAMI") == b"volunteer-alice"
        assert volunteer.rpush(keys.outbox("volunteer-alice"), b"x") == 1
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            volunteer.hgetall(keys.job("0123456789ab"))
        volunteer.close()
    finally:
        server.stop()


def test_an_aclfile_keeps_the_operator_password(tmp_path):
    """The compose file's Redis keeps users in an ACL file (where `requirepass` would be ignored): the
    default user must still need the password, on the first start and after a restart."""
    server = _acl_server(tmp_path).start()
    try:
        for restart in (False, True):
            if restart:
                server.stop()
                server.start()
            anonymous = redis_lib.Redis(port=server.port)
            with pytest.raises((redis_lib.AuthenticationError, redis_lib.ResponseError)):
                anonymous.set("hydra:job:x", "owned")
            anonymous.close()
    finally:
        server.stop()


# -- fuzzing the collector -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("fuzz"), binary=REDIS7).start()
    client = redis_lib.Redis.from_url(server.url)
    yield client
    client.close()
    server.stop()


_ids = st.one_of(st.integers(-5, 40), st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none())
_sums = st.one_of(
    st.dictionaries(st.sampled_from(["inside", "iterations", "x"]), _ids, max_size=3),
    st.lists(st.integers(), max_size=3),
    st.none(),
    st.text(max_size=10),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_the_collector_never_raises_nor_changes_a_job_except_by_accepting(fuzz_redis, data):
    redis = fuzz_redis
    user = "volunteer-fuzz"
    job_id = redis.get("fuzz:job")
    if job_id is None or read_job(redis, job_id.decode())["state"] not in ("queued", "running"):
        job_id = submit(
            redis, "pi", {"samples": 64 * BLOCK, "seed": 5}, SubmitOptions(chunk_units=4, max_attempts=10**6)
        )
        redis.set("fuzz:job", job_id)
    else:
        job_id = job_id.decode()
    collector = Collector(redis, Settings.from_env({}))
    # Draw the same things whatever the state of Redis (Hypothesis replays draws), then use them.
    quote, index, sums = data.draw(st.booleans()), data.draw(st.integers(0, 7)), data.draw(_sums)
    header = data.draw(
        st.one_of(
            st.fixed_dictionaries(
                {
                    "t": st.sampled_from(["hello", "result", "error", "bye", "x"]),
                    "w": st.one_of(st.just("w1"), st.text(max_size=8)),
                    "job": st.one_of(st.just(job_id), st.text(max_size=13)),
                    "chunk": _ids,
                    "a": _ids,
                    "sums": _sums,
                    "tasks": st.one_of(st.just({"pi": "1"}), _json),
                    "reason": _json,
                }
            ),
            _json,
        )
    )
    held = sorted(m.decode() for m in redis.smembers(keys.held(f"{user}/w1")))
    if quote and held:  # a result for an assignment the worker does hold, with any sums
        q_job, q_chunk, q_nonce = keys.parse_assignment(held[index % len(held)])
        header = {"t": "result", "w": "w1", "job": q_job, "chunk": q_chunk, "a": q_nonce, "sums": sums}
    try:
        head = json.dumps(header).encode()
    except (ValueError, TypeError):
        head = b"{}"
    raw = data.draw(st.one_of(st.just(head + b"\n"), st.binary(max_size=200), st.just(head + b"\n" + b"\0" * 300)))
    before = read_job(redis, job_id)
    outcome = collector.handle(user, raw)
    assert isinstance(outcome, str)
    event(outcome)
    after = read_job(redis, job_id)
    if not outcome.startswith("accepted") and outcome != "awaiting confirmation":
        for field in ("units_done", "sum:inside"):
            assert after[field] == before[field], (outcome, raw[:200])
        assert after["state"] in ("queued", "running"), (outcome, after.get("error"))
    if redis.hget(keys.CUTOFF, user):  # let the next examples speak again
        redis.hdel(keys.CUTOFF, user)
        redis.execute_command("ACL", "SETUSER", user, "on")


def test_revoked_and_cut_off_volunteers_do_not_resurface(site):
    """After a cut-off, a hello sent by a new connection with the old URL is impossible; a rotated
    credential (`hydra volunteer add --rotate`) is a fresh start."""
    user = "volunteer-comeback"
    came = HandWorker(site.credential("comeback"))
    came.hello()
    for _ in range(25):
        try:
            came.push(b"not json")
        except (redis_lib.AuthenticationError, redis_lib.ConnectionError):
            break  # cut off before all 25 were pushed: the monitor was quick
    # The cut-off disables the user first and stops its workers last: wait for the last step (the
    # test read the workers between the two on a slow machine).
    wait_until(
        lambda: cut_off(site.admin, user) and site.admin.scard(keys.user_workers(user)) == 0,
        20,
        what="the cut-off after refused messages, its workers stopped",
    )
    with pytest.raises((redis_lib.AuthenticationError, redis_lib.ConnectionError)):
        HandWorker(site.credential("comeback"))
    assert re.search("refused messages", site.admin.hget(keys.CUTOFF, user).decode())
    came.close()  # its heartbeat thread would otherwise outlive the test
