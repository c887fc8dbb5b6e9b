"""The benchmark suite runs end to end in quick mode and produces its table (nothing is timed here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_quick_suite_produces_its_table_json_and_chart():
    pytest.importorskip("dask.distributed", reason="the benchmark extra (pip install -e '.[bench]') is not installed")
    pytest.importorskip("matplotlib", reason="the benchmark extra is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hydra/bare" in done.stdout and "mandelbrot uneven" in done.stdout
    rows = json.loads((ROOT / "bench" / "out" / "suite.json").read_text())["rows"]
    assert {r["workload"].split()[0] for r in rows} == {"pi", "mandelbrot"}
    assert all(r["bare"] > 0 and r["hydra"] > 0 and r["dask"] > 0 for r in rows)
    assert (ROOT / "bench" / "out" / "suite.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("bench", "size", "reads"),
    [
        ("board", "volunteers", ("whole_board_ms", "signed_top_ms")),
        ("pool", "workers", ("every_worker_ms", "totals_ms")),
    ],
)
def test_a_read_that_grows_and_its_bounded_replacement_agree_in_their_bench(tmp_path, bench, size, reads):
    """bench.board and bench.pool exit non-zero if their two reads (the whole board and the top of
    the rank; every worker and the zone totals) give different answers."""
    rows = _rows_of(bench, tmp_path, "--sizes", "300,3000")
    assert [r[size] for r in rows] == [300, 3000]
    assert all(r[read] > 0 for r in rows for read in reads)


def test_the_signing_bench_checks_every_head_it_times(tmp_path):
    """bench.sign exits non-zero if a slice is not signed whole or a signed root differs from the one
    recomputed from every entry; it reports the round trips a slice makes (3, see bench.sign)."""
    rows = _rows_of("sign", tmp_path, "--sizes", "16,100", "--slices", "3", "--base", "500")
    assert [(r["slice"], r["round_trips"]) for r in rows] == [(16, 3), (100, 3)]
    assert all(r["idle_ms"] > 0 and r["busy_ms"] > 0 for r in rows)


def _rows_of(bench: str, tmp_path, *args: str) -> list[dict]:
    """Run ``python -m bench.<bench> *args``, which must succeed, and return the rows of its --json."""
    out = tmp_path / f"{bench}.json"
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())["rows"]
