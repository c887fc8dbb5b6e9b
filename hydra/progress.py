"""How far a job is, in one definition, and its display for a waiting CLI.

Rate and ETA are defined here once and used by the CLI's bar, its summary, ``hydra status``,
``hydra result`` and the page (which shows the ``rate`` and ``eta`` the server computed):

* **rate** = units done / seconds since the job started running (its first chunk started;
  before that, since it was submitted). A finished job's rate is its total / (finished - started).
* **ETA** = units left / rate, only while the job is active and once it has done at least
  ``ETA_MIN_PROGRESS`` of its work and run ``ETA_MIN_SECONDS``: before that the rate is dominated
  by start-up (compiling kernels, the small first probe chunks) and an ETA would be wildly long.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO


def human(n: float) -> str:
    """3 significant digits with an SI suffix: 1.23G, 456M, 7.89k."""
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.3g}"


ETA_MIN_PROGRESS = 0.02
ETA_MIN_SECONDS = 1.0


def rate(done: float, started: float | None, created: float, end: float) -> float:
    """Units per second between the job's start (``started``, else ``created``) and ``end``."""
    seconds = end - (started if started is not None else created)
    return done / seconds if seconds > 0 and done > 0 else 0.0


def eta(done: float, total: float, units_per_second: float, seconds: float, active: bool) -> float | None:
    """Seconds left at ``units_per_second``; None when the job ended or it is too early to say."""
    if not active or total <= 0 or units_per_second <= 0:
        return None
    if done / total < ETA_MIN_PROGRESS or seconds < ETA_MIN_SECONDS:
        return None
    return max(0.0, (total - done) / units_per_second)


def plural(n: int, word: str) -> str:
    """``1 worker``, ``2 workers``, ``0 workers``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, *, interval: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self._last_line = 0.0
        self._last_progress = -1.0

    def update(self, status: dict[str, Any]) -> None:
        text = (
            f"{human(status['done'])}/{human(status['total'])} {status['unit']}  "
            f"{human(status['rate'])} {status['unit']}/s  ETA {duration(status['eta'])}  {status['state']}"
        )
        if self.tty:
            width = max(10, shutil.get_terminal_size((80, 20)).columns - len(text) - 10)
            filled = int(width * status["progress"])
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {status['progress']:6.1%} {text}")
            self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval and status["progress"] != self._last_progress:
            self.stream.write(f"{status['progress']:6.1%} {text}\n")
            self.stream.flush()
            self._last_line, self._last_progress = now, status["progress"]

    def note(self, line: str) -> None:
        """A line of its own above the bar (the bar is drawn again at the next update)."""
        self.stream.write(f"\r\033[K{line}\n" if self.tty else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
