"""Monte-Carlo π: count samples inside the quarter circle (kernel: :mod:`hydra.kernels.pi`).

Units are blocks of 2**20 samples (the last one may be short); the result is the exact integer
count of samples inside, so it is identical however the job was chunked or retried.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hydra.errors import InvalidInput
from hydra.kernels import pi as kernel
from hydra.tasks.base import ChunkResult, Plan, Task, parse_count

MAX_SAMPLES = 10**16
DEFAULT_SEED = 2026


class PiTask(Task):
    name = "pi"
    display_unit = "samples"
    sums = ("inside",)

    def parse(self, params: Mapping[str, Any]) -> dict[str, Any]:
        samples = parse_count("samples", params.get("samples", "1e9"), low=1, high=MAX_SAMPLES)
        seed = parse_count("seed", params.get("seed", DEFAULT_SEED), low=0, high=2**63 - 1)
        return {"samples": samples, "seed": seed}

    def plan(self, params: dict[str, Any]) -> Plan:
        return Plan(units_total=-(-params["samples"] // kernel.BLOCK))

    def _samples(self, params: dict[str, Any], first: int, count: int) -> tuple[int, int]:
        start = first * kernel.BLOCK
        return start, min((first + count) * kernel.BLOCK, params["samples"]) - start

    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        return float(self._samples(params, first, count)[1])

    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        return max(1, min(count, int(work // kernel.BLOCK)))

    def probe_units(self, params: dict[str, Any]) -> int:
        return 8

    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        return self._samples(params, first, count)[1]

    def warm_up(self) -> None:
        kernel.count_inside_samples(0, 0, 1)

    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        start, n = self._samples(params, first, count)
        if device == "cuda":
            from hydra.kernels.cuda import pi_count_inside_cuda

            return ChunkResult(sums={"inside": pi_count_inside_cuda(seed, start, n)})
        return ChunkResult(sums={"inside": kernel.count_inside_samples(seed, start, n)})

    def check_result(self, params: dict[str, Any], count: int, result: ChunkResult) -> None:
        super().check_result(params, count, result)
        inside = result.sums.get("inside", -1)
        if type(inside) is not int or not 0 <= inside <= count * kernel.BLOCK:
            raise InvalidInput("inside count out of range")

    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        params = record["params"]
        # Samples actually counted (the last block may be short, and may finish first).
        n = int(record.get("display_done", min(int(record["units_done"]) * kernel.BLOCK, params["samples"])))
        inside = int(record.get("sum:inside", 0))
        p = inside / n if n else 0.0
        return {
            "pi": 4 * p,
            "stderr": 4 * math.sqrt(p * (1 - p) / n) if n else None,
            "samples": n,
            "inside": inside,
            "seed": params["seed"],
        }
