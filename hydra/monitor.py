"""The monitor: finds chunks whose worker vanished and puts them back on the queue.

Each pass (every 0.25 s by default):

1. **Dead workers.** A running chunk whose holder's heartbeat key has expired is requeued at
   once (counting one attempt), without waiting for its deadline: a ``kill -9`` is noticed within
   the heartbeat TTL (3 s) plus one pass.
2. **Deadlines.** A running chunk past its deadline whose holder is still alive is *not* taken
   away: a speculative copy is queued instead, and whichever finishes first counts.
3. **Lost tickets.** A pending chunk whose ticket has been waiting a while is checked against the
   rq queue; if no ticket for it is there (a worker died between taking the ticket and claiming
   the chunk), a new ticket is enqueued. Duplicate tickets are harmless: a claim is atomic.
4. **The tail.** When the queue is empty and live workers sit idle, a running chunk that an idle
   worker would finish sooner than its holder gets a speculative copy.
5. **Events.** Progress of active jobs and the worker list go to the page.

Several monitors may run: a lease in Redis (``hydra:monitor:lease``) lets one act at a time, and
every change is a Lua script, so a monitor killed mid-pass loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

import redis as redis_lib
from redis import Redis

from hydra import keys
from hydra.chunks import ChunkDescriptor, enqueue_tickets, rq_queue
from hydra.errors import HydraError
from hydra.events import Events
from hydra.queue import PENDING_GRACE, job_status, live_workers
from hydra.scripts import Scripts, script_keys
from hydra.settings import Settings
from hydra.tasks import TASKS, get_task
from hydra.workers import worker_list

log = logging.getLogger(__name__)

LEASE_MS = 3000
GONE_WORKERS_KEPT = 24 * 3600
# A speculative copy must be expected to finish this much sooner than the original to be worth it.
SPECULATION_MARGIN = 0.5

_EXTEND_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


@dataclass
class PassReport:
    requeued: list[str] = field(default_factory=list)
    speculated: list[str] = field(default_factory=list)
    reissued: list[str] = field(default_factory=list)
    acted: bool = False


class Monitor:
    def __init__(self, redis: Redis, settings: Settings, events: Events | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.events = events or Events(None)
        self.scripts = Scripts(redis)
        self.queue = rq_queue(redis)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._lease = redis.register_script(_EXTEND_LEASE)
        self._last_housekeeping = 0.0
        self._last_cluster_event = 0.0
        self._last_totals: dict[str, float] = {}
        self._active_before: set[str] = set()

    def run(self, stop: threading.Event | None = None) -> None:
        """Run passes until ``stop`` is set; Redis outages are waited out."""
        stop = stop or threading.Event()
        delay = self.settings.monitor_interval
        while not stop.is_set():
            try:
                self.run_pass()
                delay = self.settings.monitor_interval
            except (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.BusyLoadingError) as exc:
                log.warning("monitor: Redis unavailable (%s); retrying in %.1f s", exc, delay)
                delay = min(delay * 2, 5.0)
            stop.wait(delay)

    def run_pass(self) -> PassReport:
        report = PassReport()
        if not self._lease(keys=[keys.MONITOR_LEASE], args=[self.id, LEASE_MS]):
            return report
        report.acted = True
        now = time.time()
        alive = set(live_workers(self.redis))
        self._check_running(now, alive, report)
        self._check_pending(now, report)
        self._speculate_on_tail(alive, report)
        self._emit(alive)
        if now - self._last_housekeeping > 5:
            self._housekeeping(now, alive)
            self._last_housekeeping = now
        for line in report.requeued + report.speculated + report.reissued:
            log.info("monitor: %s", line)
        return report

    # -- running chunks ----------------------------------------------------------------------------
    def _running(self) -> list[tuple[str, int, float, dict]]:
        members = self.redis.zrange(keys.DEADLINES, 0, -1, withscores=True)
        pipe = self.redis.pipeline(transaction=False)
        parsed = []
        for member, deadline in members:
            job_id, chunk_id = keys.parse_chunk_member(member.decode())
            parsed.append((job_id, chunk_id, deadline))
            pipe.hget(keys.chunks(job_id), chunk_id)
        out = []
        for (job_id, chunk_id, deadline), raw in zip(parsed, pipe.execute(), strict=True):
            if raw is None:
                self.redis.zrem(keys.DEADLINES, keys.chunk_member(job_id, chunk_id))
                continue
            out.append((job_id, chunk_id, deadline, json.loads(raw)))
        return out

    def _check_running(self, now: float, alive: set[str], report: PassReport) -> None:
        for job_id, chunk_id, deadline, chunk in self._running():
            holder = chunk.get("worker", "")
            if holder not in alive:
                self._requeue(job_id, chunk_id, f"worker {holder} vanished (heartbeat lost)", holder, report)
            elif deadline < now:
                if not chunk.get("spec") and self._speculate(job_id, chunk_id, chunk):
                    report.speculated.append(f"job {job_id} chunk {chunk_id} overdue on {holder}: copy queued")
                # Look again one deadline window later, not on every pass.
                self.redis.zadd(keys.DEADLINES, {keys.chunk_member(job_id, chunk_id): now + self._window()}, xx=True)

    def _window(self) -> float:
        return self.settings.deadline_factor * self.settings.chunk_seconds + self.settings.deadline_slack

    def _requeue(self, job_id: str, chunk_id: int, reason: str, holder: str, report: PassReport) -> None:
        reply = self.scripts.requeue(
            keys=script_keys(job_id, self.queue.key),
            args=[job_id, chunk_id, time.time(), reason, 1, holder, PENDING_GRACE],
        )
        if int(reply[0]) == 1:
            descriptor = self._descriptor(job_id, chunk_id, int(reply[1]), int(reply[2]), int(reply[3]))
            if descriptor:
                enqueue_tickets(self.redis, [descriptor], at_front=True)
            report.requeued.append(f"job {job_id} chunk {chunk_id} requeued: {reason}")
        elif int(reply[0]) == 2:
            report.requeued.append(f"job {job_id} failed: chunk {chunk_id} ran out of attempts ({reason})")
            self.events.job_progress(self.redis, job_id, force=True)

    def _descriptor(
        self, job_id: str, chunk_id: int, first: int, count: int, attempt: int = 0, speculative: bool = False
    ) -> ChunkDescriptor | None:
        task, seed = self.redis.hmget(keys.job(job_id), "task", "seed")
        if task is None:
            return None
        return ChunkDescriptor(job_id, chunk_id, task.decode(), int(seed), first, count, attempt, speculative)

    def _speculate(self, job_id: str, chunk_id: int, chunk: dict) -> bool:
        descriptor = self._descriptor(
            job_id, chunk_id, chunk["first"], chunk["count"], chunk.get("attempt", 0), speculative=True
        )
        if descriptor is None:
            return False
        enqueue_tickets(self.redis, [descriptor], at_front=True)
        return True

    # -- pending chunks ----------------------------------------------------------------------------
    def _queued_tickets(self) -> set[tuple[str, int]]:
        """(job, chunk) of every ticket on the rq queue or taken but not yet started."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(self.queue.key, 0, -1)
        pipe.lrange(self.queue.intermediate_queue_key, 0, -1)
        found = set()
        for ticket in (t.decode() for ids in pipe.execute() for t in ids):
            parts = ticket.split("-")
            if len(parts) == 4 and parts[0] == "h" and parts[2].isdigit():
                found.add((parts[1], int(parts[2])))
        return found

    def _check_pending(self, now: float, report: PassReport) -> None:
        overdue = self.redis.zrangebyscore(keys.PENDING, "-inf", now)
        if not overdue:
            return
        queued = self._queued_tickets()
        for member in (m.decode() for m in overdue):
            job_id, chunk_id = keys.parse_chunk_member(member)
            raw = self.redis.hget(keys.chunks(job_id), chunk_id)
            if raw is None:
                self.redis.zrem(keys.PENDING, member)
                continue
            chunk = json.loads(raw)
            if chunk["state"] in ("pending", "verifying") and (job_id, chunk_id) not in queued:
                # A verifying chunk needs a copy by another worker; a pending one, its ticket.
                descriptor = self._descriptor(
                    job_id,
                    chunk_id,
                    chunk["first"],
                    chunk["count"],
                    chunk["attempt"],
                    speculative=chunk["state"] == "verifying",
                )
                if descriptor:
                    enqueue_tickets(self.redis, [descriptor], at_front=True)
                    report.reissued.append(f"job {job_id} chunk {chunk_id}: ticket lost, enqueued again")
            self.redis.zadd(keys.PENDING, {member: now + PENDING_GRACE}, xx=True)

    # -- the tail ----------------------------------------------------------------------------------
    def _speculate_on_tail(self, alive: set[str], report: PassReport) -> None:
        if not alive or self.redis.llen(self.queue.key) > 0:
            return
        pipe = self.redis.pipeline(transaction=False)
        names = sorted(alive)
        for name in names:
            pipe.hgetall(keys.worker(name))
        workers = dict(zip(names, pipe.execute(), strict=True))
        idle = [n for n, info in workers.items() if not info.get(b"current")]
        if not idle:
            return
        running = self._running()
        for job_id, chunk_id, _deadline, chunk in sorted(running, key=lambda r: r[3].get("started", 0)):
            if not idle:
                break
            if chunk.get("spec"):
                continue
            record = self.redis.hmget(keys.job(job_id), "task", "params", "state", "speculate")
            if record[0] is None or record[2] != b"running" or record[3] == b"0":
                continue
            task = get_task(record[0].decode())
            params = json.loads(record[1])
            data = self.redis.get(keys.data(job_id)) or b""
            work = task.work(params, data, chunk["first"], chunk["count"])
            holder_rate = float(workers.get(chunk["worker"], {}).get(f"rate:{task.name}".encode(), 0) or 0)
            fastest = max(idle, key=lambda n: float(workers[n].get(f"rate:{task.name}".encode(), 0) or 0))
            idle_rate = float(workers[fastest].get(f"rate:{task.name}".encode(), 0) or 0)
            if holder_rate <= 0 or idle_rate <= 0:
                continue
            original_end = chunk.get("started", time.time()) + work / holder_rate
            copy_end = time.time() + work / idle_rate
            if copy_end + SPECULATION_MARGIN < original_end and self._speculate(job_id, chunk_id, chunk):
                idle.remove(fastest)
                report.speculated.append(f"job {job_id} chunk {chunk_id} on slow {chunk['worker']}: copy queued")

    # -- events and housekeeping -------------------------------------------------------------------
    def _emit(self, alive: set[str]) -> None:
        """Progress of active jobs (coalesced), and once a second the workers and the cluster's throughput."""
        if not self.events.redis_url:
            return
        active = self._active_jobs()
        for job_id in active:
            self.events.job_progress(self.redis, job_id)
        # A job that ended without an event of its own (cancelled from the CLI, say): its final state.
        for job_id in self._active_before - set(active):
            self.events.job_progress(self.redis, job_id, force=True)
        self._active_before = set(active)
        now = time.monotonic()
        if now - self._last_cluster_event < 1.0:
            return
        self.events.emit("workers", worker_list(self.redis))
        totals: dict[str, float] = {}
        for job_id in active:
            try:
                status = job_status(self.redis, job_id)
            except HydraError:
                continue
            totals[status["unit"]] = totals.get(status["unit"], 0.0) + status["done"]
        elapsed = now - self._last_cluster_event
        throughput = {
            unit: max(0.0, (done - self._last_totals.get(unit, 0.0)) / elapsed)
            for unit, done in totals.items()
            if unit in self._last_totals
        }
        self._last_totals, self._last_cluster_event = totals, now
        self.events.emit("cluster", {"time": time.time(), "workers": len(alive), "throughput": throughput})

    def _active_jobs(self) -> list[str]:
        ids = [j.decode() for j in self.redis.zrevrange(keys.JOBS, 0, 99)]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "state")
        return [j for j, s in zip(ids, pipe.execute(), strict=True) if s in (b"queued", b"running")]

    def _housekeeping(self, now: float, alive: set[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for name in (n.decode() for n in self.redis.zrange(keys.WORKERS, 0, -1)):
            if name not in alive:
                for task in TASKS:
                    pipe.zrem(keys.rates(task), name)
        pipe.zremrangebyscore(keys.WORKERS, "-inf", now - GONE_WORKERS_KEPT)
        pipe.execute()
        ids = [j.decode() for j in self.redis.zrange(keys.JOBS, 0, -1)]
        if ids:
            exists = self.redis.pipeline(transaction=False)
            for job_id in ids:
                exists.exists(keys.job(job_id))
            gone = [j for j, e in zip(ids, exists.execute(), strict=True) if not e]
            if gone:
                self.redis.zrem(keys.JOBS, *gone)
