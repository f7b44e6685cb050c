"""How often the primary paired tests call equal models different, measured by simulation.

Test sets are simulated the way MRI test sets are built: patients with 1-40 slices each whose slices share
a patient effect, plus copy groups (one slice stored many times, so every copy gets the same prediction).
Two models are *equal* when each slice's chance of being right is the same for both. A valid test at
α = 0.05 rejects at most 5 % of the time, up to Monte-Carlo error: the bound is 0.05 + 2 standard errors.
The slice-level McNemar test and the per-slice Wilcoxon test are run on the same sets as the reason the
primary tests replaced them, and the power of each primary test is measured beside its error rate
(recorded in docs/metrics.md).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import scipy.stats

from brain_jax.metrics import stats

ALPHA = 0.05


def _bound(n_sims: int) -> float:
    return ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / n_sims)


def _clustered_set(rng, n_patients: int, accuracy: float, concentration: float, copy_groups: int = 0,
                   effect: np.ndarray | None = None):
    """(sizes, correct_a, correct_b) per cluster: patients of 1-40 slices and ``copy_groups`` groups of 40
    copies. ``effect`` (per cluster) is added to A's chance and taken from B's (a null with unequal effects
    when it sums to 0 over slices)."""
    sizes = np.r_[rng.integers(1, 41, n_patients), np.full(copy_groups, 40)]
    p = rng.beta(accuracy * concentration, (1 - accuracy) * concentration, len(sizes))
    pa = np.clip(p + (0 if effect is None else effect(sizes)), 0, 1)
    pb = np.clip(p - (0 if effect is None else effect(sizes)), 0, 1)
    right_a = rng.binomial(sizes, pa)
    right_b = rng.binomial(sizes, pb)
    copies = np.arange(len(sizes)) >= n_patients  # a copy group is right or wrong as a whole
    right_a[copies] = sizes[copies] * rng.binomial(1, pa[copies])
    right_b[copies] = sizes[copies] * rng.binomial(1, pb[copies])
    return sizes, right_a, right_b


def _slice_mcnemar_p(sizes, right_a, right_b, rng) -> float:
    """The slice-level exact McNemar test on the same set, A's and B's errors independent within a patient."""
    a_only = b_only = 0
    for n, ra, rb in zip(sizes, right_a, right_b):
        a = np.zeros(n, bool)
        b = np.zeros(n, bool)
        a[rng.permutation(n)[:ra]] = True
        b[rng.permutation(n)[:rb]] = True
        if ra in (0, n) and rb in (0, n) and n == 40:  # a copy group: one slice, stored n times
            b = np.full(n, rb == n)
            a = np.full(n, ra == n)
        a_only += int(np.sum(a & ~b))
        b_only += int(np.sum(~a & b))
    return scipy.stats.binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0


def _balanced(sizes: np.ndarray) -> np.ndarray:
    """+0.04 on clusters above the median size, minus what makes the slice-weighted sum 0 on the rest."""
    big = sizes > np.median(sizes)
    out = np.where(big, 0.04, 0.0)
    small = ~big
    out[small] = -0.04 * sizes[big].sum() / max(sizes[small].sum(), 1)
    return out


REGIMES = {  # name: (patients, accuracy, concentration, copy groups, effect under the null)
    "high accuracy, few discordant clusters": (46, 0.97, 20.0, 0, None),
    "unequal sizes and copy groups": (46, 0.90, 10.0, 4, None),
    "100 patients with copy groups": (100, 0.93, 10.0, 6, None),
    "unequal effects, equal slice-weighted accuracy": (46, 0.90, 10.0, 0, _balanced),
}


@pytest.mark.parametrize("regime", list(REGIMES))
def test_swap_test_false_positive_rate_within_alpha_and_power_measured(regime):
    n_patients, acc, conc, copies, effect = REGIMES[regime]
    rng = np.random.default_rng(zlib.crc32(regime.encode()))
    n_sims = 2000
    rejected = mcnemar_rejected = 0
    for sim in range(n_sims):
        sizes, ra, rb = _clustered_set(rng, n_patients, acc, conc, copies, effect)
        rejected += stats.swap_test(ra - rb)["p_value"] <= ALPHA
        if copies and sim < 300:
            mcnemar_rejected += _slice_mcnemar_p(sizes, ra, rb, rng) <= ALPHA
    rate = rejected / n_sims
    assert rate <= _bound(n_sims), (regime, rate)
    if copies:  # the reason: slice-level McNemar counts each copy and each slice of a patient as evidence
        assert mcnemar_rejected / 300 >= 0.10, (regime, mcnemar_rejected / 300)
    # power against a true 4-point accuracy advantage for A on every cluster
    hits = 0
    for _ in range(400):
        sizes, ra, rb = _clustered_set(rng, n_patients, acc, conc, copies, lambda s: np.full(len(s), 0.02))
        hits += stats.swap_test(ra - rb)["p_value"] <= ALPHA
    print(f"{regime}: false-positive rate {rate:.3f}, power {hits / 400:.2f}"
          + (f", slice McNemar {mcnemar_rejected / 300:.2f}" if copies else ""))
    assert hits / 400 >= 0.3, (regime, hits / 400)  # a test that never rejects would pass the first check


def test_sign_flip_test_on_dice_false_positive_rate_and_per_slice_wilcoxon_does_not():
    """Segmentation: per-cluster sums of Dice differences. Slices of a patient share its difficulty and the
    two models' errors on a slice are related through it; per-slice Wilcoxon treats them as independent."""
    rng = np.random.default_rng(7)
    n_sims, rejected, wilcoxon_rejected = 1000, 0, 0
    for _ in range(n_sims):
        sizes = rng.integers(1, 41, 46)
        patient = np.repeat(np.arange(46), sizes)
        base = rng.beta(6, 2, 46)[patient]
        shift = rng.normal(0, 0.08, 46)[patient]  # patient-level luck, the same law for both models
        a = np.clip(base + shift + rng.normal(0, 0.03, len(patient)), 0, 1)
        b = np.clip(base - shift + rng.normal(0, 0.03, len(patient)), 0, 1)
        sums = np.bincount(patient, a - b, minlength=46)
        rejected += stats.sign_flip_test(sums, seed=int(rng.integers(1 << 30)), n_flips=999)["p_value"] <= ALPHA
        wilcoxon_rejected += stats.wilcoxon_signed_rank(a, b)["p_value"] <= ALPHA
    print(f"Dice: false-positive rate {rejected / n_sims:.3f}, per-slice Wilcoxon {wilcoxon_rejected / n_sims:.3f}")
    assert rejected / n_sims <= _bound(n_sims), rejected / n_sims
    assert wilcoxon_rejected / n_sims >= 0.10, wilcoxon_rejected / n_sims


def test_korn_graubard_accuracy_interval_covers_at_46_patients():
    """The proportion interval's coverage at one Figshare fold's size; the full grid is a benchmark
    (benchmarks/bench_intervals.py, BENCHMARKS.md)."""
    rng = np.random.default_rng(11)
    covered, n_sims = 0, 1000
    for _ in range(n_sims):
        sizes, ra, _ = _clustered_set(rng, 46, 0.93, 20.0)
        ci = stats.proportion_interval(ra, sizes)
        covered += ci["low"] <= 0.93 <= ci["high"]
    print(f"Korn-Graubard coverage at 46 patients: {covered / n_sims:.3f}")
    assert 0.93 <= covered / n_sims <= 0.975, covered / n_sims
