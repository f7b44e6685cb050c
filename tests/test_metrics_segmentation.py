"""Dice / IoU / mIoU against medpy and sklearn; split accumulation; 1 device vs 8 sharded devices."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from scipy import ndimage
from sklearn.metrics import jaccard_score

from brain_jax.metrics import (
    ClassificationAccumulator,
    SegmentationAccumulator,
    classification_batch_stats,
    dice,
    intersection_union_counts,
    iou,
    mean_iou,
    segmentation_batch_stats,
)
from brain_jax.metrics import stats

B, S = 16, 32


def _masks(seed: int, b: int = B, s: int = S):
    rng = np.random.default_rng(seed)
    target = ndimage.gaussian_filter(rng.normal(size=(b, s, s)), (0, 2, 2)) > 0.15
    pred = target ^ (ndimage.gaussian_filter(rng.normal(size=(b, s, s)), (0, 1.5, 1.5)) > 0.3)
    target[0] = False  # both empty
    pred[0] = False
    target[1] = False  # prediction without ground truth: a miss
    pred[2] = False  # missed ground truth
    if not pred[1].any():
        pred[1, 3:6, 3:6] = True
    spacing = rng.uniform(0.3, 1.5, (b, 2)).astype(np.float32)
    return pred, target, spacing


def test_dice_iou_match_medpy_and_empty_conventions():
    from medpy.metric import binary

    pred, target, _ = _masks(0)
    d, j = np.asarray(dice(pred, target)), np.asarray(iou(pred, target))
    assert d[0] == 1 and j[0] == 1  # both empty
    assert d[1] == 0 and d[2] == 0 and j[1] == 0 and j[2] == 0  # one empty
    for i in range(3, B):
        np.testing.assert_allclose(d[i], binary.dc(pred[i], target[i]), rtol=1e-6)
        np.testing.assert_allclose(j[i], binary.jc(pred[i], target[i]), rtol=1e-6)
    # a pixel mask restricts the region that counts
    region = np.zeros((S, S), bool)
    region[:, : S // 2] = True
    dm = np.asarray(dice(pred, target, region))
    for i in range(3, B):
        p, t = pred[i][region], target[i][region]
        np.testing.assert_allclose(dm[i], binary.dc(p, t) if (p.any() or t.any()) else 1.0, rtol=1e-6)


def test_miou_from_counts_matches_sklearn_and_skips_absent_classes():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 3, (6, 20, 20))
    target = np.where(rng.random((6, 20, 20)) < 0.7, pred, rng.integers(0, 3, (6, 20, 20)))
    valid = np.array([1, 1, 0, 1, 1, 0], bool)
    pred[2] = 3  # an invalid case full of a class that appears nowhere else: must not count
    inter, union = intersection_union_counts(pred, target, 4, valid)
    miou, per_class = map(np.asarray, mean_iou(inter, union))
    ref = jaccard_score(target[valid].ravel(), pred[valid].ravel(), labels=[0, 1, 2], average=None)
    np.testing.assert_allclose(per_class[:3], ref, rtol=1e-6)
    assert np.isnan(per_class[3])
    np.testing.assert_allclose(miou, ref.mean(), rtol=1e-6)
    assert np.isnan(float(mean_iou(np.zeros(2), np.zeros(2))[0]))


def test_segmentation_accumulator_over_batches_matches_medpy():
    from medpy.metric import binary

    acc = SegmentationAccumulator(num_classes=2)
    cases = []
    for seed, n_valid in ((2, B), (3, 5)):  # second batch: all but 5 rows are padding
        pred, target, spacing = _masks(seed)
        valid = np.arange(B) < n_valid
        acc.update(segmentation_batch_stats(pred.astype(np.int32), target.astype(np.int32), spacing, valid))
        cases += [(pred[i], target[i], spacing[i]) for i in range(n_valid)]
    res = acc.result()
    assert res["num_cases"] == B + 5 and res["num_empty_both"] == 2 and res["num_missed"] == 4
    missed_tumour = sum(1 for p, t, _ in cases if not p.any() and t.any())
    false_alarm = sum(1 for p, t, _ in cases if p.any() and not t.any())
    assert missed_tumour > 0 and false_alarm > 0  # the fixture has both kinds
    assert (res["num_missed_tumour"], res["num_false_alarm"]) == (missed_tumour, false_alarm)
    hd, hd95, dc, detected = [], [], [], []
    for p, t, sp in cases:
        if p.any() and t.any():
            hd.append(binary.hd(p, t, sp.astype(np.float64)))
            hd95.append(binary.hd95(p, t, sp.astype(np.float64)))
            dc.append(binary.dc(p, t))
            detected.append(hd95[-1])
        else:
            penalty = 0.0 if not (p.any() or t.any()) else float(np.hypot(S * sp[0], S * sp[1]))
            hd.append(penalty)
            hd95.append(penalty)
            dc.append(1.0 if penalty == 0 else 0.0)
    np.testing.assert_allclose(res["dice"], np.mean(dc), rtol=1e-5)
    np.testing.assert_allclose(res["hd_mm"], np.mean(hd), rtol=1e-5)
    np.testing.assert_allclose(res["hd95_mm"], np.mean(hd95), rtol=1e-5)
    np.testing.assert_allclose(res["hd95_mm_detected"], np.mean(detected), rtol=1e-5)
    pv = np.stack([c[0] for c in cases]).ravel()
    tv = np.stack([c[1] for c in cases]).ravel()
    np.testing.assert_allclose(res["iou_per_class"], jaccard_score(tv, pv, labels=[0, 1], average=None), rtol=1e-6)

    # per-case results in arrival order; areas = pixel count x row spacing x column spacing
    ex = acc.examples()
    np.testing.assert_allclose(ex["dice"], dc, rtol=1e-5)
    np.testing.assert_allclose(ex["hd_mm"], hd, rtol=1e-5)
    np.testing.assert_allclose(ex["hd95_mm"], hd95, rtol=1e-5)
    np.testing.assert_allclose(ex["true_area_mm2"], [t.sum() * sp[0] * sp[1] for _, t, sp in cases], rtol=1e-6)
    np.testing.assert_allclose(ex["pred_area_mm2"], [p.sum() * sp[0] * sp[1] for p, _, sp in cases], rtol=1e-6)
    np.testing.assert_array_equal(ex["missed_tumour"], [not p.any() and t.any() for p, t, _ in cases])
    ci = acc.intervals(np.arange(B + 5) // 3, "patient", n_resamples=200, seed=1)
    assert ci["interval"] == {"method": stats.INTERVAL_METHOD, "confidence": 0.95, "n_resamples": 200, "seed": 1,
                              "resampled_unit": "patient", "n_units": 7, "n_examples": B + 5}
    for k in ("dice", "iou", "hd_mm", "hd95_mm"):
        np.testing.assert_allclose(ci[k]["estimate"], res[k], rtol=1e-6)
        assert ci[k]["low"] < ci[k]["estimate"] < ci[k]["high"]


def test_one_device_and_eight_sharded_devices_agree():
    assert len(jax.devices()) >= 8, "tests/conftest.py should provide 8 fake CPU devices"
    mesh = jax.make_mesh((8,), ("data",))
    shard = NamedSharding(mesh, P("data"))
    pred, target, spacing = _masks(3)
    pred_l, target_l = pred.astype(np.int32), target.astype(np.int32)
    valid = np.arange(B) < B - 3
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(B, 4)).astype(np.float32)
    labels = rng.integers(0, 4, B).astype(np.int32)

    single = segmentation_batch_stats(pred_l, target_l, spacing, valid)
    args = [jax.device_put(x, shard) for x in (pred_l, target_l, spacing, valid)]
    assert len(args[0].sharding.device_set) == 8
    sharded = segmentation_batch_stats(*args)
    for k in single:
        np.testing.assert_array_equal(np.asarray(sharded[k]), np.asarray(single[k]), err_msg=k)

    c_single = classification_batch_stats(logits, labels, valid, 4)
    c_sharded = classification_batch_stats(*[jax.device_put(x, shard) for x in (logits, labels, valid)], 4)
    for k in c_single:
        np.testing.assert_allclose(np.asarray(c_sharded[k]), np.asarray(c_single[k]), rtol=1e-6, err_msg=k)

    accs = []
    for seg, cls in ((single, c_single), (sharded, c_sharded)):
        a, c = SegmentationAccumulator(), ClassificationAccumulator(4)
        a.update(seg)
        c.update(cls)
        accs.append((a.result(), c.result()))
    assert accs[0] == accs[1]
    assert accs[0][0]["num_cases"] == B - 3 and accs[0][1]["num_examples"] == B - 3


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="equal shape"):
        dice(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="equal shapes"):
        intersection_union_counts(np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int), 2)
