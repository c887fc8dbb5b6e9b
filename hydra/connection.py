"""Redis connections: one function turns a URL into a client that rides out restarts.

Accepted URLs: ``redis://``, ``rediss://`` (TLS, certificates verified unless asked otherwise),
``unix://`` and ``redis+sentinel://[user:pass@]host:port[,host:port…]/service[/db]``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.client
from redis.backoff import ExponentialBackoff
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ResponseError
from redis.retry import Retry

try:
    import hiredis
    from hiredis import pack_command
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
except ImportError:  # pragma: no cover - hiredis is a dependency where it has wheels
    hiredis = pack_command = _HiredisParser = None  # type: ignore[assignment,misc]

from hydra.errors import InvalidInput, RedisUnavailable

# Commands retry through a restart of a few seconds (AOF reload included) before giving up.
_RETRY_ATTEMPTS = 12


def _retry() -> Retry:
    return Retry(
        ExponentialBackoff(cap=2.0, base=0.05),
        _RETRY_ATTEMPTS,
        supported_errors=(redis.ConnectionError, redis.TimeoutError),
    )


class LeanPipeline(redis.client.Pipeline):
    """redis-py's pipeline without most of its per-command cost: each command is packed by hiredis
    in one call and its reply read straight off the connection. The monitor sends about seven
    commands a result; redis-py's own pipeline costs about 5.7 µs of client CPU a command, queueing
    included, this one about 2 (a pipeline of 2,000 small commands, measured side by side).
    Retries, reconnects and transactions are redis-py's own; a pipeline holding a command this
    path does not know (a name of two words, a reply option, an argument hiredis does not pack)
    takes redis-py's path, as do a connection that fell back to RESP2 (its replies need other
    callbacks) and a client without hiredis.
    ``tests/test_connection.py`` holds its replies to redis-py's; it passes with redis-py 5.0.8
    (the oldest release the requirements allow) and 8.2, the trusted side's tests too.
    """

    def execute_command(self, *args: Any, **options: Any) -> Any:
        # redis-py's own, less a call: the monitor queues about nine commands a result.
        if (self.watching or args[0] == "WATCH") and not self.explicit_transaction:
            return self.immediate_execute_command(*args, **options)
        self.command_stack.append((args, options))
        return self

    def _execute_pipeline(self, connection: Any, commands: list, raise_on_error: bool) -> list:
        if pack_command is None or getattr(connection, "_resp2_fallback", False):
            return super()._execute_pipeline(connection, commands, raise_on_error)
        for args, options in commands:
            if not _lean_name(args[0]) or NEVER_DECODE in options or EMPTY_RESPONSE in options:
                return super()._execute_pipeline(connection, commands, raise_on_error)
        try:
            packed = b"".join([pack_command(args) for args, _ in commands])
        except TypeError:  # an argument hiredis does not pack: a bytearray (or a bool, None: refused)
            return super()._execute_pipeline(connection, commands, raise_on_error)
        connection.send_packed_command([packed])
        fast = _reader(connection)
        read, callbacks = fast or connection.read_response, self.response_callbacks
        found: dict[str, Any] = {}  # callbacks by name (the lookup upper-cases the name each time)
        responses: list[Any] = []
        try:
            for args, options in commands:
                try:
                    reply = read()
                except ResponseError as exc:
                    responses.append(exc)
                    continue
                if isinstance(reply, ResponseError):  # as _reader returns an error reply
                    responses.append(reply)
                    continue
                name = args[0]
                callback = found[name] if name in found else found.setdefault(name, callbacks.get(name))
                if callback is not None:
                    reply = (
                        callback(reply, **{k: v for k, v in options.items() if k != "keys"})
                        if options
                        else callback(reply)
                    )
                responses.append(reply)
        except BaseException:
            # The rest of the batch's replies are still on the socket: drop the connection rather
            # than hand them to the next caller that borrows it (as redis-py does).
            connection.disconnect()
            raise
        if fast is not None and connection.health_check_interval:
            connection.next_health_check = time.monotonic() + connection.health_check_interval  # as it does
        if raise_on_error:
            self.raise_first_error(commands, responses)
        return responses


def _reader(connection: Any) -> Callable[[], Any] | None:
    """A function that reads the connection's next reply straight off hiredis's reader, where the
    connection parses with it: about 1 µs a reply less than ``read_response``, whose checks this
    keeps (a lost connection raises, a RESP3 push goes to the parser's handler and the reply after
    it is read) but for one: an error reply comes back as a value, not raised. None elsewhere."""
    parser = getattr(connection, "_parser", None)
    if (
        type(parser) is not _HiredisParser
        or getattr(parser, "_reader", None) is None
        or getattr(parser, "_next_response", NOT_ENOUGH_DATA) is not NOT_ENOUGH_DATA  # one read ahead
    ):
        return None
    push = getattr(hiredis, "PushNotification", None)
    if getattr(connection, "protocol", 2) in (3, "3") and (push is None or not hasattr(parser, "handle_push_response")):
        return None
    gets, fill = parser._reader.gets, parser.read_from_socket

    def read() -> Any:
        while True:
            reply = gets()
            while reply is NOT_ENOUGH_DATA:
                try:
                    fill()
                except OSError as exc:  # as read_response words it (the pipeline drops the connection)
                    raise redis.ConnectionError(f"Error while reading from Redis: {exc.args}") from exc
                reply = gets()
            if push is None or type(reply) is not push:
                break
            parser.handle_push_response(reply)
        if isinstance(reply, redis.ConnectionError):
            raise reply
        return reply

    return read


_OWN_PATH = frozenset({"WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD"})
_LEAN_NAMES: dict[Any, bool] = {}


def _lean_name(name: Any) -> bool:
    """Whether :class:`LeanPipeline` sends a command of this name itself: one word (redis-py splits
    a name of two, such as ``CLIENT KILL``, into two arguments) that does not change the pipeline's
    own state. Decided once per name: the check runs for every command sent."""
    lean = _LEAN_NAMES.get(name)
    if lean is None:
        lean = isinstance(name, str) and " " not in name and name not in _OWN_PATH
        if len(_LEAN_NAMES) < 1024:
            _LEAN_NAMES[name] = lean
    return lean


class Client(redis.Redis):
    """A redis-py client whose pipelines are :class:`LeanPipeline`."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.client.Pipeline:
        return LeanPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def connect(url: str, *, retry: bool = True, tls_insecure: bool = False) -> redis.Redis:
    """A client for ``url``; raises :class:`InvalidInput` for a URL Hydra cannot use.

    ``rediss://`` certificates are verified unless ``tls_insecure`` (the CLI warns when it is set).
    """
    scheme = urlsplit(url).scheme
    options: dict = {"health_check_interval": 10, "socket_connect_timeout": 5}
    if tls_insecure and scheme in ("rediss", "redis+sentinel"):
        options["ssl_cert_reqs"] = "none"
    if retry:
        options["retry"] = _retry()
        options["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError]
    if scheme == "redis+sentinel":
        return _sentinel_master(url, options)
    if scheme not in ("redis", "rediss", "unix"):
        raise InvalidInput(f"not a Redis URL (want redis://, rediss:// or redis+sentinel://): {redact(url)}")
    try:
        return Client.from_url(url, **options)
    except ValueError as exc:
        raise InvalidInput(f"bad Redis URL {redact(url)}: {exc}") from None


def _sentinel_master(url: str, options: dict) -> redis.Redis:
    from redis.sentinel import Sentinel

    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path or not parts.hostname:
        raise InvalidInput(f"sentinel URL needs hosts and a service name: {redact(url)}")
    hosts = []
    for hostport in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "26379")
        hosts.append((host, int(port or 26379)))
    auth: dict[str, Any] = {}
    if parts.password:
        auth = {"password": unquote(parts.password), "username": unquote(parts.username or "") or None}
    db = int(path[1]) if len(path) > 1 else 0
    sentinel = Sentinel(hosts, sentinel_kwargs=auth, socket_connect_timeout=5)
    return sentinel.master_for(path[0], redis_class=Client, db=db, **auth, **options)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for logs and error messages."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def check_reachable(client: redis.Redis, url: str) -> None:
    """Raise :class:`RedisUnavailable` with a one-line reason if Redis does not answer."""
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} refused the credentials: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact(url)}: {exc}") from None
    except redis.ResponseError as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} answered with an error: {exc}") from None
