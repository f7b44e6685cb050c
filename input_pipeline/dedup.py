"""Exact and near-duplicate detection, duplicate groups, group-disjoint splits and folds.

Exact duplicates share ``sha256`` of the stored pixels; near duplicates have perceptual hashes
(imagehash pHash, 64 bits) within ``max_bits`` Hamming distance (a JPEG re-encode or a rescaled copy
of the same slice typically differs by 0-6 bits; unrelated slices by ~32). A *duplicate group* holds
exact copies (always, as equality is transitive) and near copies of the group's *leader*, its first
record: near matches are not chained, since on thousands of similar slices A~B~C~... would merge
unrelated images into one giant group; nor do they join two different known patients, whose similar
slices would otherwise chain whole patients together in split groups. A *split group* also joins
records of the same (dataset-qualified) patient, so a split by group is patient-disjoint where patients
are known and duplicate-disjoint everywhere.
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


def near_pairs(phash: list[str], max_bits: int, chunk: int = 512) -> list[tuple[int, int, int]]:
    """All pairs i < j with Hamming(phash_i, phash_j) <= max_bits, as (i, j, distance)."""
    bits = phash_bits(phash)
    n = len(bits)
    out = []
    for start in range(0, n, chunk):
        block = bits[start:start + chunk]
        d = np.bitwise_count(block[:, None] ^ bits[None, :])
        ii, jj = np.nonzero(d <= max_bits)
        keep = jj > ii + start
        out.extend(zip((ii[keep] + start).tolist(), jj[keep].tolist(), d[ii[keep], jj[keep]].tolist(), strict=True))
    return out


def duplicate_groups(sha: list[str], phash: list[str], max_bits: int | None,
                     patients: list[str] | None = None) -> np.ndarray:
    """Group id (the leader: smallest member index) per record; near duplicates only when max_bits is
    not None.

    Records are visited in index order; a record joins the group of an exact copy, else the nearest
    earlier leader whose pHash is within max_bits (ties: the earliest), else leads a new group. So
    every member is within max_bits of its leader and a chain A~B~C with A and C apart is cut at C.
    With ``patients`` (a key per record, "" = unknown), a near match never joins records of two
    different known patients (two acquisitions that look alike, not a copy: a copied slice keeps its
    patient id or has none); exact copies join whatever their ids.
    """
    n = len(sha)
    rep = np.arange(n)  # first record with the same pixels
    first: dict[str, int] = {}
    for i, h in enumerate(sha):
        rep[i] = first.setdefault(h, i)
    if max_bits is None:
        return rep
    reps = np.flatnonzero(rep == np.arange(n))
    slot = np.full(n, -1)
    slot[reps] = np.arange(len(reps))
    known: list[set[str]] = [set() for _ in reps]  # patients of each rep's exact copies, then of its group
    for i, p in enumerate(patients or []):
        if p:
            known[slot[rep[i]]].add(p)
    earlier: list[list[tuple[int, int]]] = [[] for _ in range(len(reps))]  # (distance, earlier rep)
    for a, b, d in near_pairs([phash[i] for i in reps], max_bits):
        earlier[b].append((d, a))
    leader = np.arange(len(reps))
    for j in range(len(reps)):
        fits = [(d, a) for d, a in earlier[j] if leader[a] == a and _compatible(known[j], known[a])]
        if fits:
            leader[j] = a = min(fits)[1]
            known[a] |= known[j]
    group_of_rep = np.empty(n, np.int64)
    group_of_rep[reps] = reps[leader]
    return group_of_rep[rep]


def _compatible(member: set[str], group: set[str]) -> bool:
    """A record may join a group unless both know patients and the record brings one the group lacks."""
    return not member or not group or member <= group


def transitive_groups(sha: list[str], phash: list[str], max_bits: int) -> np.ndarray:
    """Connected components of "exact or near duplicate" (smallest member index per record): the
    unbounded rule, kept to measure how far chaining reaches (``audit``)."""
    uf = UnionFind(len(sha))
    for a, b in exact_pairs(sha):
        uf.union(a, b)
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
        u = _unit_hash(seed, keys[int(g)])
        bucket.append(names[min(int(np.searchsorted(edges, u, side="right")), len(names) - 1)])
    return np.array(bucket, dtype=object)[inverse]


def _unit_hash(seed: int, key: str) -> float:
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def assign_folds(groups: np.ndarray, labels: np.ndarray, keys: list[str], num_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..num_folds-1) per record, the same for a whole group, stratified by label.

    Groups are visited largest first (equal sizes in an order drawn from a hash of the seed and the
    group's first key) and each goes to the fold holding the fewest records of the group's most
    common label (then the fewest records, then the lowest index): folds end up balanced in size and
    class mix, a group never spans two folds, and the result is a pure function of (groups, labels,
    keys, seed).
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    uniq, inverse = np.unique(groups, return_inverse=True)
    if len(uniq) < num_folds:
        raise ValueError(f"{len(uniq)} groups cannot fill {num_folds} folds")
    labels = np.asarray(labels, np.int64)
    num_labels = int(labels.max()) + 1 if len(labels) else 1
    hist = np.zeros((len(uniq), num_labels), np.int64)
    np.add.at(hist, (inverse, labels), 1)
    sizes = hist.sum(1)
    order = sorted(range(len(uniq)), key=lambda g: (-sizes[g], _unit_hash(seed, keys[int(uniq[g])])))
    per_label = np.zeros((num_folds, num_labels), np.int64)
    fold_of_group = np.empty(len(uniq), np.int64)
    for g in order:
        c = int(hist[g].argmax())
        f = min(range(num_folds), key=lambda k: (per_label[k, c], per_label[k].sum(), k))
        fold_of_group[g] = f
        per_label[f] += hist[g]
    return fold_of_group[inverse]
