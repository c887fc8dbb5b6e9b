"""A Mandelbrot stripe on the wire: little-endian (first row, row count), then the zlib-compressed counts."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from hydra.errors import InvalidInput

_HEADER = "<QQ"
HEADER_BYTES = struct.calcsize(_HEADER)


def count_dtype(max_iter: int) -> type[np.unsignedinteger]:
    return np.uint16 if max_iter <= 65535 else np.uint32


def encode_stripe(first: int, counts: np.ndarray) -> bytes:
    return struct.pack(_HEADER, first, counts.shape[0]) + zlib.compress(counts.tobytes(), 1)


def stripe_first(blob: bytes) -> int:
    return struct.unpack_from(_HEADER, blob)[0]


def decode_stripe(params: dict[str, Any], blob: bytes) -> tuple[int, np.ndarray]:
    """First row and (rows, width) count array of one stripe's blob.

    Decompression is bounded by the size the stripe's header allows (and the header by the image),
    so a hostile blob cannot inflate into gigabytes; anything inconsistent raises InvalidInput.
    """
    if len(blob) < HEADER_BYTES:
        raise InvalidInput("stripe blob too short")
    first, count = struct.unpack_from(_HEADER, blob)
    if count < 1 or first + count > params["height"]:
        raise InvalidInput("stripe header outside the image")
    dtype = np.dtype(count_dtype(params["max_iter"]))
    size = count * params["width"] * dtype.itemsize
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob[HEADER_BYTES:], size)
    except zlib.error as exc:
        raise InvalidInput(f"stripe blob is not zlib data ({exc})") from None
    if len(raw) != size or inflater.unconsumed_tail:
        raise InvalidInput("stripe blob does not hold its rows")
    return first, np.frombuffer(raw, dtype=dtype).reshape(count, params["width"])
