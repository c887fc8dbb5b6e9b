"""How chunk results combine into a job's result: exactly, and the same in any order.

A task names its integer results in ``Task.sums`` and says in ``Task.reduce`` how each combines:

* ``"sum"`` (the default): added, as counts and integer totals are.
* ``"max"`` / ``"min"``: the largest / smallest value any chunk reported.
* ``"at:<name>"``: where the ``max``/``min`` of ``<name>`` was found (e.g. the prime that starts the
  largest gap). The chunk with the better ``<name>`` wins; on a tie, the smaller where wins, so the
  answer does not depend on which chunk arrived first.

Every value is an int; ``max``/``min``/``at`` values stay below 2**53 so that Redis' Lua (whose
numbers are doubles) compares them exactly. Floats never combine: a task that needs a real number
reports an exact integer (a count, a fixed-point total) and divides in ``summarize``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KINDS = ("sum", "max", "min")
EXACT = 2**53


def kinds(sums: tuple[str, ...], reduce: Mapping[str, str]) -> dict[str, str]:
    """The reduction of every sum, checked (``sum`` unless the task says otherwise)."""
    out = {name: reduce.get(name, "sum") for name in sums}
    for name, kind in out.items():
        if kind.startswith("at:"):
            target = kind[3:]
            if out.get(target) not in ("max", "min"):
                raise ValueError(f"{name!r}: {kind!r} must name a max or min sum of the same task")
        elif kind not in KINDS:
            raise ValueError(f"{name!r}: reduction must be sum, max, min or at:<name>, not {kind!r}")
    unknown = set(reduce) - set(sums)
    if unknown:
        raise ValueError(f"reduce names {sorted(unknown)} that are not in sums")
    return out


def initial(kinds_: Mapping[str, str]) -> dict[str, int]:
    """A job's sums before any chunk: 0 for added sums; max/min/at are absent until a chunk sets them."""
    return {name: 0 for name, kind in kinds_.items() if kind == "sum"}


def combine(kinds_: Mapping[str, str], a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, int]:
    """The combination of two partial results; either may lack max/min/at fields (nothing yet)."""
    out: dict[str, int] = {}
    for name, kind in kinds_.items():
        if kind == "sum":
            out[name] = int(a.get(name, 0)) + int(b.get(name, 0))
        elif kind in ("max", "min"):
            values = [int(x[name]) for x in (a, b) if name in x]
            if values:
                out[name] = max(values) if kind == "max" else min(values)
    for name, kind in kinds_.items():
        if kind.startswith("at:"):
            target = kind[3:]
            best = out.get(target)
            wheres = [int(x[name]) for x in (a, b) if name in x and target in x and int(x[target]) == best]
            if wheres:
                out[name] = min(wheres)
    return out


def lua_args(kinds_: Mapping[str, str], sums: Mapping[str, int]) -> list[str | int]:
    """ARGV triples (name, value, kind) of one chunk's sums for :data:`LUA`'s ``reduce_sums``."""
    out: list[str | int] = []
    for name, kind in kinds_.items():
        out += [name, int(sums[name]), kind]
    return out


# The same combination inside Redis, for the script that accepts a result (the job record is one
# hash; its fields are ``sum:<name>``). Atomic with the acceptance, so two results never interleave.
# ``reduce_sums(job_key, ARGV, first)`` reads (name, value, kind) triples from ARGV[first]; values
# are compared as Lua numbers (doubles), exact below 2**53 (checked on the trusted side first). It
# returns the new totals of the added sums, by name.
LUA = """
local function reduce_sums(job, argv, first)
  local improved, tied, added = {}, {}, {}
  for i = first, #argv, 3 do
    local name, value, kind = argv[i], argv[i + 1], argv[i + 2]
    local field = 'sum:' .. name
    if kind == 'sum' then
      added[name] = redis.call('HINCRBY', job, field, value)
    elseif kind == 'max' or kind == 'min' then
      local before = redis.call('HGET', job, field)
      local v = tonumber(value)
      if not before or (kind == 'max' and v > tonumber(before)) or (kind == 'min' and v < tonumber(before)) then
        redis.call('HSET', job, field, value)
        improved[name] = true
      elseif v == tonumber(before) then
        tied[name] = true
      end
    end
  end
  for i = first, #argv, 3 do
    local name, value, kind = argv[i], argv[i + 1], argv[i + 2]
    if string.sub(kind, 1, 3) == 'at:' then
      local target, field = string.sub(kind, 4), 'sum:' .. name
      local current = redis.call('HGET', job, field)
      if improved[target] or (tied[target] and (not current or tonumber(value) < tonumber(current))) then
        redis.call('HSET', job, field, value)
      end
    end
  end
  return added
end
"""
