"""Dispatch: the trusted side decides which worker runs which chunk, and how big it is.

Every worker holds up to :data:`DEPTH` assignments (one running, one queued in its inbox), so it
never waits for a round trip. Whenever a worker has room (it said hello, a result or error came
in, new work appeared) :meth:`Dispatcher.fill` gives it work, in this order, from the oldest
active job whose task and version the worker has:

1. a chunk that *wants a copy* (``…:wanted``): a result awaiting confirmation by another
   volunteer (``--verify``), or a chunk overdue on its holder. The ASSIGN script refuses a copy to a
   worker of the same volunteer, so sybil workers of one account never confirm each other;
2. the head of the job's *pending* chunks, split so that the worker's piece takes about the job's
   chunk time at the worker's speed as measured here (never as reported by the worker), shrinking
   near the end of the job (guided self-scheduling) so that workers of any speed finish together,
   but never below what the trusted side can answer (:meth:`Dispatcher.tail_floor`). A worker with
   no measured speed is sized by its volunteer's, else gets a small probe, one worker of a
   volunteer at a time (:meth:`Dispatcher._waits_for_a_probe`);
3. at the tail of a job (nothing pending), a chunk another worker holds but has not started yet
   (it waits in that worker's inbox), taken back atomically and given here when this worker is
   expected to finish it sooner (work stealing: no work is done twice);
4. at the tail, a copy of the running chunk whose holder is expected to finish last, when this
   worker would finish it sooner.

A worker that gets nothing waits in ``hydra:idle`` until work appears. All changes are made by the
ASSIGN script with optimistic checks (the head chunk must still start where it did), so several
dispatchers may run at once and any may die at any time.

Workers are topped up in batches (:meth:`Dispatcher.plan` and :meth:`Dispatcher.settle`): pieces of
pending work are planned from one peek per job, and only what a peek cannot plan is given one by
one. At a job's tail one look at the chunk expected to end last (the only one worth stealing or
copying) tells which workers of a batch can get nothing; they go idle together, so the tail, when
results come fastest, does not cost each of them the round trips of 3 and 4.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib
from redis import Redis

from hydra import keys
from hydra.carbon.gate import CarbonGate
from hydra.credit import chunk_credit
from hydra.scripts import Scripts, job_script_keys
from hydra.settings import Settings
from hydra.tasks import TASKS
from hydra.tasks.base import Task

log = logging.getLogger(__name__)

DEPTH = 2
# Volunteers whose last speed, probe and waiting workers a dispatcher keeps; past this many, forgotten.
MAX_VOLUNTEER_RATES = 200_000
# Seconds the other workers of a volunteer with no measured speed wait for the probe one of them
# holds before another may probe (Dispatcher._waits_for_a_probe).
PROBE_PATIENCE = 3.0
# Seconds between reads of the record of a volunteer whose workers have no speed here (Dispatcher.recall).
RECALL_SECONDS = 1.0
MIN_CHUNK_SECONDS = 0.1
# At a job's tail, chunks shrink only while the results they bring would keep the trusted side's
# loop at most this busy (see Dispatcher.tail_floor).
TAIL_LOAD = 0.8
# A saturated monitor stretches the chunk time a job asked for, so that the results of every live
# worker come no faster than its loop answers them (Dispatcher.chunk_seconds), by at most this factor.
MAX_STRETCH = 10.0
# A tail copy must be expected to finish this much sooner than the chunk's holder to be worth it.
SPECULATION_MARGIN = 0.5
# A stolen chunk must be expected to finish at least this much sooner (or 10 % of its time).
STEAL_MARGIN = 0.05
_CACHE_SECONDS = 0.2
# Pending chunks a peek reads at most: enough to plan the top-ups of a batch of workers.
PEEK_HEADS = 64
# Idle workers are served this many at a time (their states and the jobs' peeks in one round trip,
# their assignments in another), so a time budget is overrun by one round at most.
IDLE_ROUND = 16


@dataclass
class JobSpec:
    job_id: str
    task: Task
    version: str
    params: dict[str, Any]
    data: bytes
    units_total: int
    chunk_seconds: float
    chunking: str
    speculate: bool
    total_work: float


@dataclass
class WorkerView:
    name: str
    user: str
    wid: str
    tasks: dict[str, str]
    rates: dict[str, float] = field(default_factory=dict)
    zone: str = ""
    seeded: frozenset[str] = frozenset()  # tasks whose rate is its volunteer's, not yet its own
    device: str = "cpu"


@dataclass
class Peek:
    """What a job has to give, as :data:`~hydra.scripts.PEEK` read it: a hint (ASSIGN checks again)."""

    wanted: list[bytes]
    heads: list[tuple[str, int, int]]  # (chunk id, first, count) of its first pending chunks, in order
    claimed: int
    more: bool  # pending chunks may follow those in ``heads``
    reserved: int = 0  # workers of a batch left to take a wanted copy one by one (see Dispatcher._plan)

    @classmethod
    def parse(cls, reply: Any, asked: int) -> Peek | None:
        """The reply of PEEK asked for ``asked`` heads, or None for anything else (an error, a record
        this process cannot read)."""
        if not isinstance(reply, list) or len(reply) < 2 or len(reply) % 2:
            return None
        try:
            heads = []
            returned = len(reply) // 2 - 1
            for chunk_id, raw in zip(reply[2::2], reply[3::2], strict=True):
                if not raw:  # a pending id without its record: plan no further than that
                    break
                chunk = json.loads(raw)
                heads.append((chunk_id.decode(), int(chunk["first"]), int(chunk["count"])))
            more = returned >= asked or len(heads) < returned
            return cls(list(reply[0] or []), heads, int(reply[1] or 0), more=more)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @classmethod
    def parse_all(cls, replies: dict[str, tuple[Any, int]]) -> dict[str, Peek]:
        """The readable peeks among PEEK replies by job (each with how many heads it asked for)."""
        return {job_id: peek for job_id, (reply, asked) in replies.items() if (peek := cls.parse(reply, asked))}

    def took(self, take: int) -> None:
        """What the job has left once ASSIGN gave ``take`` units of the head: it splits the head, so
        the rest starts where the piece ended, under the same id."""
        chunk_id, first, count = self.heads[0]
        self.claimed += take
        if take < count:
            self.heads[0] = (chunk_id, first + take, count - take)
        else:
            self.heads.pop(0)


@dataclass
class Plan:
    """A worker's top-up as queued on a pipeline: its ASSIGN replies are at [start, start + planned)."""

    view: WorkerView
    held: int
    start: int
    planned: int


