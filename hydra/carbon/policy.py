"""Carbon-aware dispatch: may this worker, in this grid zone, take work of this job now?

The trusted dispatcher asks :meth:`CarbonPolicy.may_run` (or the module-level :func:`may_run`)
only for jobs submitted with ``--carbon-aware``; every other job is dispatched exactly as before
and never reaches this module.

The rule, one inequality. Cut the time from now to the job's deadline (less a guard) into
*slots*: one per zone and hour, holding that zone's live capacity for the part of the hour inside
the window, at the zone's intensity forecast for that hour. A worker in zone ``z`` may run the job
now unless the slots strictly cleaner than ``(z, now)`` can carry the job's remaining work, with a
safety margin::

    may_run  ⇔  capacity of cleaner slots  <  work × (1 + margin)

This prefers cleaner zones (a dirty-zone worker waits while cleaner zones can finish in time) and
shifts in time (every worker waits through an hour forecast to be dirtier than enough later
ones) with one test, and it cannot starve a job: the cleaner slots are a subset of all slots, so
once the whole pool's remaining capacity before the deadline is within the margin of the work
left, every worker runs it. From that moment the work needs at most 1/(1 + margin) of the time
left, which is what keeps the deadline when forecasts are wrong or some capacity leaves.

Cost: the forecast of each zone is asked once per hour; the sorted slots of the hours wholly
inside the window are built once per (hour, window end, pool); a call is then O(zones) plus one
bisection, a few microseconds.
"""

from __future__ import annotations

import bisect
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from hydra.carbon.signal import HOUR, CarbonSignal, hour_start

DEFAULT_MARGIN = 0.25
DEFAULT_GUARD = 600.0
DEFAULT_HORIZON = 72


@dataclass(frozen=True)
class CarbonJob:
    """What the policy needs to know of one job. Work is measured in capacity-seconds."""

    remaining: float  # units of work not yet accepted (queued and in flight)
    deadline: float  # epoch seconds
    # Units per second that one unit of pool capacity does on this job (its measured throughput).
    throughput: float = 1.0
    # Capacity-seconds of other work the dispatcher serves before this job (earlier deadlines).
    ahead: float = 0.0

    @property
    def work(self) -> float:
        return self.remaining / max(self.throughput, 1e-12) + self.ahead


@dataclass(frozen=True)
class PoolView:
    """Live capacity per zone, in the unit of :attr:`CarbonJob.throughput` (e.g. reference workers).

    ``reserve`` is the fraction of that capacity a waiting job must leave to work not yet
    submitted: the recent load (see :func:`recent_load`). A job that waits counts only on the
    rest, so that a busy pool holds little back and a loaded one none.
    """

    capacity: Mapping[str, float] = field(default_factory=dict)
    reserve: float = 0.0

    @cached_property
    def key(self) -> tuple[tuple[str, float], ...]:
        share = 1.0 - min(max(self.reserve, 0.0), 0.95)
        return tuple(sorted((z, round(c * share, 6)) for z, c in self.capacity.items() if c > 0))

    @property
    def total(self) -> float:
        return sum(c for _, c in self.key)


def recent_load(work_submitted: float, window: float, capacity: float) -> float:
    """The pool's recent load: capacity-seconds submitted over the last ``window`` seconds (a day
    is a good window) over what the pool could do in that time. The dispatcher passes it as
    :attr:`PoolView.reserve`."""
    if capacity <= 0 or window <= 0:
        return 0.0
    return min(1.0, max(0.0, work_submitted / (capacity * window)))


