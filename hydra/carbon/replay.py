"""Replay of recorded hourly carbon-intensity traces: the default source, and what tests use.

A trace directory holds CSV files shaped like the Electricity Maps data portal's hourly exports
(one row per UTC hour; columns ``Datetime (UTC)``, ``Zone Id``, ``Carbon Intensity gCO₂eq/kWh
(LCA)`` and ``(direct)``, among others). Any number of zones and hours; the zone comes from the
``Zone Id`` column, else from the file name up to its first ``_``. Missing hours carry the
previous value forward.

The clock is injected: the bench and the tests drive it in simulated time. Outside the recorded
span, time wraps around the trace in whole weeks (whole days for a shorter trace), so that a
deployment replaying a recorded week keeps hour of day and day of week.

``pinned`` (``HYDRA_CARBON_REPLAY_AT``) holds the replay at one recorded hour: whatever the clock
says, the hour in progress reads as that hour and the forecast as the hours recorded after it
(readings are still stamped with the clock's hours, so callers line them up with real time).
Tests and demos get the same grid on every run.

A recorded trace knows the future exactly; ``forecast_error`` (a fraction, e.g. 0.1) adds
deterministic noise that grows with the lead time (full size at 24 h), so that the policy can be
measured with forecasts as imperfect as real ones.
"""

from __future__ import annotations

import csv
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hydra.carbon.signal import HOUR, CarbonSourceError, Kind, Reading, hour_start
from hydra.errors import InvalidInput

WEEK_HOURS = 7 * 24


