"""Cluster bootstrap, paired comparisons and Holm against sklearn / scipy / statsmodels and plain numpy loops.

The bootstrap references redo each resample by hand: the drawn clusters from ``bootstrap_indices`` (the
one documented generator), their examples concatenated, the metric recomputed by sklearn.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

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


def _bca_ref(estimate, reps, jack, confidence=0.95, n_clusters=None):
    """BCa from its textbook definition (Efron & Tibshirani 1993, 14.3), one metric at a time, with the normal
    quantile replaced by sqrt(K / (K - 1)) t_{K-1} (Hesterberg 2015), K = the clusters behind the metric
    (by default one per jackknife value)."""
    n_clusters = len(jack) if n_clusters is None else n_clusters
    reps = np.asarray([r for r in reps if np.isfinite(r)], float)
    jack = np.asarray([j for j in jack if np.isfinite(j)], float)
    share = (np.sum(reps < estimate) + 0.5 * np.sum(reps == estimate)) / len(reps)
    z0 = scipy.stats.norm.ppf(share)
    d = jack.mean() - jack
    a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    out = []
    for q in ((1 - confidence) / 2, (1 + confidence) / 2):
        z = np.sqrt(n_clusters / (n_clusters - 1)) * scipy.stats.t.ppf(q, n_clusters - 1)
        out.append(np.percentile(reps, 100 * scipy.stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return out


def _korn_graubard_ref(right, clusters, confidence=0.95):
    """Korn & Graubard (1998): Clopper-Pearson at the effective size, written with a loop over clusters."""
    ids = sorted(set(clusters.tolist()))
    y = np.array([right[clusters == c].sum() for c in ids], float)
    n = np.array([np.sum(clusters == c) for c in ids], float)
    k, p = len(ids), y.sum() / n.sum()
    var = k / (k - 1) * sum((yi - p * ni) ** 2 for yi, ni in zip(y, n)) / n.sum() ** 2
    a = 1 - confidence
    shrink = (scipy.stats.norm.ppf(1 - a / 2) / scipy.stats.t.ppf(1 - a / 2, k - 1)) ** 2
    n_eff = min(p * (1 - p) / var, n.sum()) * shrink
    x = p * n_eff
    return [scipy.stats.beta.ppf(a / 2, x, n_eff - x + 1), scipy.stats.beta.ppf(1 - a / 2, x + 1, n_eff - x)]


@pytest.mark.parametrize("block_cells,r", [(None, 150), (1000, 60)])
def test_classification_intervals_against_sklearn_bca_and_korn_graubard(block_cells, r, monkeypatch):
    """Bootstrap metrics: BCa from sklearn on the same resamples and on every leave-one-patient-out set;
    proportions: Korn-Graubard written out by hand."""
    if block_cells:  # many small blocks of draws and of work arrays: the same resamples, the same results
        monkeypatch.setattr(metrics_stats, "_BLOCK_CELLS", block_cells)
    clusters, labels, preds, probs = _clustered(0)
    k, seed = 3, 11
    res = classification_intervals(labels, preds, probs, clusters, "patient", n_resamples=r, seed=seed,
                                   confidence=0.9)
    assert res["interval"] == {"method": metrics_stats.INTERVAL_METHOD, "confidence": 0.9, "n_resamples": r,
                               "seed": seed, "resampled_unit": "patient", "n_units": len(set(clusters)),
                               "n_examples": len(labels)}

    def metrics(idx):
        lv, pv = labels[idx], preds[idx]
        p, rc, f, _ = skm.precision_recall_fscore_support(lv, pv, labels=range(k), zero_division=0)
        auc = [skm.roc_auc_score(lv == c, probs[idx, c]) for c in range(k)]
        return {
            "accuracy": skm.accuracy_score(lv, pv),
            "balanced_accuracy": skm.balanced_accuracy_score(lv, pv),
            "macro_f1": skm.f1_score(lv, pv, labels=range(k), average="macro", zero_division=0),
            "weighted_f1": skm.f1_score(lv, pv, labels=range(k), average="weighted", zero_division=0),
            "macro_auroc": np.mean(auc),  # sklearn's multi_class="ovr" macro average (needs rows summing to 1)
            "precision": p, "recall": rc, "f1": f, "auroc": auc,
        }

    full = metrics(np.arange(len(labels)))
    reps = [metrics(idx) for idx in _resamples(clusters, r, seed)]
    jack = [metrics(np.flatnonzero(clusters != c)) for c in np.unique(clusters)]
    for name in ("balanced_accuracy", "macro_f1", "weighted_f1", "macro_auroc"):
        np.testing.assert_allclose(res[name]["estimate"], full[name], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose([res[name]["low"], res[name]["high"]],
                                   _bca_ref(full[name], [m[name] for m in reps], [m[name] for m in jack], 0.9),
                                   rtol=1e-10, err_msg=name)
        assert res[name]["method"] == metrics_stats.BCA and res[name]["n_clusters"] == 30
    # the clusters behind each per-class metric: F1 of c, those with a slice labelled or predicted c; AUROC, all
    behind = {"f1": [len(set(clusters[(labels == c) | (preds == c)])) for c in range(k)],
              "auroc": [len(set(clusters))] * k}
    for name in ("f1", "auroc"):
        got = res["per_class"][name]
        np.testing.assert_allclose(got["estimate"], full[name], rtol=1e-12, err_msg=name)
        for c in range(k):
            np.testing.assert_allclose([got["low"][c], got["high"][c]],
                                       _bca_ref(full[name][c], [m[name][c] for m in reps], [m[name][c] for m in jack],
                                                0.9, n_clusters=behind[name][c]), rtol=1e-10, err_msg=f"{name}[{c}]")
    np.testing.assert_allclose([res["accuracy"]["low"], res["accuracy"]["high"]],
                               _korn_graubard_ref(preds == labels, clusters, 0.9), rtol=1e-10)
    for c in range(k):  # recall of class c: the slices labelled c; precision: the slices predicted c
        for name, rows in (("recall", labels == c), ("precision", preds == c)):
            got = res["per_class"][name]
            np.testing.assert_allclose([got["low"][c], got["high"][c]],
                                       _korn_graubard_ref((preds == labels)[rows], clusters[rows], 0.9), rtol=1e-10)
            assert got["n_clusters"][c] == len(set(clusters[rows]))
    # a different seed draws other resamples; the same seed the same ones
    assert classification_intervals(labels, preds, probs, clusters, "patient", n_resamples=r, seed=seed) \
        == classification_intervals(labels, preds, probs, clusters, "patient", n_resamples=r, seed=seed)
    other = classification_intervals(labels, preds, None, clusters, "patient", num_classes=k, n_resamples=r, seed=3)
    assert other["macro_f1"]["low"] != res["macro_f1"]["low"] and "macro_auroc" not in other


def test_slices_are_the_unit_only_without_clusters_and_then_match_scipy_and_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    _, labels, preds, probs = _clustered(1, n=400)
    res = classification_intervals(labels, preds, probs, n_resamples=4000)
    assert res["interval"]["resampled_unit"] == "slice" and res["interval"]["n_units"] == 400
    # independent slices: Korn-Graubard is Clopper-Pearson up to (z / t)^2 and n - 1 vs n
    ref = proportion_confint(int(np.sum(labels == preds)), 400, alpha=0.05, method="beta")
    np.testing.assert_allclose([res["accuracy"]["low"], res["accuracy"]["high"]], ref, atol=2e-3)
    # BCa: scipy's, on its own resamples (so agreement to the Monte-Carlo error)

    def macro_f1(lv, pv, axis=-1):  # vectorised over scipy's resamples
        f1 = [2 * np.sum((lv == c) & (pv == c), axis) / (np.sum(lv == c, axis) + np.sum(pv == c, axis))
              for c in range(3)]
        return np.mean(f1, axis=0)

    f1 = scipy.stats.bootstrap((labels, preds), macro_f1, paired=True, vectorized=True, n_resamples=4000,
                               method="BCa", random_state=0).confidence_interval
    np.testing.assert_allclose([res["macro_f1"]["low"], res["macro_f1"]["high"]], [f1.low, f1.high], atol=6e-3)
    groups = np.arange(400) // 2
    assert classification_intervals(labels, preds, probs, groups, "duplicate_group",
                                     n_resamples=40)["interval"]["n_units"] == 200


def test_an_estimate_at_0_or_1_gets_an_exact_interval_never_zero_width():
    labels = np.repeat([0, 1, 2, 3], 18 * 4)
    clusters = np.repeat(np.arange(72), 4)  # 72 patients, 4 slices each, one class per patient
    preds = labels.copy()
    preds[labels == 0] = np.where(np.arange(72) % 2, 0, 1)[: 72]  # class 0 half right
    res = classification_intervals(labels, preds, None, clusters, "patient", num_classes=4, n_resamples=200)
    rec = res["per_class"]["recall"]
    # "no tumour" (class 2) is always right: Clopper-Pearson with its 18 patients as the trials
    assert rec["estimate"][2] == 1.0 and rec["method"][2] == metrics_stats.EXACT_AT_BOUND
    np.testing.assert_allclose(rec["low"][2], (0.025) ** (1 / 18), rtol=1e-10)
    assert rec["high"][2] == 1.0 and rec["n_clusters"][2] == 18
    f1 = res["per_class"]["f1"]
    assert f1["estimate"][2] == 1.0 and f1["low"][2] < 1.0 and f1["method"][2] == metrics_stats.EXACT_AT_BOUND
    everything = classification_intervals(labels, labels, None, clusters, "patient", num_classes=4, n_resamples=50)
    np.testing.assert_allclose(everything["accuracy"]["low"], 0.025 ** (1 / 72), rtol=1e-10)  # ~0.95, not 1
    assert everything["macro_f1"]["low"] < 1.0 == everything["macro_f1"]["high"]


def test_undefined_replicates_are_left_out_not_counted_as_zero():
    rng = np.random.default_rng(21)
    clusters = np.repeat(np.arange(40), 5)
    labels = rng.integers(0, 3, 200)
    labels[:5] = 3  # class 3 lives in one patient: absent from about a third of the resamples
    preds = labels.copy()
    res = classification_intervals(labels, preds, None, clusters, "patient", num_classes=4, n_resamples=300,
                                   seed=1)
    undefined = res["per_class"]["f1"]["undefined_resamples"][3]
    assert 60 < undefined < 160  # (39/40)^40 = 36 % of 300
    assert res["macro_f1"]["undefined_resamples"] == undefined
    assert res["macro_f1"]["estimate"] == 1.0 and res["macro_f1"]["low"] < 1.0  # never averaged with zeros


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


def test_segmentation_intervals_bca_from_numpy_means_on_the_same_resamples():
    rng = np.random.default_rng(3)
    n = 90
    clusters = rng.integers(100, 120, n)  # numeric ids
    per_case = {"dice": rng.beta(5, 1, n), "hd95_mm": rng.gamma(2.0, 3.0, n)}
    res = segmentation_intervals(per_case, clusters, "patient", n_resamples=120, seed=4)
    assert res["interval"]["n_units"] == len(np.unique(clusters)) and res["interval"]["seed"] == 4
    idxs = _resamples(clusters, 120, 4)
    for k, v in per_case.items():
        assert res[k]["estimate"] == pytest.approx(v.mean(), rel=1e-12)
        jack = [v[clusters != c].mean() for c in np.unique(clusters)]
        np.testing.assert_allclose([res[k]["low"], res[k]["high"]],
                                   _bca_ref(v.mean(), [v[i].mean() for i in idxs], jack), rtol=1e-10)
    # 5,000 slices x 1,000 resamples: drawn in two blocks
    values = rng.random(5000)
    res = segmentation_intervals({"dice": values}, n_resamples=1000, seed=9)
    ref = _bca_ref(values.mean(), values[bootstrap_indices(5000, 1000, 9)].mean(axis=1),
                   (values.sum() - values) / 4999)
    np.testing.assert_allclose([res["dice"]["low"], res["dice"]["high"]], ref, rtol=1e-10)
    perfect = segmentation_intervals({"dice": np.ones(30)}, np.arange(30) // 3, "patient", n_resamples=50)
    assert perfect["dice"]["low"] == pytest.approx(0.025 ** (1 / 10)) and perfect["dice"]["high"] == 1.0


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


def _brute_swap(values):
    """Every sign assignment of the per-cluster values: the exact null of their sum."""
    signs = np.array(list(itertools.product([1, -1], repeat=len(values))))
    return signs @ np.asarray(values, float)


def test_swap_test_is_exact_and_is_mcnemar_with_one_discordant_slice_per_cluster():
    rng = np.random.default_rng(15)
    for _ in range(5):
        d = rng.integers(-4, 5, 12)
        got = metrics_stats.swap_test(d)
        null, t = _brute_swap(d), d.sum()
        assert got["statistic"] == t and got["n_discordant_clusters"] == np.sum(d != 0)
        np.testing.assert_allclose(got["p_value"], np.mean(np.abs(null) >= abs(t)), rtol=1e-12)
        np.testing.assert_allclose(got["p_greater"], np.mean(null >= t), rtol=1e-12)
        np.testing.assert_allclose(got["p_less"], np.mean(null <= t), rtol=1e-12)
    for b, c in ((0, 7), (12, 4), (40, 61), (5, 0)):
        d = np.r_[np.ones(b, int), -np.ones(c, int), np.zeros(9, int)]
        np.testing.assert_allclose(metrics_stats.swap_test(d)["p_value"],
                                   scipy.stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0, rtol=1e-10)
    # real-valued differences: the same null by enumeration; random flips beyond 14 clusters
    d = rng.normal(0, 1, 10)
    got = metrics_stats.sign_flip_test(d)
    assert got["method"].startswith("exact")
    np.testing.assert_allclose(got["p_value"], np.mean(np.abs(_brute_swap(d)) >= abs(d.sum()) - 1e-12), rtol=1e-12)
    big = metrics_stats.sign_flip_test(rng.normal(0.3, 1, 40), seed=1)
    assert "random swaps" in big["method"] and 0 < big["p_value"] <= 1


def test_ratio_swap_test_against_enumerated_swaps():
    rng = np.random.default_rng(16)
    k = 9
    tp_a, tp_b = rng.integers(0, 5, k), rng.integers(0, 5, k)
    pp_a, pp_b = tp_a + rng.integers(0, 3, k), tp_b + rng.integers(0, 3, k)
    got = metrics_stats.ratio_swap_test(tp_a, pp_a, tp_b, pp_b)
    null = []
    for flip in itertools.product([0, 1], repeat=k):
        f = np.array(flip, bool)
        na, da = np.where(f, tp_b, tp_a), np.where(f, pp_b, pp_a)
        nb, db = np.where(f, tp_a, tp_b), np.where(f, pp_a, pp_b)
        null.append(na.sum() / da.sum() - nb.sum() / db.sum())
    t = tp_a.sum() / pp_a.sum() - tp_b.sum() / pp_b.sum()
    np.testing.assert_allclose(got["statistic"], t, rtol=1e-12)
    np.testing.assert_allclose(got["p_value"], np.mean(np.abs(null) >= abs(t) - 1e-12), rtol=1e-12)
    np.testing.assert_allclose(got["p_greater"], np.mean(np.array(null) >= t - 1e-12), rtol=1e-12)


def test_paired_comparison_primary_test_intervals_and_papers_column():
    clusters, labels, preds_a, _ = _clustered(8, n=300, n_clusters=40, acc=0.85)
    rng = np.random.default_rng(9)
    preds_b = np.where(rng.random(300) < 0.15, rng.integers(0, 3, 300), preds_a)
    res = paired_comparison(labels, preds_a, preds_b, clusters, "patient", num_classes=3, names=("V2", "V1"),
                            n_resamples=200, seed=5)
    right_a, right_b = preds_a == labels, preds_b == labels
    ids = np.unique(clusters)
    d = np.array([right_a[clusters == c].sum() - right_b[clusters == c].sum() for c in ids])
    n = np.array([np.sum(clusters == c) for c in ids])
    prim = res["primary"]
    assert prim["statistic"] == d.sum() and prim["n_clusters"] == 40 and prim["p_holm"] == prim["p_value"]
    np.testing.assert_allclose(prim["p_value"], metrics_stats.swap_test(d)["p_value"], rtol=1e-12)
    # the accuracy difference: cluster-robust t, by hand
    est = d.sum() / n.sum()
    se = np.sqrt(40 / 39 * np.sum((d - est * n) ** 2)) / n.sum()
    t = scipy.stats.t.ppf(0.975, 39)
    entry = res["accuracy_difference"]
    np.testing.assert_allclose([entry["estimate"], entry["low"], entry["high"]], [est, est - t * se, est + t * se],
                               rtol=1e-10)
    assert entry["verdict"] == prim["verdict"]
    # macro-F1 difference: descriptive BCa on the very same resamples for both models
    def f1(idx, p):
        return skm.f1_score(labels[idx], p[idx], labels=range(3), average="macro", zero_division=0)
    reps = [f1(i, preds_a) - f1(i, preds_b) for i in _resamples(clusters, 200, 5)]
    jack = [f1(np.flatnonzero(clusters != c), preds_a) - f1(np.flatnonzero(clusters != c), preds_b) for c in ids]
    every = np.arange(300)
    np.testing.assert_allclose([res["macro_f1_difference"]["low"], res["macro_f1_difference"]["high"]],
                               _bca_ref(f1(every, preds_a) - f1(every, preds_b), reps, jack), rtol=1e-10)
    assert res["macro_f1_difference"]["descriptive"]
    mc = res["mcnemar_slices"]
    assert mc["a_right_b_wrong"] == np.sum(right_a & ~right_b) and mc["a_wrong_b_right"] == np.sum(~right_a & right_b)
    assert "ignores patients" in mc["note"]
    # per class: recall differences tested within the class's slices
    for c in range(3):
        rows = labels == c
        dc = np.array([right_a[rows & (clusters == g)].sum() - right_b[rows & (clusters == g)].sum() for g in ids])
        np.testing.assert_allclose(res["per_class"]["recall"]["p_value"][c], metrics_stats.swap_test(dc)["p_value"])
        np.testing.assert_allclose(res["per_class"]["recall"]["difference"][c],
                                   right_a[rows].mean() - right_b[rows].mean(), rtol=1e-12)
    assert res["interval"]["resampled_unit"] == "patient" and res["models"] == ["V2", "V1"]


def test_verdicts_follow_the_test_and_never_claim_equivalence():
    clusters, labels, preds, _ = _clustered(10, n=400, n_clusters=80, acc=0.7)
    same = paired_comparison(labels, preds, preds, clusters, "patient", num_classes=3, names=("A", "B"),
                             n_resamples=100)
    assert same["primary"]["verdict"].startswith("no difference shown at α = 0.05")
    entry = same["accuracy_difference"]
    assert same["primary"]["p_value"] == 1.0 and entry["low"] < 0 < entry["high"]
    better = paired_comparison(labels, labels, preds, clusters, "patient", num_classes=3, names=("A", "B"),
                               n_resamples=100)
    worse = paired_comparison(labels, preds, labels, clusters, "patient", num_classes=3, names=("A", "B"),
                              n_resamples=100)
    assert better["primary"]["verdict"].startswith("A better than B")
    assert worse["primary"]["verdict"].startswith("B better than A")
    for r in (same, better, worse):
        assert "equivalent" not in r["primary"]["verdict"] and r["accuracy_difference"]["agrees_with_test"]


def test_pairwise_comparisons_holm_the_primary_tests_and_widen_the_intervals():
    clusters, labels, preds, _ = _clustered(11, n=300, n_clusters=50, acc=0.8)
    rng = np.random.default_rng(12)
    models = {"convnext_v2": labels.copy(), "convnext_v1": preds,
              "vit": np.where(rng.random(300) < 0.3, rng.integers(0, 3, 300), preds)}
    pairs = pairwise_comparisons(labels, models, clusters, "patient", num_classes=3, n_resamples=50)
    assert [p["models"] for p in pairs] == [["convnext_v2", "convnext_v1"], ["convnext_v2", "vit"],
                                            ["convnext_v1", "vit"]]
    raw = [p["primary"]["p_value"] for p in pairs]
    reject, adjusted, _, _ = multipletests(raw, method="holm")
    np.testing.assert_allclose([p["primary"]["p_holm"] for p in pairs], adjusted, rtol=1e-12)
    assert [p["primary"]["verdict"].startswith("no difference") for p in pairs] == (~reject).tolist()
    assert all(p["primary"]["n_pairs_holm"] == 3 for p in pairs)
    assert all(p["accuracy_difference"]["confidence"] == pytest.approx(1 - 0.05 / 3) for p in pairs)


def test_paired_segmentation_comparison_sign_flip_and_dice_difference():
    rng = np.random.default_rng(13)
    n = 60
    clusters = np.repeat(np.arange(15), 4)
    dice_a = np.clip(rng.beta(8, 2, n), 0, 1)
    dice_b = np.clip(dice_a - rng.normal(0.03, 0.05, n), 0, 1)
    res = paired_segmentation_comparison(dice_a, dice_b, clusters, "patient", names=("segformer", "unet"),
                                         n_resamples=150, seed=2)
    ref = scipy.stats.wilcoxon(dice_a, dice_b, zero_method="wilcox", correction=False, method="asymptotic")
    np.testing.assert_allclose(res["wilcoxon_slices"]["p_value"], ref.pvalue, rtol=1e-10)
    sums = np.array([(dice_a - dice_b)[clusters == c].sum() for c in range(15)])
    prim = res["primary"]
    np.testing.assert_allclose(prim["statistic"], sums.sum(), rtol=1e-12)
    assert "random swaps" in prim["method"]  # 15 clusters differ: beyond exact enumeration
    entry = res["dice_difference"]
    np.testing.assert_allclose(entry["estimate"], dice_a.mean() - dice_b.mean(), rtol=1e-12)
    assert prim["verdict"].startswith("segformer better than unet") and entry["agrees_with_test"]
    assert res["interval"]["n_units"] == 15
    pairs = pairwise_segmentation_comparisons({"a": dice_a, "b": dice_b, "c": dice_a}, clusters, "patient",
                                              n_resamples=20)
    assert pairs[1]["primary"]["p_holm"] == 1.0  # a vs c: identical Dice
    assert pairs[1]["primary"]["verdict"].startswith("no difference shown at α = 0.05")


def test_intersection_union_needs_every_test_to_reject():
    assert metrics_stats.intersection_union([0.01, 0.04, 0.049])["reject"]
    out = metrics_stats.intersection_union([0.01, 0.2, 0.001])
    assert not out["reject"] and out["p_value"] == 0.2 and out["n_hypotheses"] == 3


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
