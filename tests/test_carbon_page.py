"""CO2 on the page: the bounded per-zone summary, its REST route, and the chart in headless Chromium
fed by a real job, values written into Redis and the monitor's live events."""

from __future__ import annotations

import math
from pathlib import Path

import fakeredis
import pytest

from hydra import keys
from hydra.carbon.summary import SHOWN_ZONES, carbon_summary
from hydra.local import stop_process
from hydra.queue import SubmitOptions, job_status, submit, wait_for_job
from tests.conftest import ROOT, start_page

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"


# -- the summary builder ---------------------------------------------------------------------------


def test_the_summary_keeps_the_top_zones_sums_the_rest_and_ignores_garbage() -> None:
    r = fakeredis.FakeRedis()
    n = 40
    for i in range(n):
        zone = f"Z{i:02d}"
        r.hset(keys.CARBON_ZONE, zone, 1000 * (i + 1))  # Z39 emits most
        r.hset(keys.CARBON_ZONE_ENERGY, zone, 3.6e6 * (i + 1))  # (i + 1) kWh
        r.hset(keys.CARBON_ZONE_INTENSITY, zone, 10.0 * (i + 1))
    r.hset(keys.CARBON_ZONE_RAPL, "Z39", 3.6e6 * 10)  # 10 of its 40 kWh at a measured power
    r.hset(keys.CARBON_ZONE_RAPL, "Z38", 3.6e6 * 1000)  # more than billed: capped at all of it
    r.hset(keys.CARBON_ZONE, mapping={"Z37": "lots", "Z36": "-5", "Z35": "inf"})  # garbage: 0 g
    r.hset(keys.CARBON_ZONE_ENERGY, "Z34", "nan")
    r.hset(keys.CARBON_ZONE_INTENSITY, "Z33", "hot")
    r.hset(keys.CARBON_ZONE, "<b>\u00e9vil</b>", 10**9)  # a name no hello could send: shown, defanged

    summary = carbon_summary(r)
    rows = summary["zones"]
    assert len(rows) == SHOWN_ZONES + 1 and rows[-1]["other"] == n + 1 - SHOWN_ZONES
    assert rows[-1]["zone"] == f"other ({n + 1 - SHOWN_ZONES} zones)"
    top = rows[0]
    assert top["zone"] == "?b??vil??b?" and top["grams"] == 1e6 and top["kwh"] == 0.0
    assert [row["zone"] for row in rows[1:4]] == ["Z39", "Z38", "Z34"]  # garbage CO2 sank Z37, Z36, Z35
    z39, z38, z34 = rows[1:4]
    assert z39["grams"] == 40.0 and z39["kwh"] == pytest.approx(40.0) and z39["measured"] == pytest.approx(0.25)
    assert z39["intensity"] == 400.0 and z38["measured"] == 1.0
    assert z34["kwh"] == 0.0 and z34["grams"] == 35.0
    assert next(row for row in rows if row["zone"] == "Z33")["intensity"] is None
    grams = [row["grams"] for row in rows[:-1]]
    assert grams == sorted(grams, reverse=True)
    shown_mg = sum(round(row["grams"] * 1000) for row in rows)
    garbage_mg = 1000 * (36 + 37 + 38)  # what Z35, Z36 and Z37 held before their garbage
    assert shown_mg == round(summary["grams"] * 1000) == 10**9 + 1000 * sum(range(1, n + 1)) - garbage_mg
    billed_kwh = sum(range(1, n + 1)) - 35  # Z34's energy is garbage
    assert summary["kwh"] == pytest.approx(billed_kwh)
    assert summary["measured"] == pytest.approx((10 + 39) / billed_kwh)  # Z38's measure capped at its 39 kWh
    assert "location-based estimate" in summary["basis"]


def test_no_zone_billed_yet_is_an_empty_summary() -> None:
    summary = carbon_summary(fakeredis.FakeRedis())
    assert summary["zones"] == [] and summary["grams"] == 0.0 and summary["measured"] == 0.0


def test_the_carbon_route_and_the_job_status_carry_the_figures(redis_server, client) -> None:
    from hydra_web.app import create_app

    app = create_app({"REDIS_URL": redis_server.url, "MESSAGE_QUEUE": False})
    client.hset(keys.CARBON_ZONE, mapping={"NO": 1500, "ES": "garbage"})
    client.hset(keys.CARBON_ZONE_ENERGY, "NO", 7.2e6)
    answer = app.test_client().get("/api/carbon").json
    assert [(z["zone"], z["grams"], z["kwh"]) for z in answer["zones"]] == [("NO", 1.5, 2.0), ("ES", 0.0, 0.0)]
    job_id = submit(client, "pi", {"samples": "1e6"}, SubmitOptions())
    client.hset(keys.job(job_id), mapping={"co2_mg": 2500, "energy_j": 3600.0, "energy_rapl_j": 900.0})
    status = job_status(client, job_id)
    assert status["co2_grams"] == 2.5 and status["energy_kwh"] == 0.001 and status["energy_measured"] == 0.25
    client.hset(keys.job(job_id), "co2_mg", "not a number")  # the job still shows, with 0 g
    assert job_status(client, job_id)["co2_grams"] == 0.0


