"""The credit ledger: append-only entries in Redis, an RFC 6962 Merkle tree over them, signed heads.

Each grant or reversal of credit is one entry, appended by the Lua ACCEPT script atomically with
the acceptance of the result it pays for, as compact JSON in this exact field order
(:func:`format_entry` writes the same bytes, for tests and as the reference for the script)::

    {"kind":"grant","volunteer":"alice","job":"0123456789ab","task":"pi","first":0,"count":8,
     "credit":1234,"digest":"<hex>","time":1764000000.123}

An entry's position in the list is its leaf index and its stored bytes are the leaf data. The
trusted monitor's signer (:mod:`hydra.signer`, a child process of the monitor) calls
:func:`sign_slice` as entries come: it extends a cache of Merkle subtree
hashes with the entries added since the last head, and signs the new tree head with the
operator's Ed25519 key. The signed heads are the commitment: whoever keeps one can later demand
an inclusion proof for any entry (``hydra credit statement``) and a consistency proof that a
newer head extends it (``hydra credit consistency``), and check both offline with the public key
alone (:mod:`hydra.statements`). Anyone able to write to Redis can edit entries, but not without
the edit showing: the proofs would no longer reach a signed root.

Its keys (``hydra:ledger*``, and the board's ``hydra:credit:*``) are listed in :mod:`hydra.keys`.

Cost: subtrees below 16 leaves are recomputed from entries (at most 16 hashes), so the cache
holds 2 × 32 bytes per 16 entries: 4.0 MB for 10⁶ entries, whose entries take ~230 MB of Redis.
A pass reads only the new entries (plus at most 15 before them) and O(log n) cached nodes.
Measured at 10⁶ entries on a 2-core VM (shared): folding and signing the backlog of 10⁶ entries
16 s (16 µs an entry, 20,000 a pass); a pass with 100 new entries 5 ms, with 1,000 25 ms; an idle
pass 0.2 ms; a consistency proof 10-30 ms; a statement of 21,101 entries 13 s (Redis reads list
blocks in the middle of a long list in O(n)), verified offline in 0.7 s.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis as redis_lib
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hydra import keys, merkle
from hydra.errors import HydraError

log = logging.getLogger(__name__)

LEDGER = keys.LEDGER
HEADS = keys.LEDGER_HEADS
STATE = keys.LEDGER_STATE
BOARD = keys.CREDIT_BOARD
# The board's volunteers by credit (milli-credits) and its total, kept with it (hydra.credit), so
# that the page's once-a-second standings read the top of the board, not all of it.
RANK = keys.CREDIT_RANK
TOTALS = keys.CREDIT_TOTALS
level_key = keys.ledger_level
by_volunteer_key = keys.ledger_by_volunteer


# Subtrees of fewer than 2**BASE_LEVEL leaves are not cached: recomputing one costs 16 hashes.
BASE_LEVEL = 4
BLOCK = 1 << BASE_LEVEL
HASH_SIZE = 32
# Entries folded per pass at most, so that a pass stays short even when catching up on a backlog.
BATCH = 20_000
ENTRY_FIELDS = ("kind", "volunteer", "job", "task", "first", "count", "credit", "digest", "time")
KINDS = ("grant", "reverse")


class LedgerError(HydraError):
    """A ledger, statement or key that does not check out; the message says what is wrong."""

    exit_code = 6


# -- entries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str
    volunteer: str
    job: str
    task: str
    first: int
    count: int
    credit: int  # milli-credits, positive for grants and reversals alike
    digest: str
    time: float

    @property
    def signed_credit(self) -> int:
        return self.credit if self.kind == "grant" else -self.credit

    def reverses(self, other: Entry) -> bool:
        """Whether this reversal takes back ``other``'s grant."""
        return (
            self.kind == "reverse"
            and other.kind == "grant"
            and (self.volunteer, self.job, self.first, self.count, self.credit, self.digest)
            == (other.volunteer, other.job, other.first, other.count, other.credit, other.digest)
        )


def format_entry(
    kind: str,
    volunteer: str,
    job: str,
    task: str,
    first: int,
    count: int,
    credit: int,
    digest: str,
    when: float,
) -> bytes:
    """The exact bytes the Lua ACCEPT script appends for one entry (time with 3 decimals)."""
    head = json.dumps(
        {"kind": kind, "volunteer": volunteer, "job": job, "task": task, "first": first, "count": count},
        separators=(",", ":"),
    )
    tail = json.dumps({"credit": credit, "digest": digest}, separators=(",", ":"))
    return f'{head[:-1]},{tail[1:-1]},"time":{when:.3f}}}'.encode()


