"""How many volunteers one Redis and one monitor serve: N simulated volunteers, many per process.

    python -m bench.swarm [--quick] [--n 100,1000,10000] [--chunk-seconds 2] [--seconds 20]
                          [--procs 1] [--monitors 1] [--profile] [--json PATH]

Each simulated volunteer speaks Hydra's real protocol against a real ``redis-server`` and the real
trusted process (``hydra monitor``, started through :mod:`bench.swarm_monitor` so that it knows the
null task of :mod:`bench.nulltask` and times its passes): it says hello into its outbox as its own
ACL user, takes chunk descriptors from its inbox, keeps its heartbeat alive with ``PEXPIRE`` and
answers each chunk with the exact sum after ``count`` milliseconds (one unit = 1 ms of simulated
work), so the trusted side measures its speed and sizes its chunks to the chunk time as it would
for a real kernel. Volunteers share ACL users in groups (a volunteer with several machines): one
connection per group waits on the group's inboxes with one multi-key ``BLPOP`` and one sends the
group's messages and heartbeats; everything runs on one asyncio loop, or on ``--procs`` loops in
as many processes (one process saturates a core near N = 10,000).

For each N it reports chunks completed per second (steady part of the job), dispatch latency p50
and p99 (from sending a result to holding the chunk that replaces it), the monitor's longest
periodic pass, Redis's CPU share and memory per volunteer, the monitor's (with its listener and
signer processes) and the simulator's CPU share (the machine is shared: the load is printed too),
and where the monitor's main loop spends its wall time (``mon idle``: waiting for a message; ``mon
waits``: waiting for Redis's replies; the rest is its own CPU and the GIL: a loop that is never
idle is the limit whatever its CPU share), and how
many of the assignments it planned in batches were refused (by another monitor's, for instance) and
then made one by one. Then it measures what one chunk of real ``rq worker hydra`` processes costs
Redis (commands and CPU microseconds, from ``INFO``) and what a live worker costs per second
(heartbeats, idle ``BLPOP``), and prints a capacity model: how many volunteers one Redis core serves
at 2 s and at 30 s chunks. The model's chunk cost comes from 8 real workers, whose results the
monitor handles in batches as it does at scale; 2 workers, whose results come one at a time and
cost Redis a third more, are measured beside them as the worst case (``--quick``: 2 only).
``--profile`` writes a cProfile dump of the monitor at the largest N to
``bench/out/swarm-monitor.prof`` and prints its hot spots.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import faulthandler
import json
import math
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import OUT, table, write_json
from bench.nulltask import register
from bench.swarm_sim import UNITS_PER_SECOND, Group
from hydra import keys, ledger
from hydra.connection import connect
from hydra.local import LocalCluster, RedisServer, spawn, stop_process, stop_processes
from hydra.queue import SubmitOptions, cancel, read_job, submit
from hydra.volunteers import add_volunteer

USERS = 200  # ACL users (volunteers); their workers share one user beyond this many
REAL_WORKERS = 8  # real rq workers whose cost per chunk the capacity model uses


# -- measuring Redis and processes ------------------------------------------------------------------


def redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children: the monitor's include its notification
    listener and its ledger signer (hydra.signer), which work for it."""
    children = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    return process_cpu(pid) + sum(process_cpu(c) for c in children)


