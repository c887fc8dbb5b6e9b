"""The deployment files: the compose file's structure, its commands run for real, and redis.conf.

There is no Docker engine here, so the compose file is checked by parsing it and by running each
service's command and environment as local processes against a redis-server started with the
project's redis.conf (port, directory and password overridden).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import redis as redis_lib
import yaml

from hydra.local import RedisServer, free_port, spawn, stop_process
from tests.conftest import ROOT, run_cli, wait_until

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PASSWORD = "test-password-123"


def expand(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} interpolation."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env and env[name] != "":
            return env[name]
        if op == ":?":
            raise AssertionError(f"compose would stop: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def test_compose_structure():
    assert set(SERVICES) == {"redis", "web", "monitor", "worker"}
    assert SERVICES["worker"]["command"] == ["rq", "worker", "hydra"]
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert "redis-data:/data" in SERVICES["redis"]["volumes"] and "redis-data" in COMPOSE["volumes"]
    assert any(v.startswith("./redis.conf:") for v in SERVICES["redis"]["volumes"])
    for name in ("redis", "web"):
        assert SERVICES[name]["healthcheck"]["test"]
    for name in ("web", "monitor", "worker"):
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert SERVICES[name]["environment"]["RQ_WORKER_CLASS"] == "hydra.worker.HydraWorker"
    for name, service in SERVICES.items():
        assert service["restart"] == "unless-stopped", name
    assert "container_name" not in SERVICES["worker"] and "ports" not in SERVICES["worker"]  # --scale works
    text = (ROOT / "docker-compose.yml").read_text()
    assert "REDIS_PASSWORD:?" in text and "change-me" not in text


def test_no_secret_is_committed():
    assert (ROOT / ".env.example").exists()
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert "requirepass" not in re.sub(r"#.*", "", (ROOT / "redis.conf").read_text())


def test_compose_redis_keeps_users_in_an_acl_file_and_never_runs_without_a_password():
    command = " ".join(SERVICES["redis"]["command"])
    assert "--aclfile /data/users.acl" in command and "requirepass" not in command  # ignored with an ACL file
    assert "user default on >$$REDIS_PASSWORD" in command


@pytest.fixture
def conf_server(tmp_path: Path):
    # What the compose file's redis command does: the default user's line from .env, then the ACL file.
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default on >{PASSWORD} ~* &* +@all\n")
    server = RedisServer(
        tmp_path,
        config_file=ROOT / "redis.conf",
        extra=["--aclfile", str(acl), "--appendonly", "yes", "--bind", "127.0.0.1"],
    ).start()
    yield server
    server.stop()


def test_redis_conf_loads_and_refuses_unauthenticated_clients(conf_server):
    anonymous = redis_lib.Redis(port=conf_server.port)
    with pytest.raises(redis_lib.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    admin = redis_lib.Redis(port=conf_server.port, password=PASSWORD, decode_responses=True)
    assert admin.ping()
    assert admin.config_get("appendonly")["appendonly"] == "yes"
    assert admin.config_get("appendfsync")["appendfsync"] == "everysec"
    assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert int(admin.config_get("maxmemory")["maxmemory"]) > 0
    assert admin.config_get("protected-mode")["protected-mode"] == "yes"
    assert set("Klx") <= set(admin.config_get("notify-keyspace-events")["notify-keyspace-events"])
    assert int(admin.config_get("proto-max-bulk-len")["proto-max-bulk-len"]) == 32 * 1024**2
    admin.close()


def test_redis_conf_publishes_the_notices_the_monitor_listens_to(conf_server):
    """A Redis set up with the project's redis.conf (a managed one configured as the README says,
    where the monitor may not run CONFIG) already publishes every notice the monitor needs."""
    from hydra.monitor import enable_notifications

    admin = redis_lib.Redis(port=conf_server.port, password=PASSWORD, decode_responses=True)
    try:
        assert enable_notifications(admin) is False, "the monitor had to change notify-keyspace-events"
    finally:
        admin.close()


def command_and_env(service: str, redis_port: int, web_port: int) -> tuple[list[str], dict[str, str]]:
    """The service's command and environment from the compose file, pointed at this machine."""
    env_file = {"REDIS_PASSWORD": PASSWORD, "HYDRA_WEB_TOKEN": "t"}
    env = {
        k: expand(str(v), env_file).replace("@redis:6379", f"@127.0.0.1:{redis_port}")
        for k, v in SERVICES[service]["environment"].items()
    }
    if "HYDRA_LEDGER_KEY" in env:  # a volume in the container; a temporary file here
        env["HYDRA_LEDGER_KEY"] = str(Path(tempfile.mkdtemp()) / "ledger-key.pem")
    command = [expand(str(part), env_file) for part in SERVICES[service]["command"]]
    if command[0] == "hydra":
        command = [sys.executable, "-m", "hydra", *command[1:]]
    elif command[0] == "rq":
        command = [
            str(Path(sys.executable).parent / "rq") if shutil.which("rq") else sys.executable,
            *(command[1:] if shutil.which("rq") else ["-m", "rq.cli", *command[1:]]),
        ]
    command = [str(web_port) if part == "5000" else part for part in command]
    command = ["127.0.0.1" if part == "0.0.0.0" else part for part in command]
    return command, env


@pytest.mark.slow
def test_the_compose_commands_run_a_working_cluster(conf_server):
    web_port = free_port()
    processes = []
    try:
        for service in ("monitor", "worker", "web"):
            command, env = command_and_env(service, conf_server.port, web_port)
            processes.append(spawn(command, env=env))
        url = f"redis://:{PASSWORD}@127.0.0.1:{conf_server.port}/0"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=1) as answer:
                    return json.loads(answer.read()) == {"ok": True}
            except OSError:
                return False

        wait_until(healthy, timeout=60, what="the web service's health check")
        done = run_cli("--redis-url", url, "submit", "pi", "--samples", "2e7", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["samples"] == 20_000_000
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=5) as page:
            assert b"Hydra" in page.read()
    finally:
        for proc in processes:
            stop_process(proc)


def test_compose_cli_validates_the_file_when_installed(tmp_path):
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose (Debian's package) is not installed")
    for name in ("docker-compose.yml", "redis.conf"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    valid = subprocess.run(
        [compose, "config", "-q"], cwd=tmp_path, env={**env, "REDIS_PASSWORD": "x"}, capture_output=True, text=True
    )
    assert valid.returncode == 0, valid.stderr
    missing = subprocess.run([compose, "config", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "REDIS_PASSWORD" in missing.stderr
