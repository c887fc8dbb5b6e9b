"""End to end in headless Chromium: the real web server, a real worker, a real Redis, pushed updates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hydra.local import free_port, spawn, stop_process
from tests.conftest import ROOT, wait_until

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture
def page_server(redis_server, cluster_factory):
    import urllib.request

    port = free_port()
    env = {"HYDRA_REDIS_URL": redis_server.url, "HYDRA_WEB_TOKEN": "tok3n"}
    server = spawn([sys.executable, "-m", "hydra", "web", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(answers, timeout=60, what="the web server")
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
    assert page.locator("#workers tbody tr").count() >= 1


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


def test_screenshot_tool_is_there():
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
    assert subprocess.run([CHROMIUM, "--version"], capture_output=True).returncode == 0