# -- in the browser --------------------------------------------------------------------------------


@pytest.fixture
def page_server(redis_server, cluster_factory):
    server, url = start_page(redis_server.url)
    # A worker in Spain; the monitor bills 2 kW per busy CPU worker, so even a short job weighs grams.
    cluster = cluster_factory(1, env={"HYDRA_ZONE": "ES", "HYDRA_CARBON_WATTS": "cpu=2000"})
    cluster.wait_for_workers(1)
    yield url
    stop_process(server)


def rows(page) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#carbon-chart g.carbon-row",
        """rs => rs.map(r => ({zone: r.dataset.zone, grams: r.dataset.grams,
            label: r.querySelector('.zone').firstChild.textContent, figures: r.querySelector('.figures').textContent,
            bar: Number(r.querySelector('rect').getAttribute('width'))}))""",
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_zone_chart_shows_a_real_job_and_the_stored_totals_and_follows_them_live(page_server, client) -> None:
    from playwright.sync_api import sync_playwright

    fakes = {f"Z{i:02d}": i + 1 for i in range(20)}  # 1 to 20 mg: far below a real job's
    client.hset(keys.CARBON_ZONE, mapping=fakes)
    client.hset(keys.CARBON_ZONE, "Z02", "lots")  # garbage: must not break the monitor or the page
    client.hset(keys.CARBON_ZONE_ENERGY, mapping={"Z01": "nan", "Z00": 3.6e6})
    job_id = submit(client, "pi", {"samples": "1e10"}, SubmitOptions())
    wait_for_job(client, job_id, timeout=240)
    job = job_status(client, job_id)
    es_mg = int(client.hget(keys.CARBON_ZONE, "ES"))
    assert job["co2_grams"] > 0 and es_mg == round(job["co2_grams"] * 1000)  # the job was ES's only work
    es_intensity = float(client.hget(keys.CARBON_ZONE_INTENSITY, "ES"))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(f"{page_server}/jobs/{job_id}")
        page.wait_for_selector("#connection[data-state=live]", timeout=30_000)
        page.wait_for_function(
            f"() => document.querySelectorAll('#carbon-chart g.carbon-row').length === {SHOWN_ZONES + 1}",
            timeout=30_000,
        )
        shown = rows(page)
        # Expected from what Redis holds: ES first, then the fakes by CO2 (the garbage one at 0), the rest summed.
        fake_mg = {**fakes, "Z02": 0}
        order = ["ES"] + sorted(fake_mg, key=lambda z: (-fake_mg[z], z))[: SHOWN_ZONES - 1]
        assert [r["zone"] for r in shown[:-1]] == order and [r["label"] for r in shown[:-1]] == order
        rest = sorted(fake_mg, key=lambda z: (-fake_mg[z], z))[SHOWN_ZONES - 1 :]
        assert shown[-1]["zone"] == "" and shown[-1]["label"] == f"other ({len(rest)} zones)"
        assert float(shown[-1]["grams"]) == sum(fake_mg[z] for z in rest) / 1000
        assert float(shown[0]["grams"]) == es_mg / 1000
        shown_intensity = math.floor(es_intensity + 0.5)  # the page's Math.round: halves up, not to even
        assert f"{shown_intensity} g/kWh" in shown[0]["figures"] and "CO2" in shown[0]["figures"]
        z19 = next(r for r in shown if r["zone"] == "Z19")
        assert "20.0 mg" in z19["figures"]
        assert z19["bar"] == pytest.approx(shown[0]["bar"] * 20 / es_mg, rel=0.02, abs=1.01)  # bars ∝ CO2
        # The chosen job's own figure, labelled as what it is.
        line = page.wait_for_selector(f"#job-co2[data-job='{job_id}']", timeout=30_000)
        assert float(line.get_attribute("data-grams")) == job["co2_grams"]
        assert "location-based estimate" in line.inner_text()
        # The worker's zone in the workers table.
        assert page.inner_text("#workers-newest tr[data-worker] td:nth-child(3)") == "ES"

        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#carbon-panel").screenshot(path=str(ARTIFACTS / "carbon-zones.png"))

        # Live: a zone overtakes ES; the monitor's next summary moves it to the top, no reload.
        client.hincrby(keys.CARBON_ZONE, "Z19", 2 * es_mg)
        page.wait_for_function(
            "() => document.querySelector('#carbon-chart g.carbon-row').dataset.zone === 'Z19'", timeout=30_000
        )
        assert float(rows(page)[0]["grams"]) == (20 + 2 * es_mg) / 1000
        browser.close()
