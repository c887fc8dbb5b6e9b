"""Per-volunteer Redis credentials: one ACL user each, reaching only that volunteer's own keys.

A volunteer's user (``volunteer-<name>``) may run, and only on its own keys (see :mod:`hydra.keys`):

* ``BLPOP``/``LPOP``/``LLEN`` on its workers' inboxes ``hydra:v:<user>:w:*:inbox`` (it cannot push:
  only the trusted side gives work);
* ``RPUSH``/``LLEN`` on its outbox ``hydra:v:<user>:outbox`` (the only key it can create);
* ``PEXPIRE`` on its workers' heartbeat keys ``hydra:v:<user>:w:*:alive`` (the monitor creates
  them, so a volunteer cannot create keys that way);
* ``GET``/``EXISTS`` on ``rq:suspended`` (rq's command line checks it), read-only;
* ``PING``, ``ACL WHOAMI`` and the connection handshake.

Nothing else: no other key (so no job state, no other volunteer's keys, host names or addresses),
no ``SCAN``/``KEYS``/``INFO``/``RANDOMKEY``/``CLIENT LIST``, no scripts, no pub/sub channels (so no
rq worker commands and no page events), no admin command. These per-key command rules are Redis 7
ACL selectors; on Redis 6.2 (only for ``--local`` clusters on one machine) the same keys and
commands are granted without the per-key split.

Users are saved to Redis's ACL file when one is configured (``aclfile``), so they survive a restart.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from redis import Redis
from redis.exceptions import ResponseError

from hydra import keys
from hydra.errors import InvalidInput

NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
PREFIX = "volunteer-"

HANDSHAKE = [
    "+ping",
    "+hello",
    "+auth",
    "+acl|whoami",
    "+client|setinfo",
    "+client|setname",
    "+client|getname",
    "+client|id",
    # rq's command line checks rq:suspended inside MULTI/EXEC; a transaction runs only allowed commands.
    "+multi",
    "+exec",
    "+discard",
]


def user_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput(
            f"a volunteer name is 1-32 lowercase letters, digits, - or _, starting with a letter: {name!r}"
        )
    return PREFIX + name


def acl_rules(user: str, *, selectors: bool = True) -> list[str]:
    """The ACL rules of a volunteer user (after ``reset``), as ``ACL SETUSER`` arguments."""
    own = keys.volunteer_prefix(user)
    base = ["resetchannels", "resetkeys", "-@all", *HANDSHAKE]
    if selectors:
        return [
            *base,
            f"(~{own}w:*:inbox +blpop +lpop +llen)",
            f"(~{own}outbox +rpush +llen)",
            f"(~{own}w:*:alive +pexpire)",
            "(%R~rq:suspended +get +exists)",
        ]
    return [*base, f"~{own}*", "~rq:suspended", "+blpop", "+lpop", "+llen", "+rpush", "+pexpire", "+get", "+exists"]


def redis_major(redis: Redis) -> int:
    return int(str(redis.info("server")["redis_version"]).split(".")[0])


def create_user(redis: Redis, user: str, password: str) -> None:
    redis.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", *acl_rules(user, selectors=redis_major(redis) >= 7)
    )
    save_acl(redis)


def save_acl(redis: Redis) -> None:
    """Write the users to the ACL file, if the server has one (so they survive a restart)."""
    with contextlib.suppress(ResponseError):
        if redis.config_get("aclfile").get("aclfile"):
            redis.execute_command("ACL", "SAVE")


def volunteer_url(
    operator_url: str, user: str, password: str, public_host: str | None = None, public_port: int | None = None
) -> str:
    """The URL to hand a volunteer: the operator's URL with the volunteer's user, and nothing private.

    The scheme, port and ``ssl_ca_certs`` stay as the operator's (so a TLS deployment gives a
    ``rediss://`` URL that works as printed, once the volunteer has the CA file at that path).
    """
    parts = urlsplit(operator_url)
    host = public_host or parts.hostname or "127.0.0.1"
    port = public_port or parts.port
    query = [(k, v) for k, v in parse_qsl(parts.query) if k in ("ssl_ca_certs", "ssl_cert_reqs")]
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{parts.scheme}://{quote(user)}:{quote(password)}@{host}{f':{port}' if port else ''}/0{suffix}"


def add_volunteer(
    redis: Redis, name: str, operator_url: str, public_host: str | None = None, *, rotate: bool = False
) -> str:
    """Create the volunteer's ACL user and return the URL to hand over.

    An existing volunteer is refused unless ``rotate``: then its password changes (the old URL
    stops working, its connections are closed).
    """
    user = user_name(name)
    exists = bool(redis.sismember(keys.VOLUNTEERS, name)) or redis.acl_getuser(user) is not None
    if exists and not rotate:
        raise InvalidInput(f"volunteer {name!r} exists; use --rotate to give it a new password")
    password = secrets.token_urlsafe(24)
    create_user(redis, user, password)
    if exists:
        with contextlib.suppress(ResponseError):
            redis.execute_command("CLIENT", "KILL", "USER", user)
    redis.sadd(keys.VOLUNTEERS, name)
    redis.hdel(keys.CUTOFF, user)
    return volunteer_url(operator_url, user, password, public_host)


def remove_volunteer(redis: Redis, name: str) -> int:
    """Revoke the volunteer: its workers are told to stop, its user deleted, its connections closed,
    and what it held or had queued goes back to other volunteers. Returns how many workers it had."""
    from hydra.collector import Collector
    from hydra.settings import Settings

    user = user_name(name)
    if not redis.sismember(keys.VOLUNTEERS, name) and redis.acl_getuser(user) is None:
        raise InvalidInput(f"no volunteer {name!r}")
    workers = [w.decode() for w in redis.smembers(keys.user_workers(user))]
    for worker in workers:
        _, wid = keys.split_worker(worker)
        redis.rpush(keys.inbox(user, wid), json.dumps({"t": "stop", "reason": "this volunteer was revoked"}))
    redis.acl_deluser(user)
    save_acl(redis)
    redis.srem(keys.VOLUNTEERS, name)
    with contextlib.suppress(ResponseError):  # deleting the user already closed its connections
        redis.execute_command("CLIENT", "KILL", "USER", user)
    collector = Collector(redis, Settings.from_env())
    for worker in workers:
        collector.gone(worker, "revoked", count_attempt=False)
    redis.delete(keys.outbox(user))
    return len(workers)


def list_volunteers(redis: Redis) -> list[dict[str, object]]:
    """Each volunteer: name, live workers, state (active, quarantined or cut off) and why."""
    out = []
    for name in sorted(v.decode() for v in redis.smembers(keys.VOLUNTEERS)):
        user = PREFIX + name
        state, reason = "active", ""
        if redis.sismember(keys.QUARANTINE, user):
            state, reason = "quarantined", (redis.hget(keys.volunteer(user), "reason") or b"").decode()
        elif cut := redis.hget(keys.CUTOFF, user):
            state, reason = "cut off", cut.decode().partition(" ")[2]
        out.append(
            {
                "name": name,
                "user": user,
                "workers": int(redis.scard(keys.user_workers(user))),
                "state": state,
                "reason": reason,
            }
        )
    return out
