"""Energy and CO2 of every chunk, and their totals per job, volunteer and zone.

A **location-based estimate**: energy = busy seconds × the device's power figure, CO2 = energy ×
the average intensity of the worker's grid zone in that hour (or the marginal one, with a
marginal source: the result says which). Not a measurement of the volunteer's own supply.

Whose seconds. A volunteer's reported ``seconds`` (and its RAPL joules) are untrusted: a volunteer
could understate them to look green. The trusted side charges the busy time *it* observed for the
chunk: from when the chunk could start (its push into the inbox, or the worker's previous result,
whichever is later) to when its result arrived, clipped to ``[0, expected × factor]`` so that a
worker that sat on a chunk is not charged for its idling (:func:`trusted_seconds`). The worker's
own RAPL reading travels in the result (``joules``, ``energy_source``) for display only.

Power figures (``HYDRA_CARBON_WATTS="cpu=65,cuda=250"``, watts per busy worker) are per device kind.

Totals are integers of milligrams so that the Lua ACCEPT script can ``HINCRBY`` them atomically with
the result it accepts. Fields and keys (to live in :mod:`hydra.keys` when merged):

- ``hydra:job:<id>`` (hash) field ``co2_mg``: the job's total;
- ``hydra:carbon:volunteer`` (hash) field ``<user>``: mg per volunteer, all jobs;
- ``hydra:carbon:zone`` (hash) field ``<zone>``: mg per zone; ``hydra:carbon:zone:energy`` (hash)
  field ``<zone>``: joules per zone. These two live as long as the project (a handful of fields).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from hydra.carbon.signal import Reading
from hydra.errors import InvalidInput

DEFAULT_WATTS = {"cpu": 65.0, "cuda": 250.0}
ESTIMATE_NOTE = "location-based estimate: busy time × device power × grid intensity of the worker's zone"
JOB_FIELD = "co2_mg"
VOLUNTEER_TOTALS = "hydra:carbon:volunteer"
ZONE_TOTALS = "hydra:carbon:zone"
ZONE_ENERGY = "hydra:carbon:zone:energy"
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
class ChunkCarbon:
    """What the trusted side records for one accepted chunk."""

    seconds: float
    joules: float
    grams_per_kwh: float
    co2_mg: int
    zone: str
    kind: str  # "average" or "marginal"
    default: bool  # the zone's intensity was unknown: the default stood in

    def fields(self) -> dict[str, str]:
        """Fields for the chunk record (strings, as Redis stores them)."""
        return {
            "co2_mg": str(self.co2_mg),
            "energy_j": f"{self.joules:.3f}",
            "zone": self.zone,
            "intensity": f"{self.grams_per_kwh:.1f}",
            "intensity_kind": self.kind,
            "intensity_default": "1" if self.default else "0",
        }


def chunk_carbon(
    seconds: float, device: str, reading: Reading, watts: Mapping[str, float] = DEFAULT_WATTS
) -> ChunkCarbon:
    """Energy and CO2 of one chunk from trusted busy seconds, the device and the zone's reading."""
    energy = joules(seconds, watts.get(device, watts.get("cpu", DEFAULT_WATTS["cpu"])))
    return ChunkCarbon(
        seconds, energy, reading.grams, co2_mg(energy, reading.grams), reading.zone, reading.kind, reading.default
    )


def add_to_totals(pipe: object, job_key: str, user: str, carbon: ChunkCarbon) -> None:
    """The HINCRBYs for one accepted chunk, on a pipeline (or inside ACCEPT, the same four writes)."""
    zone = carbon.zone or "unknown"
    pipe.hincrby(job_key, JOB_FIELD, carbon.co2_mg)  # type: ignore[attr-defined]
    pipe.hincrby(VOLUNTEER_TOTALS, user, carbon.co2_mg)  # type: ignore[attr-defined]
    pipe.hincrby(ZONE_TOTALS, zone, carbon.co2_mg)  # type: ignore[attr-defined]
    pipe.hincrbyfloat(ZONE_ENERGY, zone, round(carbon.joules, 3))  # type: ignore[attr-defined]


def result_fields(job_record: Mapping[str, str | bytes]) -> dict[str, object]:
    """What ``hydra result --json`` adds: ``co2_grams`` and what the figure is."""
    raw = job_record.get(JOB_FIELD, job_record.get(JOB_FIELD.encode(), 0))  # type: ignore[call-overload]
    mg = int(raw.decode() if isinstance(raw, bytes) else raw or 0)
    return {"co2_grams": mg / 1000.0, "co2_basis": ESTIMATE_NOTE}


def describe(mg: int) -> str:
    """One line for ``hydra result`` and the page."""
    grams = mg / 1000.0
    shown = f"{grams / 1000:.2f} kg" if grams >= 1000 else f"{grams:.3g} g"
    return f"CO2: {shown} ({ESTIMATE_NOTE})"


# -- the worker's own energy, where the hardware tells it ------------------------------------------


def rapl_files() -> list[str]:
    """Readable package-level RAPL counters (``intel-rapl:N``, not their sub-domains)."""
    found = sorted(glob.glob(RAPL_GLOB))
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
        """Fields for the worker's result message (informational: the trusted side does not bill them)."""
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
