"""What a task is: the one declaration of a kind of job, from its parameters to how its result reads.

A task declares, in one class:

* ``name`` and ``version`` (a job runs only on workers with the same version of the task);
* ``params``: its parameters (:class:`~hydra.tasks.params.Param`), from which the CLI options, the
  page's form and the validation are generated;
* how a job is cut into units (``plan``, ``work``, ``units_for_work``, ``probe_units``);
* the deterministic kernel for a range of units (``run``), which needs nothing but the chunk
  descriptor: never Redis, never the job's ``data`` (that is for sizing on the trusted side);
* how partial results combine (``sums`` and ``reduce``, see :mod:`hydra.tasks.reduce`; arrays
  travel as one blob per chunk, assembled by unit range in ``write_outputs``);
* how the result reads: ``summarize`` (JSON fields), ``format`` (CLI text), ``outputs`` (files
  ``--<name> PATH`` writes), ``series`` (a chart on the page);
* what an honest worker can return (``check_sums``, ``max_blob_bytes``), so that the trusted side
  refuses the rest.

A job is ``units_total`` units (π: blocks of 2**20 samples; Mandelbrot: image rows; primes: segments
of 2**24 numbers); a chunk is a contiguous range of units. ``work`` measures a range in the task's
own unit of effort so that a worker's measured speed sizes its next chunk.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hydra.errors import InvalidInput
from hydra.tasks import reduce as reducing
from hydra.tasks.params import Param, parse_count, parse_params

__all__ = ["ChunkResult", "Output", "Param", "Plan", "Task", "parse_count"]


@dataclass(frozen=True)
class Plan:
    units_total: int
    # Task data shared by every chunk of the job, stored once by the trusted side and used only
    # there (work, units_for_work); workers never receive it.
    data: bytes = b""


@dataclass
class ChunkResult:
    sums: dict[str, int] = field(default_factory=dict)
    blob: bytes = b""
    # The uncompressed result, kept in the worker for the page's preview; never sent.
    array: Any = None


@dataclass(frozen=True)
class Output:
    """A file the finished job can write: ``hydra submit <task> --<name> PATH``."""

    name: str
    help: str


class Task(ABC):
    name: ClassVar[str]
    # A job records it; the trusted side gives a chunk only to workers advertising the same version.
    # Change it whenever the kernel could give a different result.
    version: ClassVar[str]
    # What the progress bar counts, and how many of them one unit holds.
    display_unit: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    # Names of the integer results a chunk reports, and how each combines (default "sum").
    sums: ClassVar[tuple[str, ...]] = ()
    reduce: ClassVar[Mapping[str, str]] = {}
    outputs: ClassVar[tuple[Output, ...]] = ()
    # Labels of the chart the page draws for a running job: x first (see series_point).
    series: ClassVar[tuple[str, ...]] = ()

    # Credits per unit of ``work`` (see :mod:`hydra.credit`): 1 credit is 10**9 reference operations,
    # set so that a core-hour earns about the same in every task. A plug-in declares its own.
    credit_per_work: ClassVar[float] = 1e-9

    # -- parameters ------------------------------------------------------------------------------

    def parse(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Checked, normalised parameters; raises :class:`InvalidInput` with a one-line message.

        Parsing its own output gives the same dict (the CLI parses, then the scheduler again).
        """
        return self.finish(parse_params(self.params, params))

    def finish(self, params: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults that depend on other parameters and check combinations; the default: none."""
        return params

    # -- cutting a job into units (trusted side) -------------------------------------------------

    @abstractmethod
    def plan(self, params: dict[str, Any]) -> Plan: ...

    def units_total(self, params: dict[str, Any]) -> int:
        """How many units a job with these parameters has (cheap: workers check ranges with it)."""
        return self.plan(params).units_total

    @abstractmethod
    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        """Effort of units [first, first + count), in the unit worker rates are measured in.

        Additive over adjacent ranges: credit is derived from ``work(.., 0, u)`` (see :mod:`hydra.credit`).
        """

    @abstractmethod
    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        """How many units from ``first`` (at most ``count``) fit in ``work``; at least 1."""

    @abstractmethod
    def probe_units(self, params: dict[str, Any]) -> int:
        """Size of the first chunk a worker with no measured speed takes."""

    @abstractmethod
    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        """How many display units (samples, pixels) the unit range holds."""

    # -- the kernel (volunteer side) -------------------------------------------------------------

    @abstractmethod
    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        """Compute units [first, first + count) on ``device`` ("cpu" or "cuda"); same result on both.

        ``data`` is always ``b""`` on a worker: everything the kernel needs is in ``params``.
        """

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Compile or load the kernel, so that the first chunk's timing measures only the kernel."""

    def announce(self, job_id: str, params: dict[str, Any], result: ChunkResult) -> dict[str, Any] | None:
        """A ``tile``-style event for the live page about a finished chunk, or None."""
        return None

    # -- checking what a worker returns (trusted side) -------------------------------------------

    def max_blob_bytes(self, params: dict[str, Any], count: int) -> int:
        """The largest blob (and decompressed payload) an honest chunk of ``count`` units sends."""
        return 0

    def check_blob(self, params: dict[str, Any], first: int, count: int, blob: bytes) -> None:
        """Refuse a blob that is not the result of units [first, first + count); runs on the trusted
        side, so any decoding must be bounded. Tasks without blobs accept only an empty one."""
        if blob:
            raise InvalidInput(f"{self.name} chunks carry no blob")

    def chunk_memory(self, params: dict[str, Any], count: int) -> int:
        """Bytes a worker needs to run ``count`` units; a worker refuses chunks over its cap."""
        return 0

    def check_sums(self, params: dict[str, Any], first: int, count: int, sums: Mapping[str, Any]) -> None:
        """Raise InvalidInput for sums no honest worker reports (missing, extra, not ints, out of range)."""
        if set(sums) != set(self.sums):
            raise InvalidInput(f"{self.name} chunks report {sorted(self.sums)}, got {sorted(sums)}")
        for name, value in sums.items():
            if type(value) is not int or not -(2**63) <= value < 2**63:
                raise InvalidInput(f"{name} must be a 64-bit integer")
            if self.reduce.get(name, "sum") != "sum" and not 0 <= value < reducing.EXACT:
                raise InvalidInput(f"{name} must be in [0, 2**53)")

    def check_result(self, params: dict[str, Any], count: int, result: ChunkResult) -> None:
        """Refuse results no honest worker produces (a blob larger than the task allows)."""
        if len(result.blob) > self.max_blob_bytes(params, count):
            raise InvalidInput(f"{self.name} chunk result larger than {count} units allow")

    # -- combining and reading the result --------------------------------------------------------

    def reductions(self) -> dict[str, str]:
        """How each sum combines: name → "sum" | "max" | "min" | "at:<name>"."""
        return reducing.kinds(self.sums, self.reduce)

    def initial_sums(self) -> dict[str, int]:
        """The job's sums before any chunk (added sums at 0; max/min/at absent)."""
        return reducing.initial(self.reductions())

    def combine(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, int]:
        """Two partial results combined exactly; the same in any order."""
        return reducing.combine(self.reductions(), a, b)

    @abstractmethod
    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The job's result, from its record (``params``, ``units_done``, ``sum:*`` fields as ints)."""

    def format(self, result: Mapping[str, Any]) -> list[str]:
        """The result as lines of text for the CLI; the default lists the fields."""
        skip = {"job", "task", "files"}
        return [f"{key} {_text(value)}" for key, value in result.items() if key not in skip] + [
            f"wrote {path}" for path in result.get("files", [])
        ]

    def write_outputs(self, params: dict[str, Any], blobs: Iterable[bytes], paths: Mapping[str, Path]) -> None:
        """Write the files named in ``paths`` (output name → path) from the job's chunk blobs."""
        if paths:
            raise InvalidInput(f"{self.name} writes no files")

    def series_point(self, params: dict[str, Any], units_done: int, sums: Mapping[str, int]) -> list[float] | None:
        """One point of the page's chart (values for the labels in ``series``) after ``units_done``."""
        return None


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)