@dataclass
class Trace:
    """Hourly gCO2eq/kWh per zone, all zones on one hourly grid starting at ``start``."""

    start: float
    values: dict[str, np.ndarray]

    @property
    def zones(self) -> list[str]:
        return sorted(self.values)

    @property
    def hours(self) -> int:
        return min(len(v) for v in self.values.values())

    @property
    def end(self) -> float:
        return self.start + self.hours * HOUR

    def window(self, start: float, hours: int) -> Trace:
        """The same zones cut to ``hours`` hours from ``start`` (an hour boundary inside the trace)."""
        i = int((hour_start(start) - self.start) // HOUR)
        if i < 0 or i + hours > self.hours:
            raise InvalidInput("the requested window is outside the recorded trace")
        return Trace(self.start + i * HOUR, {z: v[i : i + hours].copy() for z, v in self.values.items()})

    def write(self, folder: Path, source: str = "Electricity Maps") -> None:
        """CSV files of the same shape as the ones read (only the columns this module reads)."""
        folder.mkdir(parents=True, exist_ok=True)
        for zone, values in self.values.items():
            with open(folder / f"{zone}_hourly.csv", "w", newline="", encoding="utf-8") as f:
                out = csv.writer(f)
                out.writerow(["Datetime (UTC)", "Zone Id", "Carbon Intensity gCO₂eq/kWh (LCA)", "Data Source"])
                for i, v in enumerate(values):
                    when = datetime.fromtimestamp(self.start + i * HOUR, UTC).strftime("%Y-%m-%d %H:%M:%S")
                    out.writerow([when, zone, f"{v:.2f}", source])


def _column(header: list[str], *wanted: str) -> int | None:
    for want in wanted:
        for i, name in enumerate(header):
            if all(part.lower() in name.lower() for part in want.split("|")):
                return i
    return None


def _parse_time(text: str) -> float:
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def read_csv(path: Path, emission: str = "lca") -> dict[str, dict[float, float]]:
    """{zone: {hour start: grams}} from one file; ``emission`` is ``lca`` or ``direct``."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            raise InvalidInput(f"{path.name}: empty trace file")
        t_col = _column(header, "datetime", "time")
        z_col = _column(header, "zone id")
        other = "direct" if emission == "lca" else "lca"
        g_col = _column(header, f"carbon intensity|{emission}", f"carbon intensity|{other}", "carbon intensity")
        if t_col is None or g_col is None:
            raise InvalidInput(f"{path.name}: no time or carbon intensity column")
        fallback_zone = path.name.split("_")[0].removesuffix(".csv")
        out: dict[str, dict[float, float]] = {}
        for row in rows:
            if len(row) <= max(t_col, g_col) or not row[g_col].strip():
                continue
            zone = row[z_col].strip() if z_col is not None and row[z_col].strip() else fallback_zone
            try:
                out.setdefault(zone, {})[hour_start(_parse_time(row[t_col]))] = float(row[g_col])
            except ValueError as exc:
                raise InvalidInput(f"{path.name}: bad row {row[:3]}: {exc}") from None
    return out


def load_trace(folder: str | Path, emission: str = "lca") -> Trace:
    """Every ``*.csv`` in ``folder``, on one hourly grid (the span all zones share)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise InvalidInput(f"no CSV trace files in {folder}")
    series: dict[str, dict[float, float]] = {}
    for path in files:
        for zone, points in read_csv(path, emission).items():
            series.setdefault(zone, {}).update(points)
    series = {z: p for z, p in series.items() if p}
    if not series:
        raise InvalidInput(f"no carbon intensity rows in {folder}")
    start = max(min(p) for p in series.values())
    end = min(max(p) for p in series.values()) + HOUR
    if end <= start:
        raise InvalidInput(f"the zones in {folder} share no recorded hour")
    n = int((end - start) // HOUR)
    values: dict[str, np.ndarray] = {}
    for zone, points in series.items():
        arr = np.empty(n)
        last = points[min(points)]
        for i in range(n):
            last = points.get(start + i * HOUR, last)
            arr[i] = last
        values[zone] = arr
    return Trace(start, values)


class ReplaySignal:
    """A :class:`~hydra.carbon.signal.CarbonSignal` reading a :class:`Trace` at the clock's time."""

    kind: Kind = "average"

    def __init__(
        self,
        trace: Trace,
        clock: Callable[[], float] = time.time,
        forecast_error: float = 0.0,
        seed: int = 0,
        pinned: float | None = None,
    ) -> None:
        self.trace = trace
        self.clock = clock
        self.pinned = pinned
        self.forecast_error = forecast_error
        self.seed = seed
        self.name = "replay"
        n = trace.hours
        self._period = (n // WEEK_HOURS) * WEEK_HOURS or (n // 24) * 24 or n

    def index(self, t: float) -> int:
        """Row of the trace for time ``t`` (wrapping outside the recorded span)."""
        i = int((t - self.trace.start) // HOUR)
        if 0 <= i < self.trace.hours:
            return i
        return i % self._period

    def value(self, zone: str, t: float) -> float | None:
        series = self.trace.values.get(zone)
        return None if series is None else float(series[self.index(t)])

    def _shift(self, now: float) -> float:
        """Seconds from the clock's time to the trace time read: whole hours, 0 unless pinned."""
        return 0.0 if self.pinned is None else hour_start(self.pinned) - hour_start(now)

    def latest(self, zone: str) -> Reading | None:
        t = self.clock()
        v = self.value(zone, t + self._shift(t))
        return None if v is None else Reading(zone, hour_start(t), v, source="replay")

    def forecast(self, zone: str, hours: int) -> list[Reading]:
        now = hour_start(self.clock())
        series = self.trace.values.get(zone)
        if series is None:
            return []
        shift = self._shift(now)
        idx = [self.index(now + shift + k * HOUR) for k in range(hours)]
        values = series[idx].astype(float)
        if self.forecast_error > 0 and hours > 1:
            rng = np.random.default_rng([self.seed, zlib.crc32(zone.encode()), int((now + shift) // HOUR)])
            lead = np.arange(hours)
            scale = self.forecast_error * np.minimum(1.0, np.sqrt(lead / 24.0))
            values = np.maximum(0.0, values * (1.0 + rng.standard_normal(hours) * scale))
        return [Reading(zone, now + k * HOUR, float(values[k]), source="replay", forecast=k > 0) for k in range(hours)]

    def history(self, zone: str, start: float, end: float) -> list[Reading]:
        if zone not in self.trace.values:
            return []
        first = hour_start(start)
        count = max(0, math.ceil((end - first) / HOUR))
        shift = self._shift(self.clock())
        out = []
        for k in range(count):
            t = first + k * HOUR
            v = self.value(zone, t + shift)
            if v is not None:
                out.append(Reading(zone, t, v, source="replay"))
        return out


def replay_from(folder: str | Path, clock: Callable[[], float] = time.time, **options: object) -> ReplaySignal:
    try:
        trace = load_trace(folder)
    except OSError as exc:
        raise CarbonSourceError(f"cannot read carbon traces in {folder}: {exc}") from None
    return ReplaySignal(trace, clock, **options)  # type: ignore[arg-type]
