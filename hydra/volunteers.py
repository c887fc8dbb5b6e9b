"""Per-volunteer Redis credentials: an ACL user each, with only what a worker needs.

A volunteer user may touch only ``rq:*`` and ``hydra:*`` keys and the ``rq:*`` and
``hydra-socketio`` channels, and may run the commands rq's worker and Hydra's use. Everything
dangerous is off: ``CONFIG``, ``FLUSHALL``/``FLUSHDB``, ``KEYS``, ``DEBUG``, ``SHUTDOWN``, ``ACL``
(except ``ACL WHOAMI``), ``MODULE``, ``SCRIPT FLUSH``/``KILL``, ``SELECT`` (so no other database)
and the rest of ``@dangerous`` and ``@admin``.

What this does not do: a volunteer still writes Hydra's keys (that is how results arrive), so a
malicious volunteer with its own Redis client could damage job records; result verification
(``--verify``) catches wrong results from the worker code path, not a hand-crafted attack on Redis.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from urllib.parse import quote, urlsplit

from redis import Redis
from redis.exceptions import ResponseError

from hydra import keys
from hydra.errors import InvalidInput

NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
PREFIX = "volunteer-"

# fmt: off
RULES = [
    "~rq:*", "~hydra:*", "&rq:*", "&hydra-socketio",
    "+@all", "-@dangerous", "-@admin",
    "+info", "+client|setname", "+client|info", "+client|getname", "+client|id", "+acl|whoami",
    # SCRIPT only to load Hydra's scripts (no FLUSH, no KILL): 6.2 cannot remove single subcommands.
    "-script", "+script|load", "+script|exists",
    "-select", "-keys", "-swapdb", "-move", "-monitor",
]
# fmt: on
# Commands Redis 6.2 does not know: they can only be named on 7 and later.
RULES_SINCE_7 = ["-function"]


def user_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput(
            f"a volunteer name is 1-32 lowercase letters, digits, - or _, starting with a letter: {name!r}"
        )
    return PREFIX + name


def add_volunteer(redis: Redis, name: str, operator_url: str, public_host: str | None = None) -> str:
    """Create (or reset) the volunteer's ACL user; return the URL to hand over."""
    user = user_name(name)
    password = secrets.token_urlsafe(24)
    rules = RULES + (RULES_SINCE_7 if int(redis.info("server")["redis_version"].split(".")[0]) >= 7 else [])
    redis.acl_setuser(
        user,
        enabled=True,
        reset_keys=True,
        reset_channels=True,
        reset_passwords=True,
        passwords=[f"+{password}"],
        commands=[r for r in rules if r[0] in "+-"],
        keys=[r[1:] for r in rules if r[0] == "~"],
        channels=[r[1:] for r in rules if r[0] == "&"],
    )
    redis.sadd(keys.VOLUNTEERS, name)
    parts = urlsplit(operator_url)
    host = public_host or parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{quote(user)}:{quote(password)}@{host}{port}{parts.path or '/0'}{query}"


def remove_volunteer(redis: Redis, name: str) -> int:
    """Revoke the user, cut its connections and make its workers' chunks go back to the queue.

    Returns the number of that volunteer's workers whose chunks the monitor will requeue at once.
    """
    user = user_name(name)
    if not redis.acl_deluser(user) and not redis.sismember(keys.VOLUNTEERS, name):
        raise InvalidInput(f"no volunteer {name!r}")
    redis.srem(keys.VOLUNTEERS, name)
    with contextlib.suppress(ResponseError):  # deleting the user already closed its connections
        redis.execute_command("CLIENT", "KILL", "USER", user)
    workers = []
    for worker in (w.decode() for w in redis.zrange(keys.WORKERS, 0, -1)):
        if redis.hget(keys.worker(worker), "user") == user.encode():
            workers.append(worker)
    if workers:
        # No heartbeat: the monitor's next pass requeues whatever these workers held.
        redis.delete(*[keys.worker_alive(w) for w in workers])
    return len(workers)


def list_volunteers(redis: Redis) -> list[str]:
    return sorted(v.decode() for v in redis.smembers(keys.VOLUNTEERS))
