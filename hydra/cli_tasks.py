"""The parts of the ``hydra`` command generated from the installed tasks' declarations.

``hydra submit <task> --<param> …``: one subcommand per installed task, one option per declared
parameter (its help says the bounds and the default) and per declared output file. Nothing here
names a task. ``hydra tasks`` lists what is installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.tasks import installed, task_fingerprint
from hydra.tasks.base import Task

# Output files go to ``args.output_<name>`` so that an output never collides with a parameter.
_OUTPUT_DEST = "output_{}"


def add_task_parsers(
    submit: argparse.ArgumentParser, parser_class: type, add_common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """One ``hydra submit <task>`` subcommand per installed task, with its declared options."""
    tasks: Any = submit.add_subparsers(dest="task", required=True, parser_class=parser_class)
    for name, task in sorted(installed().items()):
        doc = (type(task).__doc__ or type(task).__module__).strip().splitlines()
        sub = tasks.add_parser(name, help=f"{doc[0] if doc else name} (version {task.version})")
        for param in task.params:
            sub.add_argument(
                param.flag, dest=param.name, default=None, metavar=param.name.upper(), help=param.describe()
            )
        add_output_options(sub, task.outputs)
        add_common(sub)


def add_output_options(parser: argparse.ArgumentParser, outputs: Sequence[Any]) -> None:
    for output in outputs:
        parser.add_argument(
            f"--{output.name}", dest=_OUTPUT_DEST.format(output.name), default=None, metavar="PATH", help=output.help
        )


def all_outputs() -> list[Any]:
    """Every output any installed task declares (for ``hydra result JOB --out …``), once per name."""
    seen: dict[str, Any] = {}
    for task in installed().values():
        for output in task.outputs:
            seen.setdefault(output.name, output)
    return list(seen.values())


def params_from_args(task: Task, args: argparse.Namespace) -> dict[str, Any]:
    """The parameters given on the command line (the task's defaults fill the rest)."""
    return {p.name: getattr(args, p.name) for p in task.params if getattr(args, p.name, None) is not None}


def outputs_from_args(args: argparse.Namespace, task: Task | None = None) -> dict[str, str]:
    """output name → path for the outputs given on the command line."""
    names = [o.name for o in task.outputs] if task else [o.name for o in all_outputs()]
    return {n: getattr(args, _OUTPUT_DEST.format(n)) for n in names if getattr(args, _OUTPUT_DEST.format(n), None)}


def glue_negative_values(argv: list[str]) -> list[str]:
    """``--center -0.5,0`` → ``--center=-0.5,0``: argparse would take the value for an option."""
    flags = {p.flag for task in installed().values() for p in task.params if p.kind in ("float", "point")}
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in flags and arg[:1] == "-" and arg[1:2] in set("0123456789."):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def task_rows(live: Mapping[str, Mapping[str, int]] | None = None) -> list[dict[str, Any]]:
    """One row per installed task: name, version, fingerprint, parameters and (with ``live``) workers.

    ``live``: task name → {version: number of live workers advertising it} (see hydra.task_workers).
    """
    rows = []
    for name, task in sorted(installed().items()):
        row: dict[str, Any] = {
            "name": name,
            "version": task.version,
            "fingerprint": task_fingerprint(task),
            "module": type(task).__module__,
            "params": [p.name for p in task.params],
        }
        if live is not None:
            row["workers"] = dict(live.get(name, {}))
        rows.append(row)
    return rows


def task_line(row: Mapping[str, Any]) -> str:
    line = f"{row['name']:<12} version {row['version']:<6} {row['fingerprint'][:12]}  {row['module']}"
    if "workers" in row:
        same = row["workers"].get(row["version"], 0)
        others = {v: n for v, n in row["workers"].items() if v != row["version"]}
        line += f"  live workers {same}" + "".join(f" (+{n} on version {v})" for v, n in sorted(others.items()))
    return line
