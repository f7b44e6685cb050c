"""The two-level bootstrap (training seeds, then test clusters) against plain loops on the same draws, its
one-seed case against the cluster bootstrap, and a simulation where training randomness matters."""
from __future__ import annotations

import numpy as np
import pytest

from brain_jax.metrics import multilevel, stats


def _data(rng: np.random.Generator, n_clusters: int, per_cluster: int, k: int, accuracies: list[float]):
    """Labels (n,), predictions (S, n) with the given per-seed accuracies, patient ids (n,)."""
    n = n_clusters * per_cluster
    clusters = np.array([f"p{i // per_cluster:03d}" for i in range(n)])
    labels = rng.integers(0, k, n)
    preds = np.stack([np.where(rng.random(n) < a, labels, (labels + 1 + rng.integers(0, k - 1, n)) % k)
                      for a in accuracies])
    return labels, preds, clusters


def _loop_metrics(labels, pred, w, k):
    cm = np.zeros((k, k))
    np.add.at(cm, (labels, pred), w)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    f1 = np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), 0)
    recall = np.where(support > 0, tp / np.maximum(support, 1), 0)
    return {"accuracy": tp.sum() / cm.sum(), "macro_f1": f1.mean(),
            "balanced_accuracy": recall[support > 0].mean()}


def test_two_level_equals_a_plain_loop_on_the_same_draws():
    rng = np.random.default_rng(0)
    k, r = 3, 300
    labels, preds, clusters = _data(rng, 25, 3, k, [0.7, 0.8, 0.9])
    out, reps = multilevel.two_level("classification", preds, clusters, "patient", labels=labels, num_classes=k,
                                     n_resamples=r, seed=5)
    units = stats.resampling_units(clusters, "patient", len(labels))
    cd, sd = multilevel.draws(int(units.max()) + 1, 3, r, 5)
    np.testing.assert_array_equal(cd, stats.bootstrap_indices(int(units.max()) + 1, r, 5))
    loop = {m: [] for m in multilevel.CLASSIFICATION_METRICS}
    for drawn_units, drawn_seeds in zip(cd, sd):
        w = np.bincount(drawn_units, minlength=units.max() + 1)[units]  # each slice as often as its patient
        per_seed = [_loop_metrics(labels, preds[s], w, k) for s in drawn_seeds]
        for m in loop:
            loop[m].append(np.mean([x[m] for x in per_seed]))
    for m in loop:
        np.testing.assert_allclose(reps[m], loop[m], rtol=1e-12)
        np.testing.assert_allclose([out[m]["low"], out[m]["high"]], np.percentile(loop[m], [2.5, 97.5]), rtol=1e-12)
        full = [_loop_metrics(labels, p, np.ones(len(labels)), k)[m] for p in preds]
        assert out[m]["estimate"] == pytest.approx(np.mean(full))
    meta = out["interval"]
    assert (meta["n_seeds"], meta["n_clusters"], meta["n_resamples"], meta["seed"]) == (3, 25, r, 5)
    # segmentation: mean Dice over the drawn cases, averaged over the drawn seeds
    dice = rng.random((2, len(labels)))
    seg, seg_reps = multilevel.two_level("segmentation", dice, clusters, "patient", n_resamples=r, seed=5)
    cd, sd = multilevel.draws(int(units.max()) + 1, 2, r, 5)
    loop_dice = [np.mean([np.average(dice[s], weights=np.bincount(u, minlength=units.max() + 1)[units]) for s in ss])
                 for u, ss in zip(cd, sd)]
    np.testing.assert_allclose(seg_reps["dice"], loop_dice, rtol=1e-12)
    assert seg["dice"]["estimate"] == pytest.approx(dice.mean())


def test_one_seed_is_the_cluster_bootstrap():
    """One training: no seed level, the replicates are the percentile cluster bootstrap's on
    ``stats.bootstrap_indices`` with the same seed."""
    rng = np.random.default_rng(1)
    labels, preds, clusters = _data(rng, 30, 4, 4, [0.8])
    out, reps = multilevel.two_level("classification", preds[0], clusters, "patient", labels=labels, num_classes=4,
                                     n_resamples=500, seed=3)
    units = stats.resampling_units(clusters, "patient", len(labels))
    dice = rng.random(len(labels))
    weights = [np.bincount(row, minlength=30)[units] for row in stats.bootstrap_indices(30, 500, 3)]
    plain = {m: np.array([_loop_metrics(labels, preds[0], w, 4)[m] for w in weights]) for m in reps}
    for m in multilevel.CLASSIFICATION_METRICS:
        np.testing.assert_allclose([out[m]["low"], out[m]["high"]], np.percentile(plain[m], [2.5, 97.5]), rtol=1e-12)
    seg, _ = multilevel.two_level("segmentation", dice, clusters, "patient", n_resamples=500, seed=3)
    plain_dice = [np.average(dice, weights=w) for w in weights]
    np.testing.assert_allclose([seg["dice"]["low"], seg["dice"]["high"]], np.percentile(plain_dice, [2.5, 97.5]),
                               rtol=1e-12)