def say(message: str) -> None:
    """Progress on stderr (the figures go to stdout)."""
    print(f"[swarm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> float:
    return os.getloadavg()[0]


@dataclass
class Snapshot:
    at: float
    redis_cpu: float
    used_memory: int
    clients_memory: int
    clients: int
    monitor_cpu: float
    own_cpu: float
    usec_by_command: dict[str, int]  # Redis CPU spent in each command so far (commands run by scripts too)


def plan_groups(url_of_user: dict[str, str], n: int) -> list[tuple[str, str, list[str]]]:
    """N volunteers spread over the ACL users: ``(user, url, worker ids)`` per group."""
    users = list(url_of_user)
    per_user = math.ceil(n / len(users))
    groups = []
    for i, user in enumerate(users):
        wids = [f"s{j}" for j in range(i * per_user, min(n, (i + 1) * per_user))]
        if wids:
            groups.append((user, url_of_user[user], wids))
    return groups


class Swarm:
    def __init__(self) -> None:
        self.groups: list[Group] = []
        self.results: list[float] = []
        self.worked: list[tuple[float, float]] = []  # (when a chunk's work ended, its seconds of work)
        self.latencies: list[tuple[float, float]] = []
        self.firsts: list[tuple[float, float]] = []  # (a volunteer's first hello, its first chunk)
        self.lapsed = 0
        self.disconnected = 0
        self.stopped = 0
        self.tasks: list[asyncio.Task] = []
        self.max_lag = 0.0
        self.helpers: list[subprocess.Popen] = []  # simulator processes beside this one (--procs)
        self.monitors: list[subprocess.Popen] = []  # monitors beside the first (--monitors)
        self.helper_groups = 0

    async def lag_watch(self) -> None:
        """How late the event loop wakes: if the simulator itself is starved, the figures say so."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.05)
            self.max_lag = max(self.max_lag, time.monotonic() - started - 0.05)

    async def start(self, groups: list[tuple[str, str, list[str]]]) -> None:
        self.groups = [Group(self, url, user, wids) for user, url, wids in groups]
        await asyncio.gather(*(group.open() for group in self.groups))
        self.tasks.append(asyncio.create_task(self.lag_watch()))
        for group in self.groups:
            group.start()

    def start_helpers(self, parts: list[list[tuple[str, str, list[str]]]], directory: Path) -> None:
        """Run each part of the volunteers in a simulator process of its own (one Python process
        saturates a core near 10,000 volunteers: past that it, not Hydra, would be measured)."""
        for i, part in enumerate(parts):
            spec = directory / f"helper{i}.json"
            spec.write_text(json.dumps({"groups": part, "out": str(directory / f"helper{i}.out.json")}))
            args = [sys.executable, "-m", "bench.swarm", "--helper", str(spec)]
            self.helpers.append(spawn(args, log_path=directory / f"helper{i}.log"))
            self.helper_groups += len(part)

    def cpu_seconds(self) -> float:
        """CPU time of the simulator: this process and its helpers."""
        return time.process_time() + sum(process_cpu(h.pid) for h in self.helpers)

    def figures(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "worked": self.worked,
            "latencies": self.latencies,
            "firsts": self.firsts,
            "lapsed": self.lapsed,
            "disconnected": self.disconnected,
            "stopped": self.stopped,
            "max_lag": self.max_lag,
        }

    async def gather_helpers(self, directory: Path, timeout: float = 60.0) -> None:
        """Ask each helper for its figures (SIGUSR2; its volunteers go on until :meth:`stop`)."""
        for helper in self.helpers:
            helper.send_signal(signal.SIGUSR2)
        for i, helper in enumerate(self.helpers):
            out = directory / f"helper{i}.out.json"
            give_up = time.monotonic() + timeout
            while not out.exists():
                if time.monotonic() > give_up or helper.poll() is not None:
                    raise RuntimeError(f"simulator helper {i} gave no figures; see {directory / f'helper{i}.log'}")
                await asyncio.sleep(0.1)
            got = json.loads(out.read_text())
            self.results += got["results"]
            self.worked += [(at, seconds) for at, seconds in got["worked"]]
            self.latencies += [tuple(x) for x in got["latencies"]]
            self.firsts += [(hello, first) for hello, first in got["firsts"]]
            self.lapsed += got["lapsed"]
            self.disconnected += got["disconnected"]
            self.stopped += got["stopped"]
            self.max_lag = max(self.max_lag, got["max_lag"])

    async def stop(self) -> None:
        if self.helpers:
            stop_processes(self.helpers)
        for task in self.tasks:
            task.cancel()
        await asyncio.wait(self.tasks, timeout=10)
        for group in self.groups:
            group.close()


# -- one run at N volunteers -------------------------------------------------------------------------


def _quantile_text(q: dict[str, float]) -> str:
    return "/".join(str(q.get(k, "-")) for k in ("p10", "p50", "p90", "p99")) + " (p10/50/90/99)"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_monitor(url: str, directory: Path, profile: Path | None = None, name: str = "monitor") -> subprocess.Popen:
    args = [sys.executable, "-m", "bench.swarm_monitor", "--stats", str(directory / f"{name}.json")]
    if profile:
        args += ["--profile", str(profile)]
    return spawn(args, env={"HYDRA_REDIS_URL": url}, log_path=directory / f"{name}.log")


def stop_monitor(proc: subprocess.Popen, directory: Path, name: str = "monitor") -> dict[str, Any]:
    stop_process(proc, timeout=60)
    stats = directory / f"{name}.json"
    return json.loads(stats.read_text()) if stats.exists() else {}


async def helper_main(spec_path: Path) -> None:
    """A simulator process beside the main one: runs its volunteers; on SIGUSR2 writes its figures."""
    spec = json.loads(spec_path.read_text())
    swarm = Swarm()
    await swarm.start([(user, url, wids) for user, url, wids in spec["groups"]])
    asked = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, asked.set)
    await asked.wait()
    out = Path(spec["out"])
    out.with_suffix(".tmp").write_text(json.dumps(swarm.figures()))
    out.with_suffix(".tmp").replace(out)
    await asyncio.Event().wait()  # the volunteers go on until the main process stops this one


async def run_one(
    n: int,
    chunk_seconds: float,
    seconds: float,
    users: int = USERS,
    profile: Path | None = None,
    procs: int = 1,
    monitors: int = 1,
) -> dict[str, Any]:
    """Start Redis, the monitor and N simulated volunteers; run one null job; measure."""
    with tempfile.TemporaryDirectory(prefix="hydra-swarm-") as tmp:
        directory = Path(tmp)
        server = RedisServer(directory, extra=["--maxclients", "60000"]).start()
        operator = connect(server.url)
        monitor = None
        swarm = Swarm()
        try:
            before_users = int(operator.info("memory")["used_memory"])
            n_users = min(n, users)
            urls = {}
            for i in range(n_users):
                url = add_volunteer(operator, f"swarm{i}", server.url)
                urls[f"volunteer-swarm{i}"] = url
            say(f"N={n}: {n_users} ACL users created; starting the monitor and the volunteers")
            monitor = start_monitor(server.url, directory, profile)
            # More monitors share the outboxes through Redis (TAKE gives each message to one of them).
            swarm.monitors = [start_monitor(server.url, directory, name=f"monitor{i}") for i in range(1, monitors)]
            started = time.monotonic()
            groups = plan_groups(urls, n)
            parts = [groups[i::procs] for i in range(max(1, min(procs, len(groups))))]
            swarm.start_helpers(parts[1:], directory)
            await swarm.start(parts[0])
            while operator.zcard(keys.LIVE) < n:
                if time.monotonic() - started > 60 + n / 50:
                    waiting = [operator.llen(keys.outbox(user)) for user in urls]
                    raise RuntimeError(
                        f"only {operator.zcard(keys.LIVE)} of {n} volunteers joined; {sum(waiting)} messages wait "
                        f"unread in {sum(1 for w in waiting if w)} outboxes"
                    )
                if monitor.poll() is not None:
                    raise RuntimeError(f"the monitor exited; see {directory / 'monitor.log'}")
                await asyncio.sleep(0.2)
            joined_s = time.monotonic() - started
            say(f"N={n}: all joined in {joined_s:.1f} s")
            await asyncio.sleep(1.5)  # every volunteer welcomed and beating
            row = await _measure(n, chunk_seconds, seconds, operator, monitor, swarm, before_users, joined_s, directory)
        finally:
            # The monitor first: volunteers that stop while it listens would all "die" in its figures.
            stats = stop_monitor(monitor, directory) if monitor else {}
            others = [stop_monitor(m, directory, f"monitor{i}") for i, m in enumerate(swarm.monitors, 1)]
            await swarm.stop()
            operator.close()
            server.stop()
    row["monitor"] = stats
    row["monitor_loop"] = loop_shares(stats, *row.pop("window_monotonic"))
    # Counts per second in the window, per chunk completed (round trips, assignments by way).
    counts = {k[2:]: v for k, v in row["monitor_loop"].items() if k.startswith("n:")}
    row["monitor_loop"] = {k: v for k, v in row["monitor_loop"].items() if not k.startswith("n:")}
    row["monitor_per_chunk"] = {k: round(v / row["chunks_per_s"], 3) for k, v in counts.items() if row["chunks_per_s"]}
    if others:
        row["other_monitors"] = others
        row["monitor"]["longest_pass_s"] = max((m.get("longest_pass_s") or 0.0 for m in [stats, *others]), default=None)
        row["monitor"]["passes_over_10ms"] = sum(m.get("passes_over_10ms") or 0 for m in [stats, *others])
    return row


async def _measure(
    n: int,
    chunk_seconds: float,
    seconds: float,
    operator: Any,
    monitor: subprocess.Popen,
    swarm: Swarm,
    before_users: int,
    joined_s: float,
    directory: Path,
) -> dict[str, Any]:
    snapshots: list[Snapshot] = []

    def snap() -> None:
        info = operator.info()
        snapshots.append(
            Snapshot(
                time.monotonic(),
                redis_cpu(info),
                int(info["used_memory"]),
                int(info["mem_clients_normal"]),
                int(info["connected_clients"]),
                tree_cpu(monitor.pid) + sum(tree_cpu(m.pid) for m in swarm.monitors),
                swarm.cpu_seconds(),
                {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in operator.info("commandstats").items()},
            )
        )

    snap()
    await asyncio.sleep(2.0)  # idle: heartbeats and waiting receivers only
    snap()
    idle = snapshots[-1].redis_cpu - snapshots[0].redis_cpu, snapshots[-1].at - snapshots[0].at
    units = int(n * UNITS_PER_SECOND * seconds)
    submitting = time.monotonic()  # (submit itself gives idle workers their first chunks)
    job_id = submit(operator, "null", {"units": units}, SubmitOptions(chunk_seconds=chunk_seconds))
    submitted = time.monotonic()
    give_up = submitted + 3 * seconds + 20
    state = "queued"
    # (seconds since submit, pending, wanted, running) chunks of the job, and workers waiting for work
    depths = []
    while True:
        await asyncio.sleep(0.25)
        snap()
        state = operator.hget(keys.job(job_id), "state").decode()
        pipe = operator.pipeline(transaction=False)
        for key in (keys.pending(job_id), keys.wanted(job_id), keys.running(job_id), keys.IDLE):
            pipe.zcard(key)
        depths.append((round(time.monotonic() - submitted, 2), *pipe.execute()))
        if state not in ("queued", "running") or time.monotonic() > give_up:
            break
    finished = time.monotonic()
    # Credit entries the monitor had not signed yet when the job ended (it signs them a slice at a time).
    unsigned = operator.llen(ledger.LEDGER) - int(operator.hget(ledger.STATE, "size") or 0)
    say(f"N={n}: job {state} after {finished - submitted:.1f} s")
    if state in ("queued", "running"):
        cancel(operator, job_id)
    await swarm.gather_helpers(directory)
    record = read_job(operator, job_id)
    # The steady part: every volunteer past its probe, the job not yet in its shrinking tail.
    warm = min(2 * chunk_seconds, seconds / 4)
    tail = 2.5 * chunk_seconds if state == "done" else 0.0
    low, high = submitted + warm, finished - tail
    if high - low < chunk_seconds:
        low, high = submitted, finished
    inside = [s for s in snapshots if low <= s.at <= high] or snapshots
    first, last = inside[0], inside[-1]
    span = max(last.at - first.at, 1e-9)
    done_chunks = sum(low <= t <= high for t in swarm.results)
    between = sum(first.at <= t <= last.at for t in swarm.results)
    latencies = [lat for asked, lat in swarm.latencies if low <= asked <= high]
    # The volunteers' own view: how long their chunks ran, and what share of their time they computed
    # (a monitor that cannot keep up leaves them idle, and measures them slower: smaller chunks).
    worked = [seconds for at, seconds in swarm.worked if low <= at <= high]
    units_done = int(record.get("units_done", 0))
    sum_n = int(record.get("sum:n", 0))
    return {
        "n": n,
        "users": len(swarm.groups) + swarm.helper_groups,
        "simulator_processes": 1 + len(swarm.helpers),
        "chunk_seconds": chunk_seconds,
        "joined_s": round(joined_s, 3),
        "job": job_id,
        "state": state,
        "job_seconds": round(finished - submitted, 3),
        "units_total": units,
        "units_done": units_done,
        "sum_n": sum_n,
        "exact": state == "done" and units_done == units == sum_n,
        "consistent": units_done == sum_n,
        "chunks": int(record.get("next_chunk", 0)),
        "requeued": int(record.get("requeued", 0)),
        "stolen": int(record.get("stolen", 0)),
        "units_pending": sum(json.loads(c).get("count", 0) for c in operator.hvals(keys.chunks(job_id)) or []),
        "results_sent": len(swarm.results),
        "window_s": round(high - low, 3),
        "window_monotonic": (low, high),
        "chunks_per_s": done_chunks / max(high - low, 1e-9),
        "ideal_chunks_per_s": n / chunk_seconds,
        "dispatch_p50_ms": _ms(percentile(latencies, 0.50)),
        "dispatch_p99_ms": _ms(percentile(latencies, 0.99)),
        "dispatch_max_ms": _ms(percentile(latencies, 1.0)),
        # When the long waits were asked for: (seconds from the submit, p99 ms, asks) per tenth of the job.
        "dispatch_p99_ms_by_time": _by_time(swarm.latencies, submitted, finished),
        "latency_samples": len(latencies),
        # A volunteer's first chunk, from when it asked (its hello, or the submit if it said hello
        # before): the ramp, which the steady window's dispatch figures leave out.
        **_first_chunk_waits([first - max(hello, submitting) for hello, first in swarm.firsts if first >= submitting]),
        "chunk_work_s_p50": round(percentile(worked, 0.5), 3) if worked else None,
        "volunteers_busy_share": round(sum(worked) / (n * max(high - low, 1e-9)), 3),
        "redis_cpu_share": (last.redis_cpu - first.redis_cpu) / span,
        "monitor_cpu_share": (last.monitor_cpu - first.monitor_cpu) / span,
        "simulator_cpu_share": (last.own_cpu - first.own_cpu) / span,
        # Results between the two snapshots, the helpers' included (known only once they answered).
        "redis_cpu_us_per_chunk": _per(last.redis_cpu - first.redis_cpu, between, 1e6),
        # Redis's own account of where that CPU went, by command (EVALSHA includes the commands its
        # scripts run, which are also counted under their own names).
        "redis_us_per_chunk_by_command": dict(
            sorted(
                (
                    (k, round(v / max(between, 1), 2))
                    for k, v in _delta(last.usec_by_command, first.usec_by_command).items()
                ),
                key=lambda kv: -kv[1],
            )[:14]
        ),
        "monitor_cpu_us_per_chunk": _per(last.monitor_cpu - first.monitor_cpu, between, 1e6),
        "memory_per_volunteer_bytes": (max(s.used_memory for s in snapshots) - before_users) / n,
        # Of which connection buffers (the simulator's connections are shared by a group).
        "clients_memory_per_volunteer_bytes": max(s.clients_memory for s in snapshots) / n,
        "connections": max(s.clients for s in snapshots),
        "idle_redis_us_per_volunteer_second": idle[0] / idle[1] / n * 1e6,
        "heartbeats_lapsed": swarm.lapsed,
        "volunteers_cut_off": int(operator.hlen(keys.CUTOFF)),
        "volunteers_stopped": swarm.stopped,
        "groups_disconnected": swarm.disconnected,
        "errors_recorded": int(operator.llen(keys.ERRORS)),
        "ledger_unsigned_at_end": unsigned,
        "last_errors": [e.decode(errors="replace")[:200] for e in operator.lrange(keys.ERRORS, 0, 2)],
        "simulator_max_lag_ms": round(swarm.max_lag * 1000, 1),
        "window_from_submit_s": (round(low - submitted, 2), round(high - submitted, 2)),
        "pending_wanted_running_idle": depths,
        "load_1min": round(load(), 2),
    }


def _first_chunk_waits(waits: list[float]) -> dict[str, Any]:
    if not waits:
        return {"first_chunk_wait_p50_s": None, "first_chunk_wait_p99_s": None, "first_chunk_wait_max_s": None}
    return {
        "first_chunk_wait_p50_s": round(percentile(waits, 0.5) or 0.0, 3),
        "first_chunk_wait_p99_s": round(percentile(waits, 0.99) or 0.0, 3),
        "first_chunk_wait_max_s": round(max(waits), 3),
    }


def _all_served(row: dict[str, Any]) -> str:
    """When no volunteer waited for work any more (hydra:idle empty), as the run sampled it."""
    for at, _pending, _wanted, running, idle in row.get("pending_wanted_running_idle", []):
        if running and not idle:
            return f"{at} s"
    return "never"


def loop_shares(stats: dict[str, Any], low: float, high: float) -> dict[str, float]:
    """Share of the first monitor's wall time, in the steady window, spent in each part of its main
    loop (whole seconds of the shared monotonic clock inside the window; see bench.swarm_monitor)."""
    seconds = list(range(math.ceil(low), math.floor(high)))
    if not seconds:
        return {}
    parts = stats.get("loop_s") or {}
    return {name: round(sum(by.get(str(k), 0.0) for k in seconds) / len(seconds), 3) for name, by in parts.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _per(amount: float, count: int, scale: float = 1.0) -> float | None:
    return amount * scale / count if count else None


# -- what one real `rq worker hydra` chunk costs Redis -----------------------------------------------


def _by_time(latencies: list[tuple[float, float]], start: float, end: float, parts: int = 10) -> list[list[float]]:
    """Dispatch p99 by when it was asked for: [seconds from ``start``, p99 ms, asks] per part."""
    width = max(end - start, 1e-9) / parts
    buckets: list[list[float]] = [[] for _ in range(parts)]
    for asked, latency in latencies:
        if start <= asked <= end:
            buckets[min(int((asked - start) / width), parts - 1)].append(latency)
    return [[round(i * width, 1), _ms(percentile(b, 0.99)), len(b)] for i, b in enumerate(buckets) if b]


def _commandstats(client: Any) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def _reads_writes(client: Any) -> tuple[int, int]:
    """How many times Redis has read from and written to clients' sockets (system calls)."""
    stats = client.info("stats")
    return int(stats.get("total_reads_processed", 0)), int(stats.get("total_writes_processed", 0))


def ping_floor(client: Any, pings: int = 5000) -> float:
    """Redis CPU microseconds one round trip costs on this machine (a PING: a read, a write, the
    event loop's wake-up), the floor under every command sent alone. Where system calls are dear
    (a virtual machine, a sandbox) it is most of what a chunk costs, so the chunk's cost is also
    printed in these units: it carries over to other machines better than microseconds do."""
    before = redis_cpu(client.info("cpu"))
    for _ in range(pings):
        client.ping()
    return (redis_cpu(client.info("cpu")) - before) / pings * 1e6


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}


