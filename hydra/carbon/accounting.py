"""Energy and CO2 of every chunk, and their totals per job, volunteer and zone.

A **location-based estimate**: energy = busy seconds × a power figure, CO2 = energy × the average
intensity of the worker's grid zone in that hour (or the marginal one, with a marginal source: the
result says which). Not a measurement of the volunteer's own supply.

Whose seconds. A volunteer's reported ``seconds`` are untrusted: a volunteer could understate them
to look green. The trusted side charges the busy time *it* observed for the chunk: from when the
chunk could start (its push into the inbox, or the worker's previous result, whichever is later) to
when its result arrived, clipped to ``[0, expected × factor]`` so that a worker that sat on a chunk
is not charged for its idling (:func:`trusted_seconds`).

Whose watts. Power figures are per device kind (``HYDRA_CARBON_WATTS="cpu=65,cuda=250"``, watts per
busy worker). A worker that can read RAPL counters sends ``joules`` and ``energy_source: "rapl"``
measured around its kernel, next to the kernel's ``seconds`` (:func:`measure_energy`). Both are
untrusted, so they are used for one thing only: the worker's *power*, ``joules / seconds``, which
replaces the configured figure after being clamped to ``[0.25 ×, 2 ×]`` that figure
(:func:`billed_watts`). The seconds billed stay the trusted side's own. A lying volunteer can
therefore move its footprint by a bounded factor only (at most 4× lower, 2× higher), and a missing,
malformed or impossible reading (not a finite number, negative joules, no seconds) bills the
configured figure. RAPL counts the whole CPU package, every process on the machine: several workers
on one host each see the others' energy, which the 2 × ceiling also bounds. The job record and the
zone totals keep how many of the billed joules used a measured power (``energy_rapl_j``,
``hydra:carbon:zone:rapl``), so results and the page say how much was measured and how much estimated.

Totals are integer milligrams of CO2 and joules (float), written by one Lua script per accepted
chunk (:func:`add_to_totals`, queued on the collector's pipeline): a total that is not a number
(written by hand, or by something else) counts as 0 instead of failing the collector's write.
Fields and keys (see :mod:`hydra.keys`):

- ``hydra:job:<id>`` (hash) fields ``co2_mg``, ``energy_j``, ``energy_rapl_j``: the job's totals;
- ``hydra:carbon:volunteer`` (hash) field ``<user>``: mg per volunteer, all jobs;
- ``hydra:carbon:zone`` (hash) ``<zone>`` → mg; ``hydra:carbon:zone:energy`` ``<zone>`` → joules,
  ``hydra:carbon:zone:rapl`` ``<zone>`` → joules billed at a measured power,
  ``hydra:carbon:zone:intensity`` ``<zone>`` → g/kWh of the zone's last billed chunk. These live as
  long as the project (one field per zone a result came from, :data:`MAX_ZONES` at most: zones come
  from hellos, so past that a new one is billed as ``unknown``; :mod:`hydra.carbon.summary` reads them).
"""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra import keys
from hydra.errors import InvalidInput

if TYPE_CHECKING:  # workers import this module for their RAPL meter: no signal machinery at start
    from hydra.carbon.signal import Reading

DEFAULT_WATTS = {"cpu": 65.0, "cuda": 250.0}
ESTIMATE_NOTE = (
    "location-based estimate: busy time × device power (configured, or the worker's RAPL reading "
    "within bounds) × grid intensity of the worker's zone"
)
MAX_ZONES = 1000  # grid zones kept apart in the zone totals (Electricity Maps knows about 350)
JOB_FIELD = "co2_mg"
ENERGY_FIELD = "energy_j"
RAPL_ENERGY_FIELD = "energy_rapl_j"
# A worker's measured power counts only within these factors of the configured figure.
MEASURED_FLOOR = 0.25
MEASURED_CEILING = 2.0
RAPL_GLOB = "/sys/class/powercap/intel-rapl:*/energy_uj"


