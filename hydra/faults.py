"""Worker classes for tests and benchmarks only: slow workers, failing kernels, cheaters.

Production workers never read these settings; a test or benchmark chooses one of these classes
with ``RQ_WORKER_CLASS=hydra.faults.<Class>`` and tunes it with ``HYDRA_THROTTLE`` (run at this
fraction of full speed, by sleeping) or ``HYDRA_FAULT`` (``raise``: every kernel raises; ``cheat``
or ``cheat:<fraction>``: that fraction of results is off by one).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from hydra.errors import InvalidInput
from hydra.tasks.base import ChunkResult, Task
from hydra.worker import HydraWorker, Volunteer


class FaultyVolunteer(Volunteer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.throttle = float(os.environ.get("HYDRA_THROTTLE", "1") or 1)
        if not 0 < self.throttle <= 1:
            raise InvalidInput(f"HYDRA_THROTTLE must be in (0, 1], got {self.throttle}")
        self.fault = os.environ.get("HYDRA_FAULT", "")
        self.rng = random.Random()

    def compute(self, task: Task, params: dict[str, Any], seed: int, first: int, count: int) -> ChunkResult:
        if self.fault == "raise":
            raise RuntimeError("injected fault (HYDRA_FAULT=raise)")
        started = time.perf_counter()
        result = super().compute(task, params, seed, first, count)
        if self.throttle < 1:
            time.sleep((time.perf_counter() - started) * (1 / self.throttle - 1))
        if self.fault.startswith("cheat") and self.rng.random() < float(self.fault.partition(":")[2] or 1):
            name = task.sums[0]
            result.sums[name] = result.sums[name] + 1
        return result


class FaultyWorker(HydraWorker):
    """``rq worker hydra`` with :class:`FaultyVolunteer` (tests and benchmarks only)."""

    volunteer_class = FaultyVolunteer
