"""Mandelbrot: counts exactly as defined, identical for any workers, crashes included."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from PIL import Image

from hydra import keys
from hydra.queue import SubmitOptions, job_status, submit, wait_for_job
from hydra.tasks.mandelbrot.kernel import escape_counts, escape_counts_reference, estimate_row_costs
from tests.conftest import run_cli, wait_until

VIEWS = [
    (-0.5, 0.0, 3.0, 37, 23, 200),  # full view, non-square
    (-0.7436, 0.1318, 1e-4, 40, 30, 3000),  # deep zoom
    (0.3, -0.4, 0.2, 25, 31, 500),  # off-centre
    (-0.75, 0.0, 0.02, 30, 30, 1000),  # the neck between cardioid and bulb: the shortcut's edge
    (0.25, 0.0, 0.01, 20, 20, 2000),  # the cardioid's cusp
]


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_kernel_matches_the_numpy_definition_in_any_pieces(view, dtype):
    cx, cy, span, w, h, max_iter = view
    reference = escape_counts_reference(cx, cy, span, w, h, max_iter)
    whole = np.empty((h, w), dtype)
    total = escape_counts(cx, cy, span, w, h, max_iter, 0, h, whole)
    assert np.array_equal(whole, reference)
    assert total == int(reference.sum())
    pieces = np.concatenate([_rows(view, dtype, a, b) for a, b in ((0, 1), (1, 7), (7, h))])
    assert np.array_equal(pieces, reference)


def _rows(view, dtype, a, b):
    cx, cy, span, w, h, max_iter = view
    out = np.empty((b - a, w), dtype)
    escape_counts(cx, cy, span, w, h, max_iter, a, b - a, out)
    return out


def test_cost_estimate_is_positive_and_follows_the_set():
    costs = estimate_row_costs(-0.5, 0, 3, 400, 300, 1000)
    assert costs.shape == (300,) and (costs >= 400).all()
    assert costs[150] > 10 * costs[0]  # the middle row crosses the set, the top one does not


def render(url: str, tmp_path, name: str, extra=()) -> tuple[np.ndarray, str]:
    out, counts = tmp_path / f"{name}.png", tmp_path / f"{name}.npy"
    done = run_cli(
        "--redis-url",
        url,
        "submit",
        "mandelbrot",
        "--width",
        "300",
        "--height",
        "200",
        "--max-iter",
        "800",
        "--center",
        "-0.75,0.1",
        "--span",
        "0.6",
        "--out",
        str(out),
        "--counts",
        str(counts),
        "--chunk-seconds",
        "0.05",
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return np.load(counts), str(out)


def test_one_and_three_workers_give_identical_counts_and_a_real_png(redis_server, tmp_path, cluster_factory):
    cluster = cluster_factory(1)
    cluster.wait_for_workers(1)
    one, png = render(redis_server.url, tmp_path, "one")
    cluster.add_worker()
    cluster.add_worker()
    cluster.wait_for_workers(3)
    three, _ = render(redis_server.url, tmp_path, "three")
    assert one.dtype == np.uint16 and one.shape == (200, 300)
    assert np.array_equal(one, three)
    assert np.array_equal(one, escape_counts_reference(-0.75, 0.1, 0.6, 300, 200, 800))
    with Image.open(png) as image:
        assert image.size == (300, 200)
        assert len(set(image.convert("RGB").get_flattened_data())) > 20


def test_a_worker_killed_mid_render_changes_nothing(client, cluster_factory, tmp_path):
    cluster = cluster_factory(2)
    cluster.wait_for_workers(2)
    params = {"width": 1200, "height": 900, "max_iter": 3000, "center": "-0.7436,0.1318", "span": 0.003}
    job_id = submit(client, "mandelbrot", params, SubmitOptions(chunk_seconds=0.3))
    wait_until(
        lambda: client.zcard(keys.DEADLINES) >= 1 and job_status(client, job_id)["progress"] > 0.05,
        what="render under way",
    )
    cluster.workers[0].send_signal(signal.SIGKILL)
    cluster.workers[0].wait()
    assert wait_for_job(client, job_id, timeout=300)["state"] == "done"
    from hydra.outputs import write_job_outputs

    write_job_outputs(client, job_id, {"counts": tmp_path / "c.npy"})
    expected = np.empty((900, 1200), np.uint16)
    escape_counts(-0.7436, 0.1318, 0.003, 1200, 900, 3000, 0, 900, expected)
    assert np.array_equal(np.load(tmp_path / "c.npy"), expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "0"], "at least 1"),
        (["--width", "70000"], "at most"),
        (["--height", "-3"], "at least 1"),
        (["--max-iter", "0"], "at least 1"),
        (["--max-iter", "2e7"], "at most"),
        (["--center", "abc"], "--center"),
        (["--center", "1,2,3"], "--center"),
        (["--span", "0"], "positive"),
        (["--span", "-1"], "positive"),
        (["--span", "inf"], "finite"),
        (["--span", "nan"], "finite"),
        (["--out", "/nonexistent-dir/x.png"], "cannot write"),
    ],
)
def test_bad_mandelbrot_input_fails_before_anything_is_enqueued(redis_server, client, args, message):
    before = sorted(client.keys("*"))
    done = run_cli("--redis-url", redis_server.url, "submit", "mandelbrot", *args)
    assert done.returncode != 0 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(client.keys("*")) == before
