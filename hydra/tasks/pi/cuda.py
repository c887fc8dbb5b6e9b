"""π on a GPU: the counter of :mod:`hydra.tasks.pi.kernel`, in 64-bit integers, so the same count.

Every thread runs a grid-stride loop over the chunk's samples and adds its count to one global
counter. The simulator swaps the module-level name ``cuda`` while a kernel runs, so the kernels
refer to ``cuda`` as a global of this module.
"""

from __future__ import annotations

import numpy as np

from hydra.devices import THREADS, cuda
from hydra.tasks.pi.kernel import _M1, _M2, _MASK31, _ONE, _RADIUS2, _S2, _S27, _S30, _S31, _S33, GOLDEN

if cuda is not None:

    @cuda.jit(device=True, inline=True)
    def _mix(z):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)

    @cuda.jit
    def _pi_kernel(seed, first, n, total):
        key = _mix(np.uint64(seed) + GOLDEN)
        base = key + (np.uint64(first) + _ONE) * GOLDEN
        count = np.uint64(0)
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            h = _mix(base + np.uint64(i) * GOLDEN)
            x = h >> _S33
            y = (h >> _S2) & _MASK31
            if x * x + y * y < _RADIUS2:
                count += np.uint64(1)
        cuda.atomic.add(total, 0, count)


def pi_count_inside_cuda(seed: int, first_sample: int, n_samples: int, blocks: int = 4096) -> int:
    """Same contract and result as :func:`hydra.tasks.pi.kernel.count_inside_samples`, on the GPU."""
    total = cuda.to_device(np.zeros(1, dtype=np.uint64))
    threads = min(THREADS, max(1, n_samples))
    grid = max(1, min(blocks, -(-n_samples // threads)))
    _pi_kernel[grid, threads](np.uint64(seed), np.uint64(first_sample), np.uint64(n_samples), total)
    return int(total.copy_to_host()[0])
