"""The monitor: the trusted side's long-running process (``hydra monitor``; several may run).

It reacts to what happens instead of scanning what exists, so its work grows with what is due,
not with the number of volunteers:

* **Messages.** Redis keyspace notifications (``rpush`` events) say which volunteer's outbox got
  a message; the :class:`~hydra.collector.Collector` drains it (hello, result, error, bye) and
  the :class:`~hydra.dispatch.Dispatcher` tops up that worker's inbox.
* **Deaths.** A worker's heartbeat key expires (``expired`` events): whatever it held goes back
  at once, counting one attempt, so a ``kill -9`` is noticed within the heartbeat TTL.
* **Deadlines** (every pass, under a lease so one monitor does it): assignments past their
  deadline, read by score range from ``hydra:deadlines``. A dead holder's chunk is requeued; a live
  but late holder keeps its chunk and a copy goes to another volunteer (``…:wanted``); past a
  second deadline its assignment is taken back. So claiming chunks and sitting on them holds
  nothing hostage.
* **Events** for the page: job progress (coalesced) and, once a second, a cluster summary of
  bounded size whatever the number of workers.
* **The credit ledger** is folded and signed beside the loop, by a child process
  (:mod:`hydra.signer`), which also sends the cluster summary; where none can be forked, the loop
  does both.

Every change is a Lua script, so a monitor killed at any point loses nothing: a missed
notification is caught by the next message from that volunteer or by the deadline pass, and a
starting monitor sweeps every live worker once.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib
from redis import Redis

from hydra import keys
from hydra.collector import Collector, record_error
from hydra.dispatch import Dispatcher
from hydra.errors import HydraError
from hydra.events import Events
from hydra.notifications import Notifications
from hydra.scripts import job_script_keys
from hydra.settings import Settings
from hydra.signer import SLICE_MAX, SLICE_MIN, Signer, Slicer
from hydra.workers import ClusterSummary

log = logging.getLogger(__name__)

LEASE_MS = 3000
DUE_PER_PASS = 500
# Seconds a pass spends at most on overdue assignments whose holder died or is late twice.
DUE_BUDGET = 0.005
# Ledger entries folded and signed at a time where the loop signs (no signer process): a pass signs
# LEDGER_SLICE, so it stays short under a stream of results, and what is left is signed between
# messages, one slice per turn of the loop, as big as the backlog up to LEDGER_SLICE_MAX (a turn can
# last a quarter second under load, and fixed small slices fell ever further behind: at 2,300-2,600
# results a second slices of 512 left 37,000-50,000 entries unsigned at a job's end, of 2,048 0-600).
LEDGER_SLICE, LEDGER_SLICE_MAX = SLICE_MIN, SLICE_MAX
# Between messages: idle workers served in slices of this long (at most IDLE_BATCH at a time; a new
# job for thousands of them is spread over many slices; each result also tops its own worker up).
IDLE_SLICE = 0.02
IDLE_BATCH = 64
# Volunteers whose outboxes are taken and whose results are handled together (Collector.drain_many):
# at most this many, and no more once their messages (as the listener counted them) reach a batch.
DRAIN_ROUND_USERS = 64
DRAIN_ROUND_MESSAGES = 100
HOUSEKEEPING_SECONDS = 60.0
# What a message costs the loop is measured on rounds of at least this many messages (a loop with a
# backlog: a trickle of messages costs more each, in round trips that more messages would share),
# and each pass's measure weighs this much in the running figure (Monitor._measure_message_cost).
MEASURED_ROUND = DRAIN_ROUND_MESSAGES // 3
COST_WEIGHT = 0.3
# Notices are fire and forget (one sent while the listener's connection is re-made is lost, and a
# swarm at N = 10,000 once left 100 hellos unread that way, their volunteers waiting for good): each
# pass looks at this many volunteers' outboxes, in turn, and drains those that still hold messages
# nobody heard of at the next pass. So a lost notice costs a wait of at most a round of all
# volunteers and a pass (about 12 s at 10,000), not forever.
UNHEARD_PER_PASS = 200
# Quarantined volunteers whose clean-up a pass checks, and how long one stays checked once clean.
QUARANTINE_PER_PASS = 100
QUARANTINE_SETTLE = 60.0
NOTIFY_CHECK_SECONDS = 2.0
LATE_MARK_TTL = 24 * 3600
# Keyspace notifications the monitor needs: K (keyspace channels, so it subscribes to volunteers'
# outboxes and heartbeats only), l (list commands), x (expired keys).
NOTIFY_FLAGS = "Klx"

_EXTEND_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


@dataclass
class PassReport:
    requeued: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    acted: bool = False
    seconds: float = 0.0


def enable_notifications(redis: Redis) -> bool:
    """Make Redis publish the events the monitor reacts to (merged with what is configured).
    Returns True if they were off (a new or restarted Redis: messages may have been missed).

    A managed Redis (ElastiCache, Azure, Memorystore) may refuse ``CONFIG`` altogether and take its
    settings from the provider's console: then they cannot be read, are taken to be as the README
    asks (said once in the log), and a message whose notice never comes is still drained by the
    passes (UNHEARD_PER_PASS). Settings that can be read and lack the flags, but cannot be changed,
    are an error."""
    try:
        current = redis.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
    except redis_lib.ResponseError as exc:
        if not _config_refused.is_set():
            _config_refused.set()
            log.warning("monitor: cannot read notify-keyspace-events (%s); it must include %s", exc, NOTIFY_FLAGS)
        return False
    if isinstance(current, bytes):
        current = current.decode()
    if not set(NOTIFY_FLAGS) - set(current.replace("A", "g$lshzxe")):
        return False
    try:
        redis.config_set("notify-keyspace-events", "".join(sorted(set(current) | set(NOTIFY_FLAGS))))
    except redis_lib.ResponseError as exc:
        raise HydraError(
            f"the monitor needs notify-keyspace-events to include {NOTIFY_FLAGS}, not {current!r} "
            f"(set it in redis.conf or the provider's settings): {exc}"
        ) from None
    return True


_config_refused = threading.Event()  # CONFIG was refused once: said in the log, not again


class Monitor:
    def __init__(self, redis: Redis, settings: Settings, events: Events | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.events = events or Events(None)
        self.dispatcher = Dispatcher(redis, settings)
        self.collector = Collector(redis, settings, self.dispatcher, self.events)
        self.scripts = self.collector.scripts
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.db = int(redis.connection_pool.connection_kwargs.get("db", 0) or 0)
        self._lease = redis.register_script(_EXTEND_LEASE)
        self._last_housekeeping = 0.0
        self._unheard_round: list[str] = []  # volunteers whose outboxes the passes are yet to look at
        self._unheard: dict[str, float] = {}  # found waiting unheard by the last pass, and when: looked at again
        self._quarantine_size = -1  # the quarantine set's size when its volunteers were last all marked
        self._last_notify_check = time.time()
        self._summary = ClusterSummary(self.events)  # where the loop sends it (no signer child)
        self._active_before: set[str] = set()
        self.longest_pass = 0.0
        self._listener: Notifications | None = None
        self._signer: Signer | None = None  # signs the ledger beside the loop (hydra.signer), while run runs
        self._idle_backoff = 0.0
        self._drained = (0.0, 0)  # seconds spent draining full rounds, and their messages, since the last pass
        self._ledger_backlog = 0  # entries left unsigned by the last signing
        from hydra import ledger

        self.ledger_key = ledger.load_key(settings.ledger_key or None)
        self._slicer = Slicer(self.ledger_key, self.events)  # where the loop signs (no signer child)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Handle events and run passes until ``stop`` is set; Redis outages are waited out."""
        stop = stop or threading.Event()
        delay = self.settings.monitor_interval
        self.events.connect()  # here, not in the first pass
        self._signer = Signer.start(self.redis, self.ledger_key, self.events.redis_url)
        try:
            self._run(stop, delay)
        finally:
            if self._signer is not None:
                self._signer.close()
                self._signer = None

    def _run(self, stop: threading.Event, delay: float) -> None:
        while not stop.is_set():
            listener = None
            try:
                enable_notifications(self.redis)
                listener = self._listener = Notifications(self.redis, self.db).start()
                self.sweep()  # what happened while no monitor listened
                next_pass = 0.0
                while not stop.is_set():
                    now = time.monotonic()
                    if now >= next_pass:
                        self.run_pass()
                        next_pass = now + self.settings.monitor_interval
                    if self._ledger_backlog:
                        self._sign_ledger(self._ledger_backlog)
                    if not self.serve_waiting(now) and not self._ledger_backlog:
                        listener.wait(max(0.0, next_pass - time.monotonic()))
                    self.handle_notifications(listener, budget=self.settings.monitor_interval)
                    delay = self.settings.monitor_interval
            except (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.BusyLoadingError) as exc:
                log.warning("monitor: Redis unavailable (%s); retrying in %.1f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if listener:
                    listener.close()

    def serve_waiting(self, now: float) -> bool:
        """Give work to idle workers, a short slice at a time between messages, for as long as some
        get work (a thousand workers waiting when a job arrives are served in about a second, not
        a few per pass); False when there is nothing to do: then not again until the next pass."""
        if now < self._idle_backoff or not self.dispatcher.active_jobs():
            return False
        served = 0
        try:
            served = self.dispatcher.serve_idle(IDLE_BATCH, IDLE_SLICE)
        except redis_lib.ResponseError as exc:
            record_error(self.redis, f"monitor: serving idle workers failed: {exc}")
        if not served:
            self._idle_backoff = now + self.settings.monitor_interval
        return served > 0

    def _serve_if_waiting_longer(self, oldest_result: float) -> None:
        """Between two rounds of results, serve a slice of idle workers (serve_waiting) if the one
        waiting longest has waited longer than the next round's oldest result: whoever asked for
        work first gets it first. Served only between drains, the idle workers of a new job got a
        few per cent of a saturated loop: at N = 10,000 on two cores the last of them got its first
        chunk 19-21 s after the submit, 5-6 s so (and the job ended 2 s sooner), while the results'
        own wait for their next chunk grew (p99 3.4-8.5 s against 2.4-5.5). One ``ZRANGE`` a round
        while workers wait, none for a pass interval once none do."""
        now = time.monotonic()
        if now < self._idle_backoff:
            return
        oldest = self.redis.zrange(keys.IDLE, 0, 0, withscores=True)
        if not oldest:
            self._idle_backoff = now + self.settings.monitor_interval
        elif float(oldest[0][1]) < oldest_result:
            self.serve_waiting(now)

    def wake(self) -> None:
        """Make the loop look at its stop event now rather than at the end of its wait (signal-safe)."""
        if self._listener is not None:
            self._listener.wake()

    def handle_notifications(self, listener: Notifications, budget: float) -> int:
        """Handle what the listener heard, for up to ``budget`` seconds (so passes still run under a
        flood; what is left waits for the next round). Returns how many messages were handled."""
        listener.check()
        dead, arrivals = listener.take()
        for name in dead:
            self._safely(self.collector.gone, name, "vanished (heartbeat lost)")
        give_up = time.monotonic() + budget
        handled = 0
        rounds = _rounds(arrivals)
        for i, group in enumerate(rounds):
            if time.monotonic() > give_up:
                listener.put_back({u: arrivals[u] for rest in rounds[i:] for u in rest})
                break
            if i:  # idle workers that waited longer than this round's results go first
                oldest = min((arrivals[u][0] for u in group if arrivals[u]), default=time.time())
                self._safely(self._serve_if_waiting_longer, oldest)  # (trouble there never costs the rounds)
            try:
                round_arrivals = {user: arrivals[user] for user in group}
                listener.catch_up(round_arrivals)
                started = time.perf_counter()
                drained = self.collector.drain_many(round_arrivals)
                handled += drained
                if drained >= MEASURED_ROUND:
                    seconds, messages = self._drained
                    self._drained = (seconds + time.perf_counter() - started, messages + drained)
            except (redis_lib.ConnectionError, redis_lib.TimeoutError):
                raise
            except Exception as exc:
                log.exception("monitor: drain of %s failed", group)
                record_error(self.redis, f"monitor: reading the outboxes of {', '.join(group)} failed: {exc}")
        return handled

    def _safely(self, call, *args) -> None:
        """One volunteer's trouble never stops the monitor: anything unexpected is recorded."""
        try:
            call(*args)
        except (redis_lib.ConnectionError, redis_lib.TimeoutError):
            raise
        except Exception as exc:
            log.exception("monitor: %s%r failed", getattr(call, "__name__", call), args)
            record_error(self.redis, f"monitor: {getattr(call, '__name__', call)} failed on {args!r}: {exc}")

    def sweep(self) -> None:
        """At start: drain every volunteer's outbox and bury workers whose heartbeat is gone."""
        names = [n.decode() for n in self.redis.zrange(keys.LIVE, 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(keys.alive(*keys.split_worker(name)))
        for name, alive in zip(names, pipe.execute(), strict=True):
            if not alive:
                self._safely(self.collector.gone, name, "vanished (heartbeat lost)")
        self._safely(self.collector.total_zone_rates)
        users = {keys.split_worker(n)[0] for n in names} | set(self._volunteer_users())
        for user in users:
            self._safely(self.collector.drain, user)

    def _volunteer_users(self) -> list[str]:
        with contextlib.suppress(redis_lib.ResponseError):
            return [u.decode() if isinstance(u, bytes) else str(u) for u in self.redis.acl_users()]
        return []

    def _drain_unheard(self) -> None:
        """Drain the outboxes that hold messages the listener has not heard of. A pass looks at the
        next UNHEARD_PER_PASS volunteers in turn; one found so is looked at again by the next pass
        and drained only if it still is and no notice of it was heard in between. Under load most
        outboxes found so hold a message whose notice is on its way, and a busy volunteer's outbox
        gets a new one every few tens of milliseconds: drained by the pass, they cost a slow pass
        1-8 ms at N = 10,000, for work the loop does anyway moments later. A lost notice never
        comes, so a message whose notice was lost waits one pass more."""
        if not self._unheard_round:
            self._unheard_round = self._volunteer_users()
        users, self._unheard_round = self._unheard_round[:UNHEARD_PER_PASS], self._unheard_round[UNHEARD_PER_PASS:]
        looked = list(dict.fromkeys([*self._unheard, *users]))
        now = time.monotonic()
        pipe = self.redis.pipeline(transaction=False)
        for user in looked:
            pipe.llen(keys.outbox(user))
        replies = pipe.execute()
        listener = self._listener
        # What the loop has read so far: reading the rest now would be the loop's work done in the
        # pass (a few thousand notices under load, 2-4 ms). A message whose notice is unread here
        # looks unheard, and its notice is read before the next look (see last_noted).
        heard = listener.heard(read=False) if listener is not None else set()
        waiting = {user for user, length in zip(looked, replies, strict=True) if length and user not in heard}
        # Unheard at two looks a pass apart, with no notice of it heard in between.
        lost = [
            user
            for user, at in self._unheard.items()
            if user in waiting and (listener is None or listener.last_noted(user) < at)
        ]
        self._unheard = {user: now for user in waiting.difference(lost)}
        if lost:  # taken together, as the loop drains what it heard (no stamps: they were lost)
            self._safely(self.collector.drain_many, dict.fromkeys(lost))

    # -- the periodic pass --------------------------------------------------------------------------
    def run_pass(self) -> PassReport:
        report = PassReport()
        started = time.perf_counter()
        self._measure_message_cost()  # every monitor's own: it cuts the tails of what it dispatches
        if not self._lease(keys=[keys.MONITOR_LEASE], args=[self.id, LEASE_MS]):
            return report
        report.acted = True
        now = time.time()
        if now - self._last_notify_check > NOTIFY_CHECK_SECONDS:
            # A Redis restart resets notifications (unless redis.conf sets them), and clients
            # reconnect without a word: catch that here, and read what was pushed meanwhile.
            self._last_notify_check = now
            if enable_notifications(self.redis):
                log.warning("monitor: Redis lost its notification settings (restarted?); reading every outbox")
                self.sweep()
        # A result this monitor has heard of but not yet handled is not late: deadlines are judged
        # as of when its oldest waiting message arrived, so that a monitor behind under load does not
        # ask for copies (and more work) of chunks whose results wait in its own backlog.
        # (Of the notices read so far: those still unread are the newest, and reading them is the
        # loop's work, 2-4 ms of a pass under load.)
        behind = self._listener.backlog(now, read=False) if self._listener is not None else 0.0
        self._check_deadlines(now, report, due_by=now - behind)
        if report.requeued or report.copied:
            # Work for idle workers: the loop serves them right after this pass (see run), between
            # messages, rather than the pass (it did both, back to back: 3-6 ms of every slow pass
            # at N = 10,000 on two cores).
            self._idle_backoff = 0.0
        self._drain_unheard()
        self._clean_up_quarantined()
        self._emit()
        if self._signer is None or not self._signer.alive():
            if self._signer is not None:
                log.warning("monitor: the ledger's signer stopped; starting another")
                self._signer = Signer.start(self.redis, self.ledger_key, self.events.redis_url)
            # No signer beside the loop (not started, no fork) or one just restarted: its work here.
            self._sign_ledger()
            self._summary.send_if_due(self.redis)
        if now - self._last_housekeeping > HOUSEKEEPING_SECONDS:
            self._housekeeping()
            self._last_housekeeping = now
        for line in report.requeued + report.copied:
            log.info("monitor: %s", line)
        report.seconds = time.perf_counter() - started
        if report.seconds > self.longest_pass:  # for operators and bench/swarm.py
            self.longest_pass = report.seconds
            self.redis.hset(keys.MONITOR_STATS, self.id, f"{report.seconds:.6f}")
        return report

    def _measure_message_cost(self) -> None:
        """What one message costs the loop when it has a backlog (draining it: reading, checking,
        accepting, topping its worker up, waits for Redis included), a running average over the
        passes that drained full rounds: the dispatcher cuts a job's tail no finer than the loop can
        answer (Dispatcher.tail_floor). Never measured, it stays 0, and the tail is cut as before."""
        seconds, messages = self._drained
        if messages:
            self._drained = (0.0, 0)
            cost = seconds / messages
            before = self.dispatcher.message_cost
            self.dispatcher.message_cost = cost if not before else before + COST_WEIGHT * (cost - before)

    def _clean_up_quarantined(self) -> None:
        """Finish what quarantining a volunteer starts (its results redone, its workers stopped)
        wherever it is unfinished. Quarantine is for good, so the set only grows; a pass asks only
        the volunteers ACCEPT marked when it quarantined them (``hydra:quarantine:unfinished``, by
        when last seen unclean, up to QUARANTINE_PER_PASS of them), one command when there are
        none. A volunteer leaves the mark once clean for QUARANTINE_SETTLE seconds: a hello read
        just before its quarantine may still add a worker. When the quarantine set's size changes
        (a volunteer quarantined by hand, a Redis from before the mark, a first pass), each of its
        volunteers not marked yet is marked as clean long ago, to be checked once."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(keys.QUARANTINE_UNFINISHED, 0, QUARANTINE_PER_PASS - 1, withscores=True)
        marked, size = pipe.scard(keys.QUARANTINE).execute()
        if size != self._quarantine_size:
            if quarantined := self.redis.smembers(keys.QUARANTINE):
                long_ago: dict[Any, float] = dict.fromkeys(quarantined, 0.0)
                self.redis.zadd(keys.QUARANTINE_UNFINISHED, long_ago, nx=True)
            self._quarantine_size = size
            marked = self.redis.zrange(keys.QUARANTINE_UNFINISHED, 0, QUARANTINE_PER_PASS - 1, withscores=True)
        if not marked:
            return
        pipe = self.redis.pipeline(transaction=False)
        for user, _ in marked:
            pipe.sismember(keys.QUARANTINE, user)
            pipe.hlen(keys.vouched(user.decode()))
            pipe.scard(keys.user_workers(user.decode()))
        left = pipe.execute()
        now = time.time()
        settled, unclean = [], {}
        for i, (user, since) in enumerate(marked):
            if not left[3 * i]:  # the operator let it out of quarantine: nothing to finish
                settled.append(user)
            elif left[3 * i + 1] or left[3 * i + 2]:
                self._safely(self.collector.quarantined, user.decode())
                unclean[user] = now  # to the back of the round, and watched a while longer
            elif since < now - QUARANTINE_SETTLE:
                settled.append(user)
        pipe = self.redis.pipeline(transaction=False)
        if settled:
            pipe.zrem(keys.QUARANTINE_UNFINISHED, *settled)
        if unclean:
            pipe.zadd(keys.QUARANTINE_UNFINISHED, unclean, xx=True)
        if len(pipe):
            pipe.execute()

    def _check_deadlines(self, now: float, report: PassReport, due_by: float | None = None) -> None:
        """Act on the assignments whose deadline passed by ``due_by`` (default: now; at most
        DUE_PER_PASS, oldest first): in one round trip their chunks and late marks, in one their
        holders' heartbeats, in one every first-time late mark (a copy wanted); the rare rest (a dead
        holder, a second deadline) one by one, for at most DUE_BUDGET seconds; what is left stays
        due for the next pass."""
        due = []
        for raw, _deadline in self.redis.zrangebyscore(
            keys.DEADLINES, "-inf", now if due_by is None else due_by, start=0, num=DUE_PER_PASS, withscores=True
        ):
            member = raw.decode(errors="replace")
            try:
                due.append((member, *keys.parse_assignment(member)))
            except ValueError:
                record_error(self.redis, f"monitor: dropped a malformed deadline entry {member[:80]!r}")
                self.redis.zrem(keys.DEADLINES, raw)
        if not due:
            return
        pipe = self.redis.pipeline(transaction=False)
        for _member, job_id, chunk_id, nonce in due:
            pipe.hget(keys.chunks(job_id), chunk_id)
            pipe.hexists(keys.late(job_id), f"{chunk_id}:{nonce}")
        replies = pipe.execute()
        holders: list[str | None] = []
        for (member, _job_id, _chunk_id, nonce), raw in zip(due, replies[::2], strict=True):
            try:
                holders.append(_holder(raw, nonce))
            except ValueError:
                record_error(self.redis, f"monitor: the chunk of deadline entry {member!r} is malformed")
                holders.append(None)
        pipe = self.redis.pipeline(transaction=False)
        for holder in holders:
            if holder is not None:
                pipe.exists(keys.alive(*keys.split_worker(holder)))
        alive = iter(pipe.execute())
        marks = self.redis.pipeline(transaction=False)
        give_up = time.perf_counter() + DUE_BUDGET
        buried: set[str] = set()
        for (member, job_id, chunk_id, nonce), holder, late in zip(due, holders, replies[1::2], strict=True):
            if holder is None:  # answered, requeued or ended meanwhile
                marks.zrem(keys.DEADLINES, member)
            elif not next(alive):
                if holder not in buried and time.perf_counter() < give_up:
                    self._safely(self.collector.gone, holder, "vanished (heartbeat lost)")  # all it held
                    buried.add(holder)
                    report.requeued.append(f"job {job_id} chunk {chunk_id}: holder {holder} gone")
            elif late:
                if time.perf_counter() < give_up:
                    self._safely(self._take_back, job_id, chunk_id, nonce, holder, now)
                    report.requeued.append(f"job {job_id} chunk {chunk_id}: taken back from late {holder}")
            else:
                # Kept beside the job record, not in it: status reads the record whole.
                marks.hset(keys.late(job_id), f"{chunk_id}:{nonce}", 1)
                marks.expire(keys.late(job_id), LATE_MARK_TTL)
                marks.zadd(keys.wanted(job_id), {str(chunk_id): now}, nx=True)
                marks.zadd(keys.DEADLINES, {member: now + self._window()}, xx=True)
                report.copied.append(f"job {job_id} chunk {chunk_id} overdue on {holder}: copy wanted")
        if len(marks):
            marks.execute()
        # Idle workers get the copies after the deadlines (run_pass) and between messages (run): not
        # here, once per overdue chunk, which made a pass quadratic (overdue × idle) at scale.

    def _take_back(self, job_id: str, chunk_id: int, nonce: int, holder: str, now: float) -> None:
        """Late twice: take the assignment back (the copy may already be running elsewhere)."""
        self.scripts.requeue(
            keys=[*job_script_keys(job_id), keys.held(holder)],
            args=[job_id, chunk_id, nonce, holder, now, f"worker {holder} missed its deadline twice", 0],
        )
        self.dispatcher.fill(holder)

    def _sign_ledger(self, slice_size: int = LEDGER_SLICE) -> None:
        """Fold new ledger entries (``slice_size``, kept between LEDGER_SLICE and LEDGER_SLICE_MAX)
        into the Merkle tree and the leaderboard, and sign a new head; notes how many more wait."""
        self._ledger_backlog = 0
        try:
            self._ledger_backlog = self._slicer.sign(self.redis, slice_size)
        except (redis_lib.ConnectionError, redis_lib.TimeoutError):
            raise
        except Exception as exc:  # the ledger must never stop the monitor
            record_error(self.redis, f"monitor: signing the ledger failed: {exc}")

    def _window(self) -> float:
        return self.settings.deadline_factor * self.settings.chunk_seconds + self.settings.deadline_slack

    # -- events and housekeeping --------------------------------------------------------------------
    def _emit(self) -> None:
        """Progress of active jobs (coalesced). (The once-a-second cluster summary is the signer
        child's to send, see run_pass.)"""
        if not self.events.redis_url:
            return
        active = {j.decode() for j in self.redis.zrange(keys.ACTIVE, 0, 99)}
        for job_id in active:
            self.events.job_progress(self.redis, job_id)
        # A job that ended without an event of its own (cancelled from the CLI, say): its final state.
        for job_id in self._active_before - active:
            self.events.job_progress(self.redis, job_id, force=True)
        self._active_before = active

    def _housekeeping(self) -> None:
        """Forget jobs whose records expired (bounded: the oldest 1,000 a minute)."""
        ids = [j.decode() for j in self.redis.zrange(keys.JOBS, 0, 999)]
        if ids:
            exists = self.redis.pipeline(transaction=False)
            for job_id in ids:
                exists.exists(keys.job(job_id))
            gone = [j for j, e in zip(ids, exists.execute(), strict=True) if not e]
            if gone:
                self.redis.zrem(keys.JOBS, *gone)


def _rounds(arrivals: dict[str, collections.deque[float]]) -> list[list[str]]:
    """The volunteers heard from, in rounds drained together: a round ends at DRAIN_ROUND_USERS
    volunteers or DRAIN_ROUND_MESSAGES messages, so one round never holds up a pass for long."""
    rounds: list[list[str]] = [[]]
    messages = 0
    for user, times in arrivals.items():
        if len(rounds[-1]) >= DRAIN_ROUND_USERS or messages >= DRAIN_ROUND_MESSAGES:
            rounds.append([])
            messages = 0
        rounds[-1].append(user)
        messages += max(len(times), 1)
    return [r for r in rounds if r]


def _holder(raw: bytes | None, nonce: int) -> str | None:
    """The worker that holds assignment ``nonce`` of a chunk record, if any; ValueError for a record
    that is not one."""
    if raw is None:
        return None
    try:
        holders = json.loads(raw).get("holders") or {}
        return next((name for name, held in holders.items() if int(held.get("nonce", -1)) == nonce), None)
    except (TypeError, AttributeError) as exc:
        raise ValueError(str(exc)) from None
