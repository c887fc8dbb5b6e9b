"""Collatz stopping times below N: total steps and the longest trajectory (an example Hydra task)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.tasks.base import ChunkResult, Param, Plan, Task

BLOCK = 1 << 16  # numbers per unit


class CollatzTask(Task):
    name = "collatz"
    version = "1"
    display_unit = "numbers"
    params = (Param("below", "count", "1e7", "every n from 1 up to this bound (excluded)", 2, 10**9),)
    sums = ("steps", "longest", "longest_at")
    reduce = {"longest": "max", "longest_at": "at:longest"}
    credit_per_work = 1.5e-7  # about 3e6 numbers/s on one core, ~0.5 credit per core-second

    def _range(self, params: dict[str, Any], first: int, count: int) -> tuple[int, int]:
        return max(1, first * BLOCK), min((first + count) * BLOCK, params["below"])

    def plan(self, params: dict[str, Any]) -> Plan:
        return Plan(units_total=-(-params["below"] // BLOCK))

    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        lo, hi = self._range(params, first, count)
        return float(hi - lo)

    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        return max(1, min(count, int(work // BLOCK)))

    def probe_units(self, params: dict[str, Any]) -> int:
        return 4

    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        lo, hi = self._range(params, first, count)
        return hi - lo

    def warm_up(self) -> None:
        from hydra_collatz.kernel import steps

        steps(1, 2)

    def run(self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"):
        from hydra_collatz.kernel import steps  # numba, where chunks run only

        total, longest, at = steps(*self._range(params, first, count))
        return ChunkResult(sums={"steps": total, "longest": longest, "longest_at": at})

    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        result = {"below": record["params"]["below"], "steps": int(record.get("sum:steps", 0))}
        if record.get("reduce"):  # the core combined "longest" as a max (see docs/tasks.md)
            result |= {"longest": int(record["sum:longest"]), "longest_at": int(record["sum:longest_at"])}
        return result
