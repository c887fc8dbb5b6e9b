"""The CUDA kernels under numba's CUDA simulator agree exactly with the CPU kernels (CI has no GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

CHECK = textwrap.dedent("""
    import numpy as np
    from hydra.devices import cuda_available
    from hydra.tasks.mandelbrot.cuda import mandelbrot_escape_counts_cuda
    from hydra.tasks.pi.cuda import pi_count_inside_cuda
    from hydra.tasks.mandelbrot.kernel import escape_counts
    from hydra.tasks.pi.kernel import count_inside_samples
    from hydra.worker import pick_device

    assert cuda_available() and pick_device("auto") == "cuda"
    for seed, first, n in ((0, 0, 1000), (7, 123456789, 2048), (2**63 - 1, 2**40, 777)):
        assert pi_count_inside_cuda(seed, first, n, blocks=4) == count_inside_samples(seed, first, n), seed
    for view in ((-0.5, 0.0, 3.0, 16, 12, 100), (-0.7436, 0.1318, 1e-3, 12, 9, 400), (-0.75, 0.1, 0.6, 10, 14, 200)):
        cx, cy, span, w, h, max_iter = view
        for dtype in (np.uint16, np.uint32):
            gpu, cpu = np.empty((h - 2, w), dtype), np.empty((h - 2, w), dtype)
            assert mandelbrot_escape_counts_cuda(cx, cy, span, w, h, max_iter, 2, h - 2, gpu) == escape_counts(
                cx, cy, span, w, h, max_iter, 2, h - 2, cpu)
            assert np.array_equal(gpu, cpu), view
    print("agree")
""")


def test_simulated_cuda_kernels_match_the_cpu_kernels():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run(
        [sys.executable, "-W", "ignore::RuntimeWarning", "-c", CHECK],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "agree"


def test_cpu_workers_stay_on_the_cpu_without_a_gpu():
    from hydra.worker import pick_device

    assert pick_device("cpu") == "cpu"
