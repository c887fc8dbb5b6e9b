"""The wheel volunteers install: exactly the version of Hydra the cluster runs.

Hydra is on no package index, so the page serves its own wheel (``/join``). ``hydra web`` finds
it in a folder (``--wheel-dir`` or ``HYDRA_WHEEL_DIR``; the Docker image keeps the one it was
built from) or, run from a source checkout, builds it at start with ``pip wheel --no-deps`` in
the background.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from hydra import __version__

DIST_NAME = "hydra-volunteer"
WHEEL_NAME = f"hydra_volunteer-{__version__}-py3-none-any.whl"


def find_wheel(folder: str | Path | None) -> Path | None:
    """The wheel of this version in ``folder``, if it is there."""
    if not folder:
        return None
    path = Path(folder) / WHEEL_NAME
    return path if path.is_file() else None


def source_tree() -> Path | None:
    """The checkout this copy of Hydra runs from (editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text()
    except OSError:
        return None
    return root if f'name = "{DIST_NAME}"' in text else None


def _setuptools_version() -> tuple[int, ...]:
    """The installed setuptools' major version (0 when absent); pyproject.toml needs 77 or newer."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in version.split(".")[:1] if part.isdigit()) or (0,)


def start_build(out: Path, root: Path | None = None) -> subprocess.Popen | None:
    """Start ``pip wheel --no-deps`` of the checkout into ``out`` at low priority; None without a checkout."""
    root = root or source_tree()
    if root is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(root)]
    if _setuptools_version() >= (77,):
        command.insert(5, "--no-build-isolation")  # no index needed when the build backend is here
    with open(out / "build.log", "wb") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: os.nice(10)) if hasattr(os, "nice") else None,
        )
