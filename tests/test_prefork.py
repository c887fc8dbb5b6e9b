"""``hydra submit --local`` forks its workers from one process started before the CLI's imports."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest

from hydra.tasks.pi.kernel import count_inside_samples
from tests.conftest import answers, long_local_job, run_cli, wait_until


def marked(mark: str) -> list[int]:
    """Processes whose environment carries ``mark`` (this test's, whatever their parent now is)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_a_local_job_runs_on_forked_workers_and_is_exact():
    # 4e9 samples: long enough (about 2 s of one core) that both workers take chunks.
    done = run_cli("submit", "pi", "--samples", "4e9", "--seed", "7", "--local", "--workers", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["inside"] == count_inside_samples(7, 0, 4 * 10**9)
    assert result["workers"] == 2, "both forked workers took chunks"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_bad_input_with_local_gives_one_line_and_leaves_no_process_behind():
    mark = f"HYDRA_TEST_MARK={secrets.token_hex(8)}"
    name, value = mark.split("=")
    done = run_cli("submit", "pi", "--samples", "lots", "--local", env={name: value})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--samples" in done.stderr
    # The worker process started early (before the arguments were read) ends with the command.
    wait_until(lambda: not [p for p in marked(mark) if p != os.getpid()], timeout=20, what="no process left")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups")
def test_a_local_job_still_running_after_two_seconds_gets_its_page():
    import signal

    proc = long_local_job()
    try:
        page = None
        for line in proc.stderr:  # type: ignore[union-attr]
            if "page http" in line:
                page = line[line.index("http") :].split()[0]
                break
        assert page, "the page was announced once the job had run for 2 s"
        wait_until(lambda: answers(page), timeout=60, what="the page to answer")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        proc.stderr.close()  # type: ignore[union-attr]
