"""Documents a volunteer (or anyone) can check offline with only the operator's public key.

A *statement* holds one volunteer's ledger entries, each with its leaf index and RFC 6962
inclusion proof, and the signed tree head they are proven against. A *consistency* document holds
two signed heads and the RFC 6962 consistency proof that the newer tree extends the older one:
nothing signed before was rewritten or removed. :func:`verify_document` checks either kind and
raises :class:`~hydra.ledger.LedgerError` with one line saying what is wrong.

Statement (JSON)::

    {"statement": "hydra-credit/1", "volunteer": "alice", "head": {signed head},
     "entries": [{"index": 17, "entry": "<the stored entry, verbatim>", "proof": ["<hex>", ...]}],
     "totals": {"credit_milli": 1234, "chunks": 3, "grants": 3, "reversals": 0}}

Consistency (JSON)::

    {"consistency": "hydra-credit/1", "old": {signed head}, "new": {signed head}, "proof": ["<hex>"]}
"""

from __future__ import annotations

import json
from typing import Any

import redis as redis_lib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hydra import merkle
from hydra.ledger import (
    LedgerError,
    RedisTree,
    SignedHead,
    by_volunteer_key,
    head_for_size,
    latest_head,
    parse_entry,
)

FORMAT = "hydra-credit/1"


def _totals(entries: list[Any]) -> dict[str, int]:
    grants = sum(1 for e in entries if e.kind == "grant")
    return {
        "credit_milli": sum(e.signed_credit for e in entries),
        "chunks": grants - (len(entries) - grants),
        "grants": grants,
        "reversals": len(entries) - grants,
    }


def build_statement(redis: redis_lib.Redis, volunteer: str) -> dict[str, Any]:
    """``volunteer``'s entries under the latest signed head, with inclusion proofs."""
    head = latest_head(redis)
    if head is None:
        raise LedgerError("the ledger has no signed tree head yet (is a monitor running?)")
    indices = [int(i) for i in redis.lrange(by_volunteer_key(volunteer), 0, -1)]
    indices = [i for i in indices if i < head.size]
    tree = RedisTree(redis, head.size).preload()
    raw = tree.load_blocks(indices)
    items, parsed = [], []
    for index in indices:
        if index not in raw:
            raise LedgerError(f"ledger entry {index} is missing")
        proof = merkle.inclusion_proof(tree, index, head.size)
        items.append({"index": index, "entry": raw[index].decode(), "proof": [p.hex() for p in proof]})
        parsed.append(parse_entry(raw[index]))
    return {
        "statement": FORMAT,
        "volunteer": volunteer,
        "head": head.to_json(),
        "entries": items,
        "totals": _totals(parsed),
    }


def build_consistency(redis: redis_lib.Redis, old: int, new: int | None = None) -> dict[str, Any]:
    """Proof that the signed head of ``new`` entries (default: the latest) extends that of ``old``."""
    new_head = latest_head(redis) if new is None else head_for_size(redis, new)
    if new_head is None:
        raise LedgerError("the ledger has no signed tree head yet")
    old_head = head_for_size(redis, old)
    if old_head.size > new_head.size:
        raise LedgerError(f"the old head ({old_head.size} entries) is larger than the new ({new_head.size})")
    tree = RedisTree(redis, new_head.size)
    proof = merkle.consistency_proof(tree, old_head.size, new_head.size)
    return {
        "consistency": FORMAT,
        "old": old_head.to_json(),
        "new": new_head.to_json(),
        "proof": [p.hex() for p in proof],
    }


def _hexes(values: Any, what: str) -> list[bytes]:
    try:
        out = [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        out = None
    if not isinstance(values, list) or out is None or any(len(h) != merkle.HASH_SIZE for h in out):
        raise LedgerError(f"{what} is not a list of SHA-256 hashes")
    return out


def verify_statement(doc: dict[str, Any], public: Ed25519PublicKey) -> str:
    head = SignedHead.from_json(doc.get("head"))
    head.check(public)
    volunteer = doc.get("volunteer")
    items = doc.get("entries")
    if not isinstance(volunteer, str) or not isinstance(items, list):
        raise LedgerError("the statement has no volunteer or no entry list")
    seen: set[int] = set()
    parsed = []
    root = bytes.fromhex(head.root)
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("index"), int)
            or not isinstance(item.get("entry"), str)
        ):
            raise LedgerError("a statement entry lacks its index or its text")
        index = item["index"]
        if index in seen:
            raise LedgerError(f"entry {index} appears twice")
        seen.add(index)
        proof = _hexes(item.get("proof"), f"the proof of entry {index}")
        if not merkle.verify_inclusion(item["entry"].encode(), index, head.size, proof, root):
            raise LedgerError(f"entry {index} is not in the signed ledger (its inclusion proof fails)")
        entry = parse_entry(item["entry"])
        if entry.volunteer != volunteer:
            raise LedgerError(f"entry {index} belongs to {entry.volunteer}, not {volunteer}")
        parsed.append(entry)
    grants = [e for e in parsed if e.kind == "grant"]
    for entry in parsed:
        if entry.kind == "reverse" and not any(entry.reverses(g) for g in grants):
            raise LedgerError(
                f"a reversal of job {entry.job} units {entry.first}+{entry.count} reverses no grant shown"
            )
    totals = _totals(parsed)
    if doc.get("totals") != totals:
        raise LedgerError(f"the stated totals {doc.get('totals')} are not those of the entries {totals}")
    return (
        f"ok: {len(parsed)} entries of {volunteer}, {totals['credit_milli'] / 1000:g} credits, "
        f"{totals['chunks']} chunks, under the signed head of {head.size} entries (root {head.root[:16]}…)"
    )


def verify_consistency_doc(doc: dict[str, Any], public: Ed25519PublicKey) -> str:
    old, new = SignedHead.from_json(doc.get("old")), SignedHead.from_json(doc.get("new"))
    old.check(public)
    new.check(public)
    proof = _hexes(doc.get("proof"), "the consistency proof")
    if not merkle.verify_consistency(old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof):
        raise LedgerError(f"the ledger of {new.size} entries does not extend that of {old.size}: it was rewritten")
    return f"ok: the signed ledger of {new.size} entries extends the one of {old.size} (nothing was rewritten)"


def verify_document(text: str | bytes, public: Ed25519PublicKey) -> str:
    """Check a statement or consistency document; one line of success, or :class:`LedgerError`."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise LedgerError("the file is not JSON") from None
    if not isinstance(doc, dict):
        raise LedgerError("the file is not a hydra credit document")
    if doc.get("statement") == FORMAT:
        return verify_statement(doc, public)
    if doc.get("consistency") == FORMAT:
        return verify_consistency_doc(doc, public)
    raise LedgerError(f"the file is neither a {FORMAT} statement nor a consistency proof")
