"""Which devices this machine can run kernels on: the CPU always, a CUDA GPU when numba finds one.

Tasks' CUDA kernels import ``cuda`` from here so that a numba without CUDA support still imports
every task (CPU workers only). :func:`cuda_available` is also true under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), which the tests use.
"""

from __future__ import annotations

import functools

import numpy as np

if not hasattr(np, "row_stack"):  # numba.cuda still names it; NumPy 2.5 removed it
    np.row_stack = np.vstack

try:
    from numba import cuda
except ImportError:  # a numba without CUDA support: CPU workers only
    cuda = None  # type: ignore[assignment]

# Threads per block of the 1-D kernels.
THREADS = 256


@functools.cache
def cuda_available() -> bool:
    try:
        return cuda is not None and bool(cuda.is_available())
    except Exception:
        return False
