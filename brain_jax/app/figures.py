"""Figures of evaluation results, mirroring the paper's: confusion matrix (its Fig. 8), model comparison
bars overall and per class (Fig. 9) and scan / ground truth / prediction rows (Fig. 10), plus training
curves and forest plots of estimates with their intervals (pairwise differences, leakage study, folds).
Scans with masks and heat maps are painted by one function, ``overlay_rgb`` (``predict``'s and ``explain``'s
overlays, Fig. 10, the saliency panel of ``eval --explain`` and the demo).

Matplotlib is used through its object API with the Agg canvas (no pyplot, no global backend state), so
this runs headless and in threads.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brain_jax.workdir import CONFUSION_MATRIX_NORMALIZED_PNG, CONFUSION_MATRIX_PNG, read_log


def _figure(width_in: float, height_in: float, dpi: int = 100):
    from matplotlib.figure import Figure  # here, not at the top: matplotlib costs ~1 s of start-up

    return Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ----------------------------------------------------------------------------------------- overlays

PREVIEW_PERCENTILE = 99.5  # intensity window of every drawn scan: [minimum, this percentile]
TRUE_GREEN = (40, 220, 60)  # ground-truth mask (predict's overlays, Fig. 10)
PRED_RED = (255, 40, 30)  # predicted mask
MASK_GREEN = (38, 229, 63)  # the file's tumour mask under a saliency map
HEAT_ALPHA = 0.45  # weight of a heat map's colours over the scan
FILL_ALPHA = 0.35  # weight of a mask's colour inside it (Fig. 10)
DISPLAY_PERCENTILE = 99.0  # heat maps are drawn on [0, this percentile]: one hot pixel does not blank the rest


def scan_gray(image: np.ndarray) -> np.ndarray:
    """A scan in [0, 1] for drawing: minimum -> 0, ``PREVIEW_PERCENTILE`` -> 1, clipped."""
    lo, hi = float(image.min()), float(np.percentile(image, PREVIEW_PERCENTILE))
    return np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def overlay_rgb(image: np.ndarray, masks: Sequence[tuple[np.ndarray | None, tuple[int, int, int]]] = (), *,
                heat: np.ndarray | None = None, alpha: float = HEAT_ALPHA, fill: float = 0.0,
                outline_px: int | None = None) -> np.ndarray:
    """8-bit RGB of a 2-D scan (``scan_gray``), optionally under a heat map (``heat`` in [0, 1], jet colours,
    weight ``alpha``), with each ``(mask, colour)`` outlined in that 8-bit colour (later ones on top), filled
    at weight ``fill``. Outlines are ``outline_px`` wide (default: 1 px, 2 px on images of 256 px or more).

    The one painter of scans and masks: ``predict``'s and ``explain``'s overlays, the saliency panel, Fig. 10.
    """
    from scipy import ndimage

    gray = scan_gray(image)
    if heat is None:
        rgb = np.repeat((gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
    else:
        import matplotlib

        colour = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
        mixed = (1 - alpha) * np.repeat(gray[..., None], 3, axis=-1) + alpha * colour
        rgb = (np.clip(mixed, 0, 1) * 255).astype(np.uint8)
    width = outline_px or (1 if min(image.shape) < 256 else 2)
    for mask, colour in masks:
        if mask is None or not np.any(mask):
            continue
        m = np.asarray(mask) > 0
        if fill:
            rgb[m] = np.rint((1 - fill) * rgb[m] + fill * np.asarray(colour, np.float64)).astype(np.uint8)
        rgb[m & ~ndimage.binary_erosion(m, iterations=width, border_value=0)] = colour
    return rgb


def display_map(heat: np.ndarray) -> np.ndarray:
    """A non-negative heat map at the scan's size -> [0, 1] for drawing, scaled to its ``DISPLAY_PERCENTILE``."""
    top = float(np.percentile(heat, DISPLAY_PERCENTILE))
    top = top if top > 0 else float(heat.max())
    return np.clip(heat / top, 0, 1) if top > 0 else heat


