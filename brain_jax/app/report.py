"""``report.md`` from a workdir's evaluation results, with the figures and how to read them.

``write_report(workdir)`` reads ``metrics.json`` (any schema version, through ``brain_jax.workdir``),
leads each task with its test split (else the last split evaluated), lists the other splits, draws
what it can (confusion matrix, training curves from ``metrics.jsonl``, model comparison from an
optional ``"comparison"`` section), embeds every PNG in the workdir and its ``figures/`` and ends with
an explicit section on how (not) to compare the numbers with the paper.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brain_jax import workdir
from brain_jax.app.figures import is_number, confusion_matrix_png, model_comparison_png, training_curves_png

_FMT = "{:.4f}"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _FMT.format(v) if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(x) for x in v):
        return f"[{_fmt(float(v[0]))}, {_fmt(float(v[1]))}]"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def _class_names(cls: Mapping[str, Any], wd: Path, k: int | None) -> list[str]:
    """The summary's own names (``class_names``, else the keys of a per-class table); else the run's config."""
    names = cls.get("class_names")
    per_class = cls.get("per_class")
    if not isinstance(names, (list, tuple)) and isinstance(per_class, Mapping) and per_class \
            and all(isinstance(v, Mapping) for v in per_class.values()):
        names = list(per_class)
    if isinstance(names, (list, tuple)) and (k is None or len(names) == k):
        return [str(n) for n in names]
    if workdir.has_run(wd):
        from brain_jax.train.builders import class_names  # only for old metrics.json: keeps start-up light

        names = class_names(workdir.read_config(wd))
        if k is None or len(names) == k:
            return list(names)
    return [f"class {i}" for i in range(k or 0)]


def _per_class_rows(per_class: Any, names: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Accept {class: {metric: v}} or {metric: [v per class]}; return (metric names, rows)."""
    if not isinstance(per_class, Mapping) or not per_class:
        return [], []
    first = next(iter(per_class.values()))
    if isinstance(first, Mapping):
        metrics = list(dict.fromkeys(m for d in per_class.values() for m in d))
        return metrics, [[c] + [d.get(m, "") for m in metrics] for c, d in per_class.items()]
    metrics = list(per_class)
    k = max(len(v) for v in per_class.values() if isinstance(v, (list, tuple)))
    names = names if len(names) == k else [f"class {i}" for i in range(k)]
    return metrics, [[names[i]] + [per_class[m][i] for m in metrics] for i in range(k)]


_CLS_MAIN = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1", "weighted_precision",
             "weighted_recall", "balanced_accuracy", "ece", "num_examples")
_SEG_LABELS = {
    "dice": "Dice (mean over cases)",
    "iou": "IoU (mean over cases)",
    "miou": "mIoU (pooled counts, background + tumour)",
    "hd95_mm": "HD95 (mm, mean over cases)",
    "hd_mm": "Hausdorff (mm, mean over cases)",
    "hd95_mm_detected": "HD95 (mm, detected cases only)",
    "hd_mm_detected": "Hausdorff (mm, detected cases only)",
}
_SEG_CI = {"dice": ("dice_ci95", "dice_ci"), "hd95_mm": ("hd95_mm_ci95", "hd95_mm_ci")}
_SEG_COUNTS = {
    "num_cases": "n",
    "num_missed": "missed (both kinds)",
    "num_missed_tumour": "missed tumours",
    "num_false_alarm": "false alarms",
    "num_empty_both": "both empty",
}


def _splits_line(metrics: Mapping[str, Any], task: str, shown: str) -> list[str]:
    others = [s for s in metrics.get(task, {}) if s != shown]
    line = f"Split: `{shown}`."
    if others:
        line += " Also evaluated (in metrics.json): " + ", ".join(f"`{s}`" for s in others) + "."
    return [line, ""]


