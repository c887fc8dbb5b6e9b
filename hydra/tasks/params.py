"""A task's parameters, declared once: the CLI options, the page's form and the validation come from here.

A :class:`Param` says a parameter's name, kind, bounds, default and help. :func:`parse_params` turns
raw values (CLI strings, form strings, JSON numbers, or an already parsed dict) into checked,
normalised values, with a one-line :class:`~hydra.errors.InvalidInput` for anything else; parsing
its own output gives the same dict. :func:`schema` is the JSON the page builds its form from.

Kinds:

* ``count``: a whole number, written ``1e10``, ``10000000000`` or ``10_000_000_000``.
* ``float``: a finite number.
* ``point``: two finite numbers written ``re,im`` (a list of two in JSON).
* ``choice``: one of ``choices``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hydra.errors import InvalidInput

KINDS = ("count", "float", "point", "choice")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    # None: optional, the task's ``finish`` fills it in (e.g. a height that defaults to the width).
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    # True: the value must be strictly above ``low`` (a span > 0).
    open_low: bool = False
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if not self.name.isidentifier():
            raise ValueError(f"parameter name {self.name!r} is not an identifier")

    @property
    def flag(self) -> str:
        """The CLI option: ``max_iter`` → ``--max-iter``."""
        return "--" + self.name.replace("_", "-")

    def parse(self, value: Any) -> Any:
        if self.kind == "count":
            return parse_count(self.flag[2:], value, low=int(self.low or 0), high=int(self.high or 2**63 - 1))
        if self.kind == "float":
            number = parse_float(self.flag[2:], value)
            self._check_bounds(number, value)
            return number
        if self.kind == "point":
            return list(parse_point(self.flag[2:], value))
        text = str(value)
        if text not in self.choices:
            raise InvalidInput(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        return text

    def _check_bounds(self, number: float, value: Any) -> None:
        if self.low is not None and (number <= self.low if self.open_low else number < self.low):
            if self.open_low and self.low == 0:
                raise InvalidInput(f"{self.flag} must be positive, got {value}")
            word = "above" if self.open_low else "at least"
            raise InvalidInput(f"{self.flag} must be {word} {self.low:g}, got {value}")
        if self.high is not None and number > self.high:
            raise InvalidInput(f"{self.flag} must be at most {self.high:g}, got {value}")

    def describe(self) -> str:
        """The help text with the default and bounds, for ``--help`` and the form's tooltip."""
        limits = []
        if self.low is not None:
            limits.append(f"{'>' if self.open_low else '≥'} {self.low:.6g}")
        if self.high is not None:
            limits.append(f"≤ {self.high:.6g}")
        if self.choices:
            limits.append("one of " + ", ".join(self.choices))
        if self.default is not None:
            limits.append(f"default {_shown(self.default)}")
        return f"{self.help} ({'; '.join(limits)})" if limits else self.help


def parse_params(declared: Iterable[Param], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Checked values of every declared parameter (defaults filled in); unknown names are refused."""
    declared = tuple(declared)
    names = {p.name for p in declared}
    unknown = sorted(str(k) for k in raw if k not in names)
    if unknown:
        known = ", ".join(sorted(names)) or "none"
        raise InvalidInput(f"unknown parameter {unknown[0]!r} (this task takes: {known})")
    out: dict[str, Any] = {}
    for param in declared:
        value = raw.get(param.name)
        if value is None or value == "":
            value = param.default
        out[param.name] = None if value is None else param.parse(value)
    return out


def schema(declared: Iterable[Param]) -> list[dict[str, Any]]:
    """The JSON form of the declarations (for the page's generated form)."""
    return [
        {
            "name": p.name,
            "flag": p.flag,
            "kind": p.kind,
            "default": _shown(p.default) if p.default is not None else None,
            "help": p.help,
            "describe": p.describe(),
            "low": p.low,
            "high": p.high,
            "open_low": p.open_low,
            "choices": list(p.choices),
        }
        for p in declared
    ]


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_count(name: str, value: Any, *, low: int, high: int) -> int:
    """An integer written as ``1e10``, ``10000000000`` or ``10_000_000_000`` within [low, high]."""
    if isinstance(value, bool):
        raise InvalidInput(f"--{name} must be a whole number, got {value!r}")
    text = str(value).strip().lower().replace("_", "")
    try:
        number = int(text)
    except ValueError:
        number = _whole_float(name, value, text, high)
    if number < low:
        raise InvalidInput(f"--{name} must be at least {low}, got {value}")
    if number > high:
        raise InvalidInput(f"--{name} must be at most {high:.3g}, got {value}")
    return number


def _whole_float(name: str, value: Any, text: str, high: int) -> int:
    try:
        real = float(text)
    except ValueError:
        raise InvalidInput(f"--{name} must be a number such as 1e10, got {value!r}") from None
    if math.isfinite(real) and real > high:
        raise InvalidInput(f"--{name} must be at most {high:.3g}, got {value}")
    if not math.isfinite(real) or real != int(real):
        raise InvalidInput(f"--{name} must be a whole number, got {value!r}")
    return int(real)


def parse_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"--{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"--{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidInput(f"--{name} must be finite, got {value!r}")
    return number


def parse_point(name: str, value: Any) -> tuple[float, float]:
    parts = [str(v) for v in value] if isinstance(value, list | tuple) else str(value).split(",")
    if len(parts) != 2:
        raise InvalidInput(f"--{name} must be two numbers as re,im (e.g. -0.5,0), got {value!r}")
    return parse_float(name, parts[0]), parse_float(name, parts[1])
