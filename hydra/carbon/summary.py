"""CO2 per grid zone for people: a bounded summary of the zone totals, for the page and its events.

Zone names come from workers' hellos, which are untrusted, so the summary has the same size however
many zones were ever billed: the :data:`SHOWN_ZONES` zones with the most CO2, then one row summing
the rest. A stored figure that is not a finite, non-negative number counts as 0 (a hand edit or
another program's write never breaks the page or the monitor that sends this). Cost: one round
trip reading the four zone hashes (one field per zone billed, see :mod:`hydra.keys`).
"""

from __future__ import annotations

import re
from typing import Any

from redis import Redis

from hydra import keys
from hydra.carbon.accounting import ESTIMATE_NOTE, number, shown

SHOWN_ZONES = 16


def _zone(raw: bytes | str) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return re.sub(r"[^A-Za-z0-9_-]", "?", text)[:32] or "unknown"


def _row(zone: str, mg: float, joules: float, measured: float) -> dict[str, Any]:
    # measured: the share of the zone's energy billed at a power its workers measured (RAPL, bounded).
    grams, kwh, share = shown(mg, joules, measured)
    return {"zone": zone, "grams": grams, "kwh": kwh, "measured": share}


def carbon_summary(redis: Redis, limit: int = SHOWN_ZONES) -> dict[str, Any]:
    """CO2, energy, measured share and latest intensity per zone (the ``limit`` zones with the most
    CO2, then ``other``), and the totals; every figure a location-based estimate (``basis``)."""
    pipe = redis.pipeline(transaction=False)
    for key in (keys.CARBON_ZONE, keys.CARBON_ZONE_ENERGY, keys.CARBON_ZONE_RAPL, keys.CARBON_ZONE_INTENSITY):
        pipe.hgetall(key)
    mg, energy, rapl, intensity = pipe.execute()
    totals: dict[str, list[float]] = {}
    for column, values in enumerate((mg, energy, rapl)):
        for field, value in values.items():
            totals.setdefault(_zone(field), [0.0, 0.0, 0.0])[column] += number(value)
    for figures in totals.values():  # no zone measured more energy than it was billed for
        figures[2] = min(figures[2], figures[1])
    latest = {_zone(field): number(value) for field, value in intensity.items()}
    ranked = sorted(totals.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
    rows = []
    for zone, (zone_mg, joules, measured) in ranked[:limit]:
        row = _row(zone, zone_mg, joules, measured)
        row["intensity"] = latest.get(zone) or None  # g/kWh of the zone's last billed chunk
        rows.append(row)
    rest = ranked[limit:]
    if rest:
        summed = [sum(t[i] for _, t in rest) for i in range(3)]
        label = f"other ({len(rest)} zone{'s' if len(rest) > 1 else ''})"  # no hello can name a zone so
        rows.append({**_row(label, *summed), "intensity": None, "other": len(rest)})
    grams, kwh, share = shown(*(sum(t[i] for t in totals.values()) for i in range(3)))
    return {"zones": rows, "grams": grams, "kwh": kwh, "measured": share, "basis": ESTIMATE_NOTE}
