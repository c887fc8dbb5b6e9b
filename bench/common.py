"""Shared pieces of the benchmarks: a warm local cluster, the bare kernel on a process pool, tables."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hydra.connection import connect
from hydra.local import LocalCluster
from hydra.queue import SubmitOptions, live_workers, result_of, submit, wait_for_job

OUT = Path(__file__).resolve().parent / "out"


def _pi_share(args: tuple[int, int, int]) -> int:
    from hydra.tasks.pi.kernel import count_inside_samples

    seed, first, n = args
    return count_inside_samples(seed, first, n)


def _warm(_: int) -> int:
    from hydra.tasks.pi.kernel import count_inside_samples

    return count_inside_samples(0, 0, 1)


def bare_pi(samples: int, seed: int, processes: int) -> tuple[float, int]:
    """Seconds and inside count of the bare kernel, one process per core, no Redis."""
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_warm, range(processes)))
        share = -(-samples // processes)
        parts = [(seed, i * share, min(share, samples - i * share)) for i in range(processes)]
        start = time.perf_counter()
        inside = sum(pool.map(_pi_share, parts))
        return time.perf_counter() - start, inside


class WarmCluster(LocalCluster):
    """A local cluster whose workers have loaded the kernel and measured their speed."""

    def __enter__(self) -> WarmCluster:
        super().__enter__()
        self.client = connect(self.url)
        deadline = time.monotonic() + 120
        while len(live_workers(self.client)) < self.n_workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.05)
        self.run("pi", {"samples": "2e9", "seed": 1})
        return self

    def run(self, task: str, params: dict[str, Any], **options: Any) -> dict[str, Any]:
        job_id = submit(self.client, task, params, SubmitOptions(**options))
        status = wait_for_job(self.client, job_id, timeout=3600)
        if status["state"] != "done":
            raise RuntimeError(f"job {job_id} {status['state']}: {status.get('error')}")
        return result_of(self.client, job_id)

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        super().__exit__(*exc)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(h) for h in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sizes(text: str, bench: str) -> list[int]:
    """``--sizes`` as whole numbers (``1e5`` allowed); a clear one-line error otherwise."""
    try:
        return [int(float(x)) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"{bench}: --sizes takes comma-separated whole numbers") from None


def side_by_side(rows: Sequence[dict[str, Any]], size: str, slow: str, fast: str, header: Sequence[str]) -> str:
    """The table of a benchmark that times a read that grows with what exists against its bounded
    replacement, at each size, with their ratio."""
    return table([[r[size], f"{r[slow]:.2f}", f"{r[fast]:.2f}", f"{r[slow] / r[fast]:.0f}"] for r in rows], header)


def write_json(path: Path | None, data: Any) -> None:
    """Write a benchmark's figures to ``path`` (its ``--json``), if one was asked for, and say so."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
        print(f"wrote {path}")


def save(name: str, data: Any) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def bar_chart(
    path: Path, title: str, labels: Sequence[str], values: Sequence[float], ylabel: str, reference: float | None = None
) -> Path:
    """A small PNG bar chart (matplotlib, a benchmark-only dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.bar(labels, values, color=["#5b8def", "#f39c4a", "#4caf7d", "#c05bd6"][: len(values)])
    if reference is not None:
        ax.axhline(reference, color="#444", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
