"""Figures and ``report.md`` from a workdir's evaluation results.

The figures mirror the paper's: confusion matrix (its Fig. 8), model comparison bars (Fig. 9) and
scan / ground truth / prediction rows (Fig. 10), plus training curves. Matplotlib is used through its
object API with the Agg canvas (no pyplot, no global backend state), so this runs headless and in
threads.

``write_report(workdir)`` reads ``WORKDIR/metrics.json`` -- ``{"classification": {...},
"segmentation": {...}, "meta": {...}}``, either task section may be absent -- draws what it can
(confusion matrix, training curves from ``WORKDIR/metrics.jsonl``, model comparison from an optional
``"comparison"`` section), embeds every PNG in ``WORKDIR`` and ``WORKDIR/figures`` and writes
``WORKDIR/report.md`` with an explicit section on how (not) to compare the numbers with the paper.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

FIGURES_DIR = "figures"
_FMT = "{:.4f}"


def _figure(width_in: float, height_in: float, dpi: int = 100):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------------------------ figures


def confusion_matrix_png(
    cm: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = False,
) -> Path:
    """Annotated confusion matrix, rows = true class, columns = predicted class.

    With ``normalize`` each row is divided by its total (per-class recall on the diagonal) and the
    cells show the fraction with the raw count beneath it.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {k} class names {list(class_names)}")
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    side = 1.4 + 0.9 * k
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1.0 if normalize else max(float(cm.max()), 1.0))
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), labels=list(class_names), rotation=30, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    thresh = (1.0 if normalize else max(float(cm.max()), 1.0)) / 2
    for i in range(k):
        for j in range(k):
            count = int(round(cm[i, j]))
            text = f"{shown[i, j]:.2f}\n({count})" if normalize else f"{count}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if shown[i, j] > thresh else "black")
    return _save(fig, path)


def _spacing_for(spacing_mm, i: int) -> tuple[float, float] | None:
    """Case ``i``'s (row, col) spacing from one pair for all cases or a per-case list (None allowed)."""
    if spacing_mm is None or len(spacing_mm) == 0:
        return None
    if np.ndim(spacing_mm[0]) == 0:  # a single (row, col) pair
        entry = spacing_mm
    else:
        entry = spacing_mm[i]
    if entry is None:
        return None
    pair = np.asarray(entry, np.float64).reshape(-1)
    if pair.shape != (2,) or not np.all(np.isfinite(pair)) or np.any(pair <= 0):
        return None
    return float(pair[0]), float(pair[1])


def _area_text(mask: np.ndarray, spacing) -> str:
    n = int(np.count_nonzero(mask))
    if spacing is None:
        return f"{n} px"
    return f"{n * spacing[0] * spacing[1]:.1f} mm²"


def _show_mask(ax, image, mask, color, spacing, title):
    aspect = spacing[0] / spacing[1] if spacing else 1.0
    ax.imshow(image, cmap="gray", aspect=aspect, interpolation="nearest")
    m = np.asarray(mask) > 0
    if m.any():
        rgba = np.zeros(m.shape + (4,), np.float32)
        rgba[m] = (*color, 0.35)
        ax.imshow(rgba, aspect=aspect, interpolation="nearest")
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.2)
    ax.set_title(title, fontsize=9)


def overlays_png(
    images: Sequence[np.ndarray],
    masks_true: Sequence[np.ndarray | None] | None,
    masks_pred: Sequence[np.ndarray],
    path: str | Path,
    spacing_mm=None,
    titles: Sequence[str] | None = None,
) -> Path:
    """One row per case: scan / ground truth / prediction (translucent fill + contour).

    ``spacing_mm`` is one (row, col) pair for all cases or one per case; with it the pixels are drawn
    with their physical aspect ratio and the panel titles give the tumour area in mm², else in pixels.
    A case without ground truth (``None``) shows an empty panel marked so.
    """
    n = len(images)
    if n == 0:
        raise ValueError("overlays_png: no images given")
    if len(masks_pred) != n or (masks_true is not None and len(masks_true) != n):
        raise ValueError(
            f"overlays_png: {n} images but {len(masks_pred)} predicted and "
            f"{'no' if masks_true is None else len(masks_true)} true masks"
        )
    if titles is not None and len(titles) != n:
        raise ValueError(f"overlays_png: {n} images but {len(titles)} titles")
    fig = _figure(9.0, 3.0 * n)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        img = np.asarray(images[i], np.float32)
        if img.ndim == 3:
            img = img.mean(axis=-1)
        sp = _spacing_for(spacing_mm, i)
        pred = np.asarray(masks_pred[i])
        true = None if masks_true is None else masks_true[i]
        if pred.shape != img.shape or (true is not None and np.asarray(true).shape != img.shape):
            raise ValueError(f"overlays_png: case {i}: image {img.shape}, masks must have the same shape")
        name = titles[i] if titles else f"case {i}"
        _show_mask(axes[i, 0], img, np.zeros_like(pred), (0, 0, 0), sp, f"{name}: scan")
        if true is None:
            _show_mask(axes[i, 1], img, np.zeros_like(pred), (0, 0, 0), sp, "ground truth: not available")
        else:
            _show_mask(axes[i, 1], img, true, (0.1, 0.85, 0.2), sp, f"ground truth ({_area_text(true, sp)})")
        extra = ""
        if true is not None:
            t, p = np.asarray(true) > 0, pred > 0
            denom = t.sum() + p.sum()
            extra = f", Dice {2 * np.logical_and(t, p).sum() / denom:.3f}" if denom else ", both empty"
        _show_mask(axes[i, 2], img, pred, (0.95, 0.15, 0.1), sp, f"prediction ({_area_text(pred, sp)}{extra})")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)


