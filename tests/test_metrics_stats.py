"""Cluster bootstrap, paired comparisons and Holm against sklearn / scipy / statsmodels and plain numpy loops.

The bootstrap references redo each resample by hand: the drawn clusters from ``bootstrap_indices`` (the
one documented generator), their examples concatenated, the metric recomputed by sklearn.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
from numpy.polynomial.hermite_e import hermegauss
from sklearn import metrics as skm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from brain_jax.metrics import stats as metrics_stats
from brain_jax.metrics import (
    bootstrap_indices,
    classification_intervals,
    holm,
    mcnemar_exact,
    paired_comparison,
    paired_segmentation_comparison,
    pairwise_comparisons,
    pairwise_segmentation_comparisons,
    roc_auc_ovr,
    segmentation_intervals,
    wilcoxon_signed_rank,
)


def _clustered(seed: int, n: int = 240, n_clusters: int = 30, k: int = 3, acc: float = 0.8):
    """String patient ids, labels, predictions and probabilities rounded to 0.1 (many ties)."""
    rng = np.random.default_rng(seed)
    clusters = np.array([f"patient-{i:03d}" for i in rng.integers(0, n_clusters, n)])
    labels = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < acc, labels, rng.integers(0, k, n))
    probs = rng.dirichlet(np.ones(k), n) + np.eye(k)[labels] * rng.random((n, 1))
    probs = np.round(probs / probs.sum(1, keepdims=True), 1)
    return clusters, labels, preds, probs


def _resamples(clusters: np.ndarray, n_resamples: int, seed: int) -> list[np.ndarray]:
    """Example indices of each resample: units are np.unique(clusters), drawn by bootstrap_indices."""
    _, unit = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(unit == g) for g in range(unit.max() + 1)]
    return [np.concatenate([members[g] for g in row]) for row in bootstrap_indices(len(members), n_resamples, seed)]


def _pct(values, confidence=0.95):
    a = (1 - confidence) / 2
    return np.percentile(np.asarray(values, float), [100 * a, 100 * (1 - a)], axis=0)


@pytest.mark.parametrize("block_cells,r", [(None, 150), (1000, 60)])
def test_classification_intervals_equal_sklearn_on_the_same_resamples(block_cells, r, monkeypatch):
    if block_cells:  # many small blocks of draws and of work arrays: the same resamples, the same results
        monkeypatch.setattr(metrics_stats, "_BLOCK_CELLS", block_cells)
    clusters, labels, preds, probs = _clustered(0)
    k, seed = 3, 11
    res = classification_intervals(labels, preds, probs, clusters, "patient", n_resamples=r, seed=seed,
                                   confidence=0.9)
    assert res["interval"] == {"method": "percentile", "confidence": 0.9, "n_resamples": r, "seed": seed,
                               "resampled_unit": "patient", "n_units": len(set(clusters)), "n_examples": len(labels)}

    def metrics(idx):
        lv, pv = labels[idx], preds[idx]
        p, rc, f, _ = skm.precision_recall_fscore_support(lv, pv, labels=range(k), zero_division=0)
        (tn, fp), _ = skm.multilabel_confusion_matrix(lv, pv, labels=range(k)).transpose(1, 2, 0)
        auc = [skm.roc_auc_score(lv == c, probs[idx, c]) for c in range(k)]
        return {
            "accuracy": skm.accuracy_score(lv, pv),
            "balanced_accuracy": skm.balanced_accuracy_score(lv, pv),
            "macro_f1": skm.f1_score(lv, pv, labels=range(k), average="macro", zero_division=0),
            "weighted_f1": skm.f1_score(lv, pv, labels=range(k), average="weighted", zero_division=0),
            "macro_auroc": np.mean(auc),  # sklearn's multi_class="ovr" macro average (needs rows summing to 1)
            "precision": p, "recall": rc, "f1": f, "specificity": tn / (tn + fp), "auroc": auc,
        }

    full = metrics(np.arange(len(labels)))
    reps = [metrics(idx) for idx in _resamples(clusters, r, seed)]
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auroc"):
        np.testing.assert_allclose(res[name]["estimate"], full[name], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose([res[name]["low"], res[name]["high"]], _pct([m[name] for m in reps], 0.9),
                                   rtol=1e-12, err_msg=name)
    for name in ("precision", "recall", "f1", "specificity", "auroc"):
        got = res["per_class"][name]
        np.testing.assert_allclose(got["estimate"], full[name], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose([got["low"], got["high"]], _pct([m[name] for m in reps], 0.9), rtol=1e-12,
                                   err_msg=name)
    # a different seed draws other resamples; the same seed the same ones
    assert classification_intervals(labels, preds, probs, clusters, "patient", n_resamples=r, seed=seed) \
        == classification_intervals(labels, preds, probs, clusters, "patient", n_resamples=r, seed=seed)
    other = classification_intervals(labels, preds, None, clusters, "patient", num_classes=k, n_resamples=r, seed=3)
    assert other["accuracy"]["low"] != res["accuracy"]["low"] and "macro_auroc" not in other


def test_slices_are_the_unit_only_without_clusters():
    _, labels, preds, probs = _clustered(1, n=50)
    res = classification_intervals(labels, preds, probs, n_resamples=40)
    assert res["interval"]["resampled_unit"] == "slice" and res["interval"]["n_units"] == 50
    reps = [skm.accuracy_score(labels[i], preds[i]) for i in _resamples(np.arange(50), 40, 0)]
    np.testing.assert_allclose([res["accuracy"]["low"], res["accuracy"]["high"]], _pct(reps), rtol=1e-12)
    groups = np.arange(50) // 2
    assert classification_intervals(labels, preds, probs, groups, "duplicate_group",
                                     n_resamples=40)["interval"]["n_units"] == 25


def test_roc_auc_ovr_matches_sklearn_with_ties_and_undefined_classes():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 400)
    probs = np.round(rng.dirichlet(np.ones(4), 400) + 0.4 * np.eye(4)[labels], 1)  # heavy ties; class 3 absent
    got = roc_auc_ovr(labels, probs)
    for c in range(3):
        np.testing.assert_allclose(got[c], skm.roc_auc_score(labels == c, probs[:, c]), rtol=1e-12)
    assert np.isnan(got[3])
    # all scores tied -> 0.5; a perfect ranking -> 1
    assert roc_auc_ovr(labels, np.full((400, 3), 1 / 3))[0] == 0.5
    assert roc_auc_ovr(labels, np.eye(3)[labels]).tolist() == [1.0, 1.0, 1.0]
    # the absent class leaves the macro average and reports every resample as undefined
    res = classification_intervals(labels, labels, probs, n_resamples=30)
    assert res["per_class"]["auroc"]["undefined_resamples"] == [0, 0, 0, 30]
    np.testing.assert_allclose(res["macro_auroc"]["estimate"], np.mean(got[:3]), rtol=1e-12)


def test_segmentation_intervals_equal_numpy_means_on_the_same_resamples():
    rng = np.random.default_rng(3)
    n = 90
    clusters = rng.integers(100, 120, n)  # numeric ids
    per_case = {"dice": rng.beta(5, 1, n), "hd95_mm": rng.gamma(2.0, 3.0, n)}
    res = segmentation_intervals(per_case, clusters, "patient", n_resamples=120, seed=4)
    assert res["interval"]["n_units"] == len(np.unique(clusters)) and res["interval"]["seed"] == 4
    idxs = _resamples(clusters, 120, 4)
    for k, v in per_case.items():
        assert res[k]["estimate"] == pytest.approx(v.mean(), rel=1e-12)
        np.testing.assert_allclose([res[k]["low"], res[k]["high"]], _pct([v[i].mean() for i in idxs]), rtol=1e-12)
    # 5,000 slices x 1,000 resamples: drawn in two blocks
    values = rng.random(5000)
    res = segmentation_intervals({"dice": values}, n_resamples=1000, seed=9)
    ref = _pct(values[bootstrap_indices(5000, 1000, 9)].mean(axis=1))
    np.testing.assert_allclose([res["dice"]["low"], res["dice"]["high"]], ref, rtol=1e-12)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 7), (3, 3), (12, 4), (40, 61), (1, 0)])
def test_mcnemar_matches_statsmodels_and_scipy(b, c):
    both_right, both_wrong = 50, 6
    a = np.r_[np.ones(both_right), np.ones(b), np.zeros(c), np.zeros(both_wrong)].astype(bool)
    bb = np.r_[np.ones(both_right), np.zeros(b), np.ones(c), np.zeros(both_wrong)].astype(bool)
    perm = np.random.default_rng(b * 100 + c).permutation(len(a))
    got = mcnemar_exact(a[perm], bb[perm])
    assert (got["a_right_b_wrong"], got["a_wrong_b_right"]) == (b, c)
    ref = mcnemar(np.array([[both_right, b], [c, both_wrong]]), exact=True).pvalue
    np.testing.assert_allclose(got["p_value"], ref, rtol=1e-10)
    if b + c:
        np.testing.assert_allclose(got["p_value"], scipy.stats.binomtest(b, b + c, 0.5).pvalue, rtol=1e-12)


def _signed_ranks(d):
    d = d[d != 0]
    ranks = scipy.stats.rankdata(np.abs(d))  # average ranks for ties
    return d, ranks


def _exact_sign_flip_p(d):
    """Two-sided p of min(W+, W-) by enumerating every sign assignment (the exact null, ties included)."""
    d, ranks = _signed_ranks(d)
    observed = min(ranks[d > 0].sum(), ranks[d < 0].sum())
    signs = np.array(list(itertools.product([0, 1], repeat=len(d))), bool)
    w_plus = signs @ ranks
    stat = np.minimum(w_plus, ranks.sum() - w_plus)
    return observed, np.mean(stat <= observed + 1e-9)


def test_wilcoxon_exact_against_enumerated_null():
    rng = np.random.default_rng(5)
    x, y = rng.random(12), rng.random(12)  # no ties, no zeros, n <= 50: exact
    got = wilcoxon_signed_rank(x, y)
    stat, p = _exact_sign_flip_p(x - y)
    assert got["method"] == "exact" and not got["ties"] and got["zero_method"] == "wilcox"
    assert got["statistic"] == stat
    np.testing.assert_allclose(got["p_value"], p, rtol=1e-10)
    # ties and a zero difference among 11 cases (sixteenths: exact in binary, so the ties are exact)
    x = np.array([15, 13, 13, 11, 10, 16, 8, 14, 10, 12, 11]) / 16
    y = np.array([13, 15, 11, 11, 8, 14, 5, 16, 5, 7, 6]) / 16
    got = wilcoxon_signed_rank(x, y)
    stat, p = _exact_sign_flip_p(x - y)
    assert got["ties"] and got["n_nonzero"] == 10 and got["method"].startswith("exact")
    assert got["statistic"] == pytest.approx(stat)
    np.testing.assert_allclose(got["p_value"], p, rtol=1e-10)


def test_wilcoxon_normal_approximation_with_ties_and_zeros_by_hand():
    rng = np.random.default_rng(6)
    a = np.round(rng.beta(6, 2, 80), 2)  # Dice-like, two decimals: many ties
    b = np.where(rng.random(80) < 0.2, a, np.round(np.clip(a - rng.normal(0.02, 0.05, 80), 0, 1), 2))
    got = wilcoxon_signed_rank(a, b)
    d, ranks = _signed_ranks(a - b)
    n = len(d)
    w_plus = ranks[d > 0].sum()
    _, t = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - np.sum(t**3 - t) / 48
    z = (w_plus - n * (n + 1) / 4) / np.sqrt(var)
    assert got["method"] == "asymptotic" and got["ties"] and got["n"] == 80 and got["n_nonzero"] == n < 80
    assert got["statistic"] == pytest.approx(min(w_plus, ranks.sum() - w_plus))
    np.testing.assert_allclose(got["p_value"], 2 * scipy.stats.norm.sf(abs(z)), rtol=1e-9)
    same = wilcoxon_signed_rank(a, a)
    assert same["p_value"] == 1.0 and same["n_nonzero"] == 0


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(7)
    for p in (rng.random(6) * 0.1, np.array([0.01, 0.04, 0.03, 0.04, 0.5, 0.002]), np.array([0.3]),
              np.array([0.0, 1.0, 0.0125, 0.0125])):
        got = holm(p, alpha=0.05)
        reject, adjusted, _, _ = multipletests(p, alpha=0.05, method="holm")
        np.testing.assert_allclose(got["p_adjusted"], adjusted, rtol=1e-12)
        assert got["reject"] == reject.tolist()
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, np.nan])


def test_paired_bootstrap_equals_numpy_loop_on_the_same_resamples():
    clusters, labels, preds_a, _ = _clustered(8, n=300, n_clusters=40, acc=0.85)
    rng = np.random.default_rng(9)
    preds_b = np.where(rng.random(300) < 0.15, rng.integers(0, 3, 300), preds_a)
    res = paired_comparison(labels, preds_a, preds_b, clusters, "patient", num_classes=3, names=("V2", "V1"),
                            n_resamples=200, seed=5)
    acc_d, f1_d = [], []
    for idx in _resamples(clusters, 200, 5):  # both models scored on the very same resampled examples
        lv = labels[idx]
        acc_d.append(np.mean(preds_a[idx] == lv) - np.mean(preds_b[idx] == lv))
        f1 = [skm.f1_score(lv, p[idx], labels=range(3), average="macro", zero_division=0) for p in (preds_a, preds_b)]
        f1_d.append(f1[0] - f1[1])
    for key, reps in (("accuracy_difference", acc_d), ("macro_f1_difference", f1_d)):
        np.testing.assert_allclose([res[key]["low"], res[key]["high"]], _pct(reps), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(res["accuracy_difference"]["estimate"],
                               np.mean(preds_a == labels) - np.mean(preds_b == labels), rtol=1e-12)
    right_a, right_b = preds_a == labels, preds_b == labels
    assert res["mcnemar"]["a_right_b_wrong"] == np.sum(right_a & ~right_b)
    assert res["mcnemar"]["a_wrong_b_right"] == np.sum(~right_a & right_b)
    assert res["interval"]["resampled_unit"] == "patient" and res["models"] == ["V2", "V1"]


def test_verdicts_say_which_is_better_or_no_difference_never_equivalent():
    clusters, labels, preds, _ = _clustered(10, n=400, n_clusters=80, acc=0.7)
    same = paired_comparison(labels, preds, preds, clusters, "patient", num_classes=3, names=("A", "B"),
                             n_resamples=100)
    assert same["accuracy_difference"]["verdict"] == "no difference shown at α = 0.05"
    assert same["mcnemar"]["p_value"] == 1.0
    better = paired_comparison(labels, labels, preds, clusters, "patient", num_classes=3, names=("A", "B"),
                               n_resamples=100)
    worse = paired_comparison(labels, preds, labels, clusters, "patient", num_classes=3, names=("A", "B"),
                              n_resamples=100)
    assert better["accuracy_difference"]["verdict"].startswith("A better than B")
    assert worse["macro_f1_difference"]["verdict"].startswith("B better than A")
    for r in (same, better, worse):
        assert all("equivalent" not in r[k]["verdict"] for k in ("accuracy_difference", "macro_f1_difference"))


def test_pairwise_comparisons_apply_holm_across_pairs():
    clusters, labels, preds, _ = _clustered(11, n=300, n_clusters=50, acc=0.8)
    rng = np.random.default_rng(12)
    models = {"convnext_v2": labels.copy(), "convnext_v1": preds,
              "vit": np.where(rng.random(300) < 0.3, rng.integers(0, 3, 300), preds)}
    pairs = pairwise_comparisons(labels, models, clusters, "patient", num_classes=3, n_resamples=50)
    assert [p["models"] for p in pairs] == [["convnext_v2", "convnext_v1"], ["convnext_v2", "vit"],
                                            ["convnext_v1", "vit"]]
    raw = [p["mcnemar"]["p_value"] for p in pairs]
    _, adjusted, _, _ = multipletests(raw, method="holm")
    np.testing.assert_allclose([p["mcnemar"]["p_holm"] for p in pairs], adjusted, rtol=1e-12)
    assert all(p["mcnemar"]["n_pairs_holm"] == 3 for p in pairs)


def test_paired_segmentation_comparison_wilcoxon_and_dice_difference():
    rng = np.random.default_rng(13)
    n = 60
    clusters = np.repeat(np.arange(15), 4)
    dice_a = np.clip(rng.beta(8, 2, n), 0, 1)
    dice_b = np.clip(dice_a - rng.normal(0.03, 0.05, n), 0, 1)
    res = paired_segmentation_comparison(dice_a, dice_b, clusters, "patient", names=("segformer", "unet"),
                                         n_resamples=150, seed=2)
    ref = scipy.stats.wilcoxon(dice_a, dice_b, zero_method="wilcox", correction=False, method="asymptotic")
    np.testing.assert_allclose(res["wilcoxon"]["p_value"], ref.pvalue, rtol=1e-10)
    reps = [dice_a[i].mean() - dice_b[i].mean() for i in _resamples(clusters, 150, 2)]
    entry = res["dice_difference"]
    np.testing.assert_allclose([entry["low"], entry["high"]], _pct(reps), rtol=1e-10)
    assert entry["verdict"].startswith("segformer better than unet")
    assert res["interval"]["n_units"] == 15
    pairs = pairwise_segmentation_comparisons({"a": dice_a, "b": dice_b, "c": dice_a}, clusters, "patient",
                                              n_resamples=20)
    assert [p["wilcoxon"]["p_holm"] for p in pairs][1] == 1.0  # a vs c: identical Dice
    assert pairs[1]["dice_difference"]["verdict"] == "no difference shown at α = 0.05"


def test_bad_inputs_name_what_is_wrong():
    clusters, labels, preds, probs = _clustered(14, n=20)
    with pytest.raises(ValueError, match="cluster_kind"):
        classification_intervals(labels, preds, probs, clusters, "hospital")
    with pytest.raises(ValueError, match="needs the cluster id"):
        classification_intervals(labels, preds, probs, None, "patient")
    with pytest.raises(ValueError, match="repeat ids"):
        classification_intervals(labels, preds, probs, clusters, "slice")
    with pytest.raises(ValueError, match="no id"):
        classification_intervals(labels, preds, probs, np.where(np.arange(20) == 3, "", clusters), "patient")
    with pytest.raises(ValueError, match="one id per example"):
        classification_intervals(labels, preds, probs, clusters[:5], "patient")
    with pytest.raises(ValueError, match="outside"):
        classification_intervals(labels, preds + 5, probs, clusters, "patient")
    with pytest.raises(ValueError, match="num_classes"):
        classification_intervals(labels, preds)
    with pytest.raises(ValueError, match="differ in length"):
        paired_comparison(labels, preds, preds[:-1], num_classes=3)
    with pytest.raises(ValueError, match="non-finite"):
        segmentation_intervals({"hd95_mm": np.r_[1.0, np.inf]})
    with pytest.raises(ValueError, match="confidence"):
        segmentation_intervals({"dice": np.ones(3)}, confidence=95)


def test_cluster_bootstrap_covers_the_truth_and_slice_resampling_does_not():
    """Coverage of the 95 % accuracy interval on 400 simulated test sets with clustered errors.

    Generating model: 200 patients with 10-30 slices each (about 4,000 slices); patient p has a random
    effect u_p ~ N(0, 1.75^2) and each of its slices is classified correctly, independently given u_p,
    with probability sigmoid(5.6 + u_p). The truth is the population accuracy E_u[sigmoid(5.6 + u)]
    = 0.9855 (slice counts are independent of u), by Gauss-Hermite quadrature.

    Band for the patient bootstrap, [0.87, 0.985]. Nominal 0.95 with 400 simulations has a binomial
    sd of 0.011; the upper end is 0.95 + 3 sd. The lower end allows for the percentile bootstrap's
    known under-coverage when a rare outcome (1.5 % errors) sits in few clusters: a set that happens
    to hold few errors also gets a narrow interval, above the truth. On this design it covers 0.915 on
    average (2,000 sets drawn with other seeds; 0.89-0.94 per 400), and approaches 0.95 as patients
    grow in number (0.94 with 800 on a similar design); 0.915 - 3 sd = 0.87. Resampling slices
    ignores the within-patient correlation (design effect about 2.8 here), so its intervals are about
    0.6 times as wide: expected coverage near P(|Z| < 1.96 x 0.6) = 0.76 (0.70-0.76 measured). It
    must stay below 0.85 and at least 0.10 below the patient bootstrap; dropping the grouping fails
    the band as well.
    """
    n_sims, n_patients, sigma, mu = 400, 200, 1.75, 5.6
    nodes, weights = hermegauss(80)
    truth = float(np.sum(weights / weights.sum() / (1 + np.exp(-(mu + sigma * nodes)))))
    assert truth == pytest.approx(0.9855, abs=1e-4)
    rng = np.random.default_rng(2024)
    covered = {"patient": 0, "slice": 0}
    with threadpool_limits(1):  # thin matrix products: BLAS threads only contend on a busy machine
        for sim in range(n_sims):
            slices = rng.integers(10, 31, n_patients)
            patient = np.repeat(np.arange(n_patients), slices)
            p_right = 1 / (1 + np.exp(-(mu + rng.normal(0, sigma, n_patients))))
            labels = rng.integers(0, 2, len(patient))
            preds = np.where(rng.random(len(patient)) < p_right[patient], labels, 1 - labels)
            for kind, clusters in (("patient", patient), ("slice", None)):
                ci = classification_intervals(labels, preds, None, clusters, kind, num_classes=2, n_resamples=400,
                                              seed=sim)["accuracy"]
                covered[kind] += ci["low"] <= truth <= ci["high"]
    rate = {k: v / n_sims for k, v in covered.items()}
    assert 0.87 <= rate["patient"] <= 0.985, rate
    assert rate["slice"] < 0.85 and rate["patient"] - rate["slice"] >= 0.10, rate
