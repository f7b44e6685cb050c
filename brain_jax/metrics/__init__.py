"""Evaluation metrics as jit-able ``jax.numpy`` functions, reduced over a whole split.

Metrics
=======
Classification: ``confusion_matrix`` (rows = true class, columns = predicted) and
``classification_summary`` (accuracy, balanced accuracy, per-class precision / recall (sensitivity) /
F1 / specificity / support, macro and weighted averages; ``summarize_confusions`` is the same in numpy
over many matrices), ``expected_calibration_error``, one-vs-rest ``roc_auc_ovr``. Segmentation:
per-case ``dice`` / ``iou`` of binary masks, mIoU from accumulated per-class intersection / union
counts (``intersection_union_counts`` + ``mean_iou``), and the per-case symmetric
``hausdorff_distance`` in millimetres (``percentile=95`` for HD95).

Uncertainty and comparison (``brain_jax.metrics.stats``, numpy/scipy on the host, after evaluation):
``classification_intervals`` / ``segmentation_intervals`` give each metric a 95 % interval with the
number of clusters (patients / duplicate groups) behind it: Korn-Graubard for proportions, BCa from a
cluster bootstrap otherwise. ``paired_comparison`` / ``pairwise_comparisons`` compare classifiers on
the same examples: the exact cluster swap test of the accuracy difference is primary (Holm across
pairs; the verdict follows it), per-class swap tests and slice-level McNemar are descriptive;
``paired_segmentation_comparison`` / ``pairwise_segmentation_comparisons`` do the same with the
sign-flip test of per-patient Dice sums. ``intersection_union`` tests a claim made of several
one-sided tests.

How a split is reduced
----------------------
Inside the jitted eval step, ``classification_batch_stats`` / ``segmentation_batch_stats`` turn a
batch (sharded over devices and hosts) into sufficient statistics: counts summed over the batch and
per-case values with a ``valid`` flag. ``ClassificationAccumulator`` / ``SegmentationAccumulator``
(plain Python, numpy sums) add them up across batches and hosts; ratios are taken once at the end.
Per-batch means are never averaged. Padded examples (``valid`` False) never count. The accumulators
also keep per-example results in the order seen (``examples()``: classification label, prediction
and probabilities with ``keep_examples=True``; segmentation Dice, IoU, HD, HD95 and areas in mm²)
for a predictions file and for ``intervals()``.

In an eval loop (any number of devices / hosts; ``batch`` from ``input_pipeline.make_loader``)::

    acc = SegmentationAccumulator(num_classes=2)
    for batch in loader:                      # global arrays sharded on the batch axis
        pred = jnp.argmax(eval_step(params, batch["image"]), -1)
        acc.update(segmentation_batch_stats(pred, batch["mask"], batch["spacing_mm"],
                                            batch["valid"] & batch["has_mask"]))
    report = acc.result()                     # same dict on every host
    # patient_ids: one id per case, in the order of acc.examples() (None and "slice" when unknown)
    report["intervals"] = acc.intervals(patient_ids, "patient", seed=0)

``to_host`` reads replicated counts from a local replica and all-gathers per-case arrays that are
split across hosts (``multihost_utils.process_allgather``), so every host sees the whole split.

Hausdorff distance algorithm
----------------------------
Exact and jit-able on static shapes. Per batch, the cheapest exact method that fits every image
(a ``lax.switch`` on an estimated cost): for lesion-sized masks, each image's border pixels listed
into 1024 or 4096 slots (bit-packed rows, no sort), each point's distance the minimum over the other
mask's points; for masks with more border pixels, an exact two-pass Euclidean distance transform
(per row the nearest border column, then per pixel the minimum over rows) on the rows and columns
holding border pixels, compacted to H/4 or H/2, else the whole image. The methods agree to float32
rounding (at most one ulp); nothing is sampled. The percentile is an exact order statistic
(bisection on float bits), with numpy's linear interpolation. ``benchmarks/bench_hd95.py`` times it
against medpy and MONAI (BENCHMARKS.md).

Conventions (tested in tests/test_metrics_*.py)
-----------------------------------------------
* Zero division (sklearn ``zero_division=0``): precision of a never-predicted class, recall of a
  class without support and F1 = 2TP / (2TP + FP + FN) with a zero denominator are 0. Macro averages
  include every class; weighted averages weigh by support.
* Border pixels: the mask minus its erosion by the 4-connected cross, pixels outside the image
  being background (scipy ``binary_erosion`` default ``border_value=0``): foreground touching the
  image edge is border. This is medpy.metric.binary's definition (and MONAI's, which crops with a
  one-pixel margin before eroding).
* Spacing: ``spacing_mm`` is (row, column) in mm, the array-axis order of medpy ``voxelspacing``,
  MONAI ``spacing`` and DICOM PixelSpacing; it may differ per case.
* Hausdorff distance: exact (exact Euclidean distance transform; no sampling), equal to medpy
  ``hd``; HD95 is medpy's ``hd95``: the 95th percentile (numpy linear interpolation) of the *union*
  of both directed surface-distance sets. MONAI's ``HausdorffDistanceMetric(percentile=95,
  directed=False)`` instead takes the larger of the two directed 95th percentiles; pass
  ``symmetric="max"`` to get MONAI's number. Both agree on the plain HD.
* Empty masks: both empty -> Dice 1, IoU 1, HD 0. Exactly one empty (a *miss*) -> Dice 0, IoU 0 and
  HD = HD95 = the image diagonal sqrt((H*dy)^2 + (W*dx)^2) in mm (the BraTS-style penalty). medpy
  raises on these cases and MONAI returns inf / NaN (and drops a missed prediction from its HD95
  mean), so reports always print the number of misses and of both-empty cases beside the mean
  (``SegmentationAccumulator.result()`` gives ``num_missed`` (= ``num_missed_tumour`` +
  ``num_false_alarm``) / ``num_empty_both`` and the HD means over detected cases only as well).
* mIoU: per-class IoU from pixel counts pooled over the split; a class absent from both prediction
  and ground truth in the whole split is NaN and left out of the mean.
* ECE: top-label confidence in ``num_bins`` equal-width bins (lo, hi] (0 goes to the first bin);
  ECE = sum over bins of |correct - confidence| / N.
* AUROC: one-vs-rest per class from the class probabilities, tied scores counting 1/2 (sklearn
  ``roc_auc_score``); NaN for a class without positives or without negatives; macro AUROC averages
  the classes where it is defined.
* Intervals: Korn-Graubard for proportions, cluster-bootstrap BCa otherwise, Clopper-Pearson on the
  clusters at an estimate of 0 or 1 (``brain_jax.metrics.stats``), by default ``brain_jax.N_RESAMPLES``
  (2000) resamples, seed 0, confidence 0.95. A paired verdict follows the cluster swap test's
  Holm-adjusted p and says "no difference shown at α = 0.05" when it does not reject (never
  "equivalent").
"""
from brain_jax.metrics.accumulators import (
    ClassificationAccumulator,
    SegmentationAccumulator,
    classification_batch_stats,
    segmentation_batch_stats,
    to_host,
)
from brain_jax.metrics.calibration import calibration_bins, ece_from_bins, expected_calibration_error
from brain_jax.metrics.classification import classification_summary, confusion_matrix, summarize_confusions
from brain_jax.metrics.segmentation import dice, intersection_union_counts, iou, mean_iou
from brain_jax.metrics.stats import (
    bootstrap_indices,
    classification_intervals,
    holm,
    mcnemar_exact,
    paired_comparison,
    intersection_union,
    paired_segmentation_comparison,
    pairwise_comparisons,
    pairwise_segmentation_comparisons,
    resampling_units,
    sign_flip_test,
    swap_test,
    roc_auc_ovr,
    segmentation_intervals,
    wilcoxon_signed_rank,
)
from brain_jax.metrics.surface import (
    border,
    directed_surface_distances,
    empty_case_flags,
    hausdorff_distance,
    hausdorff_distances,
    image_diagonal_mm,
)

__all__ = [
    "ClassificationAccumulator",
    "SegmentationAccumulator",
    "border",
    "bootstrap_indices",
    "calibration_bins",
    "classification_batch_stats",
    "classification_intervals",
    "classification_summary",
    "confusion_matrix",
    "dice",
    "directed_surface_distances",
    "ece_from_bins",
    "empty_case_flags",
    "expected_calibration_error",
    "hausdorff_distance",
    "hausdorff_distances",
    "holm",
    "image_diagonal_mm",
    "intersection_union_counts",
    "iou",
    "mcnemar_exact",
    "mean_iou",
    "paired_comparison",
    "intersection_union",
    "paired_segmentation_comparison",
    "pairwise_comparisons",
    "pairwise_segmentation_comparisons",
    "resampling_units",
    "roc_auc_ovr",
    "segmentation_batch_stats",
    "segmentation_intervals",
    "sign_flip_test",
    "swap_test",
    "summarize_confusions",
    "to_host",
    "wilcoxon_signed_rank",
]
