"""Per-batch sufficient statistics (jnp, inside jit) and host-side accumulators over a whole split.

A batch's statistics are counts (summed over the batch inside jit, so a batch sharded over devices
and hosts yields the global sum) and per-case values with a validity flag. Accumulators add the
counts and keep the valid per-case values in numpy; ratios and means are computed once, over the
whole split, in ``result()``. Padded examples (``valid`` False) never count.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from brain_jax import N_RESAMPLES
from brain_jax.metrics.calibration import calibration_bins, ece_from_bins
from brain_jax.metrics.classification import classification_summary, confusion_matrix
from brain_jax.metrics.segmentation import dice, intersection_union_counts, iou, mean_iou
from brain_jax.metrics.stats import classification_intervals, segmentation_intervals
from brain_jax.metrics.surface import empty_case_flags, hausdorff_distances


def to_host(x: Any) -> np.ndarray:
    """numpy copy of a (possibly multi-host, sharded) array holding the *global* values.

    Replicated arrays are read from a local replica; arrays sharded across hosts are all-gathered.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# --------------------------------------------------------------------------- per-batch statistics (jit)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_bins"))
def classification_batch_stats(
    logits: jax.Array, labels: jax.Array, valid: jax.Array | None, num_classes: int, num_bins: int = 15
) -> dict[str, jax.Array]:
    """Sufficient statistics of one classification batch: confusion matrix and ECE bins (summed over valid
    examples), and per example the label, predicted class and softmax probabilities (B, C) with ``valid``."""
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels).reshape(-1).astype(jnp.int32)
    ok = jnp.ones(labels.shape, bool) if valid is None else jnp.asarray(valid).astype(bool).reshape(-1)
    preds = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    probs = jax.nn.softmax(logits, axis=-1)
    bins = calibration_bins(probs, labels, num_bins, ok)
    return {
        "confusion": confusion_matrix(labels, preds, num_classes, ok),
        "count": jnp.sum(ok, dtype=jnp.int32),
        "ece_count": bins["count"],
        "ece_confidence": bins["confidence"],
        "ece_correct": bins["correct"],
        "label": labels,
        "pred": preds,
        "probs": probs,
        "valid": ok,
    }


@functools.partial(jax.jit, static_argnames=("num_classes", "percentile"))
def segmentation_batch_stats(
    pred_labels: jax.Array,
    target_labels: jax.Array,
    spacing_mm: jax.Array,
    valid: jax.Array | None = None,
    num_classes: int = 2,
    percentile: float = 95.0,
) -> dict[str, jax.Array]:
    """Sufficient statistics of one segmentation batch of label maps (B, H, W).

    Per-class intersection/union pixel counts (for mIoU) over valid cases, and per-case Dice, IoU,
    HD and HD``percentile`` (mm) of the foreground (label != 0) with ``both_empty``/``miss`` flags and the
    two kinds of miss, ``missed_tumour``/``false_alarm``, and the foreground areas ``true_area_mm2`` /
    ``pred_area_mm2`` (pixel count x row spacing x column spacing).
    ``valid`` (B,) should be the pipeline's ``valid & has_mask``: padding and unlabelled cases never
    count. ``spacing_mm`` (B, 2) is (row, column) at the resolution of the label maps.
    """
    p = jnp.asarray(pred_labels)
    t = jnp.asarray(target_labels)
    ok = jnp.ones(p.shape[:1], bool) if valid is None else jnp.asarray(valid).astype(bool).reshape(-1)
    inter, union = intersection_union_counts(p, t, num_classes, ok)
    fp, ft = p != 0, t != 0
    hd, hdq = hausdorff_distances(fp, ft, spacing_mm, (None, percentile))
    flags = empty_case_flags(fp, ft)
    spacing = jnp.asarray(spacing_mm, jnp.float32)
    pixel_mm2 = spacing[:, 0] * spacing[:, 1]
    return {
        "intersection": inter,
        "union": union,
        "dice": dice(fp, ft),
        "iou": iou(fp, ft),
        "hd": hd,
        "hd_percentile": hdq,
        "both_empty": flags["both_empty"],
        "miss": flags["miss"],
        "missed_tumour": flags["missed_tumour"],
        "false_alarm": flags["false_alarm"],
        "true_area_mm2": jnp.sum(ft, axis=(-2, -1), dtype=jnp.float32) * pixel_mm2,
        "pred_area_mm2": jnp.sum(fp, axis=(-2, -1), dtype=jnp.float32) * pixel_mm2,
        "valid": ok,
    }


