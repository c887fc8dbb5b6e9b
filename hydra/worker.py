"""The volunteer's side: an rq worker class that runs Hydra chunks and nothing else.

Volunteers run the stock command ``rq worker hydra`` with ``RQ_WORKER_CLASS=hydra.worker.HydraWorker``
(rq reads that variable). :class:`HydraWorker` is rq's ``SimpleWorker`` (no fork per job, so numba
loads its kernels once per process) that

* forces rq's JSON serializer, so a pickled payload is never unpickled;
* refuses any rq job whose function is not ``hydra.tasks.run_chunk`` with one JSON descriptor;
* keeps a heartbeat key with a 3-second expiry from a background thread (the kernels release the
  GIL), which is how the monitor sees a dead worker within seconds;
* resumes its loop after Redis restarts instead of exiting as rq's does.

Chunk sizing: the queue is pull-based, so nobody knows in advance who takes a chunk. Hydra
therefore sizes a chunk *when it is claimed*: the claiming worker keeps the part it can finish in
about ``chunk_seconds`` at its own measured speed and, in the same Lua script, turns the rest into
a new pending chunk for which it enqueues a ticket at the front of the queue. Near the end of a
job the kept part shrinks to half of the cluster's remaining time (guided self-scheduling), so
workers of any speed finish together. A worker with no measured speed for a task takes a small
probe chunk first. Speeds are exponential moving averages kept in Redis (``hydra:rates:<task>``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis as redis_lib
from redis import Redis
from rq import get_current_job
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from hydra import keys
from hydra.chunks import ChunkDescriptor, enqueue_tickets, rq_queue
from hydra.errors import HydraError, MalformedChunk
from hydra.events import Events
from hydra.queue import PENDING_GRACE
from hydra.scripts import Scripts, script_keys
from hydra.settings import Settings
from hydra.tasks import ENTRY_POINT, get_task
from hydra.tasks.base import ChunkResult, Task

log = logging.getLogger(__name__)

# A worker's speed is work over time with older measurements fading out: the weight of a
# measurement halves for every RATE_HALF_LIFE seconds of work measured after it. So a chunk counts in
# proportion to its duration, and a tiny chunk dominated by fixed costs barely moves the estimate.
RATE_HALF_LIFE = 4.0
MIN_CHUNK_SECONDS = 0.1
WORKER_RECORD_TTL = 24 * 3600
REDIS_PATIENCE = 300.0

_runner: ChunkRunner | None = None


def current_runner() -> ChunkRunner:
    """The process's chunk runner: the HydraWorker's, or one made for a job run some other way."""
    global _runner
    if _runner is None:
        job = get_current_job()
        if job is None:
            raise HydraError("hydra.tasks.run_chunk runs inside an rq worker")
        _runner = ChunkRunner(
            job.connection, job.worker_name or f"{socket.gethostname()}-{os.getpid()}", Settings.from_env()
        )
    return _runner


def record_error(redis: Redis, message: str) -> None:
    log.error("%s", message)
    try:
        pipe = redis.pipeline()
        pipe.lpush(keys.ERRORS, f"{time.time():.3f} {message}"[:2000])
        pipe.ltrim(keys.ERRORS, 0, keys.ERRORS_KEPT - 1)
        pipe.execute()
    except redis_lib.RedisError:
        pass


def patiently(call, patience: float = REDIS_PATIENCE):
    """Run ``call()``, retrying through a Redis restart for up to ``patience`` seconds."""
    delay, give_up = 0.1, time.monotonic() + patience
    while True:
        try:
            return call()
        except (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.BusyLoadingError):
            if time.monotonic() > give_up:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def pick_device(wanted: str) -> str:
    """ "cuda" when asked for or (with "auto") when a CUDA GPU is there, else "cpu"."""
    if wanted == "cpu":
        return "cpu"
    from hydra.kernels.cuda import cuda_available

    if cuda_available():
        return "cuda"
    if wanted == "cuda":
        raise HydraError("HYDRA_DEVICE=cuda, but numba finds no CUDA GPU here")
    return "cpu"


def digest(task: Task, result: ChunkResult) -> str:
    """What two workers' results of the same chunk must share: a hash of the sums and the blob."""
    h = hashlib.sha256()
    for name in task.sums:
        h.update(f"{name}={result.sums[name]};".encode())
    h.update(result.blob)
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class JobContext:
    task: str
    seed: int
    params: dict[str, Any]
    data: bytes
    units_total: int
    chunk_seconds: float
    chunking: str


