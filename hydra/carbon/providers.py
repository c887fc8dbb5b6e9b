"""The live carbon-intensity sources, and the factory that picks one from settings.

- :class:`UKGrid`: the UK National Grid ESO Carbon Intensity API (no key). Zone ``GB`` is the
  national figure (``/intensity``); ``GB-<regionid>`` (1 to 17) a region (``/regional``).
  Half-hourly values are averaged into hours. Average, location-based.
- :class:`ElectricityMaps`: Electricity Maps API v3 (``auth-token`` header),
  ``/carbon-intensity/latest|forecast|history|past-range``. Average (lifecycle) figures.
- :class:`WattTime`: WattTime API v3, ``co2_moer`` (a *marginal* signal, never mixed with
  average ones), bearer token from ``/login`` with basic auth. Values in lbs/MWh are converted to
  g/kWh. Zones map to WattTime regions (``US-CAL-CISO`` → ``CAISO_NORTH``, or
  ``HYDRA_CARBON_REGIONS="ZONE=REGION,..."``).

Each source raises :class:`~hydra.carbon.signal.CarbonSourceError` when it cannot answer, and
waits at most ``timeout`` seconds per request; :class:`~hydra.carbon.signal.GuardedSignal` turns
that into last known value, then default. Settings (read in :func:`carbon_settings`):
``HYDRA_CARBON_SOURCE`` = ``replay:DIR`` (default: the recorded week shipped in
``hydra/carbon/traces``) | ``ukgrid`` | ``electricitymaps`` | ``watttime``; ``HYDRA_CARBON_TOKEN``
(Electricity Maps token; WattTime ``user:password`` or a bearer token); ``HYDRA_CARBON_URL``
(another base URL, e.g. a proxy or a test server); ``HYDRA_CARBON_DEFAULT`` (g/kWh for unknown
zones, 400); ``HYDRA_CARBON_TIMEOUT`` (seconds, 2); ``HYDRA_CARBON_REPLAY_AT`` (an ISO time such
as ``2022-03-07T06:00Z``: the replay source holds at that recorded hour, whatever the time, for
tests and demos that need the same grid every run; deadlines and busy time follow the real clock).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra.carbon.signal import (
    DEFAULT_INTENSITY,
    HOUR,
    CarbonSignal,
    CarbonSourceError,
    GuardedSignal,
    Kind,
    Reading,
    hour_start,
    hourly,
)
from hydra.errors import InvalidInput

SHIPPED_TRACES = Path(__file__).parent / "traces"
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
WATTTIME_REGIONS = {"US-CAL-CISO": "CAISO_NORTH"}
SOURCES = ("replay", "ukgrid", "electricitymaps", "watttime")


def _get_json(url: str, headers: Mapping[str, str], timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        exc.close()
        raise CarbonSourceError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CarbonSourceError(f"{url}: {exc}") from None
    except ValueError as exc:
        raise CarbonSourceError(f"{url}: not JSON: {exc}") from None


def _when(text: str) -> float:
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _iso(t: float, seconds: bool = True) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ" if seconds else "%Y-%m-%dT%H:%MZ")


def _within(readings: list[Reading], start: float, end: float) -> list[Reading]:
    return [r for r in readings if start <= r.start < end]


class UKGrid:
    kind: Kind = "average"
    name = "ukgrid"

    def __init__(self, base: str = "https://api.carbonintensity.org.uk", timeout: float = 2.0, clock=time.time):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.clock = clock

    def _region(self, zone: str) -> int | None:
        if zone == "GB":
            return None
        prefix, _, number = zone.partition("-")
        if prefix != "GB" or not number.isdigit() or not 1 <= int(number) <= 17:
            raise CarbonSourceError(f"the UK Carbon Intensity API does not cover zone {zone!r}")
        return int(number)

    def _points(self, rows: list[dict[str, Any]], zone: str) -> list[Reading]:
        out = []
        for row in rows:
            intensity = row.get("intensity") or {}
            value = intensity.get("actual")
            value = intensity.get("forecast") if value is None else value
            if value is not None:
                out.append(Reading(zone, _when(row["from"]), float(value), source=self.name))
        return hourly(out)

    def _regional_rows(self, path: str) -> list[dict[str, Any]]:
        data = _get_json(f"{self.base}{path}", {}, self.timeout).get("data")
        region = data[0] if isinstance(data, list) else data
        return region.get("data", []) if isinstance(region, dict) else []

    def latest(self, zone: str) -> Reading | None:
        region = self._region(zone)
        if region is None:
            rows = _get_json(f"{self.base}/intensity", {}, self.timeout).get("data", [])
            points = self._points(rows, zone)
        else:
            blocks = _get_json(f"{self.base}/regional", {}, self.timeout).get("data", [])
            regions = blocks[0].get("regions", []) if blocks else []
            rows = [
                {"from": blocks[0]["from"], "intensity": r.get("intensity", {})}
                for r in regions
                if r.get("regionid") == region
            ]
            points = self._points(rows, zone)
        return points[0] if points else None

    def forecast(self, zone: str, hours: int) -> list[Reading]:
        now = _iso(hour_start(self.clock()), seconds=False)
        horizon = "fw48h" if hours > 24 else "fw24h"
        region = self._region(zone)
        if region is None:
            rows = _get_json(f"{self.base}/intensity/{now}/{horizon}", {}, self.timeout).get("data", [])
        else:
            rows = self._regional_rows(f"/regional/intensity/{now}/{horizon}/regionid/{region}")
        return [r for r in self._points(rows, zone) if r.start >= hour_start(self.clock())][:hours]

    def history(self, zone: str, start: float, end: float) -> list[Reading]:
        span = f"{_iso(start, False)}/{_iso(end, False)}"
        region = self._region(zone)
        if region is None:
            rows = _get_json(f"{self.base}/intensity/{span}", {}, self.timeout).get("data", [])
        else:
            rows = self._regional_rows(f"/regional/intensity/{span}/regionid/{region}")
        return _within(self._points(rows, zone), start, end)


class ElectricityMaps:
    kind: Kind = "average"
    name = "electricitymaps"

    def __init__(
        self, token: str, base: str = "https://api.electricitymap.org/v3", timeout: float = 2.0, clock=time.time
    ):
        if not token:
            raise InvalidInput("Electricity Maps needs HYDRA_CARBON_TOKEN")
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.clock = clock

    def _get(self, path: str, **query: str) -> Any:
        url = f"{self.base}/carbon-intensity/{path}?{urllib.parse.urlencode(query)}"
        return _get_json(url, {"auth-token": self.token}, self.timeout)

    def _points(self, rows: list[dict[str, Any]], zone: str, forecast: bool = False) -> list[Reading]:
        return hourly(
            [
                Reading(zone, _when(r["datetime"]), float(r["carbonIntensity"]), source=self.name, forecast=forecast)
                for r in rows
                if r.get("carbonIntensity") is not None
            ]
        )

    def latest(self, zone: str) -> Reading | None:
        points = self._points([self._get("latest", zone=zone)], zone)
        return points[0] if points else None

    def forecast(self, zone: str, hours: int) -> list[Reading]:
        points = self._points(self._get("forecast", zone=zone).get("forecast", []), zone, forecast=True)
        return [r for r in points if r.start >= hour_start(self.clock())][:hours]

    def history(self, zone: str, start: float, end: float) -> list[Reading]:
        if start >= self.clock() - 24 * HOUR:
            rows = self._get("history", zone=zone).get("history", [])
        else:
            rows = self._get("past-range", zone=zone, start=_iso(start), end=_iso(end)).get("data", [])
        return _within(self._points(rows, zone), start, end)


class WattTime:
    kind: Kind = "marginal"
    name = "watttime"

    def __init__(
        self,
        token: str,
        base: str = "https://api.watttime.org",
        timeout: float = 2.0,
        regions: Mapping[str, str] | None = None,
        clock=time.time,
    ):
        if not token:
            raise InvalidInput("WattTime needs HYDRA_CARBON_TOKEN (user:password, or a bearer token)")
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.regions = {**WATTTIME_REGIONS, **(regions or {})}
        self.clock = clock
        self._login = token if ":" in token else None
        self._bearer = None if self._login else token

    def _token(self, renew: bool = False) -> str:
        if self._login is not None and (renew or self._bearer is None):
            basic = base64.b64encode(self._login.encode()).decode()
            self._bearer = _get_json(f"{self.base}/login", {"Authorization": f"Basic {basic}"}, self.timeout)["token"]
        assert self._bearer is not None
        return self._bearer

    def _get(self, path: str, **query: Any) -> Any:
        url = f"{self.base}/v3/{path}?{urllib.parse.urlencode(query)}"
        try:
            return _get_json(url, {"Authorization": f"Bearer {self._token()}"}, self.timeout)
        except CarbonSourceError as exc:
            if "HTTP 401" not in str(exc) or self._login is None:
                raise
            return _get_json(url, {"Authorization": f"Bearer {self._token(renew=True)}"}, self.timeout)

    def _points(self, reply: Mapping[str, Any], zone: str, forecast: bool = False) -> list[Reading]:
        units = (reply.get("meta") or {}).get("units", "lbs_co2_per_mwh")
        if units != "lbs_co2_per_mwh":
            raise CarbonSourceError(f"WattTime answered in {units!r}, not lbs_co2_per_mwh")
        return hourly(
            [
                Reading(
                    zone,
                    _when(p["point_time"]),
                    float(p["value"]) * LBS_PER_MWH_TO_G_PER_KWH,
                    kind="marginal",
                    source=self.name,
                    forecast=forecast,
                )
                for p in reply.get("data", [])
                if p.get("value") is not None
            ]
        )

    def _query(self, zone: str) -> dict[str, str]:
        return {"region": self.regions.get(zone, zone), "signal_type": "co2_moer"}

    def latest(self, zone: str) -> Reading | None:
        points = self._points(self._get("forecast", horizon_hours=1, **self._query(zone)), zone)
        return points[0] if points else None

    def forecast(self, zone: str, hours: int) -> list[Reading]:
        reply = self._get("forecast", horizon_hours=min(72, max(1, hours)), **self._query(zone))
        return [r for r in self._points(reply, zone, True) if r.start >= hour_start(self.clock())][:hours]

    def history(self, zone: str, start: float, end: float) -> list[Reading]:
        reply = self._get("historical", start=_iso(start), end=_iso(end), **self._query(zone))
        return _within(self._points(reply, zone), start, end)


# -- settings and factory -------------------------------------------------------------------------


@dataclass(frozen=True)
class CarbonSettings:
    source: str = "replay"
    token: str = ""
    url: str = ""
    default: float = DEFAULT_INTENSITY
    timeout: float = 2.0
    regions: str = ""
    replay_at: float | None = None  # epoch seconds: a replay held at that recorded hour


def carbon_settings(env: Mapping[str, str]) -> CarbonSettings:
    """``HYDRA_CARBON_*`` variables; one-line errors for bad values."""
    try:
        default = float(env.get("HYDRA_CARBON_DEFAULT") or DEFAULT_INTENSITY)
        timeout = float(env.get("HYDRA_CARBON_TIMEOUT") or 2.0)
    except ValueError as exc:
        raise InvalidInput(f"HYDRA_CARBON_DEFAULT and HYDRA_CARBON_TIMEOUT are numbers: {exc}") from None
    if not 0 <= default <= 5000 or not 0 < timeout <= 60:
        raise InvalidInput("HYDRA_CARBON_DEFAULT must be in [0, 5000] g/kWh and HYDRA_CARBON_TIMEOUT in (0, 60] s")
    replay_at = None
    if env.get("HYDRA_CARBON_REPLAY_AT"):
        try:
            replay_at = _when(env["HYDRA_CARBON_REPLAY_AT"].strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"HYDRA_CARBON_REPLAY_AT must be an ISO time such as 2022-03-07T06:00Z, "
                f"got {env['HYDRA_CARBON_REPLAY_AT'][:40]!r}"
            ) from None
    source = env.get("HYDRA_CARBON_SOURCE") or "replay"
    if source.partition(":")[0] not in SOURCES:
        raise InvalidInput(
            f"HYDRA_CARBON_SOURCE must be replay[:DIR], ukgrid, electricitymaps or watttime, got {source!r}"
        )
    return CarbonSettings(
        source=source,
        token=env.get("HYDRA_CARBON_TOKEN", ""),
        url=env.get("HYDRA_CARBON_URL", ""),
        default=default,
        timeout=timeout,
        regions=env.get("HYDRA_CARBON_REGIONS", ""),
        replay_at=replay_at,
    )


def make_source(settings: CarbonSettings, clock: Callable[[], float] = time.time) -> CarbonSignal:
    from hydra.carbon.replay import replay_from

    kind, _, arg = settings.source.partition(":")
    extra = {"base": settings.url} if settings.url else {}
    if kind == "replay":
        return replay_from(arg or SHIPPED_TRACES, clock, pinned=settings.replay_at)
    if kind == "ukgrid":
        return UKGrid(timeout=settings.timeout, clock=clock, **extra)
    if kind == "electricitymaps":
        return ElectricityMaps(settings.token, timeout=settings.timeout, clock=clock, **extra)
    if kind == "watttime":
        regions = dict(p.split("=", 1) for p in settings.regions.split(",") if "=" in p)
        return WattTime(settings.token, timeout=settings.timeout, regions=regions, clock=clock, **extra)
    raise InvalidInput(
        f"HYDRA_CARBON_SOURCE must be replay[:DIR], ukgrid, electricitymaps or watttime, got {settings.source!r}"
    )


def signal_from_env(env: Mapping[str, str], clock: Callable[[], float] = time.time) -> GuardedSignal:
    """The guarded signal the trusted side uses: one source, bounded waits, default for the unknown."""
    settings = carbon_settings(env)
    return GuardedSignal(make_source(settings, clock), settings.default, settings.timeout, clock=clock)
