"""``brain-jax predict``: classify or segment image files (or folders of them) with a trained workdir.

The core, :func:`predict_arrays`, takes any callable model (an NNX model runs through the engine's
split-once jitted forward pass, ``brain_jax.train.forward``; a plain function is called as is) plus the
workdir's ``RunSpec``, so it is testable without a training run. Preprocessing is the loader's own
(``preprocess.preprocess``, numpy): per-image intensity normalisation (minimum -> 0, ``data.upper_percentile`` -> 1),
bilinear resize to ``data.image_size``, gray -> 3 channels, the pretrained weights' mean/std.

Segmentation logits are resized bilinearly straight to the file's original resolution before the
argmax, so masks, overlays and areas are at the resolution the user gave. Tumour area =
tumour pixels x row spacing x column spacing (mm²) when the file carries a spacing, else pixels.

The command (``brain_jax.app.commands.predict``) reads all inputs and loads the workdir
(``brain_jax.app.inputs``) and runs the model before anything is written: a bad file or workdir stops
it with one message and leaves the output folder untouched.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from brain_jax import workdir
from brain_jax.app import figures
from brain_jax.app.inputs import output_stems
from brain_jax.io import Slice
from brain_jax.train import preprocess
from brain_jax.train.spec import InputSpec, RunSpec


@dataclasses.dataclass
class Prediction:
    """The result for one input file."""

    path: str
    source_format: str
    shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float] | None
    probabilities: dict[str, float] | None = None  # classification
    predicted_class: str | None = None  # classification
    mask: np.ndarray | None = None  # segmentation: uint8 0/1 at the original resolution
    tumour_pixels: int | None = None
    area_mm2: float | None = None
    dice_vs_file_mask: float | None = None  # when the file carries its own ground truth
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------- predictions


def _resize_logits(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w, C) -> (H, W, C), bilinear with half-pixel centres, one channel at a time (PIL)."""
    from PIL import Image

    if logits.shape[:2] == tuple(shape):
        return logits
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(logits[..., c]), mode="F")
                   .resize((shape[1], shape[0]), Image.BILINEAR), np.float32)
        for c in range(logits.shape[-1])
    ]
    return np.stack(chans, axis=-1)


def _foreground(logits: np.ndarray) -> np.ndarray:
    """Tumour mask from (H, W, C) logits: argmax != background, or logit > 0 for a single channel."""
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(np.uint8)
    return (np.argmax(logits, axis=-1) != 0).astype(np.uint8)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    denom = int(a.sum() + b.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(a, b).sum()) / denom


def predict_arrays(
    model: Callable,
    spec: RunSpec,
    slices: Sequence[Slice],
    *,
    batch_size: int = 8,
) -> list[Prediction]:
    """Run ``model`` on ``slices`` as ``spec`` (the workdir's run) prepares and reads them."""
    # start-up: the ONNX Runtime route (brain_jax.app.onnx_predict) shares this module and imports no JAX
    from brain_jax.train import forward

    logits = forward.logits(model, model_inputs(slices, spec.input), batch_size)
    return predictions_from_logits(logits, spec.task, spec.class_names, slices)


def model_inputs(slices: Sequence[Slice], spec: InputSpec) -> np.ndarray:
    """(N, S, S, 3) float32 model inputs of ``slices``, prepared as the run's loader prepares images."""
    if not slices:
        raise ValueError("no images to predict")
    return np.stack([preprocess.preprocess(s.image, spec) for s in slices])


