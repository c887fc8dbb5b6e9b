"""numba.cuda kernels for GPU volunteers: the same definitions, the same counts.

π: every thread runs a grid-stride loop over the chunk's samples with the splitmix64 counter of
:mod:`hydra.kernels.pi`, in 64-bit integers, and adds its count to one global counter, so the count
is bit-identical to the CPU kernel's.

Mandelbrot: one thread per pixel. The CUDA compiler contracts ``x*x - y*y + re`` into fused
multiply-adds by default, which rounds once instead of twice and changes some escape counts.
Every multiply and add of the iteration and of the pixel's coordinates therefore goes through
libdevice's ``dmul_rn``/``dadd_rn``, which are correctly rounded and never fused: the arithmetic is
the CPU's, operation for operation.

The module imports on machines without CUDA; :func:`cuda_available` says whether a GPU (or numba's
CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``, used by the tests) is there.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

if not hasattr(np, "row_stack"):  # numba.cuda still names it; NumPy 2.5 removed it
    np.row_stack = np.vstack

from hydra.kernels.pi import _M1, _M2, _MASK31, _ONE, _RADIUS2, _S2, _S27, _S30, _S31, _S33, GOLDEN

try:
    from numba import cuda
    from numba.cuda import libdevice
except ImportError:  # a numba without CUDA support: CPU workers only
    cuda = None

THREADS = 256


@functools.cache
def cuda_available() -> bool:
    try:
        return cuda is not None and bool(cuda.is_available())
    except Exception:
        return False


# The simulator swaps the module-level name ``cuda`` while a kernel runs, so the kernels must
# refer to ``cuda`` and ``libdevice`` as globals of this module.
if cuda is not None:
    if numba.config.ENABLE_CUDASIM:  # the simulator's libdevice is a stub; Python floats never fuse

        @cuda.jit(device=True)
        def _mul(a, b):
            return a * b

        @cuda.jit(device=True)
        def _add(a, b):
            return a + b

    else:

        @cuda.jit(device=True, inline=True)
        def _mul(a, b):
            return libdevice.dmul_rn(a, b)

        @cuda.jit(device=True, inline=True)
        def _add(a, b):
            return libdevice.dadd_rn(a, b)

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

    @cuda.jit
    def _mandel_kernel(cx, cy, scale, width, height, max_iter, row0, out, iterations):
        i, r = cuda.grid(2)
        if i >= width or r >= out.shape[0]:
            return
        re = _add(cx, _mul(i + 0.5 - width / 2, scale))
        im = _add(cy, -_mul(row0 + r + 0.5 - height / 2, scale))
        x = 0.0
        y = 0.0
        k = max_iter
        for n in range(1, max_iter + 1):
            x2 = _mul(x, x)
            y2 = _mul(y, y)
            xy2 = _mul(_mul(2.0, x), y)
            x = _add(_add(x2, -y2), re)
            y = _add(xy2, im)
            if _add(_mul(x, x), _mul(y, y)) > 4.0:
                k = n
                break
        out[r, i] = k
        cuda.atomic.add(iterations, 0, np.uint64(k))


def pi_count_inside_cuda(seed: int, first_sample: int, n_samples: int, blocks: int = 4096) -> int:
    """Same contract and result as :func:`hydra.kernels.pi.count_inside_samples`, on the GPU."""
    total = cuda.to_device(np.zeros(1, dtype=np.uint64))
    threads = min(THREADS, max(1, n_samples))
    grid = max(1, min(blocks, -(-n_samples // threads)))
    _pi_kernel[grid, threads](np.uint64(seed), np.uint64(first_sample), np.uint64(n_samples), total)
    return int(total.copy_to_host()[0])


def mandelbrot_escape_counts_cuda(
    cx: float, cy: float, span: float, width: int, height: int, max_iter: int, row0: int, nrows: int, out: np.ndarray
) -> int:
    """Same contract and counts as :func:`hydra.kernels.mandelbrot.escape_counts`, on the GPU."""
    device_out = cuda.device_array((nrows, width), dtype=out.dtype)
    iterations = cuda.to_device(np.zeros(1, dtype=np.uint64))
    threads = (16, 16)
    grid = (-(-width // 16), -(-nrows // 16))
    _mandel_kernel[grid, threads](
        float(cx), float(cy), float(span) / width, width, height, max_iter, row0, device_out, iterations
    )
    device_out.copy_to_host(out)
    return int(iterations.copy_to_host()[0])