_SKIP_CURVE_KEYS = {"step", "global_step", "epoch", "time", "timestamp", "wall_time", "elapsed_s"}
# Evaluation scores worth a curve (matched on the last "/"-separated part of a key).
_CURVE_SCORES = ("accuracy", "macro_f1", "dice", "iou", "miou")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (expected one JSON object per line)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: empty training log")
    return rows


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def training_curves_png(metrics_jsonl_path: str | Path, path: str | Path) -> Path:
    """Loss, evaluation scores and (if logged) surface distances against step from a JSON-lines log.

    Keys are grouped on their last "/"-separated part: "...loss" -> loss panel; accuracy, macro_f1,
    dice, iou, miou -> scores panel (any other key with values in [0, 1] when none of these is
    logged); "..._mm" -> distance panel. Counts, learning rate and throughput are left out. Lines
    without a ``step`` use their line order.
    """
    rows = _read_jsonl(Path(metrics_jsonl_path))
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, row in enumerate(rows):
        step = row.get("step", row.get("global_step", i))
        # The trainer's rows carry "split": "train" | "eval"; keep those series apart.
        prefix = f"{row['split']}/" if isinstance(row.get("split"), str) else ""
        for k, v in row.items():
            if k in _SKIP_CURVE_KEYS or not _is_number(v):
                continue
            k = prefix + k
            xs, ys = series.setdefault(k, ([], []))
            xs.append(float(step))
            ys.append(float(v))
    last = {k: k.split("/")[-1].lower() for k in series}
    losses = {k: v for k, v in series.items() if "loss" in last[k]}
    scores = {k: v for k, v in series.items() if last[k] in _CURVE_SCORES}
    if not scores:
        scores = {k: v for k, v in series.items()
                  if k not in losses and not last[k].startswith("num_") and last[k] not in ("lr", "learning_rate")
                  and "per_s" not in last[k] and all(0.0 <= y <= 1.0 for y in v[1])}
    dists = {k: v for k, v in series.items() if last[k].endswith("_mm")}
    if not (losses or scores or dists):
        raise ValueError(f"{metrics_jsonl_path}: no loss, score or distance series to plot")
    panels = [(losses, "loss"), (scores, "scores")] + ([(dists, "surface distance (mm)")] if dists else [])
    fig = _figure(5.5 * len(panels), 4.0)
    for ax, (group, title) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for k, (xs, ys) in sorted(group.items()):
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=k)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "none logged", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def model_comparison_png(results: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Grouped bars of accuracy and macro-F1 per model (the paper's Fig. 9), values printed on top."""
    if not results:
        raise ValueError("model_comparison_png: no results given")
    names = list(results)
    keys = [k for k in ("accuracy", "macro_f1") if any(_is_number(results[n].get(k)) for n in names)]
    if not keys:
        raise ValueError("model_comparison_png: results carry neither 'accuracy' nor 'macro_f1'")
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig = _figure(1.8 + 1.5 * len(names), 4.0)
    ax = fig.add_subplot()
    lo = 1.0
    for j, key in enumerate(keys):
        vals = [float(results[n].get(key, np.nan)) for n in names]
        bars = ax.bar(x + (j - (len(keys) - 1) / 2) * width, vals, width, label=key)
        ax.bar_label(bars, labels=[f"{v:.3f}" if math.isfinite(v) else "n/a" for v in vals], fontsize=8)
        lo = min([lo] + [v for v in vals if math.isfinite(v)])
    ax.set_xticks(x, labels=names)
    bottom = max(0.0, lo - 0.1)
    ax.set_ylim(bottom, 1.0 + 0.12 * (1.0 - bottom))
    ax.set_ylabel("score" + (f" (axis starts at {bottom:.2f})" if bottom > 0 else ""))
    ax.set_title("model comparison (test split)")
    ax.legend(loc="upper right", ncol=len(keys), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ report


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _FMT.format(v) if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v):
        return f"[{_fmt(float(v[0]))}, {_fmt(float(v[1]))}]"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def _class_names(cls: Mapping[str, Any], meta: Mapping[str, Any], k: int | None) -> list[str]:
    for src in (cls, meta):
        names = src.get("class_names")
        if isinstance(names, (list, tuple)) and (k is None or len(names) == k):
            return [str(n) for n in names]
    try:
        from input_pipeline import CLASS_NAMES

        if k is None or len(CLASS_NAMES) == k:
            return list(CLASS_NAMES)
    except ImportError:
        pass
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


def _classification_section(cls: Mapping[str, Any], meta: Mapping[str, Any], fig_dir: Path) -> list[str]:
    out = ["## Classification", ""]
    main = [(k, cls[k]) for k in _CLS_MAIN if k in cls]
    extra = [(k, v) for k, v in cls.items()
             if k not in _CLS_MAIN and k not in ("per_class", "confusion_matrix", "class_names")
             and (_is_number(v) or isinstance(v, str) and len(v) < 80)]
    out += _table(["metric", "value"], main + extra) + [""]
    cm = cls.get("confusion_matrix")
    k = len(cm) if isinstance(cm, list) else None
    names = _class_names(cls, meta, k)
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
    out = ["## Segmentation", ""]
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
        if k not in used and (_is_number(v) or isinstance(v, str) and len(v) < 200
                              or isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)):
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


# The paper's headline numbers (REFERENCE.md), for the side-by-side table.
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
            "columns do not measure the same thing (see below).", ""] + _table(["quantity", "paper", "this run"], rows) + [""]


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