def predictions_from_logits(logits: np.ndarray, task: str, names: Sequence[str],
                            slices: Sequence[Slice]) -> list[Prediction]:
    """One ``Prediction`` per slice from float32 logits, (N, classes) or (N, h, w, classes) (NHWC), whichever
    runtime produced them."""
    results = []
    if task == "classification":
        if logits.ndim != 2:
            raise ValueError(
                f"config.json says data.task='classification' but the model returned logits of shape "
                f"{logits.shape}; expected (batch, num_classes)"
            )
        names = tuple(names)
        if len(names) != logits.shape[1]:
            raise ValueError(f"{workdir.CONFIG} names {len(names)} classes {list(names)} but the model has "
                             f"{logits.shape[1]} outputs")
        probs = preprocess.softmax(logits.astype(np.float64))
        for s, p in zip(slices, probs):
            results.append(Prediction(
                s.path, s.source_format, s.shape, s.pixel_spacing_mm,
                probabilities={n: float(v) for n, v in zip(names, p)},
                predicted_class=names[int(np.argmax(p))], notes=s.notes))
        return results
    if logits.ndim != 4:
        raise ValueError(
            f"config.json says data.task='segmentation' but the model returned logits of shape "
            f"{logits.shape}; expected (batch, height, width, classes)"
        )
    for s, lg in zip(slices, logits):
        mask = _foreground(_resize_logits(lg, s.shape))
        n = int(mask.sum())
        notes = s.notes
        area = None
        if s.pixel_spacing_mm is not None:
            area = n * s.pixel_spacing_mm[0] * s.pixel_spacing_mm[1]
        else:
            notes += ("pixel spacing unknown for this file: area given in pixels of the original image",)
        dice = _dice(mask, s.mask) if s.mask is not None else None
        results.append(Prediction(
            s.path, s.source_format, s.shape, s.pixel_spacing_mm, mask=mask, tumour_pixels=n,
            area_mm2=area, dice_vs_file_mask=dice, notes=notes))
    return results


# ----------------------------------------------------------------------------------------- writers


def _prediction_json(r: Prediction, stem: str, task: str) -> dict[str, Any]:
    d: dict[str, Any] = {
        "file": r.path, "format": r.source_format, "shape": list(r.shape),
        "pixel_spacing_mm": None if r.pixel_spacing_mm is None else list(r.pixel_spacing_mm),
    }
    if task == "classification":
        d.update(predicted_class=r.predicted_class, probabilities=r.probabilities)
    else:
        d.update(mask_png=f"{stem}_mask.png", overlay_png=f"{stem}_overlay.png",
                 tumour_pixels=r.tumour_pixels, area_mm2=r.area_mm2, dice_vs_file_mask=r.dice_vs_file_mask)
    if r.notes:
        d["notes"] = list(r.notes)
    return d


def write_outputs(
    results: Sequence[Prediction],
    slices: Sequence[Slice],
    out_dir: str | Path,
    task: str,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write predictions.json (and, for segmentation, ``<stem>_mask.png`` 0/255 and ``<stem>_overlay.png``
    at the original resolution) into ``out_dir``; return the JSON path."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = output_stems([r.path for r in results])
    records = []
    for r, s, stem in zip(results, slices, stems):
        if task == "segmentation":
            Image.fromarray((r.mask * 255).astype(np.uint8)).save(out / f"{stem}_mask.png")
            overlay = figures.overlay_rgb(s.image, [(s.mask, figures.TRUE_GREEN), (r.mask, figures.PRED_RED)])
            Image.fromarray(overlay).save(out / f"{stem}_overlay.png")
        records.append(_prediction_json(r, stem, task))
    path = out / workdir.PREDICTIONS_JSON
    doc = {"task": task, **(dict(meta) if meta else {}), "predictions": records}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def format_table(results: Sequence[Prediction], task: str) -> str:
    """A plain-text table for the terminal."""
    if not results:
        return ""
    name_w = max(len(Path(r.path).name) for r in results)
    name_w = max(name_w, 4)
    if task == "classification":
        names = list(results[0].probabilities or {})
        col = max(8, *(len(n) for n in names))
        head = f"{'file':<{name_w}}  {'predicted':<{col}}  " + "  ".join(f"{n:>{col}}" for n in names)
        rows = [
            f"{Path(r.path).name:<{name_w}}  {r.predicted_class:<{col}}  "
            + "  ".join(f"{r.probabilities[n]:>{col}.4f}" for n in names)
            for r in results
        ]
    else:
        head = f"{'file':<{name_w}}  {'tumour px':>10}  {'area':>14}  {'Dice vs file mask':>17}"
        rows = []
        for r in results:
            area = f"{r.area_mm2:.1f} mm²" if r.area_mm2 is not None else f"{r.tumour_pixels} px*"
            dice = "" if r.dice_vs_file_mask is None else f"{r.dice_vs_file_mask:.4f}"
            rows.append(f"{Path(r.path).name:<{name_w}}  {r.tumour_pixels:>10}  {area:>14}  {dice:>17}")
        if any(r.area_mm2 is None for r in results):
            rows.append("* pixel spacing unknown for this file (PNG/JPEG/BMP/TIFF never carry one): "
                        "area in pixels of the original image")
    return "\n".join([head, "-" * len(head)] + rows)