class CarbonPolicy:
    """The decision, with its caches. One per signal; cheap to call thousands of times a second."""

    def __init__(
        self,
        signal: CarbonSignal,
        margin: float = DEFAULT_MARGIN,
        guard: float = DEFAULT_GUARD,
        horizon: int = DEFAULT_HORIZON,
        cache_size: int = 256,
    ) -> None:
        self.signal = signal
        self.margin = margin
        self.guard = guard
        self.horizon = horizon
        self.cache_size = cache_size
        self._rows: dict[tuple[str, float], np.ndarray] = {}
        self._rows_hour = -1.0
        self._middle: OrderedDict[tuple[object, ...], tuple[list[float], list[float]]] = OrderedDict()

    # -- intensities, cached per zone and hour --------------------------------------------------

    def row(self, zone: str, now: float, hours: int = 0) -> np.ndarray:
        """Forecast intensity of ``zone`` for hour ``k`` from the current one, at least ``hours`` long.

        Past the source's horizon the last forecast day repeats (daily persistence).
        """
        h0 = hour_start(now)
        if h0 != self._rows_hour:
            self._rows.clear()
            self._rows_hour = h0
        row = self._rows.get((zone, h0))
        if row is None:
            row = np.array([r.grams for r in self.signal.forecast(zone, self.horizon)], dtype=float)
            if row.size == 0:
                row = np.array([self.signal.latest(zone).grams])  # type: ignore[union-attr]
            self._rows[(zone, h0)] = row
        if hours > row.size:
            n = row.size
            period = 24 if n >= 24 else 1
            k = np.arange(n, hours)
            extra = row[n - period + (k - n) % period]
            row = np.concatenate([row, extra])
            self._rows[(zone, h0)] = row
        return row

    def intensity(self, zone: str, now: float) -> float:
        return float(self.row(zone, now)[0])

    # -- the decision --------------------------------------------------------------------------

    def may_run(self, job: CarbonJob, zone: str, now: float, pool: PoolView) -> bool:
        end = job.deadline - self.guard
        need = job.work * (1.0 + self.margin)
        if end <= now or need <= 0:
            return True
        mine = self.intensity(zone, now)
        return self.cleaner_capacity(mine, now, end, pool) < need

    def cleaner_capacity(self, intensity: float, now: float, end: float, pool: PoolView) -> float:
        """Capacity-seconds in [now, end) of slots strictly cleaner than ``intensity``."""
        h0 = hour_start(now)
        last = int((end - h0) // HOUR)  # index of the hour that holds the window's end
        first_span = min(end, h0 + HOUR) - now
        last_span = end - (h0 + last * HOUR) if last > 0 else 0.0
        total = 0.0
        for zone, cap in pool.key:
            row = self.row(zone, now, last + 1)
            if row[0] < intensity:
                total += cap * first_span
            if last_span > 0 and row[last] < intensity:
                total += cap * last_span
        if last > 1:
            grams, cumulative = self._middle_slots(h0, last, pool)
            total += cumulative[bisect.bisect_left(grams, intensity)]
        return total

    def _middle_slots(self, h0: float, last: int, pool: PoolView) -> tuple[list[float], list[float]]:
        """Whole hours 1 .. last-1: intensities sorted, and capacity-seconds of the first i of them."""
        key = (h0, last, pool.key)
        got = self._middle.get(key)
        if got is not None:
            self._middle.move_to_end(key)
            return got
        slots: list[tuple[float, float]] = []
        for zone, cap in pool.key:
            row = self.row(zone, h0, last + 1)
            slots.extend((float(g), cap * HOUR) for g in row[1:last])
        slots.sort()
        grams = [g for g, _ in slots]
        cumulative = [0.0]
        for _, c in slots:
            cumulative.append(cumulative[-1] + c)
        self._middle[key] = (grams, cumulative)
        if len(self._middle) > self.cache_size:
            self._middle.popitem(last=False)
        return grams, cumulative


_POLICIES: weakref.WeakKeyDictionary[object, CarbonPolicy] = weakref.WeakKeyDictionary()


def policy_for(signal: CarbonSignal) -> CarbonPolicy:
    """The one cached policy of a signal (its caches shared by every caller)."""
    policy = _POLICIES.get(signal)
    if policy is None:
        policy = _POLICIES[signal] = CarbonPolicy(signal)
    return policy


def may_run(job: CarbonJob, zone: str, now: float, pool: PoolView, signal: CarbonSignal) -> bool:
    """The dispatcher's one call for a carbon-aware job: True when ``zone``'s worker may take a chunk now.

    ``now`` must be the signal's clock time (wall time in a deployment, simulated time in the
    bench). The answer never makes the job miss its deadline while the pool keeps the capacity
    it has (see the module docstring).
    """
    return policy_for(signal).may_run(job, zone, now, pool)


def dispatch_allowed(
    carbon_aware: bool,
    deadline: float | None,
    remaining: float,
    zone: str,
    now: float,
    pool: PoolView,
    signal: CarbonSignal,
    throughput: float = 1.0,
    ahead: float = 0.0,
) -> bool:
    """The gate for the core's dispatcher. A job without ``--carbon-aware`` passes at once, touching
    nothing (dispatch exactly as before); a carbon-aware one asks :func:`may_run`."""
    if not carbon_aware or deadline is None:
        return True
    return may_run(CarbonJob(remaining, deadline, throughput, ahead), zone, now, pool, signal)
