"""Carbon-aware dispatch: sources (replay and each HTTP API against a local server in its documented
shape), the guard against slow sources, the policy (never a missed deadline), accounting, options
and the bench."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import fakeredis
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydra import keys
from hydra.carbon import accounting, options
from hydra.carbon.policy import CarbonJob, CarbonPolicy, PoolView, dispatch_allowed, may_run
from hydra.carbon.providers import (
    ElectricityMaps,
    UKGrid,
    WattTime,
    carbon_settings,
    make_source,
    signal_from_env,
)
from hydra.carbon.replay import ReplaySignal, Trace, load_trace
from hydra.carbon.signal import HOUR, CarbonSourceError, GuardedSignal, Reading, check_same_kind
from hydra.errors import InvalidInput

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2022, 3, 7, tzinfo=UTC).timestamp()
HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,Data Source,"
    "Data Estimated,Data Estimation Method"
)


def iso(t: float, fmt: str = "%Y-%m-%dT%H:%MZ") -> str:
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def write_csv(folder: Path, zone: str, lca: list[float], start: float = T0) -> None:
    rows = [HEADER]
    for i, v in enumerate(lca):
        when = datetime.fromtimestamp(start + i * HOUR, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(f"{when},X,{zone},{zone},{v * 0.8:.2f},{v:.2f},50,40,test,false,")
    (folder / f"{zone}_2022_hourly.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- replay ----------------------------------------------------------------------------------------


def test_replay_reads_the_lca_column_and_answers_latest_forecast_history(tmp_path: Path) -> None:
    write_csv(tmp_path, "ES", [100.0 + i for i in range(48)])
    write_csv(tmp_path, "NO", [30.0] * 48)
    clock = Clock(T0 + 5 * HOUR + 120)
    signal = ReplaySignal(load_trace(tmp_path), clock)
    latest = signal.latest("ES")
    assert latest is not None and latest.grams == 105.0 and latest.start == T0 + 5 * HOUR
    assert latest.kind == "average" and not latest.default
    assert [r.grams for r in signal.forecast("ES", 3)] == [105.0, 106.0, 107.0]
    assert [r.grams for r in signal.history("ES", T0, T0 + 3 * HOUR)] == [100.0, 101.0, 102.0]
    assert signal.latest("XX") is None and signal.forecast("XX", 2) == []
    clock.t = T0 + 48 * HOUR + 60  # past the recorded span: wraps by whole days
    assert signal.latest("ES").grams == 100.0  # type: ignore[union-attr]


def test_replay_fills_missing_hours_and_refuses_a_folder_without_traces(tmp_path: Path) -> None:
    write_csv(tmp_path, "ES", [10.0, 20.0, 30.0])
    lines = (tmp_path / "ES_2022_hourly.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "ES_2022_hourly.csv").write_text("\n".join(lines[:2] + lines[3:]) + "\n", encoding="utf-8")
    assert list(load_trace(tmp_path).values["ES"]) == [10.0, 10.0, 30.0]
    with pytest.raises(InvalidInput, match="no CSV"):
        load_trace(tmp_path / "nothing")


def test_a_pinned_replay_reads_the_same_recorded_hours_whatever_the_clock(tmp_path: Path) -> None:
    write_csv(tmp_path, "ES", [100.0 + i for i in range(48)])
    clock = Clock(T0 + 1000 * HOUR + 120)  # far outside the trace
    pinned = ReplaySignal(load_trace(tmp_path), clock, pinned=T0 + 5 * HOUR + 1800)
    latest = pinned.latest("ES")
    assert latest is not None and latest.grams == 105.0 and latest.start == T0 + 1000 * HOUR
    assert [(r.grams, r.start - T0) for r in pinned.forecast("ES", 3)] == [
        (105.0, 1000 * HOUR),
        (106.0, 1001 * HOUR),
        (107.0, 1002 * HOUR),
    ]
    clock.t += 7 * HOUR  # hours pass: the replay stays where it was pinned
    assert pinned.latest("ES").grams == 105.0  # type: ignore[union-attr]
    assert [r.grams for r in pinned.history("ES", clock.t - 2 * HOUR, clock.t)] == [103.0, 104.0, 105.0]
    env = {"HYDRA_CARBON_SOURCE": f"replay:{tmp_path}", "HYDRA_CARBON_REPLAY_AT": "2022-03-07T02:00Z"}
    assert carbon_settings(env).replay_at == T0 + 2 * HOUR
    guarded = signal_from_env(env)  # the real clock, years after the trace
    try:
        assert [r.grams for r in guarded.forecast("ES", 3)] == [102.0, 103.0, 104.0]
    finally:
        guarded.close()
    with pytest.raises(InvalidInput, match="HYDRA_CARBON_REPLAY_AT"):
        carbon_settings({"HYDRA_CARBON_REPLAY_AT": "soon"})


def test_forecast_error_is_deterministic_and_grows_with_lead_time(tmp_path: Path) -> None:
    write_csv(tmp_path, "ES", [200.0] * 72)
    exact = ReplaySignal(load_trace(tmp_path), Clock(), forecast_error=0.0).forecast("ES", 48)
    noisy = ReplaySignal(load_trace(tmp_path), Clock(), forecast_error=0.2, seed=3).forecast("ES", 48)
    again = ReplaySignal(load_trace(tmp_path), Clock(), forecast_error=0.2, seed=3).forecast("ES", 48)
    assert [r.grams for r in noisy] == [r.grams for r in again]
    assert noisy[0].grams == 200.0 and all(r.grams == 200.0 for r in exact)
    assert np.std([r.grams for r in noisy[24:]]) > np.std([r.grams for r in noisy[1:4]])


def test_shipped_traces_load_and_carry_the_attribution() -> None:
    from hydra.carbon.providers import SHIPPED_TRACES

    trace = load_trace(SHIPPED_TRACES)
    assert trace.hours >= 7 * 24 and {"ES", "NO", "US-CAL-CISO"} <= set(trace.zones)
    assert "Electricity Maps" in (SHIPPED_TRACES / "README.md").read_text(encoding="utf-8")


# -- a local HTTP server answering in each API's documented shape -----------------------------------


class FakeAPI:
    """Routes ``path`` → handler(query, headers) → (status, JSON); ``delay`` holds every answer."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict[str, list[str]], Any], tuple[int, Any]]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        self.release.set()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                api.requests.append((url.path, {k.lower(): v for k, v in self.headers.items()}))
                api.release.wait(10)
                route = api.routes.get(url.path)
                status, body = route(parse_qs(url.query), self.headers) if route else (404, {"error": "no"})
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = FakeAPI()
    yield server
    server.close()


