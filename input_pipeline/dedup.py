"""Exact and near-duplicate detection, duplicate groups and group-disjoint splits.

Exact duplicates share ``sha256`` of the stored pixels; near duplicates have perceptual hashes
(imagehash pHash, 64 bits) within ``max_bits`` Hamming distance (a JPEG re-encode or a rescaled copy
of the same slice typically differs by 0-6 bits; unrelated slices by ~32). A *duplicate group* is a
connected component of "exact or near duplicate"; a *split group* also joins records of the same
(source-qualified) patient, so a split by group is patient-disjoint where patients are known and
duplicate-disjoint everywhere.
"""
from __future__ import annotations

import hashlib

import numpy as np


class UnionFind:
    """Minimal disjoint-set forest over 0..n-1."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))])


def phash_bits(hexes: list[str]) -> np.ndarray:
    """Hex pHash strings -> uint64 array."""
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def exact_pairs(sha: list[str]) -> list[tuple[int, int]]:
    """Pairs (first, other) of identical pixel hashes."""
    first: dict[str, int] = {}
    out = []
    for i, h in enumerate(sha):
        if h in first:
            out.append((first[h], i))
        else:
            first[h] = i
    return out


def near_pairs(phash: list[str], max_bits: int, chunk: int = 2048) -> list[tuple[int, int, int]]:
    """All pairs i < j with Hamming(phash_i, phash_j) <= max_bits, as (i, j, distance)."""
    bits = phash_bits(phash)
    n = len(bits)
    out = []
    for start in range(0, n, chunk):
        block = bits[start:start + chunk]
        d = np.bitwise_count(block[:, None] ^ bits[None, :])
        ii, jj = np.nonzero(d <= max_bits)
        keep = jj > ii + start
        out.extend(zip((ii[keep] + start).tolist(), jj[keep].tolist(), d[ii[keep], jj[keep]].tolist()))
    return out


def duplicate_groups(sha: list[str], phash: list[str], max_bits: int | None) -> np.ndarray:
    """Group id (smallest member index) per record; near duplicates only when max_bits is not None."""
    uf = UnionFind(len(sha))
    for a, b in exact_pairs(sha):
        uf.union(a, b)
    if max_bits is not None:
        for a, b, _ in near_pairs(phash, max_bits):
            uf.union(a, b)
    return uf.labels()


def split_groups(dup_groups: np.ndarray, patient_keys: list[str]) -> np.ndarray:
    """Join duplicate groups with same-patient records (empty patient key = unknown)."""
    uf = UnionFind(len(dup_groups))
    for i, g in enumerate(dup_groups):
        uf.union(i, int(g))
    first: dict[str, int] = {}
    for i, p in enumerate(patient_keys):
        if p:
            if p in first:
                uf.union(first[p], i)
            else:
                first[p] = i
    return uf.labels()


def assign_splits(groups: np.ndarray, keys: list[str], fractions: dict[str, float], seed: int) -> np.ndarray:
    """Split name per record, the same for a whole group: a group's bucket is drawn from a hash of its
    first member's key and the seed, so it does not depend on record order or on other groups."""
    names = list(fractions)
    edges = np.cumsum([fractions[n] for n in names])
    edges = edges / edges[-1]
    uniq, inverse = np.unique(groups, return_inverse=True)
    bucket = []
    for g in uniq:
        h = hashlib.sha256(f"{seed}:{keys[int(g)]}".encode()).digest()
        u = int.from_bytes(h[:8], "little") / 2**64
        bucket.append(names[min(int(np.searchsorted(edges, u, side="right")), len(names) - 1)])
    return np.array(bucket, dtype=object)[inverse]