class ChunkRunner:
    """Claims, runs and reports chunks for one worker process."""

    def __init__(self, redis: Redis, name: str, settings: Settings) -> None:
        self.redis = redis
        self.name = name
        self.settings = settings
        self.scripts = Scripts(redis)
        self.queue_key = rq_queue(redis).key
        self.events = Events.from_env()
        self.rates: dict[str, float] = {}
        self._rate_sums: dict[str, tuple[float, float]] = {}
        self.device = pick_device(settings.device)
        self.quarantined = False
        self._contexts: dict[str, JobContext] = {}
        self._warm: set[str] = set()
        self._cluster_rate: dict[str, tuple[float, float]] = {}

    # -- registration ---------------------------------------------------------------------------
    def register(self) -> None:
        stored = patiently(lambda: self.redis.hgetall(keys.worker(self.name)))
        self.rates = {k.decode()[5:]: float(v) for k, v in stored.items() if k.startswith(b"rate:")}
        info = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device,
            "started": time.time(),
            "chunks": 0,
            "current": "",
        }
        with contextlib.suppress(redis_lib.RedisError):  # which ACL user, so `hydra volunteer remove` finds us
            info["user"] = self.redis.execute_command("ACL", "WHOAMI").decode()
        pipe = self.redis.pipeline()
        pipe.hset(keys.worker(self.name), mapping=info)
        pipe.expire(keys.worker(self.name), WORKER_RECORD_TTL)
        patiently(pipe.execute)
        self.beat()

    def beat(self) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(keys.worker_alive(self.name), now, px=int(self.settings.heartbeat_ttl * 1000))
        pipe.zadd(keys.WORKERS, {self.name: now})
        pipe.hset(keys.worker(self.name), "last_seen", now)
        pipe.expire(keys.worker(self.name), WORKER_RECORD_TTL)
        pipe.execute()

    def unregister(self) -> None:
        try:
            pipe = self.redis.pipeline()
            pipe.delete(keys.worker_alive(self.name))
            pipe.hset(keys.worker(self.name), "current", "")
            for task in self.rates:
                pipe.zrem(keys.rates(task), self.name)
            pipe.execute()
        except redis_lib.RedisError:
            pass

    # -- one chunk ------------------------------------------------------------------------------
    def run(self, descriptor: Any) -> str:
        """Claim, compute and report one chunk. Never raises for a bad chunk: it records why."""
        try:
            chunk = ChunkDescriptor.from_json(descriptor)
        except MalformedChunk as exc:
            record_error(self.redis, f"worker {self.name} refused a malformed chunk: {exc}")
            return "malformed"
        ctx = self._context(chunk.job)
        if ctx is None:
            return "dropped: job ended"
        if ctx.task != chunk.task or ctx.seed != chunk.seed:
            record_error(
                self.redis,
                f"worker {self.name} refused chunk {chunk.chunk} of job {chunk.job}: "
                "task or seed differ from the job record",
            )
            return "refused"
        task = get_task(chunk.task)
        if task.name not in self._warm:
            task.warm_up()
            self._warm.add(task.name)
        claimed = self._claim(chunk, task, ctx)
        if claimed is None:
            return "dropped"
        first, count = claimed
        self.redis.hset(keys.worker(self.name), "current", keys.chunk_member(chunk.job, chunk.chunk))
        started = time.perf_counter()
        try:
            if self.settings.fault == "raise":
                raise RuntimeError("injected fault (HYDRA_FAULT=raise)")
            result = task.run(ctx.params, ctx.data, chunk.seed, first, count, self.device)
            task.check_result(ctx.params, count, result)
            self._maybe_cheat(task, result)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            record_error(self.redis, f"job {chunk.job} chunk {chunk.chunk} raised on {self.name}: {reason}")
            self._requeue(chunk, reason)
            return "error"
        elapsed = time.perf_counter() - started
        if self.settings.throttle < 1:
            time.sleep(elapsed * (1 / self.settings.throttle - 1))
            elapsed = time.perf_counter() - started
        self._learn_rate(task.name, task.work(ctx.params, ctx.data, first, count), max(elapsed, 1e-6))
        args = [chunk.job, chunk.chunk, self.name, time.time(), first, count, result.blob, digest(task, result)]
        for name in task.sums:
            args += [name, result.sums[name]]
        outcome = int(patiently(lambda: self.scripts.complete(keys=self._keys(chunk.job), args=args))[0])
        if outcome == 3:  # a verified job: ask another worker for a copy to compare with
            copy = ChunkDescriptor(chunk.job, chunk.chunk, chunk.task, chunk.seed, first, count, speculative=True)
            patiently(lambda: enqueue_tickets(self.redis, [copy], at_front=True))
        pipe = self.redis.pipeline()
        pipe.hset(keys.worker(self.name), "current", "")
        pipe.hincrby(keys.worker(self.name), "chunks", 1)
        patiently(pipe.execute)
        if (
            outcome
            and self.events.page_is_listening(self.redis)
            and (tile := task.announce(chunk.job, ctx.params, result))
        ):
            self.events.emit("tile", tile)
        self.events.job_progress(self.redis, chunk.job, force=outcome == 2)
        if outcome == 2:
            self._contexts.pop(chunk.job, None)
        return {0: "ignored", 1: "done", 2: "done; job finished", 3: "done; awaiting confirmation"}[outcome]

    def _maybe_cheat(self, task: Task, result: ChunkResult) -> None:
        """Test-only (HYDRA_FAULT=cheat or cheat:<fraction>): corrupt a result, to test verification."""
        fault = self.settings.fault
        if not fault.startswith("cheat"):
            return
        fraction = float(fault.partition(":")[2] or 1)
        if random.random() < fraction:
            first = task.sums[0]
            result.sums[first] = result.sums[first] + 1

    def _keys(self, job_id: str) -> list[str]:
        return script_keys(job_id, self.queue_key)

    def _context(self, job_id: str) -> JobContext | None:
        ctx = self._contexts.get(job_id)
        if ctx is not None:
            return ctx
        import json

        raw = patiently(
            lambda: self.redis.hmget(
                keys.job(job_id), "task", "seed", "params", "units_total", "chunk_seconds", "chunking", "state"
            )
        )
        if raw[0] is None or raw[6] not in (b"queued", b"running"):
            return None
        data = patiently(lambda: self.redis.get(keys.data(job_id))) or b""
        ctx = JobContext(
            task=raw[0].decode(),
            seed=int(raw[1]),
            params=json.loads(raw[2]),
            data=data,
            units_total=int(raw[3]),
            chunk_seconds=float(raw[4]),
            chunking=raw[5].decode(),
        )
        if len(self._contexts) > 64:
            self._contexts.clear()
        self._contexts[job_id] = ctx
        return ctx

    def _claim(self, chunk: ChunkDescriptor, task: Task, ctx: JobContext) -> tuple[int, int] | None:
        take = self._units_to_take(chunk, task, ctx)
        rate = self.rates.get(task.name)
        expected = task.work(ctx.params, ctx.data, chunk.first, take) / rate if rate else ctx.chunk_seconds
        now = time.time()
        deadline = now + self.settings.deadline_factor * expected + self.settings.deadline_slack
        ticket = get_current_job()
        reply = patiently(
            lambda: self.scripts.claim(
                keys=self._keys(chunk.job),
                args=[
                    chunk.job,
                    chunk.chunk,
                    ticket.id if ticket else "",
                    self.name,
                    now,
                    take,
                    deadline,
                    int(chunk.speculative),
                    PENDING_GRACE,
                ],
            )
        )
        kind = reply[0].decode()
        if kind == "quarantined":
            # Give the ticket back for an honest worker, and stop taking work.
            record_error(self.redis, f"worker {self.name} is quarantined for a wrong result; stopping")
            patiently(lambda: enqueue_tickets(self.redis, [chunk], at_front=True))
            self.quarantined = True
            return None
        if kind == "pass":
            if self._another_worker_could_confirm():
                patiently(lambda: enqueue_tickets(self.redis, [chunk]))
            return None  # else the monitor re-issues the copy when another worker turns up
        if kind == "gone":
            return None
        first, count = int(reply[1]), int(reply[2])
        if kind == "run" and int(reply[4]) >= 0:
            rest = ChunkDescriptor(chunk.job, int(reply[4]), chunk.task, chunk.seed, int(reply[5]), int(reply[6]))
            patiently(lambda: enqueue_tickets(self.redis, [rest], at_front=True))
        return first, count

    def _another_worker_could_confirm(self) -> bool:
        from hydra.queue import live_workers

        quarantined = {q.decode() for q in self.redis.smembers(keys.QUARANTINE)}
        return any(w != self.name and w not in quarantined for w in live_workers(self.redis))

    def _units_to_take(self, chunk: ChunkDescriptor, task: Task, ctx: JobContext) -> int:
        if ctx.chunking == "fixed" or chunk.speculative:
            return chunk.count
        rate = self.rates.get(task.name)
        if rate is None:
            return min(chunk.count, task.probe_units(ctx.params))
        claimed = int(self.redis.hget(keys.job(chunk.job), "units_claimed") or 0)
        unclaimed = max(ctx.units_total - claimed, chunk.count)
        remaining_work = task.work(ctx.params, ctx.data, 0, ctx.units_total) * unclaimed / ctx.units_total
        seconds = min(ctx.chunk_seconds, max(MIN_CHUNK_SECONDS, remaining_work / self._cluster_rate_of(task.name) / 2))
        return task.units_for_work(ctx.params, ctx.data, chunk.first, chunk.count, rate * seconds)

    def _cluster_rate_of(self, task: str) -> float:
        """Speed of the live workers together for ``task`` (refreshed once a second).

        The larger of the sum of their measured speeds and (their number × this worker's speed), so
        that a stale or low estimate elsewhere never makes this worker take too large a share.
        """
        cached = self._cluster_rate.get(task)
        if cached and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        rates = [score for _, score in self.redis.zrange(keys.rates(task), 0, -1, withscores=True)]
        total = max(sum(rates), max(len(rates), 1) * self.rates.get(task, 0.0))
        self._cluster_rate[task] = (time.monotonic(), total)
        return total

    def _learn_rate(self, task: str, work: float, seconds: float) -> None:
        done, spent = self._rate_sums.get(task, (0.0, 0.0))
        if task in self.rates and not spent:  # a speed from an earlier run: one second's weight
            done, spent = self.rates[task], 1.0
        fade = 0.5 ** (seconds / RATE_HALF_LIFE)
        done, spent = done * fade + work, spent * fade + seconds
        self._rate_sums[task] = (done, spent)
        rate = done / spent
        self.rates[task] = rate
        pipe = self.redis.pipeline()
        pipe.hset(keys.worker(self.name), f"rate:{task}", rate)
        pipe.zadd(keys.rates(task), {self.name: rate})
        patiently(pipe.execute)

    def _requeue(self, chunk: ChunkDescriptor, reason: str) -> None:
        reply = patiently(
            lambda: self.scripts.requeue(
                keys=self._keys(chunk.job),
                args=[chunk.job, chunk.chunk, time.time(), reason, 1, self.name, PENDING_GRACE],
            )
        )
        if int(reply[0]) == 1:
            again = ChunkDescriptor(
                chunk.job, chunk.chunk, chunk.task, chunk.seed, int(reply[1]), int(reply[2]), int(reply[3])
            )
            patiently(lambda: enqueue_tickets(self.redis, [again], at_front=False))
        elif int(reply[0]) == 2:
            self.events.job_progress(self.redis, chunk.job, force=True)