def half_hours(start: float, values: list[float], regional: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, v in enumerate(values):
        intensity = (
            {"forecast": v, "index": "moderate"} if regional else {"forecast": v, "actual": v - 1, "index": "low"}
        )
        row = {"from": iso(start + i * 1800), "to": iso(start + (i + 1) * 1800), "intensity": intensity}
        if regional:
            row["generationmix"] = [{"fuel": "wind", "perc": 40.0}, {"fuel": "gas", "perc": 60.0}]
        out.append(row)
    return out


def test_uk_national_grid_national_and_regional(api: FakeAPI) -> None:
    now = T0 + 3 * HOUR
    api.routes["/intensity"] = lambda q, h: (200, {"data": half_hours(now, [201.0])})
    api.routes[f"/intensity/{iso(now)}/fw24h"] = lambda q, h: (200, {"data": half_hours(now, [100, 120, 200, 220])})
    api.routes[f"/intensity/{iso(T0)}/{iso(T0 + 2 * HOUR)}"] = lambda q, h: (
        200,
        {"data": half_hours(T0, [51, 53, 61, 63])},
    )
    regions = [
        {
            "regionid": r,
            "dnoregion": "Scottish Hydro Electric Power Distribution" if r == 1 else "UKPN South East",
            "shortname": "North Scotland" if r == 1 else "South East England",
            "intensity": {"forecast": 12 if r == 1 else 180, "index": "very low"},
            "generationmix": [{"fuel": "wind", "perc": 80.0}],
        }
        for r in (1, 14)
    ]
    api.routes["/regional"] = lambda q, h: (
        200,
        {"data": [{"from": iso(now), "to": iso(now + 1800), "regions": regions}]},
    )
    regional = {"regionid": 1, "dnoregion": "x", "shortname": "North Scotland"}
    api.routes[f"/regional/intensity/{iso(now)}/fw24h/regionid/1"] = lambda q, h: (
        200,
        {"data": {**regional, "data": half_hours(now, [10, 20, 30, 40], regional=True)}},
    )
    uk = UKGrid(api.url, timeout=2, clock=Clock(now + 60))
    latest = uk.latest("GB")
    assert latest is not None and latest.grams == 200.0 and latest.start == now  # "actual" over "forecast"
    assert [r.grams for r in uk.forecast("GB", 2)] == [109.0, 209.0]  # half hours averaged into hours
    assert [r.grams for r in uk.history("GB", T0, T0 + 2 * HOUR)] == [51.0, 61.0]
    assert uk.latest("GB-1").grams == 12.0  # type: ignore[union-attr]
    assert uk.latest("GB-14").grams == 180.0  # type: ignore[union-attr]
    assert [r.grams for r in uk.forecast("GB-1", 2)] == [15.0, 35.0]
    with pytest.raises(CarbonSourceError, match="does not cover"):
        uk.latest("ES")


def test_electricity_maps_v3_with_its_token(api: FakeAPI) -> None:
    now = T0 + 10 * HOUR

    def authed(body: Any) -> Callable[[dict[str, list[str]], Any], tuple[int, Any]]:
        return lambda q, h: (200, body(q)) if h.get("auth-token") == "secret" else (401, {"message": "bad token"})

    api.routes["/v3/carbon-intensity/latest"] = authed(
        lambda q: {
            "zone": q["zone"][0],
            "carbonIntensity": 302,
            "datetime": iso(now, "%Y-%m-%dT%H:%M:%S.000Z"),
            "updatedAt": iso(now + 900, "%Y-%m-%dT%H:%M:%S.000Z"),
            "createdAt": iso(now - 900, "%Y-%m-%dT%H:%M:%S.000Z"),
            "emissionFactorType": "lifecycle",
            "isEstimated": False,
            "estimationMethod": None,
        }
    )
    api.routes["/v3/carbon-intensity/forecast"] = authed(
        lambda q: {
            "zone": q["zone"][0],
            "forecast": [
                {"carbonIntensity": 300 - 10 * k, "datetime": iso(now + k * HOUR, "%Y-%m-%dT%H:%M:%S.000Z")}
                for k in range(24)
            ],
            "updatedAt": iso(now, "%Y-%m-%dT%H:%M:%S.000Z"),
        }
    )
    api.routes["/v3/carbon-intensity/history"] = authed(
        lambda q: {
            "zone": q["zone"][0],
            "history": [
                {
                    "zone": q["zone"][0],
                    "carbonIntensity": 250 + k,
                    "datetime": iso(now - (24 - k) * HOUR, "%Y-%m-%dT%H:%M:%S.000Z"),
                    "updatedAt": iso(now, "%Y-%m-%dT%H:%M:%S.000Z"),
                    "emissionFactorType": "lifecycle",
                    "isEstimated": False,
                }
                for k in range(24)
            ],
        }
    )
    em = ElectricityMaps("secret", api.url + "/v3", timeout=2, clock=Clock(now + 60))
    latest = em.latest("DE")
    assert latest is not None and latest.grams == 302.0 and latest.start == now and latest.kind == "average"
    assert [r.grams for r in em.forecast("DE", 3)] == [300.0, 290.0, 280.0]
    assert [r.grams for r in em.history("DE", now - 2 * HOUR, now)] == [272.0, 273.0]
    assert api.requests[0][1].get("auth-token") == "secret"
    with pytest.raises(CarbonSourceError, match="HTTP 401"):
        ElectricityMaps("wrong", api.url + "/v3", timeout=2).latest("DE")


def test_watttime_v3_logs_in_and_keeps_its_marginal_signal_apart(api: FakeAPI) -> None:
    now = T0 + 20 * HOUR
    issued: list[str] = []
    valid: list[str] = []

    def login(q: Any, h: Any) -> tuple[int, Any]:
        if h.get("Authorization") != "Basic " + base64.b64encode(b"ada:pw").decode():
            return 403, {"error": "bad login"}
        issued.append(f"t{len(issued) + 1}")
        valid[:] = issued[-1:]
        return 200, {"token": issued[-1]}

    def forecast(q: dict[str, list[str]], h: Any) -> tuple[int, Any]:
        if h.get("Authorization") != f"Bearer {valid[0] if valid else ''}":
            return 401, {"error": "expired"}
        assert q["region"] == ["CAISO_NORTH"] and q["signal_type"] == ["co2_moer"]
        points = [
            {"point_time": iso(now + i * 300, "%Y-%m-%dT%H:%M:%S+00:00"), "value": 1000.0 if i < 12 else 500.0}
            for i in range(24)
        ]
        meta = {
            "region": "CAISO_NORTH",
            "signal_type": "co2_moer",
            "model": {"date": "2023-03-01"},
            "units": "lbs_co2_per_mwh",
            "generated_at_period_seconds": 300,
            "generated_at": iso(now, "%Y-%m-%dT%H:%M:%S+00:00"),
        }
        return 200, {"data": points, "meta": meta}

    api.routes["/login"] = login
    api.routes["/v3/forecast"] = forecast
    wt = WattTime("ada:pw", api.url, timeout=2, clock=Clock(now + 60))
    got = wt.forecast("US-CAL-CISO", 2)
    assert [round(r.grams, 2) for r in got] == [453.59, 226.8]  # lbs/MWh → g/kWh
    assert all(r.kind == "marginal" for r in got)
    valid.clear()  # the server forgets the token: one new login, then on
    assert wt.latest("US-CAL-CISO").grams == pytest.approx(453.59237)  # type: ignore[union-attr]
    assert issued == ["t1", "t2"]
    with pytest.raises(CarbonSourceError, match="cannot be compared"):
        check_same_kind([got[0], Reading("ES", now, 200.0, "average")])


def test_a_slow_source_never_blocks_dispatch_it_falls_back_within_its_timeout(api: FakeAPI) -> None:
    api.release.clear()  # every answer held until the test ends
    clock = Clock(T0)
    guarded = GuardedSignal(ElectricityMaps("k", api.url + "/v3", timeout=5, clock=clock), 333.0, 0.3, clock=clock)
    try:
        start = time.monotonic()
        reading = guarded.latest("ES")
        assert time.monotonic() - start < 2.0
        assert reading.default and reading.grams == 333.0 and reading.source == "default"
        start = time.monotonic()
        assert guarded.forecast("ES", 4)[3].default  # source left alone after a failure: instant
        assert time.monotonic() - start < 0.2
    finally:
        guarded.close()


def test_a_source_that_goes_down_yields_its_last_known_value_then_the_default() -> None:
    class Flaky:
        kind = "average"
        name = "flaky"
        up = True

        def latest(self, zone: str) -> Reading | None:
            if not self.up:
                raise CarbonSourceError("down")
            return Reading(zone, clock.t, 123.0, source="flaky")

        def forecast(self, zone: str, hours: int) -> list[Reading]:
            raise CarbonSourceError("down")

        def history(self, zone: str, start: float, end: float) -> list[Reading]:
            return []

    clock = Clock(T0)
    source = Flaky()
    guarded = GuardedSignal(source, default=400.0, timeout=1.0, retry_after=0.0, clock=clock)
    try:
        assert guarded.latest("ES").grams == 123.0
        source.up = False
        clock.t += 2 * HOUR
        later = guarded.latest("ES")
        assert later.grams == 123.0 and not later.default and later.start == T0 + 2 * HOUR
        unknown = guarded.latest("NO")
        assert unknown.default and unknown.grams == 400.0
        assert [r.grams for r in guarded.forecast("ES", 3)] == [123.0] * 3
    finally:
        guarded.close()


def test_a_zone_without_a_reading_is_asked_once_an_hour_not_once_a_result() -> None:
    """Most volunteers say no zone: the source has nothing for them, and asking it again for every
    result (a thread hand-off each time) took about 6 % of the monitor's time at 1,000 volunteers."""

    class Counting:
        kind = "average"
        name = "counting"
        asked = 0

        def latest(self, zone: str) -> Reading | None:
            self.asked += 1
            return None

        def forecast(self, zone: str, hours: int) -> list[Reading]:
            return []

        def history(self, zone: str, start: float, end: float) -> list[Reading]:
            return []

    clock = Clock(T0)
    source = Counting()
    guarded = GuardedSignal(source, default=400.0, timeout=1.0, clock=clock)
    try:
        readings = [guarded.latest("") for _ in range(100)]
        assert all(r.default and r.grams == 400.0 for r in readings)
        assert source.asked == 1
        clock.t += HOUR
        assert guarded.latest("").start == T0 + HOUR
        assert source.asked == 2
    finally:
        guarded.close()


def test_settings_pick_a_source_and_refuse_bad_values(tmp_path: Path) -> None:
    write_csv(tmp_path, "ES", [150.0] * 30)
    clock = Clock(T0)
    guarded = signal_from_env({"HYDRA_CARBON_SOURCE": f"replay:{tmp_path}", "HYDRA_CARBON_DEFAULT": "321"}, clock)
    try:
        assert guarded.latest("ES").grams == 150.0 and guarded.latest("FR").grams == 321.0
    finally:
        guarded.close()
    assert isinstance(make_source(carbon_settings({"HYDRA_CARBON_SOURCE": "ukgrid"})), UKGrid)
    wt = make_source(carbon_settings({"HYDRA_CARBON_SOURCE": "watttime", "HYDRA_CARBON_TOKEN": "tok"}))
    assert wt.kind == "marginal"
    with pytest.raises(InvalidInput, match="HYDRA_CARBON_TOKEN"):
        make_source(carbon_settings({"HYDRA_CARBON_SOURCE": "electricitymaps"}))
    with pytest.raises(InvalidInput, match="HYDRA_CARBON_SOURCE"):
        make_source(carbon_settings({"HYDRA_CARBON_SOURCE": "magic"}))
    with pytest.raises(InvalidInput):
        carbon_settings({"HYDRA_CARBON_DEFAULT": "lots"})


# -- the policy ----------------------------------------------------------------------------------


def signal_of(values: dict[str, list[float]], clock: Clock, error: float = 0.0, seed: int = 0) -> ReplaySignal:
    trace = Trace(T0, {z: np.asarray(v, dtype=float) for z, v in values.items()})
    return ReplaySignal(trace, clock, forecast_error=error, seed=seed)


def test_prefers_cleaner_zones_while_they_can_finish_in_time() -> None:
    clock = Clock(T0)
    policy = CarbonPolicy(signal_of({"NO": [30.0] * 96, "PL": [700.0] * 96}, clock), guard=600)
    pool = PoolView({"NO": 2.0, "PL": 8.0})
    roomy = CarbonJob(remaining=3600.0, deadline=T0 + 24 * HOUR)
    assert policy.may_run(roomy, "NO", T0, pool) and not policy.may_run(roomy, "PL", T0, pool)
    # NO alone needs 2 h × 1.25 of its 2 workers for 4 worker-hours more than an hour holds: PL too.
    tight = CarbonJob(remaining=4 * 3600.0, deadline=T0 + 2 * HOUR + 600)
    assert policy.may_run(tight, "PL", T0, pool)


def test_shifts_in_time_when_the_slack_allows_and_only_then() -> None:
    clock = Clock(T0)
    intensity = [400.0] * 6 + [100.0] * 6 + [400.0] * 84
    policy = CarbonPolicy(signal_of({"ES": intensity}, clock), guard=600)
    pool = PoolView({"ES": 4.0})
    assert not policy.may_run(CarbonJob(4 * 3600.0, T0 + 24 * HOUR), "ES", T0, pool)
    assert policy.may_run(CarbonJob(4 * 3600.0, T0 + 4 * HOUR), "ES", T0, pool)
    # Too much work for the clean hours alone: run now.
    assert policy.may_run(CarbonJob(4 * 6 * 3600.0, T0 + 24 * HOUR), "ES", T0, pool)


def test_no_flag_no_cost_dispatch_exactly_as_before() -> None:
    class Untouchable:
        kind = "average"
        name = "untouchable"

        def __getattr__(self, name: str) -> Any:
            raise AssertionError("a job without --carbon-aware asked the carbon signal")

    signal = Untouchable()
    pool = PoolView({"PL": 1.0})
    assert dispatch_allowed(False, None, 1e9, "PL", T0, pool, signal)  # type: ignore[arg-type]
    assert dispatch_allowed(False, T0 + HOUR, 1e9, "PL", T0, pool, signal)  # type: ignore[arg-type]
    from hydra.cli import build_parser
    from hydra.queue import SubmitOptions

    args = build_parser().parse_args(["submit", "pi", "--samples", "1e6"])
    assert options.apply(SubmitOptions(), args) == SubmitOptions()
    args = build_parser().parse_args(["submit", "pi", "--carbon-aware", "--deadline", "12h"])
    applied = options.apply(SubmitOptions(), args)
    assert applied.carbon_aware and applied.deadline == 12 * 3600.0


def simulate(
    values: dict[str, list[float]], capacity: dict[str, float], work: float, deadline: float, error: float, seed: int
) -> float:
    """Worker-driven dispatch in 60 s steps, every zone asking the policy; the time the job ends."""
    clock = Clock(T0)
    policy = CarbonPolicy(signal_of(values, clock, error, seed), guard=600)
    pool = PoolView(capacity)
    left, t, step = work, T0, 60.0
    while left > 1e-9:
        clock.t = t
        job = CarbonJob(left, deadline)
        runs = [z for z in capacity if policy.may_run(job, z, t, pool)]
        left -= min(left, sum(capacity[z] for z in runs) * step)
        t += step
        if t > deadline + 3 * HOUR:
            break
    return t


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zones=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    slack_h=st.floats(0.5, 40.0),
    fill=st.floats(0.01, 1.0),
    error=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_property_the_policy_never_misses_a_feasible_deadline(
    zones: int, seed: int, slack_h: float, fill: float, error: float
) -> None:
    rng = np.random.default_rng(seed)
    values = {f"Z{i}": list(rng.uniform(10, 800, 96)) for i in range(zones)}
    capacity = {z: float(rng.integers(1, 10)) for z in values}
    deadline = T0 + slack_h * HOUR
    # Feasible with the policy's margin: the work fits in the pool's time before the guard.
    work = fill * sum(capacity.values()) * (slack_h * HOUR - 600) / 1.25
    if work <= 0:
        return
    assert simulate(values, capacity, work, deadline, error, seed) <= deadline


def test_a_job_feasible_only_without_the_margin_runs_everywhere_at_once() -> None:
    clock = Clock(T0)
    policy = CarbonPolicy(signal_of({"A": [10.0] * 96, "B": [900.0] * 96}, clock))
    pool = PoolView({"A": 1.0, "B": 1.0})
    job = CarbonJob(2 * 3600.0 * 0.95, T0 + HOUR + 600 + 3600)  # 95% of the capacity to the deadline
    assert policy.may_run(job, "A", T0, pool) and policy.may_run(job, "B", T0, pool)


def test_may_run_is_cheap_enough_for_the_dispatch_path() -> None:
    clock = Clock(T0)
    rng = np.random.default_rng(0)
    signal = signal_of({f"Z{i}": list(rng.uniform(10, 800, 96)) for i in range(8)}, clock)
    pool = PoolView({f"Z{i}": 5.0 for i in range(8)})
    jobs = [CarbonJob(float(w), T0 + 24 * HOUR) for w in rng.uniform(100, 1e6, 50)]
    may_run(jobs[0], "Z0", T0, pool, signal)  # fills the caches
    start = time.perf_counter()
    for i in range(10_000):
        may_run(jobs[i % 50], f"Z{i % 8}", T0 + i * 0.01, pool, signal)
    per_call = (time.perf_counter() - start) / 10_000
    assert per_call < 200e-6, f"{per_call * 1e6:.0f} µs per call"


# -- accounting ----------------------------------------------------------------------------------


def test_co2_per_chunk_from_trusted_seconds_device_power_and_intensity() -> None:
    reading = Reading("ES", T0, 400.0)
    carbon = accounting.chunk_carbon(3600.0, "cuda", reading, {"cpu": 65.0, "cuda": 1000.0})
    assert carbon.joules == 3.6e6 and carbon.co2_mg == 400_000  # 1 kWh at 400 g/kWh
    assert accounting.chunk_carbon(10.0, "tpu", reading).co2_mg == round(10 * 65 / 3.6e6 * 400 * 1000)
    assert carbon.fields()["intensity_default"] == "0"
    # The volunteer cannot make its chunk look cheap or dear: the trusted side's clock, clipped.
    assert accounting.trusted_seconds(100.0, 112.0, None, expected=5.0) == 12.0
    assert accounting.trusted_seconds(100.0, 112.0, 110.0, expected=5.0) == 2.0  # queued behind another chunk
    assert accounting.trusted_seconds(100.0, 1000.0, None, expected=5.0, factor=3.0) == 15.0
    assert accounting.trusted_seconds(100.0, 90.0, None, expected=5.0) == 0.0
    assert accounting.parse_watts("cpu=30, cuda=200") == {"cpu": 30.0, "cuda": 200.0}
    with pytest.raises(InvalidInput):
        accounting.parse_watts("cpu=lots")


def test_totals_per_job_volunteer_and_zone_and_the_result_fields() -> None:
    r = fakeredis.FakeRedis()
    pipe = r.pipeline()
    for zone, seconds in (("ES", 3600.0), ("ES", 1800.0), ("NO", 3600.0)):
        carbon = accounting.chunk_carbon(seconds, "cpu", Reading(zone, T0, 200.0 if zone == "ES" else 30.0))
        accounting.add_to_totals(pipe, "hydra:job:j1", "alice", carbon)
    pipe.execute()
    es = round(3600 * 65 / 3.6e6 * 200 * 1000) + round(1800 * 65 / 3.6e6 * 200 * 1000)
    no = round(3600 * 65 / 3.6e6 * 30 * 1000)
    assert int(r.hget("hydra:job:j1", "co2_mg")) == es + no  # type: ignore[arg-type]
    assert int(r.hget(keys.CARBON_VOLUNTEER, "alice")) == es + no  # type: ignore[arg-type]
    assert int(r.hget(keys.CARBON_ZONE, "ES")) == es  # type: ignore[arg-type]
    fields = accounting.result_fields(r.hgetall("hydra:job:j1"))  # type: ignore[arg-type]
    assert fields["co2_grams"] == (es + no) / 1000 and "location-based" in str(fields["co2_basis"])
    assert "location-based estimate" in accounting.describe(es)


def test_rapl_meter_reads_package_counters_and_survives_a_wrap(tmp_path: Path) -> None:
    package = tmp_path / "intel-rapl:0"
    package.mkdir()
    (package / "energy_uj").write_text("999000000\n")
    (package / "max_energy_range_uj").write_text("1000000000\n")
    with accounting.measure_energy([str(package / "energy_uj")]) as meter:
        (package / "energy_uj").write_text("4000000\n")  # wrapped past the range: +5 J
    assert meter.joules == pytest.approx(5.0) and meter.source == "rapl"
    assert meter.result_fields() == {"joules": 5.0, "energy_source": "rapl"}
    with accounting.measure_energy([]) as none:
        pass
    assert none.joules is None and none.result_fields() == {} and none.seconds >= 0


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400.0), ("90m", 5400.0), ("2d", 172800.0), ("3600", 3600.0), ("1.5h", 5400.0)]
)
def test_parse_deadline(text: str, seconds: float) -> None:
    assert options.parse_deadline(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "0h", "31d", "1e400"])
