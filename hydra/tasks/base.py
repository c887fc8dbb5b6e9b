"""What a task is: how a job of that kind is checked, cut into units, run and summed up.

A job is ``units_total`` units (π: blocks of 2**20 samples; Mandelbrot: image rows); a chunk is a
contiguous range of units. ``work`` measures a range in the task's own unit of effort (samples,
estimated iterations) so that a worker's speed, in work per second, sizes its next chunk.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hydra.errors import InvalidInput


@dataclass(frozen=True)
class Plan:
    units_total: int
    # Task data shared by every chunk of the job, stored once in Redis (hydra:job:<id>:data).
    data: bytes = b""


@dataclass
class ChunkResult:
    sums: dict[str, int] = field(default_factory=dict)
    blob: bytes = b""
    # The uncompressed result, kept in the worker for the page's preview; never sent to Redis.
    array: Any = None


class Task(ABC):
    name: ClassVar[str]
    # A worker runs a chunk only with exactly this version of the task (bump it whenever results change).
    version: ClassVar[str] = "1"
    # What the progress bar counts, and how many of them one unit holds.
    display_unit: ClassVar[str]
    # Names of the integer sums a chunk adds to the job (``sum:<name>`` in the job record).
    sums: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def parse(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Checked, normalised parameters; raises :class:`InvalidInput` with a one-line message."""

    @abstractmethod
    def plan(self, params: dict[str, Any]) -> Plan: ...

    def units_total(self, params: dict[str, Any]) -> int:
        """How many units a job with these parameters has (cheap: workers check ranges with it)."""
        return self.plan(params).units_total

    @abstractmethod
    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        """Effort of units [first, first + count), in the unit worker rates are measured in."""

    @abstractmethod
    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        """How many units from ``first`` (at most ``count``) fit in ``work``; at least 1."""

    @abstractmethod
    def probe_units(self, params: dict[str, Any]) -> int:
        """Size of the first chunk a worker with no measured speed takes."""

    @abstractmethod
    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        """How many display units (samples, pixels) the unit range holds."""

    @abstractmethod
    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        """Compute units [first, first + count) on ``device`` ("cpu" or "cuda"); same result on both."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Compile or load the kernel, so that the first chunk's timing measures only the kernel."""

    def announce(self, job_id: str, params: dict[str, Any], result: ChunkResult) -> dict[str, Any] | None:
        """A ``tile``-style event for the live page about a finished chunk, or None."""
        return None

    def check_result(self, params: dict[str, Any], count: int, result: ChunkResult) -> None:
        """Refuse results no honest worker produces (e.g. a blob larger than the task allows)."""
        if result.blob:
            raise InvalidInput(f"{self.name} chunks carry no blob")

    def max_blob_bytes(self, params: dict[str, Any], count: int) -> int:
        """The largest result blob an honest worker sends for ``count`` units (0: no blob)."""
        return 0

    def check_blob(self, params: dict[str, Any], first: int, count: int, blob: bytes) -> None:
        """Refuse a blob that is not the result of units [first, first + count); runs on the trusted
        side, so any decoding must be bounded. Tasks without blobs accept only an empty one."""
        if blob:
            raise InvalidInput(f"{self.name} chunks carry no blob")

    def chunk_memory(self, params: dict[str, Any], count: int) -> int:
        """Bytes a worker needs to run ``count`` units; a worker refuses chunks over its cap."""
        return 0

    @abstractmethod
    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The job's result, from its record (``sum:*`` fields already ints)."""


def parse_count(name: str, value: Any, *, low: int, high: int) -> int:
    """An integer written as ``1e10``, ``10000000000`` or ``10_000_000_000`` within [low, high]."""
    text = str(value).strip().lower().replace("_", "")
    try:
        number = int(text)
    except ValueError:
        number = _whole_float(name, value, text, high)
    if number < low:
        raise InvalidInput(f"--{name} must be at least {low}, got {value}")
    if number > high:
        raise InvalidInput(f"--{name} must be at most {high:.3g}, got {value}")
    return number


def _whole_float(name: str, value: Any, text: str, high: int) -> int:
    try:
        real = float(text)
    except ValueError:
        raise InvalidInput(f"--{name} must be a number such as 1e10, got {value!r}") from None
    if math.isfinite(real) and real > high:
        raise InvalidInput(f"--{name} must be at most {high:.3g}, got {value}")
    if not math.isfinite(real) or real != int(real):
        raise InvalidInput(f"--{name} must be a whole number, got {value!r}")
    return int(real)
