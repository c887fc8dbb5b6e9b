"""The lead benchmark (Hydra against Dask, throttled, killed and late workers) runs in quick mode.

Nothing is timed here: the counts of both systems must equal the bare kernel's in every scenario,
and the JSON must carry the figures the README quotes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_quick_lead_bench_counts_are_exact_and_json_has_its_figures():
    pytest.importorskip("dask.distributed", reason="the benchmark extra (pip install -e '.[bench]') is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "bench.lead", "--quick"], capture_output=True, text=True, cwd=ROOT, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hydra / dask" in done.stdout
    report = json.loads((ROOT / "bench" / "out" / "lead.json").read_text())
    assert set(report["scenarios"]) == {"throttled", "killed", "joiner"}
    assert report["dask_tasks"]["4x"] == 8 and report["dask_tasks"]["2s"] >= 1
    for name, scenario in report["scenarios"].items():
        assert scenario["ideal"] > 0, name
        assert scenario["dask_best"] in ("dask_4x", "dask_2s"), name
        assert scenario["hydra_over_dask"] > 0, name
        for system in ("hydra", "dask_4x", "dask_2s"):
            run = scenario[system]
            assert run["inside"] == report["exact_inside"], (name, system)
            assert run["exact"] is True
            assert run["makespan"] > 0 and run["ratio_to_ideal"] > 0, (name, system)
    assert report["scenarios"]["killed"]["hydra"]["kills"] >= 1, "quick mode must kill a worker at least once"
