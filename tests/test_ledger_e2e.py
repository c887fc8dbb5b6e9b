"""Credit end to end on the real core: grants come only from accepted work, exactly once.

The core's ACCEPT and REDO scripts append the entries; these tests run real volunteers (one ACL
user each) and then fold and sign the ledger as the monitor's pass does (:func:`credit.monitor_pass`).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, wait_until

from hydra import credit, ledger, merkle, statements
from hydra.ledger import load_key, parse_entry
from hydra.queue import SubmitOptions, read_job, submit, wait_for_job
from hydra.tasks import get_task
from hydra.volunteers import user_name

pytestmark = pytest.mark.slow
FAULTY = {"RQ_WORKER_CLASS": "hydra.faults.FaultyWorker"}


def entries(client) -> list[ledger.Entry]:
    return [parse_entry(raw) for raw in client.lrange(ledger.LEDGER, 0, -1)]


def run_job(client, task: str, params: dict, timeout: float = 240, **options) -> str:
    job_id = submit(client, task, params, SubmitOptions(**options))
    wait_for_job(client, job_id, timeout=timeout)
    return job_id


def assert_exactly_once(client, job_id: str, need: int = 1) -> None:
    """Every unit of the job is granted to exactly ``need`` distinct volunteers, net of reversals."""
    net: collections.Counter = collections.Counter()
    for e in entries(client):
        if e.job == job_id:
            for unit in range(e.first, e.first + e.count):
                net[unit, e.volunteer] += 1 if e.kind == "grant" else -1
    assert all(v == 1 for v in net.values() if v), "a unit granted twice to one volunteer"
    per_unit = collections.Counter(unit for (unit, _), v in net.items() if v == 1)
    units = int(read_job(client, job_id)["units_total"])
    assert sorted(per_unit) == list(range(units)) and set(per_unit.values()) == {need}


def test_a_cheater_earns_nothing_under_verify_2(client, cluster_factory, tmp_path):
    cluster = cluster_factory(0)
    cluster.add_worker(volunteer="honest1")
    cluster.add_worker(volunteer="honest2")
    cluster.add_worker({**FAULTY, "HYDRA_FAULT": "cheat"}, volunteer="cheater")
    cluster.wait_for_workers(3)
    job_id = run_job(client, "pi", {"samples": "2e9"}, verify="2", chunk_seconds=0.5)
    assert not [e for e in entries(client) if e.volunteer == user_name("cheater") and e.kind == "grant"]
    assert_exactly_once(client, job_id, need=2)
    key = load_key(tmp_path / "operator.pem")
    credit.monitor_pass(client, key)
    board = credit.board(client)
    h1, h2 = user_name("honest1"), user_name("honest2")
    assert user_name("cheater") not in board and board[h1].credit > 0 and board[h2].credit > 0
    # Both volunteers of a confirmed chunk earn its full credit: together twice the job's.
    pi = get_task("pi")
    params = pi.parse({"samples": "2e9"})
    job_total = credit.job_credit(pi, params, b"", pi.plan(params).units_total)
    assert abs(board[h1].credit + board[h2].credit - 2 * job_total) <= len(entries(client))


def test_a_cheater_caught_late_has_its_unchecked_grants_reversed(client, cluster_factory, tmp_path):
    cluster = cluster_factory(0)
    cluster.add_worker(volunteer="honest1")
    cluster.add_worker(volunteer="honest2")
    sleeper = cluster.add_worker(volunteer="turncoat")  # honest at first: it earns trust
    cluster.wait_for_workers(3)
    run_job(client, "pi", {"samples": "4e9"}, verify="auto", chunk_seconds=0.3)
    cluster.kill_worker(sleeper)
    # A long honest record: its results are spot-checked at the 5 % floor, so it is caught late,
    # with unchecked grants behind it (what this test is about), not at its first cheat.
    client.hset(f"hydra:volunteer:{user_name('turncoat')}", "clean", 1000)
    cluster.add_worker({**FAULTY, "HYDRA_FAULT": "cheat:0.5"}, volunteer="turncoat")
    # Spot checks are random (and rarer for a volunteer with a good record): jobs until one catches it.
    for _ in range(60):
        last = run_job(client, "pi", {"samples": "8e9"}, verify="auto", chunk_seconds=0.3)
        if client.sismember("hydra:quarantine", user_name("turncoat")):
            break
    wait_until(lambda: client.sismember("hydra:quarantine", user_name("turncoat")), 120, what="the turncoat caught")
    wait_until(lambda: read_job(client, last)["state"] == "done", 120, what="the redone job")
    mine = [e for e in entries(client) if e.volunteer == user_name("turncoat")]
    grants = [e for e in mine if e.kind == "grant"]
    reversals = [e for e in mine if e.kind == "reverse"]
    assert grants and reversals, "the turncoat had unchecked grants, and they were reversed visibly"
    # What stays is only what another volunteer confirmed with the same digest.
    others = {(e.job, e.first, e.count, e.digest) for e in entries(client) if e.volunteer != user_name("turncoat")}
    for g in grants:
        reversed_ = any(r.reverses(g) for r in reversals)
        assert reversed_ or (g.job, g.first, g.count, g.digest) in others
    key = load_key()  # the key the cluster's monitor signs with (its default place)
    credit.monitor_pass(client, key)
    doc = statements.build_statement(client, user_name("turncoat"))
    assert statements.verify_document(json.dumps(doc), key.public_key()).startswith("ok")
    assert doc["totals"]["reversals"] == len(reversals)


def test_credit_per_unit_of_work_is_the_same_at_1x_and_8x(client, cluster_factory):
    cluster = cluster_factory(0)
    cluster.add_worker(FAULTY, volunteer="fast")
    cluster.add_worker({**FAULTY, "HYDRA_THROTTLE": "0.125"}, volunteer="slow")
    cluster.wait_for_workers(2)
    job_id = run_job(client, "pi", {"samples": "6e10"}, chunk_seconds=2.0, speculate=False)
    pi = get_task("pi")
    params = pi.parse({"samples": "6e10"})
    assert_exactly_once(client, job_id)
    fast, slow = user_name("fast"), user_name("slow")
    samples = collections.Counter()
    milli = collections.Counter()
    chunks = collections.Counter()
    for e in entries(client):
        samples[e.volunteer] += pi.work(params, b"", e.first, e.count)  # the last block is short
        milli[e.volunteer] += e.credit
        chunks[e.volunteer] += 1
    assert samples[slow] > 0 and samples[fast] > 2 * samples[slow]
    # A chunk's credit is its exact share rounded as round(W(end)) - round(W(start)): at most one
    # milli-credit off, whoever ran it and however fast. (The slow volunteer's chunks are small, so
    # a ratio of rates with a fixed tolerance failed on a slow machine: 1.2 % apart over its chunks.)
    for v in (fast, slow):
        exact = samples[v] * pi.credit_per_work * credit.MILLI
        assert abs(milli[v] - exact) <= chunks[v], (v, milli[v], exact, chunks[v])


def test_killed_monitor_and_killed_signer_leave_no_duplicate_or_missing_grant(client, cluster_factory, tmp_path):
    cluster = cluster_factory(2)
    cluster.wait_for_workers(2)
    key_path = tmp_path / "operator.pem"
    load_key(key_path)
    job_id = submit(client, "pi", {"samples": "2e10"}, SubmitOptions(chunk_seconds=0.3))
    signer = [sys.executable, "-m", "hydra", "--redis-url", cluster.url, "credit", "sign"]
    env = {**os.environ, "HYDRA_LEDGER_KEY": str(key_path)}
    killed = 0
    while read_job(client, job_id)["state"] != "done":
        monitor = cluster.monitors[0]
        if monitor.poll() is None and killed < 2 and int(read_job(client, job_id).get("units_done", 0)) > 0:
            monitor.send_signal(signal.SIGKILL)  # the trusted side dies mid-job; another takes over
            monitor.wait()
            cluster.monitors[0] = _monitor(cluster)
            killed += 1
        proc = subprocess.Popen(signer, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        time.sleep(0.15)  # not synchronisation: a random moment to kill the signer at
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert killed == 2
    wait_for_job(client, job_id, timeout=60)
    assert_exactly_once(client, job_id)
    credit.monitor_pass(client, load_key(key_path))
    all_entries = entries(client)
    expected = credit.fold({}, all_entries)
    got = credit.board(client)
    assert {v: (s.credit, s.chunks) for v, s in got.items()} == {v: (s.credit, s.chunks) for v, s in expected.items()}
    indices = [int(i) for v in got for i in client.lrange(ledger.by_volunteer_key(v), 0, -1)]
    assert sorted(indices) == list(range(len(all_entries)))
    tree = merkle.MemoryTree(client.lrange(ledger.LEDGER, 0, -1))
    for head in ledger.heads(client):
        assert head.root == merkle.root(tree, head.size).hex()


def _monitor(cluster) -> subprocess.Popen:
    from hydra.local import spawn

    return spawn([sys.executable, "-m", "hydra", "monitor"], env=cluster.child_env())
