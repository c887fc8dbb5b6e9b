"""Fast unit tests with no server: parsing, settings, key layout, descriptor checks, chunk sizing."""

from __future__ import annotations

import fakeredis
import pytest

from hydra import keys
from hydra.dispatch import Dispatcher, JobSpec, WorkerView
from hydra.errors import InvalidInput
from hydra.settings import Settings
from hydra.tasks import TASKS
from hydra.tasks.base import parse_count
from hydra.worker import Volunteer


@pytest.mark.parametrize("text", ["1e10", "10000000000", "10_000_000_000", " 1E10 ", 10**10])
def test_sample_counts_in_every_spelling(text):
    assert parse_count("samples", text, low=1, high=10**16) == 10**10


@pytest.mark.parametrize("text", ["-5", "0", "abc", "1e30", "1.5", "nan", "inf", ""])
def test_bad_sample_counts(text):
    with pytest.raises(InvalidInput):
        parse_count("samples", text, low=1, high=10**16)


def test_settings_from_env():
    s = Settings.from_env({"HYDRA_CHUNK_SECONDS": "0.5", "RQ_REDIS_URL": "redis://h:1/0"})
    assert s.chunk_seconds == 0.5 and s.redis_url == "redis://h:1/0"
    with pytest.raises(InvalidInput):
        Settings.from_env({"HYDRA_DEVICE": "abacus"})
    with pytest.raises(InvalidInput):
        Settings.from_env({"HYDRA_MAX_ATTEMPTS": "many"})


def test_volunteer_keys_parse_back_and_nothing_else_does():
    assert keys.parse_volunteer_key(keys.outbox("alice")) == ("alice", "", "outbox")
    assert keys.parse_volunteer_key(keys.alive("alice", "w1")) == ("alice", "w1", "alive")
    assert keys.parse_volunteer_key(keys.inbox("alice", "w1")) == ("alice", "w1", "inbox")
    for other in ("hydra:job:x", "hydra:v:alice:w:w1:other", "hydra:v:alice", "rq:queue:hydra"):
        assert keys.parse_volunteer_key(other) is None
    assert keys.split_worker(keys.worker_name("alice", "w1")) == ("alice", "w1")
    with pytest.raises(ValueError):
        keys.parse_assignment("not:a:member:at:all")


def volunteer() -> Volunteer:
    v = object.__new__(Volunteer)  # no Redis needed to check descriptors
    v.memory_cap, v.time_cap, v.rates = 10**8, 3600.0, {}
    return v


GOOD = {
    "t": "chunk",
    "job": "0123456789ab",
    "chunk": 3,
    "a": 9,
    "task": "pi",
    "version": "1",
    "params": {"samples": 8 * 2**20, "seed": 1},
    "seed": 1,
    "first": 2,
    "count": 4,
}


def test_a_good_descriptor_passes_the_workers_checks():
    task, params, seed, first, count = volunteer().check(dict(GOOD))
    assert (task.name, seed, first, count) == ("pi", 1, 2, 4)


@pytest.mark.parametrize(
    "change",
    [
        {"task": "os.system"},
        {"version": "0"},
        {"params": {"samples": 8 * 2**20, "seed": 1, "extra": 1}},
        {"params": {"samples": -1, "seed": 1}},
        {"first": 7},  # past the job's 8 units
        {"count": 0},
        {"count": True},
        {"job": "../etc"},
        {"a": "1"},
    ],
)
def test_descriptors_no_scheduler_writes_are_refused(change):
    with pytest.raises((InvalidInput, KeyError, TypeError, ValueError)):
        volunteer().check({**GOOD, **change})


def test_a_chunk_over_the_memory_cap_is_refused():
    v = volunteer()
    v.memory_cap = 1000
    mandel = {
        **GOOD,
        "task": "mandelbrot",
        "params": TASKS["mandelbrot"].parse({"width": 4096}),
        "first": 0,
        "count": 64,
    }
    with pytest.raises(InvalidInput, match="memory"):
        v.check(mandel)


def _pi_job(samples: int, chunk_seconds: float) -> tuple[fakeredis.FakeRedis, Dispatcher, JobSpec]:
    """A dispatcher on fakeredis and an adaptive π job of ``samples`` it may cut."""
    fake = fakeredis.FakeRedis()
    task, params = TASKS["pi"], {"samples": samples, "seed": 1}
    units = task.units_total(params)
    spec = JobSpec("0123456789ab", task, "1", params, b"", units, chunk_seconds, "adaptive", True, float(samples))
    return fake, Dispatcher(fake, Settings()), spec