# An entry as the ACCEPT script writes it, read without a JSON parser (a third of the time: a monitor
# parses every entry it signs, thousands a second at scale). Anything else (escapes, spacing, a
# malformed entry) falls through to the parser, which decides; both read the same entry the same way.
_STRING = r'"([^"\\\x00-\x1f]+)"'
_NATURAL = r"(0|[1-9][0-9]*)"
_ENTRY = re.compile(
    rf'\{{"kind":"(grant|reverse)","volunteer":{_STRING},"job":{_STRING},"task":{_STRING},'
    rf'"first":{_NATURAL},"count":{_NATURAL},"credit":{_NATURAL},"digest":{_STRING},'
    r'"time":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\}'
)


def parse_entry(raw: bytes | str) -> Entry:
    """The entry in ``raw``; raises :class:`LedgerError` for anything the ledger never holds."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        text = ""
    match = _ENTRY.fullmatch(text)
    if not match:
        return parse_entry_json(raw)
    kind, volunteer, job, task, first, count, credit, digest, when = match.groups()
    return Entry(kind, volunteer, job, task, int(first), int(count), int(credit), digest, float(when))


def parse_entry_json(raw: bytes | str) -> Entry:
    """:func:`parse_entry` with a JSON parser: the reference, and the way for entries written otherwise."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise LedgerError("an entry is not JSON") from None
    if not isinstance(data, dict) or tuple(data) != ENTRY_FIELDS:
        raise LedgerError(f"an entry does not have the fields {', '.join(ENTRY_FIELDS)} in that order")
    ints = ("first", "count", "credit")
    if (
        data["kind"] not in KINDS
        or not all(isinstance(data[f], str) and data[f] for f in ("volunteer", "job", "task", "digest"))
        or not all(isinstance(data[f], int) and not isinstance(data[f], bool) and data[f] >= 0 for f in ints)
        or not isinstance(data["time"], int | float)
        or isinstance(data["time"], bool)
    ):
        raise LedgerError("an entry has a field of the wrong kind or sign")
    return Entry(**{**data, "time": float(data["time"])})


def entry_count(redis: redis_lib.Redis) -> int:
    return int(redis.llen(LEDGER))


def read_entries(redis: redis_lib.Redis, start: int, end: int, batch: int = 10_000) -> list[bytes]:
    """Raw entries [start, end), read in batches."""
    out: list[bytes] = []
    for lo in range(start, end, batch):
        out.extend(redis.lrange(LEDGER, lo, min(end, lo + batch) - 1))
    return out


# -- the tree in Redis ---------------------------------------------------------------------------


