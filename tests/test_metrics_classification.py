"""Classification metrics, ECE and the accumulator against sklearn / plain numpy references."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from brain_jax.metrics import (
    ClassificationAccumulator,
    classification_batch_stats,
    classification_summary,
    confusion_matrix,
    expected_calibration_error,
    summarize_confusions,
)

C = 4


def _random_preds(seed: int, n: int, num_classes: int = C, skip_class: int | None = None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, num_classes, n))
    if skip_class is not None:  # a class never predicted and never present -> 0/0 everywhere
        labels[labels == skip_class] = 0
        preds[preds == skip_class] = 1
    return labels, preds


@pytest.mark.parametrize("seed,skip", [(0, None), (1, 2), (2, 3)])
def test_confusion_and_summary_match_sklearn(seed, skip):
    labels, preds = _random_preds(seed, 101, skip_class=skip)
    valid = np.random.default_rng(seed).random(101) < 0.8
    cm = np.asarray(confusion_matrix(labels, preds, C, valid))
    ref_cm = skm.confusion_matrix(labels[valid], preds[valid], labels=range(C))
    np.testing.assert_array_equal(cm, ref_cm)

    s = {k: np.asarray(v) for k, v in classification_summary(cm).items()}
    lv, pv = labels[valid], preds[valid]
    p, r, f, sup = skm.precision_recall_fscore_support(lv, pv, labels=range(C), zero_division=0)
    np.testing.assert_allclose(s["precision"], p, rtol=1e-6)
    np.testing.assert_allclose(s["recall"], r, rtol=1e-6)
    np.testing.assert_allclose(s["f1"], f, rtol=1e-6)
    np.testing.assert_array_equal(s["support"], sup)
    np.testing.assert_allclose(s["accuracy"], skm.accuracy_score(lv, pv), rtol=1e-6)
    np.testing.assert_allclose(s["balanced_accuracy"], skm.balanced_accuracy_score(lv, pv), rtol=1e-6)
    # one-vs-rest specificity TN / (TN + FP) from sklearn's per-class 2x2 tables [[TN, FP], [FN, TP]]
    (tn, fp), _ = skm.multilabel_confusion_matrix(lv, pv, labels=range(C)).transpose(1, 2, 0)
    np.testing.assert_allclose(s["specificity"], tn / (tn + fp), rtol=1e-6)
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(lv, pv, labels=range(C), average=avg, zero_division=0)
        np.testing.assert_allclose(s[f"{avg}_precision"], p, rtol=1e-6)
        np.testing.assert_allclose(s[f"{avg}_recall"], r, rtol=1e-6)
        np.testing.assert_allclose(s[f"{avg}_f1"], f, rtol=1e-6)
    if skip is not None:
        assert s["precision"][skip] == 0 and s["recall"][skip] == 0 and s["f1"][skip] == 0


def test_numpy_summary_of_many_matrices_equals_jitted_summary():
    rng = np.random.default_rng(7)
    cms = rng.integers(0, 30, (50, C, C)) * (rng.random((50, C, C)) < 0.7)
    cms[0] = 0  # empty split
    cms[1, 2, :] = 0  # a class without support
    cms[1, :, 2] = 0
    cms[2] = np.diag([5, 0, 0, 0])  # one class only: specificity 0/0 for class 0
    batched = summarize_confusions(cms)
    for i in range(len(cms)):
        one = classification_summary(cms[i])
        for k, v in one.items():
            np.testing.assert_allclose(batched[k][i], np.asarray(v), rtol=1e-6, atol=1e-7, err_msg=f"{k} #{i}")


def test_zero_division_when_class_predicted_but_absent():
    # class 3 predicted once but never true: precision 0, recall 0 (no support), F1 0
    cm = np.array([[5, 0, 0, 1], [0, 3, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    s = classification_summary(cm)
    assert float(s["precision"][3]) == 0 and float(s["recall"][3]) == 0 and float(s["f1"][3]) == 0
    assert float(s["recall"][0]) == pytest.approx(5 / 6)
    assert float(classification_summary(np.zeros((C, C)))["accuracy"]) == 0


def _ece_reference(probs, labels, num_bins):
    """Straightforward loop: bins (lo, hi], 0 in the first bin."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    total = 0.0
    for b in range(num_bins):
        sel = (conf > edges[b]) & (conf <= edges[b + 1])
        if b == 0:
            sel |= conf == 0
        if sel.any():
            total += sel.sum() / len(conf) * abs(correct[sel].mean() - conf[sel].mean())
    return total


