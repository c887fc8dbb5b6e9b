"""Several local workers from one process that has already imported them (``hydra submit --local``).

Most of a worker's start is importing rq, Hydra and numba and loading its kernel from numba's cache
(about 0.6 s of CPU). ``hydra submit --local`` starts one worker per core on the very cores that are
about to run the job, so this process does that once, for the job's task, and then forks the
workers, as the bare kernel's own benchmark forks its processes. Each child is the same
:class:`hydra.worker.HydraWorker` a volunteer runs with ``rq worker hydra``, with its own volunteer
credential; only the start differs. ``hydra up`` and the compose file start ``rq worker hydra``.

    python -m hydra.prefork [TASK ...]      then, on stdin: {"log": PATH, "urls": [URL, ...]}

It imports and loads the kernels first and reads its orders after, so the command line starts it
before anything else (:func:`start_early`, from :mod:`hydra.entry`): its imports run while the CLI
imports its own and starts Redis. Credentials come on stdin (argv is public). The children die
with this process; it passes SIGTERM and SIGINT on to them and exits when they have. End of input
before any orders (the command failed before it needed workers) ends it quietly.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys

# Started by start_early, with the tasks it loads; taken by launch.
EARLY: tuple[subprocess.Popen, list[str]] | None = None


def start_early(argv: list[str]) -> None:
    """If this command line is ``submit TASK … --local``, start the prefork process now, before
    the CLI imports anything: it costs nothing if the command then fails (it ends with our stdin)."""
    global EARLY
    if len(argv) < 2 or argv[0] != "submit" or "--local" not in argv:
        return
    if any(a in ("-h", "--help", "--tls", "--detach") for a in argv) or argv[1].startswith("-"):
        return
    with contextlib.suppress(OSError):
        EARLY = _spawn([argv[1]]), [argv[1]]


def die_with_parent(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (run in the child)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def _spawn(tasks: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hydra.prefork", *tasks],
        env={**os.environ, **(env or {})},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: die_with_parent(signal.SIGTERM),
        start_new_session=True,
    )


def launch(tasks: list[str], urls: list[str], log_path: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The prefork process for these workers: the early one if it fits, else a new one."""
    global EARLY
    proc = None
    if EARLY is not None and EARLY[0].poll() is None and EARLY[1] == tasks and not env:
        proc, EARLY = EARLY[0], None
    if proc is None:
        proc = _spawn(tasks, env)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"log": log_path, "urls": urls}).encode() + b"\n")
    proc.stdin.close()
    return proc


def _run_worker(url: str) -> int:
    """In the forked child: one HydraWorker until it stops (as ``rq worker hydra --quiet``)."""
    import redis

    from hydra.settings import QUEUE_NAME
    from hydra.worker import HydraWorker

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    try:
        worker = HydraWorker([QUEUE_NAME], connection=redis.Redis.from_url(url))
        worker.work(logging_level="WARNING")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001 - one line in the log, never a traceback
        print(f"hydra worker: {type(exc).__name__}: {exc}", flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from hydra.tasks import get_task, installed
    from hydra.worker import HydraWorker  # noqa: F401 - imported once, before the fork

    installed()
    for name in args:  # the job's task: its kernel loaded once, here
        with contextlib.suppress(Exception):
            get_task(name).warm_up()
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the command ended before it needed workers
    orders = json.loads(line)
    with open(orders["log"], "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    urls = [str(u) for u in orders["urls"]]
    children: list[int] = []
    for url in urls:
        pid = os.fork()
        if pid == 0:
            die_with_parent(signal.SIGKILL)
            sys.stdout.flush()
            os._exit(_run_worker(url))
        children.append(pid)

    def pass_on(signum: int, frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    worst = 0
    for child in children:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except ChildProcessError:
                status = 0
                break
            except InterruptedError:
                continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
