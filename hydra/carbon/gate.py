"""The dispatcher's one hook for carbon-aware jobs: :meth:`CarbonGate.allows`.

The dispatcher asks it before giving a worker anything of a job. A job without ``--carbon-aware``
has no ``carbon_deadline`` in its record and passes after one cached lookup: dispatch exactly as
before. For a carbon-aware job the gate builds what :mod:`hydra.carbon.policy` needs from trusted
state only, each piece cached briefly so the dispatch path stays cheap:

- the job: ``carbon_deadline`` (epoch seconds, fixed at submission) and its remaining work
  (``units_done`` of ``units_total`` of the task's total work), refreshed every second;
- the pool: live capacity per zone for the job's task, the trusted side's measured rates summed by
  each worker's zone (from its hello), refreshed every 5 s: the collector keeps those sums as
  workers' speeds change, join and leave (``zrate:<zone>:<task>`` in ``hydra:counts``), so this is
  one read however many workers there are;
- ``ahead``: remaining work of other carbon-aware jobs of the same task with earlier deadlines;
- the signal: the guarded source from ``HYDRA_CARBON_*`` (:func:`hydra.carbon.providers.signal_from_env`),
  built on the first carbon-aware job, so that deployments without one never touch it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis import Redis

from hydra import keys

if TYPE_CHECKING:  # the policy (and numpy) load with the first carbon-aware job, not with dispatch
    from hydra.carbon.policy import PoolView
    from hydra.carbon.signal import CarbonSignal

JOB_FIELD = "carbon_deadline"
_JOB_SECONDS = 1.0
_POOL_SECONDS = 5.0
_FORGET_SECONDS = 60.0


class CarbonGate:
    def __init__(
        self, redis: Redis, signal: CarbonSignal | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.clock = clock
        self._signal = signal
        if signal is None:  # bad HYDRA_CARBON_* settings stop the monitor at start, not at the first such job
            from hydra.carbon.providers import carbon_settings

            carbon_settings(os.environ)
        self._deadlines: dict[str, float | None] = {}
        # job → (fetched at, task, deadline, remaining work)
        self._jobs: dict[str, tuple[float, str, float, float]] = {}
        self._pools: dict[str, tuple[float, PoolView]] = {}

    @property
    def signal(self) -> CarbonSignal:
        if self._signal is None:
            from hydra.carbon.providers import signal_from_env

            self._signal = signal_from_env(os.environ, self.clock)
        return self._signal

    def deadline(self, job_id: str) -> float | None:
        if job_id not in self._deadlines:
            raw = self.redis.hget(keys.job(job_id), JOB_FIELD)
            self._deadlines[job_id] = float(raw) if raw else None
        return self._deadlines[job_id]

    def allows(self, job_id: str, task: str, total_work: float, units_total: int, zone: str) -> bool:
        """May a worker of ``zone`` take work of this job now? True at once for other jobs."""
        deadline = self.deadline(job_id)
        if deadline is None:
            return True
        from hydra.carbon.policy import CarbonJob, policy_for

        now = self.clock()
        remaining = self._remaining(job_id, task, deadline, total_work, units_total, now)
        ahead = sum(
            left for other, (_, t, d, left) in self._jobs.items() if other != job_id and t == task and d < deadline
        )
        job = CarbonJob(remaining, deadline, 1.0, ahead)
        return policy_for(self.signal).may_run(job, zone, now, self.pool(task, now))

    def _remaining(self, job_id: str, task: str, deadline: float, total: float, units: int, now: float) -> float:
        cached = self._jobs.get(job_id)
        if cached is not None and now - cached[0] < _JOB_SECONDS:
            return cached[3]
        done = int(self.redis.hget(keys.job(job_id), "units_done") or 0)
        remaining = total * max(0, units - done) / max(units, 1)
        self._jobs[job_id] = (now, task, deadline, remaining)
        for gone in [j for j, v in self._jobs.items() if now - v[0] > _FORGET_SECONDS]:
            del self._jobs[gone]
            self._deadlines.pop(gone, None)
        return remaining

    def pool(self, task: str, now: float) -> PoolView:
        """Live capacity per zone for ``task`` (work/s, as measured by the trusted side)."""
        cached = self._pools.get(task)
        if cached is not None and now - cached[0] < _POOL_SECONDS:
            return cached[1]
        from hydra.carbon.policy import PoolView

        capacity: dict[str, float] = {}
        for field, value in self.redis.hgetall(keys.COUNTS).items():
            parsed = keys.parse_zone_rate(field.decode(errors="replace"))
            if parsed is not None and parsed[1] == task:
                with contextlib.suppress(ValueError):
                    capacity[parsed[0]] = max(float(value), 0.0)
        view = PoolView(capacity)
        self._pools[task] = (now, view)
        return view
