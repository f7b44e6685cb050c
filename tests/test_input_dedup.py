"""Duplicate groups (bounded chaining), split groups and stratified group folds: pure functions."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from input_pipeline import dedup


def _hex(bits: int) -> str:
    return f"{bits:016x}"


def test_a_chain_is_cut_but_copies_join():
    # A=0, B 4 bits from A, C 4 bits from B but 8 from A; D = exact copy of C; E 2 bits from A.
    ph = [_hex(0x0), _hex(0xF), _hex(0xFF), _hex(0xFF), _hex(0x3)]
    sha = ["a", "b", "c", "c", "e"]
    groups = dedup.duplicate_groups(sha, ph, 4)
    assert groups.tolist() == [0, 0, 2, 2, 0]
    # The unbounded rule merges the whole chain: that is what the bound prevents.
    assert dedup.transitive_groups(sha, ph, 4).tolist() == [0, 0, 0, 0, 0]
    # Exact copies join even when near matching is off or their pHashes differ (hash collisions aside).
    assert dedup.duplicate_groups(["x", "y", "x"], [_hex(0), _hex(0xFFFF), _hex(0xFFFFFF)], None).tolist() == [0, 1, 0]
    assert dedup.duplicate_groups(["x", "y", "x"], [_hex(0), _hex(0xFFFF), _hex(0xFFFFFF)], 4).tolist() == [0, 1, 0]


def test_a_record_joins_its_nearest_earlier_leader():
    # Leaders 0 (0x0) and 1 (0x1F, 5 bits from 0); record 2 is 4 bits from 0 and 1 bit from 1;
    # record 3 is 2 bits from 0 and 3 from 1.
    ph = [_hex(0x0), _hex(0x1F), _hex(0x0F), _hex(0x11)]
    assert dedup.duplicate_groups(["a", "b", "c", "d"], ph, 4).tolist() == [0, 1, 1, 0]


def test_near_matches_never_join_two_known_patients():
    # 0 and 1: similar slices of patients A and B; 2: an id-less copy near both; 3: another slice of A;
    # 4: an exact copy of 1 under patient C (exact copies join whatever their ids).
    ph = [_hex(0x0), _hex(0x3), _hex(0x1), _hex(0x7), _hex(0x3)]
    sha = ["a", "b", "c", "d", "b"]
    pats = ["A", "B", "", "A", "C"]
    assert dedup.duplicate_groups(sha, ph, 4, pats).tolist() == [0, 1, 0, 0, 1]
    assert dedup.duplicate_groups(sha, ph, 4).tolist() == [0, 0, 0, 0, 0]
    # Once an id-less leader has taken patient A in, patient B cannot join through it.
    assert dedup.duplicate_groups(["x", "a", "b"], [_hex(0x0), _hex(0x3), _hex(0x5)], 4, ["", "A", "B"]).tolist() == [
        0, 0, 2]
    # Split groups then hold one patient each (plus copies): no chain of patients.
    groups = dedup.split_groups(dedup.duplicate_groups(sha, ph, 4, pats), pats)
    assert groups.tolist() == [0, 1, 0, 0, 1]


def test_every_member_is_near_its_leader_on_random_chains():
    rng = np.random.default_rng(0)
    # Random walks in Hamming space: each step flips 2 bits, so transitive matching chains them all.
    walks = []
    for _ in range(20):
        h = int(rng.integers(0, 2**63))
        for _ in range(15):
            walks.append(h)
            for b in rng.choice(64, 2, replace=False):
                h ^= 1 << int(b)
    ph = [_hex(h) for h in walks]
    sha = [str(i) for i in range(len(ph))]
    groups = dedup.duplicate_groups(sha, ph, 4)
    bits = dedup.phash_bits(ph)
    dist = np.bitwise_count(bits ^ bits[groups])
    assert dist.max() <= 4
    assert (groups <= np.arange(len(ph))).all() and (groups[groups] == groups).all()  # leader = first member
    assert np.bincount(groups).max() < np.bincount(dedup.transitive_groups(sha, ph, 4)).max()


def test_split_groups_join_patients_and_copies():
    dup = np.array([0, 1, 0, 3, 4])  # 2 is a copy of 0
    pats = ["p1", "", "", "p1", ""]  # 3 is the same patient as 0
    assert dedup.split_groups(dup, pats).tolist() == [0, 1, 0, 0, 4]


def test_assign_folds_keeps_groups_whole_and_balances_folds():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 6, 60)
    groups = np.repeat(np.arange(60), sizes)
    labels = np.repeat(np.arange(60) % 4, sizes)
    keys = [f"k{i}" for i in range(len(groups))]
    folds = dedup.assign_folds(groups, labels, keys, 3, seed=0)
    for g in np.unique(groups):
        assert len(set(folds[groups == g].tolist())) == 1
    per_fold = np.bincount(folds, minlength=3)
    assert per_fold.max() - per_fold.min() <= sizes.max()
    for c in range(4):
        n = np.bincount(folds[labels == c], minlength=3)
        assert n.max() - n.min() <= sizes.max(), (c, n)
    np.testing.assert_array_equal(folds, dedup.assign_folds(groups, labels, keys, 3, seed=0))
    assert not np.array_equal(folds, dedup.assign_folds(groups, labels, keys, 3, seed=1))
    with pytest.raises(ValueError, match="cannot fill"):
        dedup.assign_folds(np.array([0, 0, 1]), np.zeros(3, int), ["a", "b", "c"], 3, seed=0)


def test_assign_splits_follows_the_fractions():
    n = 4000
    names = dedup.assign_splits(np.arange(n), [f"id{i}" for i in range(n)], {"a": 0.7, "b": 0.2, "c": 0.1}, seed=3)
    share = {k: v / n for k, v in collections.Counter(names.tolist()).items()}
    assert share == pytest.approx({"a": 0.7, "b": 0.2, "c": 0.1}, abs=0.03)
