"""The submit options of carbon-aware dispatch: ``--carbon-aware`` and ``--deadline 24h``.

Without ``--carbon-aware`` nothing changes: the job is dispatched exactly as before. With it, the
job may wait for cleaner zones and hours until its deadline (``--deadline``, counted from
submission; default :data:`DEFAULT_DEADLINE`, 24 h), and is never made to miss it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from typing import Any, TypeVar

from hydra.errors import InvalidInput

T = TypeVar("T")

DEFAULT_DEADLINE = 24 * 3600.0
MAX_DEADLINE = 30 * 24 * 3600.0
_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_deadline(text: str) -> float:
    """``"24h"``, ``"90m"``, ``"2d"``, ``"3600"``/``"3600s"``, ``"1.5h"`` → seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h|d)?\s*", text or "")
    if not found:
        raise InvalidInput(f"--deadline wants a duration such as 24h, 90m, 2d or 3600s, got {text!r}")
    seconds = float(found.group(1)) * _UNITS[found.group(2) or ""]
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_DEADLINE:
        raise InvalidInput(f"--deadline must be more than 0 and at most 30d, got {text!r}")
    return seconds


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--carbon-aware",
        action="store_true",
        help="run where and when the grid is cleanest, within the deadline (default 24h)",
    )
    parser.add_argument("--deadline", default=None, help="with --carbon-aware: finish within this long, e.g. 24h")


def submit_fields(args: argparse.Namespace) -> dict[str, object]:
    """``carbon_aware`` and ``deadline`` (seconds from submission, or None) for SubmitOptions."""
    if args.deadline is not None and not args.carbon_aware:
        raise InvalidInput("--deadline goes with --carbon-aware")
    if not args.carbon_aware:
        return {"carbon_aware": False, "deadline": None}
    deadline = DEFAULT_DEADLINE if args.deadline is None else parse_deadline(args.deadline)
    from hydra.carbon.providers import carbon_settings

    carbon_settings(os.environ)  # this process dispatches the job at once too: bad settings stop it here
    return {"carbon_aware": True, "deadline": deadline}


def apply(options: T, args: argparse.Namespace) -> T:
    """``options`` (a SubmitOptions) with ``carbon_aware`` and ``deadline`` set from the arguments."""
    fields: dict[str, Any] = submit_fields(args)
    return dataclasses.replace(options, **fields)  # type: ignore[type-var]
