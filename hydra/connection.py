"""Redis connections: one function turns a URL into a client that rides out restarts.

Accepted URLs: ``redis://``, ``rediss://`` (TLS, certificates verified unless asked otherwise),
``unix://`` and ``redis+sentinel://[user:pass@]host:port[,host:port…]/service[/db]``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from hydra.errors import InvalidInput, RedisUnavailable

# Commands retry through a restart of a few seconds (AOF reload included) before giving up.
_RETRY_ATTEMPTS = 12


def _retry() -> Retry:
    return Retry(
        ExponentialBackoff(cap=2.0, base=0.05),
        _RETRY_ATTEMPTS,
        supported_errors=(redis.ConnectionError, redis.TimeoutError),
    )


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
        return redis.Redis.from_url(url, **options)
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
    auth = {}
    if parts.password:
        auth = {"password": unquote(parts.password), "username": unquote(parts.username or "") or None}
    db = int(path[1]) if len(path) > 1 else 0
    sentinel = Sentinel(hosts, sentinel_kwargs=auth, socket_connect_timeout=5)
    return sentinel.master_for(path[0], db=db, **auth, **options)


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
