"""Grid carbon intensity behind one small interface, and the guard that keeps dispatch unblocked.

A source answers three questions about a grid zone (Electricity Maps zone ids: ``ES``, ``NO``,
``US-CAL-CISO``, ``GB``), hour by hour, in gCO2eq/kWh:

- ``latest(zone)``: the reading for the hour in progress;
- ``forecast(zone, hours)``: one reading per hour from the current one on;
- ``history(zone, start, end)``: recorded hours in ``[start, end)`` (epoch seconds).

Each :class:`Reading` says whether it is an *average* (location-based, what Electricity Maps, the
UK API and recorded traces give) or a *marginal* signal (WattTime's MOER). The two are never mixed:
one deployment uses one source, and :func:`check_same_kind` refuses a comparison across kinds.

:class:`GuardedSignal` wraps any source for the dispatcher: every question is answered within a
time limit, from a per-zone, per-hour cache; a source that is slow or down yields the last known
value, then the configured default (``HYDRA_CARBON_DEFAULT``, 400 g/kWh), flagged ``default=True``
so that pages and results can say the figure is a stand-in. It never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from hydra.errors import HydraError

log = logging.getLogger(__name__)

HOUR = 3600
DEFAULT_INTENSITY = 400.0
Kind = Literal["average", "marginal"]


class CarbonSourceError(HydraError):
    """A carbon-intensity source could not answer (unreachable, refused, malformed reply)."""


@dataclass(frozen=True)
class Reading:
    zone: str
    start: float  # epoch seconds of the hour's start (UTC)
    grams: float  # gCO2eq per kWh
    kind: Kind = "average"
    source: str = ""
    # True when no source knew this zone and hour: the configured default stands in.
    default: bool = False
    # True when the value is a forecast rather than a measurement.
    forecast: bool = False


class CarbonSignal(Protocol):
    """What every source provides. ``kind`` is fixed per source."""

    kind: Kind
    name: str

    def latest(self, zone: str) -> Reading | None: ...

    def forecast(self, zone: str, hours: int) -> list[Reading]: ...

    def history(self, zone: str, start: float, end: float) -> list[Reading]: ...


def hour_start(t: float) -> float:
    return float(int(t // HOUR) * HOUR)


def check_same_kind(readings: list[Reading]) -> None:
    kinds = {r.kind for r in readings if not r.default}
    if len(kinds) > 1:
        raise CarbonSourceError("average and marginal carbon signals cannot be compared")


def hourly(readings: list[Reading]) -> list[Reading]:
    """Readings at any step (the UK API's half hours) averaged into whole hours, in order."""
    groups: dict[float, list[Reading]] = {}
    for r in readings:
        groups.setdefault(hour_start(r.start), []).append(r)
    return [replace(rs[0], start=h, grams=sum(r.grams for r in rs) / len(rs)) for h, rs in sorted(groups.items())]


# What _ask returns when the source did not answer (down, failed or slow), unlike None: no reading.
_FAILED = object()
# Zones remembered as having no reading this hour; zone names come from volunteers, so bounded.
MAX_ABSENT = 10_000


class GuardedSignal:
    """Any source, made safe to ask from the dispatcher: bounded time, cache, last known, default.

    ``clock`` is injectable so that the bench and the tests run in simulated time. Questions the
    source has not answered within ``timeout`` go on in a background thread; their answer lands in
    the cache for the next caller. After a failure the source is left alone for ``retry_after``
    seconds, so that a dead source costs nothing on the dispatch path.
    """

    def __init__(
        self,
        source: CarbonSignal,
        default: float = DEFAULT_INTENSITY,
        timeout: float = 2.0,
        retry_after: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.kind: Kind = source.kind
        self.name = source.name
        self.default = default
        self.timeout = timeout
        self.retry_after = retry_after
        self.clock = clock
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, float], Reading] = {}
        self._absent: set[tuple[str, float]] = set()  # the source answered: no reading this hour
        self._last_known: dict[str, Reading] = {}
        self._forecasts: dict[tuple[str, float], list[Reading]] = {}
        self._pending: dict[tuple[str, str, float], Future[object]] = {}
        self._down_until = 0.0
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hydra-carbon")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the interface -----------------------------------------------------------------------

    def latest(self, zone: str) -> Reading:
        hour = hour_start(self.clock())
        key = (zone, hour)
        cached = self._latest.get(key)
        if cached is not None:
            return cached
        got = _FAILED if key in self._absent else self._ask("latest", zone, hour, lambda: self.source.latest(zone))
        if isinstance(got, Reading):
            got = replace(got, start=hour)
            with self._lock:
                self._latest[key] = got
                self._last_known[zone] = got
            return got
        if got is None:  # asked once an hour, not once a result (a volunteer need not say its zone)
            with self._lock:
                if len(self._absent) >= MAX_ABSENT:
                    self._absent.clear()
                self._absent.add(key)
        known = self._last_known.get(zone)
        if known is not None:
            return replace(known, start=hour)
        return self.fallback(zone, hour)

    def forecast(self, zone: str, hours: int) -> list[Reading]:
        """Always ``hours`` readings from the current hour; gaps filled with the last value known."""
        hour = hour_start(self.clock())
        cached = self._forecasts.get((zone, hour))
        if cached is None:
            got = self._ask("forecast", zone, hour, lambda: self.source.forecast(zone, hours))
            if isinstance(got, list) and got:
                cached = got
                with self._lock:
                    self._forecasts[(zone, hour)] = got
        by_hour = {hour_start(r.start): r for r in cached or []}
        first = by_hour.get(hour) or self.latest(zone)
        out = [replace(first, start=hour)]
        for i in range(1, hours):
            h = hour + i * HOUR
            out.append(by_hour.get(h) or replace(out[-1], start=h, forecast=True))
        return out

    def history(self, zone: str, start: float, end: float) -> list[Reading]:
        got = self._ask("history", zone, start, lambda: self.source.history(zone, start, end), wait=True)
        return got if isinstance(got, list) else []

    def fallback(self, zone: str, hour: float) -> Reading:
        return Reading(zone, hour, self.default, self.kind, source="default", default=True)

    # -- bounded asking ----------------------------------------------------------------------

    def _ask(self, what: str, zone: str, hour: float, call: Callable[[], object], wait: bool = False) -> object:
        now = time.monotonic()
        if now < self._down_until:
            return _FAILED
        key = (what, zone, hour)
        with self._lock:
            future = self._pending.get(key)
            if future is None:
                future = self._pool.submit(call)
                self._pending[key] = future
        try:
            value = future.result(timeout=self.timeout)
        except TimeoutError:
            # Still running: it may fill the cache later; this caller moves on.
            log.warning("carbon source %s: no answer for %s %s within %.1fs", self.name, what, zone, self.timeout)
            self._down_until = time.monotonic() + self.retry_after
            return _FAILED
        except Exception as exc:  # a source that fails must never break dispatch
            log.warning("carbon source %s: %s %s failed: %s", self.name, what, zone, exc)
            self._down_until = time.monotonic() + self.retry_after
            value = _FAILED
        with self._lock:
            self._pending.pop(key, None)
        return value
