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
def _points() -> dict[str, list]:
    """name → its entry points (more than one: a conflict, the first by value wins)."""
    points: dict[str, list] = {}
    for point in sorted(entry_points(group=GROUP), key=lambda p: (p.name, p.value)):
        points.setdefault(point.name, []).append(point)
    return points


@functools.cache
def _load(name: str) -> Task | None:
    """The task called ``name``, loaded once per process; None if absent or broken. Only this one
    is imported: the trusted side plans a pi job without importing every plug-in (and numba)."""
    found = _points().get(name, [])
    if len(found) > 1:
        log.warning("task %r registered twice; keeping %s", name, found[0].value)
    for point in found[:1]:
        try:
            loaded = point.load()
            task = loaded() if isinstance(loaded, type) else loaded
            _check(name, task)
        except Exception as exc:  # a broken plug-in must not take Hydra down
            log.warning("task %r (%s) not loaded: %s", name, point.value, exc)
            return None
        return task
    return None


@functools.cache
def installed() -> dict[str, Task]:
    """name → task, for every task this machine can run (loaded once per process)."""
    return {name: task for name in _points() if (task := _load(name)) is not None}


def _check(name: str, task: object) -> None:
    if not isinstance(task, Task):
        raise TypeError("not a hydra.tasks.base.Task")
    if getattr(task, "name", None) != name:
        raise ValueError(f"entry point {name!r} names a task called {getattr(task, 'name', None)!r}")
    version = getattr(task, "version", None)
    if not isinstance(version, str) or not version or len(version) > 32:
        raise ValueError("version must be a non-empty string of at most 32 characters")
    task.reductions()  # a wrong reduce declaration fails here, not in the middle of a job


def _lookup(name: object) -> Task | None:
    """The task called ``name``: from the full registry once it is loaded (a benchmark may add to
    it), else loading that one plug-in only."""
    if not isinstance(name, str):
        return None
    if installed.cache_info().currsize:
        return installed().get(name)
    return _load(name)


def known(name: str) -> bool:
    """Whether a task called ``name`` is installed here, without loading it (nor caching a miss:
    names come from volunteers' hellos, which may make up any number of them)."""
    return name in _points() or (installed.cache_info().currsize > 0 and name in installed())


def get_task(name: str) -> Task:
    task = _lookup(name)
    if task is None:
        known = ", ".join(sorted(installed()))
        raise InvalidInput(f"unknown task {name!r} (installed: {known})")
    return task


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
        task = _lookup(name)
        if task is None:
            raise KeyError(name)
        return task

    def __iter__(self) -> Iterator[str]:
        return iter(installed())

    def __len__(self) -> int:
        return len(installed())


TASKS: Mapping[str, Task] = _Installed()