# --------------------------------------------------------------------------- host accumulators


def _check_keys(stats: Mapping[str, Any], keys: Sequence[str], who: str) -> None:
    missing = [k for k in keys if k not in stats]
    if missing:
        raise KeyError(f"{who}.update: batch statistics lack keys {missing}; "
                       "expected those of the *_batch_stats function")


class ClassificationAccumulator:
    """Sums ``classification_batch_stats`` over a split; ``result()`` gives the summary and ECE.

    With ``keep_examples`` it also keeps, for each valid example in the order seen (batch after batch,
    within a batch the rows of the global arrays, i.e. process 0's rows first on several hosts), its
    label, predicted class and class probabilities: ``examples()`` returns them and ``intervals()``
    bootstraps from them.
    """

    _KEYS = ("confusion", "count", "ece_count", "ece_confidence", "ece_correct", "valid")
    _EXAMPLE_KEYS = ("label", "pred", "probs")

    def __init__(self, num_classes: int, num_bins: int = 15, class_names: Sequence[str] | None = None,
                 keep_examples: bool = False):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
        self.num_classes, self.num_bins = num_classes, num_bins
        self.class_names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.bins = {k: np.zeros(num_bins, np.float64) for k in ("count", "confidence", "correct")}
        self.keep_examples = keep_examples
        self._examples: dict[str, list[np.ndarray]] = {k: [] for k in self._EXAMPLE_KEYS}

    def update(self, stats: Mapping[str, Any]) -> None:
        _check_keys(stats, self._KEYS + (self._EXAMPLE_KEYS if self.keep_examples else ()), "ClassificationAccumulator")
        cm = to_host(stats["confusion"]).astype(np.int64)
        count = int(to_host(stats["count"]))
        if cm.shape != self.confusion.shape:
            raise ValueError(f"confusion matrix shape {cm.shape} != ({self.num_classes}, {self.num_classes})")
        if int(cm.sum()) != count:
            raise ValueError(
                f"{count - int(cm.sum())} valid examples have a label or prediction outside "
                f"[0, {self.num_classes}): check num_classes and the dataset's label field"
            )
        self.confusion += cm
        for k in self.bins:
            self.bins[k] += to_host(stats[f"ece_{k}"]).astype(np.float64)
        if self.keep_examples:
            valid = to_host(stats["valid"]).astype(bool)
            for k in self._EXAMPLE_KEYS:
                self._examples[k].append(to_host(stats[k])[valid])

    def result(self) -> dict[str, Any]:
        """Plain-Python summary: ``classification_summary`` fields, confusion matrix, class names, ECE."""
        out = {k: np.asarray(v).tolist() for k, v in classification_summary(self.confusion).items()}
        out["confusion_matrix"] = self.confusion.tolist()
        out["class_names"] = list(self.class_names)
        out["num_examples"] = int(self.confusion.sum())
        out["ece"] = float(ece_from_bins(self.bins["count"], self.bins["confidence"], self.bins["correct"]))
        return out

    def examples(self) -> dict[str, np.ndarray]:
        """Per valid example, in the order seen: ``label`` (n,) int32, ``pred`` (n,) int32, ``probs`` (n, C) float32."""
        if not self.keep_examples:
            raise ValueError("ClassificationAccumulator was built without keep_examples=True: no per-example results")
        empty = {"label": np.zeros(0, np.int32), "pred": np.zeros(0, np.int32),
                 "probs": np.zeros((0, self.num_classes), np.float32)}
        return {k: np.concatenate(v) if v else empty[k] for k, v in self._examples.items()}

    def intervals(self, clusters: Any = None, cluster_kind: str = "slice", *, n_resamples: int = N_RESAMPLES,
                  seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
        """``stats.classification_intervals`` of the kept examples, plus ``class_names``.

        ``clusters``: the patient / duplicate-group id of each example, in the order of ``examples()``.
        """
        ex = self.examples()
        out = classification_intervals(ex["label"], ex["pred"], ex["probs"], clusters, cluster_kind,
                                       num_classes=self.num_classes, n_resamples=n_resamples, seed=seed,
                                       confidence=confidence)
        return out | {"class_names": list(self.class_names)}


class SegmentationAccumulator:
    """Sums ``segmentation_batch_stats`` over a split.

    ``result()`` reports mIoU (pooled counts), mean per-case Dice / IoU / HD / HD95 (``hd95_mm``; the
    name follows ``percentile``) over valid cases
    (a miss is penalised with the image diagonal, both-empty counts as Dice 1 / HD 0), the same HD
    means over detected cases only (both masks non-empty), and the counts of misses (``num_missed``,
    split into ``num_missed_tumour`` and ``num_false_alarm``) and both-empty cases (``num_empty_both``),
    which reports show beside the means. ``examples()`` gives the per-case values in the order seen
    (as ``ClassificationAccumulator``), ``intervals()`` their cluster-bootstrap intervals.
    """

    _CASE_KEYS = ("dice", "iou", "hd", "hd_percentile", "both_empty", "miss", "missed_tumour", "false_alarm",
                  "true_area_mm2", "pred_area_mm2")

    def __init__(self, num_classes: int = 2, percentile: float = 95.0):
        self.num_classes = num_classes
        self.name = f"hd{percentile:g}_mm"  # must match segmentation_batch_stats(percentile=...)
        self.intersection = np.zeros(num_classes, np.int64)
        self.union = np.zeros(num_classes, np.int64)
        self.cases: dict[str, list[np.ndarray]] = {k: [] for k in self._CASE_KEYS}

    def update(self, stats: Mapping[str, Any]) -> None:
        _check_keys(stats, ("intersection", "union", "valid") + self._CASE_KEYS, "SegmentationAccumulator")
        self.intersection += to_host(stats["intersection"]).astype(np.int64)
        self.union += to_host(stats["union"]).astype(np.int64)
        valid = to_host(stats["valid"]).astype(bool)
        for k in self._CASE_KEYS:
            self.cases[k].append(to_host(stats[k])[valid])

    def _per_case(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.cases.items()}

    def examples(self) -> dict[str, np.ndarray]:
        """Per valid case, in the order seen: ``dice``, ``iou``, ``hd_mm``, ``hd95_mm`` (the name follows
        ``percentile``), ``true_area_mm2``, ``pred_area_mm2`` (float64) and the bool flags ``missed_tumour``,
        ``false_alarm``, ``both_empty``."""
        c = self._per_case()
        out = {"dice": c["dice"], "iou": c["iou"], "hd_mm": c["hd"], self.name: c["hd_percentile"],
               "true_area_mm2": c["true_area_mm2"], "pred_area_mm2": c["pred_area_mm2"]}
        out = {k: v.astype(np.float64) for k, v in out.items()}
        return out | {k: c[k].astype(bool) for k in ("missed_tumour", "false_alarm", "both_empty")}

    def result(self) -> dict[str, Any]:
        cases = self._per_case()
        n = len(cases["dice"])
        miou, per_class = mean_iou(self.intersection, self.union)
        detected = ~(cases["miss"].astype(bool) | cases["both_empty"].astype(bool))

        def mean(x: np.ndarray) -> float:
            return float(np.mean(x, dtype=np.float64)) if len(x) else float("nan")

        return {
            "miou": float(miou),
            "iou_per_class": np.asarray(per_class).tolist(),
            "num_cases": n,
            "num_missed": int(cases["miss"].sum()),
            "num_missed_tumour": int(cases["missed_tumour"].sum()),
            "num_false_alarm": int(cases["false_alarm"].sum()),
            "num_empty_both": int(cases["both_empty"].sum()),
            "dice": mean(cases["dice"]),
            "iou": mean(cases["iou"]),
            "hd_mm": mean(cases["hd"]),
            self.name: mean(cases["hd_percentile"]),
            "hd_mm_detected": mean(cases["hd"][detected]),
            f"{self.name}_detected": mean(cases["hd_percentile"][detected]),
        }

    def intervals(self, clusters: Any = None, cluster_kind: str = "slice", *, n_resamples: int = N_RESAMPLES,
                  seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
        """``stats.segmentation_intervals`` of mean ``dice``, ``iou``, ``hd_mm`` and ``hd95_mm`` over the cases.

        ``clusters``: the patient / duplicate-group id of each case, in the order of ``examples()``.
        """
        ex = self.examples()
        return segmentation_intervals({k: ex[k] for k in ("dice", "iou", "hd_mm", self.name)}, clusters,
                                      cluster_kind, n_resamples=n_resamples, seed=seed, confidence=confidence)
