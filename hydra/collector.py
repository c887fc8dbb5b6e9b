"""Collection: the trusted side reads what volunteers send, checks it, and alone changes job state.

Each volunteer pushes messages to its own outbox (``hydra:v:<user>:outbox``); its identity is the
ACL user that owns that key, never a name inside a message. :meth:`Collector.drain` pops and
handles them: ``hello`` (a worker joins: its heartbeat key is created, it is welcomed and given
work), ``result`` (checked against the assignment it quotes and the task's own bounds, then
accepted exactly once by the ACCEPT script), ``error`` (the kernel raised: the chunk goes back,
counting one attempt) and ``bye``.

Everything a volunteer sends is hostile until checked. A message that is malformed, too large,
quotes a chunk its worker was not given, or carries impossible sums is refused and recorded
(``hydra:errors``); a volunteer that floods its outbox, sends a message larger than any result
can be, or keeps sending refused messages is cut off on its own: its ACL user is disabled, its
connections closed, its work requeued and the reason kept in ``hydra:cutoff``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import redis as redis_lib
from redis import Redis

from hydra import keys
from hydra.carbon import accounting
from hydra.dispatch import DEPTH, PEEK_HEADS, Dispatcher, Peek, WorkerView, volunteer_rates
from hydra.errors import InvalidInput
from hydra.events import Events
from hydra.scripts import Scripts, job_script_keys
from hydra.settings import Settings
from hydra.tasks import known as known_task
from hydra.tasks import reduce
from hydra.tasks.base import ChunkResult

log = logging.getLogger(__name__)

WORKER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
JOB_ID = re.compile(r"[0-9a-f]{12}")
# No honest message is larger than the largest result blob (a 4 Mpixel stripe) plus its header.
MAX_MESSAGE = 20 * 1024 * 1024
MAX_HEADER = 64 * 1024
# An outbox this long is not a worker talking, it is a flood.
MAX_OUTBOX = 1000
# Volunteers remembered as owed arrival stamps (see drain); past this many the debts are forgotten.
MAX_UNSTAMPED = 100_000
# A debt of stamps is paid only by stamps heard within this many seconds of the take that incurred
# it (the listener forwards a notice within milliseconds); later stamps are for later messages. So
# messages pushed before any monitor listened (found by its first sweep, never to be stamped) do not
# leave their volunteer's later results unstamped for good.
STAMP_GRACE = 0.5
# A message read before the listener's stamp came arrived after its outbox was last taken: it is
# timed at the middle of that window, cut to this many seconds (see Collector._unheard_arrival).
UNHEARD_WINDOW = 1.0
# This many refused messages within STRIKE_WINDOW seconds cut a volunteer off.
MAX_STRIKES = 20
STRIKE_WINDOW = 10.0
# Stale results a volunteer may send within STRIKE_WINDOW before they count as strikes: this many,
# plus STALE_PER_WORKER for each of its live workers (each copy race leaves one stale result behind).
STALE_ALLOWED = 2 * MAX_STRIKES
STALE_PER_WORKER = 10
BATCH = 100
# Live workers one volunteer may have: a hello beyond it is refused (and counts as a strike).
MAX_WORKERS = int(os.environ.get("HYDRA_MAX_WORKERS_PER_VOLUNTEER", "256"))
RATE_HALF_LIFE = 4.0
WORKER_RECORD_TTL = 24 * 3600


def record_error(redis: Redis, message: str) -> None:
    log.warning("%s", message)
    with contextlib.suppress(redis_lib.RedisError):
        pipe = redis.pipeline()
        pipe.lpush(keys.ERRORS, f"{time.time():.3f} {message}"[:2000])
        pipe.ltrim(keys.ERRORS, 0, keys.ERRORS_KEPT - 1)
        pipe.execute()


def digest(sums: dict[str, int], names: tuple[str, ...], blob: bytes) -> str:
    """What two volunteers' results of the same chunk must share: a hash of the sums and the blob."""
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}={sums[name]};".encode())
    h.update(blob)
    return h.hexdigest()[:32]


class Refused(Exception):
    """A message that is not acceptable; the reason is recorded and counts as a strike."""


@dataclasses.dataclass
class _Result:
    """One result message on its way through :meth:`Collector.results`."""

    user: str
    wid: str
    name: str
    message: dict[str, Any]
    blob: bytes
    arrived: float | None
    outcome: str = ""
    job_id: str = ""
    chunk_id: str = ""
    nonce: int = 0
    spec: Any = None
    chunk: dict[str, Any] = dataclasses.field(default_factory=dict)
    speed: list[Any] = dataclasses.field(default_factory=list)
    check: bool = False
    first: int = 0
    count: int = 0
    at: float = 0.0
    result: ChunkResult | None = None

    @classmethod
    def of(cls, user: str, wid: str, message: dict[str, Any], blob: bytes, arrived: float | None) -> _Result:
        return cls(user, wid, keys.worker_name(user, wid), message, blob, arrived)