def test_training_randomness_widens_the_interval():
    """Five trainings whose accuracies spread (0.70 to 0.90): drawing seeds as well as patients gives a
    wider interval than resampling patients under the five fixed trainings, in every simulated set."""
    rng = np.random.default_rng(2)
    ratios = []
    for _ in range(20):
        labels, preds, clusters = _data(rng, 60, 3, 4, list(np.linspace(0.7, 0.9, 5)))
        units = stats.resampling_units(clusters, "patient", len(labels))
        n_units = int(units.max()) + 1
        unit_stats = multilevel.unit_confusions(labels, preds, units, n_units, 4)
        cd, sd = multilevel.draws(n_units, 5, 400, 0)
        stat = multilevel.confusion_statistic(4, ("accuracy",))
        two = multilevel.replicates(unit_stats, stat, cd, sd)["accuracy"]
        one = multilevel.replicates(unit_stats, stat, cd, np.tile(np.arange(5), (400, 1)))["accuracy"]
        width = [np.subtract(*np.percentile(x, [97.5, 2.5])) for x in (two, one)]
        ratios.append(width[0] / width[1])
    assert min(ratios) > 1.5, ratios


def test_paired_difference_shares_clusters_and_draws_seeds_apart():
    rng = np.random.default_rng(3)
    labels, preds, clusters = _data(rng, 20, 2, 3, [0.9, 0.85, 0.6, 0.65])
    d = multilevel.paired_difference("classification", preds[:2], preds[2:], clusters, "patient", labels=labels,
                                     num_classes=3, n_resamples=300, seed=1)
    a, ra = multilevel.two_level("classification", preds[:2], clusters, "patient", labels=labels, num_classes=3,
                                 n_resamples=300, seed=1, stream=1)
    b, rb = multilevel.two_level("classification", preds[2:], clusters, "patient", labels=labels, num_classes=3,
                                 n_resamples=300, seed=1, stream=2)
    np.testing.assert_allclose([d["accuracy"]["low"], d["accuracy"]["high"]],
                               np.percentile(ra["accuracy"] - rb["accuracy"], [2.5, 97.5]))
    assert d["accuracy"]["estimate"] == pytest.approx(a["accuracy"]["estimate"] - b["accuracy"]["estimate"])
    assert d["accuracy"]["low"] > 0 and d["interval"]["n_seeds"] == [2, 2]
    # the same trainings on both sides: every replicate's difference is 0 only if the seed draws were shared;
    # drawn apart, the difference still spreads
    same = multilevel.paired_difference("classification", preds[:2], preds[:2], clusters, "patient", labels=labels,
                                        num_classes=3, n_resamples=300, seed=1)
    assert same["accuracy"]["estimate"] == 0 and same["accuracy"]["high"] > 0


def test_subset_difference_splits_one_models_accuracy():
    rng = np.random.default_rng(4)
    labels, preds, clusters = _data(rng, 30, 2, 4, [0.5, 0.5])
    copied = np.arange(len(labels)) % 3 != 0
    preds[:, copied] = labels[copied]  # memorised: every copied example right
    out = multilevel.subset_difference(labels, preds, copied, clusters, "patient", n_resamples=300, seed=0)
    assert out["inside"]["n"] + out["outside"]["n"] == len(labels)
    assert out["inside"]["accuracy"]["estimate"] == 1.0 and out["difference"]["low"] > 0
    assert out["outside"]["n_clusters"] == len(np.unique(clusters[~copied]))
    none = multilevel.subset_difference(labels, preds, np.ones(len(labels), bool), clusters, "patient",
                                        n_resamples=50, seed=0)
    assert none["outside"] == {"n": 0, "n_clusters": 0, "accuracy": None} and none["difference"] is None


def test_few_seeds_are_flagged():
    assert "at least 5 seeds" in multilevel.few_seeds_note(3) and multilevel.few_seeds_note(5) is None


def test_a_replicate_without_a_class_leaves_macro_f1_undefined_not_zero():
    """Class 2 lives in one patient of 20: replicates that miss that patient (about (19/20)^20 = 36 %) have
    no example of it, so their macro-F1 is undefined and left out, as in the one-level bootstrap; scoring it
    0 there would drag the interval down by a third of the class count."""
    k, r = 3, 400
    labels = np.repeat(np.arange(20) % 2, 4)
    labels[:4] = 2
    clusters = np.repeat(np.arange(20), 4)
    preds = np.stack([labels, labels])  # perfect predictions, two seeds
    out, reps = multilevel.two_level("classification", preds, clusters, "patient", labels=labels, num_classes=k,
                                     n_resamples=r, seed=3)
    units = stats.resampling_units(clusters, "patient", len(labels))
    missed = ~np.any(multilevel.draws(20, 2, r, 3)[0] == units[0], axis=1)
    assert 0.2 < missed.mean() < 0.5
    assert np.all(np.isnan(reps["macro_f1"][missed])) and np.all(reps["macro_f1"][~missed] == 1.0)
    assert out["macro_f1"]["undefined_resamples"] == missed.sum()
    assert out["macro_f1"]["low"] == 1.0 and out["macro_f1"]["estimate"] == 1.0
    np.testing.assert_array_equal(reps["accuracy"], 1.0)  # accuracy is defined in every replicate