def test_parse_deadline_refuses_nonsense(text: str) -> None:
    with pytest.raises(InvalidInput, match="--deadline"):
        options.parse_deadline(text)


def test_cli_refuses_a_deadline_without_the_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hydra", "submit", "pi", "--samples", "1e6", "--deadline", "2h"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2 and "--deadline goes with --carbon-aware" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("command", "env", "message"),
    [
        (["submit", "pi", "--carbon-aware"], {"HYDRA_CARBON_REPLAY_AT": "soon"}, "HYDRA_CARBON_REPLAY_AT"),
        (["submit", "pi", "--carbon-aware"], {"HYDRA_CARBON_SOURCE": "magic"}, "HYDRA_CARBON_SOURCE"),
        (["monitor"], {"HYDRA_CARBON_DEFAULT": "lots"}, "HYDRA_CARBON_DEFAULT"),
        (["monitor"], {"HYDRA_CARBON_REPLAY_AT": "2022-13-01"}, "HYDRA_CARBON_REPLAY_AT"),
    ],
)
def test_bad_carbon_settings_stop_the_submitter_and_the_monitor_in_one_line(
    redis_server, client, command: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hydra", *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "HYDRA_REDIS_URL": redis_server.url, **env},
    )
    errors = [line for line in done.stderr.splitlines() if not line.startswith("20")]  # the monitor logs its start
    assert done.returncode != 0 and len(errors) == 1 and errors[0].startswith("hydra: error:") and message in errors[0]
    assert "Traceback" not in done.stderr
    assert client.zcard(keys.JOBS) == 0


