"""Distributed Mandelbrot: exact escape counts (see :mod:`hydra.tasks.mandelbrot.kernel`) and a PNG.

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
(expiring with the job); :mod:`hydra.tasks.mandelbrot.image` assembles them into a memory-mapped
``.npy`` and a streamed PNG (``--counts``, ``--out``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hydra.errors import InvalidInput
from hydra.progress import human, plural
from hydra.tasks.base import ChunkResult, Output, Param, Plan, Task
from hydra.tasks.mandelbrot.codec import HEADER_BYTES, count_dtype, decode_stripe, encode_stripe, stripe_first

MAX_SIDE = 65536
MAX_ITER = 10**7
MAX_STRIPE_PIXELS = 4 * 1024 * 1024


class MandelbrotTask(Task):
    name = "mandelbrot"
    version = "1"
    display_unit = "pixels"
    params = (
        Param("width", "count", 1024, "image width in pixels", 1, MAX_SIDE),
        Param("height", "count", None, "image height in pixels (default: the width)", 1, MAX_SIDE),
        Param("max_iter", "count", 1000, "iterations before a point counts as inside", 1, MAX_ITER),
        Param("center", "point", "-0.5,0", "centre of the view as re,im"),
        Param("span", "float", 3.0, "width of the view in the complex plane", low=0, open_low=True),
    )
    sums = ("iterations",)
    outputs = (Output("out", "write the picture to this PNG"), Output("counts", "write the escape counts to this .npy"))
    # Work is the estimated iterations actually run (a point the cardioid test catches costs 1):
    # 1 credit = 10**9 of them, about 2 s of one core.
    credit_per_work = 1e-9

    def finish(self, params: dict[str, Any]) -> dict[str, Any]:
        if params["height"] is None:
            params["height"] = params["width"]
        return params

    def plan(self, params: dict[str, Any]) -> Plan:
        from hydra.tasks.mandelbrot import kernel  # numba: loaded where chunks run or jobs are planned

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
        from hydra.tasks.mandelbrot import kernel  # numba: loaded where chunks run or jobs are planned

        kernel.escape_counts(0.0, 0.0, 1.0, 1, 1, 1, 0, 1, np.empty((1, 1), np.uint16))
        kernel.escape_counts(0.0, 0.0, 1.0, 1, 1, 1, 0, 1, np.empty((1, 1), np.uint32))

    def run(
        self, params: dict[str, Any], data: bytes, seed: int, first: int, count: int, device: str = "cpu"
    ) -> ChunkResult:
        from hydra.tasks.mandelbrot import kernel  # numba: loaded where chunks run or jobs are planned

        p = params
        out = np.empty((count, p["width"]), dtype=count_dtype(p["max_iter"]))
        compute = kernel.escape_counts
        if device == "cuda":
            from hydra.tasks.mandelbrot.cuda import mandelbrot_escape_counts_cuda as compute
        total = compute(*p["center"], p["span"], p["width"], p["height"], p["max_iter"], first, count, out)
        return ChunkResult(sums={"iterations": total}, blob=encode_stripe(first, out), array=out)

    def announce(self, job_id: str, params: dict[str, Any], result: ChunkResult) -> dict[str, Any] | None:
        from hydra.tasks.mandelbrot.image import stripe_event

        if result.array is not None:
            return stripe_event(job_id, params, stripe_first(result.blob), result.array)
        return stripe_event(job_id, params, *decode_stripe(params, result.blob))

    def max_blob_bytes(self, params: dict[str, Any], count: int) -> int:
        raw = count * params["width"] * np.dtype(count_dtype(params["max_iter"])).itemsize
        return raw + raw // 100 + 64 + HEADER_BYTES

    def check_sums(self, params: dict[str, Any], first: int, count: int, sums: Mapping[str, Any]) -> None:
        super().check_sums(params, first, count, sums)
        pixels = count * params["width"]
        if not pixels <= sums["iterations"] <= pixels * params["max_iter"]:
            raise InvalidInput("iteration count out of range")

    def check_result(self, params: dict[str, Any], count: int, result: ChunkResult) -> None:
        super().check_result(params, count, result)
        iterations = result.sums.get("iterations", -1)
        if type(iterations) is not int or not 0 <= iterations <= count * params["width"] * params["max_iter"]:
            raise InvalidInput("iteration count out of range")

    def check_blob(self, params: dict[str, Any], first: int, count: int, blob: bytes) -> None:
        row, stripe = decode_stripe(params, blob)
        if (row, stripe.shape[0]) != (first, count):
            raise InvalidInput("stripe blob is for other rows")

    def chunk_memory(self, params: dict[str, Any], count: int) -> int:
        return 3 * count * params["width"] * np.dtype(count_dtype(params["max_iter"])).itemsize

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

    def format(self, result: Mapping[str, Any]) -> list[str]:
        lines = [
            f"mandelbrot {result['width']}×{result['height']} max-iter {result['max_iter']} "
            f"centre {result['center'][0]},{result['center'][1]} span {result['span']}",
            f"{human(result['iterations'])} iterations  {result['seconds']:.2f} s  "
            f"{human(result['pixels_per_second'])} pixels/s  {plural(result['workers'], 'worker')}  "
            f"job {result['job']}",
        ]
        return lines + [f"wrote {path}" for path in result.get("files", [])]

    def write_outputs(self, params: dict[str, Any], blobs: Iterable[bytes], paths: Mapping[str, Path]) -> None:
        from hydra.tasks.mandelbrot.image import assemble

        assemble(params, blobs, counts_path=paths.get("counts"), png_path=paths.get("out"))
