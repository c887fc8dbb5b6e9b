"""The tasks installed here: every ``hydra.tasks`` entry point of every installed package.

A package adds a task with no change to Hydra::

    [project.entry-points."hydra.tasks"]
    collatz = "hydra_collatz:CollatzTask"

The entry point's name is the task's name; it points at a :class:`~hydra.tasks.base.Task` subclass
(or an instance). Hydra's own tasks (pi, mandelbrot, primes) register the same way, in Hydra's
pyproject.toml. A task that fails to load is logged and left out; the others still work. What a
worker can run is what is installed on its machine: a chunk descriptor names a task and its
version, and the queue never carries code.

``task_fingerprint`` identifies the code of a task: the sha256 of its package's source files.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path

from hydra.errors import InvalidInput
from hydra.tasks.base import Task

GROUP = "hydra.tasks"

log = logging.getLogger(__name__)


@functools.cache
def installed() -> dict[str, Task]:
    """name → task, for every task this machine can run (loaded once per process)."""
    tasks: dict[str, Task] = {}
    for point in sorted(entry_points(group=GROUP), key=lambda p: (p.name, p.value)):
        if point.name in tasks:
            log.warning("task %r registered twice; keeping %s", point.name, type(tasks[point.name]).__module__)
            continue
        try:
            loaded = point.load()
            task = loaded() if isinstance(loaded, type) else loaded
            _check(point.name, task)
        except Exception as exc:  # a broken plug-in must not take Hydra down
            log.warning("task %r (%s) not loaded: %s", point.name, point.value, exc)
            continue
        tasks[point.name] = task
    return tasks


def _check(name: str, task: object) -> None:
    if not isinstance(task, Task):
        raise TypeError("not a hydra.tasks.base.Task")
    if getattr(task, "name", None) != name:
        raise ValueError(f"entry point {name!r} names a task called {getattr(task, 'name', None)!r}")
    version = getattr(task, "version", None)
    if not isinstance(version, str) or not version or len(version) > 32:
        raise ValueError("version must be a non-empty string of at most 32 characters")
    task.reductions()  # a wrong reduce declaration fails here, not in the middle of a job


def get_task(name: str) -> Task:
    try:
        return installed()[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(installed()))
        raise InvalidInput(f"unknown task {name!r} (installed: {known})") from None


@functools.cache
def _fingerprint(cls: type) -> str:
    module = sys.modules[cls.__module__]
    path = Path(module.__file__ or "")
    files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
    digest = hashlib.sha256()
    for file in files:
        relative = file.relative_to(path.parent).as_posix()
        digest.update(f"{relative}\0{len(file.read_bytes())}\0".encode() + file.read_bytes())
    return digest.hexdigest()


def task_fingerprint(task: Task) -> str:
    """sha256 of the task's source: every .py of its package (or its module, if it is a lone module)."""
    return _fingerprint(type(task))


class _Installed(Mapping[str, Task]):
    """``TASKS``: a read-only view of :func:`installed`, loaded on first use, not at import."""

    def __getitem__(self, name: str) -> Task:
        return installed()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(installed())

    def __len__(self) -> int:
        return len(installed())


TASKS: Mapping[str, Task] = _Installed()
