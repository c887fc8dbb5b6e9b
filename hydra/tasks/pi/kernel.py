"""Monte-Carlo π kernel: an exact, counter-based definition every machine agrees on.

Sample ``i`` (0-based, global to the job) of a job with seed ``s`` is a pure function of
``(s, i)``, so a chunk can run anywhere, any number of times, and give the same count:

    mix(z)  = splitmix64 finaliser (xor-shift 30, ×0xBF58476D1CE4E5B9, xor-shift 27,
              ×0x94D049BB133111EB, xor-shift 31), all arithmetic modulo 2**64
    key     = mix(s + G)                        with G = 0x9E3779B97F4A7C15
    h_i     = mix(key + (i + 1) · G)
    x_i     = h_i >> 33                         (31 bits)
    y_i     = (h_i >> 2) & (2**31 − 1)          (31 bits)
    inside  ⇔ x_i² + y_i² < 2**62               (exact in 64-bit integers)

Samples are grouped in blocks of ``BLOCK`` = 2**20; a chunk is a range of whole blocks.
"""

from __future__ import annotations

import numba
import numpy as np

from hydra.tasks.pi import BLOCK

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S2, _S27, _S30, _S31, _S33 = (np.uint64(n) for n in (2, 27, 30, 31, 33))
_MASK31 = np.uint64(0x7FFFFFFF)
_RADIUS2 = np.uint64(1 << 62)
_ONE = np.uint64(1)


@numba.njit(inline="always")
def mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(cache=True, nogil=True)
def _count_inside(seed: int, first_sample: int, n_samples: int) -> int:
    key = mix(np.uint64(seed) + GOLDEN)
    base = key + (np.uint64(first_sample) + _ONE) * GOLDEN
    total = 0
    for i in range(np.uint64(n_samples)):
        h = mix(base + np.uint64(i) * GOLDEN)
        x = h >> _S33
        y = (h >> _S2) & _MASK31
        total += x * x + y * y < _RADIUS2
    return total


def count_inside(seed: int, first_block: int, n_blocks: int) -> int:
    """Number of samples inside the quarter circle among blocks [first_block, first_block + n_blocks)."""
    return int(_count_inside(seed, first_block * BLOCK, n_blocks * BLOCK))


def count_inside_samples(seed: int, first_sample: int, n_samples: int) -> int:
    """Number of samples inside among samples [first_sample, first_sample + n_samples)."""
    return int(_count_inside(seed, first_sample, n_samples))


def count_inside_reference(seed: int, first_sample: int, n_samples: int) -> int:
    """Plain-NumPy implementation of the same definition, for tests (slow, small inputs)."""
    with np.errstate(over="ignore"):
        key = _mix_np(np.uint64(seed) + GOLDEN)
        i = np.arange(first_sample, first_sample + n_samples, dtype=np.uint64)
        h = _mix_np(key + (i + _ONE) * GOLDEN)
        x = h >> _S33
        y = (h >> _S2) & _MASK31
        return int(np.count_nonzero(x * x + y * y < _RADIUS2))


def _mix_np(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)
