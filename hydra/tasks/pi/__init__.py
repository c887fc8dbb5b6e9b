"""Monte-Carlo π: count samples inside the quarter circle (kernel: :mod:`hydra.tasks.pi.kernel`).

Units are blocks of 2**20 samples (the last one may be short); the result is the exact integer
count of samples inside, so it is identical however the job was chunked or retried.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hydra.errors import InvalidInput
from hydra.progress import human, plural
from hydra.tasks.base import ChunkResult, Param, Plan, Task

MAX_SAMPLES = 10**16
BLOCK = 1 << 20  # samples per unit (hydra.tasks.pi.BLOCK, without importing numba here)
DEFAULT_SEED = 2026


def pi_point(samples: int, inside: int) -> list[float]:
    """[samples, estimate, standard error] of a π job after ``samples`` samples."""
    p = inside / samples
    return [samples, 4 * p, 4 * math.sqrt(p * (1 - p) / samples)]


class PiTask(Task):
    name = "pi"
    version = "1"
    display_unit = "samples"
    params = (
        Param("samples", "count", "1e9", "number of samples: 1e10, 10000000000 or 10_000_000_000", 1, MAX_SAMPLES),
        Param("seed", "count", DEFAULT_SEED, "seed of the sample stream", 0, 2**63 - 1),
    )
    sums = ("inside",)
    series = ("samples", "π", "standard error")
    # A sample costs about a tenth of a Mandelbrot iteration (measured on one core: 4.5-5.7e9
    # samples/s against 4.4-5.2e8 estimated iterations/s), so 1 credit = 10**10 samples.
    credit_per_work = 1e-10

    def plan(self, params: dict[str, Any]) -> Plan:
        return Plan(units_total=-(-params["samples"] // BLOCK))

    def _samples(self, params: dict[str, Any], first: int, count: int) -> tuple[int, int]:
        start = first * BLOCK
        return start, min((first + count) * BLOCK, params["samples"]) - start

    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        return float(self._samples(params, first, count)[1])

    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        return max(1, min(count, int(work // BLOCK)))

    def probe_units(self, params: dict[str, Any]) -> int:
        return 8

    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        return self._samples(params, first, count)[1]

    def warm_up(self) -> None:
        from hydra.tasks.pi import kernel  # numba: loaded where chunks run, not where jobs are planned

        kernel.count_inside_samples(0, 0, 1)

    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        start, n = self._samples(params, first, count)
        if device == "cuda":
            from hydra.tasks.pi.cuda import pi_count_inside_cuda

            return ChunkResult(sums={"inside": pi_count_inside_cuda(seed, start, n)})
        from hydra.tasks.pi import kernel

        return ChunkResult(sums={"inside": kernel.count_inside_samples(seed, start, n)})

    def check_sums(self, params: dict[str, Any], first: int, count: int, sums: Mapping[str, Any]) -> None:
        super().check_sums(params, first, count, sums)
        if not 0 <= sums["inside"] <= self._samples(params, first, count)[1]:
            raise InvalidInput("inside count out of range")

    def check_result(self, params: dict[str, Any], count: int, result: ChunkResult) -> None:
        super().check_result(params, count, result)
        inside = result.sums.get("inside", -1)
        if type(inside) is not int or not 0 <= inside <= count * BLOCK:
            raise InvalidInput("inside count out of range")

    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        params = record["params"]
        # Samples actually counted (the last block may be short, and may finish first).
        n = int(record.get("display_done", min(int(record["units_done"]) * BLOCK, params["samples"])))
        inside = int(record.get("sum:inside", 0))
        p = inside / n if n else 0.0
        return {
            "pi": 4 * p,
            "stderr": 4 * math.sqrt(p * (1 - p) / n) if n else None,
            "samples": n,
            "inside": inside,
            "seed": params["seed"],
        }

    def format(self, result: Mapping[str, Any]) -> list[str]:
        return [
            f"pi ≈ {result['pi']:.10f} ± {result['stderr']:.2g} (standard error)",
            f"samples {result['samples']:,}  inside {result['inside']:,}  seed {result['seed']}",
            f"{result['seconds']:.2f} s  {human(result['samples_per_second'])} samples/s  "
            f"{plural(result['workers'], 'worker')}  job {result['job']}",
        ]

    def series_point(self, params: dict[str, Any], units_done: int, sums: Mapping[str, int]) -> list[float] | None:
        samples = min(units_done * BLOCK, params["samples"])
        return pi_point(samples, int(sums.get("inside", 0))) if samples else None