def real_worker_cost(workers: int = 2, chunks: int = 400, idle_seconds: float = 3.0) -> dict[str, Any]:
    """Redis commands and CPU per chunk, and per live worker-second, with real ``rq worker hydra``."""
    cluster = LocalCluster(0, monitor=False, env={"RQ_WORKER_CLASS": "bench.nulltask.NullWorker"})
    cluster.start()
    monitor = None
    try:
        monitor = start_monitor(cluster.url, cluster.directory)
        client = connect(cluster.url)

        def measure(seconds: float) -> tuple[float, dict[str, int]]:
            cpu0, cmd0 = redis_cpu(client.info("cpu")), _commandstats(client)
            time.sleep(seconds)
            return redis_cpu(client.info("cpu")) - cpu0, _delta(_commandstats(client), cmd0)

        time.sleep(1.0)
        idle0_cpu, idle0_cmds = measure(idle_seconds)  # the monitor alone
        for _ in range(workers):
            cluster.add_worker()
        cluster.wait_ready()
        time.sleep(1.0)
        idle_cpu, idle_cmds = measure(idle_seconds)
        cpu0, cmd0, io0 = redis_cpu(client.info("cpu")), _commandstats(client), _reads_writes(client)
        started = time.monotonic()
        job_id = submit(client, "null", {"units": chunks * 10}, SubmitOptions(chunk_units=10))
        while client.hget(keys.job(job_id), "state") not in (b"done", b"failed", b"cancelled"):
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        cpu = redis_cpu(client.info("cpu")) - cpu0
        cmds = _delta(_commandstats(client), cmd0)
        io = [after - before for after, before in zip(_reads_writes(client), io0, strict=True)]
        record = read_job(client, job_id)
        floor = ping_floor(client)
        client.close()
    finally:
        if monitor:
            stop_monitor(monitor, cluster.directory)
        cluster.stop()
    # Subtract what the same seconds cost with nothing to do.
    background = idle_cpu / idle_seconds * elapsed
    per_worker_s = max(idle_cpu - idle0_cpu, 0.0) / idle_seconds / workers
    per_chunk_cmds = {
        k: round((v - idle_cmds.get(k, 0) / idle_seconds * elapsed) / chunks, 2)
        for k, v in sorted(cmds.items(), key=lambda kv: -kv[1])
    }
    per_chunk_cmds = {k: v for k, v in per_chunk_cmds.items() if v >= 0.05}
    worker_cmds = {
        k: round((v - idle0_cmds.get(k, 0)) / idle_seconds / workers, 2)
        for k, v in idle_cmds.items()
        if v - idle0_cmds.get(k, 0) > 0
    }
    return {
        "workers": workers,
        "chunks": chunks,
        "exact": record.get("state") == "done" and int(record.get("sum:n", 0)) == chunks * 10,
        "job_seconds": round(elapsed, 3),
        "chunks_per_s": chunks / elapsed,
        "commands_per_chunk": round(sum(per_chunk_cmds.values()), 1),
        "commands_per_chunk_by_name": per_chunk_cmds,
        "redis_cpu_us_per_chunk": max(cpu - background, 0.0) * 1e6 / chunks,
        "socket_reads_per_chunk": round(io[0] / chunks, 2),
        "socket_writes_per_chunk": round(io[1] / chunks, 2),
        "redis_cpu_us_per_ping": floor,
        "pings_per_chunk": max(cpu - background, 0.0) * 1e6 / chunks / floor if floor > 0 else None,
        "redis_cpu_us_per_chunk_gross": cpu * 1e6 / chunks,
        "redis_cpu_us_per_worker_second": per_worker_s * 1e6,
        "commands_per_worker_second": worker_cmds,
        "monitor_idle_redis_cpu_share": idle0_cpu / idle_seconds,
    }


