"""Counting primes below N, and the largest gap between consecutive primes below N.

``hydra submit primes --below 1e10`` counts the primes p < N with a segmented sieve in numba
(:mod:`hydra.tasks.primes.kernel`). A unit is a segment of 2**24 numbers; a chunk is a range of
segments. Every chunk reports three integers: how many primes it holds (added), the largest gap
q − p between consecutive primes below N that starts in it (max), and that gap's p (the smaller p
on a tie). So the result is exact however the job was cut, in any order; it reproduces
π(10⁹) = 50,847,534 and π(10¹⁰) = 455,052,511 (OEIS A006880).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InvalidInput
from hydra.progress import human
from hydra.tasks.base import ChunkResult, Param, Plan, Task

SEGMENT = 1 << 24
MAX_BELOW = 10**15


class PrimesTask(Task):
    name = "primes"
    version = "1"
    display_unit = "numbers"
    params = (Param("below", "count", "1e9", "count the primes below this number", 2, MAX_BELOW),)
    sums = ("primes", "max_gap", "gap_start")
    reduce = {"max_gap": "max", "gap_start": "at:max_gap"}
    series = ("numbers", "primes")
    # The sieve covers about 1.2e9 numbers/s on one core, against 4.4-5.2e8 Mandelbrot iterations/s
    # at 1e-9 credit each: 1 credit = 2.5e9 numbers.
    credit_per_work = 4e-10

    def _range(self, params: dict[str, Any], first: int, count: int) -> tuple[int, int]:
        return first * SEGMENT, min((first + count) * SEGMENT, params["below"])

    def plan(self, params: dict[str, Any]) -> Plan:
        return Plan(units_total=-(-params["below"] // SEGMENT))

    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        lo, hi = self._range(params, first, count)
        return float(hi - lo)

    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        return max(1, min(count, int(work // SEGMENT)))

    def probe_units(self, params: dict[str, Any]) -> int:
        return 2

    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        lo, hi = self._range(params, first, count)
        return hi - lo

    def warm_up(self) -> None:
        from hydra.tasks.primes import kernel  # numba: loaded where chunks run or jobs are planned

        kernel.count_primes(0, 1000, 1000)

    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        from hydra.tasks.primes import kernel  # numba: loaded where chunks run or jobs are planned

        lo, hi = self._range(params, first, count)
        primes, _, _, gap, start = kernel.count_primes(lo, hi, params["below"])
        return ChunkResult(sums={"primes": primes, "max_gap": gap, "gap_start": start})

    def check_sums(self, params: dict[str, Any], first: int, count: int, sums: Mapping[str, Any]) -> None:
        super().check_sums(params, first, count, sums)
        lo, hi = self._range(params, first, count)
        # At most the odd numbers of the range, plus 2.
        if not 0 <= sums["primes"] <= (hi - lo) // 2 + 2:
            raise InvalidInput("prime count out of range")
        gap, start = sums["max_gap"], sums["gap_start"]
        if gap == 0:
            if start != 0:
                raise InvalidInput("a gap start without a gap")
        elif not (lo <= start < hi and start + gap < params["below"] and (gap % 2 == 0 or start == 2)):
            raise InvalidInput("prime gap out of range")

    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        below = record["params"]["below"]
        # The gap is a max, not a sum: shown only when the core combined it as one (the job record
        # then carries its reductions, ``reduce``); a core that adds every sum would show nonsense.
        gap = int(record.get("sum:max_gap", 0)) if record.get("reduce") else 0
        start = int(record.get("sum:gap_start", 0))
        return {
            "primes": int(record.get("sum:primes", 0)),
            "below": below,
            "max_gap": gap or None,
            "gap_start": start if gap else None,
            "gap_end": start + gap if gap else None,
        }

    def format(self, result: Mapping[str, Any]) -> list[str]:
        lines = [f"{result['primes']:,} primes below {result['below']:,}"]
        if result.get("max_gap"):
            lines.append(f"largest gap {result['max_gap']:,}: from {result['gap_start']:,} to {result['gap_end']:,}")
        seconds = result.get("seconds")
        if seconds is not None:
            rate = result.get("numbers_per_second")
            lines.append(
                f"{seconds:.2f} s  {human(rate) if rate else '-'} numbers/s  "
                f"{result.get('workers', 0)} workers  job {result.get('job', '-')}"
            )
        return lines

    def series_point(self, params: dict[str, Any], units_done: int, sums: Mapping[str, int]) -> list[float] | None:
        numbers = min(units_done * SEGMENT, params["below"])
        return [numbers, int(sums.get("primes", 0))] if numbers else None