class RedisTree:
    """RFC 6962 subtree hashes of the first ``size`` entries, from the cache of perfect subtrees.

    ``pending`` holds nodes computed in this pass but not yet written (see :func:`sign_new_head`);
    ``preload`` reads every cached level at once, for callers that build many proofs.
    """

    def __init__(self, redis: redis_lib.Redis, size: int) -> None:
        self.redis = redis
        self.size = size
        self.pending: dict[tuple[int, int], bytes] = {}
        self._leaves: dict[int, bytes] = {}
        self._levels: dict[int, bytes] = {}
        self._nodes: dict[tuple[int, int], bytes] = {}  # read ahead by prefetch

    def queue_prefetch(self, pipe: Any, old: int, new: int) -> list[tuple[int, int]]:
        """Queue on ``pipe`` the reads of the cached nodes that growing the tree from ``old`` to
        ``new`` leaves and hashing its root need: the left siblings of the new upper nodes, and one
        perfect subtree per set bit of ``new`` (read one ``GETRANGE`` at a time they were about ten
        round trips). Returns what was queued, for :meth:`prefetched` to take the replies."""
        wanted: set[tuple[int, int]] = set()
        level = BASE_LEVEL + 1
        while new >> level:
            for i in range(old >> level, new >> level):
                wanted |= {(level - 1, 2 * i), (level - 1, 2 * i + 1)}
            level += 1
        start = 0
        for level in range(new.bit_length() - 1, BASE_LEVEL - 1, -1):
            if new >> level & 1:
                wanted.add((level, start >> level))
                start += 1 << level
        order = sorted((level, index) for level, index in wanted if level not in self._levels)
        for level, index in order:
            pipe.getrange(level_key(level), index * HASH_SIZE, (index + 1) * HASH_SIZE - 1)
        return order

    def prefetched(self, order: list[tuple[int, int]], replies: Sequence[bytes]) -> None:
        # A node this pass computes itself is not cached yet (an empty reply): node() finds it pending.
        self._nodes.update((node, value) for node, value in zip(order, replies, strict=True) if value)

    def preload(self) -> RedisTree:
        level = BASE_LEVEL
        while self.size >> level:
            self._levels[level] = self.redis.get(level_key(level)) or b""
            level += 1
        return self

    def load_blocks(self, indices: Sequence[int]) -> dict[int, bytes]:
        """Read the 16-leaf blocks holding ``indices`` in one round trip; returns index → entry."""
        starts = sorted({i - i % BLOCK for i in indices})
        pipe = self.redis.pipeline(transaction=False)
        for lo in starts:
            pipe.lrange(LEDGER, lo, min(lo + BLOCK, self.size) - 1)
        raw: dict[int, bytes] = {}
        for lo, block in zip(starts, pipe.execute(), strict=True):
            self.add_leaves(lo, block)
            raw.update((lo + j, data) for j, data in enumerate(block))
        return raw

    def add_leaves(self, start: int, data: Sequence[bytes]) -> None:
        for i, raw in enumerate(data):
            self._leaves[start + i] = merkle.leaf_hash(raw)

    def leaf(self, index: int) -> bytes:
        if index not in self._leaves:
            lo = index - index % BLOCK
            self.add_leaves(lo, self.redis.lrange(LEDGER, lo, min(lo + BLOCK, self.size) - 1))
            if index not in self._leaves:
                raise LedgerError(f"ledger entry {index} is missing")
        return self._leaves[index]

    def node(self, level: int, index: int) -> bytes:
        if (level, index) in self.pending:
            return self.pending[level, index]
        lo = index * HASH_SIZE
        if level in self._levels:
            value = self._levels[level][lo : lo + HASH_SIZE]
        elif (level, index) in self._nodes:
            value = self._nodes[level, index]
        else:
            value = self.redis.getrange(level_key(level), lo, lo + HASH_SIZE - 1)
        if len(value) != HASH_SIZE:
            raise LedgerError(f"the tree cache lacks node {index} of level {level}; the ledger state is damaged")
        return value

    def mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 1:
            return self.leaf(start)
        if n & (n - 1) == 0 and n >= BLOCK:
            return self.node(n.bit_length() - 1, start >> (n.bit_length() - 1))
        k = merkle.split(n)
        return merkle.node_hash(self.mth(start, start + k), self.mth(start + k, end))

    def extend(self, old: int, new: int, raw: Sequence[bytes], raw_start: int) -> dict[int, bytes]:
        """Cached levels' new bytes when the tree grows from ``old`` to ``new`` leaves.

        ``raw`` are entries from ``raw_start`` (≤ the first leaf of ``old``'s unfinished block).
        """
        self.add_leaves(raw_start, raw)
        appended: dict[int, bytes] = {}
        level = BASE_LEVEL
        while new >> level:
            before, after = old >> level, new >> level
            if after > before:
                size = 1 << level
                nodes = []
                for i in range(before, after):
                    if level == BASE_LEVEL:
                        value = _block_hash([self._leaves[i * size + j] for j in range(size)])
                    else:
                        value = merkle.node_hash(self.node(level - 1, 2 * i), self.node(level - 1, 2 * i + 1))
                    self.pending[level, i] = value
                    nodes.append(value)
                appended[level] = b"".join(nodes)
            level += 1
        self.size = new
        return appended


def _block_hash(hashes: list[bytes]) -> bytes:
    while len(hashes) > 1:
        hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


# -- keys and signed heads -----------------------------------------------------------------------


def default_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hydra" / "ledger-key.pem"


def load_key(path: str | Path | None = None, *, create: bool = True) -> Ed25519PrivateKey:
    """The operator's signing key from ``path`` (PEM, PKCS#8), created with mode 0600 if absent."""
    path = Path(path) if path else default_key_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise LedgerError(f"no ledger key at {path}") from None
        return _create_key(path)
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger key {path}: {exc.strerror}") from None
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the ledger key %s is readable by others; chmod 600 it", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise LedgerError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerError(f"{path} is not an Ed25519 key")
    return key