def capacity(per_chunk_us: float, per_worker_second_us: float, chunk_seconds: float) -> dict[str, Any]:
    """Volunteers one Redis core serves at this chunk time: 1 s of CPU / (per chunk / T + per worker-second)."""
    per_volunteer_s = per_chunk_us / chunk_seconds + per_worker_second_us
    return {
        "chunk_seconds": chunk_seconds,
        "redis_us_per_chunk": round(per_chunk_us, 1),
        "redis_us_per_worker_second": round(per_worker_second_us, 2),
        "redis_us_per_volunteer_second": round(per_volunteer_s, 2),
        "volunteers_per_redis_core": int(1e6 / per_volunteer_s) if per_volunteer_s > 0 else None,
    }


# -- the monitor's hot spots -------------------------------------------------------------------------


def hot_spots(profile: Path, limit: int = 25) -> list[dict[str, Any]]:
    """The monitor's functions by own time (tottime) and by time including callees (cumtime)."""
    stats = pstats.Stats(str(profile))
    total = stats.total_tt or 1e-9
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({name})"
        rows.append({"function": short, "calls": calls, "own_share": tottime / total, "cum_share": cumtime / total})
    by_cum = sorted(rows, key=lambda r: -r["cum_share"])
    by_own = sorted(rows, key=lambda r: -r["own_share"])
    return [{"by": "cumulative", **r} for r in by_cum[:limit]] + [{"by": "own", **r} for r in by_own[:limit]]