def _classification_section(cls: Mapping[str, Any], wd: Path, fig_dir: Path) -> list[str]:
    out = []
    main = [(k, cls[k]) for k in _CLS_MAIN if k in cls]
    extra = [(k, v) for k, v in cls.items()
             if k not in _CLS_MAIN and k not in ("per_class", "confusion_matrix", "class_names")
             and (is_number(v) or isinstance(v, str) and len(v) < 80)]
    out += _table(["metric", "value"], main + extra) + [""]
    cm = cls.get("confusion_matrix")
    k = len(cm) if isinstance(cm, list) else None
    names = _class_names(cls, wd, k)
    per_class = cls.get("per_class")
    if not per_class:  # classification_summary's flat layout: per-class vectors at the top level
        per_class = {m: cls[m] for m in ("precision", "recall", "f1", "support")
                     if isinstance(cls.get(m), list) and len(cls[m]) == len(names)}
    metrics, rows = _per_class_rows(per_class, names)
    if rows:
        out += ["### Per class", ""] + _table(["class"] + metrics, rows) + [""]
    if cm is not None:
        arr = np.asarray(cm)
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and len(names) == arr.shape[0]:
            confusion_matrix_png(arr, names, fig_dir / "confusion_matrix.png")
            confusion_matrix_png(arr, names, fig_dir / "confusion_matrix_normalized.png", normalize=True)
            out += ["### Confusion matrix (rows: true class, columns: predicted)", ""]
            out += _table(["true \\ predicted"] + names, [[n] + [int(x) for x in r] for n, r in zip(names, arr)])
            out += [""]
        else:
            out += [f"(confusion matrix of shape {arr.shape} could not be drawn with class names {names})", ""]
    return out


def _segmentation_section(seg: Mapping[str, Any]) -> list[str]:
    out = []
    counts = "; ".join(f"{label} {seg[k]}" for k, label in _SEG_COUNTS.items() if k in seg)
    rows, used = [], set(_SEG_COUNTS)
    for k, label in _SEG_LABELS.items():
        if k not in seg:
            continue
        value = _fmt(seg[k])
        for ci_key in _SEG_CI.get(k, ()):
            if ci_key in seg:
                value += f" (95% CI {_fmt(seg[ci_key])})"
                used.add(ci_key)
                break
        rows.append([label, value, counts])
        used.add(k)
    if isinstance(seg.get("iou_per_class"), list):
        rows.append(["IoU per class (background, tumour)", ", ".join(_fmt(float(v)) for v in seg["iou_per_class"]), ""])
        used.add("iou_per_class")
    for k, v in seg.items():
        if k not in used and (is_number(v) or isinstance(v, str) and len(v) < 200
                              or isinstance(v, list) and len(v) == 2 and all(is_number(x) for x in v)):
            rows.append([k, v, ""])
    out += _table(["metric", "value", "cases behind the mean"], rows) + [""]
    out += [
        "n: evaluated slices with a ground-truth mask; missed: exactly one of prediction and ground "
        "truth is empty, split into missed tumours (empty prediction) and false alarms (tumour "
        "predicted on a slice without one); both empty: neither has tumour. By the "
        "metrics code's convention a miss scores Dice 0 and the image diagonal as its distance, a "
        "both-empty case Dice 1 and distance 0; the \"detected cases only\" rows leave both kinds "
        "out. Means are over slices, not pixels: read each mean together with these counts.",
        "",
    ]
    return out


_FIG_CAPTIONS = {
    "confusion_matrix.png": "Confusion matrix, counts (rows true, columns predicted).",
    "confusion_matrix_normalized.png": "Confusion matrix, row-normalised (diagonal = per-class recall).",
    "training_curves.png": "Training loss and evaluation metrics against step.",
    "model_comparison.png": "Accuracy and macro-F1 per model on the same test split.",
    "overlays.png": "Scan / ground truth / prediction for a few test cases.",
}


# The paper's headline numbers (its abstract, Table I and Table II), for the side-by-side table.
_PAPER = (
    ("classification", "accuracy", "accuracy (ConvNeXt V2)", "0.9960"),
    ("classification", "macro_f1", "macro-F1", "not reported"),
    ("segmentation", "dice", "Dice (SegFormer)", "0.90-0.95"),
    ("segmentation", "hd_mm", "Hausdorff distance (mm)", "0.87"),
)


def _paper_table(cls: Mapping[str, Any], seg: Mapping[str, Any]) -> list[str]:
    sections = {"classification": cls, "segmentation": seg}
    rows = [[label, paper, sections[sec][key]] for sec, key, label, paper in _PAPER if key in sections[sec]]
    if not rows:
        return []
    return ["The paper's headline numbers beside this run's, only so the gap is visible: the two "
            "columns do not measure the same thing (see below).", ""] \
        + _table(["quantity", "paper", "this run"], rows) + [""]