# -- the bench -----------------------------------------------------------------------------------


def test_bench_quick_on_a_small_trace_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    hours = np.arange(72)
    write_csv(tmp_path, "AA", list(50 + 20 * np.sin(hours / 24 * 2 * np.pi) + rng.uniform(0, 5, 72)))
    write_csv(tmp_path, "BB", list(400 + 150 * np.sin(hours / 24 * 2 * np.pi) + rng.uniform(0, 5, 72)))
    from bench import carbon as bench

    start = time.perf_counter()
    assert bench.main(["--trace", str(tmp_path), "--quick", "--slacks", "2h,12h", "--json"]) == 0
    assert time.perf_counter() - start < 60
    written = json.loads((bench.OUT / "carbon.json").read_text())
    assert {"saving_vs_blind", "oracle_gap", "deadlines_missed", "time_shift_saving"} <= set(written)
    assert written["deadlines_missed"] == 0 and written["trace"]["zones"] == ["AA", "BB"]
    assert (bench.OUT / "carbon.png").stat().st_size > 10_000


def test_bench_meets_the_goals_on_the_shipped_week() -> None:
    from bench import carbon as bench
    from hydra.carbon.providers import SHIPPED_TRACES

    trace = load_trace(SHIPPED_TRACES)
    result = bench.run(trace, 10, 0.3, [2 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR], 0.1, 1, 4 * HOUR)
    assert result["deadlines_missed"] == 0 and result["blind"]["deadlines_missed"] == 0
    assert result["saving_vs_blind"] >= 0.50
    assert result["oracle_gap"] <= 0.10
    assert result["time_shift_saving"] >= 0.15
    assert result["hydra"]["co2_grams_per_job"] < result["blind"]["co2_grams_per_job"]


