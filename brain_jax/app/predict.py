"""``brain-jax predict``: classify or segment image files (or folders of them) with a trained workdir.

The core, :func:`predict_arrays`, takes any callable model (an NNX module runs through the engine's
split-once jitted forward pass; a plain function is called as is) plus the workdir's resolved config
(``brain_jax.workdir.read_config``, as ``eval`` reads it), so it is testable without a training run.
Preprocessing reuses the loader's own transforms (``input_pipeline.transforms``): per-image intensity
normalisation (minimum -> 0, ``data.upper_percentile`` -> 1), bilinear resize to
``data.image_size``, gray -> 3 channels, the pretrained weights' mean/std.

Segmentation logits are resized bilinearly straight to the file's original resolution before the
argmax, so masks, overlays and areas are at the resolution the user gave. Tumour area =
tumour pixels x row spacing x column spacing (mm²) when the file carries a spacing, else pixels.

All inputs are read and the model is run before anything is written: a bad file or workdir stops the
command with one message and leaves the output folder untouched.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from brain_jax import workdir
from brain_jax.io import SUPPORTED, Slice, detect_format, read_slice
from brain_jax.io.guards import MAX_PIXELS
from brain_jax.train import builders, engine
from brain_jax.train.checkpoints import has_checkpoint
from input_pipeline import transforms

PREVIEW_PERCENTILE = 99.5  # intensity window of the overlay PNGs

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


# ------------------------------------------------------------------------------------------ config


def _as_config(cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return cfg if isinstance(cfg, ml_collections.ConfigDict) else ml_collections.ConfigDict(dict(cfg))


def _field(cfg: ml_collections.ConfigDict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ValueError(f"{workdir.CONFIG}: missing field {dotted!r}")
        node = node[part]
    return node


def _image_size(cfg: ml_collections.ConfigDict) -> int:
    s = _field(cfg, "data.image_size")
    if isinstance(s, (list, tuple)) and len(s) == 2 and s[0] == s[1]:
        s = s[0]
    if isinstance(s, (int, float)) and 0 < int(s) and int(s) ** 2 <= MAX_PIXELS:
        return int(s)
    raise ValueError(f"{workdir.CONFIG}: data.image_size = {s!r}; expected a positive int (square images) of at "
                     f"most {math.isqrt(MAX_PIXELS)}")


def task_of(cfg: ml_collections.ConfigDict) -> str:
    task = _field(cfg, "data.task")
    if task not in ("classification", "segmentation"):
        raise ValueError(f"{workdir.CONFIG}: data.task = {task!r}; expected 'classification' or 'segmentation'")
    return task


# ----------------------------------------------------------------------------------- preprocessing


def preprocess(sl: Slice, cfg: ml_collections.ConfigDict) -> np.ndarray:
    """One slice -> (H, W, 3) float32 model input, exactly as the loader prepares evaluation images."""
    size = _image_size(cfg)
    pct = float(_field(cfg, "data.upper_percentile"))
    img01 = transforms.normalise_intensity(sl.image, pct)
    img01, _, _ = transforms.resize(img01, np.zeros(img01.shape, np.uint8), np.ones(2, np.float32), size)
    return transforms.to_model_input(img01, _field(cfg, "data.mean"), _field(cfg, "data.std"))


# ------------------------------------------------------------------------------------------- model


def _forward_fn(model: Callable) -> Callable[[np.ndarray], np.ndarray]:
    """A batch forward pass: an NNX model through the engine's split-once jitted eval forward; any
    other callable (tests' stubs) as it is."""
    if isinstance(model, nnx.Module):
        parts = engine.split_model(model)
        fwd = jax.jit(engine.make_forward(parts))
        return lambda x: np.asarray(fwd(parts.params, parts.batch_stats, parts.rest, x), np.float32)
    return lambda x: np.asarray(model(x), np.float32)


def _run_batches(fwd: Callable, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Forward in fixed-size chunks (the last one zero-padded) so a jitted model compiles once."""
    n = len(inputs)
    bs = max(1, min(batch_size, n))
    outs = []
    for i in range(0, n, bs):
        chunk = inputs[i:i + bs]
        pad = bs - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        outs.append(fwd(chunk)[: bs - pad])
    return np.concatenate(outs)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


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
    cfg: Mapping[str, Any] | ml_collections.ConfigDict,
    slices: Sequence[Slice],
    *,
    batch_size: int = 8,
) -> list[Prediction]:
    """Run ``model`` on ``slices`` as configured in ``cfg`` (the workdir's resolved config)."""
    if not slices:
        raise ValueError("no images to predict")
    cfg = _as_config(cfg)
    task = task_of(cfg)
    inputs = np.stack([preprocess(s, cfg) for s in slices])
    logits = _run_batches(_forward_fn(model), inputs, batch_size)
    results = []
    if task == "classification":
        if logits.ndim != 2:
            raise ValueError(
                f"config.json says data.task='classification' but the model returned logits of shape "
                f"{logits.shape}; expected (batch, num_classes)"
            )
        names = builders.class_names(cfg)
        if len(names) != logits.shape[1]:
            raise ValueError(f"{workdir.CONFIG} names {len(names)} classes {list(names)} but the model has "
                             f"{logits.shape[1]} outputs")
        probs = _softmax(logits.astype(np.float64))
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


def output_stems(paths: Sequence[str]) -> list[str]:
    """File stems for outputs, made unique (``scan``, ``scan_2``...) when two inputs share a name."""
    stems, seen = [], {}
    for p in paths:
        name = Path(p).name
        stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem
        k = seen.get(stem, 0) + 1
        seen[stem] = k
        stems.append(stem if k == 1 else f"{stem}_{k}")
    # a generated "scan_2" may itself collide with an input called scan_2
    if len(set(stems)) != len(stems):
        stems = [f"{i:03d}_{s}" for i, s in enumerate(stems)]
    return stems


def overlay_rgb(image: np.ndarray, pred: np.ndarray, true: np.ndarray | None = None) -> np.ndarray:
    """8-bit RGB of the scan with the prediction's outline in red (ground truth's in green)."""
    from scipy import ndimage

    lo, hi = float(image.min()), float(np.percentile(image, PREVIEW_PERCENTILE))
    hi = hi if hi > lo else lo + 1.0
    gray = np.clip((image - lo) / (hi - lo), 0, 1) * 255
    rgb = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)
    thick = 1 if min(image.shape) < 256 else 2
    for m, color in ((true, (40, 220, 60)), (pred, (255, 40, 30))):
        if m is None or not np.any(m):
            continue
        m = np.asarray(m) > 0
        edge = m & ~ndimage.binary_erosion(m, iterations=thick, border_value=0)
        rgb[edge] = color
    return rgb


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


def write_predictions(
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
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    stems = output_stems([r.path for r in results])
    records = []
    for r, s, stem in zip(results, slices, stems):
        if task == "segmentation":
            Image.fromarray((r.mask * 255).astype(np.uint8)).save(out / f"{stem}_mask.png")
            Image.fromarray(overlay_rgb(s.image, r.mask, s.mask)).save(out / f"{stem}_overlay.png")
        records.append(_prediction_json(r, stem, task))
    path = out / "predictions.json"
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


# ---------------------------------------------------------------------------------------- workdir


def load_workdir(wd: str | Path) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """(model, resolved config) of a training workdir; clear errors when either is missing."""
    wd = Path(wd)
    if not wd.is_dir():
        raise FileNotFoundError(f"--workdir {wd}: no such folder")
    cfg = workdir.read_config(wd)
    for field in ("data.image_size", "data.mean", "data.std", "data.upper_percentile"):
        _field(cfg, field)
    task_of(cfg)
    if not has_checkpoint(wd):
        raise FileNotFoundError(f"--workdir {wd}: no checkpoint found (nothing saved yet?); train first")
    return builders.load_model_from_workdir(wd), cfg


def expand_inputs(paths: Sequence[str]) -> list[str]:
    """Files as given, folders replaced by the readable files they hold (sorted, not recursive)."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            out.append(p)
            continue
        found = sorted(str(f) for f in path.iterdir() if f.is_file() and _readable(f))
        if not found:
            raise FileNotFoundError(f"{path}: a folder with no image files ({', '.join(SUPPORTED)} or DICOM)")
        out += found
    return out


def _readable(path: Path) -> bool:
    try:
        detect_format(path)
        return True
    except ValueError:
        return False


def predict(args) -> int:
    """``brain-jax predict --workdir DIR [--out DIR] [--slice K] [--batch-size N] IMAGE_OR_FOLDER...``."""
    slice_index = getattr(args, "slice", None)
    paths = expand_inputs(args.images)
    # Read every input first: one bad file stops the run before anything is computed or written.
    slices = [read_slice(p, slice_index if _is_volume(p) else None) for p in paths]
    out_dir = Path(args.out) if args.out else Path(args.workdir) / workdir.PREDICT_DIR
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder")
    model, cfg = load_workdir(args.workdir)
    task = task_of(cfg)
    results = predict_arrays(model, cfg, slices, batch_size=int(getattr(args, "batch_size", 8) or 8))
    meta = {"workdir": str(args.workdir), "model": str(cfg.model.get("name", ""))}
    path = write_predictions(results, slices, out_dir, task, meta)
    print(format_table(results, task))
    print(f"wrote {path}" + (f" and {len(results)} mask/overlay pairs in {out_dir}" if task == "segmentation" else ""))
    return 0


def _is_volume(path: str) -> bool:
    """Formats that can hold several slices (the --slice index applies to them only)."""
    try:
        return detect_format(path) in ("nifti", "dicom")
    except ValueError:
        return False
