"""End to end in headless Chromium: the real web server, a real worker, a real Redis, pushed updates."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from hydra.local import stop_process
from tests.conftest import ROOT, start_page, wait_until

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture
def page_server(redis_server, cluster_factory):
    server, url = start_page(redis_server.url, {"HYDRA_WEB_TOKEN": "tok3n"})
    cluster_factory(1)
    yield url
    stop_process(server)


@pytest.fixture
def page(page_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        tab = browser.new_page(viewport={"width": 1280, "height": 1100})
        tab.goto(page_server)
        tab.wait_for_selector("#connection[data-state=live]", timeout=30_000)
        yield tab
        browser.close()


def test_submit_pi_from_the_form_and_watch_it_finish(page, client):
    page.fill("#token", "tok3n")
    page.fill("input[name=samples]", "6e9")
    page.click("#submit-button")
    row = page.wait_for_selector("#jobs tr[data-job-id]", timeout=30_000)
    job_id = row.get_attribute("data-job-id")
    page.wait_for_function(
        f"() => parseFloat(document.querySelector('tr[data-job-id=\"{job_id}\"]').dataset.progress) > 0.1",
        timeout=120_000,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-midjob.png"), full_page=True)
    page.wait_for_selector(f"tr[data-job-id='{job_id}'][data-state='done']", timeout=300_000)
    assert "π ≈ 3.14" in page.inner_text(f"tr[data-job-id='{job_id}'] .result")
    assert float(page.get_attribute(f"tr[data-job-id='{job_id}']", "data-progress")) == 1.0
    assert page.inner_text("#workers-count") == "1 live worker"
    assert page.locator("#workers-newest tr[data-worker-state=alive]").count() == 1


def test_small_mandelbrot_fills_the_canvas(page):
    page.fill("#token", "tok3n")
    page.select_option("#task", "mandelbrot")
    page.fill("input[name=width]", "320")
    page.fill("input[name=height]", "240")
    page.click("#submit-button")
    page.wait_for_selector("#jobs tr[data-state='done']", timeout=120_000)
    page.wait_for_function(
        "() => Number(document.getElementById('mandel-canvas').dataset.tiles || 0) > 0", timeout=60_000
    )
    lit = page.evaluate("""() => {
        const c = document.getElementById('mandel-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const colours = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) colours.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
        return colours.size;
    }""")
    assert lit > 5


def test_without_the_token_nothing_is_submitted(page, client):
    page.fill("#token", "not-the-token")
    page.click("#submit-button")
    page.wait_for_selector("#submit-message[data-kind=error]", timeout=30_000)
    assert "token" in page.inner_text("#submit-message")
    assert client.zcard("hydra:jobs") == 0


def axis_labels(page, plot: str, axis: int) -> list[str]:
    """The labels uPlot drew on a canvas axis (its computed values)."""
    return page.evaluate(f"() => {plot}.axes[{axis}]._values || []")


def test_after_reload_the_newest_and_running_jobs_come_first_and_fit_a_phone(page_server, client):
    from playwright.sync_api import sync_playwright

    from hydra.queue import SubmitOptions, cancel, submit

    options = SubmitOptions(max_active_jobs=1000)
    old = [submit(client, "pi", {"samples": "1e7"}, options) for _ in range(24)]
    for job_id in old:
        cancel(client, job_id)
    running = submit(client, "pi", {"samples": "2e11"}, options)
    wait_until(lambda: int(client.hget(f"hydra:job:{running}", "units_done") or 0) > 0, timeout=120)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(page_server)
        phone.wait_for_selector("#connection[data-state=live]", timeout=30_000)
        phone.wait_for_selector("#jobs tbody tr", timeout=30_000)
        rows = phone.eval_on_selector_all("#jobs tbody tr", "rs => rs.map(r => r.dataset.jobId)")
        assert rows[0] == running and len(rows) == 20  # the running job first, then the newest 19
        assert rows[1:] == old[::-1][:19]
        assert phone.inner_text("#pi-job") == f"job {running}"
        # No Mandelbrot job: a sentence, not a black square.
        assert phone.is_visible("#no-mandel") and not phone.is_visible("#mandel-canvas")
        fits = phone.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        assert fits and phone.evaluate("() => document.querySelector('#jobs').getBoundingClientRect().right <= 390")
        phone.click("#older-jobs")
        phone.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 25", timeout=30_000)
        phone.wait_for_function("() => piPlot && piPlot.data[0].length > 1", timeout=60_000)
        y = axis_labels(phone, "piPlot", 1)
        assert y and len(set(y)) == len(y), y  # no repeated labels
        assert not [label for label in axis_labels(phone, "piPlot", 0) if label and label[0] in "-–−"]
        phone.wait_for_function("() => throughputPlot && throughputPlot.data[0].length > 2", timeout=30_000)
        times = [label for label in axis_labels(phone, "throughputPlot", 0) if label]
        assert times and all(re.fullmatch(r"\d\d:\d\d:\d\d( [AP]M)?", t) for t in times), times
        samples = phone.evaluate("() => throughputPlot.data[1].slice(-3)")
        assert all(v and v > 0 for v in samples), samples  # no zig-zag to zero mid-job

        # Its own view: /jobs/<id> opens on that job, even an old one.
        phone.goto(f"{page_server}/jobs/{old[0]}")
        phone.wait_for_selector(f"#jobs tr.selected[data-job-id='{old[0]}']", timeout=30_000)
        assert phone.inner_text("#pi-job") == f"job {old[0]}"
        browser.close()
    cancel(client, running)


def test_workers_show_all_pages_through_the_full_list(page):
    page.wait_for_function(
        "() => document.querySelector('#workers-count').textContent === '1 live worker'", timeout=60_000
    )
    page.evaluate("() => loadWorkers(0)")
    page.wait_for_selector("#workers-all tr[data-worker]", timeout=30_000)
    assert page.locator("#workers-all tr[data-worker]").count() == 1
    assert not page.is_visible("#workers-newest tr")


def test_screenshot_tool_is_there():
    done = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "Chromium" in done.stdout