def _how_to_read(meta: Mapping[str, Any], cls: Mapping[str, Any], seg: Mapping[str, Any]) -> list[str]:
    dataset = str(meta.get("dataset", meta.get("data", "")) or "")
    out = ["## How to read this", ""]
    if "phantom" in dataset.lower():
        out += [
            f"**These numbers come from `{dataset}`, synthetic phantoms drawn by code, not patients.** "
            "They show that the pipeline trains, evaluates and reports end to end; they say nothing "
            "about diagnostic performance on MRI.",
            "",
        ]
    out += _paper_table(cls, seg)
    split_by = meta.get("split_by")
    split_note = f" This run: `split_by` = `{split_by}`." if split_by else ""
    out += [
        "- Splits: `split_by=group` pools the sources and splits by patient (Figshare PIDs) or by "
        "duplicate group after exact + perceptual de-duplication, so no slice of a test patient and no "
        "copy of a test image is seen in training. `split_by=builder` uses each dataset's own splits: "
        "patient-disjoint for the phantoms and the Figshare `cvind` folds, but the Kaggle "
        "Training/Testing folders carry no patient ids and can share copies of a slice (check with "
        "`brain-jax data audit`)." + split_note,
        "- The paper reports 99.60% accuracy for ConvNeXt V2 (ConvNeXt V1 99.11%, Swin 99.01%, ViT 98.5%) "
        "and Dice 0.90-0.95 with a 0.87 mm Hausdorff distance for SegFormer on Figshare. Its "
        "classification pool (~15,000 images) merged Figshare with Kaggle sets that already contain the "
        "Figshare slices, so the same slice can appear up to ~4 times, and the split was random at "
        "slice level: near-copies of test images were in training. Yagis et al. (2021, Sci Rep) showed "
        "that slice-level splits inflate accuracy by 29-55 points; published patient-wise Figshare "
        "results sit around 91-98% (unverified literature figures).",
        "- Our numbers are therefore not comparable with the paper's and are expected to be lower. "
        "A gap is not by itself a reimplementation error; a match would need the same leaky split.",
        "- Segmentation means are per slice; the miss counts beside them matter as much as the means, "
        "because a model that outputs nothing on hard cases can keep a good mean over the rest.",
        "- Distances are in millimetres from each slice's pixel spacing (0.49 mm at 512 px for Figshare). "
        "The paper's 0.87 mm Hausdorff distance is under two native pixels and the paper does not say "
        "how it was computed or averaged, so that row of the table is not comparable either.",
        "",
    ]
    return out


def write_report(wd: str | Path) -> Path:
    """Write ``WORKDIR/report.md`` (and figures under ``WORKDIR/figures``); return its path."""
    wd = Path(wd)
    metrics = workdir.read_metrics(wd)
    meta = metrics.get("meta", {})
    cls = workdir.headline(metrics, "classification")
    seg = workdir.headline(metrics, "segmentation")
    if cls is None and seg is None:
        raise ValueError(f"{wd / workdir.METRICS}: no classification or segmentation results")
    fig_dir = wd / workdir.FIGURES

    title = meta.get("model") or meta.get("model_name") or wd.name
    lines = [f"# brain-jax results: {title}", ""]
    if meta:
        shown = [[k, v] for k, v in meta.items() if not isinstance(v, (dict, list)) or len(str(v)) < 120]
        lines += ["## Run", ""] + _table(["field", "value"], shown) + [""]
    if cls is not None:
        lines += ["## Classification", ""] + _splits_line(metrics, "classification", cls[0])
        lines += _classification_section(cls[1], wd, fig_dir)
    if seg is not None:
        lines += ["## Segmentation", ""] + _splits_line(metrics, "segmentation", seg[0])
        lines += _segmentation_section(seg[1])
    comparison = metrics.get("comparison")
    if isinstance(comparison, dict) and comparison:
        model_comparison_png(comparison, fig_dir / "model_comparison.png")
        keys = ["accuracy", "macro_f1"]
        lines += ["## Model comparison", ""]
        lines += _table(["model"] + keys, [[n] + [r.get(k, "") for k in keys] for n, r in comparison.items()]) + [""]
    if (wd / workdir.METRICS_LOG).is_file():
        try:
            training_curves_png(wd / workdir.METRICS_LOG, fig_dir / "training_curves.png")
        except ValueError as e:
            lines += [f"(training curves not drawn: {e})", ""]

    figs = sorted(p for d in (wd, fig_dir) if d.is_dir() for p in d.glob("*.png"))
    if figs:
        lines += ["## Figures", ""]
        for p in figs:
            rel = p.relative_to(wd).as_posix()
            caption = _FIG_CAPTIONS.get(p.name, p.stem.replace("_", " "))
            lines += [f"![{caption}]({rel})", "", f"*{caption}* (`{rel}`)", ""]
    lines += _how_to_read(meta, cls[1] if cls else {}, seg[1] if seg else {})
    out = wd / workdir.REPORT
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out