class Heartbeat(threading.Thread):
    """Refreshes the worker's liveness key while the main thread runs kernels."""

    def __init__(self, runner: ChunkRunner, interval: float) -> None:
        super().__init__(name="hydra-heartbeat", daemon=True)
        self.runner = runner
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.runner.beat()
            except redis_lib.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)


class HydraWorker(SimpleWorker):
    """``rq worker hydra`` with Hydra's rules (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)
        global _runner
        self.hydra = _runner = ChunkRunner(self.connection, self.name, Settings.from_env())

    def work(self, burst: bool = False, **kwargs: Any) -> bool:
        self.hydra.register()
        heart = Heartbeat(self.hydra, self.hydra.settings.heartbeat_interval)
        heart.start()
        try:
            while True:
                try:
                    worked = super().work(burst=burst, **kwargs)
                except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
                    log.warning("worker %s: lost Redis (%s)", self.name, exc)
                    worked = True
                if burst or self._stop_requested or self._shutdown_requested_date:
                    return worked
                # rq's loop returns on any error it did not expect (a Redis restart, say): resume it.
                log.warning("worker %s: rq's loop stopped; resuming once Redis answers", self.name)
                patiently(self.connection.ping, patience=float("inf"))
                with contextlib.suppress(redis_lib.RedisError):
                    self.register_death()  # rq refuses to start a worker whose key says it is alive
        finally:
            heart.stopped.set()
            self.hydra.unregister()

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = self._refusal(job)
        if reason is None:
            super().execute_job(job, queue)
            if self.hydra.quarantined:
                self._stop_requested = True
            return
        record_error(self.connection, f"worker {self.name} refused rq job {job.id}: {reason}")
        try:
            self.connection.lrem(queue.intermediate_queue_key, 1, job.id)
            self.handle_job_failure(job, queue, exc_string=f"refused by Hydra: {reason}")
        except Exception as exc:  # a payload too broken for rq's own bookkeeping: drop it
            log.warning("could not mark refused job %s failed (%s); deleting it", job.id, exc)
            self.connection.delete(job.key)

    @staticmethod
    def _refusal(job: Job) -> str | None:
        """Why this rq job must not run, or None. Only Hydra's entry point with one JSON argument runs."""
        try:
            func_name, args, kwargs = job.func_name, job.args, job.kwargs
        except Exception as exc:
            return f"payload is not a JSON chunk descriptor ({type(exc).__name__})"
        if func_name != ENTRY_POINT:
            return f"function {func_name!r} is not {ENTRY_POINT}"
        if kwargs or not isinstance(args, (list, tuple)) or len(args) != 1:
            return "a chunk ticket takes exactly one chunk descriptor"
        return None
