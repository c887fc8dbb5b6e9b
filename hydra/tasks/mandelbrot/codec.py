"""A Mandelbrot stripe on the wire: little-endian (first row, row count), then the zlib-compressed counts."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

_HEADER = "<QQ"
HEADER_BYTES = struct.calcsize(_HEADER)


def count_dtype(max_iter: int) -> type[np.unsignedinteger]:
    return np.uint16 if max_iter <= 65535 else np.uint32


def encode_stripe(first: int, counts: np.ndarray) -> bytes:
    return struct.pack(_HEADER, first, counts.shape[0]) + zlib.compress(counts.tobytes(), 1)


def stripe_first(blob: bytes) -> int:
    return struct.unpack_from(_HEADER, blob)[0]


def decode_stripe(params: dict[str, Any], blob: bytes) -> tuple[int, np.ndarray]:
    """First row and (rows, width) count array of one stripe's blob; refuses a blob that lies about its size."""
    first, count = struct.unpack_from(_HEADER, blob)
    dtype = np.dtype(count_dtype(params["max_iter"]))
    expected = count * params["width"] * dtype.itemsize
    if first + count > params["height"]:
        raise ValueError("stripe outside the image")
    unpacker = zlib.decompressobj()
    raw = unpacker.decompress(blob[HEADER_BYTES:], expected)
    if len(raw) != expected or unpacker.unconsumed_tail:
        raise ValueError("stripe size does not match its header")
    return first, np.frombuffer(raw, dtype=dtype).reshape(count, params["width"])
