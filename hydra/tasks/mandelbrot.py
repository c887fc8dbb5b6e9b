"""Distributed Mandelbrot: exact escape counts (see :mod:`hydra.kernels.mandelbrot`) and a PNG.

Units are image rows; a chunk is a stripe of whole rows. Rows cost wildly different amounts (a
row through the set costs max_iter per pixel, one outside it a few), so stripes are cut by
*estimated cost*, not by height: at submit the scheduler runs a cheap coarse pass
(``estimate_row_costs``: 512 rows × 64 columns, under a second even for 65536² at 10⁷ iterations)
and stores the prefix sums of the row costs with the job. A worker claiming a stripe keeps the rows
whose estimated cost fits its measured speed × the target chunk time, exactly like π's blocks, and
turns the rest into a new chunk (split on claim, see :mod:`hydra.worker`). So stripes are short
where the view is expensive and tall where it is cheap, and each takes about the target time on
the worker that runs it. A stripe is also capped at 4 Mpixel so that results stay small.

A stripe's result is its count array, zlib-compressed, stored once in ``hydra:job:<id>:blobs``
(expiring with the job); :mod:`hydra.images` assembles them into a memory-mapped ``.npy`` and a
streamed PNG.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from hydra.errors import InvalidInput
from hydra.kernels import mandelbrot as kernel
from hydra.tasks.base import ChunkResult, Plan, Task, parse_count

MAX_SIDE = 65536
MAX_ITER = 10**7
MAX_STRIPE_PIXELS = 4 * 1024 * 1024
# A stripe's blob: little-endian (first row, row count), then the zlib-compressed counts.
_HEADER = "<QQ"


def count_dtype(max_iter: int) -> type[np.unsignedinteger]:
    return np.uint16 if max_iter <= 65535 else np.uint32


def _parse_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"--{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidInput(f"--{name} must be finite, got {value!r}")
    return number


def parse_center(value: Any) -> tuple[float, float]:
    parts = [str(v) for v in value] if isinstance(value, list | tuple) else str(value).split(",")
    if len(parts) != 2:
        raise InvalidInput(f"--center must be two numbers as re,im (e.g. -0.5,0), got {value!r}")
    return _parse_float("center", parts[0]), _parse_float("center", parts[1])


class MandelbrotTask(Task):
    name = "mandelbrot"
    display_unit = "pixels"
    sums = ("iterations",)

    def parse(self, params: Mapping[str, Any]) -> dict[str, Any]:
        width = parse_count("width", params.get("width", 1024), low=1, high=MAX_SIDE)
        height = parse_count("height", params.get("height", width), low=1, high=MAX_SIDE)
        max_iter = parse_count("max-iter", params.get("max_iter", 1000), low=1, high=MAX_ITER)
        cx, cy = parse_center(params.get("center", "-0.5,0"))
        span = _parse_float("span", params.get("span", 3.0))
        if span <= 0:
            raise InvalidInput(f"--span must be positive, got {params.get('span')!r}")
        return {"width": width, "height": height, "max_iter": max_iter, "center": [cx, cy], "span": span}

    def plan(self, params: dict[str, Any]) -> Plan:
        p = params
        costs = kernel.estimate_row_costs(*p["center"], p["span"], p["width"], p["height"], p["max_iter"])
        prefix = np.concatenate([[0.0], np.cumsum(costs)])
        return Plan(units_total=p["height"], data=prefix.astype("<f8").tobytes())

    def units_total(self, params: dict[str, Any]) -> int:
        return params["height"]

    @staticmethod
    def _prefix(data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype="<f8")

    def work(self, params: dict[str, Any], data: bytes, first: int, count: int) -> float:
        prefix = self._prefix(data)
        return float(prefix[first + count] - prefix[first])

    def units_for_work(self, params: dict[str, Any], data: bytes, first: int, count: int, work: float) -> int:
        prefix = self._prefix(data)
        fits = int(np.searchsorted(prefix, prefix[first] + work, side="right")) - 1 - first
        return max(1, min(count, fits, MAX_STRIPE_PIXELS // params["width"]))

    def probe_units(self, params: dict[str, Any]) -> int:
        return 1

    def display_size(self, params: dict[str, Any], first: int, count: int) -> int:
        return count * params["width"]

    def warm_up(self) -> None:
        kernel.escape_counts(0.0, 0.0, 1.0, 1, 1, 1, 0, 1, np.empty((1, 1), np.uint16))
        kernel.escape_counts(0.0, 0.0, 1.0, 1, 1, 1, 0, 1, np.empty((1, 1), np.uint32))

    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        p = params
        out = np.empty((count, p["width"]), dtype=count_dtype(p["max_iter"]))
        compute = kernel.escape_counts
        if device == "cuda":
            from hydra.kernels.cuda import mandelbrot_escape_counts_cuda as compute
        total = compute(*p["center"], p["span"], p["width"], p["height"], p["max_iter"], first, count, out)
        header = struct.pack(_HEADER, first, count)
        return ChunkResult(sums={"iterations": total}, blob=header + zlib.compress(out.tobytes(), 1), array=out)

    def announce(self, job_id: str, params: dict[str, Any], result: ChunkResult) -> dict[str, Any] | None:
        from hydra.images import stripe_event

        if result.array is not None:
            first = struct.unpack_from(_HEADER, result.blob)[0]
            return stripe_event(job_id, params, first, result.array)
        return stripe_event(job_id, params, *decode_stripe(params, result.blob))

    def max_blob_bytes(self, params: dict[str, Any], count: int) -> int:
        raw = count * params["width"] * np.dtype(count_dtype(params["max_iter"])).itemsize
        return raw + raw // 100 + 64 + struct.calcsize(_HEADER)

    def check_blob(self, params: dict[str, Any], first: int, count: int, blob: bytes) -> None:
        row, rows = decode_stripe(params, blob)[0], struct.unpack_from(_HEADER, blob)[1]
        if (row, rows) != (first, count):
            raise InvalidInput("stripe blob is for other rows")

    def chunk_memory(self, params: dict[str, Any], count: int) -> int:
        return 3 * count * params["width"] * np.dtype(count_dtype(params["max_iter"])).itemsize

    def check_result(self, params: dict[str, Any], count: int, result: ChunkResult) -> None:
        if len(result.blob) > self.max_blob_bytes(params, count):
            raise InvalidInput("stripe result larger than its pixels allow")
        iterations = result.sums.get("iterations", -1)
        if type(iterations) is not int or not 0 <= iterations <= count * params["width"] * params["max_iter"]:
            raise InvalidInput("iteration count out of range")

    def summarize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        p = record["params"]
        return {
            "width": p["width"],
            "height": p["height"],
            "max_iter": p["max_iter"],
            "center": p["center"],
            "span": p["span"],
            "pixels": p["width"] * p["height"],
            "iterations": int(record["sum:iterations"]),
        }


def decode_stripe(params: dict[str, Any], blob: bytes) -> tuple[int, np.ndarray]:
    """First row and (rows, width) count array of one stripe's blob.

    Decompression is bounded by the size the stripe's header allows (and the header by the image),
    so a hostile blob cannot inflate into gigabytes; anything inconsistent raises InvalidInput.
    """
    if len(blob) < struct.calcsize(_HEADER):
        raise InvalidInput("stripe blob too short")
    first, count = struct.unpack_from(_HEADER, blob)
    if count < 1 or first + count > params["height"]:
        raise InvalidInput("stripe header outside the image")
    dtype = np.dtype(count_dtype(params["max_iter"]))
    size = count * params["width"] * dtype.itemsize
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob[struct.calcsize(_HEADER) :], size)
    except zlib.error as exc:
        raise InvalidInput(f"stripe blob is not zlib data ({exc})") from None
    if len(raw) != size or inflater.unconsumed_tail:
        raise InvalidInput("stripe blob does not hold its rows")
    return first, np.frombuffer(raw, dtype=dtype).reshape(count, params["width"])