def _create_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_key(path, create=False)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    log.info("created the ledger signing key %s (fingerprint %s)", path, fingerprint(key.public_key()))
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise LedgerError("the public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerError("the public key is not an Ed25519 key")
    return key


def fingerprint(public: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return digest.finalize().hex()


@dataclass(frozen=True)
class SignedHead:
    size: int
    timestamp: int  # milliseconds since the epoch
    root: str  # hex
    signature: str  # hex Ed25519 signature of :meth:`signed_bytes`
    key: str  # fingerprint of the signing key

    def signed_bytes(self) -> bytes:
        """RFC 6962 section 3.5 TreeHeadSignature: v1, tree_hash, timestamp, tree_size, root."""
        return struct.pack(">BBQQ", 0, 1, self.timestamp, self.size) + bytes.fromhex(self.root)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> SignedHead:
        try:
            head = cls(**data)
            ok = (
                isinstance(head.size, int)
                and isinstance(head.timestamp, int)
                and head.size >= 0
                and len(bytes.fromhex(head.root)) == HASH_SIZE
                and len(bytes.fromhex(head.signature)) == 64
                and isinstance(head.key, str)
            )
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LedgerError("a signed tree head is malformed")
        return head

    def check(self, public: Ed25519PublicKey) -> None:
        """Raise :class:`LedgerError` unless ``public`` signed this head."""
        if self.key != fingerprint(public):
            raise LedgerError(f"the tree head of size {self.size} was signed by another key ({self.key[:16]}…)")
        try:
            public.verify(bytes.fromhex(self.signature), self.signed_bytes())
        except InvalidSignature:
            raise LedgerError(f"the signature of the tree head of size {self.size} is wrong") from None


def sign_head(key: Ed25519PrivateKey, size: int, root: bytes, timestamp: int | None = None) -> SignedHead:
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    unsigned = SignedHead(size, ts, root.hex(), "00" * 64, fingerprint(key.public_key()))
    return SignedHead(size, ts, root.hex(), key.sign(unsigned.signed_bytes()).hex(), unsigned.key)


def heads(redis: redis_lib.Redis) -> list[SignedHead]:
    return [SignedHead.from_json(json.loads(raw)) for raw in redis.lrange(HEADS, 0, -1)]


def latest_head(redis: redis_lib.Redis) -> SignedHead | None:
    raw = redis.lindex(HEADS, -1)
    return SignedHead.from_json(json.loads(raw)) if raw else None


def head_for_size(redis: redis_lib.Redis, size: int) -> SignedHead:
    """The signed head of exactly ``size`` entries (heads are few: one per signed slice)."""
    for head in reversed(heads(redis)):
        if head.size == size:
            return head
    raise LedgerError(f"no signed tree head of size {size}")


# -- signing (the monitor's signer, hydra credit sign) -----------------------------------------------

# Reads, in one round trip, how far the tree goes (``size`` of the state), how long the ledger is,
# and the entries a slice folds: from the start of the unfinished 16-leaf block to at most
# ARGV[1] entries past ``size``.
_READ_SLICE = f"""
local size = redis.call('HGET', KEYS[1], 'size')
local old = tonumber(size or '0')
if not old then return redis.error_reply('the ledger state is damaged: its size is not a number') end
local total = redis.call('LLEN', KEYS[2])
local new = math.min(total, old + tonumber(ARGV[1]))
if new <= old then return {{size or '', total}} end
return {{size or '', total, redis.call('LRANGE', KEYS[2], old - old % {BLOCK}, new - 1)}}
"""

# Runs the commands that follow (each as its word count, then its words) only if field ARGV[1] of
# hash KEYS[1] still holds ARGV[2] ('' for none): the compare-and-set under which a slice's writes
# land whole or not at all, in one round trip. (Under WATCH, redis-py sends each read alone: a
# slice took 8 round trips, the largest part of a slow monitor pass under load.)
_WRITE_IF = """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""

# Words one command may give _WRITE_IF: Lua unpacks at most 8,000 values. A longer HSET, ZADD or
# RPUSH is cut into several (the same writes, in the same order, in the same script).
_MAX_WORDS = 4000
_ITEM_WORDS = {"HSET": 2, "ZADD": 2, "RPUSH": 1}

# prepare(reads, fresh) queues on ``reads`` (a pipeline sent with the tree's own reads, in one round
# trip) what it needs to read, and returns a Fold. The Fold gets the replies to those reads and
# queues its writes on ``writes``; they land with the tree's, under the same compare-and-set.
Fold = Callable[[Any, list[Any]], None]
Prepare = Callable[[Any, list[tuple[int, Entry]]], Fold]


@dataclass(frozen=True)
class Slice:
    """What :func:`sign_slice` did: the head it signed (None: nothing new, or another monitor signed
    these entries first) and how many entries were left unfolded when it read the ledger."""

    head: SignedHead | None
    left: int


def sign_new_head(
    redis: redis_lib.Redis, key: Ed25519PrivateKey, *, prepare: Prepare | None = None, batch: int = BATCH
) -> SignedHead | None:
    """Fold up to ``batch`` entries added since the last head into the tree cache and sign a new
    head; None when nothing was added or another monitor signed them first (see :func:`sign_slice`)."""
    return sign_slice(redis, key, prepare=prepare, batch=batch).head


def sign_slice(
    redis: redis_lib.Redis, key: Ed25519PrivateKey, *, prepare: Prepare | None = None, batch: int = BATCH
) -> Slice:
    """Fold entries added since the last head into the tree cache and sign the new head, in three
    round trips whatever the ledger's size: read the slice, read the cached nodes (and what
    ``prepare`` reads), write everything under a compare-and-set on the folded size.

    Each entry is folded exactly once however many monitors run: of two that read the same size,
    the second's write finds the size moved and changes nothing. ``prepare`` (see
    :func:`hydra.credit.board_fold`) adds its reads and writes to the slice's, so the leaderboard
    moves with the tree or not at all. Malformed entries are signed like any other (the ledger is
    what it is) and logged.
    """
    size, total, *rest = redis.eval(_READ_SLICE, 2, STATE, LEDGER, batch)
    old = int(size or 0)
    if total <= old:
        return Slice(None, 0)
    raw = rest[0]
    raw_start, new = old - old % BLOCK, min(total, old + batch)
    if raw_start + len(raw) != new:
        raise LedgerError("the ledger shrank while it was read; it must be append-only")
    fresh = parse_entries(raw[old - raw_start :], old)
    tree = RedisTree(redis, old)
    reads = redis.pipeline(transaction=False)
    order = tree.queue_prefetch(reads, old, new)
    fold = prepare(reads, fresh) if prepare else None
    replies = reads.execute() if len(reads) else []
    tree.prefetched(order, replies[: len(order)])
    appended = tree.extend(old, new, raw, raw_start)
    head = sign_head(key, new, merkle.root(tree, new))

    writes = redis.pipeline(transaction=False)  # never sent: it only spells the commands
    for level, data in appended.items():
        writes.append(level_key(level), data)
    by_volunteer: dict[str, list[int]] = {}
    for index, entry in fresh:
        by_volunteer.setdefault(entry.volunteer, []).append(index)
    for volunteer, indices in by_volunteer.items():
        writes.rpush(by_volunteer_key(volunteer), *indices)
    if fold:
        fold(writes, replies[len(order) :])
    writes.hset(STATE, "size", new)
    writes.rpush(HEADS, json.dumps(head.to_json(), separators=(",", ":")))
    args: list[Any] = ["size", size or b""]
    for words in _spelled(writes):
        args += [len(words), *words]
    if not redis.eval(_WRITE_IF, 1, STATE, *args):
        return Slice(None, total - old)
    return Slice(head, total - new)


def _spelled(pipe: Any) -> list[list[Any]]:
    """The commands queued on a pipeline that is never sent, as words; long variadic ones cut up."""
    out = []
    for words, _ in pipe.command_stack:
        name, target, items = str(words[0]).upper(), words[1], list(words[2:])
        step = _ITEM_WORDS.get(name)
        if step is None or len(words) <= _MAX_WORDS:
            out.append(list(words))
            continue
        per = (_MAX_WORDS - 2) // step * step
        out.extend([name, target, *items[i : i + per]] for i in range(0, len(items), per))
    return out


def parse_entries(raw: Sequence[bytes], start: int) -> list[tuple[int, Entry]]:
    out = []
    for i, data in enumerate(raw):
        try:
            out.append((start + i, parse_entry(data)))
        except LedgerError as exc:
            log.error("ledger entry %d is malformed (%s); it is signed but credits nobody", start + i, exc)
    return out
