"""Credit: what a chunk is worth, the leaderboard, and exports for whoever pays volunteers.

The unit
    1 credit = 10⁹ reference operations, about 2 seconds of one core of a 2024 desktop CPU in any
    task. A task declares its cost per chunk in its own unit (``Task.work``: π samples, Mandelbrot
    estimated iterations) and the factor ``Task.credit_per_work`` that converts it (π: 10⁻¹⁰, one
    sample costs about a tenth of an iteration; Mandelbrot: 10⁻⁹; plug-ins declare their own,
    default 10⁻⁹). The ledger stores integers in milli-credits.

Fixed in advance, never from reported time
    :func:`chunk_credit` is computed by the trusted side from the job's parameters and data when a
    chunk is cut. It is the difference of the rounded cumulative credit of the job's units, so
    however a job is cut (small chunks for a slow volunteer, large ones for a fast one) the credits
    of its chunks add up exactly to the job's: rounding never favours one volunteer's chunk sizes.

Granted only for accepted work (the ACCEPT script appends the entries; this is the policy)
    * ``--verify 1``: the accepted result's volunteer is granted the chunk's credit.
    * ``--verify 2``: when two distinct volunteers agree, each is granted the chunk's credit (each
      did the work; the verification copy earns the same as the original). A disagreeing result
      earns nothing.
    * ``--verify auto``: a result is granted when it is checked and agrees, or when its volunteer
      is trusted; the volunteer who ran the check copy is granted the chunk's credit too when it
      agrees. If a volunteer is caught later, each of its grants on unchecked work is reversed by a
      visible ``reverse`` entry.
    * A quarantined volunteer's pending credit is never granted; speculative copies that lost the
      race earn nothing (their result is not accepted).

The leaderboard
    Per volunteer: total credit (grants minus reversals), verified chunks (grants minus
    reversals), and the recent average credit (RAC, as in BOINC: credit per day, exponentially
    weighted with a half-life of 7 days; a steady rate of r credits a day converges to r). It is
    kept in ``hydra:credit:board`` by the monitor's signer in the same write that signs the tree
    head, so each entry counts exactly once, and can always be recomputed from the entries.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis as redis_lib

from hydra import ledger
from hydra.ledger import Entry
from hydra.tasks.base import Task

MILLI = 1000
DAY = 86400.0
HALF_LIFE_DAYS = 7.0
TOP = 20


def chunk_credit(task: Task, params: dict[str, Any], data: bytes, first: int, count: int) -> int:
    """Milli-credits of units [first, first + count): fixed by the task's declared cost alone."""

    def cumulative(units: int) -> int:
        return round(task.work(params, data, 0, units) * task.credit_per_work * MILLI) if units else 0

    return cumulative(first + count) - cumulative(first)


def job_credit(task: Task, params: dict[str, Any], data: bytes, units_total: int) -> int:
    """Milli-credits of a whole job: the sum of its chunks' credits however it is cut."""
    return chunk_credit(task, params, data, 0, units_total)


# -- standings -----------------------------------------------------------------------------------


@dataclass
class Standing:
    volunteer: str
    credit: int = 0  # milli-credits
    chunks: int = 0
    grants: int = 0
    reversals: int = 0
    rac: float = 0.0  # credits per day, as of rac_time
    rac_time: float = 0.0
    last: float = 0.0

    def add(self, entry: Entry, half_life_days: float = HALF_LIFE_DAYS) -> None:
        sign = 1 if entry.kind == "grant" else -1
        self.credit += sign * entry.credit
        self.chunks += sign
        if sign > 0:
            self.grants += 1
        else:
            self.reversals += 1
        # BOINC's update: decay what is there to the entry's time, add the entry's share. Entries
        # may come slightly out of time order (several monitors): then decay the entry instead.
        rate = sign * entry.credit / MILLI * math.log(2) / half_life_days
        if entry.time >= self.rac_time:
            self.rac = self.rac * _decay(entry.time - self.rac_time, half_life_days) + rate
            self.rac_time = entry.time
        else:
            self.rac += rate * _decay(self.rac_time - entry.time, half_life_days)
        self.last = max(self.last, entry.time)

    def rac_at(self, now: float, half_life_days: float = HALF_LIFE_DAYS) -> float:
        return self.rac * _decay(max(0.0, now - self.rac_time), half_life_days)

    def row(self, now: float) -> dict[str, Any]:
        return {
            "volunteer": self.volunteer,
            "credit": self.credit / MILLI,
            "chunks": self.chunks,
            "rac": round(self.rac_at(now), 6),
            "grants": self.grants,
            "reversals": self.reversals,
            "last": self.last,
        }