def test_chunks_are_sized_to_the_measured_speed_and_shrink_at_the_tail():
    fake, dispatcher, spec = _pi_job(10**12, 2.0)
    task, params, units = spec.task, spec.params, spec.units_total
    new = WorkerView("a/1", "a", "1", {"pi": "1"})
    assert dispatcher._take(new, spec, 0, units) == task.probe_units(params)  # no speed yet: a probe
    fast = WorkerView("a/1", "a", "1", {"pi": "1"}, {"pi": 1e9})
    fake.hset(keys.COUNTS, "rate:pi", 1e9)
    assert dispatcher._take(fast, spec, 0, units) == int(2e9 // 2**20)  # 2 s of work at its speed
    fake.hset(keys.job(spec.job_id), "units_claimed", units - 100)
    dispatcher._cluster_rates.clear()
    assert dispatcher._take(fast, spec, units - 100, 100) < 100  # the tail: half the time left


def test_workers_sized_by_their_volunteers_speed_start_with_pieces_spread_over_the_chunk_time():
    """Siblings that waited for one probe are served together: each one's first pieces take from a
    half to the whole chunk time, by worker, so that their results do not all come back at once;
    but never less than the trusted side can answer (tail_floor)."""
    fake, dispatcher, spec = _pi_job(10**15, 2.0)
    units = spec.units_total
    fake.hset(keys.COUNTS, "rate:pi", 100 * 1e9)
    own = dispatcher._take(WorkerView("a/1", "a", "1", {"pi": "1"}, {"pi": 1e9}), spec, 0, units)
    firsts = [
        dispatcher._take(
            WorkerView(f"a/{i}", "a", str(i), {"pi": "1"}, {"pi": 1e9}, seeded=frozenset({"pi"})), spec, 0, units
        )
        for i in range(2, 12)
    ]
    assert all(own // 2 <= first < own for first in firsts)
    assert max(firsts) - min(firsts) > own // 4, "spread, not one size"
    dispatcher.message_cost = 0.1  # a monitor that cannot answer shorter pieces: not spread
    assert (
        dispatcher._take(
            WorkerView("a/2", "a", "2", {"pi": "1"}, {"pi": 1e9}, seeded=frozenset({"pi"})), spec, 0, units
        )
        == own
    )


def test_the_tail_is_cut_no_finer_than_the_trusted_side_can_answer():
    """Near a job's end chunks shrink to half the time left, but not below the floor at which the
    whole cluster's results would keep the monitor's loop TAIL_LOAD busy: (cluster / rate) workers
    times what a message costs the loop. With nothing measured the floor is MIN_CHUNK_SECONDS."""
    from hydra.dispatch import MIN_CHUNK_SECONDS, TAIL_LOAD

    fake, dispatcher, spec = _pi_job(10**15, 30.0)
    units = spec.units_total
    worker = WorkerView("a/1", "a", "1", {"pi": "1"}, {"pi": 1e9})  # 1e9 samples a second
    fake.hset(keys.COUNTS, "rate:pi", 50_000 * 1e9)  # and 50,000 like it
    piece = 10**5  # the last 1e5 units: about 1e11 samples, 2 ms of the whole cluster's time
    fake.hset(keys.job(spec.job_id), "units_claimed", units - piece)

    def seconds_taken() -> float:
        dispatcher._cluster_rates.clear()
        return dispatcher._take(worker, spec, units - piece, piece) * 2**20 / 1e9

    assert seconds_taken() < 2 * MIN_CHUNK_SECONDS  # nothing measured: cut as fine as ever
    dispatcher.message_cost = 400e-6  # a saturated monitor answering 2,500 messages a second
    floor = 50_000 * 400e-6 / TAIL_LOAD
    assert dispatcher.tail_floor(1e9, 50_000 * 1e9) == pytest.approx(floor)  # 25 s
    assert floor - 0.01 <= seconds_taken() <= floor + 0.01
    fake.hset(keys.COUNTS, "rate:pi", 1_000 * 1e9)  # 1,000 workers: the same loop can answer finer pieces
    assert seconds_taken() == pytest.approx(1_000 * 400e-6 / TAIL_LOAD, abs=0.01)
    dispatcher.message_cost = 0.1  # with no live worker counted, never longer than the chunk time
    fake.hset(keys.job(spec.job_id), "units_claimed", 0)
    assert seconds_taken() == pytest.approx(30.0, abs=0.01)


def test_a_saturated_monitor_stretches_the_chunk_time_rather_than_let_results_queue_up(caplog):
    """Pieces take the job's chunk time unless every live worker's results, at one a chunk time,
    would keep the monitor's loop more than TAIL_LOAD busy: then they take as long as the loop needs
    (at most MAX_STRETCH chunk times). Nothing measured, or few workers: the chunk time asked."""
    from hydra.dispatch import MAX_STRETCH, TAIL_LOAD

    fake, dispatcher, spec = _pi_job(10**15, 2.0)
    worker = WorkerView("a/1", "a", "1", {"pi": "1"}, {"pi": 1e9})
    fake.hset(keys.COUNTS, "rate:pi", 10_000 * 1e9)

    def seconds_taken(live: int, cost: float) -> float:
        fake.delete(keys.LIVE)
        fake.zadd(keys.LIVE, {f"v/{i}": 0 for i in range(live)})
        dispatcher._cluster_rates.clear()
        dispatcher.message_cost = cost
        return dispatcher._take(worker, spec, 0, spec.units_total) * 2**20 / 1e9

    assert seconds_taken(10_000, 0.0) == pytest.approx(2.0, abs=0.01), "never measured"
    assert seconds_taken(1_000, 262e-6) == pytest.approx(2.0, abs=0.01), "answerable: 0.33 s pieces would do"
    assert seconds_taken(10_000, 262e-6) == pytest.approx(10_000 * 262e-6 / TAIL_LOAD, abs=0.01)  # 3.3 s
    assert seconds_taken(10_000, 0.1) == pytest.approx(2.0 * MAX_STRETCH, abs=0.01), "a bogus cost: bounded"
    said = [r.getMessage() for r in caplog.records if r.name == "hydra.dispatch"]
    assert len(said) == 1 and "stretched from 2 s to 3.3 s" in said[0], "the operator is told, once a minute"


def test_a_chunk_that_would_run_for_days_is_refused():
    days = {**GOOD, "params": {"samples": 10**16, "seed": 1}, "first": 0, "count": 10**16 // 2**20}
    with pytest.raises(InvalidInput, match="cap"):
        volunteer().check(days)


def test_a_peek_plans_pieces_where_assign_will_leave_the_head():
    """The peek's view after each planned piece is what ASSIGN leaves: the head split where the
    piece ended under the same id, or the next chunk once the head is taken whole; it knows when
    more may be pending than it read, and a malformed reply is no peek at all."""
    from hydra.dispatch import Peek

    def record(first: int, count: int) -> bytes:
        return f'{{"first":{first},"count":{count},"state":"pending","attempt":0}}'.encode()

    peek = Peek.parse([[], b"7", b"3", record(10, 5), b"4", record(15, 2)], 2)
    assert peek is not None and peek.heads == [("3", 10, 5), ("4", 15, 2)] and peek.claimed == 7 and peek.more
    peek.took(2)
    assert peek.heads[0] == ("3", 12, 3) and peek.claimed == 9
    peek.took(3)
    assert peek.heads == [("4", 15, 2)]
    alone = Peek.parse([[b"9"], False, b"3", record(0, 4)], 2)
    assert alone is not None and alone.wanted == [b"9"] and not alone.more, "one pending chunk: all there is"
    broken = Peek.parse([[], b"0", b"3", False, b"4", record(1, 1)], 2)
    assert broken is not None and broken.heads == [] and broken.more, "a missing record: read again"
    assert Peek.parse([[], b"0", b"3", b"{not json"], 1) is None
    assert Peek.parse(ValueError("NOSCRIPT"), 1) is None


def test_volunteers_heard_from_are_drained_in_rounds_bounded_by_volunteers_and_messages():
    import collections

    from hydra.monitor import DRAIN_ROUND_MESSAGES, DRAIN_ROUND_USERS, _rounds

    quiet = {f"v{i}": collections.deque() for i in range(DRAIN_ROUND_USERS * 2 + 1)}
    assert [len(r) for r in _rounds(quiet)] == [DRAIN_ROUND_USERS, DRAIN_ROUND_USERS, 1]
    busy = {f"b{i}": collections.deque([0.0] * 40) for i in range(5)}  # 40 messages each
    rounds = _rounds(busy)
    assert [len(r) for r in rounds] == [3, 2] and DRAIN_ROUND_MESSAGES <= 3 * 40
    assert [u for r in rounds for u in r] == list(busy), "every volunteer once, in the order heard"
    assert _rounds({}) == []


def test_a_volunteers_speeds_are_read_by_device_and_whatever_else_its_record_holds_is_left_out():
    from hydra.dispatch import volunteer_rates

    record = {
        keys.device_rate("cpu", "pi").encode(): b"1000.5",
        keys.device_rate("cuda", "pi").encode(): b"9e9",
        keys.device_rate("cpu", "mandelbrot").encode(): b"20",
        b"rate:pi": b"5",  # written before speeds were kept by device: its device is unknown
        b"rate:tpu:pi": b"7",  # no such device
        b"rate:cpu:primes": b"garbage",
        b"rate:cpu:collatz": b"nan",
        b"rate:cuda:mandelbrot": b"-3",
        b"clean": b"12",
    }
    assert volunteer_rates(record) == {"cpu": {"pi": 1000.5, "mandelbrot": 20.0}, "cuda": {"pi": 9e9}}
    assert keys.parse_device_rate(keys.device_rate("cuda", "a:b")) == ("cuda", "a:b")
