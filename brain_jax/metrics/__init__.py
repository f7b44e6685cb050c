"""Evaluation metrics as jit-able ``jax.numpy`` functions, reduced over a whole split.

Metrics
=======
Classification: ``confusion_matrix`` (rows = true class, columns = predicted) and
``classification_summary`` (accuracy, per-class precision / recall / F1 / support, macro and
weighted averages), ``expected_calibration_error``. Segmentation: per-case ``dice`` / ``iou`` of
binary masks, mIoU from accumulated per-class intersection / union counts
(``intersection_union_counts`` + ``mean_iou``), and the per-case symmetric ``hausdorff_distance`` in
millimetres (``percentile=95`` for HD95). ``bootstrap_ci`` gives a percentile-bootstrap confidence
interval of the mean of any per-case metric.

How a split is reduced
----------------------
Inside the jitted eval step, ``classification_batch_stats`` / ``segmentation_batch_stats`` turn a
batch (sharded over devices and hosts) into sufficient statistics: counts summed over the batch and
per-case values with a ``valid`` flag. ``ClassificationAccumulator`` / ``SegmentationAccumulator``
(plain Python, numpy sums) add them up across batches and hosts; ratios are taken once at the end.
Per-batch means are never averaged. Padded examples (``valid`` False) never count.

In an eval loop (any number of devices / hosts; ``batch`` from ``input_pipeline.make_loader``)::

    acc = SegmentationAccumulator(num_classes=2)
    for batch in loader:                      # global arrays sharded on the batch axis
        pred = jnp.argmax(eval_step(params, batch["image"]), -1)
        acc.update(segmentation_batch_stats(pred, batch["mask"], batch["spacing_mm"],
                                            batch["valid"] & batch["has_mask"]))
    report = acc.result(ci_resamples=1000)    # same dict on every host

``to_host`` reads replicated counts from a local replica and all-gathers per-case arrays that are
split across hosts (``multihost_utils.process_allgather``), so every host sees the whole split.

Hausdorff distance algorithm
----------------------------
Exact and jit-able on static shapes: border pixels, then an exact Euclidean distance transform
with anisotropic spacing in two passes. Pass 1: per row, the column offset to the nearest border
pixel (two cumulative scans). Pass 2: per pixel, the minimum over rows r' of
(dy (r - r'))^2 + (dx g(r', c))^2. Pass 2 is O(H^2 W) in general; since only rows and columns
holding border pixels can be nearest and distances are only read at border pixels, both passes
and the order statistics run on those rows and columns compacted to a batch-wide budget (H/8,
H/4, H/2, else the whole image; ``lax.switch``), which gives the same bits. The percentile is an exact order statistic (bisection on float bits), with
numpy's linear interpolation. ``benchmarks/bench_hd95.py`` times it against medpy and MONAI.

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
  (``SegmentationAccumulator.result()`` gives ``num_miss`` (= ``num_missed_tumour`` + ``num_false_alarm``) / ``num_both_empty`` and the HD means over
  detected cases only as well).
* mIoU: per-class IoU from pixel counts pooled over the split; a class absent from both prediction
  and ground truth in the whole split is NaN and left out of the mean.
* ECE: top-label confidence in ``num_bins`` equal-width bins (lo, hi] (0 goes to the first bin);
  ECE = sum over bins of |correct - confidence| / N.
"""
from brain_jax.metrics.accumulators import (
    ClassificationAccumulator,
    SegmentationAccumulator,
    classification_batch_stats,
    segmentation_batch_stats,
    to_host,
)
from brain_jax.metrics.calibration import (
    bootstrap_ci,
    calibration_bins,
    ece_from_bins,
    expected_calibration_error,
)
from brain_jax.metrics.classification import classification_summary, confusion_matrix
from brain_jax.metrics.segmentation import dice, intersection_union_counts, iou, mean_iou
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
    "bootstrap_ci",
    "border",
    "calibration_bins",
    "classification_batch_stats",
    "classification_summary",
    "confusion_matrix",
    "dice",
    "directed_surface_distances",
    "ece_from_bins",
    "empty_case_flags",
    "expected_calibration_error",
    "hausdorff_distance",
    "hausdorff_distances",
    "image_diagonal_mm",
    "intersection_union_counts",
    "iou",
    "mean_iou",
    "segmentation_batch_stats",
    "to_host",
]
