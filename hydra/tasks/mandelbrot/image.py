"""Turning Mandelbrot stripes into a ``.npy`` and a PNG without holding the image in memory.

Counts are written into a memory-mapped ``.npy``; the PNG is written strip by strip by a small
streaming encoder (PNG is zlib-compressed scanlines in IDAT chunks), because Pillow needs the
whole RGB image in memory, which for 65536² would be 12 GiB. Pillow still reads the result.
Colouring: escaped pixels follow a smooth gradient of log(count) / log(max_iter); points that never
escape are black. The same palette colours the tiles on the live page.
"""

from __future__ import annotations

import base64
import io
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hydra.errors import InvalidInput
from hydra.tasks.mandelbrot.codec import count_dtype, decode_stripe

# Gradient stops (position, RGB): deep blue through white to amber and back to dark.
_STOPS = [
    (0.0, (0, 7, 100)),
    (0.16, (32, 107, 203)),
    (0.42, (237, 255, 255)),
    (0.6425, (255, 170, 0)),
    (0.8575, (0, 2, 0)),
    (1.0, (0, 7, 100)),
]
STRIP_ROWS = 256
CANVAS_WIDTH = 1024


def palette(max_iter: int) -> np.ndarray:
    """RGB (uint8) of every count 0..max_iter."""
    k = np.arange(max_iter + 1, dtype=np.float64)
    t = np.log(np.maximum(k, 1)) / np.log(max(max_iter, 2))
    t = (t * 2.5) % 1.0  # a few colour cycles over the range, so detail shows at any depth
    positions = [p for p, _ in _STOPS]
    rgb = np.stack([np.interp(t, positions, [c[i] for _, c in _STOPS]) for i in range(3)], axis=1)
    rgb[max_iter] = 0
    return rgb.round().astype(np.uint8)


def colorize(counts: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[counts]


def write_png(path: Path, width: int, height: int, strips: Iterator[np.ndarray]) -> None:
    """Write an 8-bit RGB PNG from strips of shape (rows, width, 3), streaming."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(6)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for strip in strips:
            rows = np.concatenate([np.zeros((strip.shape[0], 1), np.uint8), strip.reshape(strip.shape[0], -1)], 1)
            data = compressor.compress(rows.tobytes())
            if data:
                out.write(chunk(b"IDAT", data))
        out.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))


def assemble(
    params: dict[str, Any],
    blobs: Iterable[bytes],
    *,
    counts_path: Path | None = None,
    png_path: Path | None = None,
) -> None:
    """Write the finished job's counts (.npy) and/or picture (.png) from its stripes' blobs."""
    width, height, max_iter = params["width"], params["height"], params["max_iter"]
    with tempfile.TemporaryDirectory() as tmp:
        target = counts_path or Path(tmp) / "counts.npy"
        counts = np.lib.format.open_memmap(target, mode="w+", dtype=count_dtype(max_iter), shape=(height, width))
        rows_written = 0
        for blob in blobs:
            first, stripe = decode_stripe(params, blob)
            counts[first : first + stripe.shape[0]] = stripe
            rows_written += stripe.shape[0]
        if rows_written != height:
            raise InvalidInput(f"the job has {rows_written} of {height} rows stored (results expired?)")
        counts.flush()
        if png_path:
            lut = palette(max_iter)
            write_png(
                png_path,
                width,
                height,
                (colorize(counts[r : r + STRIP_ROWS], lut) for r in range(0, height, STRIP_ROWS)),
            )
        del counts


def stripe_event(job_id: str, params: dict[str, Any], first: int, stripe: np.ndarray) -> dict[str, Any] | None:
    """A small coloured PNG of a stripe at page resolution (at most CANVAS_WIDTH wide), or None."""
    from PIL import Image

    step = -(-params["width"] // CANVAS_WIDTH)
    rows = np.arange(first, first + stripe.shape[0])
    keep = rows[rows % step == 0]
    if keep.size == 0:
        return None
    small = stripe[keep - first, ::step]
    buffer = io.BytesIO()
    Image.fromarray(colorize(small, palette(params["max_iter"]))).save(buffer, format="PNG")
    return {
        "job": job_id,
        "row0": int(keep[0] // step),
        "nrows": int(small.shape[0]),
        "width": -(-params["width"] // step),
        "height": -(-params["height"] // step),
        "png": base64.b64encode(buffer.getvalue()).decode(),
    }
