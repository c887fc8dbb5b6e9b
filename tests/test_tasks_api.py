"""The page's task routes: parameter schemas for the generated form, and a job's chart series."""

from __future__ import annotations

import pytest

from hydra import keys
from hydra.queue import SubmitOptions, submit
from hydra.tasks.pi.kernel import BLOCK
from hydra_web.app import create_app


@pytest.fixture
def http(redis_server):
    return create_app({"REDIS_URL": redis_server.url, "WEB_TOKEN": "s3cret", "MESSAGE_QUEUE": False}).test_client()


def test_api_tasks_lists_declared_parameters(http):
    tasks = {t["name"]: t for t in http.get("/api/tasks").get_json()}
    assert {"pi", "mandelbrot", "primes"} <= set(tasks)
    below = tasks["primes"]["params"][0]
    assert (below["name"], below["flag"], below["kind"], below["default"]) == ("below", "--below", "count", "1e9")
    assert below["low"] == 2 and "default 1e9" in below["describe"]
    assert [o["name"] for o in tasks["mandelbrot"]["outputs"]] == ["out", "counts"]
    assert tasks["pi"]["series"][0] == "samples" and len(tasks["pi"]["fingerprint"]) == 64


def test_the_page_mounts_the_generated_form(http):
    page = http.get("/").get_data(as_text=True)
    assert 'id="task-fields"' in page and "taskform.js" in page and 'data-task="pi"' not in page
    with http.get("/static/taskform.js") as script:
        assert script.status_code == 200 and b"/api/tasks" in script.data


def test_series_follow_the_trace(http, client):
    job_id = submit(client, "pi", {"samples": str(4 * BLOCK)}, SubmitOptions())
    assert http.get(f"/api/jobs/{job_id}/series").get_json() == {
        "labels": ["samples", "π", "standard error"],
        "points": [],
    }
    client.rpush(keys.trace(job_id), f"2 {BLOCK * 3 // 2}")
    points = http.get(f"/api/jobs/{job_id}/series").get_json()["points"]
    assert points[0][:2] == [2 * BLOCK, 3.0]


def test_submitting_through_the_form_route_validates_declared_params(http):
    answer = http.post(
        "/api/jobs", json={"task": "primes", "params": {"below": "1"}}, headers={"X-Hydra-Token": "s3cret"}
    )
    assert answer.status_code == 400 and "at least 2" in answer.get_json()["error"]