@functools.lru_cache(maxsize=256)
def _parsed_tasks(raw: bytes) -> tuple[tuple[str, Any], ...]:
    try:
        tasks = json.loads(raw)
    except ValueError:
        return ()
    return tuple(tasks.items()) if isinstance(tasks, dict) else ()


def _installed_tasks(raw: bytes) -> dict[str, Any]:
    """A worker record's ``tasks`` (task → version): read for every worker of every batch, and the
    same few values across thousands of workers, so parsed once each."""
    return dict(_parsed_tasks(raw))


class Dispatcher:
    def __init__(
        self, redis: Redis, settings: Settings, scripts: Scripts | None = None, *, one_probe_each: bool = True
    ) -> None:
        """``one_probe_each``: a volunteer's workers wait for one of them to be measured
        (:meth:`_waits_for_a_probe`). A dispatcher that serves once and is gone (the scheduler's at a
        submit) passes False: it would never hear the probe's result, so the workers it left waiting
        would wait PROBE_PATIENCE."""
        self.redis = redis
        self.one_probe_each = one_probe_each
        self.settings = settings
        self.scripts = scripts or Scripts(redis)
        self._specs: dict[str, JobSpec | None] = {}
        self._active: tuple[float, list[str]] = (-math.inf, [])  # never fetched
        self._cluster_rates: dict[str, tuple[float, float, int]] = {}  # task → (when read, _cluster)
        # Seconds of the trusted side's loop one message costs, as the monitor measures it (0 where
        # nothing does): how short a chunk the tail may be cut into (tail_floor).
        self.message_cost = 0.0
        self._stretch_said = -math.inf  # when chunk_seconds last told the operator it stretched chunks
        # Each volunteer's last measured speed by device and task: a worker of the volunteer with no
        # speed of its own is sized by it rather than probed, as a hello seeds the workers of a
        # volunteer measured before. Without it, thousands of workers that said hello before their
        # first sibling was measured each sent two probe results in the ramp of a job. A cache of
        # the volunteers' records in Redis (rate:<device>:<task>, written with each measurement):
        # speeds measured by another monitor, or before a restart, are read there (recall).
        self._volunteer_rates: dict[tuple[str, str], dict[str, float]] = {}
        self._recalled: dict[str, float] = {}  # volunteer → when its record was last read (recall)
        # (volunteer, device, task) → when a worker of it was last given a probe, and which; and the
        # workers left idle meanwhile, served as soon as the probe's result is in (_waits_for_a_probe).
        self._probes: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._parked: dict[tuple[str, str, str], set[str]] = {}
        self._parks = 0  # how many times a worker was left so, all told (serve_idle counts them as served)
        self._waiting: set[str] = set()  # those found to wait by the plan or top-up under way (settle)
        self.carbon = CarbonGate(redis)  # issue 17: carbon-aware jobs wait for cleaner zones and hours

    # -- what there is to do ------------------------------------------------------------------------
    def active_jobs(self) -> list[str]:
        fetched, ids = self._active
        if time.monotonic() - fetched > _CACHE_SECONDS:
            ids = [j.decode() for j in self.redis.zrange(keys.ACTIVE, 0, 99)]
            self._active = (time.monotonic(), ids)
            for gone in set(self._specs) - set(ids):
                del self._specs[gone]
        return ids

    def forget_active(self) -> None:
        self._active = (-math.inf, [])

    def spec(self, job_id: str) -> JobSpec | None:
        if job_id in self._specs:
            return self._specs[job_id]
        spec = None
        fields = self.redis.hmget(
            keys.job(job_id), "task", "version", "params", "units_total", "chunk_seconds", "chunking", "speculate"
        )
        try:
            task = TASKS[fields[0].decode()]
            params = json.loads(fields[2])
            data = self.redis.get(keys.data(job_id)) or b""
            units_total = int(fields[3])
            spec = JobSpec(
                job_id=job_id,
                task=task,
                version=fields[1].decode(),
                params=params,
                data=data,
                units_total=units_total,
                chunk_seconds=float(fields[4]),
                chunking=fields[5].decode(),
                speculate=fields[6] != b"0",
                total_work=task.work(params, data, 0, units_total),
            )
        except Exception as exc:  # a record this process cannot read: set aside, never fatal
            log.warning("dispatch: job %s unreadable here (%s); skipped", job_id, exc)
        self._specs[job_id] = spec
        return spec

    @staticmethod
    def _view(name: str, raw: dict[bytes, bytes]) -> WorkerView | None:
        if not raw:
            return None
        user, wid = keys.split_worker(name)
        tasks = _installed_tasks(raw.get(b"tasks", b"{}"))
        rates = {k[5:].decode(): float(v) for k, v in raw.items() if k.startswith(b"rate:")}
        device = raw.get(b"device", b"cpu").decode(errors="replace")
        return WorkerView(name, user, wid, tasks, rates, raw.get(b"zone", b"").decode(), device=device)

    # -- giving work --------------------------------------------------------------------------------
    @staticmethod
    def queue_state(pipe: Any, name: str) -> None:
        """The reads :meth:`fill` needs, queued on ``pipe`` (so a caller can add them to a round
        trip it makes anyway and pass the replies as ``state``)."""
        pipe.hgetall(keys.worker(name))
        pipe.sismember(keys.QUARANTINE, keys.split_worker(name)[0])
        pipe.zscore(keys.LIVE, name)
        pipe.smembers(keys.held(name))  # a few assignments: a result's is checked against them

    def fill(self, name: str, state: list[Any] | None = None, peeked: dict[str, tuple[Any, int]] | None = None) -> int:
        """Top the worker up to DEPTH assignments; returns how many it got. Marks it idle if none.

        ``state``: the replies of :meth:`queue_state`, if the caller read them already; ``peeked``:
        replies of :meth:`queue_peek` by job, read in the same round trip, with the heads asked."""
        return self.fill_many({name: state}, peeked)[name]

    def fill_many(
        self,
        states: dict[str, list[Any] | None],
        peeked: dict[str, tuple[Any, int]] | None = None,
        budget: float | None = None,
    ) -> dict[str, int]:
        """Top several workers up; returns how many assignments each got.

        ``states`` maps a worker to its :meth:`queue_state` replies or None (read here, with the
        active jobs' peeks when ``peeked`` is None). ``budget``: seconds after which the rest of the
        workers are left for later (they stay idle). See :meth:`plan` and :meth:`settle`."""
        give_up = None if budget is None else time.perf_counter() + budget
        missing = [name for name, state in states.items() if state is None]
        if missing or peeked is None:
            pipe = self.redis.pipeline(transaction=False)
            for name in missing:
                self.queue_state(pipe, name)
            jobs = self.active_jobs() if peeked is None else []
            asked = [self.queue_peek(pipe, job_id, len(states)) for job_id in jobs]
            replies = pipe.execute(raise_on_error=False)  # a peek may fail (no script after a restart)
            for error in (r for r in replies[: 4 * len(missing)] if isinstance(r, Exception)):
                raise error
            states = dict(states)
            for i, name in enumerate(missing):
                states[name] = replies[4 * i : 4 * i + 4]
            if peeked is None:
                peeked = dict(zip(jobs, zip(replies[4 * len(missing) :], asked, strict=True), strict=True))
        peeks = Peek.parse_all(peeked)
        workers = [w for name, state in states.items() if (w := self.worker_view(name, state)) is not None]
        self.recall(workers)
        pipe = self.redis.pipeline(transaction=False)
        plans = self.plan(pipe, workers, peeks, give_up)
        replies = pipe.execute(raise_on_error=False) if len(pipe) else []
        return {**dict.fromkeys(states, 0), **self.settle(plans, replies, peeks, give_up)}

    def worker_view(self, name: str, state: Any) -> tuple[WorkerView, int] | None:
        """The worker as :meth:`queue_state` read it and how many assignments it holds; None if it
        may not get work (gone, quarantined, not live)."""
        info, quarantined, live, held = state
        view = self._view(name, info)
        if view is None or quarantined or not live:
            return None
        self._seed(view)
        return view, len(held)

    def _seed(self, view: WorkerView) -> None:
        """Size a worker with no speed of its own for a task by its volunteer's on its kind of device."""
        known = self._volunteer_rates.get((view.user, view.device))
        if known:
            view.seeded = frozenset(known) - frozenset(view.rates)
            view.rates = {**known, **view.rates}

    def recall(self, workers: list[tuple[WorkerView, int]]) -> None:
        """Read from Redis the last speeds of the volunteers of workers with no speed here, and size
        those workers by them: the speeds were measured by another monitor, or by this one before it
        restarted, and a probe would measure them again. One round trip for all of them, at most
        once every RECALL_SECONDS per volunteer; a worker with a speed costs nothing."""
        now = time.monotonic()
        users = {
            view.user
            for view, _ in workers
            if not view.rates and now - self._recalled.get(view.user, -math.inf) >= RECALL_SECONDS
        }
        if not users:
            return
        pipe = self.redis.pipeline(transaction=False)
        for user in users:
            pipe.hgetall(keys.volunteer(user))
        self.learn({user: volunteer_rates(record) for user, record in zip(users, pipe.execute(), strict=True)})
        for view, _ in workers:
            if not view.rates and view.user in users:
                self._seed(view)

    def learn(self, known: dict[str, dict[str, dict[str, float]]]) -> None:
        """Take in volunteers' last speeds as read from Redis just now (user → :func:`volunteer_rates`
        of its record), newer than any remembered here."""
        _make_room(self._recalled)
        _make_room(self._volunteer_rates)
        now = time.monotonic()
        for user, by_device in known.items():
            self._recalled[user] = now
            for device, rates in by_device.items():
                self._volunteer_rates.setdefault((user, device), {}).update(rates)

    def measured(self, pipe: Any, rates: dict[tuple[str, str, str], float]) -> None:
        """Remember workers' new speeds ((worker, device, task) → rate) as their volunteers' (see
        ``_volunteer_rates``), and queue on ``pipe`` the siblings left idle for them: servable now,
        where they had been scored PROBE_PATIENCE ahead."""
        _make_room(self._volunteer_rates)
        ready: set[str] = set()
        for (worker, device, task), rate in rates.items():
            if rate > 0:
                user = keys.split_worker(worker)[0]
                self._volunteer_rates.setdefault((user, device), {})[task] = rate
                ready |= self._parked.pop((user, device, task), set())
        if ready:
            pipe.zadd(keys.IDLE, dict.fromkeys(ready, time.time()), xx=True)  # not one that left meanwhile

    def plan(
        self,
        pipe: Any,
        workers: list[tuple[WorkerView, int]],
        peeks: dict[str, Peek],
        give_up: float | None = None,
    ) -> list[Plan]:
        """Queue on ``pipe`` each worker's next pieces of pending work, planned from the jobs' peeks
        (each piece starts where the last one ended, for this worker or the one before), so that
        every worker is topped up in one round trip; ASSIGN checks each piece again. Pass the
        replies to :meth:`settle`."""
        plans: list[Plan] = []
        for view, held in workers:
            if give_up is not None and plans and time.perf_counter() > give_up:  # the first one, always
                break
            start = len(pipe)
            plans.append(Plan(view, held, start, self._plan(pipe, view, held, peeks)))
        return plans

    def settle(
        self, plans: list[Plan], replies: list[Any], peeks: dict[str, Peek], give_up: float | None = None
    ) -> dict[str, int]:
        """How many assignments each planned worker got; what ASSIGN refused, or what a peek could
        not plan (copies, the tail of a job), is then given one by one. Marks idle who got none."""
        answers = [replies[p.start : p.start + p.planned] for p in plans]
        gots = [sum(_ok(r) for r in rs) for rs in answers]
        if not all(_ok(r) for rs in answers for r in rs):
            # A refusal (another dispatcher split the same chunk first): the peeks no longer tell the
            # truth. The workers still short are planned again from fresh peeks, in two more round
            # trips for all of them, before any is served one by one.
            peeks = self._replan(plans, gots)
        short = [p.view for p, got in zip(plans, gots, strict=True) if p.held + got < DEPTH]
        nothing = self._nothing_at_the_tail(short, peeks, max(DEPTH - 1, 0)) if len(short) > 1 else set()
        given: dict[str, int] = {}
        idle: dict[str, float] = {}
        waiting: dict[str, float] = {}  # for a sibling's probe: not served before its result or patience ends
        for i, (p, got) in enumerate(zip(plans, gots, strict=True)):
            while p.held + got < DEPTH and (give_up is None or not i or time.perf_counter() <= give_up):
                if p.view.name in self._waiting or p.view.name in nothing:
                    break
                if not self._assign_one(p.view, p.held + got, peeks):
                    break
                got += 1
            if p.held + got == 0 and p.view.name in self._waiting:
                waiting[p.view.name] = time.time() + PROBE_PATIENCE
            elif p.held + got == 0:
                idle[p.view.name] = time.time()
            given[p.view.name] = got
            self._waiting.discard(p.view.name)
        if idle or waiting:  # one round trip for all of them (at a job's tail, most of a batch)
            pipe = self.redis.pipeline(transaction=False)
            if idle:
                pipe.zadd(keys.IDLE, idle, nx=True)
            if waiting:  # scored when they may be served again (serve_idle reads up to now)
                pipe.zadd(keys.IDLE, waiting)
                self._parks += len(waiting)
            pipe.execute()
        return given

    def _nothing_at_the_tail(self, views: list[WorkerView], peeks: dict[str, Peek], position: int) -> set[str]:
        """The workers among ``views`` that no job can give anything now, as far as one look at each
        job's tail tells, so that they are marked idle at once rather than each making the round
        trips of a steal and a speculative copy (at a job's end, most of a batch).

        A job is at its tail when its peek shows nothing pending and no copy wanted. There, a worker
        could only take the running chunk expected to end last (or, failing that, nothing: the others
        end sooner), and only if it would finish that chunk sooner by the smaller of the steal and
        copy margins. One round trip reads that chunk for every tail job; a worker that may take
        work of a job not at its tail is never counted out."""
        tails = [j for j, peek in peeks.items() if not peek.heads and not peek.more and not peek.wanted]
        if not tails:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for job_id in tails:
            pipe.evalsha(self.scripts.last_running.sha, 2, keys.running(job_id), keys.chunks(job_id))
        last: dict[str, tuple[float, float]] = {}  # job → (when its last chunk should end, its work)
        for job_id, reply in zip(tails, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, redis_lib.exceptions.NoScriptError):  # not loaded yet: this loads it
                reply = self.scripts.last_running(keys=[keys.running(job_id), keys.chunks(job_id)])
            spec = self.spec(job_id)
            try:
                ends, raw = float(reply[0]), reply[1]
                chunk = json.loads(raw)
                last[job_id] = ends, spec.task.work(spec.params, spec.data, int(chunk["first"]), int(chunk["count"]))
            except (TypeError, ValueError, KeyError, IndexError, AttributeError):
                continue  # nothing running (or unreadable): a worker there is left to the usual path
        now, out = time.time(), set()
        for view in views:
            if not any(self._worth_a_look(view, spec, tails, last, now, position) for spec in self._runnable(view)):
                out.add(view.name)
        return out

    def _worth_a_look(
        self,
        view: WorkerView,
        spec: JobSpec,
        tails: list[str],
        last: dict[str, tuple[float, float]],
        now: float,
        position: int,
    ) -> bool:
        """Whether :meth:`_assign_one` could give ``view`` anything of this job (see
        :meth:`_nothing_at_the_tail`): any job not at its tail, or whose last chunk could not be
        read, might; at a tail, only a measured worker that would finish the last chunk sooner."""
        if spec.job_id not in tails:
            return True
        if not view.rates.get(spec.task.name):
            return False  # an unmeasured worker neither steals nor copies
        if spec.job_id not in last:
            return True
        ends, work = last[spec.job_id]
        expected = self._expected(view, spec, work)
        margin = min(SPECULATION_MARGIN, max(STEAL_MARGIN, 0.1 * expected))
        return now + expected * (position + 1) + margin < ends

    def _replan(self, plans: list[Plan], gots: list[int]) -> dict[str, Peek]:
        """Plan again, from fresh peeks, the workers of ``plans`` still short of work, adding what
        they got to ``gots``; returns the peeks as the new assignments left them ({} if one was
        refused again: then they are served one by one)."""
        short = [i for i, (p, got) in enumerate(zip(plans, gots, strict=True)) if p.held + got < DEPTH]
        jobs = self.active_jobs()
        if not short or not jobs:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        asked = [self.queue_peek(pipe, job_id, len(short)) for job_id in jobs]
        read = pipe.execute(raise_on_error=False)
        peeks = Peek.parse_all(dict(zip(jobs, zip(read, asked, strict=True), strict=True)))
        pipe = self.redis.pipeline(transaction=False)
        again = self.plan(pipe, [(plans[i].view, plans[i].held + gots[i]) for i in short], peeks)
        replies = pipe.execute(raise_on_error=False) if len(pipe) else []
        refused = False
        for i, p in zip(short, again, strict=True):
            answers = replies[p.start : p.start + p.planned]
            gots[i] += sum(_ok(r) for r in answers)
            refused = refused or not all(_ok(r) for r in answers)
        return {} if refused else peeks

    def _plan(self, pipe: Any, view: WorkerView, held: int, peeks: dict[str, Peek]) -> int:
        """Queue on ``pipe`` the worker's next pieces of pending work as the peeks show them; returns
        how many. Stops where the peek cannot tell (nothing pending, more to read), where the worker
        is to wait for a sibling's probe and, for as many workers as the job wants copies, where a
        copy comes first: those workers are served one by one in :meth:`settle` and the rest of the
        batch goes on from the pending chunks."""
        planned = 0
        while held + planned < DEPTH:
            spec = self._first_job(view)
            peek = peeks.get(spec.job_id) if spec else None
            if spec is None or peek is None or not peek.heads:
                break
            if peek.wanted and not planned and peek.reserved < len(peek.wanted):
                peek.reserved += 1
                break
            if self._waits_for_a_probe(view, spec):
                break
            chunk_id, first, count = peek.heads[0]
            take = self._take(view, spec, first, count, peek.claimed)
            work = spec.task.work(spec.params, spec.data, first, take)
            script_keys, args = self._assign_call(view, spec, chunk_id, "new", first, take, work, held + planned)
            pipe.evalsha(self.scripts.assign.sha, len(script_keys), *script_keys, *args)
            peek.took(take)
            planned += 1
        return planned

    def _runnable(self, view: WorkerView) -> Iterator[JobSpec]:
        """The active jobs, oldest first, whose task and version this worker has."""
        for job_id in self.active_jobs():
            spec = self.spec(job_id)
            if spec is not None and view.tasks.get(spec.task.name) == spec.version:
                yield spec

    def _allowed(self, view: WorkerView) -> Iterator[JobSpec]:
        """:meth:`_runnable`, less the jobs the carbon policy holds back from this worker now."""
        for spec in self._runnable(view):
            if self.carbon.allows(spec.job_id, spec.task.name, spec.total_work, spec.units_total, view.zone):
                yield spec

    def _first_job(self, view: WorkerView) -> JobSpec | None:
        """The oldest active job this worker may take work from now (task, version, carbon)."""
        return next(self._allowed(view), None)

    def serve_idle(self, limit: int = 64, budget: float | None = 0.005) -> int:
        """Give work to workers that were waiting for some (after a submit, a requeue, a copy wanted),
        for at most ``budget`` seconds (the rest wait for the next call, longest-waiting first);
        returns how many got some or were left to wait for a sibling's probe (either way no longer
        waiting to be served: at a job's start most of a slice can be such siblings, and a caller
        that took a slice of them for nothing to do would wait a pass before the next slice). They
        are served IDLE_ROUND at a time, two round trips each.

        Bounded by default, since it is called on events that can come by the thousand (deaths,
        overdue chunks): the monitor's loop serves the rest between messages."""
        names = [n.decode() for n in self.redis.zrangebyscore(keys.IDLE, "-inf", time.time(), start=0, num=limit)]
        give_up = None if budget is None else time.perf_counter() + budget
        served, parks = 0, self._parks
        for start in range(0, len(names), IDLE_ROUND):
            if not self.active_jobs() or (give_up is not None and start and time.perf_counter() > give_up):
                break
            left = None if give_up is None else max(0.0, give_up - time.perf_counter())
            given = self.fill_many(dict.fromkeys(names[start : start + IDLE_ROUND]), budget=left)
            served += sum(1 for got in given.values() if got)
        return served + self._parks - parks

    def queue_peek(self, pipe: Any, job_id: str, workers: int = 1) -> int:
        """Queue what :meth:`fill` asks a job first, enough to plan ``workers`` top-ups; returns how
        many heads it asks for (pass ``(reply, heads)`` by job as :meth:`fill`'s ``peeked``)."""
        heads = min(DEPTH * max(workers, 1), PEEK_HEADS)
        pipe.evalsha(self.scripts.peek.sha, 4, *self._peek_keys(job_id), heads)
        return heads

    @staticmethod
    def _peek_keys(job_id: str) -> list[str]:
        return [keys.job(job_id), keys.chunks(job_id), keys.pending(job_id), keys.wanted(job_id)]

    def _assign_one(self, view: WorkerView, position: int, peeks: dict[str, Peek]) -> bool:
        for spec in self._allowed(view):
            job_id = spec.job_id
            # One round trip tells what the job has to give: copies wanted, its first pending chunk
            # (none if the caller read it already; it is only a hint, the assignment checks again).
            peek = peeks.pop(job_id, None)
            if peek is None or (not peek.heads and peek.more):
                peek = Peek.parse(self.scripts.peek(keys=self._peek_keys(job_id), args=[1]), 1)
            if peek is None:
                continue
            if peek.wanted and self._give_copy(view, spec, position, wanted=True, candidates=peek.wanted):
                return True
            if peek.heads and self._give_pending(view, spec, position, peek.claimed, peek.heads[0]):
                return True
            if not peek.heads and self._steal(view, spec, position):
                return True
            if spec.speculate and self._give_copy(view, spec, position, wanted=False):
                return True
        return False

    def _expected(self, view: WorkerView, spec: JobSpec, work: float) -> float:
        rate = view.rates.get(spec.task.name)
        return work / rate if rate else spec.chunk_seconds

    def _deadline(self, now: float, expected: float, position: int) -> float:
        # Queued behind `position` chunks of about the same length.
        return now + self.settings.deadline_factor * expected * (position + 1) + self.settings.deadline_slack

    def _assign_call(
        self,
        view: WorkerView,
        spec: JobSpec,
        chunk_id: str,
        kind: str,
        first: int,
        take: int,
        work: float,
        position: int,
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of the ASSIGN that gives ``view`` units [first, first + take) of a chunk."""
        now = time.time()
        expected = self._expected(view, spec, work)
        credit = chunk_credit(spec.task, spec.params, spec.data, first, take)
        script_keys = [*job_script_keys(spec.job_id), keys.held(view.name), keys.inbox(view.user, view.wid), keys.IDLE]
        args = [
            spec.job_id,
            chunk_id,
            kind,
            first,
            take,
            view.name,
            view.user,
            now,
            self._deadline(now, expected, position),
            credit,
            now + expected * (position + 1),
        ]
        return script_keys, args

    def _assign(self, view: WorkerView, spec: JobSpec, chunk_id: str, kind: str, *where: Any) -> list[Any]:
        script_keys, args = self._assign_call(view, spec, chunk_id, kind, *where)
        return self.scripts.assign(keys=script_keys, args=args)

    def _give_pending(
        self, view: WorkerView, spec: JobSpec, position: int, claimed: int, head: tuple[str, int, int]
    ) -> bool:
        """``head``: the pending chunk to split first, (id, first, count) as a peek read it."""
        if self._waits_for_a_probe(view, spec):
            return False
        tried: set[str] = set()
        chunk_id, first, count = head
        for attempt in range(4):  # another dispatcher may move the head; a chunk this volunteer failed is skipped
            if attempt:
                heads = [h.decode() for h in self.redis.zrange(keys.pending(spec.job_id), 0, 7)]
                heads = [h for h in heads if h not in tried]
                if not heads:
                    return False
                chunk_id = heads[0]
                claimed = int(self.redis.hget(keys.job(spec.job_id), "units_claimed") or 0)
                raw = self.redis.hget(keys.chunks(spec.job_id), chunk_id)
                if raw is None:
                    continue
                chunk = json.loads(raw)
                first, count = int(chunk["first"]), int(chunk["count"])
            tried.add(chunk_id)
            take = self._take(view, spec, first, count, claimed)
            work = spec.task.work(spec.params, spec.data, first, take)
            reply = self._assign(view, spec, chunk_id, "new", first, take, work, position)
            if reply[0] == b"ok":
                return True
            if reply[1] in (b"ended", b"quarantined"):
                return False
            if reply[1] == b"moved":
                tried.discard(chunk_id)
        return False

    def _take(self, view: WorkerView, spec: JobSpec, first: int, count: int, claimed: int | None = None) -> int:
        if spec.chunking == "fixed":
            return count
        task = spec.task
        rate = view.rates.get(task.name)
        if not rate:
            return min(count, task.probe_units(spec.params))
        if claimed is None:
            claimed = int(self.redis.hget(keys.job(spec.job_id), "units_claimed") or 0)
        unclaimed = max(spec.units_total - claimed, count)
        remaining_work = spec.total_work * unclaimed / max(spec.units_total, 1)
        cluster = max(self.cluster_rate(task.name), rate)
        floor = self.tail_floor(rate, cluster)
        seconds = min(self.chunk_seconds(spec), max(floor, remaining_work / cluster / 2))
        if task.name in view.seeded:
            # Siblings that waited for one probe start together: their first pieces, from a half to
            # the whole chunk time by worker, spread their results over the chunk time, where
            # equal pieces would come back in one burst every chunk time (unspread, at N = 1,000,
            # dispatch p99 was 104 ms against 12-34 before). Never below the floor: a monitor that
            # cannot answer shorter pieces is saturated, and spreading a burst shortens no wait.
            seconds = max(seconds * (0.5 + 0.5 * zlib.crc32(view.name.encode()) / 2**32), min(seconds, floor))
        return task.units_for_work(spec.params, spec.data, first, count, rate * seconds)

    def _waits_for_a_probe(self, view: WorkerView, spec: JobSpec) -> bool:
        """Whether this worker, with no speed of its own or its volunteer's for the job's task, waits
        (idle) for the probe a sibling on the same kind of device holds rather than take one: its
        volunteer's speed there, once that probe's result is in, sizes its first chunk. A
        volunteer's workers are one machine's cores as a rule, and at a job's start thousands of
        them would each send probe results to a busy monitor before any could be sized. After
        PROBE_PATIENCE seconds another worker may probe (the first may have died)."""
        task = spec.task.name
        if not self.one_probe_each or spec.chunking == "fixed" or view.rates.get(task):
            return False
        now = time.monotonic()
        key = (view.user, view.device, task)
        since, prober = self._probes.get(key, (-math.inf, ""))
        if prober != view.name and now - since < PROBE_PATIENCE:
            _make_room(self._parked)
            self._parked.setdefault(key, set()).add(view.name)
            _make_room(self._waiting)  # fills only for a caller that plans but never settles
            self._waiting.add(view.name)
            return True
        _make_room(self._probes)
        self._probes[key] = (now, view.name)
        return False

    def tail_floor(self, rate: float, cluster: float) -> float:
        """The shortest chunk worth cutting for a worker of speed ``rate`` in a cluster of speed
        ``cluster``: with every worker on chunks this long (about cluster / rate of them), their
        results keep the monitor's loop at most TAIL_LOAD busy. Halving chunks toward a job's end
        makes each worker send 2 ln(chunk time / shortest chunk) results in the job's last two chunk
        times, 11 for 30 s chunks cut down to 0.1 s where 2 would do. At 50,000 volunteers on 30 s
        chunks (bench.swarm) that buried the monitor: 778,000 chunks in 380 s and the job 86 % done,
        where 342,000 did the whole job in 220 s with this floor. (With several monitors, each
        answers a share of the results, so the floor is cautious by their number.)"""
        return max(MIN_CHUNK_SECONDS, cluster / rate * self.message_cost / TAIL_LOAD)

    def chunk_seconds(self, spec: JobSpec) -> float:
        """How long a piece of the job may take: the chunk time the job asked for or, if longer, the
        time at which every live worker's results keep the monitor's loop at most TAIL_LOAD busy,
        by what a message costs it under a backlog (up to MAX_STRETCH times the chunk time). A
        monitor that cannot answer results as fast as the chunks asked for bring them hands out
        longer pieces rather than let the volunteers wait in its backlog for their next ones: at
        N = 10,000 on 2 s chunks (bench.swarm, two shared cores) the volunteers were busy 87-93 %
        of the time instead of 56-64 %, on pieces of about 4 s. (Like tail_floor, cautious by the
        number of monitors: each measures its own loop, answering a share of the results.)"""
        live = self._cluster(spec.task.name)[1]
        stretched = min(max(spec.chunk_seconds, live * self.message_cost / TAIL_LOAD), spec.chunk_seconds * MAX_STRETCH)
        if stretched > spec.chunk_seconds and time.monotonic() - self._stretch_said > 60.0:
            self._stretch_said = time.monotonic()  # said at most once a minute while it lasts
            log.warning(
                "dispatch: saturated (%d live workers, %.0f µs a message): chunks of job %s stretched from "
                "%g s to %.1f s; longer chunks, or Redis on a core of its own, relieve the monitor",
                live,
                self.message_cost * 1e6,
                spec.job_id,
                spec.chunk_seconds,
                stretched,
            )
        return stretched

    def cluster_rate(self, task: str) -> float:
        """Sum of the live workers' measured speeds for ``task`` (kept as a running total)."""
        return self._cluster(task)[0]

    def _cluster(self, task: str) -> tuple[float, int]:
        """The live workers' speeds for ``task``, summed, and how many workers are live (read at most
        once a second)."""
        cached = self._cluster_rates.get(task)
        if cached and time.monotonic() - cached[0] < 1.0:
            return cached[1], cached[2]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.COUNTS, f"rate:{task}")
        pipe.zcard(keys.LIVE)
        raw, live = pipe.execute()
        total = float(raw or 0.0)
        self._cluster_rates[task] = (time.monotonic(), total, int(live))
        return total, int(live)

    def _steal(self, view: WorkerView, spec: JobSpec, position: int) -> bool:
        """At the tail of a job, take a chunk that another worker holds but has not started (it waits
        in that worker's inbox) when this worker is expected to finish it sooner, and give it here.
        Unlike a speculative copy this costs no duplicate work, so the bar is low: any real gain.
        Only a measured worker steals, and only from a measured one (a new worker's finish time is a
        guess, and it may simply not have read its inbox yet)."""
        if not view.rates.get(spec.task.name):
            return False
        now = time.time()
        for raw_id, ends in self.redis.zrevrange(keys.running(spec.job_id), 0, 7, withscores=True):
            chunk_id = raw_id.decode()
            raw = self.redis.hget(keys.chunks(spec.job_id), chunk_id)
            chunk = json.loads(raw) if raw else {}
            holders = chunk.get("holders") or {}
            if len(holders) != 1 or chunk.get("results") or view.name in holders:
                continue
            victim, held = next(iter(holders.items()))
            expected = self._expected(
                view, spec, spec.task.work(spec.params, spec.data, chunk["first"], chunk["count"])
            )
            if now + expected * (position + 1) + max(STEAL_MARGIN, 0.1 * expected) >= float(ends):
                break  # later candidates end sooner still
            if not self.redis.zscore(keys.rates(spec.task.name), victim):
                continue  # an unmeasured holder's finish time is a guess too: it keeps what it was given
            user, wid = keys.split_worker(victim)
            taken = self.scripts.steal(
                keys=[*job_script_keys(spec.job_id), keys.held(victim), keys.inbox(user, wid)],
                args=[spec.job_id, chunk_id, held["nonce"], victim, now],
            )
            if taken:
                claimed = int(self.redis.hget(keys.job(spec.job_id), "units_claimed") or 0)
                head = (chunk_id, int(chunk["first"]), int(chunk["count"]))
                return self._give_pending(view, spec, position, claimed, head)
        return False

    def _give_copy(
        self, view: WorkerView, spec: JobSpec, position: int, *, wanted: bool, candidates: list[bytes] | None = None
    ) -> bool:
        if wanted:
            ids = [c.decode() for c in (candidates or [])]
        else:
            if self.redis.zcard(keys.pending(spec.job_id)):
                return False
            last = self.redis.zrevrange(keys.running(spec.job_id), 0, 0, withscores=True)
            if not last:
                return False
            ids = [last[0][0].decode()]
        for chunk_id in ids:
            raw = self.redis.hget(keys.chunks(spec.job_id), chunk_id)
            if raw is None:
                self.redis.zrem(keys.wanted(spec.job_id), chunk_id)
                continue
            chunk = json.loads(raw)
            work = spec.task.work(spec.params, spec.data, chunk["first"], chunk["count"])
            if not wanted:
                if not view.rates.get(spec.task.name):
                    return False
                ends = self.redis.zscore(keys.running(spec.job_id), chunk_id) or 0.0
                if time.time() + self._expected(view, spec, work) * (position + 1) + SPECULATION_MARGIN >= ends:
                    return False
            reply = self._assign(view, spec, chunk_id, "copy", chunk["first"], chunk["count"], work, position)
            if reply[0] == b"ok":
                return True
        return False


def volunteer_rates(record: dict[bytes, bytes]) -> dict[str, dict[str, float]]:
    """A volunteer record's last measured speeds, device → task → rate (what cannot be read is left out)."""
    rates: dict[str, dict[str, float]] = {}
    for name, raw in record.items():
        where = keys.parse_device_rate(name.decode(errors="replace"))
        try:
            rate = float(raw)
        except ValueError:
            continue
        if where and math.isfinite(rate) and rate > 0:
            rates.setdefault(where[0], {})[where[1]] = rate
    return rates


def _make_room(remembered: dict[Any, Any] | set[Any]) -> None:
    """Forget all of a dispatcher's soft state of one kind once it holds MAX_VOLUNTEER_RATES
    entries: it only saves probes and round trips, and is learnt again."""
    if len(remembered) >= MAX_VOLUNTEER_RATES:
        remembered.clear()


def _ok(reply: Any) -> bool:
    """Whether an ASSIGN reply says the piece was given."""
    return isinstance(reply, list) and reply[0] == b"ok"
