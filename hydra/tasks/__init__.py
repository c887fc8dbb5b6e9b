"""Hydra's registry of tasks: what a worker can run is what is installed on its machine.

A chunk descriptor names a task and its version; the queue never carries code.
"""

from __future__ import annotations

from hydra.errors import InvalidInput
from hydra.tasks.base import Task
from hydra.tasks.mandelbrot import MandelbrotTask
from hydra.tasks.pi import PiTask

TASKS: dict[str, Task] = {task.name: task for task in (PiTask(), MandelbrotTask())}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(TASKS))
        raise InvalidInput(f"unknown task {name!r} (known: {known})") from None
