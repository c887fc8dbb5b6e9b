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


def test_board_bench_runs_and_its_two_reads_agree(tmp_path):
    """bench.board exits non-zero if the top of the rank and the whole board rank differently."""
    out = tmp_path / "board.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.board", "--sizes", "300,3000", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["volunteers"] for r in rows] == [300, 3000]
    assert all(r["whole_board_ms"] > 0 and r["signed_top_ms"] > 0 for r in rows)
