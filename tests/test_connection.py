"""The lean pipeline answers exactly as redis-py's own, against a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib
from redis.client import Pipeline

from hydra import connection
from hydra.connection import LeanPipeline, connect

pytestmark = pytest.mark.skipif(connection.pack_command is None, reason="hiredis is not installed")


def queue_mixed(pipe: Any) -> None:
    """Commands of the kinds the trusted side sends, with replies that callbacks reshape (HGETALL,
    ZRANGE WITHSCORES, SMEMBERS, EXISTS), errors in the middle, floats, and non-ASCII text."""
    pipe.hset("h", mapping={"a": 1, "b": 2.5, "ü": "ß"})
    pipe.hgetall("h")
    pipe.hmget("h", ["a", "missing", "ü"])
    pipe.hincrbyfloat("h", "b", 0.25)
    pipe.zadd("z", {"x": 1.5, "y": 3})
    pipe.zrange("z", 0, -1, withscores=True)
    pipe.zrangebyscore("z", "-inf", 2, withscores=True)
    pipe.incr("h")  # WRONGTYPE: an error in the middle of the batch
    pipe.sadd("s", "p", "q")
    pipe.smembers("s")
    pipe.rpush("l", b"\x00\xffbytes", "text")
    pipe.lrange("l", 0, -1)
    pipe.exists("h", "z", "nothing")
    pipe.pexpire("h", 10_000)
    pipe.get("absent")
    pipe.eval("return {KEYS[1], ARGV[1], 7}", 1, "k", "v")
    pipe.set("k", "v", nx=True, px=5000)
    pipe.set("k", "w", nx=True)


def replies(client: redis_lib.Redis, pipeline_class: type[Pipeline]) -> list[Any]:
    client.flushdb()
    pipe = pipeline_class(client.connection_pool, client.response_callbacks, False, None)
    queue_mixed(pipe)
    return [f"{type(r).__name__}: {r}" if isinstance(r, Exception) else r for r in pipe.execute(raise_on_error=False)]


def test_lean_pipeline_replies_as_redis_py_does(client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    took_own_path: list[int] = []
    own = Pipeline._execute_pipeline

    def counted(self: Pipeline, *args: Any) -> Any:
        took_own_path.append(1)
        return own(self, *args)

    monkeypatch.setattr(Pipeline, "_execute_pipeline", counted)
    expected = replies(client, Pipeline)
    assert took_own_path == [1]
    lean = replies(client, LeanPipeline)
    assert took_own_path == [1], "every command above is one the lean path sends itself"
    assert lean == expected
    assert lean[1] == {b"a": b"1", b"b": b"2.5", "ü".encode(): "ß".encode()}
    assert "WRONGTYPE" in lean[7]


def test_lean_pipeline_raises_the_first_error_and_keeps_the_connection_usable(client: redis_lib.Redis) -> None:
    assert isinstance(client.pipeline(), LeanPipeline)
    client.set("str", "x")
    pipe = client.pipeline(transaction=False)
    pipe.incr("str").set("after", 1)
    with pytest.raises(redis_lib.ResponseError, match="Command # 1"):
        pipe.execute()
    assert client.get("after") == b"1", "commands after the error still ran"
    assert client.pipeline(transaction=False).get("after").ping().execute() == [b"1", True]


def test_a_failing_callback_drops_the_connection_rather_than_leave_replies_on_it(client: redis_lib.Redis) -> None:
    client.rpush("l", "a", "b")

    def broken(reply: Any, **options: Any) -> Any:
        raise ValueError("callback failed")

    pipe = client.pipeline(transaction=False)
    pipe.response_callbacks = {**pipe.response_callbacks, "LRANGE": broken}
    pipe.lrange("l", 0, -1).get("l-missing").llen("l")
    with pytest.raises(ValueError, match="callback failed"):
        pipe.execute()
    # No connection goes back to the pool with the two unread replies on it (redis-py's pool would
    # catch those that have arrived by the time it lends the connection again, not those still on
    # their way).
    for conn in client.connection_pool._available_connections:  # type: ignore[attr-defined]
        assert conn._sock is None or not conn.can_read(timeout=0.2)
    assert client.pipeline(transaction=False).llen("l").get("nothing").execute() == [2, None]
    assert client.llen("l") == 2


def _outcome(pipe: Any) -> Any:
    try:
        return pipe.execute()
    except redis_lib.DataError as exc:
        return type(exc)


def test_arguments_hiredis_does_not_pack_take_redis_py_path(client: redis_lib.Redis) -> None:
    """A bytearray, a bool: the lean pipeline does what redis-py's own does (redis-py 8 sends a
    bytearray and refuses a bool; redis-py 5, packing with hiredis too, refuses both)."""
    for value in (bytearray(b"ab"), True):
        own = Pipeline(client.connection_pool, client.response_callbacks, False, None)
        lean = client.pipeline(transaction=False)
        assert _outcome(lean.set("k", value).get("k")) == _outcome(own.set("k", value).get("k")), value
    assert _outcome(client.pipeline(transaction=False).set("k", True)) is redis_lib.DataError
    assert client.pipeline(transaction=False).client_list().execute()[0]  # a name of two words


def test_transactions_and_scripts_take_redis_py_paths(client: redis_lib.Redis) -> None:
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    client.script_flush()  # the pipeline must load it again (NOSCRIPT is redis-py's to handle)
    pipe = client.pipeline(transaction=False)
    script(keys=["n"], args=[5], client=pipe)
    pipe.get("n")
    assert pipe.execute() == [5, b"5"]
    with client.pipeline(transaction=True) as tx:
        tx.incr("n").incr("n")
        assert tx.execute() == [6, 7]


def test_connect_returns_a_client_with_lean_pipelines(redis_server: Any) -> None:
    c = connect(redis_server.url)
    try:
        assert isinstance(c.pipeline(transaction=False), LeanPipeline)
        assert c.pipeline(transaction=False).ping().echo("é").execute() == [True, "é".encode()]
    finally:
        c.close()
