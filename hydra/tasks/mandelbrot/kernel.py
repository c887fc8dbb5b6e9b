"""Exact Mandelbrot escape counts: a definition any implementation can match pixel for pixel.

Image W × H, view centre (cx, cy), ``span`` = width of the view in the complex plane.

* Pixel (row j, column i) samples the centre of the pixel, in float64, in this order::

      scale = span / W
      re = cx + (i + 0.5 - W / 2) * scale
      im = cy - (j + 0.5 - H / 2) * scale          (row 0 is the top)

* z₀ = 0, z_{k+1} = z_k² + c in float64: ``x' = x*x - y*y + re``, ``y' = 2*x*y + im``;
  no fastmath, no fused multiply-add.
* The count is the first k in 1..max_iter with ``x*x + y*y > 4``, or max_iter if there is none.

The kernel skips the iteration for points certainly inside the main cardioid or the period-2
bulb (they never escape, so their count is max_iter): an exact shortcut, with the tests shrunk by a
relative margin so that rounding near the boundary cannot misclassify a point.
"""

from __future__ import annotations

import numba
import numpy as np

_MARGIN = 1.0 - 1e-9


@numba.njit(inline="always")
def _certainly_inside(re: float, im: float) -> bool:
    y2 = im * im
    xq = re - 0.25
    q = xq * xq + y2
    if q * (q + xq) < 0.25 * y2 * _MARGIN:
        return True
    xb = re + 1.0
    return xb * xb + y2 < 0.0625 * _MARGIN


@numba.njit(inline="always")
def _escape(re: float, im: float, cap: int, max_iter: int) -> int:
    """The first k in 1..cap with |z_k|² > 4, else max_iter (the definition, when cap == max_iter)."""
    x = 0.0
    y = 0.0
    for n in range(1, cap + 1):
        x, y = x * x - y * y + re, 2.0 * x * y + im
        if x * x + y * y > 4.0:
            return n
    return max_iter


@numba.njit(cache=True, nogil=True)
def _escape_counts(cx, cy, span, width, height, max_iter, row0, nrows, out):
    scale = span / width
    total = 0
    for r in range(nrows):
        im = cy - (row0 + r + 0.5 - height / 2) * scale
        for i in range(width):
            re = cx + (i + 0.5 - width / 2) * scale
            k = max_iter if _certainly_inside(re, im) else _escape(re, im, max_iter, max_iter)
            out[r, i] = k
            total += k
    return total


def escape_counts(
    cx: float, cy: float, span: float, width: int, height: int, max_iter: int, row0: int, nrows: int, out: np.ndarray
) -> int:
    """Fill ``out`` (nrows × width, uint16 or uint32) with the counts of rows row0… ; return their sum."""
    return int(_escape_counts(float(cx), float(cy), float(span), width, height, max_iter, row0, nrows, out))


def escape_counts_reference(cx: float, cy: float, span: float, width: int, height: int, max_iter: int) -> np.ndarray:
    """Plain vectorised NumPy implementation of the definition, for tests: a uint32 (H, W) array."""
    scale = span / width
    i = np.arange(width, dtype=np.float64)
    j = np.arange(height, dtype=np.float64)
    re = cx + (i + 0.5 - width / 2) * scale
    im = cy - (j + 0.5 - height / 2) * scale
    c_re, c_im = np.broadcast_to(re, (height, width)), np.broadcast_to(im[:, None], (height, width))
    x = np.zeros((height, width))
    y = np.zeros((height, width))
    counts = np.full((height, width), max_iter, dtype=np.uint32)
    live = np.ones((height, width), dtype=bool)
    for n in range(1, max_iter + 1):
        x, y = np.where(live, x * x - y * y + c_re, x), np.where(live, 2.0 * x * y + c_im, y)
        escaped = live & (x * x + y * y > 4.0)
        counts[escaped] = n
        live &= ~escaped
        if not live.any():
            break
    return counts


@numba.njit(cache=True, nogil=True)
def _sample_costs(cx, cy, span, width, height, cap, max_iter, rows, columns, out):
    scale = span / width
    for a in range(rows.shape[0]):
        im = cy - (rows[a] + 0.5 - height / 2) * scale
        cost = 0.0
        for b in range(columns.shape[0]):
            re = cx + (columns[b] + 0.5 - width / 2) * scale
            # Points the shortcut catches are nearly free; the others cost their (capped) count.
            cost += 1.0 if _certainly_inside(re, im) else _escape(re, im, cap, max_iter)
        out[a] = cost * width / columns.shape[0]


def estimate_row_costs(
    cx: float, cy: float, span: float, width: int, height: int, max_iter: int, samples: int = 64, rows: int = 512
) -> np.ndarray:
    """Estimated iterations of every row, from a coarse grid: ``rows`` sampled rows × ``samples`` columns.

    A point that has not escaped after min(max_iter, 2000) iterations is assumed to cost max_iter.
    Rows in between sampled rows take the larger of their two neighbours' estimates. Each is ≥ width.
    """
    sampled_rows = np.unique(np.linspace(0, height - 1, min(rows, height)).round().astype(np.int64))
    columns = np.linspace(0, width - 1, min(samples, width)).round().astype(np.int64)
    estimates = np.empty(len(sampled_rows))
    _sample_costs(
        float(cx),
        float(cy),
        float(span),
        width,
        height,
        min(max_iter, 2000),
        max_iter,
        sampled_rows.astype(np.float64),
        columns.astype(np.float64),
        estimates,
    )
    every_row = np.arange(height)
    upper = np.searchsorted(sampled_rows, every_row).clip(0, len(sampled_rows) - 1)
    lower = (upper - 1).clip(0)
    costs = np.maximum(estimates[upper], estimates[lower])
    return np.maximum(costs, float(width))