def test_ece_matches_reference_and_ignores_padding():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(200, C)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, C, 200)
    mask = rng.random(200) < 0.7
    got = float(expected_calibration_error(probs.astype(np.float32), labels, 10, mask))
    np.testing.assert_allclose(got, _ece_reference(probs[mask], labels[mask], 10), rtol=1e-5)
    # perfectly calibrated-by-construction: confidence 1 and always right -> 0
    onehot = np.eye(C, dtype=np.float32)[labels]
    assert float(expected_calibration_error(onehot, labels, 10)) == 0.0


def test_accumulator_over_batches_equals_whole_split_and_skips_padding():
    rng = np.random.default_rng(4)
    n = 70
    logits = rng.normal(size=(n, C)).astype(np.float32)
    labels = rng.integers(0, C, n)
    acc = ClassificationAccumulator(C, num_bins=10, class_names=("g", "m", "n", "p"), keep_examples=True)
    for start in range(0, n, 16):  # last batch padded to 16 with garbage labels
        lg = np.full((16, C), 50.0, np.float32)
        lb = np.full(16, 99)
        k = min(16, n - start)
        lg[:k], lb[:k] = logits[start : start + k], labels[start : start + k]
        acc.update(classification_batch_stats(lg, lb, np.arange(16) < k, C, 10))
    res = acc.result()
    preds = logits.argmax(1)
    np.testing.assert_array_equal(res["confusion_matrix"], skm.confusion_matrix(labels, preds, labels=range(C)))
    assert res["num_examples"] == n
    np.testing.assert_allclose(res["accuracy"], skm.accuracy_score(labels, preds), rtol=1e-6)
    np.testing.assert_allclose(res["macro_f1"], skm.f1_score(labels, preds, average="macro"), rtol=1e-5)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(res["ece"], _ece_reference(probs, labels, 10), rtol=1e-4)

    # per-example results: valid rows only, in arrival order
    ex = acc.examples()
    np.testing.assert_array_equal(ex["label"], labels)
    np.testing.assert_array_equal(ex["pred"], preds)
    np.testing.assert_allclose(ex["probs"], probs, rtol=1e-5, atol=1e-7)

    ci = acc.intervals(n_resamples=300, seed=2)
    assert ci["interval"]["resampled_unit"] == "slice" and ci["interval"]["n_units"] == n
    assert ci["class_names"] == ["g", "m", "n", "p"]
    for k in ("accuracy", "macro_f1", "balanced_accuracy"):
        np.testing.assert_allclose(ci[k]["estimate"], res[k], rtol=1e-6)
        assert ci[k]["low"] < ci[k]["estimate"] < ci[k]["high"]
    np.testing.assert_allclose(ci["per_class"]["auroc"]["estimate"],
                               [skm.roc_auc_score(labels == c, probs[:, c]) for c in range(C)], rtol=1e-5)
    patients = np.arange(n) // 5
    assert acc.intervals(patients, "patient", n_resamples=50)["interval"]["n_units"] == 14


def test_accumulator_rejects_out_of_range_labels_and_missing_examples():
    stats = classification_batch_stats(np.zeros((3, C), np.float32), np.array([0, 1, 7]), None, C)
    with pytest.raises(ValueError, match="outside"):
        ClassificationAccumulator(C).update(stats)
    with pytest.raises(KeyError, match="lack keys"):
        ClassificationAccumulator(C).update({"confusion": stats["confusion"]})
    acc = ClassificationAccumulator(C)
    acc.update(classification_batch_stats(np.zeros((3, C), np.float32), np.array([0, 1, 2]), None, C))
    with pytest.raises(ValueError, match="keep_examples"):
        acc.examples()
