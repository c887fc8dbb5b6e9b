"""The Collatz kernel, imported only where chunks run (the CLI, page and monitor load the task
class to plan and check jobs, and need not import numba for that)."""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def steps(lo: int, hi: int) -> tuple[int, int, int]:
    total, longest, at = 0, -1, 0
    for n in range(lo, hi):
        x, k = n, 0
        while x != 1:
            x = x // 2 if x % 2 == 0 else 3 * x + 1
            k += 1
        total += k
        if k > longest:  # ascending n: the first n wins a tie
            longest, at = k, n
    return total, longest, at
