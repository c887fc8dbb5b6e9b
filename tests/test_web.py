"""The page's routes and Socket.IO events (Flask test client, Flask-SocketIO test client, real Redis)."""

from __future__ import annotations

import pytest

from hydra.queue import SubmitOptions, job_status, submit, wait_for_job
from hydra_web.app import create_app, socketio


@pytest.fixture
def app(redis_server):
    return create_app({"REDIS_URL": redis_server.url, "WEB_TOKEN": "s3cret", "MESSAGE_QUEUE": False})


def test_healthz_and_page(app):
    client = app.test_client()
    assert client.get("/healthz").json == {"ok": True}
    page = client.get("/").get_data(as_text=True)
    assert 'id="submit-form"' in page and "vendor/socket.io.min.js" in page
    assert "cdn" not in page.lower() and "https://" not in page
    with client.get("/static/vendor/uPlot.iife.min.js") as script:
        assert script.status_code == 200


def test_healthz_says_503_when_redis_is_down(tmp_path):
    from hydra.local import free_port

    app = create_app({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "MESSAGE_QUEUE": False})
    assert app.test_client().get("/healthz").status_code == 503


def test_a_new_socket_gets_one_snapshot_with_jobs_and_traces(app, client, cluster_factory):
    cluster_factory(1)
    job_id = submit(client, "pi", {"samples": "3e7"}, SubmitOptions(chunk_seconds=0.1))
    wait_for_job(client, job_id, timeout=60)
    socket = socketio.test_client(app)
    received = socket.get_received()
    socket.disconnect()
    assert [event["name"] for event in received] == ["snapshot"]
    snap = received[0]["args"][0]
    assert snap["jobs"][0]["job"] == job_id and snap["jobs"][0]["state"] == "done"
    trace = snap["traces"][job_id]
    assert trace[-1][0] == 30_000_000 and abs(trace[-1][1] - 3.14159) < 0.01
    assert snap["read_only"] is False


def test_submit_needs_the_token_and_validates_like_the_cli(app, client):
    web = app.test_client()
    body = {"task": "pi", "params": {"samples": "1e7"}}
    assert web.post("/api/jobs", json=body).status_code == 403
    assert web.post("/api/jobs", json=body, headers={"X-Hydra-Token": "wrong"}).status_code == 403
    assert client.zcard("hydra:jobs") == 0
    bad = web.post("/api/jobs", json={"task": "pi", "params": {"samples": "1e30"}}, headers={"X-Hydra-Token": "s3cret"})
    assert bad.status_code == 400 and "at most" in bad.json["error"]
    bad = web.post(
        "/api/jobs", json={"task": "mandelbrot", "params": {"span": "-1"}}, headers={"X-Hydra-Token": "s3cret"}
    )
    assert bad.status_code == 400 and "positive" in bad.json["error"]
    assert web.post("/api/jobs", json={"task": "os.system"}, headers={"X-Hydra-Token": "s3cret"}).status_code == 400
    assert client.zcard("hydra:jobs") == 0
    made = web.post("/api/jobs", json=body, headers={"X-Hydra-Token": "s3cret"})
    assert made.status_code == 201
    job_id = made.json["job"]
    assert web.post(f"/api/jobs/{job_id}/cancel").status_code == 403
    assert web.post(f"/api/jobs/{job_id}/cancel", headers={"X-Hydra-Token": "s3cret"}).status_code == 200
    assert job_status(client, job_id)["state"] == "cancelled"


def test_without_a_configured_token_the_page_is_read_only(redis_server, client):
    app = create_app({"REDIS_URL": redis_server.url, "WEB_TOKEN": "", "MESSAGE_QUEUE": False})
    web = app.test_client()
    assert 'data-read-only="true"' in web.get("/").get_data(as_text=True)
    answer = web.post("/api/jobs", json={"task": "pi", "params": {}}, headers={"X-Hydra-Token": ""})
    assert answer.status_code == 403 and client.zcard("hydra:jobs") == 0


def test_finished_mandelbrot_image_is_served(app, client, cluster_factory):
    cluster_factory(1)
    job_id = submit(client, "mandelbrot", {"width": 64, "height": 48}, SubmitOptions())
    wait_for_job(client, job_id, timeout=60)
    with app.test_client().get(f"/jobs/{job_id}/image.png") as image:
        assert image.status_code == 200 and image.data.startswith(b"\x89PNG")
    assert app.test_client().get("/jobs/000000000000/image.png").status_code == 404


def test_monitor_announces_a_job_that_ended_without_an_event(redis_server, client):
    """Cancelled from the CLI, a job's final state still reaches the page through the monitor."""
    from hydra.events import Events
    from hydra.monitor import Monitor
    from hydra.queue import cancel
    from hydra.settings import Settings

    class Recorder(Events):
        def __init__(self) -> None:
            super().__init__(redis_server.url)
            self.sent: list[tuple[str, dict]] = []

        def emit(self, name: str, data) -> None:
            self.sent.append((name, data))

    events = Recorder()
    monitor = Monitor(client, Settings(), events)
    job_id = submit(client, "pi", {"samples": "1e9"}, SubmitOptions())
    monitor.run_pass()
    cancel(client, job_id)
    events.sent.clear()
    monitor.run_pass()
    states = [data["state"] for name, data in events.sent if name == "job" and data["job"] == job_id]
    assert states == ["cancelled"]
