"""A carbon-aware job end to end: a real Redis, a real monitor, real workers in two grid zones, the CLI.

The replay source is held at one recorded hour (``HYDRA_CARBON_REPLAY_AT``) so that the grid is the
same on every run: Norway (hydro, ~27 g/kWh) against Spain (~300 g/kWh) on the morning of
2022-03-07, from the week shipped in hydra/carbon/traces.

Warm-up. The policy counts a zone's capacity from the trusted side's *measured* rates
(``hydra:rates:<task>``). Before any worker has a measured rate the pool looks empty, nothing is
"cleaner and able to finish", and every worker may run (the safe default: a job never waits on
capacity nobody has seen). So the test first runs the job without ``--carbon-aware``, which is the
contrast it needs anyway and measures both workers; the carbon-aware job then sees a pool with
both zones in it.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from hydra import keys
from hydra.carbon.providers import SHIPPED_TRACES
from hydra.carbon.replay import ReplaySignal, load_trace
from hydra.carbon.signal import HOUR
from hydra.queue import live_workers, units_by_worker
from tests.conftest import run_cli, wait_until

pytestmark = pytest.mark.slow

PINNED = "2022-03-07T06:00Z"
CLEAN, DIRTY = "NO", "ES"
SAMPLES = 20_000_000_000
DEADLINE, DEADLINE_SECONDS = "1h", 3600
# The monitor bills 1 kW per busy CPU worker, so every chunk in a clean grid weighs well over the
# integer milligram the totals are kept in.
ENV = {"HYDRA_CARBON_SOURCE": "replay", "HYDRA_CARBON_REPLAY_AT": PINNED, "HYDRA_CARBON_WATTS": "cpu=1000"}


def test_the_premise_holds_in_the_shipped_trace() -> None:
    """NO is never dirtier than ES, and at the pinned hour no NO hour within the deadline is cleaner:
    so the policy must hold the ES worker back and let the NO worker run."""
    trace = load_trace(SHIPPED_TRACES)
    replay = ReplaySignal(trace)
    h = replay.index(datetime.fromisoformat(PINNED.replace("Z", "+00:00")).timestamp())
    clean, dirty = trace.values[CLEAN], trace.values[DIRTY]
    assert dirty.min() > clean.max()
    # A 1 h deadline (less the policy's 10 min guard) ends within the hour after the one in progress.
    assert DEADLINE_SECONDS - 600 < HOUR and clean[h] <= clean[h + 1]


def zone_totals(client) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.CARBON_ZONE).items()}


def billed(client, samples: int) -> None:
    """Wait until the collector has billed every accepted chunk: ``done:samples`` is counted in the
    same MULTI as the CO2 totals, just after the job may already read done."""
    wait_until(lambda: int(float(client.hget(keys.COUNTS, "done:samples") or 0)) >= samples, timeout=30)


def test_a_carbon_aware_job_runs_only_in_the_clean_zone_and_exactly(redis_server, client, cluster_factory) -> None:
    cluster = cluster_factory(0, env=ENV)  # the monitor, with the pinned replay
    cluster.add_worker({"HYDRA_ZONE": CLEAN}, volunteer="clean")
    cluster.add_worker({"HYDRA_ZONE": DIRTY}, volunteer="dirty")
    names = cluster.wait_for_workers(2)
    # The submitting process dispatches to idle workers at once too: it needs the same carbon settings.
    env = {"HYDRA_REDIS_URL": redis_server.url, **ENV}

    listed = run_cli("workers", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    zones = {w["volunteer"]: w["zone"] for w in json.loads(listed.stdout)}
    assert sorted(zones.values()) == sorted([CLEAN, DIRTY])
    clean = next(user for user, zone in zones.items() if zone == CLEAN)
    dirty = next(user for user, zone in zones.items() if zone == DIRTY)

    def submit(*extra: str) -> dict:
        done = run_cli(
            "submit", "pi", "--samples", str(SAMPLES), "--seed", "7", "--json", "--timeout", "240", *extra, env=env
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # Without the flag: both workers take part (and the trusted side measures both).
    plain = submit()
    assert set(units_by_worker(client, plain["job"])) == {clean, dirty}
    billed(client, SAMPLES)
    before = zone_totals(client)
    assert before.get(CLEAN, 0) > 0 and before.get(DIRTY, 0) > 0

    # With it: only the clean zone's worker runs the job, and the answer is the same to the last sample.
    green = submit("--carbon-aware", "--deadline", DEADLINE)
    assert (green["inside"], green["samples"], green["pi"]) == (plain["inside"], plain["samples"], plain["pi"])
    assert set(units_by_worker(client, green["job"])) == {clean}
    assert green["co2_grams"] > 0 and "location-based estimate" in green["co2_basis"]
    billed(client, 2 * SAMPLES)
    after = zone_totals(client)
    assert {zone for zone in after if after[zone] != before.get(zone, 0)} == {CLEAN}
    assert set(names) <= set(live_workers(client))  # the dirty worker was there all along, held back
    assert client.zscore(keys.IDLE, next(n for n in names if n.startswith(f"{dirty}/"))) is not None