def parse_watts(text: str) -> dict[str, float]:
    """``"cpu=65,cuda=250"`` → {"cpu": 65.0, "cuda": 250.0}, over the defaults."""
    watts = dict(DEFAULT_WATTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, value = part.partition("=")
        try:
            watts[device.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or watts[device.strip()] < 0 or watts[device.strip()] > 5000:
            raise InvalidInput(f"HYDRA_CARBON_WATTS wants device=watts pairs (0 to 5000), got {part!r}")
    return watts


def watts_from_env(env: Mapping[str, str]) -> dict[str, float]:
    return parse_watts(env.get("HYDRA_CARBON_WATTS", ""))


def trusted_seconds(
    assigned_at: float,
    arrived_at: float,
    previous_result_at: float | None,
    expected: float,
    factor: float = 3.0,
) -> float:
    """Busy seconds the trusted side charges for one chunk (see the module docstring)."""
    start = max(assigned_at, previous_result_at or assigned_at)
    return min(max(0.0, arrived_at - start), max(0.0, expected) * factor)


def joules(seconds: float, watts: float) -> float:
    return max(0.0, seconds) * max(0.0, watts)


def co2_mg(energy_joules: float, grams_per_kwh: float) -> int:
    """Integer milligrams of CO2 for this energy at this intensity (kWh = J / 3.6e6)."""
    return round(energy_joules / 3.6e6 * max(0.0, grams_per_kwh) * 1000.0)


@dataclass(frozen=True)
class EnergyClaim:
    """What a worker says its RAPL counters read around the kernel (untrusted: see the module docstring)."""

    joules: float
    seconds: float

    @property
    def watts(self) -> float:
        return self.joules / self.seconds


def _finite(value: Any) -> float | None:
    if type(value) not in (int, float):  # not bool, str, None, list…
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer may have any number of digits
        return None
    return number if math.isfinite(number) else None


def energy_claim(message: Mapping[str, Any]) -> EnergyClaim | None:
    """The worker's measurement from its result message, or None when absent or impossible."""
    if message.get("energy_source") != "rapl":
        return None
    joules, seconds = _finite(message.get("joules")), _finite(message.get("seconds"))
    if joules is None or seconds is None or joules < 0 or seconds <= 0 or not math.isfinite(joules / seconds):
        return None
    return EnergyClaim(joules, seconds)


def billed_watts(configured: float, claim: EnergyClaim | None) -> tuple[float, str]:
    """The power to bill and where it came from: the worker's measured power clamped to
    ``[MEASURED_FLOOR, MEASURED_CEILING] × configured`` (``"rapl"``), else the configured figure
    (``"estimate"``)."""
    if claim is None:
        return configured, "estimate"
    return min(max(claim.watts, configured * MEASURED_FLOOR), configured * MEASURED_CEILING), "rapl"


@dataclass(frozen=True)
class ChunkCarbon:
    """What the trusted side records for one accepted chunk."""

    seconds: float
    joules: float
    grams_per_kwh: float
    co2_mg: int
    zone: str
    kind: str  # "average" or "marginal"
    default: bool  # the zone's intensity was unknown: the default stood in
    source: str = "estimate"  # "rapl": billed at the worker's measured power (bounded)

    def fields(self) -> dict[str, str]:
        """Fields for the chunk record (strings, as Redis stores them)."""
        return {
            "co2_mg": str(self.co2_mg),
            "energy_j": f"{self.joules:.3f}",
            "energy_source": self.source,
            "zone": self.zone,
            "intensity": f"{self.grams_per_kwh:.1f}",
            "intensity_kind": self.kind,
            "intensity_default": "1" if self.default else "0",
        }


def chunk_carbon(
    seconds: float,
    device: str,
    reading: Reading,
    watts: Mapping[str, float] = DEFAULT_WATTS,
    claim: EnergyClaim | None = None,
) -> ChunkCarbon:
    """Energy and CO2 of one chunk from trusted busy seconds, the device's power (or the worker's
    measured power, bounded by it) and the zone's reading."""
    configured = watts.get(device, watts.get("cpu", DEFAULT_WATTS["cpu"]))
    power, source = billed_watts(configured, claim)
    energy = joules(seconds, power)
    return ChunkCarbon(
        seconds,
        energy,
        reading.grams,
        co2_mg(energy, reading.grams),
        reading.zone,
        reading.kind,
        reading.default,
        source,
    )


# Adds to totals that may hold anything: a field that is not a finite number counts as 0, so one
# bad value never fails the collector's write (a plain HINCRBY would: it is tried first, and a field
# it refuses is read as 0 and rewritten). ``add_totals(k, a)``: k holds the keys
# of the job record, the volunteer, zone CO2, zone energy, zone measured energy and zone intensity;
# a holds user, zone, mg, J, measured J, g/kWh. The ACCEPT script (hydra.scripts) calls it, so a
# chunk's CO2 is billed atomically with its acceptance.
LUA = """
local MAX_ZONES = {MAX_ZONES}
local function add_totals(k, a)
  local function num(key, field)
    local v = tonumber(redis.call('HGET', key, field))
    if v == nil or v ~= v or v == math.huge or v == -math.huge then return 0 end
    return v
  end
  local function add(key, field, inc, fmt)
    redis.call('HSET', key, field, string.format(fmt, num(key, field) + inc))
  end
  -- One HINCRBY(FLOAT) where the field holds a number, as it does unless something else wrote it.
  local function incr(command, key, field, inc, fmt)
    local reply = redis.pcall(command, key, field, inc)
    if type(reply) == 'table' and reply.err then add(key, field, tonumber(inc), fmt) end
  end
  local user, zone, mg, j, measured = a[1], a[2], a[3], a[4], a[5]
  -- Zones come from hellos: past MAX_ZONES of them, a new one is billed as unknown.
  if redis.call('HLEN', k[3]) >= MAX_ZONES and redis.call('HEXISTS', k[3], zone) == 0 then zone = 'unknown' end
  incr('HINCRBY', k[1], 'co2_mg', mg, '%d')
  incr('HINCRBYFLOAT', k[1], 'energy_j', j, '%.6f')
  incr('HINCRBY', k[2], user, mg, '%d')
  incr('HINCRBY', k[3], zone, mg, '%d')
  incr('HINCRBYFLOAT', k[4], zone, j, '%.3f')
  if tonumber(measured) > 0 then
    incr('HINCRBYFLOAT', k[1], 'energy_rapl_j', measured, '%.6f')
    incr('HINCRBYFLOAT', k[5], zone, measured, '%.3f')
  end
  redis.call('HSET', k[6], zone, a[6])
end
"""
LUA = LUA.replace("{MAX_ZONES}", str(MAX_ZONES))
_ADD_TOTALS = LUA + "add_totals(KEYS, ARGV)\nreturn 1\n"


def totals_keys(job_key: str) -> list[str]:
    """The keys ``add_totals`` writes for a chunk of the job at ``job_key``, in its order."""
    return [
        job_key,
        keys.CARBON_VOLUNTEER,
        keys.CARBON_ZONE,
        keys.CARBON_ZONE_ENERGY,
        keys.CARBON_ZONE_RAPL,
        keys.CARBON_ZONE_INTENSITY,
    ]


def totals_args(user: str, carbon: ChunkCarbon) -> list[Any]:
    """The arguments of ``add_totals`` for one chunk's CO2, in its order."""
    zone = carbon.zone or "unknown"
    measured = carbon.joules if carbon.source == "rapl" else 0.0
    return [user, zone, carbon.co2_mg, f"{carbon.joules:.6f}", f"{measured:.6f}", f"{carbon.grams_per_kwh:.1f}"]


def add_to_totals(pipe: Any, job_key: str, user: str, carbon: ChunkCarbon) -> None:
    """Queue the totals of one chunk on ``pipe`` (a pipeline, or a client): one Lua call. (The
    collector bills inside ACCEPT instead.)"""
    totals = totals_keys(job_key)
    pipe.eval(_ADD_TOTALS, len(totals), *totals, *totals_args(user, carbon))


def number(raw: object) -> float:
    """A stored total as a number: 0 for anything that is not a finite one (missing, garbage)."""
    try:
        value = float(raw.decode() if isinstance(raw, bytes) else raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, UnicodeDecodeError):
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def _field(record: Mapping[Any, Any], name: str) -> object:
    return record.get(name, record.get(name.encode()))


def shown(mg: float, joules: float, measured_joules: float) -> tuple[float, float, float]:
    """Stored totals as people read them: grams of CO2, kWh, and the share of the energy billed at a
    measured power (never more than all of it)."""
    share = min(measured_joules, joules) / joules if joules > 0 else 0.0
    return round(mg) / 1000.0, joules / 3.6e6, share


def status_fields(job_record: Mapping[Any, Any]) -> dict[str, object]:
    """The job's CO2 and energy so far, for its status (page, ``hydra status``) and result."""
    grams, kwh, share = shown(
        *(number(_field(job_record, name)) for name in (JOB_FIELD, ENERGY_FIELD, RAPL_ENERGY_FIELD))
    )
    return {"co2_grams": grams, "energy_kwh": kwh, "energy_measured": share}


def result_fields(job_record: Mapping[Any, Any]) -> dict[str, object]:
    """What ``hydra result --json`` adds: ``co2_grams``, energy, the share of it measured (RAPL)
    rather than estimated, and what the figure is."""
    return {**status_fields(job_record), "co2_basis": ESTIMATE_NOTE}


def describe(mg: int) -> str:
    """One line for ``hydra result`` and the page."""
    grams = mg / 1000.0
    shown = f"{grams / 1000:.2f} kg" if grams >= 1000 else f"{grams:.3g} g"
    return f"CO2: {shown} ({ESTIMATE_NOTE})"


# -- the worker's own energy, where the hardware tells it ------------------------------------------


def rapl_files(pattern: str | None = None) -> list[str]:
    """Readable package-level RAPL counters (``intel-rapl:N``, not their sub-domains), matching
    ``pattern``, else ``HYDRA_RAPL_GLOB``, else the kernel's powercap files."""
    found = sorted(glob.glob(pattern or os.environ.get("HYDRA_RAPL_GLOB") or RAPL_GLOB))
    return [p for p in found if os.path.basename(os.path.dirname(p)).count(":") == 1 and os.access(p, os.R_OK)]


def _read_uj(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _wrap(path: str) -> int:
    value = _read_uj(os.path.join(os.path.dirname(path), "max_energy_range_uj"))
    return value or 2**32


@dataclass
class EnergyMeter:
    seconds: float = 0.0
    joules: float | None = None  # None where no counter was readable
    source: str = "none"

    def result_fields(self) -> dict[str, object]:
        """Fields for the worker's result message (the trusted side bills at most a bounded power from them)."""
        if self.joules is None:
            return {}
        return {"joules": round(self.joules, 3), "energy_source": self.source}


@contextmanager
def measure_energy(files: list[str] | None = None) -> Iterator[EnergyMeter]:
    """Around a kernel: wall seconds and, where RAPL is readable, package joules (whole package:
    other processes on the machine count too). Never fails: no counter, no joules."""
    files = rapl_files() if files is None else files
    before = {p: _read_uj(p) for p in files}
    meter = EnergyMeter()
    t0 = time.perf_counter()
    try:
        yield meter
    finally:
        meter.seconds = time.perf_counter() - t0
        total = 0
        read_any = False
        for path, start in before.items():
            end = _read_uj(path)
            if start is None or end is None:
                continue
            delta = end - start
            total += delta if delta >= 0 else delta + _wrap(path)
            read_any = True
        if read_any:
            meter.joules = total / 1e6
            meter.source = "rapl"
