"""Counting primes with a segmented sieve of Eratosthenes (numba), and the largest gap between them.

A range [lo, hi) of the job's numbers is sieved in blocks of 2**17 odd numbers (one byte each, so a
block stays in the L2 cache), striking the odd multiples of every odd "base" prime p ≤ √N from p²
on. The base primes are computed once per process for each √N (:func:`base_primes`, cached).

Gaps: a range reports the largest gap q − p between consecutive primes p < q < N where p lies in
the range; q may lie beyond it, so after the range the kernel looks for the next prime (a short
sieve of the next few thousand numbers). Every pair of consecutive primes below N thus belongs to
exactly one range, and the job's largest gap is the max over ranges: exact, in any order. On a tie
the smallest p wins.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

# Odd numbers per sieving block (bytes of the block's flag array).
BLOCK_ODDS = 1 << 17
# Numbers per window of the search for the next prime after a range.
NEXT_WINDOW = 1 << 14


@functools.lru_cache(maxsize=8)
def base_primes(limit: int) -> np.ndarray:
    """The odd primes ≤ ``limit`` (int64, ascending); computed once per process per limit."""
    if limit < 3:
        return np.empty(0, np.int64)
    sieve = np.ones(limit + 1, dtype=np.bool_)
    sieve[:2] = False
    for p in range(2, math.isqrt(limit) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    primes = np.flatnonzero(sieve).astype(np.int64)
    return primes[1:]


@numba.njit(cache=True, nogil=True)
def _scan(lo, hi, primes, flags, nxt):
    """(count, first, last, max gap, its start) of the primes in [lo, hi); first/last -1 if none."""
    count = 0
    first = -1
    last = -1
    best = 0
    best_at = 0
    if lo <= 2 < hi:
        count = 1
        first = 2
        last = 2
    a = lo - (lo & 1)
    # The first odd multiple of each base prime that is ≥ max(p², a + 1).
    for k in range(primes.shape[0]):
        p = primes[k]
        m = ((a + p) // p) * p
        if m < p * p:
            m = p * p
        if m % 2 == 0:
            m += p
        nxt[k] = m
    while a < hi:
        b = min(a + 2 * BLOCK_ODDS, hi)
        n_odd = (b - a) // 2
        flags[:n_odd] = 1
        for k in range(primes.shape[0]):
            p = primes[k]
            if p * p >= b:
                break  # later primes start later still
            i = (nxt[k] - a - 1) // 2
            while i < n_odd:
                flags[i] = 0
                i += p
            nxt[k] = a + 1 + 2 * i
        for i in range(n_odd):
            if flags[i]:
                n = a + 1 + 2 * i
                if n == 1:
                    continue
                count += 1
                if last >= 0:
                    if n - last > best:
                        best = n - last
                        best_at = last
                else:
                    first = n
                last = n
        a = b
    return count, first, last, best, best_at


@numba.njit(cache=True, nogil=True)
def _count(lo, hi, below, primes):
    flags = np.empty(BLOCK_ODDS, np.uint8)
    nxt = np.empty(primes.shape[0], np.int64)
    count, first, last, best, best_at = _scan(lo, hi, primes, flags, nxt)
    # The gap from the range's last prime to the next prime below ``below``, wherever that is.
    start = hi
    while last >= 0 and start < below:
        end = min(start + NEXT_WINDOW, below)
        found, q, _, _, _ = _scan(start, end, primes, flags, nxt)
        if found:
            if q - last > best:
                best = q - last
                best_at = last
            break
        start = end
    return count, first, last, best, best_at


def count_primes(lo: int, hi: int, below: int) -> tuple[int, int, int, int, int]:
    """Primes p with lo ≤ p < hi (hi ≤ below): (count, first, last, largest gap, where it starts).

    The largest gap counts pairs p < q < ``below`` of consecutive primes with p in [lo, hi); 0 if none.
    """
    if not 0 <= lo <= hi <= below:
        raise ValueError("need 0 <= lo <= hi <= below")
    primes = base_primes(math.isqrt(max(below - 1, 0)))
    return tuple(int(x) for x in _count(lo, hi, below, primes))  # type: ignore[return-value]


def count_primes_reference(below: int) -> tuple[int, int, int]:
    """Plain NumPy (count, largest gap, its start) of the primes below ``below``, for tests (small inputs)."""
    sieve = np.ones(max(below, 2), dtype=np.bool_)
    sieve[:2] = False
    for p in range(2, math.isqrt(max(below - 1, 0)) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    primes = np.flatnonzero(sieve[:below])
    if len(primes) < 2:
        return len(primes), 0, 0
    gaps = np.diff(primes)
    at = int(np.argmax(gaps))
    return len(primes), int(gaps[at]), int(primes[at])
