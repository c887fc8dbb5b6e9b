"""Carbon-aware dispatch on a recorded week: gCO2 per job, carbon-blind vs Hydra's policy vs an oracle.

    python -m bench.carbon [--trace DIR] [--start 2022-03-07] [--days 7] [--workers-per-zone 10]
                           [--load 0.3] [--slacks 2h,6h,12h,24h] [--forecast-error 0.1] [--json] [--quick]

Simulated time (a week runs in seconds, no Redis): a pool of volunteers spread evenly over the
trace's zones, and a stream of jobs (Poisson arrivals over all but the last day, exponential
sizes, deadlines drawn from ``--slacks``) sized so that the jobs ask for ``--load`` of the pool.
Every few minutes of simulated time each worker asks the dispatcher for work, as the core's
worker-driven dispatch does:

- **carbon-blind**: jobs in submission order, every worker takes work (dispatch before issue 17);
- **Hydra**: earliest deadline first, and a worker takes a job's work only when
  :func:`hydra.carbon.policy.CarbonPolicy.may_run` says so: the very code the core calls, asking
  the same guarded signal, with forecasts that err by ``--forecast-error`` (full size at 24 h);
- **oracle**: perfect knowledge of the intensities and of every job to come; each job, earliest
  deadline first, takes the cleanest zone-hours left in its window (hourly slots, no guard).

CO2 is charged on the *recorded* intensity of the worker's zone and hour, at the same power for
every worker, so the ratios do not depend on the power figure. A second experiment puts the whole
pool in one zone with 24 h of slack: time shifting alone. Writes ``bench/out/carbon.json`` (with
``--json``) and ``bench/out/carbon.png``. Data: Electricity Maps (ODbL), see the traces' README.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hydra.carbon.options import parse_deadline
from hydra.carbon.policy import DEFAULT_MARGIN, CarbonJob, CarbonPolicy, PoolView, recent_load
from hydra.carbon.providers import SHIPPED_TRACES
from hydra.carbon.replay import ReplaySignal, Trace, load_trace
from hydra.carbon.signal import HOUR, GuardedSignal
from hydra.errors import HydraError

OUT = Path(__file__).resolve().parent / "out"
WATTS = 65.0
STEP = 300.0  # seconds of simulated time between two requests of one worker
GOALS = {"saving_vs_blind": 0.50, "time_shift_saving": 0.15, "oracle_gap": 0.10}


@dataclass
class SimJob:
    id: int
    arrival: float
    deadline: float
    work: float  # worker-seconds
    left: float = 0.0
    finish: float = 0.0
    grams: float = 0.0


@dataclass
class Outcome:
    grams: list[float]
    finish: list[float]
    missed: int
    work_by_zone_hour: dict[str, np.ndarray] = field(default_factory=dict)

    def per_job(self) -> float:
        return float(np.mean(self.grams)) if self.grams else 0.0


def make_jobs(
    rng: np.random.Generator, start: float, end: float, workers: int, load: float, slacks: list[float], mean: float
) -> list[SimJob]:
    """Poisson arrivals in [start, end - max slack), asking for ``load`` of ``workers``."""
    last = end - max(slacks)
    rate = load * workers / mean  # jobs per second
    jobs: list[SimJob] = []
    t = start + rng.exponential(1 / rate)
    while t < last:
        work = max(60.0, rng.exponential(mean))
        jobs.append(SimJob(len(jobs), t, t + float(rng.choice(slacks)), work, work))
        t += rng.exponential(1 / rate)
    return jobs


def _intensity(trace: Trace, zone: str, t: float) -> float:
    return float(trace.values[zone][int((t - trace.start) // HOUR)])


def simulate(
    trace: Trace, pool: dict[str, int], jobs: list[SimJob], aware: bool, forecast_error: float, seed: int
) -> Outcome:
    jobs = [SimJob(j.id, j.arrival, j.deadline, j.work, j.work) for j in jobs]
    clock = [trace.start]
    signal = GuardedSignal(ReplaySignal(trace, lambda: clock[0], forecast_error, seed), clock=lambda: clock[0])
    policy = CarbonPolicy(signal, guard=2 * STEP)
    capacity = {z: float(n) for z, n in pool.items()}
    arrivals = np.array([j.arrival for j in sorted(jobs, key=lambda j: j.arrival)])
    arrived_work = np.cumsum([0.0] + [j.work for j in sorted(jobs, key=lambda j: j.arrival)])
    workers = [z for z, n in pool.items() for _ in range(n)]
    rng = np.random.default_rng(seed)
    hours = trace.hours
    dispatched = {z: np.zeros(hours) for z in pool}
    pending = sorted(jobs, key=lambda j: j.arrival)
    active: list[SimJob] = []
    joule_grams = WATTS / 3.6e6  # grams per (second × g/kWh)
    t, end = trace.start, trace.end
    try:
        while t < end and (pending or active):
            clock[0] = t
            # What the trusted side sees: the work submitted over the last day (at least 6 h of it).
            window = min(24 * HOUR, max(6 * HOUR, t - trace.start))
            recent = arrived_work[np.searchsorted(arrivals, t)] - arrived_work[np.searchsorted(arrivals, t - window)]
            view = PoolView(capacity, recent_load(recent, window, sum(capacity.values())))
            while pending and pending[0].arrival < t + STEP:
                active.append(pending.pop(0))
            active.sort(key=(lambda j: (j.deadline, j.id)) if aware else (lambda j: (j.arrival, j.id)))
            ahead: dict[int, float] = {}
            total = 0.0
            for job in active:
                ahead[job.id] = total
                total += job.left
            decided: dict[tuple[str, int], tuple[float, bool]] = {}
            hour = int((t - trace.start) // HOUR)
            for k in rng.permutation(len(workers)):
                zone = workers[k]
                budget = STEP
                grams_now = _intensity(trace, zone, t) * joule_grams
                for job in active:
                    if job.left <= 0:
                        continue
                    start = max(t, job.arrival)
                    if aware:
                        memo = decided.get((zone, job.id))
                        if memo is None or memo[0] != job.left:
                            cj = CarbonJob(job.left, job.deadline, 1.0, ahead[job.id])
                            memo = (job.left, policy.may_run(cj, zone, start, view))
                            decided[(zone, job.id)] = memo
                        if not memo[1]:
                            continue
                    room = min(budget, t + STEP - start)
                    take = min(room, job.left)
                    if take <= 0:
                        continue
                    job.left -= take
                    budget -= take
                    job.grams += take * grams_now
                    job.finish = max(job.finish, start + (STEP - budget))
                    dispatched[zone][hour] += take
                    if budget <= 0:
                        break
            active = [j for j in active if j.left > 0]
            t += STEP
    finally:
        signal.close()
    missed = sum(1 for j in jobs if j.left > 0 or j.finish > j.deadline)
    return Outcome([j.grams for j in jobs], [j.finish - j.arrival for j in jobs], missed, dispatched)


def oracle(trace: Trace, pool: dict[str, int], jobs: list[SimJob]) -> Outcome:
    """Each job, earliest deadline first, takes the cleanest zone-hours left inside its window."""
    room = {z: np.full(trace.hours, n * float(HOUR)) for z, n in pool.items()}
    grams, finish, missed = [], [], 0
    per_second = WATTS / 3.6e6
    for job in sorted(jobs, key=lambda j: (j.deadline, j.id)):
        first = int((job.arrival - trace.start) // HOUR)
        last = min(trace.hours - 1, int(math.ceil((job.deadline - trace.start) / HOUR)) - 1)
        slots = []
        for zone, n in pool.items():
            for h in range(first, last + 1):
                lo = max(job.arrival, trace.start + h * HOUR)
                hi = min(job.deadline, trace.start + (h + 1) * HOUR)
                usable = min(room[zone][h], n * max(0.0, hi - lo))
                if usable > 0:
                    slots.append((trace.values[zone][h], zone, h, usable))
        slots.sort(key=lambda s: s[0])
        left, g, done = job.work, 0.0, job.arrival
        for intensity, zone, h, usable in slots:
            take = min(usable, left)
            room[zone][h] -= take
            left -= take
            g += take * intensity * per_second
            done = max(done, min(job.deadline, trace.start + (h + 1) * HOUR))
            if left <= 0:
                break
        missed += int(left > 1e-6)
        grams.append(g)
        finish.append(done - job.arrival)
    return Outcome(grams, finish, missed)


def _summary(o: Outcome) -> dict[str, float]:
    return {
        "co2_grams_per_job": round(o.per_job(), 3),
        "makespan_mean_h": round(float(np.mean(o.finish)) / HOUR, 3) if o.finish else 0.0,
        "makespan_max_h": round(float(np.max(o.finish)) / HOUR, 3) if o.finish else 0.0,
        "deadlines_missed": o.missed,
    }


def _saving(blind: Outcome, other: Outcome) -> float:
    b = blind.per_job()
    return 0.0 if b <= 0 else 1.0 - other.per_job() / b


def run(
    trace: Trace, workers_per_zone: int, load: float, slacks: list[float], forecast_error: float, seed: int, mean: float
) -> dict[str, Any]:
    zones = trace.zones
    pool = {z: workers_per_zone for z in zones}
    rng = np.random.default_rng(seed)
    jobs = make_jobs(rng, trace.start, trace.end, sum(pool.values()), load, slacks, mean)
    if not jobs:
        raise HydraError("the trace is too short for any job with these slacks")
    blind = simulate(trace, pool, jobs, False, forecast_error, seed)
    hydra = simulate(trace, pool, jobs, True, forecast_error, seed)
    best = oracle(trace, pool, jobs)
    saving, oracle_saving = _saving(blind, hydra), _saving(blind, best)
    # Time shifting alone: the whole pool in one zone, every job with 24 h of slack.
    shift: dict[str, float] = {}
    shift_oracle: dict[str, float] = {}
    day = [min(24 * HOUR, max(slacks))]
    for zone in zones:
        one = {zone: workers_per_zone * len(zones)}
        zjobs = make_jobs(np.random.default_rng(seed + 1), trace.start, trace.end, sum(one.values()), load, day, mean)
        if zjobs:
            zb = simulate(trace, one, zjobs, False, forecast_error, seed)
            zh = simulate(trace, one, zjobs, True, forecast_error, seed)
            shift[zone] = round(_saving(zb, zh), 4)
            shift_oracle[zone] = round(_saving(zb, oracle(trace, one, zjobs)), 4)
    return {
        "trace": {
            "zones": zones,
            "start": datetime.fromtimestamp(trace.start, UTC).isoformat(),
            "hours": trace.hours,
            "mean_intensity": {z: round(float(trace.values[z].mean()), 1) for z in zones},
        },
        "pool": pool,
        "jobs": len(jobs),
        "load": load,
        "slacks_h": [s / HOUR for s in slacks],
        "forecast_error": forecast_error,
        "blind": _summary(blind),
        "hydra": _summary(hydra),
        "oracle": _summary(best),
        "saving_vs_blind": round(saving, 4),
        "oracle_saving_vs_blind": round(oracle_saving, 4),
        "oracle_gap": round(oracle_saving - saving, 4),
        "deadlines_missed": hydra.missed,
        "time_shift_saving_by_zone": shift,
        "time_shift_saving": round(float(np.mean(list(shift.values()))), 4) if shift else 0.0,
        "time_shift_oracle_saving_by_zone": shift_oracle,
        "infeasible_jobs": sum(
            1 for j in jobs if j.work * (1 + DEFAULT_MARGIN) > sum(pool.values()) * (j.deadline - j.arrival - 2 * STEP)
        ),
        "_dispatched": {"blind": blind.work_by_zone_hour, "hydra": hydra.work_by_zone_hour},
    }


def chart(trace: Trace, result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.arange(trace.hours)
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(10, 7.5), dpi=110, sharex=True)
    for zone in trace.zones:
        top.plot(hours, trace.values[zone], label=zone, linewidth=1.2)
    top.set_ylabel("gCO2eq/kWh")
    top.set_title("Grid carbon intensity (Electricity Maps, ODbL) and the work dispatched per zone")
    top.legend(loc="upper right", fontsize=8, ncol=len(trace.zones))
    for ax, name in ((mid, "blind"), (low, "hydra")):
        work = result["_dispatched"][name]
        ax.stackplot(hours, *[work[z] / HOUR for z in trace.zones], labels=trace.zones, alpha=0.8)
        label = "carbon-blind" if name == "blind" else "Hydra (--carbon-aware)"
        ax.set_ylabel("worker-hours / h")
        ax.set_title(f"{label}: {result[name]['co2_grams_per_job']:.1f} gCO2 per job", fontsize=10)
    low.set_xlabel(f"hours from {result['trace']['start'][:16]} UTC")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def report(result: dict[str, Any]) -> str:
    rows = [
        ("carbon-blind", result["blind"]),
        ("Hydra policy", result["hydra"]),
        ("oracle", result["oracle"]),
    ]
    lines = [
        f"trace {result['trace']['start'][:10]} +{result['trace']['hours']} h, zones "
        + ", ".join(f"{z} ({g:.0f} g/kWh)" for z, g in result["trace"]["mean_intensity"].items()),
        f"{result['jobs']} jobs, load {result['load']:.0%}, slacks {result['slacks_h']} h, "
        f"forecast error {result['forecast_error']:.0%}, pool {result['pool']}",
        "",
        f"{'dispatch':<14}{'gCO2/job':>10}{'makespan mean h':>17}{'max h':>8}{'missed':>8}",
    ]
    for name, s in rows:
        lines.append(
            f"{name:<14}{s['co2_grams_per_job']:>10.2f}{s['makespan_mean_h']:>17.2f}"
            f"{s['makespan_max_h']:>8.2f}{s['deadlines_missed']:>8}"
        )
    shift = ", ".join(f"{z} {v:.1%}" for z, v in result["time_shift_saving_by_zone"].items())
    bound = ", ".join(f"{z} {v:.1%}" for z, v in result["time_shift_oracle_saving_by_zone"].items())
    lines += [
        "",
        f"saving_vs_blind   {result['saving_vs_blind']:.1%}   (goal >= 50%)",
        f"oracle_gap        {result['oracle_gap'] * 100:.1f} pp (oracle saves {result['oracle_saving_vs_blind']:.1%};"
        " goal <= 10 pp)",
        f"deadlines_missed  {result['deadlines_missed']}      (goal 0; {result['infeasible_jobs']} jobs infeasible"
        " even alone on the whole pool with the margin)",
        f"time_shift_saving {result['time_shift_saving']:.1%}   (one zone, 24 h slack: {shift}; goal >= 15%)",
        f"                        (oracle, same setting: {bound})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default=str(SHIPPED_TRACES), help="directory of hourly CSV traces")
    parser.add_argument("--start", default=None, help="first day (YYYY-MM-DD, UTC; default: the trace's first hour)")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--workers-per-zone", type=int, default=10)
    parser.add_argument("--load", type=float, default=0.3, help="fraction of the pool the jobs ask for")
    parser.add_argument("--slacks", default="2h,6h,12h,24h", help="deadlines jobs get, drawn uniformly")
    parser.add_argument("--job-hours", type=float, default=4.0, help="mean job size, worker-hours")
    parser.add_argument("--forecast-error", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="write bench/out/carbon.json")
    parser.add_argument("--quick", action="store_true", help="two days, small pool (for CI)")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    try:
        trace = load_trace(args.trace)
        days = 2.0 if args.quick else args.days
        start = trace.start
        if args.start:
            start = datetime.fromisoformat(args.start).replace(tzinfo=UTC).timestamp()
        trace = trace.window(start, min(int(days * 24), trace.hours - int((start - trace.start) // HOUR)))
        slacks = [parse_deadline(s) for s in args.slacks.split(",")]
        if max(slacks) >= trace.hours * HOUR:
            raise HydraError("the trace must be longer than the largest slack")
        wpz = 4 if args.quick else args.workers_per_zone
        t0 = time.perf_counter()
        result = run(trace, wpz, args.load, slacks, args.forecast_error, args.seed, args.job_hours * HOUR)
    except HydraError as exc:
        parser.exit(2, f"bench.carbon: error: {exc}\n")
    elapsed = time.perf_counter() - t0
    print(report(result))
    print(f"(simulated {trace.hours} h in {elapsed:.1f} s)")
    if not args.no_chart:
        print(f"chart: {chart(trace, result, OUT / 'carbon.png')}")
    result["wall_seconds"] = round(elapsed, 2)
    result["goals_met"] = {  # plain bools, not numpy ones
        "saving_vs_blind": bool(result["saving_vs_blind"] >= GOALS["saving_vs_blind"]),
        "time_shift_saving": bool(result["time_shift_saving"] >= GOALS["time_shift_saving"]),
        "oracle_gap": bool(result["oracle_gap"] <= GOALS["oracle_gap"]),
        "deadlines_missed": bool(result["deadlines_missed"] == 0),
    }
    if args.json:
        import json

        OUT.mkdir(exist_ok=True)
        public = {k: v for k, v in result.items() if not k.startswith("_")}
        (OUT / "carbon.json").write_text(json.dumps(public, indent=2, default=lambda o: o.item()))
        print(f"json: {OUT / 'carbon.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