def saliency_panel_png(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], path: str | Path) -> Path:
    """One row per case: the scan (mask outlined), then per method the map for the predicted class and,
    when any case's prediction is wrong, a column for the true class's map (filled on those rows).
    ``rows``: image, mask, title, maps {method: {"pred": map, "true": map or None}} (``display_map`` scale)."""
    from matplotlib.figure import Figure  # here, not at the top: matplotlib costs ~1 s of start-up

    per = 2 if any(row["maps"][m]["true"] is not None for row in rows for m in methods) else 1
    cols = 1 + per * len(methods)
    fig = Figure(figsize=(1.8 * cols, 1.95 * len(rows)))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        # an all-zero heat map at weight 0: the scan as the heat-map columns draw it
        axes[r, 0].imshow(overlay_rgb(row["image"], [(row["mask"], MASK_GREEN)], heat=np.zeros(row["image"].shape),
                                      alpha=0.0, outline_px=1))
        axes[r, 0].set_title(row["title"], fontsize=6.5)
        for j, m in enumerate(methods):
            for k, which in enumerate(("pred", "true")[:per]):
                ax = axes[r, 1 + per * j + k]
                heat = row["maps"][m][which]
                if heat is None:
                    ax.axis("off")
                    continue
                ax.imshow(overlay_rgb(row["image"], [(row["mask"], MASK_GREEN)], heat=heat, outline_px=1))
                ax.set_title(f"{m}, {'true' if which == 'true' else 'predicted'} class", fontsize=6.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
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


def confusion_matrix_pngs(cm: Sequence[Sequence[float]] | np.ndarray, class_names: Sequence[str],
                          fig_dir: str | Path, *, normalized: bool = True) -> list[Path]:
    """The one writer of a run's confusion-matrix figures: ``CONFUSION_MATRIX_PNG`` (counts) in ``fig_dir``
    and, with ``normalized``, ``CONFUSION_MATRIX_NORMALIZED_PNG`` (rows divided by their totals)."""
    fig_dir = Path(fig_dir)
    paths = [confusion_matrix_png(cm, class_names, fig_dir / CONFUSION_MATRIX_PNG)]
    if normalized:
        paths.append(confusion_matrix_png(cm, class_names, fig_dir / CONFUSION_MATRIX_NORMALIZED_PNG, normalize=True))
    return paths


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
    ax.imshow(overlay_rgb(image, [(mask, color)], fill=FILL_ALPHA), aspect=aspect, interpolation="nearest")
    ax.set_title(title, fontsize=9)


def overlays_png(
    images: Sequence[np.ndarray],
    masks_true: Sequence[np.ndarray | None] | None,
    masks_pred: Sequence[np.ndarray],
    path: str | Path,
    spacing_mm=None,
    titles: Sequence[str] | None = None,
) -> Path:
    """One row per case: scan / ground truth / prediction (translucent fill + outline, ``overlay_rgb``).

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
            _show_mask(axes[i, 1], img, true, TRUE_GREEN, sp, f"ground truth ({_area_text(true, sp)})")
        extra = ""
        if true is not None:
            t, p = np.asarray(true) > 0, pred > 0
            denom = t.sum() + p.sum()
            extra = f", Dice {2 * np.logical_and(t, p).sum() / denom:.3f}" if denom else ", both empty"
        _show_mask(axes[i, 2], img, pred, PRED_RED, sp, f"prediction ({_area_text(pred, sp)}{extra})")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)


_SKIP_CURVE_KEYS = {"step", "global_step", "epoch", "time", "timestamp", "wall_time", "elapsed_s"}
# Evaluation scores worth a curve (matched on the last "/"-separated part of a key).
_CURVE_SCORES = ("accuracy", "macro_f1", "dice", "iou", "miou")


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def training_curves_png(metrics_jsonl_path: str | Path, path: str | Path) -> Path:
    """Loss, evaluation scores and (if logged) surface distances against step from a JSON-lines log.

    Keys are grouped on their last "/"-separated part: "...loss" -> loss panel; accuracy, macro_f1,
    dice, iou, miou -> scores panel (any other key with values in [0, 1] when none of these is
    logged); "..._mm" -> distance panel. Counts, learning rate and throughput are left out. Lines
    without a ``step`` use their line order.
    """
    rows = read_log(metrics_jsonl_path)
    if not rows:
        raise ValueError(f"{metrics_jsonl_path}: empty training log")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, row in enumerate(rows):
        step = row.get("step", row.get("global_step", i))
        # The trainer's rows carry "split": "train" | "eval"; keep those series apart.
        prefix = f"{row['split']}/" if isinstance(row.get("split"), str) else ""
        for k, v in row.items():
            if k in _SKIP_CURVE_KEYS or not is_number(v):
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


def model_comparison_png(results: Mapping[str, Mapping[str, float]], path: str | Path,
                         intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                         keys: Sequence[str] = ("accuracy", "macro_f1")) -> Path:
    """Grouped bars of ``keys`` (default accuracy and macro-F1) per model (the paper's Fig. 9), values printed
    on top; ``intervals[model][key]`` = (low, high) adds error bars."""
    if not results:
        raise ValueError("model_comparison_png: no results given")
    names = list(results)
    keys = [k for k in keys if any(is_number(results[n].get(k)) for n in names)]
    if not keys:
        raise ValueError(f"model_comparison_png: results carry none of {list(keys)}")
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig = _figure(1.8 + 1.5 * len(names), 4.0)
    ax = fig.add_subplot()
    lo = 1.0
    for j, key in enumerate(keys):
        vals = [float(results[n].get(key, np.nan)) for n in names]
        err = _yerr(vals, [(intervals or {}).get(n, {}).get(key) for n in names])
        bars = ax.bar(x + (j - (len(keys) - 1) / 2) * width, vals, width, label=key, yerr=err, capsize=3)
        ax.bar_label(bars, labels=[f"{v:.3f}" if math.isfinite(v) else "n/a" for v in vals], fontsize=8)
        shown = [v for v in vals if math.isfinite(v)] + ([] if err is None else list(np.subtract(vals, err[0])))
        lo = min([lo] + [v for v in shown if math.isfinite(v)])
    ax.set_xticks(x, labels=names)
    bottom = max(0.0, lo - 0.1)
    ax.set_ylim(bottom, 1.0 + 0.12 * (1.0 - bottom))
    ax.set_ylabel("score" + (f" (axis starts at {bottom:.2f})" if bottom > 0 else ""))
    ax.set_title("model comparison (test split)" + (", 95% intervals" if intervals else ""))
    ax.legend(loc="upper right", ncol=len(keys), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _yerr(values: Sequence[float], bounds: Sequence[Sequence[float] | None]) -> np.ndarray | None:
    """matplotlib's (2, n) error-bar lengths from (low, high) pairs; None when no pair is known."""
    if all(b is None for b in bounds):
        return None
    err = np.zeros((2, len(values)))
    for i, (v, b) in enumerate(zip(values, bounds)):
        if b is not None and all(is_number(x) for x in b) and math.isfinite(v):
            err[:, i] = (max(0.0, v - b[0]), max(0.0, b[1] - v))
    return err


def per_class_bars_png(per_class: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
                       class_names: Sequence[str], path: str | Path,
                       metrics: Sequence[str] = ("precision", "recall", "f1")) -> Path:
    """The paper's Fig. 9 per class: one panel per metric, classes on the x axis, one bar per model with
    its 95 % interval. ``per_class[model][metric]`` = {"estimate", "low", "high"} lists over classes."""
    if not per_class:
        raise ValueError("per_class_bars_png: no models given")
    models, k = list(per_class), len(class_names)
    fig = _figure(1.5 + len(metrics) * max(3.0, 0.35 * k * len(models)), 4.0)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    width = 0.8 / len(models)
    x = np.arange(k)
    for ax, metric in zip(axes, metrics):
        lo = 1.0
        for j, m in enumerate(models):
            e = per_class[m][metric]
            est = np.asarray(e["estimate"], np.float64)
            err = _yerr(est.tolist(), list(zip(e["low"], e["high"])))
            ax.bar(x + (j - (len(models) - 1) / 2) * width, est, width, yerr=err, capsize=2, label=m)
            lo = min(lo, float(np.nanmin(est - (0 if err is None else err[0]))))
        bottom = max(0.0, lo - 0.05)
        ax.set_ylim(bottom, 1.0 + 0.05 * (1.0 - bottom))
        ax.set_xticks(x, labels=list(class_names), rotation=20, ha="right")
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def forest_png(rows: Sequence[tuple[str, float, float, float]], path: str | Path, *, title: str, xlabel: str,
               reference: float | None = 0.0) -> Path:
    """Estimates with their intervals, one row each: (label, estimate, low, high), a vertical line at
    ``reference`` (e.g. 0 for differences). Used for pairwise differences, the leakage study and folds."""
    if not rows:
        raise ValueError("forest_png: no rows given")
    fig = _figure(6.5, 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    est = np.array([r[1] for r in rows], np.float64)
    err = _yerr(est.tolist(), [(r[2], r[3]) for r in rows])
    ax.errorbar(est, y, xerr=err, fmt="o", capsize=4, color="tab:blue")
    for yi, (_, e, lo_, hi_) in zip(y, rows):
        ax.annotate(f"{e:.3f} [{lo_:.3f}, {hi_:.3f}]", (e, yi), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=7)
    if reference is not None:
        ax.axvline(reference, color="grey", lw=1, ls="--")
    ax.set_yticks(y, labels=[r[0] for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def reconstruction_panel_png(image: np.ndarray, hidden: np.ndarray, reconstruction: np.ndarray, mse: np.ndarray,
                             path: str | Path, *, titles: Sequence[str] | None = None) -> Path:
    """FCMAE on held-out slices, one row each: the slice, its visible patches (hidden ones grey), the
    reconstruction (hidden patches predicted, visible ones as given, hidden cells outlined) and the image's
    mean squared error over its hidden patches. ``image`` / ``reconstruction`` (N, S, S) in [0, 1],
    ``hidden`` (N, S/p, S/p) bool."""
    n = len(image)
    fig = _figure(7.5, 2.5 * n + 0.3)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        p = image[i].shape[0] // hidden[i].shape[0]
        cells = np.kron(hidden[i].astype(np.uint8), np.ones((p, p), np.uint8)).astype(bool)
        shown = scan_gray(image[i])
        visible = np.where(cells, 0.5, shown)
        recon = np.clip((reconstruction[i] - image[i].min())
                        / max(float(np.percentile(image[i], PREVIEW_PERCENTILE) - image[i].min()), 1e-6), 0, 1)
        label = titles[i] if titles is not None else f"slice {i}"
        for ax, img, title in ((axes[i, 0], shown, label), (axes[i, 1], visible, f"visible ({int((~hidden[i]).sum())} "
                                                                               f"of {hidden[i].size} patches)"),
                               (axes[i, 2], recon, f"reconstruction, hidden-patch MSE {float(mse[i]):.3f}")):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 2].contour(cells, levels=[0.5], colors=["#ffcc00"], linewidths=0.6)
    return _save(fig, path)