# -- the dispatcher's hook -----------------------------------------------------------------------


def test_gate_holds_dirty_zone_workers_and_passes_jobs_without_the_flag() -> None:
    from hydra.carbon.gate import CarbonGate

    class Untouchable:
        kind = "average"
        name = "untouchable"

        def __getattr__(self, name: str) -> Any:
            raise AssertionError("asked the carbon signal for a job without --carbon-aware")

    r = fakeredis.FakeRedis()
    r.hset(keys.job("plain"), mapping={"units_total": 100, "units_done": 0})
    assert CarbonGate(r, Untouchable()).allows("plain", "pi", 1e6, 100, "PL")  # type: ignore[arg-type]

    clock = Clock(T0)
    signal = signal_of({"NO": [30.0] * 96, "PL": [700.0] * 96}, clock)
    r.hset(keys.job("green"), mapping={"units_total": 100, "units_done": 0, "carbon_deadline": T0 + 24 * HOUR})
    for zone, rate in (("NO", 1e3), ("PL", 1e3)):  # the totals the collector keeps
        r.hset(keys.COUNTS, keys.zone_rate(zone, "pi"), rate)
    r.hset(keys.COUNTS, keys.zone_rate("PL", "mandelbrot"), 5.0)
    gate = CarbonGate(r, signal, clock)
    assert gate.pool("pi", T0).capacity == {"NO": 1e3, "PL": 1e3}
    assert gate.allows("green", "pi", 1e6, 100, "NO")
    assert not gate.allows("green", "pi", 1e6, 100, "PL")
    clock.t = T0 + 24 * HOUR - 1200  # the deadline is near: every zone runs it
    assert gate.allows("green", "pi", 1e6, 100, "PL")


def test_zones_past_the_cap_are_billed_as_unknown_and_known_zones_as_themselves(client):
    """Zones come from hellos: once MAX_ZONES zones hold totals, a chunk from a new one is billed as
    ``unknown`` (its CO2 still counts), so the totals the page reads once a second stay bounded."""
    from hydra.carbon.accounting import MAX_ZONES, ChunkCarbon, add_to_totals

    client.hset(keys.CARBON_ZONE, mapping={f"z{i}": 1 for i in range(MAX_ZONES)})
    job_key = keys.job("capped")
    for zone in ("z7", "brand-new", "another-new"):
        add_to_totals(client, job_key, "alice", ChunkCarbon(1.0, 65.0, 400.0, 7, zone, "average", False))
    assert client.hlen(keys.CARBON_ZONE) == MAX_ZONES + 1
    assert int(client.hget(keys.CARBON_ZONE, "z7")) == 8
    assert int(client.hget(keys.CARBON_ZONE, "unknown")) == 14
    assert client.hget(keys.CARBON_ZONE, "brand-new") is None
    assert int(client.hget(job_key, "co2_mg")) == 21
    assert float(client.hget(keys.CARBON_ZONE_ENERGY, "unknown")) == 130.0
