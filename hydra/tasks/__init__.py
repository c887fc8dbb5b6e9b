"""Hydra's registry of tasks and the single entry point rq calls.

Workers run only ``hydra.tasks.run_chunk`` with one JSON chunk descriptor; the descriptor names
a task of :data:`TASKS`. Nothing else that arrives on the queue is ever executed.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InvalidInput
from hydra.tasks.base import Task
from hydra.tasks.mandelbrot import MandelbrotTask
from hydra.tasks.pi import PiTask

ENTRY_POINT = "hydra.tasks.run_chunk"

TASKS: dict[str, Task] = {task.name: task for task in (PiTask(), MandelbrotTask())}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(TASKS))
        raise InvalidInput(f"unknown task {name!r} (known: {known})") from None


def run_chunk(descriptor: Any) -> str:
    """What rq runs for each chunk ticket: claim, compute and report the chunk (see hydra.worker)."""
    from hydra.worker import current_runner

    return current_runner().run(descriptor)
