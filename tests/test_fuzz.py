"""Fuzzing with hypothesis: CLI arguments, chunk descriptors and web form fields never crash."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydra.cli import main
from hydra.connection import connect
from hydra.local import RedisServer
from hydra.queue import SubmitOptions, submit
from hydra.settings import Settings
from hydra.worker import Revoked, Volunteer

UNREACHABLE = "redis://127.0.0.1:1/0"
numbers = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=True).map(str),
    st.text(max_size=12),
    st.sampled_from(["1e10", "1_000", "-0", "1e-3", "0x10", "", "١٢"]),
)
FLAGS = [
    "--samples",
    "--seed",
    "--width",
    "--height",
    "--max-iter",
    "--center",
    "--span",
    "--chunk-units",
    "--chunk-seconds",
    "--max-attempts",
    "--workers",
    "--verify",
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    task=st.sampled_from(["pi", "mandelbrot", "nope"]),
    pairs=st.lists(st.tuples(st.sampled_from(FLAGS), numbers), max_size=4),
)
def test_cli_never_shows_a_traceback(capsys, task, pairs):
    args = ["--redis-url", UNREACHABLE, "submit", task]
    for flag, value in pairs:
        args += [f"{flag}={value}"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code != 0  # either bad input or the unreachable Redis
    assert "Traceback" not in err and err.count("\n") == 1, err


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
GOOD_CHUNK = {
    "t": "chunk",
    "job": "0123456789ab",
    "chunk": 0,
    "a": 1,
    "task": "pi",
    "version": "1",
    "params": {"samples": 3 * 2**20, "seed": 4},
    "seed": 4,
    "first": 0,
    "count": 1,
}
# Mostly well-formed descriptors with one field replaced, so that many cases reach the kernel.
descriptor_like = st.builds(
    lambda field, value, keep: {**GOOD_CHUNK, field: value} if not keep else dict(GOOD_CHUNK),
    st.sampled_from(sorted(GOOD_CHUNK)),
    st.one_of(json_values, st.integers(-5, 10**14), st.sampled_from(["pi", "mandelbrot", "os.system", "chunk"])),
    st.booleans(),
)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    server = RedisServer(Path(tmp_path_factory.mktemp("fuzz"))).start()
    client = connect(server.url)
    yield client
    client.close()
    server.stop()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=st.one_of(descriptor_like, json_values))
def test_worker_answers_every_chunk_message_once_and_survives_anything(shared_redis, obj):
    """Whatever arrives in its inbox, the worker goes on; a chunk gets exactly one answer."""
    worker = Volunteer(shared_redis, "fuzz", device="cpu")
    shared_redis.delete(worker.outbox)
    raw = json.dumps(obj).encode()
    with contextlib.suppress(Revoked):
        worker.handle(raw)
    worker.flush()  # a result goes out with the next read of the inbox
    answers = [m.partition(b"\n")[0] for m in shared_redis.lrange(worker.outbox, 0, -1)]
    if isinstance(obj, dict) and obj.get("t") == "chunk":
        assert len(answers) == 1
        kind = json.loads(answers[0])["t"]
        if json.dumps(obj, sort_keys=True) == json.dumps(GOOD_CHUNK, sort_keys=True):  # not False == 0
            assert kind == "result", answers
        assert kind in ("result", "error")
    else:
        assert answers == []


# Messages a volunteer could push into its outbox. Every header is a JSON object with a valid
# worker id, so each case gets past the parser into the collector's checks (hello, result, error).
messages = st.fixed_dictionaries(
    {"t": st.sampled_from(["hello", "result", "error", "bye", "nope"]), "w": st.sampled_from(["w1", "w2"])},
    optional={
        "job": st.one_of(st.text(max_size=14), st.just("JOB")),
        "chunk": json_values,
        "a": json_values,
        "sums": st.one_of(json_values, st.dictionaries(st.sampled_from(["inside", "x"]), st.integers(-5, 2**70))),
        "seconds": json_values,
        "tasks": st.one_of(json_values, st.just({"pi": "1"})),
        "device": json_values,
        "zone": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=messages, blob=st.binary(max_size=64))
def test_collector_refuses_any_message_and_leaves_jobs_alone(shared_redis, message, blob):
    from hydra.collector import Collector

    other = submit(shared_redis, "pi", {"samples": "1e6"}, SubmitOptions(max_active_jobs=10**6))
    if message.get("job") == "JOB":
        message = {**message, "job": other}
    before = shared_redis.hgetall(f"hydra:job:{other}")
    outcome = Collector(shared_redis, Settings()).handle("fuzzer", json.dumps(message).encode() + b"\n" + blob)
    assert isinstance(outcome, str)
    assert shared_redis.hget(f"hydra:job:{other}", "units_done") == before[b"units_done"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    task=st.sampled_from(["pi", "mandelbrot", "x"]),
    params=st.dictionaries(
        st.sampled_from(["samples", "seed", "width", "height", "max_iter", "center", "span", "other"]),
        json_values,
        max_size=5,
    ),
)
def test_web_form_fields_get_a_clear_answer(shared_redis, task, params):
    from hydra_web.app import create_app

    url = "redis://127.0.0.1:{}/0".format(shared_redis.connection_pool.connection_kwargs["port"])
    app = create_app({"REDIS_URL": url, "WEB_TOKEN": "t", "MESSAGE_QUEUE": False})
    answer = app.test_client().post("/api/jobs", json={"task": task, "params": params}, headers={"X-Hydra-Token": "t"})
    assert answer.status_code in (201, 400), answer.get_data(as_text=True)
    if answer.status_code == 400:
        message = answer.json["error"]
        assert message and "\n" not in message and "Traceback" not in message
    else:
        json.dumps(answer.json)


def _outcome(parse, raw):
    from hydra.ledger import LedgerError

    try:
        return parse(raw)
    except LedgerError:
        return "refused"


_ENTRY_PARTS = (
    st.sampled_from(["grant", "reverse", "steal", ""]),
    st.text(max_size=8),
    st.text(max_size=8),
    st.text(max_size=8),
    st.integers(-5, 10**20),
    st.integers(-5, 10**6),
    st.integers(-5, 10**9),
    st.text(max_size=8),
    st.one_of(st.floats(allow_nan=False), st.integers(-(10**6), 10**12)),
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.tuples(*_ENTRY_PARTS),
    cut=st.integers(0, 400),
    insert=st.text(max_size=3),
    as_text=st.booleans(),
    ascii_only=st.booleans(),
)
def test_ledger_entries_read_without_a_json_parser_read_as_with_one(parts, cut, insert, as_text, ascii_only):
    """The monitor reads the entries it signs with a regular expression where it can, and with a
    JSON parser otherwise: for any entry, well formed or mangled, bytes or text, both read the same
    entry or both refuse it."""
    from hydra.ledger import parse_entry, parse_entry_json

    kind, volunteer, job, task, first, count, credit, digest, when = parts
    fields = {"kind": kind, "volunteer": volunteer, "job": job, "task": task, "first": first}
    head = json.dumps(fields, separators=(",", ":"), ensure_ascii=ascii_only)
    tail = json.dumps(
        {"count": count, "credit": credit, "digest": digest, "time": when},
        separators=(",", ":"),
        ensure_ascii=ascii_only,
    )
    text = head[:-1] + "," + tail[1:]
    for candidate in (text, text[:cut] + insert + text[cut:]):
        raw = candidate if as_text else candidate.encode("utf-8", "surrogatepass")
        assert _outcome(parse_entry, raw) == _outcome(parse_entry_json, raw)
