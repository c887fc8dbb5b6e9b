"""The volunteer's side: ``rq worker hydra`` with Hydra's worker class runs the chunks it is given.

Volunteers run the stock command ``rq worker hydra`` with
``RQ_WORKER_CLASS=hydra.worker.HydraWorker``; rq's command line reads the URL, sets up logging and
builds this class, whose :meth:`HydraWorker.work` then speaks Hydra's protocol instead of rq's job
protocol. The worker is untrusted, and so is everything it sends; its credential reaches only its
own keys (see :mod:`hydra.keys`, :mod:`hydra.volunteers`):

1. It says hello into its outbox (``hydra:v:<user>:outbox``): its worker id, the tasks and versions
   installed here, device, zone. Its identity is its Redis ACL user (``ACL WHOAMI``), never a name
   it picks.
2. The trusted monitor answers in the worker's inbox with a welcome (heartbeat period), creates its
   heartbeat key, and keeps about two chunk descriptors queued there, sized to this worker's speed
   as the monitor measures it. The worker keeps the heartbeat alive with ``PEXPIRE``.
3. For each descriptor it checks the task and version are installed here, re-checks the
   parameters, refuses chunks over its memory cap, runs the numba kernel and pushes the result
   (sums, blob, the kernel's seconds and, where RAPL counters are readable, its joules) to its
   outbox. A kernel that raises is reported as an error.

A worker runs nothing but installed tasks: the queue never carries code, callbacks, webhooks or
pickles, and rq's own job machinery (registries, pub/sub commands) is not used, so no other
volunteer can send it anything. A ``stop`` message from the operator ends it with one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from typing import Any

import redis as redis_lib
from redis import Redis
from rq.worker import Worker

from hydra import keys
from hydra.carbon.accounting import measure_energy, rapl_files
from hydra.errors import HydraError, InvalidInput
from hydra.tasks import TASKS
from hydra.tasks.base import ChunkResult, Task

log = logging.getLogger(__name__)

WORKER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A descriptor larger than this is not one the monitor writes.
MAX_DESCRIPTOR = 64 * 1024
DEFAULT_MEMORY_CAP = 2 * 1024**3
# A chunk expected to run longer than this is refused (the monitor sizes chunks to seconds). Before
# a worker has measured itself it assumes a fast machine, so only absurd chunks are refused.
DEFAULT_TIME_CAP = 3600.0
ASSUMED_FAST_RATE = 1e10
REDIS_PATIENCE = 300.0
# The longest an idle worker's BLPOP waits: under redis-py's default read timeout (5 s since 8.0).
IDLE_WAIT_MAX = 4.0


def pick_device(wanted: str) -> str:
    """ "cuda" when asked for or (with "auto") when a CUDA GPU is there, else "cpu"."""
    if wanted == "cpu":
        return "cpu"
    from hydra.devices import cuda_available

    if cuda_available():
        return "cuda"
    if wanted == "cuda":
        raise HydraError("HYDRA_DEVICE=cuda, but numba finds no CUDA GPU here")
    return "cpu"


def patiently(call, patience: float = REDIS_PATIENCE):
    """Run ``call()``, retrying through a Redis restart for up to ``patience`` seconds."""
    delay, give_up = 0.1, time.monotonic() + patience
    while True:
        try:
            return call()
        except redis_lib.AuthenticationError:
            raise
        except (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.BusyLoadingError):
            if time.monotonic() > give_up:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Revoked(HydraError):
    """The operator stopped this worker (revoked, quarantined or cut off)."""


class Volunteer:
    """One worker process: its keys, its hello, its loop. Independent of rq for easy testing."""

    def __init__(self, redis: Redis, wid: str | None = None, *, device: str = "auto") -> None:
        self.redis = redis
        self.user = redis.execute_command("ACL", "WHOAMI")
        self.user = self.user.decode() if isinstance(self.user, bytes) else str(self.user)
        self.wid = wid or secrets.token_hex(4)
        if not WORKER_ID.fullmatch(self.wid):
            raise InvalidInput(f"worker id must be 1-64 letters, digits, - or _: {self.wid!r}")
        self.inbox = keys.inbox(self.user, self.wid)
        self.outbox = keys.outbox(self.user)
        self.alive = keys.alive(self.user, self.wid)
        self.device = pick_device(device)
        self.memory_cap = int(os.environ.get("HYDRA_MAX_CHUNK_MEMORY", DEFAULT_MEMORY_CAP))
        self.time_cap = float(os.environ.get("HYDRA_MAX_CHUNK_SECONDS", DEFAULT_TIME_CAP))
        self.rates: dict[str, float] = {}  # this worker's own speed per task (work/s), for the time cap
        self.heartbeat = 1.0
        self.stopping = threading.Event()
        self.welcomed = threading.Event()
        self._warm: set[str] = set()
        self.chunks_done = 0
        self.busy = False
        self.rapl = rapl_files()  # readable RAPL package counters (HYDRA_RAPL_GLOB overrides where)
        self._result: bytes | None = None  # a result not pushed yet: it goes with the next BLPOP
        self._refreshed = -math.inf  # when the heartbeat was last refreshed (monotonic seconds)

    # -- the outbox ---------------------------------------------------------------------------------
    def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        self.flush()
        payload = json.dumps(message, separators=(",", ":")).encode() + b"\n" + blob
        patiently(lambda: self.redis.rpush(self.outbox, payload))

    def send_result(self, message: dict[str, Any], blob: bytes) -> None:
        """Keep a result to push in the same round trip as the next read of the inbox (one round
        trip per chunk rather than two); anything sent meanwhile pushes it first, in order."""
        self.flush()
        self._result = json.dumps(message, separators=(",", ":")).encode() + b"\n" + blob

    def flush(self) -> None:
        """Push the kept result now (retrying through a Redis restart)."""
        if self._result is not None:
            payload = self._result
            patiently(lambda: self.redis.rpush(self.outbox, payload))
            self._result = None

    def next_message(self, timeout: float) -> Any:
        """The next inbox message (BLPOP's reply: None when none came in ``timeout`` seconds), pushing
        the kept result, if any, in the same round trip, and refreshing the heartbeat there once half
        a period has passed since it was: an idle worker's heartbeat then costs no round trip of its
        own, and a busy one's about half as many (the heartbeat thread beats only after one and a
        half periods with no refresh)."""
        sent = time.monotonic()
        refresh = self.welcomed.is_set() and sent - self._refreshed >= self.heartbeat / 2
        if self._result is None and not refresh:
            return self.redis.blpop([self.inbox], timeout=timeout)
        pipe = self.redis.pipeline(transaction=False)
        if self._result is not None:
            pipe.rpush(self.outbox, self._result)
        if refresh:
            pipe.pexpire(self.alive, int(self.heartbeat * 3000))
        pipe.blpop([self.inbox], timeout=timeout)
        # Counted as refreshed from now (the heartbeat thread must not beat while BLPOP waits),
        # and not at all if the round trip fails.
        previous, self._refreshed = self._refreshed, (sent if refresh else self._refreshed)
        try:
            replies = pipe.execute()
        except redis_lib.RedisError:
            self._refreshed = previous
            raise
        self._result = None
        if refresh and not replies[-2]:
            self._lapsed()
        return replies[-1]

    def hello(self) -> None:
        self.welcomed.clear()
        self.send(
            {
                "t": "hello",
                "w": self.wid,
                "tasks": {name: task.version for name, task in self.tasks().items()},
                "device": self.device,
                "zone": os.environ.get("HYDRA_ZONE", ""),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "cores": os.cpu_count() or 1,
            }
        )

    def tasks(self) -> dict[str, Task]:
        return dict(TASKS)

    # -- the heartbeat ------------------------------------------------------------------------------
    def beat(self) -> None:
        """Refresh the heartbeat; if the monitor let it lapse (or never made it), say hello again."""
        if not self.welcomed.is_set():
            return
        sent = time.monotonic()
        if not self.redis.pexpire(self.alive, int(self.heartbeat * 3000)):
            self._lapsed()
        else:
            self._refreshed = max(self._refreshed, sent)

    def _lapsed(self) -> None:
        log.warning("worker %s/%s: heartbeat lapsed; saying hello again", self.user, self.wid)
        self.hello()

    def _beat_forever(self) -> None:
        """Beat whenever one and a half periods have passed with no refresh (here, or on the way of
        the inbox's round trips, which refresh it every period while idle): the key lives three
        periods, so it never lapses while the worker lives, busy in a kernel or not."""
        wait = self.heartbeat
        while not self.stopping.wait(wait):
            wait = self._refreshed + 1.5 * self.heartbeat - time.monotonic()
            if wait > 0.001 and self.welcomed.is_set():
                continue
            try:
                self.beat()
            except redis_lib.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            wait = self.heartbeat

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, *, burst: bool = False, idle_timeout: float = 1.0) -> None:
        """Say hello, then run what arrives until stopped (``burst``: until the inbox stays empty)."""
        self.hello()
        beater = threading.Thread(target=self._beat_forever, name="hydra-heartbeat", daemon=True)
        beater.start()
        idle_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                # Idle, it waits a heartbeat period (whose refresh goes with the wait), so that
                # past 20,000 workers, where the monitor hands out longer periods, idle workers
                # poll less often too; a signal stops a waiting worker at once.
                wait = idle_timeout if burst else min(max(idle_timeout, self.heartbeat), IDLE_WAIT_MAX)
                try:
                    item = self.next_message(wait)
                except redis_lib.AuthenticationError:
                    raise
                except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
                    log.warning("worker %s/%s: lost Redis (%s); waiting", self.user, self.wid, exc)
                    patiently(self.redis.ping, patience=float("inf"))
                    self.hello()  # pushes the kept result first, if it may not have reached Redis
                    continue
                if item is None:
                    if burst and self.welcomed.is_set() and time.monotonic() - idle_since > idle_timeout:
                        return
                    continue
                self.busy = True
                try:
                    self.handle(item[1])
                finally:
                    self.busy = False
                idle_since = time.monotonic()
        finally:
            self.stopping.set()
            with contextlib.suppress(redis_lib.RedisError):
                self.send({"t": "bye", "w": self.wid})  # after the kept result, if any

    def handle(self, raw: bytes) -> None:
        """One inbox message. Never raises for a bad one: it is reported and skipped."""
        try:
            if len(raw) > MAX_DESCRIPTOR:
                raise InvalidInput("message too large")
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise InvalidInput("message is not a JSON object")
        except (ValueError, InvalidInput) as exc:
            log.warning("worker %s/%s: skipped a malformed message (%s)", self.user, self.wid, exc)
            return
        kind = message.get("t")
        if kind == "welcome":
            self.heartbeat = min(max(float(message.get("heartbeat", 1.0)), 0.2), 60.0)
            self._refreshed = time.monotonic()  # the monitor has just made the key, three periods long
            self.welcomed.set()
        elif kind == "stop":
            raise Revoked(f"stopped by the operator: {str(message.get('reason', ''))[:200]}")
        elif kind == "chunk":
            self.run_chunk(message)
        else:
            log.warning("worker %s/%s: skipped a message of unknown kind %r", self.user, self.wid, kind)

    def run_chunk(self, message: dict[str, Any]) -> None:
        try:
            task, params, seed, first, count = self.check(message)
        except (InvalidInput, KeyError, TypeError, ValueError) as exc:
            self._report_error(message, f"refused: {exc}")
            return
        if task.name not in self._warm:
            task.warm_up()
            self._warm.add(task.name)
        try:
            # Wall seconds and, where RAPL counters are readable, the package's joules over the kernel.
            with measure_energy(self.rapl) as meter:
                result = self.compute(task, params, seed, first, count)
        except Exception as exc:
            self._report_error(message, f"{type(exc).__name__}: {exc}")
            return
        seconds = meter.seconds
        with contextlib.suppress(Exception):
            self.rates[task.name] = max(task.work(params, b"", first, count) / max(seconds, 1e-6), 1.0)
        header = {
            "t": "result",
            "w": self.wid,
            "job": message["job"],
            "chunk": message["chunk"],
            "a": message["a"],
            "sums": result.sums,
            "seconds": round(seconds, 6),
            **meter.result_fields(),  # joules, energy_source: untrusted, billed within bounds (hydra.carbon)
        }
        self.send_result(header, result.blob)
        self.chunks_done += 1

    def compute(self, task: Task, params: dict[str, Any], seed: int, first: int, count: int) -> ChunkResult:
        """Run the kernel (the test-only worker classes in :mod:`hydra.faults` override this)."""
        return task.run(params, b"", seed, first, count, self.device)

    def check(self, message: dict[str, Any]) -> tuple[Task, dict[str, Any], int, int, int]:
        """The task, parameters, seed and unit range of a descriptor, all checked here again."""
        for name in ("job", "chunk", "a", "first", "count", "seed"):
            if name not in message:
                raise InvalidInput(f"descriptor has no {name}")
        if not isinstance(message["job"], str) or not re.fullmatch(r"[0-9a-f]{12}", message["job"]):
            raise InvalidInput("bad job id")
        for name in ("chunk", "a", "first", "count", "seed"):
            if type(message[name]) is not int or message[name] < 0:
                raise InvalidInput(f"descriptor field {name} must be a non-negative integer")
        task = TASKS.get(message.get("task"))  # type: ignore[arg-type]
        if task is None:
            raise InvalidInput(f"task {message.get('task')!r} is not installed here")
        if message.get("version") != task.version:
            raise InvalidInput(f"task {task.name} version {message.get('version')!r} is not installed here")
        params = message.get("params")
        if not isinstance(params, dict) or task.parse(params) != params:
            raise InvalidInput("parameters do not pass the task's own checks")
        first, count = message["first"], message["count"]
        units_total = task.units_total(params)
        if count < 1 or first + count > units_total:
            raise InvalidInput("unit range outside the job")
        if task.chunk_memory(params, count) > self.memory_cap:
            raise InvalidInput(f"chunk needs more memory than this worker's cap ({self.memory_cap} bytes)")
        try:  # tasks whose cost needs the job's sizing data cannot say here; their chunks are sized anyway
            work = task.work(params, b"", first, count)
        except Exception:
            work = 0.0
        rate = self.rates.get(task.name, ASSUMED_FAST_RATE)
        if work / rate > self.time_cap:
            raise InvalidInput(
                f"chunk would run about {work / rate:.0f} s, over this worker's cap ({self.time_cap:.0f} s)"
            )
        return task, params, message["seed"], first, count

    def _report_error(self, message: dict[str, Any], reason: str) -> None:
        log.warning(
            "worker %s/%s: job %s chunk %s: %s", self.user, self.wid, message.get("job"), message.get("chunk"), reason
        )
        with contextlib.suppress(redis_lib.RedisError):
            self.send(
                {
                    "t": "error",
                    "w": self.wid,
                    "job": message.get("job"),
                    "chunk": message.get("chunk"),
                    "a": message.get("a"),
                    "reason": reason[:500],
                }
            )


class HydraWorker(Worker):
    """``rq worker hydra`` with Hydra's protocol (see the module docstring).

    rq builds it from ``RQ_WORKER_CLASS``; only :meth:`work` matters: rq's job registries and
    pub/sub are never touched (a volunteer's credential cannot reach them).
    """

    volunteer_class = Volunteer

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list:  # rq's `cleanup_ghosts` lists workers: none here
        return []

    def work(self, burst: bool = False, logging_level: str = "INFO", **kwargs: Any) -> bool:
        logging.basicConfig(
            level=getattr(logging, str(logging_level).upper(), logging.INFO), format="%(asctime)s %(message)s"
        )
        try:
            volunteer = self.volunteer_class(
                self.connection, _worker_id(self.name), device=os.environ.get("HYDRA_DEVICE", "auto")
            )
        except redis_lib.AuthenticationError as exc:
            raise SystemExit(f"hydra worker: Redis refused the credentials ({exc})") from None
        except (HydraError, redis_lib.RedisError) as exc:
            raise SystemExit(f"hydra worker: {exc}") from None
        stop_count = 0

        def on_signal(signum: int, frame: Any) -> None:
            nonlocal stop_count
            stop_count += 1
            volunteer.stopping.set()
            if stop_count > 1 or not volunteer.busy:  # idle (waiting on its inbox): stop at once
                raise SystemExit(0 if stop_count == 1 else 1)
            log.info("worker %s/%s: stopping after the current chunk", volunteer.user, volunteer.wid)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info(
            "worker %s/%s (%s) joined; tasks: %s", volunteer.user, volunteer.wid, volunteer.device, ", ".join(TASKS)
        )
        try:
            volunteer.run(burst=burst)
        except SystemExit as exc:
            if exc.code == 0 and stop_count:  # stopped while idle, its bye sent: skip the interpreter's
                logging.shutdown()  # teardown (numba's alone takes about 0.15 s), which has nothing
                sys.stdout.flush()  # left to save
                sys.stderr.flush()
                os._exit(0)
            raise
        except Revoked as exc:
            print(f"hydra worker {volunteer.user}/{volunteer.wid}: {exc}", flush=True)
            raise SystemExit(3) from None
        except redis_lib.AuthenticationError:
            print(
                f"hydra worker {volunteer.user}/{volunteer.wid}: the operator revoked this volunteer's credential",
                flush=True,
            )
            raise SystemExit(3) from None
        except redis_lib.ResponseError as exc:
            if "NOPERM" in str(exc) or "disabled" in str(exc).lower():
                print(
                    f"hydra worker {volunteer.user}/{volunteer.wid}: access revoked by the operator ({exc})", flush=True
                )
                raise SystemExit(3) from None
            raise
        return volunteer.chunks_done > 0


def _worker_id(rq_name: str) -> str:
    """A worker id from rq's worker name (``--name``), or a random one."""
    wid = re.sub(r"[^A-Za-z0-9_-]", "-", rq_name or "")[:32].strip("-")
    return wid or secrets.token_hex(4)