def write_report(workdir: str | Path) -> Path:
    """Write ``WORKDIR/report.md`` (and figures under ``WORKDIR/figures``); return its path."""
    workdir = Path(workdir)
    mpath = workdir / "metrics.json"
    if not mpath.is_file():
        raise FileNotFoundError(
            f"{mpath}: no metrics.json; run `brain-jax eval --config ... --workdir {workdir}` first"
        )
    try:
        metrics = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{mpath}: expected a JSON object with 'classification'/'segmentation'/'meta'")
    cls, seg, meta = (metrics.get(k) or {} for k in ("classification", "segmentation", "meta"))
    for key, sec in (("classification", cls), ("segmentation", seg), ("meta", meta)):
        if not isinstance(sec, dict):
            raise ValueError(f"{mpath}: '{key}' should be an object, got {type(sec).__name__}")
    if not cls and not seg:
        raise ValueError(f"{mpath}: neither a 'classification' nor a 'segmentation' section")
    fig_dir = workdir / FIGURES_DIR

    title = meta.get("model") or meta.get("model_name") or workdir.name
    lines = [f"# brain-jax results: {title}", ""]
    if meta:
        lines += ["## Run", ""] + _table(["field", "value"], [[k, v] for k, v in meta.items()
                                                              if not isinstance(v, (dict, list)) or len(str(v)) < 120]) + [""]
    if cls:
        lines += _classification_section(cls, meta, fig_dir)
    if seg:
        lines += _segmentation_section(seg)
    comparison = metrics.get("comparison")
    if isinstance(comparison, dict) and comparison:
        model_comparison_png(comparison, fig_dir / "model_comparison.png")
        keys = ["accuracy", "macro_f1"]
        lines += ["## Model comparison", ""]
        lines += _table(["model"] + keys, [[n] + [r.get(k, "") for k in keys] for n, r in comparison.items()]) + [""]
    log = workdir / "metrics.jsonl"
    if log.is_file():
        try:
            training_curves_png(log, fig_dir / "training_curves.png")
        except ValueError as e:
            lines += [f"(training curves not drawn: {e})", ""]

    figs = sorted(p for d in (workdir, fig_dir) if d.is_dir() for p in d.glob("*.png"))
    if figs:
        lines += ["## Figures", ""]
        for p in figs:
            rel = p.relative_to(workdir).as_posix()
            caption = _FIG_CAPTIONS.get(p.name, p.stem.replace("_", " "))
            lines += [f"![{caption}]({rel})", "", f"*{caption}* (`{rel}`)", ""]
    lines += _how_to_read(meta, cls, seg)
    out = workdir / "report.md"
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out


def report(args) -> int:
    """``brain-jax report --workdir DIR`` handler."""
    path = write_report(args.workdir)
    print(f"wrote {path}")
    return 0
