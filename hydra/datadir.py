"""Where ``hydra up`` keeps its Redis data and logs, and how later commands find it.

The data directory is ``--data-dir``, else ``$HYDRA_DATA_DIR``, else ``$XDG_DATA_HOME/hydra``
(``~/.local/share/hydra``). A running ``hydra up`` writes ``up.json`` there: its Redis URL, its
page and its process id. A command given no Redis URL (no ``--redis-url``, ``HYDRA_REDIS_URL`` or
``RQ_REDIS_URL``) uses the URL of a running ``hydra up`` found there, so ``hydra up`` in one
terminal and ``hydra submit pi`` in another need no options. The file is removed at stop and
ignored when its process is gone (after a ``kill -9``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATE_FILE = "up.json"
# A fixed port, so that a volunteer's or another terminal's URL stays the same across restarts;
# 6390 rather than Redis's own 6379, which a system Redis may hold.
UP_PORT = 6390


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("HYDRA_DATA_DIR"):
        return Path(env["HYDRA_DATA_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "hydra"


def write_state(data_dir: Path, **state: Any) -> Path:
    """Record a running ``hydra up`` (url, web_url, ...) with this process's id."""
    path = data_dir / STATE_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**state, "pid": os.getpid()}))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The state of the ``hydra up`` running from ``data_dir``, or None when none runs."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) and _alive(pid) and isinstance(state.get("url"), str) else None


def remove_state(data_dir: Path) -> None:
    path = data_dir / STATE_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
