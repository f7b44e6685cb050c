"""Report figures decode as images of plausible size, and report.md carries the numbers it was given."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from brain_jax.app import figures, report

NAMES = ["glioma", "meningioma", "notumor", "pituitary"]
CM = [[50, 3, 1, 0], [4, 41, 2, 1], [0, 1, 60, 0], [0, 2, 0, 47]]


def _png_ok(path, min_w=200, min_h=150) -> np.ndarray:
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_w and im.height >= min_h
        return np.asarray(im.convert("RGB"))


def _disk(n, cy, cx, r):
    yy, xx = np.mgrid[:n, :n]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def test_confusion_matrix_png(tmp_path):
    a = _png_ok(figures.confusion_matrix_png(CM, NAMES, tmp_path / "cm.png"))
    b = _png_ok(figures.confusion_matrix_png(np.array(CM), NAMES, tmp_path / "cmn.png", normalize=True))
    assert a.std() > 10 and b.std() > 10  # not a blank canvas
    with pytest.raises(ValueError, match="does not match 3 class names"):
        figures.confusion_matrix_png(CM, NAMES[:3], tmp_path / "bad.png")


def test_overlays_png(tmp_path):
    n = 48
    rng = np.random.default_rng(0)
    imgs = [rng.normal(size=(n, n)).astype(np.float32) + 3 * _disk(n, 20, 25, 8) for _ in range(2)]
    true = [_disk(n, 20, 25, 8), None]
    pred = [_disk(n, 21, 25, 7), np.zeros((n, n), np.uint8)]
    p = figures.overlays_png(imgs, true, pred, tmp_path / "ov.png", spacing_mm=(0.49, 0.49), titles=["a", "b"])
    arr = _png_ok(p, 600, 400)
    # red-ish prediction fill/contour and green ground truth appear somewhere
    r, g, b = arr[..., 0].astype(int), arr[..., 1].astype(int), arr[..., 2].astype(int)
    assert ((r - g > 80) & (r - b > 80)).any()
    assert ((g - r > 80) & (g - b > 60)).any()
    # per-case spacing as the evaluator passes it (arrays, None when unknown), RGB model inputs
    rgb = [np.repeat(i[..., None], 3, -1) for i in imgs]
    _png_ok(figures.overlays_png(rgb, true, pred, tmp_path / "ov2.png", spacing_mm=[np.array([0.5, 1.0]), None]))
    with pytest.raises(ValueError, match="2 images but 1 predicted"):
        figures.overlays_png(imgs, true, pred[:1], tmp_path / "x.png")


def test_training_curves_and_comparison(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "train/loss": 2.0 / (s + 1), "lr": 1e-3} for s in range(0, 50, 5)]
    lines += [{"step": s, "eval/accuracy": 0.5 + s / 200, "eval/loss": 1.0 / (s + 1)} for s in (10, 30, 50)]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    _png_ok(figures.training_curves_png(log, tmp_path / "curves.png"), 600, 250)
    # the demo's merged log: task-prefixed keys, distances get their own panel (a wider figure)
    rows = [{"step": s, "segmentation_train/loss": 1 / (s + 1), "segmentation_train/lr": 0.1,
             "segmentation_eval/dice": s / 10, "segmentation_eval/hd95_mm": 20 - s,
             "segmentation_eval/num_cases": 12} for s in range(1, 6)]
    log.write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    w3 = _png_ok(figures.training_curves_png(log, tmp_path / "c3.png"), 900, 250).shape[1]
    assert w3 > _png_ok(tmp_path / "curves.png").shape[1]
    # the trainer's own log: a "split" field instead of prefixes
    rows = [{"step": s, "split": "train", "loss": 1 / s, "accuracy": 0.5} for s in range(1, 4)]
    rows += [{"step": 3, "split": "eval", "loss": 0.9, "accuracy": 0.61}]
    log.write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    _png_ok(figures.training_curves_png(log, tmp_path / "c4.png"), 600, 250)
    log.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        figures.training_curves_png(log, tmp_path / "c2.png")
    res = {"convnextv2": {"accuracy": 0.93, "macro_f1": 0.92}, "vit": {"accuracy": 0.88, "macro_f1": 0.86}}
    _png_ok(figures.model_comparison_png(res, tmp_path / "cmp.png"), 250, 250)
    ci = {"convnextv2": {"accuracy": (0.90, 0.95), "macro_f1": (0.89, 0.94)}, "vit": {"accuracy": (0.85, 0.91)}}
    _png_ok(figures.model_comparison_png(res, tmp_path / "cmp_ci.png", intervals=ci), 250, 250)
    entry = {"estimate": [0.9, 0.8], "low": [0.85, 0.7], "high": [0.95, 0.9]}
    per_class = {m: {k: entry for k in ("precision", "recall", "f1")} for m in ("a", "b")}
    _png_ok(figures.per_class_bars_png(per_class, ["glioma", "pituitary"], tmp_path / "pc.png"), 600, 250)
    rows = [("a − b", 0.02, -0.01, 0.05), ("a − c", 0.1, 0.04, 0.16)]
    _png_ok(figures.forest_png(rows, tmp_path / "forest.png", title="t", xlabel="accuracy difference"), 400, 150)
    with pytest.raises(ValueError, match="no rows"):
        figures.forest_png([], tmp_path / "none.png", title="t", xlabel="x")


def test_write_report_numbers_and_figures(tmp_path):
    metrics = {
        "classification": {
            "accuracy": 0.9312,
            "macro_f1": 0.9207,
            "per_class": {
                "glioma": {"precision": 0.9259, "recall": 0.9259, "f1": 0.9259, "support": 54},
                "meningioma": {"precision": 0.8723, "recall": 0.8542, "f1": 0.8632, "support": 48},
                "notumor": {"precision": 0.9524, "recall": 0.9836, "f1": 0.9677, "support": 61},
                "pituitary": {"precision": 0.9792, "recall": 0.9592, "f1": 0.9691, "support": 49},
            },
            "confusion_matrix": CM,
        },
        "segmentation": {
            "dice": 0.8125, "dice_ci": [0.7931, 0.8302], "iou": 0.7044, "miou": 0.8411,
            "hd95_mm": 4.3187, "hd_mm": 7.0615, "hd95_mm_detected": 3.1416, "iou_per_class": [0.9871, 0.6951],
            "num_cases": 212, "num_missed": 9, "num_missed_tumour": 7, "num_false_alarm": 2, "num_empty_both": 3,
        },
        "meta": {"model": "convnextv2-test", "dataset": "brain_phantoms", "split": "test"},
        # a hand-written section of the old layout: comparisons now come from `brain-jax compare`
        "comparison": {"convnextv2": {"accuracy": 0.9312, "macro_f1": 0.9207},
                       "swin": {"accuracy": 0.9011, "macro_f1": 0.8977}},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "train/loss": 1 / (s + 1)}) for s in range(5)) + "\n")
    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "overlays.png")  # a figure the engine left
    out = report.write_report(tmp_path)
    text = out.read_text()
    assert out == tmp_path / "report.md"
    for v in ("0.9312", "0.9207", "0.8723", "0.8542", "0.9836", "0.8125", "0.7931", "0.8302", "0.7044",
              "0.8411", "4.3187", "7.0615", "3.1416", "0.9871", "0.6951", "212"):
        assert v in text, v
    assert "0.9011" not in text and "## Model comparison" not in text
    # miss counts printed beside the means
    dice_row = next(line for line in text.splitlines() if line.startswith("| Dice (mean"))
    assert "missed (both kinds) 9" in dice_row and "both empty 3" in dice_row and "n 212" in dice_row
    assert "missed tumours 7" in dice_row and "false alarms 2" in dice_row
    assert "[0.7931, 0.8302]" in dice_row
    hd_row = next(line for line in text.splitlines() if line.startswith("| HD95"))
    assert "missed (both kinds) 9" in hd_row
    # confusion-matrix counts and every figure referenced, and each referenced file exists
    assert "| glioma | 50 | 3 | 1 | 0 |" in text
    for rel in ("figures/confusion_matrix.png", "figures/confusion_matrix_normalized.png",
                "figures/training_curves.png", "overlays.png"):
        assert f"]({rel})" in text, rel
        _png_ok(tmp_path / rel, 10, 10)
    assert "synthetic phantoms" in text and "not comparable" in text and "splits by patient" in text
    assert "| convnextv2-test | 0.9960 | 0.9312 |" in text  # paper's 99.60% beside ours
    # Table I and Fig. 8 beside ours, and where they disagree
    assert "| glioma | precision | 0.995 | 0.9967 | 0.9259 |" in text
    assert "| meningioma | recall | 0.993 |  | 0.8542 |" in text
    assert "Table I lists these two pairs swapped" in text and "0.05 mm" in text
    assert "| Dice (SegFormer) | 0.95 (Table II); \"up to 90%\" (abstract, Section V-C) | 0.8125 |" in text


def test_write_report_flat_classification_summary(tmp_path):
    """The layout of metrics.classification_summary: per-class vectors at the top level."""
    metrics = {"classification": {"accuracy": 0.8, "macro_f1": 0.7777, "precision": [0.9111, 0.7222],
                                  "recall": [0.6666, 0.9333], "f1": [0.7700, 0.8144], "support": [15, 15],
                                  "class_names": ["x", "y"], "confusion_matrix": [[10, 5], [1, 14]], "ece": 0.0423},
               "meta": {"dataset": "figshare_brain_tumor", "split_by": "group"}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = report.write_report(tmp_path).read_text()
    assert "| x | 0.9111 | 0.6666 | 0.7700 | 15 |" in text and "| y | 0.7222 | 0.9333 | 0.8144 | 15 |" in text
    assert "| ece | 0.0423 |" in text and "[0.9111" not in text  # vectors go to the per-class table only
    assert "This run: `split_by` = `group`" in text and "synthetic phantoms" not in text


def test_write_report_tolerates_one_section_and_list_per_class(tmp_path):
    metrics = {"classification": {"accuracy": 0.75, "macro_f1": 0.7021,
                                   "per_class": {"precision": [0.6, 0.9], "recall": [0.8123, 0.7]},
                                   "class_names": ["a", "b"], "confusion_matrix": [[3, 1], [2, 4]]}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = report.write_report(tmp_path).read_text()
    assert "0.7021" in text and "| a | 0.6000 | 0.8123 |" in text
    assert "## Segmentation" not in text
    seg_only = tmp_path / "seg"
    seg_only.mkdir()
    (seg_only / "metrics.json").write_text(json.dumps({"segmentation": {"dice": 0.6543, "num_cases": 4}}))
    text = report.write_report(seg_only).read_text()
    assert "0.6543" in text and "## Classification" not in text and "synthetic phantoms" not in text


def test_write_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        report.write_report(tmp_path)
    (tmp_path / "metrics.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        report.write_report(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"meta": {}}))
    with pytest.raises(ValueError, match="no classification, segmentation or FCMAE pretraining results"):
        report.write_report(tmp_path)