# -- the command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N and a short job (CI)")
    parser.add_argument("--n", help="comma-separated volunteer counts (default 100,1000,10000)")
    parser.add_argument("--chunk-seconds", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="ideal job length at each N")
    parser.add_argument("--users", type=int, default=USERS, help="ACL users the volunteers share")
    parser.add_argument("--profile", action="store_true", help="cProfile the monitor at the largest N")
    parser.add_argument("--no-real", action="store_true", help="skip the real rq worker measurement")
    parser.add_argument("--procs", type=int, default=1, help="simulator processes (one saturates near N=10,000)")
    parser.add_argument("--monitors", type=int, default=1, help="hydra monitor processes sharing the work")
    parser.add_argument("--json", type=Path, nargs="?", const=OUT / "swarm.json")
    parser.add_argument("--helper", type=Path, help=argparse.SUPPRESS)  # a simulator process (--procs)
    args = parser.parse_args(argv)
    if args.helper:
        asyncio.run(helper_main(args.helper))
        return
    if args.procs < 1 or args.monitors < 1:
        raise SystemExit("bench.swarm: --procs and --monitors must be at least 1")
    register()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints where a long run is
    try:
        sizes = [int(float(x)) for x in (args.n or ("20,60" if args.quick else "100,1000,10000")).split(",")]
    except ValueError:
        raise SystemExit("bench.swarm: --n must be comma-separated integers") from None
    if any(n < 1 for n in sizes):
        raise SystemExit("bench.swarm: every N must be at least 1")
    chunk_seconds = args.chunk_seconds or (0.5 if args.quick else 2.0)
    seconds = args.seconds or (4.0 if args.quick else 10 * chunk_seconds)
    out: dict[str, Any] = {"cores": os.cpu_count(), "load_before": round(load(), 2), "runs": []}
    OUT.mkdir(exist_ok=True)
    profile = OUT / "swarm-monitor.prof" if args.profile else None
    for n in sizes:
        row = asyncio.run(
            run_one(
                n, chunk_seconds, seconds, args.users, profile if n == max(sizes) else None, args.procs, args.monitors
            )
        )
        out["runs"].append(row)
        print(_run_line(row), flush=True)
    if not args.no_real:
        # The model's chunk cost is measured with REAL_WORKERS workers, whose results reach the monitor
        # together and are handled in batches as they are at scale; two workers, handled one result at
        # a time, are the worst case, measured beside them (not in --quick).
        cost = real_worker_cost(workers=2 if args.quick else REAL_WORKERS, chunks=100 if args.quick else 1000)
        out["real_worker"] = cost
        if not args.quick:
            out["real_worker_alone"] = real_worker_cost(workers=2, chunks=1000)
        # A live worker's own cost (heartbeat, idle BLPOP) from the largest swarm, where the bounded
        # per-second work of the monitor (the page's summary) is spread over many workers.
        per_worker = out["runs"][-1]["idle_redis_us_per_volunteer_second"]
        out["capacity"] = [capacity(cost["redis_cpu_us_per_chunk"], per_worker, t) for t in (2.0, 30.0)]
    if profile and profile.exists():
        out["monitor_hot_spots"] = hot_spots(profile)
    print(report(out))
    write_json(args.json, out)
    print(f"wrote {timeline_chart(out, args.json.with_suffix('.png') if args.json else OUT / 'swarm.png')}")


