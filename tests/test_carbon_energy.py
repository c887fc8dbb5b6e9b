"""RAPL energy from workers: measured around the kernel, sent in the result, billed within bounds.

The worker's joules and seconds are untrusted; the collector bills its own busy time at the
worker's measured power clamped to [0.25 ×, 2 ×] the configured figure, and ignores a reading
that is missing or malformed (see hydra.carbon.accounting).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from hydra import keys
from hydra.carbon import accounting
from hydra.carbon.accounting import EnergyClaim, billed_watts, energy_claim
from hydra.carbon.signal import Reading
from hydra.collector import Collector
from hydra.queue import SubmitOptions, read_job, submit
from hydra.settings import Settings
from hydra.tasks import get_task
from hydra.tasks.pi.kernel import BLOCK, count_inside_samples
from hydra.worker import Volunteer

CPU_WATTS = accounting.DEFAULT_WATTS["cpu"]


def fake_package(tmp_path: Path, microjoules: int = 1_000_000) -> Path:
    """A RAPL package counter shaped like /sys/class/powercap/intel-rapl:0/energy_uj."""
    package = tmp_path / "powercap" / "intel-rapl:0"
    package.mkdir(parents=True)
    (package / "energy_uj").write_text(f"{microjoules}\n")
    (package / "max_energy_range_uj").write_text("262143328850\n")
    sub = tmp_path / "powercap" / "intel-rapl:0:0"  # a sub-domain (cores): not counted twice
    sub.mkdir()
    (sub / "energy_uj").write_text("5\n")
    return package / "energy_uj"


# -- the bounds, as pure functions -----------------------------------------------------------------


def test_measured_power_is_billed_within_a_quarter_and_twice_the_configured_figure() -> None:
    assert billed_watts(65.0, None) == (65.0, "estimate")
    assert billed_watts(65.0, EnergyClaim(joules=100.0, seconds=2.0)) == (50.0, "rapl")
    assert billed_watts(65.0, EnergyClaim(joules=1e6, seconds=1.0)) == (130.0, "rapl")  # capped at 2 ×
    assert billed_watts(65.0, EnergyClaim(joules=0.0, seconds=5.0)) == (16.25, "rapl")  # floored at 0.25 ×
    seconds, reading = 3600.0, Reading("NO", 0.0, 30.0)
    low = accounting.chunk_carbon(seconds, "cpu", reading, claim=EnergyClaim(1.0, 100.0))
    high = accounting.chunk_carbon(seconds, "cpu", reading, claim=EnergyClaim(1e9, 1.0))
    plain = accounting.chunk_carbon(seconds, "cpu", reading)
    assert (low.joules, high.joules, plain.joules) == (seconds * 16.25, seconds * 130.0, seconds * 65.0)
    assert (low.source, high.source, plain.source) == ("rapl", "rapl", "estimate")
    assert high.co2_mg == 2 * plain.co2_mg  # a lying volunteer moves its footprint by a bounded factor


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"joules": 12.0, "seconds": 1.0},  # no source named
        {"joules": 12.0, "seconds": 1.0, "energy_source": "magic"},
        {"joules": "12", "seconds": 1.0, "energy_source": "rapl"},
        {"joules": True, "seconds": 1.0, "energy_source": "rapl"},
        {"joules": float("nan"), "seconds": 1.0, "energy_source": "rapl"},
        {"joules": float("inf"), "seconds": 1.0, "energy_source": "rapl"},
        {"joules": -3.0, "seconds": 1.0, "energy_source": "rapl"},
        {"joules": 3.0, "seconds": 0, "energy_source": "rapl"},
        {"joules": 3.0, "energy_source": "rapl"},
        {"joules": 1e308, "seconds": 1e-308, "energy_source": "rapl"},
        {"joules": [3.0], "seconds": 1.0, "energy_source": "rapl"},
        {"joules": 10**400, "seconds": 1.0, "energy_source": "rapl"},
        {"joules": 3.0, "seconds": -(10**400), "energy_source": "rapl"},
    ],
)
def test_a_missing_or_garbage_reading_is_no_claim(message: dict[str, Any]) -> None:
    assert energy_claim(message) is None


def test_totals_survive_fields_that_are_not_numbers() -> None:
    r = fakeredis.FakeRedis()
    r.hset(keys.CARBON_ZONE, mapping={"NO": "lots", "ES": "1.5"})
    r.hset(keys.CARBON_ZONE_ENERGY, "NO", "nan")
    r.hset("hydra:job:j1", "co2_mg", "x")
    carbon = accounting.chunk_carbon(3600.0, "cpu", Reading("NO", 0.0, 100.0), claim=EnergyClaim(130.0, 1.0))
    pipe = r.pipeline()
    accounting.add_to_totals(pipe, "hydra:job:j1", "alice", carbon)
    pipe.execute()
    assert int(r.hget(keys.CARBON_ZONE, "NO")) == carbon.co2_mg == 13_000  # 130 W for 1 h at 100 g/kWh
    assert float(r.hget(keys.CARBON_ZONE_ENERGY, "NO")) == pytest.approx(130 * 3600)
    assert float(r.hget(keys.CARBON_ZONE_RAPL, "NO")) == pytest.approx(130 * 3600)
    assert float(r.hget(keys.CARBON_ZONE_INTENSITY, "NO")) == 100.0
    assert r.hget(keys.CARBON_ZONE, "ES") == b"1.5"  # other zones left alone
    status = accounting.status_fields(r.hgetall("hydra:job:j1"))
    assert status == {"co2_grams": 13.0, "energy_kwh": pytest.approx(0.13), "energy_measured": 1.0}
    assert accounting.status_fields({"co2_mg": "many", "energy_j": "-5"}) == {
        "co2_grams": 0.0,
        "energy_kwh": 0.0,
        "energy_measured": 0.0,
    }


# -- the worker measures around its kernel ---------------------------------------------------------


class HeatingVolunteer(Volunteer):
    """A worker whose kernel makes the fake RAPL counter grow by ``grow_uj`` while it runs."""

    counter: Path
    grow_uj = 0

    def compute(self, *args: Any) -> Any:
        result = super().compute(*args)
        before = int(self.counter.read_text())
        self.counter.write_text(f"{before + self.grow_uj}\n")
        return result


def descriptor(samples: int = 3 * BLOCK) -> dict[str, Any]:
    task = get_task("pi")
    params = task.parse({"samples": samples, "seed": 9})
    return {
        "t": "chunk",
        "job": "0123456789ab",
        "chunk": 0,
        "a": 1,
        "first": 0,
        "count": 2,
        "seed": 9,
        "task": "pi",
        "version": task.version,
        "params": params,
    }


def sent(client, user: str = "default") -> dict[str, Any]:
    raw = client.lpop(keys.outbox(user))
    return json.loads(raw.partition(b"\n")[0])


def test_the_worker_sends_the_joules_its_rapl_counter_grew_by(client, tmp_path: Path, monkeypatch) -> None:
    counter = fake_package(tmp_path)
    monkeypatch.setenv("HYDRA_RAPL_GLOB", str(tmp_path / "powercap" / "intel-rapl:*" / "energy_uj"))
    worker = HeatingVolunteer(client, "w1", device="cpu")
    assert worker.rapl == [str(counter)]  # the package counter, not its sub-domain
    worker.counter, worker.grow_uj = counter, 7_250_000
    worker.run_chunk(descriptor())
    worker.flush()  # a result goes out with the next read of the inbox
    header = sent(client)
    assert header["t"] == "result" and header["sums"] == {"inside": count_inside_samples(9, 0, 2 * BLOCK)}
    assert header["joules"] == pytest.approx(7.25) and header["energy_source"] == "rapl"
    assert header["seconds"] > 0
    claim = energy_claim(header)
    assert claim is not None and claim.watts == pytest.approx(7.25 / header["seconds"])


def test_without_readable_counters_the_result_carries_no_joules(client, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HYDRA_RAPL_GLOB", str(tmp_path / "nothing-here" / "intel-rapl:*" / "energy_uj"))
    worker = Volunteer(client, "w2", device="cpu")
    assert worker.rapl == []
    worker.run_chunk(descriptor())
    worker.flush()  # a result goes out with the next read of the inbox
    header = sent(client)
    assert header["t"] == "result" and "joules" not in header and "energy_source" not in header


# -- the collector bills within bounds ---------------------------------------------------------------


def one_chunk_job(client, seed: int) -> str:
    return submit(client, "pi", {"samples": BLOCK, "seed": seed}, SubmitOptions(chunk_units=1))


def answer_with(collector: Collector, user: str, job_id: str, energy: dict[str, Any]) -> float:
    """Say hello as ``user``, answer the job's one chunk with ``energy`` fields; the trusted busy
    seconds the collector measured (from the assignment time it recorded to the arrival given)."""
    r = collector.redis
    hello = {"t": "hello", "w": "w1", "tasks": {"pi": get_task("pi").version}, "device": "cpu", "zone": "NO"}
    assert collector.handle(user, json.dumps(hello).encode() + b"\n") == "hello"
    inbox = [json.loads(m) for m in r.lrange(keys.inbox(user, "w1"), 0, -1)]
    chunk = next(m for m in inbox if m.get("t") == "chunk" and m["job"] == job_id)
    holder = json.loads(r.hget(keys.chunks(job_id), chunk["chunk"]))["holders"][f"{user}/w1"]
    inside = count_inside_samples(chunk["seed"], 0, BLOCK)
    message = {"t": "result", "w": "w1", "job": job_id, "chunk": chunk["chunk"], "a": chunk["a"]}
    message |= {"sums": {"inside": inside}, "seconds": 0.5, **energy}
    arrived = time.time()
    assert collector.handle(user, json.dumps(message).encode() + b"\n", arrived) == "accepted; job done"
    return arrived - float(holder["at"])


@pytest.mark.parametrize(
    ("energy", "watts", "source"),
    [
        ({"joules": 20.0, "energy_source": "rapl"}, 40.0, "rapl"),  # 20 J over 0.5 s: within bounds
        ({"joules": 5000.0, "energy_source": "rapl"}, 2 * CPU_WATTS, "rapl"),  # claims 10 kW: capped
        ({"joules": 0.001, "energy_source": "rapl"}, CPU_WATTS / 4, "rapl"),  # claims 2 mW: floored
        ({"joules": "lots", "energy_source": "rapl"}, CPU_WATTS, "estimate"),  # garbage: configured
        ({"joules": -1.0, "energy_source": "rapl"}, CPU_WATTS, "estimate"),
        ({}, CPU_WATTS, "estimate"),  # no counters on that machine
    ],
)
def test_the_collector_bills_trusted_seconds_at_the_bounded_measured_power(
    client, energy: dict[str, Any], watts: float, source: str
) -> None:
    collector = Collector(client, Settings())
    job_id = one_chunk_job(client, seed=11)
    busy = answer_with(collector, "vol", job_id, energy)
    assert 0 < busy < 2.0  # well inside the clip (3 × the job's 2 s chunk time)
    record = read_job(client, job_id)
    billed = float(record["energy_j"])
    assert billed == pytest.approx(busy * watts, abs=2e-6)
    measured = float(record.get("energy_rapl_j", 0))
    assert measured == (pytest.approx(billed, abs=2e-6) if source == "rapl" else 0.0)
    zone_rapl = float(client.hget(keys.CARBON_ZONE_RAPL, "NO") or 0)
    assert zone_rapl == (pytest.approx(billed, abs=2e-3) if source == "rapl" else 0.0)
    result = accounting.result_fields(client.hgetall(keys.job(job_id)))
    assert result["energy_measured"] == (1.0 if source == "rapl" else 0.0)
    assert math.isclose(result["energy_kwh"], billed / 3.6e6, rel_tol=1e-9)  # type: ignore[arg-type]
