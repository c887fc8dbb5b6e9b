"""RFC 6962 Merkle trees: tree heads, inclusion and consistency proofs, and their verification.

Hashes follow RFC 6962 section 2.1: a leaf is SHA-256(0x00 || data), an interior node
SHA-256(0x01 || left || right), and the tree over n leaves splits at k, the largest power of two
smaller than n. Proofs are built by the recursive PATH and SUBPROOF definitions of RFC 6962
sections 2.1.1 and 2.1.2, and checked with the verification algorithms RFC 9162 (the revision of
RFC 6962) writes out in sections 2.1.3.2 and 2.1.4.2.

The algorithms only need ``mth(start, end)``, the hash of the subtree over leaves [start, end)
(always a range the RFC recursion visits: ``start`` is aligned to the largest power of two not
above ``end - start``). :class:`MemoryTree` serves it from a list of leaves; the Redis-backed
ledger (:mod:`hydra.ledger`) serves it from a cache of perfect subtrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree(Protocol):
    def mth(self, start: int, end: int) -> bytes:
        """RFC 6962 MTH of leaves [start, end)."""
        ...


def root(tree: Tree, size: int) -> bytes:
    return tree.mth(0, size) if size else EMPTY_ROOT


def inclusion_proof(tree: Tree, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 section 2.1.1."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            proof.append(tree.mth(start + k, end))
            end = start + k
        else:
            proof.append(tree.mth(start, start + k))
            start += k
    return proof[::-1]


def consistency_proof(tree: Tree, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[0:new]) of RFC 6962 section 2.1.2 (empty when old is 0 or equals new)."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    proof: list[bytes] = []
    start, end, whole = 0, new, True
    m = old
    while m != end - start:
        k = split(end - start)
        if m <= k:
            proof.append(tree.mth(start + k, end))
            end = start + k
        else:
            proof.append(tree.mth(start, start + k))
            start += k
            m -= k
            whole = False
    if not whole:
        proof.append(tree.mth(start, end))
    return proof[::-1]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does ``proof`` put the leaf data at ``index`` under ``expected_root``?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree of ``new`` leaves an append-only extension of ``old``?"""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is itself the first node of the path
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class MemoryTree:
    """A tree over leaf data held in memory (tests, offline audits); perfect subtrees are memoised."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.hashes = [leaf_hash(d) for d in leaves]
        self._memo: dict[tuple[int, int], bytes] = {}

    def append(self, data: bytes) -> None:
        self.hashes.append(leaf_hash(data))

    def __len__(self) -> int:
        return len(self.hashes)

    def mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 1:
            return self.hashes[start]
        perfect = n & (n - 1) == 0
        if perfect and (start, end) in self._memo:
            return self._memo[start, end]
        k = split(n)
        value = node_hash(self.mth(start, start + k), self.mth(start + k, end))
        if perfect:
            self._memo[start, end] = value
        return value