def _decay(seconds: float, half_life_days: float) -> float:
    return 2.0 ** (-seconds / (half_life_days * DAY))


def fold(board: dict[str, Standing], entries: Iterable[Entry]) -> dict[str, Standing]:
    """Add entries to standings (in place); returns the board."""
    for entry in entries:
        board.setdefault(entry.volunteer, Standing(entry.volunteer)).add(entry)
    return board


def ranked(board: Mapping[str, Standing], now: float | None = None) -> list[dict[str, Any]]:
    """Leaderboard rows, most credit first (then most recent average, then name)."""
    now = time.time() if now is None else now
    rows = [s.row(now) for s in board.values()]
    rows.sort(key=lambda r: (-r["credit"], -r["rac"], r["volunteer"]))
    return rows


# -- the board in Redis --------------------------------------------------------------------------


def _load(raw: bytes | None, volunteer: str) -> Standing:
    return Standing(**json.loads(raw)) if raw else Standing(volunteer)


def board_fold(reads: Any, fresh: list[tuple[int, Entry]]) -> ledger.Fold:
    """``prepare`` for :func:`hydra.ledger.sign_slice`: read the standings the new entries touch,
    then write them moved."""
    names = sorted({entry.volunteer for _, entry in fresh})
    if names:
        reads.hmget(ledger.BOARD, names)
    added = sum((1 if entry.kind == "grant" else -1) * entry.credit for _, entry in fresh)

    def write(writes: Any, replies: list[Any]) -> None:
        if not names:
            return
        board = {name: _load(raw, name) for name, raw in zip(names, replies[0], strict=True)}
        fold(board, (entry for _, entry in fresh))
        writes.hset(ledger.BOARD, mapping={n: json.dumps(vars(s)) for n, s in board.items()})
        writes.zadd(ledger.RANK, {n: s.credit for n, s in board.items()})
        writes.hincrby(ledger.TOTALS, "credit", added)

    return write


def monitor_pass(redis: redis_lib.Redis, key: Any, batch: int = ledger.BATCH) -> ledger.SignedHead | None:
    """Sign a head over up to ``batch`` new entries and move the leaderboard (``hydra credit sign``;
    the monitor's signer does the same as entries come)."""
    return ledger.sign_new_head(redis, key, prepare=board_fold, batch=batch)


def board(redis: redis_lib.Redis, *, unsigned_limit: int = 100_000) -> dict[str, Standing]:
    """Standings from Redis, plus entries the monitor has not folded yet (read, never written)."""
    result = {name.decode(): _load(raw, name.decode()) for name, raw in redis.hgetall(ledger.BOARD).items()}
    done = int(redis.hget(ledger.STATE, "size") or 0)
    total = ledger.entry_count(redis)
    pending = ledger.read_entries(redis, done, min(total, done + unsigned_limit))
    return fold(result, (e for _, e in ledger.parse_entries(pending, done)))


def leaderboard(redis: redis_lib.Redis, now: float | None = None, *, unsigned: bool = True) -> list[dict[str, Any]]:
    """Standings, ranked; ``unsigned=False``: only what the signed heads cover."""
    return ranked(board(redis, unsigned_limit=100_000 if unsigned else 0), now)


def credit_event(redis: redis_lib.Redis, top: int = TOP, *, unsigned: bool = True) -> dict[str, Any]:
    """The page's ``credit`` event and ``/api/credit`` body: the top volunteers and the latest head
    (``unsigned=False``: standings as signed, without entries not folded yet: read from the top of
    the board, whatever its size, for the monitor's once-a-second event)."""
    if unsigned:
        rows = leaderboard(redis, unsigned=True)
        volunteers, total = len(rows), round(sum(r["credit"] for r in rows), 3)
    else:
        rows, volunteers, total = signed_top(redis, top)
    head = ledger.latest_head(redis)
    return {
        "top": rows[:top],
        "volunteers": volunteers,
        "total_credit": total,
        "entries": ledger.entry_count(redis),
        "head": {"size": head.size, "root": head.root, "timestamp": head.timestamp} if head else None,
    }