class Collector:
    def __init__(
        self, redis: Redis, settings: Settings, dispatcher: Dispatcher | None = None, events: Events | None = None
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = Scripts(redis)
        self.dispatcher = dispatcher or Dispatcher(redis, settings, self.scripts)
        self.events = events or Events(None)
        self._strikes: dict[str, list[float]] = {}
        # user → messages handled before their arrival stamp came, and when they were taken
        self._unstamped: dict[str, tuple[int, float]] = {}
        self._takes: dict[str, tuple[float, float]] = {}  # user → when its outbox was taken, the last two times
        self._watts = accounting.watts_from_env(os.environ)

    # -- reading outboxes ---------------------------------------------------------------------------
    def drain(self, user: str, arrivals: collections.deque[float] | None = None) -> int:
        """Handle what waits in the volunteer's outbox; returns how many messages.

        ``arrivals``: when each message was pushed, as the monitor's listener heard it (the
        trusted clock for speeds); missing ones count as arriving now."""
        if not _plausible_user(user):
            return 0
        box = keys.outbox(user)
        handled = 0
        batch: list[bytes] | None = self._taken(
            user, self.scripts.take(keys=[keys.CUTOFF, box], args=[user, BATCH, MAX_OUTBOX])
        )
        while True:
            if batch is None:
                reply = self.scripts.take(keys=[keys.CUTOFF, box], args=[user, BATCH, MAX_OUTBOX])
                batch = reply[2] if int(reply[0]) == 0 else []
            if not batch:
                return handled
            handled += len(batch)
            if "cut off" in self.handle_many(user, self._stamp(user, batch, arrivals)):
                return handled
            if len(batch) < BATCH:  # the box was emptied; what arrives since comes with its own notice
                return handled
            batch = None

    def drain_many(self, arrivals: dict[str, collections.deque[float] | None]) -> int:
        """:meth:`drain` for several volunteers at once; returns how many messages.

        Their outboxes are taken in one round trip, and the results among them are handled as one
        batch (:meth:`results`: two round trips more), so the trusted side's round trips per result
        shrink as more volunteers answer at once; so are the hellos of volunteers that sent only
        hellos (:meth:`hellos`). A volunteer whose messages are of several kinds is handled on its
        own, and one whose outbox held more than one take is drained on its own as well."""
        users = [user for user in arrivals if _plausible_user(user)]
        if len(users) <= 1:
            return sum(self.drain(user, arrivals[user]) for user in users)
        pipe = self.redis.pipeline(transaction=False)
        for user in users:
            pipe.evalsha(self.scripts.take.sha, 2, keys.CUTOFF, keys.outbox(user), user, BATCH, MAX_OUTBOX)
        replies = pipe.execute(raise_on_error=False)
        handled = 0
        together: list[tuple[str, list[tuple[bytes, float | None]], list[Any]]] = []  # results: _Result
        joining: list[tuple[str, list[tuple[bytes, float | None]], list[Any]]] = []  # hellos: (user, wid, message)
        alone: list[str] = []  # drained on their own, after the batch
        for user, reply in zip(users, replies, strict=True):
            if isinstance(reply, redis_lib.exceptions.NoScriptError):  # Redis restarted: no script cache
                alone.append(user)
                continue
            if isinstance(reply, Exception):
                record_error(self.redis, f"collector: taking {user}'s outbox failed: {reply}")
                continue
            batch = self._taken(user, reply)
            if not batch:
                continue
            handled += len(batch)
            stamped = self._stamp(user, batch, arrivals[user])
            parsed = [_as_result(raw) for raw, _ in stamped]
            if all(parsed):
                items = [_Result.of(user, *p, arrived) for p, (_, arrived) in zip(parsed, stamped, strict=True) if p]
                together.append((user, stamped, items))
            elif all(hellos := [_as_hello(raw) for raw, _ in stamped]):
                joining.append((user, stamped, [(user, h[0], h[1]) for h in hellos if h]))
            elif "cut off" in self.handle_many(user, stamped):
                continue
            if len(batch) == BATCH:
                alone.append(user)
        if joining:
            self._together(joining, self.hellos, "hellos")
        if together:
            self._together(together, self._results, "results")
        for user in alone:  # (one cut off meanwhile finds its outbox refused by TAKE)
            handled += self.drain(user, arrivals[user])
        return handled

    def _taken(self, user: str, reply: Any) -> list[bytes]:
        """The messages a ``TAKE`` of ``user``'s outbox returned; none where the volunteer is cut off
        (what it pushed before its connections closed is dropped) or its outbox is a flood (it is
        cut off now)."""
        if int(reply[0]) == 1:
            self.redis.delete(keys.outbox(user))
            return []
        if int(reply[0]) == 2:
            self.cut_off(user, f"outbox held more than {MAX_OUTBOX} messages (flood)")
            return []
        return reply[2]

    def _together(
        self,
        together: list[tuple[str, list[tuple[bytes, float | None]], list[Any]]],
        handle: Callable[[list[Any]], Any],
        what: str,
    ) -> None:
        """Several volunteers' results (or hellos) as one batch; if that batch crashes its handler,
        each volunteer's messages are handled again on their own, so only the one whose messages
        crash it is held to account (what was done before the crash is found settled then)."""
        try:
            handle([item for _, _, items in together for item in items])
        except Exception:
            log.exception("collector: a batch of %d volunteers' %s crashed its handler", len(together), what)
            for user, stamped, _ in together:
                self.handle_many(user, stamped)

    def _stamp(
        self, user: str, batch: list[bytes], arrivals: collections.deque[float] | None
    ) -> list[tuple[bytes, float | None]]:
        """Pair each message taken from ``user``'s outbox with when it arrived.

        Stamps and messages come in the same order, but a drain may pop a message before the
        listener heard of it: that message is timed by :meth:`_unheard_arrival`, and its stamp, when
        it comes (within STAMP_GRACE), is skipped rather than paired with a later message (which
        would then look as if it arrived early, its worker far faster than it is, and get chunks far
        too big)."""
        now = time.time()
        if len(self._takes) >= MAX_UNSTAMPED:
            self._takes.clear()  # bounded: a forgotten take only makes an unstamped result count as now
        self._takes[user] = (self._takes.get(user, (now, now))[1], now)
        owed, taken = self._unstamped.pop(user, (0, now))
        while owed and arrivals and arrivals[0] <= taken + STAMP_GRACE:
            arrivals.popleft()
            owed -= 1
        if now > taken + STAMP_GRACE:
            owed = 0  # what is still owed will not come (pushed before the listener listened)
        stamped = []
        for raw in batch:
            arrived = arrivals.popleft() if arrivals else None
            owed += arrived is None
            stamped.append((raw, arrived))
        if owed:
            if len(self._unstamped) >= MAX_UNSTAMPED:
                self._unstamped.clear()  # bounded: a forgotten debt only makes a result count as now
            self._unstamped[user] = (owed, now)
        return stamped

    def handle(self, user: str, raw: bytes, arrived: float | None = None) -> str:
        """One message from ``user``. Never raises: a bad message is refused and recorded."""
        return self.handle_many(user, [(raw, arrived)])[0]

    def handle_many(self, user: str, messages: list[tuple[bytes, float | None]]) -> list[str]:
        """Messages from ``user`` in order, with when each arrived; returns each one's outcome ('' for
        those left unread after the volunteer was cut off). Runs of results are handled together
        (:meth:`results`), and so are runs of hellos (:meth:`hellos`). Never raises."""
        outcomes: list[str] = []
        results: list[tuple[int, Any]] = []  # (index, (wid, message, blob, arrived))
        hellos: list[tuple[int, Any]] = []  # (index, (user, wid, message))

        def flush() -> None:
            for run, handle, what in (
                (results, lambda batch: self.results(user, batch), "results"),
                (hellos, self.hellos, "hellos"),
            ):
                if not run:
                    continue
                try:
                    got = handle([r for _, r in run])
                except Exception as exc:  # whatever a hostile batch does, the trusted side goes on
                    log.exception("collector: %s from %s crashed their handler", what, user)
                    got = [self.strike(user, f"{what} could not be handled ({type(exc).__name__})")] * len(run)
                for (i, _), outcome in zip(run, got, strict=True):
                    outcomes[i] = outcome
                run.clear()

        for raw, arrived in messages:
            outcomes.append("")
            result = _as_result(raw)
            hello = None if result else _as_hello(raw)
            if (result and hellos) or (hello and results) or not (result or hello):
                flush()  # a run ends: handled before this message, in order
                if "cut off" in outcomes:
                    break
            if result:
                results.append((len(outcomes) - 1, (*result, arrived)))
            elif hello:
                hellos.append((len(outcomes) - 1, (user, hello[0], hello[1])))
            elif (outcome := self._handle_one(user, raw)) == "cut off":
                outcomes[-1] = outcome
                break
            else:
                outcomes[-1] = outcome
        flush()
        return outcomes

    def _handle_one(self, user: str, raw: bytes) -> str:
        """A message that is not a well-formed result (those go to :meth:`results`)."""
        if len(raw) > MAX_MESSAGE:
            self.cut_off(user, f"sent a message of {len(raw)} bytes (limit {MAX_MESSAGE})")
            return "cut off"
        message: Any = {}
        try:
            header, _, blob = raw.partition(b"\n")
            if len(header) > MAX_HEADER:
                raise Refused("message header too large")
            try:
                message = json.loads(header)
            except ValueError:
                raise Refused("message is not JSON") from None
            if not isinstance(message, dict):
                raise Refused("message is not a JSON object")
            wid = message.get("w")
            if not isinstance(wid, str) or not WORKER_ID.fullmatch(wid):
                raise Refused("bad worker id")
            kind = message.get("t")
            if kind == "hello":
                return self.hello(user, wid, message)
            if kind == "error":
                return self.error(user, wid, message)
            if kind == "bye":
                self.gone(keys.worker_name(user, wid), "left", count_attempt=False)
                return "bye"
            raise Refused(f"unknown message kind {str(kind)[:20]!r}")
        except Refused as exc:
            outcome = self.strike(user, str(exc))
            kind, wid = (message.get("t"), message.get("w")) if isinstance(message, dict) else (None, None)
            if outcome != "cut off" and kind in ("result", "error") and WORKER_ID.fullmatch(str(wid)):
                with contextlib.suppress(redis_lib.ResponseError):
                    self.dispatcher.fill(keys.worker_name(user, str(wid)))  # room for new work
            return outcome
        except Exception as exc:  # whatever a hostile message does, the trusted side goes on
            log.exception("collector: message from %s crashed its handler", user)
            return self.strike(user, f"message could not be handled ({type(exc).__name__})")

    def strike(self, user: str, reason: str) -> str:
        record_error(self.redis, f"refused a message from volunteer {user}: {reason}")
        now = time.monotonic()
        recent = [t for t in self._strikes.get(user, []) if now - t < STRIKE_WINDOW] + [now]
        self._strikes[user] = recent
        if len(recent) >= MAX_STRIKES:
            self.cut_off(user, f"{len(recent)} refused messages in {STRIKE_WINDOW:.0f} s (last: {reason})")
            return "cut off"
        return "refused"

    # -- hello and goodbye --------------------------------------------------------------------------
    def hello(self, user: str, wid: str, message: dict[str, Any]) -> str:
        """One worker's hello (a batch of one: see :meth:`hellos`)."""
        return self.hellos([(user, wid, message)])[0]

    def hellos(self, batch: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
        """Workers' hellos ``(user, wid, message)``, of one volunteer or many; returns each one's
        outcome ('' for those left unread after their volunteer was cut off).

        However many there are, they cost three round trips and their top-ups: one reads what every
        check needs, one the cluster speeds that the volunteers' last measured speeds replace (only
        where they have some), one writes every welcome; then :meth:`Dispatcher.fill_many` tops the
        new workers up, two round trips for as many as one peek of a job plans for (32). When many
        volunteers join at once (a deployment starts, or Redis came back and every heartbeat had
        lapsed) a worker joins in a few round trips' worth of time, not ten. A worker's second hello
        in the same batch is handled after the first, in a batch of its own, as one at a time."""
        outcomes = [""] * len(batch)
        cut: set[str] = set()
        seen: set[str] = set()
        later: list[int] = []  # second hellos of a worker already in this batch
        joining: list[tuple[int, str, str, str, dict[str, Any]]] = []  # index, user, wid, name, record
        for i, (user, wid, message) in enumerate(batch):
            if user in cut:
                continue
            name = keys.worker_name(user, wid)
            if name in seen:
                later.append(i)
                continue
            try:
                record = _hello_record(user, wid, message)
            except Refused as exc:
                outcomes[i] = self.strike(user, str(exc))
                cut |= {user} if outcomes[i] == "cut off" else set()
                continue
            seen.add(name)
            joining.append((i, user, wid, name, record))
        if not joining:  # every one refused (and so no second hello waits): nothing to read
            return outcomes
        users = list(dict.fromkeys(user for _, user, *_ in joining))
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.LIVE)
        for *_, name, _ in joining:
            pipe.zscore(keys.LIVE, name)
        for user in users:
            pipe.scard(keys.user_workers(user))
            pipe.sismember(keys.QUARANTINE, user)
            pipe.hgetall(keys.volunteer(user))
        replies = pipe.execute()
        live_count, live = int(replies[0]), replies[1 : 1 + len(joining)]
        per_user = replies[1 + len(joining) :]
        workers = {user: int(per_user[3 * k]) for k, user in enumerate(users)}
        quarantined = {user for k, user in enumerate(users) if per_user[3 * k + 1]}
        known = {user: volunteer_rates(per_user[3 * k + 2]) for k, user in enumerate(users)}
        self.dispatcher.learn(known)  # read just now: the top-up below need not read them again

        welcome: list[tuple[str, str, str, dict[str, Any]]] = []
        stops: list[tuple[str, str]] = []
        again: list[str] = []  # live workers saying hello again: what they held goes back first
        for (i, user, wid, name, record), was_live in zip(joining, live, strict=True):
            if user in cut:
                continue
            if was_live is None and workers[user] >= MAX_WORKERS:
                outcomes[i] = self.strike(user, f"hello: more than {MAX_WORKERS} live workers for one volunteer")
                cut |= {user} if outcomes[i] == "cut off" else set()
            elif user in quarantined:
                stops.append((user, wid))
                outcomes[i] = "quarantined"
            else:
                workers[user] += was_live is None
                again += [name] if was_live is not None else []
                welcome.append((user, wid, name, record))
                outcomes[i] = "hello"
        for name in again:
            self.gone(name, "said hello again", count_attempt=False)
        welcome = [w for w in welcome if w[0] not in cut]  # cut off by a later hello: gone already

        # The volunteer's last measured speeds on the worker's kind of device: its workers need no
        # probe again, and they join the cluster's speeds (the sum by task, and the ranking by
        # speed) in place of any they had.
        priors = {name: known[user].get(record["device"], {}) for user, _, name, record in welcome}
        rated = [
            (name, record["zone"], task, rate) for _, _, name, record in welcome for task, rate in priors[name].items()
        ]
        olds: list[Any] = []
        if rated:
            pipe = self.redis.pipeline(transaction=False)
            for name, _, task, _ in rated:
                pipe.zscore(keys.rates(task), name)
            olds = pipe.execute()

        now = time.time()
        beat = self.heartbeat_interval(live_count)
        # The worker refreshes it every `beat` seconds to 3 beats (Volunteer.beat): the same TTL here.
        alive_ms = int(max(self.settings.heartbeat_ttl, 3 * beat) * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for user, wid in stops:
            pipe.rpush(keys.inbox(user, wid), json.dumps({"t": "stop", "reason": "this volunteer is quarantined"}))
        for user, wid, name, record in welcome:
            pipe.delete(keys.worker(name), keys.inbox(user, wid), keys.held(name))
            speeds = {f"rate:{task}": rate for task, rate in priors[name].items()}
            fields: dict[Any, Any] = {**record, "joined": now, "last_seen": now, "chunks": 0, **speeds}
            pipe.hset(keys.worker(name), mapping=fields)
            pipe.expire(keys.worker(name), WORKER_RECORD_TTL)
            pipe.set(keys.alive(user, wid), 1, px=alive_ms)
            pipe.zadd(keys.LIVE, {name: now})
            pipe.sadd(keys.user_workers(user), name)
            for field in _counted_as(record["device"], record["zone"], record["tasks"]):
                pipe.hincrby(keys.COUNTS, field, 1)
            pipe.rpush(keys.inbox(user, wid), json.dumps({"t": "welcome", "worker": name, "heartbeat": beat}))
        for (name, zone, task, rate), old in zip(rated, olds, strict=True):
            pipe.zadd(keys.rates(task), {name: rate})
            moved = rate - float(old or 0.0)
            for total in _rate_totals(zone, task):
                pipe.hincrbyfloat(keys.COUNTS, total, moved)
        if len(pipe):
            pipe.execute()
        # Topped up as many at a time as one peek of a job can plan for (two round trips a group).
        group = max(PEEK_HEADS // DEPTH, 1)
        for start in range(0, len(welcome), group):
            self.dispatcher.fill_many(dict.fromkeys((name for _, _, name, _ in welcome[start : start + group]), None))
        if later:
            for i, outcome in zip(later, self.hellos([batch[i] for i in later]), strict=True):
                outcomes[i] = outcome
        return outcomes

    def heartbeat_interval(self, live: int) -> float:
        """Seconds between heartbeats with ``live`` workers: 1 s, longer past 20,000 workers so
        heartbeats stay near 20,000/s."""
        return max(self.settings.heartbeat_interval, live / 20000)

    def total_zone_rates(self) -> None:
        """Write the capacity by zone (``zrate:<zone>:<task>``) from every live worker's rates, where
        ``hydra:counts`` has rates but none by zone: a Redis from before the collector kept them. A
        monitor does it at start; after that the totals move with every change, as ``rate:<task>`` does."""
        fields = self.redis.hkeys(keys.COUNTS)
        if any(f.startswith(b"zrate:") for f in fields) or not any(f.startswith(b"rate:") for f in fields):
            return
        names = [n.decode() for n in self.redis.zrange(keys.LIVE, 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.worker(name))
        totals: dict[str, float] = {}
        for record in pipe.execute():
            zone = record.get(b"zone", b"").decode(errors="replace")
            for field, value in record.items():
                if field.startswith(b"rate:"):
                    by_zone = keys.zone_rate(zone, field.decode(errors="replace")[5:])
                    with contextlib.suppress(ValueError):  # a malformed record counts for nothing, as in gone
                        totals[by_zone] = totals.get(by_zone, 0.0) + float(value)
        if totals:
            self.redis.hset(keys.COUNTS, mapping=totals)

    def gone(self, name: str, reason: str, *, count_attempt: bool = True) -> int:
        """The worker is gone (heartbeat expired, left, cut off): what it held goes back. Returns how many."""
        user, wid = keys.split_worker(name)
        info = self.redis.hgetall(keys.worker(name))
        if self.redis.zrem(keys.LIVE, name) and info:
            pipe = self.redis.pipeline()
            zone = info.get(b"zone", b"").decode(errors="replace")
            fields = _counted_as(info.get(b"device", b"cpu").decode(errors="replace"), zone, info.get(b"tasks", b"{}"))
            rates: list[Any] = []
            for field, value in info.items():
                if field.startswith(b"rate:"):
                    task = field.decode(errors="replace")[5:]
                    pipe.zrem(keys.rates(task), name)
                    with contextlib.suppress(ValueError):  # a malformed record still lets go of its work
                        rates += [x for total in _rate_totals(zone, task) for x in (total, float(value))]
            self.scripts.count_out(keys=[keys.COUNTS], args=[len(fields), *fields, *rates], client=pipe)
            pipe.execute()
        held = []
        for member in self.redis.smembers(keys.held(name)):
            with contextlib.suppress(ValueError):
                held.append(keys.parse_assignment(member.decode()))
        # Only the assignment the worker was given first can have been running: the other waited in
        # its inbox, and a chunk that never ran must not count an attempt for its holder's death.
        running = min(held, key=lambda a: self._assigned_at(name, *a), default=None)
        requeued = 0
        for job_id, chunk_id, nonce in held:
            counts = count_attempt and (job_id, chunk_id, nonce) == running
            reply = self.scripts.requeue(
                keys=[*job_script_keys(job_id), keys.held(name)],
                args=[job_id, chunk_id, nonce, name, time.time(), f"worker {name} {reason}", int(counts), user],
            )
            requeued += int(reply[0]) in (1, 3)
            if int(reply[0]) == 2:
                self.events.job_progress(self.redis, job_id, force=True)
        pipe = self.redis.pipeline()
        pipe.zrem(keys.IDLE, name)
        pipe.srem(keys.user_workers(user), name)
        pipe.delete(keys.alive(user, wid), keys.inbox(user, wid), keys.held(name))
        pipe.hset(keys.worker(name), mapping={"gone": time.time(), "gone_reason": reason})
        pipe.execute()
        if requeued:
            log.info("worker %s %s: %d chunk(s) requeued", name, reason, requeued)
            self.dispatcher.serve_idle()
        return requeued

    # -- results ------------------------------------------------------------------------------------
    def result(self, user: str, wid: str, message: dict[str, Any], blob: bytes, arrived: float | None = None) -> str:
        """One result message (a batch of one: see :meth:`results`)."""
        return self.results(user, [(wid, message, blob, arrived)])[0]

    def results(self, user: str, batch: list[tuple[str, dict[str, Any], bytes, float | None]]) -> list[str]:
        """Check, accept and time a batch of one volunteer's results ``(wid, message, blob, arrived)``;
        returns each result's outcome. See :meth:`_results`."""
        items = [_Result.of(user, wid, message, blob, arrived) for wid, message, blob, arrived in batch]
        self._results(items)
        return [item.outcome for item in items]

    def _results(self, items: list[_Result]) -> None:
        """Check, accept and time a batch of results (of one volunteer or several), setting each
        one's outcome.

        The round trips are per batch, not per result: one reads every quoted assignment and speed
        record, one writes CO2, acceptance (with the counters that depend on its outcome) and speeds
        and reads what topping up needs; then each worker that answered is topped up once."""
        live: list[_Result] = []
        refusals, states, peeked = self._read_assignments(items, top_up=True)
        for item, got in zip(items, refusals, strict=True):
            if item.outcome:  # its volunteer was cut off by an earlier message of this batch
                continue
            if got is None and item.spec is None:
                got = Refused(f"job {item.job_id} cannot be read here")
            if isinstance(got, Refused):
                item.outcome = self._refused(item.user, item, got)
            else:
                item.outcome = self._check_result(item.user, item)
                if not item.outcome:
                    live.append(item)
            if item.outcome == "cut off":  # the rest of its messages go unread, as its outbox does
                for rest in items:
                    if rest.user == item.user:
                        rest.outcome = rest.outcome or "cut off"
                live = [i for i in live if i.outcome != "cut off"]
        if live:
            # A worker with a refused result was topped up then; the others are, with their acceptance.
            topped = {item.name for item in items if item.outcome}
            self._accept(live, {n: s for n, s in states.items() if n not in topped}, peeked)

    def _read_assignments(
        self, items: list[_Result], *, top_up: bool = False
    ) -> tuple[list[Refused | None], dict[str, list[Any]], dict[str, tuple[Any, int]]]:
        """Fill each item's job, chunk, nonce, chunk record, spec, check decision and speed record in
        one round trip; an item whose worker does not hold what it quotes gets Refused instead.

        With ``top_up``, the same round trip reads what topping the workers up needs (their
        :meth:`Dispatcher.queue_state`, the jobs' peeks), returned by worker and by job."""
        pipe = self.redis.pipeline(transaction=False)
        # Where each item's own replies are (two; one where its worker's held set is read whole, to top
        # it up), or why it is refused already.
        queued: list[Refused | int] = []
        whole = [False] * len(items)  # which items' workers have their held set read whole
        shared: dict[tuple[str, ...], int] = {}  # where what items share (a job's, a worker's) is: read once
        for i, item in enumerate(items):
            job_id, chunk_id, nonce = item.message.get("job"), item.message.get("chunk"), item.message.get("a")
            if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
                queued.append(Refused("bad job id"))
                continue
            if type(chunk_id) is not int or type(nonce) is not int or chunk_id < 0 or nonce < 0:
                queued.append(Refused("bad chunk or assignment number"))
                continue
            item.job_id, item.chunk_id, item.nonce = job_id, str(chunk_id), nonce
            item.spec = self.dispatcher.spec(job_id)
            whole[i] = top_up and item.spec is not None
            queued.append(len(pipe))
            if not whole[i]:
                pipe.sismember(keys.held(item.name), keys.assignment(job_id, chunk_id, nonce))
            pipe.hget(keys.chunks(job_id), chunk_id)
            if ("job", job_id) not in shared:
                shared["job", job_id] = len(pipe)
                pipe.hmget(keys.job(job_id), "verify", "salt")
            if ("clean", item.user) not in shared:
                shared["clean", item.user] = len(pipe)
                pipe.hget(keys.volunteer(item.user), "clean")
            if item.spec is not None and ("speed", item.name, item.spec.task.name) not in shared:
                shared["speed", item.name, item.spec.task.name] = len(pipe)
                # Topping up reads the worker's whole record: its speed fields are taken from there.
                self._queue_speed_record(pipe, item.name, item.spec.task.name, whole_record_read=top_up)
        names = list(dict.fromkeys(item.name for item in items if item.spec is not None)) if top_up else []
        jobs = list(dict.fromkeys(item.job_id for item in items if item.spec is not None)) if top_up else []
        states_at = len(pipe)
        for name in names:
            self.dispatcher.queue_state(pipe, name)
        asked = [self.dispatcher.queue_peek(pipe, job_id, len(names)) for job_id in jobs]
        replies = pipe.execute(raise_on_error=False) if len(pipe) else []
        for error in (r for r in replies[:states_at] if isinstance(r, Exception)):
            raise error

        states = {name: replies[states_at + 4 * i : states_at + 4 * i + 4] for i, name in enumerate(names)}
        out: list[Refused | None] = []
        for item, at, whole_read in zip(items, queued, whole, strict=True):
            if isinstance(at, Refused):
                out.append(at)
                continue
            if whole_read:
                assignments = states[item.name][3]
                if isinstance(assignments, Exception):
                    raise assignments
                held = keys.assignment(item.job_id, item.chunk_id, item.nonce).encode() in assignments
                raw = replies[at]
            else:
                held, raw = replies[at : at + 2]
            mode, salt = replies[shared["job", item.job_id]]
            clean = replies[shared["clean", item.user]]
            if item.spec is not None:
                task = item.spec.task.name
                speed_at = shared["speed", item.name, task]
                if top_up:
                    record = states[item.name][0]
                    record = record if isinstance(record, dict) else {}
                    item.speed = [[record.get(f.format(task).encode()) for f in self._SPEED_FIELDS], replies[speed_at]]
                else:
                    item.speed = replies[speed_at : speed_at + 2]
            out.append(self._held(item, held, raw, mode, salt, clean))
        peeked = dict(zip(jobs, zip(replies[states_at + 4 * len(names) :], asked, strict=True), strict=True))
        return out, states, peeked

    def _held(self, item: _Result, held: Any, raw: bytes | None, mode: Any, salt: Any, clean: Any) -> Refused | None:
        where = f"job {item.job_id} chunk {item.chunk_id}"
        if raw is None:
            return Refused("no such chunk" if held else f"{where} was not assigned to {item.name} (stale or forged)")
        item.chunk = json.loads(raw)
        if not held:
            holders = (item.chunk.get("holders") or {}).values()
            if any(h.get("nonce") == item.nonce for h in holders):
                return Refused(f"{where} was not assigned to {item.name}: it quotes another's live assignment")
            return Refused(f"{where} was not assigned to {item.name} (stale or forged)")
        item.check = _check_decision(mode, salt, int(clean or 0), item.job_id, item.chunk_id, item.user)
        return None

    def _refused(self, user: str, item: _Result, exc: Refused) -> str:
        if "stale" in str(exc) or "no such chunk" in str(exc):
            issued, workers = self._issued(user, item.message)
            if issued:
                # Normal after a requeue, a lost race of copies or a job's end; not held against
                # anyone unless it repeats past what its workers explain. The worker has room again.
                self.dispatcher.fill(item.name)
                return self.strike(user, str(exc)) if self._stale_flood(user, workers) else "stale"
        outcome = self.strike(user, str(exc))
        if outcome != "cut off":
            with contextlib.suppress(redis_lib.ResponseError):
                self.dispatcher.fill(item.name)  # room for new work
        return outcome

    def _check_result(self, user: str, item: _Result) -> str:
        """'' if the result is well formed for its chunk; else it is refused, the chunk requeued."""
        task = item.spec.task
        item.first, item.count = int(item.chunk["first"]), int(item.chunk["count"])
        sums = item.message.get("sums")
        try:
            if not isinstance(sums, dict) or set(sums) != set(task.sums):
                raise InvalidInput(f"sums must be exactly {list(task.sums)}")
            if any(type(v) is not int or abs(v) >= 2**63 for v in sums.values()):
                raise InvalidInput("sums must be 64-bit integers")
            if len(item.blob) > task.max_blob_bytes(item.spec.params, item.count):
                raise InvalidInput(f"result blob of {len(item.blob)} bytes is over the chunk's bound")
            item.result = ChunkResult(sums=dict(sums), blob=item.blob)
            task.check_result(item.spec.params, item.count, item.result)
            task.check_sums(item.spec.params, item.first, item.count, sums)
            task.check_blob(item.spec.params, item.first, item.count, item.blob)
        except (InvalidInput, ValueError) as exc:
            reason = f"result refused: {exc}"
            self._requeue(item.job_id, item.chunk_id, item.nonce, item.name, reason, count_attempt=True)
            self.dispatcher.fill(item.name)
            return self.strike(user, f"job {item.job_id} chunk {item.chunk_id}: {exc}")
        return ""

    def _accept(self, items: list[_Result], states: dict[str, list[Any]], peeked: dict[str, tuple[Any, int]]) -> None:
        """Bill, accept and time checked results, and top their workers up, in one round trip; then
        settle what followed. ``states`` and ``peeked``: what topping up needs, as read before."""
        pipe = self.redis.pipeline(transaction=False)
        speeds: dict[tuple[str, str], list[Any]] = {}  # a worker's record as its earlier results here left it
        accepts: list[tuple[int, list[str], list[Any]]] = []
        for item in items:
            spec, task = item.spec, item.spec.task
            speed = speeds.setdefault((item.name, task.name), item.speed)
            info = speed[0]
            now = time.time()
            item.at = float(((item.chunk.get("holders") or {}).get(item.name) or {}).get("at", now))
            last = float(info[0]) if info[0] else None
            start = max(item.at, last or 0.0)
            if item.arrived is None:
                arrived = self._unheard_arrival(item.user, start, now)
            else:
                arrived = min(item.arrived, now)
                if arrived <= start:  # a stamp from before the chunk could start is not this result's
                    arrived = max(now, start)
            sums = item.result.sums
            user = item.user
            args: list[Any] = [item.job_id, item.chunk_id, item.nonce, item.name, user, f"{now:.6f}"]
            args += [digest(sums, task.sums, item.blob), item.blob, int(item.check)]
            args += [task.display_size(spec.params, item.first, item.count), f"done:{task.display_unit}"]
            # CO2 is billed by ACCEPT itself, for any result of an assignment the worker holds.
            work = task.work(spec.params, spec.data, item.first, item.count)
            carbon = self._carbon(item, arrived, speed, work)
            args += accounting.totals_args(user, carbon) if carbon is not None else [""] * 6
            args += reduce.lua_args(task.reductions(), sums)
            accept_keys = [*job_script_keys(item.job_id), keys.held(item.name), keys.vouched(user)]
            accept_keys += [keys.worker(item.name), keys.COUNTS, *accounting.totals_keys(keys.job(item.job_id))[1:]]
            pipe.evalsha(self.scripts.accept.sha, len(accept_keys), *accept_keys, *args)
            accepts.append((len(pipe) - 1, accept_keys, args))
            speeds[(item.name, task.name)] = self._speed(item, arrived, speed, work)
        self._queue_speeds(pipe, items, speeds)
        # Each worker that answered is topped up once, in the same round trip, after its acceptances:
        # it holds what it held less the assignments these results settle, and its speed is the new one.
        peeks = Peek.parse_all(peeked)
        workers: list[tuple[WorkerView, int]] = []
        later: list[str] = []  # workers whose state was not read: topped up afterwards
        settled = collections.Counter(item.name for item in items)
        new_rates: dict[str, dict[str, float]] = {}
        measured: dict[tuple[str, str, str], float] = {}
        for (worker, task), (record, rate) in speeds.items():
            new_rates.setdefault(worker, {})[task] = rate
            measured[worker, _device(record), task] = rate
        self.dispatcher.measured(pipe, measured)
        for name, count in settled.items():
            state = states.get(name)
            if state is None or any(isinstance(x, Exception) for x in state):
                later.append(name)
                continue
            seen = self.dispatcher.worker_view(name, state)
            if seen is None:
                continue
            view, held = seen
            view.rates.update(new_rates.get(name, {}))
            workers.append((view, max(0, held - count)))
        plans = self.dispatcher.plan(pipe, workers, peeks)
        replies = pipe.execute(raise_on_error=False)
        losers: list[str] = []
        done_jobs: dict[str, bool] = {}
        confirm = False
        for item, (index, accept_keys, args) in zip(items, accepts, strict=True):
            reply = replies[index]
            if isinstance(reply, redis_lib.exceptions.NoScriptError):  # Redis restarted: its script cache is empty
                reply = self.scripts.accept(keys=accept_keys, args=args)
                peeks.clear()  # the planned assignments failed too: given one by one, read afresh
            if isinstance(reply, Exception):
                log.error("collector: accepting %s's result failed: %s", item.name, reply)
                item.outcome = "failed"
                continue
            outcome = int(reply[0])
            item.outcome = {0: "ignored", 1: "accepted", 2: "accepted; job done", 3: "awaiting confirmation"}[outcome]
            losers += [x.decode() for x in reply[2:]]
            done_jobs[item.job_id] = done_jobs.get(item.job_id, False) or outcome == 2
            confirm = confirm or outcome == 3
            if outcome in (1, 2) and item.blob and self.events.page_is_listening(self.redis):
                with contextlib.suppress(Exception):
                    tile = item.spec.task.announce(item.job_id, item.spec.params, item.result)
                    if tile:
                        self.events.emit("tile", tile)
        for loser in losers:
            self.quarantined(loser)
        for job_id, done in done_jobs.items():
            self.events.job_progress(self.redis, job_id, force=done)
        if any(done_jobs.values()):
            self.dispatcher.forget_active()
        self.dispatcher.settle(plans, replies, peeks)
        if later:
            self.dispatcher.fill_many(dict.fromkeys(later), {})
        if confirm:
            self.dispatcher.serve_idle()

    def _unheard_arrival(self, user: str, start: float, now: float) -> float:
        """When a result read before the listener's stamp came most likely arrived: after its outbox
        was last taken (and after ``start``, when its chunk could start), so the middle of that window,
        cut to UNHEARD_WINDOW. Timing it when read counted the monitor's lag as the volunteer's work:
        under load, speeds read low, chunks shrank and, being more, loaded the monitor more. A volunteer
        gains at most half the window on a chunk by pushing at the right moment."""
        low = max(self._takes.get(user, (now, now))[0], start, now - UNHEARD_WINDOW)
        return (low + now) / 2 if low < now else now

    _SPEED_FIELDS = ("last_result", "rd:{}", "rs:{}", "rate:{}", "device", "zone")

    def _queue_speed_record(self, pipe: Any, name: str, task: str, *, whole_record_read: bool = False) -> None:
        """Queue the reads of a worker's speed record: its fields (unless the caller reads the whole
        record in the same round trip) and its place in the task's ranking."""
        if not whole_record_read:
            pipe.hmget(keys.worker(name), *(f.format(task) for f in self._SPEED_FIELDS))
        pipe.zscore(keys.rates(task), name)

    def _speed(self, item: _Result, arrived: float, speed: list[Any], work: float) -> list[Any]:
        """The worker's speed record after this result (``work`` done in it), as
        :meth:`_queue_speed_record` reads it (``speed``: the record before).

        Speed is what the trusted side sees: work over the time since the worker could start the
        chunk (when it was assigned or when its previous result arrived, whichever is later, by the
        monitor's clock); nothing the worker reports is used, so no volunteer can claim to be faster.
        """
        info, _ = speed
        last = float(info[0]) if info[0] else None
        seconds = max(arrived - max(item.at, last or 0.0), 1e-3)
        rd, rs = float(info[1] or 0), float(info[2] or 0)
        if not rs and info[3]:  # a speed from an earlier worker of this volunteer: one second's weight
            rd, rs = float(info[3]), 1.0
        fade = 0.5 ** (seconds / RATE_HALF_LIFE)
        rd, rs = rd * fade + work, rs * fade + seconds
        return [[arrived, rd, rs, rd / rs, info[4], info[5]], rd / rs]

    @staticmethod
    def _queue_speeds(pipe: Any, items: list[_Result], speeds: dict[tuple[str, str], list[Any]]) -> None:
        """Queue the new speed records of a batch, once per worker and task (not once per result):
        the worker's record, its place in the task's ranking, each volunteer's last speed and the
        cluster's total (moved by what each worker's speed moved since its first record here)."""
        before: dict[tuple[str, str], float] = {}
        for item in items:
            before.setdefault((item.name, item.spec.task.name), float(item.speed[1] or 0.0))
        moved: dict[str, float] = {}  # total field → what the batch moved it by
        ranked: dict[str, dict[str, float]] = {}
        last: dict[str, dict[str, float]] = {}  # volunteer → the speed of its last worker here by device and task
        for (name, task), (speed, _) in speeds.items():
            arrived, rd, rs, rate, _, zone = speed
            record = {"last_result": arrived, "last_seen": arrived, f"rd:{task}": rd, f"rs:{task}": rs}
            pipe.hset(keys.worker(name), mapping={**record, f"rate:{task}": rate})
            ranked.setdefault(task, {})[name] = rate
            last.setdefault(keys.split_worker(name)[0], {})[keys.device_rate(_device(speed), task)] = rate
            for total in _rate_totals((zone or b"").decode(errors="replace"), task):
                moved[total] = moved.get(total, 0.0) + rate - before[name, task]
        for task, rates in ranked.items():
            pipe.zadd(keys.rates(task), rates)
        for field, by in moved.items():
            pipe.hincrbyfloat(keys.COUNTS, field, by)
        for user, fields in last.items():
            pipe.hset(keys.volunteer(user), mapping=fields)

    def _carbon(self, item: _Result, arrived: float, speed: list[Any], work: float) -> accounting.ChunkCarbon | None:
        """The CO2 of one result (None without a carbon reading): the trusted busy time (as for speed),
        the device's power (or the worker's RAPL reading within bounds) and the zone's intensity."""
        spec, info = item.spec, speed[0]
        last = float(info[0]) if info[0] else None
        expected = work / float(info[3]) if info[3] and float(info[3]) > 0 else spec.chunk_seconds
        busy = accounting.trusted_seconds(item.at, arrived, last, expected, self.settings.deadline_factor)
        try:
            reading = self.dispatcher.carbon.signal.latest((info[5] or b"").decode())
        except Exception as exc:  # a carbon signal never stops result collection
            log.debug("no carbon reading: %s", exc)
            return None
        if reading is None:
            return None
        claim = accounting.energy_claim(item.message)
        return accounting.chunk_carbon(busy, (info[4] or b"cpu").decode(), reading, self._watts, claim)

    def _issued(self, user: str, message: dict[str, Any]) -> tuple[bool, int]:
        """Whether the assignment number a message quotes was ever given out for its job (a result
        for one that never was is forged, not late), and how many live workers ``user`` has."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.job(str(message.get("job"))), "next_nonce")
        pipe.scard(keys.user_workers(user))
        issued, workers = pipe.execute()
        return issued is not None and int(message.get("a", -1)) <= int(issued), int(workers)

    def _stale_flood(self, user: str, workers: int) -> bool:
        """Whether ``user`` sent more stale results this window than its live workers explain.

        Every race of copies leaves one stale result, and a trusted side that fell behind its
        deadlines leaves many, so the allowance grows with the volunteer's workers: a volunteer
        with 50 workers at a job's tail, or while the monitor is saturated, is not cut off for it."""
        now = time.monotonic()
        recent = [t for t in self._strikes.get(f"stale:{user}", []) if now - t < STRIKE_WINDOW] + [now]
        self._strikes[f"stale:{user}"] = recent
        return len(recent) > STALE_ALLOWED + STALE_PER_WORKER * min(workers, MAX_WORKERS)

    def _needs_check(self, job_id: str, chunk_id: str, user: str) -> bool:
        """Whether this result must be confirmed by another volunteer (decided here, unguessably)."""
        mode, salt = self.redis.hmget(keys.job(job_id), "verify", "salt")
        clean = int(self.redis.hget(keys.volunteer(user), "clean") or 0)
        return _check_decision(mode, salt, clean, job_id, chunk_id, user)

    def error(self, user: str, wid: str, message: dict[str, Any]) -> str:
        item = _Result.of(user, wid, message, b"", None)
        refused = self._read_assignments([item])[0][0]
        if refused:
            raise refused
        name, job_id, chunk_id, nonce = item.name, item.job_id, item.chunk_id, item.nonce
        reason = re.sub(r"[^\x20-\x7e]", "?", str(message.get("reason", "")))[:300]
        record_error(self.redis, f"job {job_id} chunk {chunk_id} failed on {name}: {reason}")
        self._requeue(job_id, chunk_id, nonce, name, reason, count_attempt=True)
        self.dispatcher.fill(name)
        return "error"

    def _assigned_at(self, name: str, job_id: str, chunk_id: int, nonce: int) -> float:
        """When ``name`` was given this assignment (from the chunk's holders); +inf if unknown."""
        raw = self.redis.hget(keys.chunks(job_id), chunk_id)
        try:
            holder = (json.loads(raw).get("holders") or {}).get(name) if raw else None
            return float(holder["at"]) if holder and int(holder.get("nonce", -1)) == nonce else float("inf")
        except (ValueError, TypeError, KeyError, AttributeError):
            return float("inf")

    def _requeue(self, job_id: str, chunk_id: str, nonce: int, name: str, reason: str, *, count_attempt: bool) -> int:
        reply = self.scripts.requeue(
            keys=[*job_script_keys(job_id), keys.held(name)],
            args=[job_id, chunk_id, nonce, name, time.time(), reason, int(count_attempt), keys.split_worker(name)[0]],
        )
        outcome = int(reply[0])
        if outcome == 2:
            self.events.job_progress(self.redis, job_id, force=True)
            self.dispatcher.forget_active()
        elif outcome in (1, 3):
            self.dispatcher.serve_idle()
        return outcome

    # -- sanctions ----------------------------------------------------------------------------------
    def quarantined(self, user: str) -> int:
        """A volunteer lost a disagreement: redo every result it alone vouched for, in every job,
        and stop its workers. Safe to repeat (the monitor does, until nothing is left)."""
        redone = 0
        for entry in self.redis.hkeys(keys.vouched(user)):
            job_id, _, _ = entry.decode().partition(":")
            redone += int(
                self.scripts.redo(
                    keys=[*job_script_keys(job_id), keys.vouched(user)],
                    args=[job_id, entry.decode(), user, f"{time.time():.6f}"],
                )
            )
        for name in (n.decode() for n in self.redis.smembers(keys.user_workers(user))):
            _, wid = keys.split_worker(name)
            self.gone(name, "quarantined", count_attempt=False)  # (empties its inbox: the stop goes after)
            self.redis.rpush(keys.inbox(user, wid), json.dumps({"t": "stop", "reason": "quarantined: a wrong result"}))
        if redone:
            record_error(self.redis, f"volunteer {user} quarantined: {redone} result(s) it alone vouched for redone")
            self.dispatcher.forget_active()
            self.dispatcher.serve_idle()
        return redone

    def cut_off(self, user: str, reason: str) -> None:
        """Disable the volunteer's ACL user, close its connections, requeue its work, say why."""
        record_error(self.redis, f"volunteer {user} cut off: {reason}")
        self.redis.hset(keys.CUTOFF, user, f"{time.time():.0f} {reason}")
        if user != "default":  # never lock the operator out of its own Redis
            with contextlib.suppress(redis_lib.ResponseError):
                self.redis.execute_command("ACL", "SETUSER", user, "off")
            with contextlib.suppress(redis_lib.ResponseError):
                self.redis.execute_command("CLIENT", "KILL", "USER", user)
        for name in (n.decode() for n in self.redis.smembers(keys.user_workers(user))):
            self.gone(name, "cut off", count_attempt=False)
        self.redis.delete(keys.outbox(user))
        self.events.emit("alert", {"volunteer": user, "reason": reason})


def _check_decision(mode: bytes | None, salt: bytes | None, clean: int, job_id: str, chunk_id: str, user: str) -> bool:
    """verify 2: always; verify auto: with probability max(0.05, 1 / (1 + clean / 10)), decided by a
    keyed hash with the job's secret salt, so no volunteer can tell which results will be checked."""
    if mode == b"2":
        return True
    if mode != b"auto":
        return False
    p = max(0.05, 1 / (1 + clean / 10))
    h = hmac.new(salt or b"", f"{job_id}:{chunk_id}:{user}".encode(), hashlib.sha256).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < p


def _hello_record(user: str, wid: str, message: dict[str, Any]) -> dict[str, Any]:
    """The worker record a hello asks for, as far as the message alone can tell; raises
    :class:`Refused` for a hello no honest worker sends."""
    tasks = message.get("tasks")
    if (
        not isinstance(tasks, dict)
        or len(tasks) > 64
        or not all(isinstance(k, str) and isinstance(v, str) and len(k) < 64 and len(v) < 64 for k, v in tasks.items())
    ):
        raise Refused("hello: tasks must map task names to versions")
    device = message.get("device") if message.get("device") in keys.DEVICES else "cpu"
    zone = str(message.get("zone") or "")[:32]
    if not re.fullmatch(r"[A-Za-z0-9_-]*", zone):
        raise Refused("hello: bad zone")
    host = re.sub(r"[^A-Za-z0-9._-]", "?", str(message.get("host", "?")))[:64]
    return {
        "user": user,
        "wid": wid,
        "host": host,
        "device": device,
        "zone": zone,
        "tasks": json.dumps(tasks, sort_keys=True),
        "pid": int(message["pid"]) if type(message.get("pid")) is int else 0,
    }


def _counted_as(device: str, zone: str, tasks: str | bytes) -> list[str]:
    """The ``hydra:counts`` fields a live worker is counted under: its device, its zone, and each
    task it advertises that is installed here, with its version. A task the trusted side does not
    have could never be given to it, and hellos may name any number of made-up ones."""
    try:
        advertised = json.loads(tasks)
    except ValueError:
        advertised = {}
    fields = [f"device:{device}", f"zone:{zone or '?'}"]
    for task, version in advertised.items() if isinstance(advertised, dict) else ():
        if isinstance(task, str) and known_task(task):
            fields += [f"task:{task}", f"version:{task}@{version}"]
    return fields


def _rate_totals(zone: str, task: str) -> tuple[str, str]:
    """The ``hydra:counts`` fields a worker's measured rate of ``task`` is summed into: the
    cluster's, and its zone's (carbon-aware dispatch weighs each zone's capacity)."""
    return f"rate:{task}", keys.zone_rate(zone, task)


def _device(speed_record: list[Any]) -> str:
    """The device of a speed record as :meth:`Collector._speed` returns it (``cpu`` if unread)."""
    device = speed_record[4]
    return device.decode(errors="replace") if isinstance(device, bytes) else str(device or "cpu")


def _as_result(raw: bytes) -> tuple[str, dict[str, Any], bytes] | None:
    """``(wid, message, blob)`` if ``raw`` is a result message as far as its header shows."""
    return _as_message(raw, "result")


def _as_hello(raw: bytes) -> tuple[str, dict[str, Any], bytes] | None:
    """``(wid, message, blob)`` if ``raw`` is a hello as far as its kind and worker id show."""
    return _as_message(raw, "hello")


def _as_message(raw: bytes, kind: str) -> tuple[str, dict[str, Any], bytes] | None:
    if len(raw) > MAX_MESSAGE:
        return None
    header, _, blob = raw.partition(b"\n")
    if len(header) > MAX_HEADER:
        return None
    try:
        message = json.loads(header)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("t") != kind:
        return None
    wid = message.get("w")
    return (wid, message, blob) if isinstance(wid, str) and WORKER_ID.fullmatch(wid) else None


def _plausible_user(user: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", user))
