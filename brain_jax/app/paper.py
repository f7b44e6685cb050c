"""The numbers the paper reports (Rahman et al., "Unleashing the Power of Open-Source Transformers in
Medical Imaging"), where it disagrees with itself, and markdown rows placing ours beside them.

The paper's classification numbers come from a random slice-level split of a pool that repeats Figshare
slices up to about four times, so they are shown beside ours to make the gap visible, not as a target.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Test accuracy per classifier (abstract and Section V-B).
ACCURACY = {"convnextv2": 0.9960, "convnext": 0.9911, "swin": 0.9901, "vit": 0.985}
# Table I (ConvNeXt V2): precision, recall, F1 per class.
TABLE_I = {"glioma": (0.995, 0.997, 0.996), "meningioma": (0.994, 0.993, 0.993), "notumor": (1.000, 1.000, 1.000),
           "pituitary": (0.999, 0.997, 0.998)}
# Precision and recall from the counts of the confusion matrix in Fig. 8 (glioma: 1499 right, 8 called
# meningioma; 5 meningiomas called glioma, 3 pituitary; pituitary: 892 of 893 right; 4318 of 4335 overall).
FIG8 = {"glioma": (1499 / 1504, 1499 / 1507), "pituitary": (892 / 895, 892 / 893)}
FIG8_ACCURACY = 4318 / 4335
DICE = "0.95 (Table II); \"up to 90%\" (abstract, Section V-C)"
HAUSDORFF_MM = "0.87 (Table II, abstract); \"0.05 mm\" and \"less than 0.10\" (Section V-D)"

DISAGREEMENTS = (
    "Fig. 8's counts give glioma precision 0.9967 / recall 0.9947 and pituitary 0.9966 / 0.9989; Table I lists "
    "these two pairs swapped (glioma 0.995 / 0.997, pituitary 0.999 / 0.997). Fig. 8's accuracy, 4318 / 4335 = "
    "99.61%, agrees with the 99.60% reported.",
    "Segmentation Dice: \"up to 90%\" in the abstract and text, 0.95 in Table II.",
    "Hausdorff distance: 0.87 mm in Table II and the abstract, \"0.05 mm\" and \"less than 0.10\" in Section V-D; "
    "0.87 mm is under two 0.49 mm Figshare pixels, and neither the evaluation resolution nor the averaging is "
    "stated.",
    "The classification pool merges Figshare with Kaggle sets that repackage the same Figshare slices (a slice can "
    "appear about four times); the split is not described and appears random at slice level, so copies of test "
    "images were in training. Every \"no tumour\" image comes from the Kaggle JPEG sets and every Figshare tumour "
    "from 16-bit .mat files: the source alone separates \"no tumour\" from the rest.",
)


def model_key(name: str) -> str:
    """'convnextv2-tiny' / 'convnextv2-test (run)' -> 'convnextv2' (the key of ``ACCURACY``)."""
    return str(name).split("-")[0].split(" ")[0].lower()


def accuracy_rows(ours: Mapping[str, str]) -> list[list[str]]:
    """[model, paper accuracy, ours] for each of our models (``ours``: model name -> rendered value)."""
    return [[m, f"{ACCURACY[model_key(m)]:.4f}" if model_key(m) in ACCURACY else "not reported", v]
            for m, v in ours.items()]


def per_class_rows(class_names: Sequence[str], ours: Callable[[str, int], str]) -> list[list[str]]:
    """[class, metric, Table I, Fig. 8, ours] for precision, recall and F1 (``ours(metric, class index)``)."""
    rows = []
    for i, c in enumerate(class_names):
        if c not in TABLE_I:
            continue
        for j, metric in enumerate(("precision", "recall", "f1")):
            fig8 = f"{FIG8[c][j]:.4f}" if c in FIG8 and j < 2 else ""
            rows.append([c, metric, f"{TABLE_I[c][j]:.3f}", fig8, ours(metric, i)])
    return rows


def segmentation_rows(ours: Mapping[str, Any]) -> list[list[str]]:
    """[quantity, paper, ours] for Dice and the Hausdorff distance."""
    return [["Dice (SegFormer)", DICE, str(ours.get("dice", ""))],
            ["Hausdorff distance (mm)", HAUSDORFF_MM, str(ours.get("hd_mm", ""))]]