# Volunteers tied with the last of the top read beyond it at most (ranked by recent credit, then
# name, like the rest): past that many, the tie is broken by name alone.
TIES_READ = 1000


def signed_top(
    redis: redis_lib.Redis, top: int = TOP, now: float | None = None
) -> tuple[list[dict[str, Any]], int, float]:
    """The ``top`` signed standings, ranked as :func:`ranked` ranks the whole board, with how many
    volunteers the board holds and their total credit; reads ``top`` standings (and those tied with
    the last), not the board. A board written before the rank existed is indexed once, here."""
    for attempt in range(2):
        pipe = redis.pipeline(transaction=False)
        pipe.zcard(ledger.RANK).hlen(ledger.BOARD).hget(ledger.TOTALS, "credit")
        pipe.zrevrange(ledger.RANK, max(top, 1) - 1, max(top, 1) - 1, withscores=True)
        ranked_count, board_count, total, last = pipe.execute()
        if ranked_count == board_count or attempt:
            break
        _index_board(redis)
    floor = last[0][1] if last else "-inf"
    names = redis.zrevrangebyscore(ledger.RANK, "+inf", floor, start=0, num=top + TIES_READ)
    standings = {
        n.decode(): _load(raw, n.decode())
        for n, raw in zip(names, redis.hmget(ledger.BOARD, names) if names else [], strict=True)
    }
    return ranked(standings, now)[:top], int(ranked_count), round(int(total or 0) / MILLI, 3)


def _index_board(redis: redis_lib.Redis) -> None:
    """Build the rank and the total from the board (a board from before they existed), in one
    transaction with the board as it stands: a signing meanwhile makes it start again."""
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(ledger.STATE)
                board = {name.decode(): _load(raw, name.decode()) for name, raw in pipe.hgetall(ledger.BOARD).items()}
                pipe.multi()
                pipe.delete(ledger.RANK)
                if board:
                    pipe.zadd(ledger.RANK, {name: s.credit for name, s in board.items()})
                pipe.hset(ledger.TOTALS, "credit", sum(s.credit for s in board.values()))
                pipe.execute()
                return
            except redis_lib.WatchError:
                continue


# -- exports -------------------------------------------------------------------------------------

EXPORT_FIELDS = (
    "index",
    "kind",
    "volunteer",
    "job",
    "task",
    "first",
    "count",
    "credit_milli",
    "credit",
    "digest",
    "time",
)


def export_rows(redis: redis_lib.Redis, volunteer: str | None = None, signed_only: bool = True) -> Iterator[dict]:
    """Every entry (of one volunteer) as a flat record; by default only those under a signed head."""
    head = ledger.latest_head(redis)
    end = (head.size if head else 0) if signed_only else ledger.entry_count(redis)
    step = 10_000
    for lo in range(0, end, step):
        for index, entry in ledger.parse_entries(ledger.read_entries(redis, lo, min(end, lo + step)), lo):
            if volunteer is None or entry.volunteer == volunteer:
                row = asdict(entry)
                row["credit_milli"] = row.pop("credit")
                yield {"index": index, **row, "credit": entry.credit / MILLI}


def export(redis: redis_lib.Redis, fmt: str, volunteer: str | None = None) -> str:
    rows = list(export_rows(redis, volunteer))
    if fmt == "json":
        head = ledger.latest_head(redis)
        body = {
            "unit": "1 credit = 10^9 reference operations; credit_milli = credit × 1000",
            "head": head.to_json() if head else None,
            "leaderboard": leaderboard(redis),
            "entries": [{k: r[k] for k in EXPORT_FIELDS} for r in rows],
        }
        return json.dumps(body, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in EXPORT_FIELDS} for r in rows)
    return out.getvalue()
