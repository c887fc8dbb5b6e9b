"""The ``hydra`` command: submit jobs, watch them, run a local cluster, a monitor or the page.

Every error a user can cause ends as one line on stderr and a non-zero exit code:
1 other errors (e.g. cancelling a job that has ended), 2 bad input, 3 no such job, 4 Redis
unreachable, 5 job failed or cancelled, 6 job not finished yet (``hydra result`` on a running job,
or ``--timeout`` reached: the job goes on), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import redis as redis_lib

from hydra import __version__
from hydra.carbon import options as carbon_options
from hydra.cli_tasks import (
    add_output_options,
    add_task_parsers,
    all_outputs,
    glue_negative_values,
    outputs_from_args,
    params_from_args,
    task_line,
    task_rows,
)
from hydra.connection import check_reachable, connect, redact
from hydra.credit_cli import add_parser as add_credit_parser
from hydra.credit_cli import run as cmd_credit
from hydra.datadir import UP_PORT, default_data_dir, read_state, remove_state, write_state
from hydra.errors import HydraError, InvalidInput, JobNotFinished
from hydra.progress import ProgressBar, duration, human, plural
from hydra.queue import SubmitOptions, cancel, job_status, list_jobs, read_job, result_of, submit, wait_for_job
from hydra.settings import Settings
from hydra.tasks import get_task


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action) or ""


class OneLineParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {' '.join(message.split())}\n")
        raise SystemExit(2)


def _add_global_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """The options every command takes, before or after its name (``default``: SUPPRESS after it)."""
    parser.add_argument(
        "--redis-url",
        default=default,
        help="Redis of the deployment (else $HYDRA_REDIS_URL, $RQ_REDIS_URL, a running `hydra up`, "
        "redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "--tls-insecure",
        action="store_true",
        default=default,
        help="accept any TLS certificate from Redis (development only)",
    )
    parser.add_argument(
        "--data-dir",
        default=default,
        help="where `hydra up` keeps Redis data and logs (else $HYDRA_DATA_DIR or ~/.local/share/hydra)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hydra", description="Volunteer computing on Redis and rq.")
    parser.add_argument("--version", action="version", version=f"hydra {__version__}")
    _add_global_options(parser)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, argparse.SUPPRESS)
    commands = _Commands(parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser), common)

    sub = commands.add_parser("submit", help="submit a job and wait for its result")
    # Global options are accepted after the task's name too (hydra submit pi --redis-url …).
    add_task_parsers(sub, OneLineParser, _add_task_submit_options)
    tasks = commands.add_parser("tasks", help="the tasks installed here (and the live workers that run each)")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    tasks.add_argument("--offline", action="store_true", help="do not ask Redis which workers run each task")

    status = commands.add_parser("status", help="jobs and their progress (one job with JOB)")
    status.add_argument("job", nargs="?", help="a job id (default: list every job)")
    status.add_argument("--json", action="store_true", help="print JSON")
    result = commands.add_parser("result", help="the result of a finished job")
    result.add_argument("job", help="a job id")
    result.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_output_options(result, all_outputs())
    commands.add_parser("cancel", help="cancel a job").add_argument("job", help="a job id")
    commands.add_parser("workers", help="workers, their speed and what they run").add_argument(
        "--json", action="store_true", help="print JSON"
    )
    up = commands.add_parser("up", help="run a local cluster (Redis, monitor, workers, page) until Ctrl-C")
    up.add_argument("--workers", type=int, default=None, help="number of workers (default: one per core)")
    up.add_argument("--port", type=int, default=UP_PORT, help="port of its Redis")
    up.add_argument("--web-port", type=int, default=5000, help="port of the page (0: no page)")
    up.add_argument("--tls", action="store_true", help="Redis speaks only TLS, with a generated local CA")
    certs = commands.add_parser("certs", help="make a development CA and server certificate")
    certs.add_argument("--out", required=True, help="folder for ca.pem, server.pem and their keys")
    certs.add_argument(
        "--host",
        action="append",
        default=None,
        help="a name or IP address volunteers reach Redis at; repeat for several "
        "(default: localhost, 127.0.0.1 and redis)",
    )
    certs.add_argument("--force", action="store_true", help="replace an existing CA (volunteers must get the new one)")
    volunteer = commands.add_parser("volunteer", help="give or revoke a volunteer's own Redis credentials")
    volunteer_commands = _Commands(
        volunteer.add_subparsers(dest="action", required=True, parser_class=OneLineParser), commands.common
    )
    add = volunteer_commands.add_parser("add", help="create a volunteer's ACL user and print its URL")
    add.add_argument("name", help="the volunteer's name (its Redis user)")
    add.add_argument("--public-host", help="host name volunteers reach Redis at (default: that of --redis-url)")
    add.add_argument("--rotate", action="store_true", help="give an existing volunteer a new password")
    volunteer_commands.add_parser("remove", help="revoke a volunteer and requeue its chunks").add_argument(
        "name", help="the volunteer's name"
    )
    volunteer_commands.add_parser("list", help="volunteers with credentials")
    commands.add_parser("monitor", help="requeue chunks of vanished workers (long-running)")
    add_credit_parser(commands)
    web = commands.add_parser("web", help="serve the live page")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    web.add_argument("--port", type=int, default=5000, help="port to listen on")
    web.add_argument(
        "--wheel-dir",
        default=None,
        help="folder holding the hydra_volunteer wheel the Join page serves (default: $HYDRA_WHEEL_DIR, "
        "else built from this copy at start)",
    )
    return parser


class _Commands:
    """A subparsers action whose parsers also take the global options (after the command's name)."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self.action, self.common = action, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self.action.add_parser(name, parents=[self.common], **kwargs)


def _add_task_submit_options(parser: argparse.ArgumentParser) -> None:
    _add_submit_options(parser)
    _add_global_options(parser, argparse.SUPPRESS)


def _add_submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true", help="start a private cluster for this job, then stop it")
    parser.add_argument("--tls", action="store_true", help="with --local: Redis speaks only TLS")
    parser.add_argument("--workers", type=int, default=None, help="workers for --local (default: one per core)")
    parser.add_argument("--detach", action="store_true", help="print the job id and return")
    parser.add_argument("--json", action="store_true", help="print only the result, as JSON")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="target time of a chunk (default 2)")
    parser.add_argument("--chunk-units", type=int, default=None, help="fixed chunks of this many units, no adapting")
    parser.add_argument("--max-attempts", type=int, default=None, help="tries per chunk before the job fails")
    parser.add_argument(
        "--verify",
        default=None,
        choices=["1", "2", "auto"],
        help="2: every chunk confirmed by a second worker; auto: spot checks (default 1)",
    )
    parser.add_argument("--no-speculate", action="store_true", help="no copies of slow chunks at the job's tail")
    parser.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    carbon_options.add_submit_options(parser)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(glue_negative_values(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(
        level=logging.INFO if args.command in ("monitor", "web") else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        code = COMMANDS[args.command](args)
    except HydraError as exc:
        _fail(str(exc), exc.exit_code)
    except redis_lib.AuthenticationError as exc:
        _fail(f"Redis refused the credentials: {exc}", 4)
    except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
        _fail(f"lost the connection to Redis: {exc}", 4)
    except redis_lib.RedisError as exc:
        _fail(f"Redis error: {exc}", 4)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    raise SystemExit(code or 0)


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"hydra: error: {' '.join(message.split())}\n")
    raise SystemExit(code)


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return Settings.from_env(redis_url=_redis_url(args), tls_insecure=args.tls_insecure, **overrides)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def _redis_url(args: argparse.Namespace) -> str | None:
    """--redis-url, else the environment (read by Settings), else a running ``hydra up``."""
    if args.redis_url or os.environ.get("HYDRA_REDIS_URL") or os.environ.get("RQ_REDIS_URL"):
        return args.redis_url
    state = read_state(_data_dir(args))
    return state["url"] if state else None


def _where(args: argparse.Namespace) -> tuple[str, bool]:
    settings = _settings(args)
    return settings.redis_url, settings.tls_insecure


def _client(url: str, tls_insecure: bool = False) -> redis_lib.Redis:
    """A client that rides out restarts, after one quick probe so that a wrong URL fails at once."""
    if tls_insecure:
        sys.stderr.write("hydra: warning: TLS certificates are NOT verified (--tls-insecure)\n")
    probe = connect(url, retry=False, tls_insecure=tls_insecure)
    try:
        check_reachable(probe, url)
    finally:
        probe.close()
    return connect(url, tls_insecure=tls_insecure)


# -- commands ------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args, chunk_seconds=args.chunk_seconds, max_attempts=args.max_attempts)
    task = get_task(args.task)
    params = params_from_args(task, args)
    params = task.parse(params)  # bad input fails here, before anything starts or is written
    _check_outputs(args)
    if args.workers is not None and not 1 <= args.workers <= 1024:
        raise InvalidInput(f"--workers must be between 1 and 1024, got {args.workers}")
    if args.chunk_units is not None and args.chunk_units < 1:
        raise InvalidInput(f"--chunk-units must be at least 1, got {args.chunk_units}")
    if not args.local and (args.tls or args.workers is not None):
        raise InvalidInput(f"{'--tls' if args.tls else '--workers'} needs --local (a private cluster for this job)")
    options = SubmitOptions.from_settings(
        settings, chunk_units=args.chunk_units, speculate=not args.no_speculate, verify=args.verify
    )
    options = carbon_options.apply(options, args)
    if args.local:
        from hydra.local import LocalCluster

        if args.detach:
            raise InvalidInput("--detach makes no sense with --local: the cluster stops when the job ends")
        with LocalCluster(args.workers, tls=args.tls, prefork=[args.task]) as cluster:
            if not args.json:
                print(f"local cluster: {plural(cluster.n_workers, 'worker')} on {cluster.url}", file=sys.stderr)
            # Submitted at once: the workers take chunks as they come up. The page starts only if
            # the job is still running after PAGE_AFTER seconds, so a short job does not share the
            # cores with it.
            watch = _LocalWatch(cluster, quiet=args.json)
            return _submit_and_wait(_client(cluster.url), args, params, options, watch=watch)
    return _submit_and_wait(_client(settings.redis_url, settings.tls_insecure), args, params, options)


class _LocalWatch:
    """Called on each progress read of a ``--local`` job: starts the page late, and fails fast if
    every worker of the private cluster exited (a job nobody can run would wait forever)."""

    PAGE_AFTER = 2.0

    def __init__(self, cluster: Any, quiet: bool) -> None:
        self.cluster = cluster
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, bar: ProgressBar | None) -> None:
        from hydra.local import free_port

        if self.cluster.workers and all(p.poll() is not None for p in self.cluster.workers):
            raise HydraError(f"the local workers exited; see the logs in {self.cluster.directory}")
        if not self.cluster.webs and time.monotonic() - self.started > self.PAGE_AFTER:
            url = self.cluster.start_page(free_port())
            if bar:
                bar.note(f"page {url}")
            elif not self.quiet:
                print(f"page {url}", file=sys.stderr)


def _submit_and_wait(
    client: redis_lib.Redis,
    args: argparse.Namespace,
    params: dict[str, Any],
    options: SubmitOptions,
    watch: _LocalWatch | None = None,
) -> int:
    from hydra.task_workers import submit_warning

    task = get_task(args.task)
    warning = None if watch else submit_warning(client, task.name, task.version)  # --local: ours have it
    if warning and not args.json:
        sys.stderr.write(f"hydra: warning: {warning}\n")
    job_id = submit(client, args.task, params, options)
    if args.detach:
        print(json.dumps({"job": job_id}) if args.json else job_id)
        return 0
    if not args.json:
        shown = ", ".join(f"{k} {v}" for k, v in params.items())
        print(f"job {job_id}: {args.task} ({shown})", file=sys.stderr)
    bar = None if args.json else ProgressBar()

    def on_progress(status: dict[str, Any]) -> None:
        if watch:
            watch(bar)
        if bar:
            bar.update(status)

    try:
        wait_for_job(client, job_id, timeout=args.timeout, on_progress=on_progress, poll=0.05)
    except KeyboardInterrupt:
        if bar:
            bar.close()
        if not args.local:
            print(f"stopped waiting; job {job_id} goes on (hydra status {job_id})", file=sys.stderr)
        raise
    except TimeoutError:
        raise JobNotFinished(
            f"gave up waiting after {args.timeout:g} s; job {job_id} goes on (hydra status {job_id})"
        ) from None
    finally:
        if bar:
            bar.close()
    return _print_result(client, job_id, args)


def _check_outputs(args: argparse.Namespace) -> None:
    from hydra.outputs import check_writable

    for name, path in outputs_from_args(args).items():
        check_writable(path, f"--{name}")


def _print_result(client: redis_lib.Redis, job_id: str, args: argparse.Namespace) -> int:
    status = job_status(client, job_id)
    if status["state"] in ("queued", "running"):
        raise JobNotFinished(
            f"job {job_id} is {status['state']} ({status['progress']:.1%}); its result comes when it ends "
            f"(hydra status {job_id})"
        )
    result = result_of(client, job_id)  # raises JobFailed for failed or cancelled jobs
    if status.get("rate"):
        # One definition of rate (hydra.progress): the summary says what the bar said.
        result[f"{status['unit']}_per_second"] = status["rate"]
    paths = outputs_from_args(args)
    if paths:
        from hydra.outputs import write_job_outputs

        result["files"] = write_job_outputs(client, job_id, paths)
    if args.json:
        print(json.dumps(result))
        return 0
    for line in get_task(result["task"]).format(result):
        print(line)
    if "co2_grams" in result:
        from hydra.carbon.accounting import describe

        print(describe(round(result["co2_grams"] * 1000)))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    live = None
    if not args.offline:
        from hydra.task_workers import live_workers_by_task

        try:
            live = live_workers_by_task(_client(*_where(args)))
        except HydraError:
            sys.stderr.write("hydra: warning: Redis unreachable; live workers not shown\n")
    return _print_list(task_rows(live), args.json, "no tasks installed", task_line)


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(*_where(args))
    if args.job:
        from hydra.task_workers import waiting_for

        status = job_status(client, args.job)
        detail = waiting_for(client, read_job(client, args.job))
        if detail:
            status["detail"] = detail
        if args.json:
            print(json.dumps(status))
            return 0
        print(
            f"job {status['job']}  {status['task']}  {status['state']}  {status['progress']:.1%}  "
            f"{human(status['done'])}/{human(status['total'])} {status['unit']}  "
            f"{human(status['rate'])}/s  elapsed {duration(status['elapsed'])}  ETA {duration(status['eta'])}  "
            f"{plural(status['workers'], 'worker')}"
        )
        if status.get("error"):
            print(f"error: {status['error']}")
        if detail:
            print(detail)
        return 0
    return _print_list(
        list_jobs(client),
        args.json,
        "no jobs",
        lambda s: (
            f"{s['job']}  {s['task']:<10} {s['state']:<9} {s['progress']:6.1%}  "
            f"{human(s['total'])} {s['unit']}  elapsed {duration(s['elapsed'])}"
        ),
    )


def _print_list(items: list[dict[str, Any]], as_json: bool, empty: str, line: Callable[[dict[str, Any]], str]) -> int:
    """One line per item, or the items as one JSON array."""
    print(json.dumps(items) if as_json else "\n".join(line(item) for item in items) or empty)
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    return _print_result(_client(*_where(args)), args.job, args)


def cmd_cancel(args: argparse.Namespace) -> int:
    client = _client(*_where(args))
    if cancel(client, args.job):
        print(f"job {args.job} cancelled")
        return 0
    state = job_status(client, args.job)["state"]
    raise HydraError(f"job {args.job} has already ended ({state})")


def cmd_workers(args: argparse.Namespace) -> int:
    from hydra.workers import worker_list

    def line(w: dict[str, Any]) -> str:
        rates = "  ".join(f"{task} {human(rate)}/s" for task, rate in w["rates"].items())
        who = f"{w['name'][:40]:<40} {w['host'][:16]:<16} {w['device']:<4} {w['zone'] or '-':<8} {w['state']:<5}"
        return f"{who} chunks {w['chunks']:<6} {rates}"

    return _print_list(worker_list(_client(*_where(args))), args.json, "no workers", line)


def cmd_up(args: argparse.Namespace) -> int:
    from hydra.local import LocalCluster

    if args.workers is not None and not 1 <= args.workers <= 1024:
        raise InvalidInput(f"--workers must be between 1 and 1024, got {args.workers}")
    data_dir = _data_dir(args)
    running = read_state(data_dir)
    if running:
        raise HydraError(f"hydra up is already running from {data_dir} (pid {running['pid']}, {running['url']})")
    with LocalCluster(
        args.workers, web_port=args.web_port or None, tls=args.tls, data_dir=data_dir, redis_port=args.port
    ) as cluster:
        write_state(data_dir, url=cluster.url, web_url=cluster.web_url, workers=cluster.n_workers)
        try:
            print(f"redis   {cluster.url}  (data in {data_dir})")
            print(f"workers {cluster.n_workers} × rq worker hydra; monitor running")
            if cluster.web_url:
                print(f"page    {cluster.web_url}")
            print("try:    hydra submit pi --samples 1e10   (finds this cluster by itself; Ctrl-C stops everything)")
            sys.stdout.flush()
            _wait_for_signal(cluster.restart_dead_workers)
        finally:
            remove_state(data_dir)
    return 0


def _wait_for_signal(every_second: Callable[[], object] = lambda: None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            every_second()
    except KeyboardInterrupt:
        pass


def cmd_certs(args: argparse.Namespace) -> int:
    from hydra.certs import DEFAULT_HOSTS, make_certificates

    paths = make_certificates(Path(args.out), args.host or DEFAULT_HOSTS, force=args.force)
    print(f"wrote {paths['ca']} (give this CA to volunteers), {paths['cert']} and {paths['key']}")
    return 0


def cmd_volunteer(args: argparse.Namespace) -> int:
    from hydra.volunteers import add_volunteer, list_volunteers, remove_volunteer

    url, insecure = _where(args)
    client = _client(url, insecure)
    if args.action == "add":
        print(add_volunteer(client, args.name, url, args.public_host, rotate=args.rotate))
    elif args.action == "remove":
        workers = remove_volunteer(client, args.name)
        print(f"volunteer {args.name} revoked; chunks of {workers} of its workers go back to the queue")
    else:
        rows = list_volunteers(client)
        for row in rows:
            why = f"  ({row['reason']})" if row["reason"] else ""
            print(f"{row['name']:<24} {row['state']:<11} {row['workers']} worker(s){why}")
        if not rows:
            print("no volunteers")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from hydra.events import Events
    from hydra.monitor import Monitor
    from hydra.secrets import check_secrets

    settings = _settings(args)
    check_secrets(settings.redis_url)
    client = connect(settings.redis_url, tls_insecure=settings.tls_insecure)
    stop = threading.Event()
    monitor = Monitor(client, settings, Events(settings.redis_url))

    def on_sigterm(*_: object) -> None:
        stop.set()
        monitor.wake()

    signal.signal(signal.SIGTERM, on_sigterm)
    logging.getLogger(__name__).info("monitor watching %s", redact(settings.redis_url))
    with contextlib.suppress(KeyboardInterrupt):
        monitor.run(stop)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    try:
        from hydra_web.server import serve
    except ImportError:
        raise HydraError("the web page is not installed with this copy of Hydra") from None
    serve(_settings(args).redis_url, host=args.host, port=args.port, wheel_dir=args.wheel_dir)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "tasks": cmd_tasks,
    "status": cmd_status,
    "result": cmd_result,
    "cancel": cmd_cancel,
    "workers": cmd_workers,
    "up": cmd_up,
    "monitor": cmd_monitor,
    "web": cmd_web,
    "certs": cmd_certs,
    "volunteer": cmd_volunteer,
    "credit": cmd_credit,
}