def timeline_chart(out: dict[str, Any], path: Path) -> Path:
    """One panel per N, over the seconds since the submit: the chunks volunteers hold (per
    volunteer: 2 when every one holds its running chunk and the next) and the share of volunteers
    waiting for work. The ramp after the submit, the steady part and the tail, as they were."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = out["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), dpi=120, squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        depths = run.get("pending_wanted_running_idle", [])
        at = [d[0] for d in depths]
        ax.plot(at, [d[3] / run["n"] for d in depths], color="#5b8def", label="chunks held per volunteer")
        ax.plot(at, [d[4] / run["n"] for d in depths], color="#f39c4a", label="share of volunteers waiting")
        ax.set_ylim(0, 2.1)
        ax.set_title(f"N = {run['n']:,}: {run['chunks_per_s']:.0f} chunks/s of {run['ideal_chunks_per_s']:.0f}")
        ax.set_xlabel("seconds since the submit")
    axes[0][0].legend(loc="center right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _run_line(row: dict[str, Any]) -> str:
    return (
        f"N={row['n']}: {row['chunks_per_s']:.0f} chunks/s (ideal {row['ideal_chunks_per_s']:.0f}), "
        f"dispatch p99 {row['dispatch_p99_ms']} ms, job {row['state']} in {row['job_seconds']} s"
    )


def report(out: dict[str, Any]) -> str:
    rows = [
        [
            r["n"],
            r["joined_s"],
            r["chunks_per_s"],
            r["ideal_chunks_per_s"],
            r["dispatch_p50_ms"],
            r["dispatch_p99_ms"],
            _ms(r["monitor"].get("longest_pass_s")),
            r["monitor"].get("passes_over_10ms"),
            r["monitor_loop"].get("idle"),
            r["monitor_loop"].get("redis_wait"),
            r["redis_cpu_share"],
            r["monitor_cpu_share"],
            r["simulator_cpu_share"],
            int(r["memory_per_volunteer_bytes"]),
            "yes" if r["exact"] else ("consistent" if r["consistent"] else "NO"),
            r["load_1min"],
        ]
        for r in out["runs"]
    ]
    header = [
        "N",
        "join s",
        "chunks/s",
        "ideal",
        "p50 ms",
        "p99 ms",
        "pass max ms",
        ">10ms",
        "mon idle",
        "mon waits",
        "redis cpu",
        "monitor cpu",
        "sim cpu",
        "B/vol",
        "exact",
        "load",
    ]
    lines = [f"swarm: {out['cores']} cores, load {out['load_before']} before", table(rows, header)]
    for r in out["runs"]:
        monitors = [r["monitor"], *r.get("other_monitors", [])]
        assigns: collections.Counter[str] = collections.Counter()
        for m in monitors:
            assigns.update(m.get("assigns") or {})
        why = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(assigns.items()) if k.startswith("one_by_one:"))
        refused = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(assigns.items()) if k.startswith("refused:"))
        loop = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["monitor_loop"].items()))
        per_chunk = r["monitor_per_chunk"]
        per = ", ".join(f"{k} {v}" for k, v in sorted(per_chunk.items()) if not k.startswith("cmd:"))
        loop += f"; in the steady window, per chunk: {per}"
        commands = sorted(((v, k[4:]) for k, v in per_chunk.items() if k.startswith("cmd:")), reverse=True)
        if commands:
            top = ", ".join(f"{name} {v}" for v, name in commands[:12])
            loop += f"; commands per chunk {sum(v for v, _ in commands):.2f} ({top})"
        if r.get("redis_us_per_chunk_by_command"):
            top = ", ".join(f"{k} {v}" for k, v in r["redis_us_per_chunk_by_command"].items())
            loop += f"; Redis µs per chunk {r['redis_cpu_us_per_chunk']:.0f}, by command ({top})"
        lines.append(
            f"N={r['n']}: first monitor's loop: {loop or 'not measured'}; assignments planned in batches "
            f"{assigns['planned']}, then one by one {assigns['one_by_one']} ({why}); refused: {refused or 'none'}"
        )
        timing = r["monitor"].get("result_timing") or {}
        if "measured_over_worked" in timing:
            stamped, unstamped = timing.get("late", {}), timing.get("late_unstamped", {})
            share = stamped.get("n", 0) / max(stamped.get("n", 0) + unstamped.get("n", 0), 1)
            lines.append(
                f"N={r['n']}: volunteers busy {r['volunteers_busy_share']:.0%} of the window, chunks of "
                f"{r['chunk_work_s_p50']} s of work (p50; {r['chunk_seconds']} s asked); the monitor timed chunks "
                f"at {_quantile_text(timing['measured_over_worked'])} × their work; results timed as arriving "
                f"{_quantile_text(stamped)} s after they were sent where the listener stamped them ({share:.0%}), "
                f"{_quantile_text(unstamped)} s where the monitor estimated it; chunks started "
                f"{_quantile_text(timing.get('start_wait', {}))} s after the monitor counts them startable; "
                f"every volunteer had work {_all_served(r)} after the submit; a volunteer's first chunk came "
                f"{r['first_chunk_wait_p50_s']}/{r['first_chunk_wait_p99_s']}/{r['first_chunk_wait_max_s']} s "
                "(p50/p99/max) after it asked"
            )
    if "real_worker" in out:
        cost = out["real_worker"]
        top = ", ".join(f"{k} {v}" for k, v in list(cost["commands_per_chunk_by_name"].items())[:8])
        lines += [
            "",
            f"real rq worker hydra ({cost['workers']} workers, null kernel, {cost['chunks']} chunks, "
            f"{cost['chunks_per_s']:.0f} chunks/s): {cost['commands_per_chunk']} Redis commands and "
            f"{cost['redis_cpu_us_per_chunk']:.0f} µs Redis CPU per chunk ({top}); "
            f"{out['runs'][-1]['idle_redis_us_per_volunteer_second']:.1f} µs per live worker-second "
            f"(swarm of {out['runs'][-1]['n']}, idle)",
            f"one Redis core: {1e6 / max(cost['redis_cpu_us_per_chunk'], 1e-9):.0f} chunk completions/s",
        ]
        if "real_worker_alone" in out:
            alone = out["real_worker_alone"]
            lines.append(
                f"with {alone['workers']} workers (results handled one at a time, the worst case): "
                f"{alone['commands_per_chunk']} commands and {alone['redis_cpu_us_per_chunk']:.0f} µs per chunk, "
                f"{1e6 / max(alone['redis_cpu_us_per_chunk'], 1e-9):.0f} completions/s per Redis core"
            )
        if cost.get("pings_per_chunk"):
            lines.append(
                f"a chunk costs Redis {cost['socket_reads_per_chunk']} socket reads and "
                f"{cost['socket_writes_per_chunk']} writes, and as much CPU as {cost['pings_per_chunk']:.1f} PINGs "
                f"(one PING: {cost['redis_cpu_us_per_ping']:.1f} µs here): one Redis core serves "
                f"{1e6 / cost['pings_per_chunk']:.0f} / (µs per PING) chunk completions/s"
            )
        for cap in out["capacity"]:
            lines.append(
                f"capacity at {cap['chunk_seconds']:g} s chunks: {cap['volunteers_per_redis_core']} volunteers "
                f"per Redis core ({cap['redis_us_per_volunteer_second']} µs of Redis CPU per volunteer-second)"
            )
    if "monitor_hot_spots" in out:
        lines += ["", "monitor hot spots (share of the monitor's profiled time):"]
        for r in out["monitor_hot_spots"]:
            if r["by"] == "cumulative" and r["cum_share"] > 0.03:
                share = f"cum {r['cum_share']:6.1%}  own {r['own_share']:6.1%}"
                lines.append(f"  {share}  {r['calls']:>8}  {r['function']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
