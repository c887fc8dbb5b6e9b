"""Fast unit tests of the data model on fakeredis (the Lua scripts run under fakeredis' Lua too)."""

from __future__ import annotations

import fakeredis
import pytest

from hydra import keys
from hydra.chunks import ChunkDescriptor
from hydra.errors import InvalidInput, MalformedChunk
from hydra.queue import SubmitOptions, read_job, submit
from hydra.scripts import Scripts, script_keys
from hydra.settings import Settings
from hydra.tasks.base import parse_count
from hydra.worker import ChunkRunner


@pytest.mark.parametrize("text", ["1e10", "10000000000", "10_000_000_000", " 1E10 ", 10**10])
def test_sample_counts_in_every_spelling(text):
    assert parse_count("samples", text, low=1, high=10**16) == 10**10


@pytest.mark.parametrize("text", ["-5", "0", "abc", "1e30", "1.5", "nan", "inf", ""])
def test_bad_sample_counts(text):
    with pytest.raises(InvalidInput):
        parse_count("samples", text, low=1, high=10**16)


def test_descriptor_round_trip_and_refusals():
    good = ChunkDescriptor("0123456789ab", 3, "pi", 7, 10, 5)
    assert ChunkDescriptor.from_json(good.to_json()) == good
    for bad in (
        [],
        {"job": "x"},
        {**good.to_json(), "count": 0},
        {**good.to_json(), "count": True},
        {**good.to_json(), "task": "os.system"},
        {**good.to_json(), "extra": 1},
        {**good.to_json(), "first": 10**30},
        {**good.to_json(), "job": "../etc"},
    ):
        with pytest.raises(MalformedChunk):
            ChunkDescriptor.from_json(bad)


def test_settings_from_env():
    s = Settings.from_env({"HYDRA_CHUNK_SECONDS": "0.5", "RQ_REDIS_URL": "redis://h:1/0"})
    assert s.chunk_seconds == 0.5 and s.redis_url == "redis://h:1/0"
    with pytest.raises(InvalidInput):
        Settings.from_env({"HYDRA_THROTTLE": "2"})
    with pytest.raises(InvalidInput):
        Settings.from_env({"HYDRA_MAX_ATTEMPTS": "many"})


@pytest.fixture
def fake():
    return fakeredis.FakeRedis()


def test_claim_splits_and_complete_counts_once(fake):
    job_id = submit(fake, "pi", {"samples": 100 * 2**20, "seed": 1}, SubmitOptions())
    scripts, ks = Scripts(fake), script_keys(job_id, "rq:queue:hydra")
    reply = scripts.claim(keys=ks, args=[job_id, 0, "", "w1", 1.0, 30, 100.0, 0, 5])
    assert [int(x) for x in reply[1:]] == [0, 30, 0, 1, 30, 70]
    assert fake.zscore(keys.DEADLINES, f"{job_id}:0") == 100.0
    # a stale completion with the wrong range is ignored
    assert scripts.complete(keys=ks, args=[job_id, 0, "w1", 2.0, 0, 100, "", "d", "inside", 5]) == [0]
    assert scripts.complete(keys=ks, args=[job_id, 0, "w1", 2.0, 0, 30, "", "d", "inside", 5]) == [1]
    assert scripts.complete(keys=ks, args=[job_id, 0, "w2", 2.0, 0, 30, "", "d", "inside", 5]) == [0]
    record = read_job(fake, job_id)
    assert record["units_done"] == 30 and record["sum:inside"] == 5
    assert scripts.claim(keys=ks, args=[job_id, 1, "", "w2", 3.0, 1000, 9.0, 0, 5])[0] == b"run"
    assert scripts.complete(keys=ks, args=[job_id, 1, "w2", 4.0, 30, 70, "", "d", "inside", 7]) == [2]
    record = read_job(fake, job_id)
    assert record["state"] == "done" and record["sum:inside"] == 12
    assert fake.zcard(keys.DEADLINES) == 0 and fake.zcard(keys.PENDING) == 0


def test_requeue_counts_attempts_then_fails_the_job(fake):
    job_id = submit(fake, "pi", {"samples": 2**20}, SubmitOptions(max_attempts=2))
    scripts, ks = Scripts(fake), script_keys(job_id, "rq:queue:hydra")
    scripts.claim(keys=ks, args=[job_id, 0, "", "w1", 1.0, 1, 10.0, 0, 5])
    assert [int(x) for x in scripts.requeue(keys=ks, args=[job_id, 0, 2.0, "boom", 1, "w1", 5])] == [1, 0, 1, 1]
    assert scripts.requeue(keys=ks, args=[job_id, 0, 2.0, "boom", 1, "w1", 5]) == [0]  # not running: no-op
    scripts.claim(keys=ks, args=[job_id, 0, "", "w2", 3.0, 1, 10.0, 0, 5])
    assert scripts.requeue(keys=ks, args=[job_id, 0, 4.0, "boom", 1, "w2", 5]) == [2]
    record = read_job(fake, job_id)
    assert record["state"] == "failed" and "boom" in record["error"]


def test_probe_is_small_and_rate_estimate_converges(fake):
    runner = ChunkRunner(fake, "w", Settings())
    job_id = submit(fake, "pi", {"samples": "1e12"}, SubmitOptions())
    from hydra.tasks import get_task
    from hydra.worker import JobContext

    ctx = runner._context(job_id)
    assert isinstance(ctx, JobContext)
    chunk = ChunkDescriptor(job_id, 0, "pi", ctx.seed, 0, ctx.units_total)
    task = get_task("pi")
    assert runner._units_to_take(chunk, task, ctx) == task.probe_units(ctx.params) <= 16
    runner._learn_rate("pi", 1e6, 0.5)  # a tiny chunk slowed by fixed costs: 2e6 units/s
    for _ in range(30):
        runner._learn_rate("pi", 1e9, 1.0)  # then one-second chunks at 1e9 units/s
    assert abs(runner.rates["pi"] - 1e9) < 1e9 * 0.01
    runner._learn_rate("pi", 1e6, 0.01)  # another tiny, slow chunk barely moves it
    assert runner.rates["pi"] > 0.99e9
    taken = runner._units_to_take(chunk, task, ctx)
    assert taken * 2**20 == pytest.approx(2.0 * 1e9, rel=0.01)  # about chunk_seconds at the measured rate
