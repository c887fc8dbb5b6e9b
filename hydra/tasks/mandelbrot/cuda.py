"""Mandelbrot on a GPU: one thread per pixel, the same counts as :mod:`hydra.tasks.mandelbrot.kernel`.

The CUDA compiler contracts ``x*x - y*y + re`` into fused multiply-adds by default, which rounds once
instead of twice and changes some escape counts. Every multiply and add of the iteration and of the
pixel's coordinates therefore goes through libdevice's ``dmul_rn``/``dadd_rn``, which are correctly
rounded and never fused: the arithmetic is the CPU's, operation for operation. The simulator swaps
the module-level name ``cuda`` while a kernel runs, so the kernels refer to ``cuda`` and
``libdevice`` as globals of this module.
"""

from __future__ import annotations

import numba
import numpy as np

from hydra.devices import cuda

if cuda is not None:
    from numba.cuda import libdevice

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


def mandelbrot_escape_counts_cuda(
    cx: float, cy: float, span: float, width: int, height: int, max_iter: int, row0: int, nrows: int, out: np.ndarray
) -> int:
    """Same contract and counts as :func:`hydra.tasks.mandelbrot.kernel.escape_counts`, on the GPU."""
    device_out = cuda.device_array((nrows, width), dtype=out.dtype)
    iterations = cuda.to_device(np.zeros(1, dtype=np.uint64))
    threads = (16, 16)
    grid = (-(-width // 16), -(-nrows // 16))
    _mandel_kernel[grid, threads](
        float(cx), float(cy), float(span) / width, width, height, max_iter, row0, device_out, iterations
    )
    device_out.copy_to_host(out)
    return int(iterations.copy_to_host()[0])
