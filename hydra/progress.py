"""Progress display for a waiting CLI: a bar on a terminal, plain lines otherwise."""

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

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
