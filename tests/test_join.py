"""A volunteer installs Hydra from the page: the wheel of the exact version the cluster runs."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from hydra import __version__
from hydra.local import free_port, spawn, stop_process
from hydra.wheel import WHEEL_NAME
from tests.conftest import wait_until


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


@pytest.mark.slow
def test_the_page_serves_a_wheel_that_installs_in_a_fresh_venv(redis_server, tmp_path: Path):
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "hydra", "web", "--port", str(port)],
        env={"HYDRA_REDIS_URL": redis_server.url, "HYDRA_WHEEL_DIR": ""},
        log_path=tmp_path / "web.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(base + "/healthz")[0] == 200, timeout=60, what="the page")
        wheel_url = f"{base}/join/{WHEEL_NAME}"
        # Built from this checkout at start, in the background: the page answers meanwhile.
        wait_until(lambda: _get(wheel_url)[0] == 200, timeout=240, interval=1, what="the wheel")
        status, page = _get(base + "/join")
        text = page.decode()
        assert status == 200 and "wheel-missing" not in text
        assert f"pip install {wheel_url}" in text
        assert "RQ_WORKER_CLASS=hydra.worker.HydraWorker" in text and "rq worker hydra" in text
        wheel = tmp_path / WHEEL_NAME
        wheel.write_bytes(_get(wheel_url)[1])
    finally:
        stop_process(server)

    venv = tmp_path / "volunteer"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    probe = subprocess.run(
        [str(python), "-c", "import hydra, hydra_web, hydra.settings; print(hydra.__version__, hydra.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the import must come from the installed wheel
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    version, location = probe.stdout.split()
    assert version == __version__ and str(venv) in location
    # Under its own name only: no top-level `web` package to collide with other projects.
    assert not list((venv / "lib").glob("python*/site-packages/web"))


def test_join_page_says_when_no_wheel_is_there(redis_server, tmp_path: Path):
    from hydra_web.app import create_app

    app = create_app({"REDIS_URL": redis_server.url, "MESSAGE_QUEUE": False, "WHEEL_DIR": str(tmp_path)})
    web = app.test_client()
    assert 'id="wheel-missing"' in web.get("/join").get_data(as_text=True)
    assert web.get(f"/join/{WHEEL_NAME}").status_code == 503
    (tmp_path / WHEEL_NAME).write_bytes(b"PK\x03\x04 a wheel")
    with web.get(f"/join/{WHEEL_NAME}") as answer:
        assert answer.data == b"PK\x03\x04 a wheel"
    assert 'id="wheel-missing"' not in web.get("/join").get_data(as_text=True)
