"""The swarm benchmark runs end to end at small N and its JSON holds sane, exact figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_swarm_quick_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "swarm.json"
    done = subprocess.run(
        # Two simulator processes: the helper's results must be counted with the main one's.
        [sys.executable, "-m", "bench.swarm", "--quick", "--procs", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the timeline chart beside it"
    assert [run["n"] for run in data["runs"]] == [20, 60]
    for run in data["runs"]:
        # Every unit of the job done exactly once, and the sum agrees.
        assert run["state"] == "done"
        assert run["exact"] is True
        assert run["units_done"] == run["units_total"] == run["sum_n"]
        assert run["simulator_processes"] == 2 and run["users"] == run["n"]
        assert run["chunks"] > 0 and run["results_sent"] >= run["chunks"]
        assert run["chunks_per_s"] > 0
        assert 0 < run["dispatch_p50_ms"] <= run["dispatch_p99_ms"] < 5000
        # Every volunteer's first chunk, timed from the submit (they all said hello before it).
        assert 0 <= run["first_chunk_wait_p50_s"] <= run["first_chunk_wait_p99_s"] <= run["first_chunk_wait_max_s"]
        assert run["first_chunk_wait_max_s"] < run["job_seconds"]
        assert run["monitor"]["passes"] > 0 and run["monitor"]["longest_pass_s"] > 0
        assert 0 < run["redis_cpu_share"] < 2
        assert run["memory_per_volunteer_bytes"] > 0
        timing = run["monitor"]["result_timing"]
        stamped = timing.get("late", {}).get("n", 0)
        assert stamped > timing.get("late_unstamped", {}).get("n", 0), "most results timed by their arrival stamp"
    real = data["real_worker"]
    assert real["exact"] is True
    assert real["commands_per_chunk"] > 1 and real["redis_cpu_us_per_chunk"] > 0
    # Every chunk's result is read from a worker's socket and its next descriptor written to one.
    assert real["socket_reads_per_chunk"] >= 1 and real["socket_writes_per_chunk"] >= 1
    assert real["redis_cpu_us_per_ping"] > 0
    assert [c["chunk_seconds"] for c in data["capacity"]] == [2.0, 30.0]
    assert all(c["volunteers_per_redis_core"] > 0 for c in data["capacity"])
    assert "capacity at 2 s chunks" in done.stdout


@pytest.mark.timeout(120)
def test_collect_bench_measures_batches_cheaper_per_result_than_a_result_alone(tmp_path: Path) -> None:
    out = tmp_path / "collect.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.collect", "--results", "400", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    alone, batched, crowd = json.loads(out.read_text())["rows"]
    assert alone["results"] >= 400 and batched["results"] >= 400 and crowd["results"] >= 400
    assert crowd["volunteers"] == 64 and crowd["drained_together"] is True
    # Counted, not timed: a batch shares its round trips, its reads and its top-ups, whether its
    # results come from one volunteer's workers or from many volunteers.
    assert batched["redis_commands_per_result"] < alone["redis_commands_per_result"]
    assert crowd["redis_commands_per_result"] < alone["redis_commands_per_result"]
