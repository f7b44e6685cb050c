"""``brain-jax explain``, ``eval --explain N`` and the demo's saliency panel: where a trained model looks.

``explain`` reads image files like ``predict`` (same preprocessing), computes saliency maps
(``brain_jax.saliency``) for the predicted class or ``--class NAME``, and writes per image and method a
heat-map overlay at the file's resolution (``<stem>_<method>.png``, the tumour mask outlined in green
when the file carries one) and the raw map (``<stem>_<method>.npy``: Grad-CAM before ReLU at the
layer's resolution; integrated gradients (H, W, C) at the model's input size; rollout on the patch
grid), plus ``explain.json`` and ``explain.csv`` with the predictions and, where a mask is known
(Figshare ``tumorMask``), the pointing game and the map's mass inside the mask.

``eval --explain N`` (``explain_split``) draws N cases per class of the evaluated split into
``figures/saliency.png`` (scan, map for the predicted class, map for the true class when they differ)
and stores localisation numbers, scored on the true class's maps, in metrics.json's ``"saliency"``
section, which ``report`` renders.

Everything is read and computed before anything is written.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from brain_jax import saliency, workdir
from brain_jax.app import predict as predict_app
from brain_jax.io import Slice, detect_format, read_slice
from brain_jax.train import builders
from brain_jax.train.data import PipelineData
from input_pipeline import class_names as dataset_class_names
from input_pipeline import transforms

EXPLAIN_DIR = "explain"  # default output folder of `brain-jax explain`, inside the workdir
PANEL_PNG = "saliency.png"  # eval --explain / demo panel, in the workdir's figures folder
SECTION = "saliency"  # metrics.json section read by the report
BASELINES = ("zeros", "black", "blur")
SEG_TARGET = "tumour"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to compute: methods, Grad-CAM layer (None: the model's default), integrated-gradient steps,
    quadrature and baseline ("zeros": the normalised input's zero, i.e. the mean image; "black": an
    image of intensity 0; "blur": each image Gaussian-blurred, ``saliency.blurred``), and images per batch."""

    methods: tuple[str, ...]
    layer: int | None = None
    ig_steps: int = saliency.IG_STEPS
    ig_quadrature: str = "gausslegendre"
    baseline: str = "zeros"
    batch_size: int = 8

    def describe(self, model: Any, spec: str) -> str:
        method, baseline = parse_method(spec)
        baseline = baseline or self.baseline
        if method == "gradcam":
            return f"Grad-CAM at {saliency.gradcam_layer(model, self.layer).description}"
        if method == "ig":
            base = (f"blurred-image baseline, Gaussian sigma = side/{saliency.BLUR_FRACTION}" if baseline == "blur"
                    else f"{baseline} baseline")
            return f"integrated gradients ({self.ig_quadrature}, {self.ig_steps} steps, {base}), channels summed"
        return "attention rollout (mean over heads, residual 0.5), patch grid"


def parse_method(spec: str) -> tuple[str, str | None]:
    """``"ig@blur"`` -> ``("ig", "blur")``: integrated gradients from a named baseline (``BASELINES``) instead
    of the run's ``--baseline``, so that one run can compare baselines; any other spec -> ``(spec, None)``."""
    method, at, baseline = spec.partition("@")
    if not at:
        return spec, None
    if method != "ig" or baseline not in BASELINES:
        raise ValueError(f"--method {spec!r}: only integrated gradients take a baseline after '@' "
                         f"(ig@{', ig@'.join(BASELINES)})")
    return method, baseline


def resolve_methods(spec: str | Sequence[str] | None, model: Any) -> tuple[str, ...]:
    """``"gradcam,ig"`` / a list -> checked method names (``ig@BASELINE`` included, see ``parse_method``);
    None or "all" -> every method the model supports."""
    if spec is None or spec == "all" or spec == ["all"]:
        return saliency.supported_methods(model)
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    if not names:
        raise ValueError("--method: no method given; expected e.g. gradcam, ig, ig@blur, rollout or all")
    for m in names:
        saliency.check_method(model, parse_method(m)[0])
    return tuple(dict.fromkeys(names))


def _file_tag(spec: str) -> str:
    return spec.replace("@", "-")  # ig@blur -> <stem>_ig-blur.png


def _heatmap(raw: Any, spec: str) -> np.ndarray:
    """``saliency.heatmap`` of a method spec's raw output (``ig@blur`` draws like ``ig``)."""
    return saliency.heatmap(raw, parse_method(spec)[0])


def class_index(name: str, names: Sequence[str], where: str) -> int:
    """Index of class ``name`` among the model's outputs; ValueError listing the classes ``where`` knows."""
    if name not in names:
        raise ValueError(f"--class {name!r}: {where} knows the classes {', '.join(names)}")
    return list(names).index(name)


def baseline_value(name: str, cfg: ml_collections.ConfigDict) -> Any:
    """The ``baseline`` argument of ``saliency.integrated_gradients`` for a baseline's name."""
    if name not in BASELINES:
        raise ValueError(f"--baseline {name!r}; expected one of {', '.join(BASELINES)}")
    if name == "zeros":
        return 0.0
    if name == "blur":
        return saliency.blurred
    return transforms.to_model_input(np.zeros((1, 1), np.float32), cfg.data.mean, cfg.data.std)[0, 0]


# --------------------------------------------------------------------------------------- computing


def _batched(fn, arrays: Sequence[np.ndarray], batch_size: int, *, pad_to: int | None = None) -> Any:
    """``fn`` over chunks of ``batch_size`` rows of ``arrays``, each zero-padded to ``pad_to`` rows (default:
    the chunk size), so that a jitted method compiles once; outputs (arrays or tuples of arrays) joined."""
    n = len(arrays[0])
    bs = max(1, min(batch_size, n))
    size = max(bs, pad_to or 0)
    outs = []
    for i in range(0, n, bs):
        chunk = [a[i:i + bs] for a in arrays]
        k = len(chunk[0])
        chunk = [np.concatenate([c, np.zeros((size - k,) + c.shape[1:], c.dtype)]) if size > k else c
                 for c in chunk]
        out = fn(*chunk)
        outs.append(tuple(np.asarray(o)[:k] for o in out) if isinstance(out, tuple) else np.asarray(out)[:k])
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs))
    return np.concatenate(outs)


def compute_maps(model: Any, inputs: np.ndarray, targets: np.ndarray, settings: Settings,
                 cfg: ml_collections.ConfigDict, *,
                 pad_to: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``({method: raw output}, logits)`` for each image and its target class (see ``saliency.heatmap``);
    the logits come with Grad-CAM's forward pass (None without Grad-CAM). ``cfg``: the workdir's config
    (the input normalisation, for the black baseline)."""
    targets = np.asarray(targets, np.int32)
    out, logits = {}, None
    for spec in settings.methods:
        method, base = parse_method(spec)
        if method == "gradcam":
            def fn(x, t):
                cam = saliency.grad_cam(model, x, t, layer=settings.layer)
                return cam.raw, cam.logits

            out[spec], logits = _batched(fn, [inputs, targets], settings.batch_size, pad_to=pad_to)
            continue
        if method == "ig":
            baseline = baseline_value(base or settings.baseline, cfg)

            def fn(x, t):
                return saliency.integrated_gradients(model, x, t, baseline=baseline, steps=settings.ig_steps,
                                                     method=settings.ig_quadrature)
        else:
            def fn(x, t):
                return saliency.attention_rollout(model, x)
        out[spec] = _batched(fn, [inputs, targets], settings.batch_size, pad_to=pad_to)
    return out, logits


def localisation(raw: Mapping[str, np.ndarray], masks: np.ndarray, labels: np.ndarray,
                 names: Sequence[str]) -> dict[str, Any]:
    """``{method: saliency.summarise(...)}`` over the images with a tumour mask (empty when none has one)."""
    has = masks.reshape(len(masks), -1).any(axis=1)
    if not has.any():
        return {}
    return {m: saliency.summarise(_heatmap(r[has], m), masks[has], labels[has], names)
            for m, r in raw.items()}


# ------------------------------------------------------------------------------------------ drawing


def _gray(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(np.percentile(image, predict_app.PREVIEW_PERCENTILE))
    return np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def overlay(image: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """8-bit RGB: the scan in gray under the heat map (``heat`` in [0, 1], jet colours), the mask outlined
    in green."""
    import matplotlib
    from scipy import ndimage

    gray = np.repeat(_gray(image)[..., None], 3, axis=-1)
    colour = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    rgb = (1 - alpha) * gray + alpha * colour
    if mask is not None and np.any(mask):
        m = np.asarray(mask) > 0
        rgb[m & ~ndimage.binary_erosion(m, border_value=0)] = (0.15, 0.9, 0.25)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


DISPLAY_PERCENTILE = 99.0  # heat maps are drawn on [0, this percentile]: one hot pixel does not blank the rest


def display_map(raw: np.ndarray, method: str, size: Sequence[int]) -> np.ndarray:
    """(H, W) map in [0, 1] for drawing: heat map, upsampled bilinearly, scaled to its 99th percentile."""
    up = saliency.upsample(_heatmap(raw[None], method), size)[0]
    top = float(np.percentile(up, DISPLAY_PERCENTILE))
    top = top if top > 0 else float(up.max())
    return np.clip(up / top, 0, 1) if top > 0 else up


def panel_png(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], path: Path) -> Path:
    """One row per case: the scan (mask outlined), then per method the map for the predicted class and,
    when any case's prediction is wrong, a column for the true class's map (filled on those rows).
    ``rows``: image, mask, title, maps {method: {"pred": map, "true": map or None}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = 2 if any(row["maps"][m]["true"] is not None for row in rows for m in methods) else 1
    cols = 1 + per * len(methods)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.8 * cols, 1.95 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(overlay(row["image"], np.zeros(row["image"].shape), row["mask"], alpha=0.0))
        axes[r, 0].set_title(row["title"], fontsize=6.5)
        for j, m in enumerate(methods):
            for k, which in enumerate(("pred", "true")[:per]):
                ax = axes[r, 1 + per * j + k]
                heat = row["maps"][m][which]
                if heat is None:
                    ax.axis("off")
                    continue
                ax.imshow(overlay(row["image"], heat, row["mask"]))
                ax.set_title(f"{m}, {'true' if which == 'true' else 'predicted'} class", fontsize=6.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ brain-jax explain


def prepare(slices: Sequence[Slice], cfg: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (as ``predict`` prepares them) and the files' masks at the input size (zeros if none)."""
    inputs = np.stack([predict_app.preprocess(s, cfg) for s in slices])
    size = inputs.shape[1]
    masks = np.zeros((len(slices), size, size), np.uint8)
    for i, s in enumerate(slices):
        if s.mask is not None:
            img = transforms.normalise_intensity(s.image)
            masks[i] = transforms.resize(img, s.mask, np.ones(2, np.float32), size)[1] > 0
    return inputs, masks


def explain_arrays(model: Any, cfg: ml_collections.ConfigDict, inputs: np.ndarray, masks: np.ndarray,
                   settings: Settings, target: int | None = None) -> dict[str, Any]:
    """Predictions, target classes (``target``, else the predicted class; segmentation: tumour), raw maps
    and localisation for model inputs and their masks."""
    task = predict_app.task_of(cfg)
    names = builders.class_names(cfg)
    out = _batched(lambda x: saliency.logits(model, x), [inputs], settings.batch_size)
    if task == "classification":
        probs = _softmax(out)
        predicted = probs.argmax(axis=1)
    else:
        probs, predicted = None, (out.argmax(axis=-1) == names.index(SEG_TARGET)).any(axis=(1, 2)).astype(int)
    default = predicted if task == "classification" else np.full(len(inputs), names.index(SEG_TARGET))
    targets = default if target is None else np.full(len(inputs), target)
    raw, _ = compute_maps(model, inputs, targets, settings, cfg)
    return {"task": task, "class_names": names, "probabilities": probs, "predicted": predicted,
            "targets": targets, "raw": raw, "localisation": localisation(raw, masks, targets, names)}


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _image_record(i: int, s: Slice, stem: str, res: Mapping[str, Any], masks: np.ndarray) -> dict[str, Any]:
    names = res["class_names"]
    rec: dict[str, Any] = {"file": s.path, "shape": list(s.shape), "target_class": names[int(res["targets"][i])]}
    if res["task"] == "classification":
        rec["predicted_class"] = names[int(res["predicted"][i])]
        rec["probabilities"] = {n: float(p) for n, p in zip(names, res["probabilities"][i])}
    else:
        rec["tumour_predicted"] = bool(res["predicted"][i])
    rec["maps"] = {}
    for m, raw in res["raw"].items():
        entry: dict[str, Any] = {"raw_npy": f"{stem}_{_file_tag(m)}.npy", "overlay_png": f"{stem}_{_file_tag(m)}.png",
                                 "raw_shape": list(raw[i].shape)}
        if masks[i].any():
            heat = _heatmap(raw[i:i + 1], m)
            entry["pointing_hit"] = bool(saliency.pointing_game(heat, masks[i:i + 1])[0])
            entry["mass_inside"] = _num(saliency.mass_inside(heat, masks[i:i + 1])[0])
        rec["maps"][m] = entry
    return rec


def _num(v: float) -> float | None:
    return None if not math.isfinite(float(v)) else float(v)


def write_explanations(out_dir: Path, slices: Sequence[Slice], res: Mapping[str, Any], masks: np.ndarray,
                       meta: Mapping[str, Any]) -> Path:
    """Overlays, raw maps, explain.json and explain.csv in ``out_dir``; returns the JSON path."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    stems = predict_app.output_stems([s.path for s in slices])
    records = []
    for i, (s, stem) in enumerate(zip(slices, stems)):
        for m, raw in res["raw"].items():
            np.save(out_dir / f"{stem}_{_file_tag(m)}.npy", raw[i])
            heat = display_map(raw[i], m, s.shape)
            Image.fromarray(overlay(s.image, heat, s.mask)).save(out_dir / f"{stem}_{_file_tag(m)}.png")
        records.append(_image_record(i, s, stem, res, masks))
    doc = {**meta, "task": res["task"], "images": records, "localisation": res["localisation"]}
    path = workdir.write_json(out_dir / "explain.json", doc)
    with open(out_dir / "explain.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "method", "target_class", "predicted", "map_shape", "pointing_hit", "mass_inside"])
        for rec in records:
            pred = rec.get("predicted_class", rec.get("tumour_predicted"))
            for m, e in rec["maps"].items():
                w.writerow([rec["file"], m, rec["target_class"], pred, "x".join(map(str, e["raw_shape"])),
                            e.get("pointing_hit", ""), "" if e.get("mass_inside") is None else e["mass_inside"]])
    return path


def localisation_table(loc: Mapping[str, Any]) -> str:
    """Plain-text table of ``{method: summarise(...)}``: pointing game and mass inside, with chance."""
    if not loc:
        return ""
    lines = [f"{'method':<8} {'class':<12} {'n':>4} {'pointing':>9} {'(chance)':>9} {'mass in':>8} {'(chance)':>9}"]
    for m, s in loc.items():
        for cls, r in [*s["per_class"].items(), ("all", s["all"])]:
            lines.append(f"{m:<8} {cls:<12} {r['n']:>4} {r['pointing_game']:>9.3f} {r['chance_pointing']:>9.3f} "
                         f"{r['mass_inside']:>8.3f} {r['chance_mass']:>9.3f}")
    return "\n".join(lines)


def explain(args) -> int:
    """``brain-jax explain --workdir W [--method M[,M]] [--class NAME] [--layer K] [--out DIR] IMAGE...``."""
    slice_index = getattr(args, "slice", None)
    paths = predict_app.expand_inputs(args.images)
    slices = [read_slice(p, slice_index if detect_format(p) in ("nifti", "dicom") else None) for p in paths]
    out_dir = Path(args.out) if args.out else Path(args.workdir) / EXPLAIN_DIR
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder")
    model, cfg = predict_app.load_workdir(args.workdir)
    target = None
    if args.class_name is not None:
        target = class_index(args.class_name, builders.class_names(cfg), f"workdir {args.workdir}")
    settings = Settings(resolve_methods(args.method, model), layer=args.layer, ig_steps=args.steps,
                        baseline=args.baseline, batch_size=args.batch_size)
    saliency.gradcam_layer(model, settings.layer)  # an out-of-range --layer fails before any work
    inputs, masks = prepare(slices, cfg)
    res = explain_arrays(model, cfg, inputs, masks, settings, target=target)
    meta = {"workdir": str(args.workdir), "model": f"{cfg.model.name}-{cfg.model.variant}",
            "methods": {m: settings.describe(model, m) for m in settings.methods}}
    path = write_explanations(out_dir, slices, res, masks, meta)
    for rec in json.loads(path.read_text())["images"]:
        pred = rec.get("predicted_class", "tumour" if rec.get("tumour_predicted") else "no tumour")
        print(f"{Path(rec['file']).name}: predicted {pred}; maps for {rec['target_class']}")
    table = localisation_table(res["localisation"])
    if table:
        print(table)
    print(f"wrote {path}, explain.csv and {len(slices) * len(settings.methods)} overlay/raw-map pairs in {out_dir}")
    return 0


# --------------------------------------------------------------------------- eval --explain and the demo


def _collect(batches: Any, k: int, num_groups: int) -> dict[str, np.ndarray]:
    """The first ``k`` valid examples of each label, in split order: image, label, mask (zeros without one)."""
    keep: dict[str, list] = {"image": [], "label": [], "mask": []}
    count = np.zeros(num_groups, int)
    for b in batches:
        for i in np.flatnonzero(np.asarray(b["valid"])):
            y = int(b["label"][i])
            if count[y] < k:
                keep["image"].append(np.asarray(b["image"][i], np.float32))
                keep["label"].append(y)
                keep["mask"].append(np.asarray(b["mask"][i]) * bool(b["has_mask"][i]))
                count[y] += 1
        if (count >= k).all():
            break
    return {key: np.stack(v) if v else np.zeros((0,)) for key, v in keep.items()}


def _first_per_label(labels: np.ndarray, k: int) -> np.ndarray:
    seen: dict[int, int] = {}
    sel = np.zeros(len(labels), bool)
    for i, y in enumerate(labels):
        if seen.get(int(y), 0) < k:
            sel[i] = True
            seen[int(y)] = seen.get(int(y), 0) + 1
    return sel


def explain_split(config: ml_collections.ConfigDict, wd: str | Path, *, split: str, n_per_class: int,
                  scored_per_class: int | None = None, methods: str | Sequence[str] | None = None,
                  layer: int | None = None, ig_steps: int = saliency.IG_STEPS, baseline: str = "zeros",
                  out: str | Path | None = None) -> dict[str, Any]:
    """Saliency panel and localisation numbers of a workdir's model on ``n_per_class`` cases per class of
    ``split`` (classification: per true class; segmentation: per tumour type, maps of the tumour class).

    Localisation is scored on the first ``scored_per_class`` (default ``n_per_class``) cases per class
    (those with a tumour mask), on the true class's maps. Writes ``OUT/figures/saliency.png`` and the ``"saliency"``
    section of ``OUT/metrics.json`` (OUT: ``out``, default the workdir, whose metrics.json must exist);
    returns ``{"section", "figure"}``.
    """
    if n_per_class < 1:
        raise ValueError(f"--explain {n_per_class}: expected a number of cases per class >= 1")
    wd, out = Path(wd), Path(out or wd)
    model = builders.load_model_from_workdir(wd, builders.compute_dtype(config))
    settings = Settings(resolve_methods(methods, model), layer=layer, ig_steps=ig_steps, baseline=baseline,
                        batch_size=int(config.eval_batch_size))
    baseline_value(baseline, config)  # an unknown baseline fails before any work
    saliency.gradcam_layer(model, layer)
    task, head = config.data.task, builders.class_names(config)
    groups = head if task == "classification" else dataset_class_names(config.data)
    k = max(n_per_class, scored_per_class or n_per_class)
    cases = _collect(PipelineData(config).eval_batches(split), k, len(groups))
    if not len(cases["label"]):
        raise ValueError(f"split {split!r}: no examples to explain")
    x, labels, masks = cases["image"], cases["label"], cases["mask"]
    shown = np.flatnonzero(_first_per_label(labels, n_per_class))
    shown = shown[np.argsort(labels[shown], kind="stable")]  # the panel's rows grouped by class
    raw, raw_pred, probs, pred = _case_maps(model, config, settings, x, labels, shown)
    scored = _first_per_label(labels, scored_per_class or n_per_class)
    loc = localisation({m: r[scored] for m, r in raw.items()}, masks[scored], labels[scored], groups)
    rows = [_panel_row(i, x, masks, labels, pred, probs, raw, raw_pred, groups, task) for i in shown]
    section = {"split": split, "n_per_class": n_per_class, "scored_per_class": scored_per_class or n_per_class,
               "scored_on": "true class" if task == "classification" else SEG_TARGET,
               "methods": {m: settings.describe(model, m) for m in settings.methods},
               "map_shape": {m: list(r.shape[1:3]) for m, r in raw.items()},
               "localisation": loc, "figure": f"{workdir.FIGURES}/{PANEL_PNG}"}
    figure = out / workdir.FIGURES / PANEL_PNG
    if jax.process_index() == 0:  # each process explains its own shard of the split; process 0's is kept
        panel_png(rows, settings.methods, figure)
        write_section(out, section)
    return {"section": section, "figure": figure}


def _case_maps(model, config, settings: Settings, x: np.ndarray, labels: np.ndarray, shown: np.ndarray):
    """Raw maps of every case (true class; segmentation: tumour), those of the predicted class for the
    ``shown`` cases it differs on, the probabilities (classification) and the predictions."""
    task, head = config.data.task, builders.class_names(config)
    seg_target = head.index(SEG_TARGET) if task == "segmentation" else -1
    targets = labels if task == "classification" else np.full(len(x), seg_target)
    raw, out_logits = compute_maps(model, x, targets, settings, config)
    if out_logits is None:
        out_logits = _batched(lambda b: saliency.logits(model, b), [x], settings.batch_size)
    probs = _softmax(out_logits) if task == "classification" else None
    pred = probs.argmax(axis=1) if task == "classification" else (out_logits.argmax(axis=-1) == seg_target).any((1, 2))
    wrong = [int(i) for i in shown if task == "classification" and pred[i] != labels[i]]
    raw_pred: dict[str, dict[int, np.ndarray]] = {m: {} for m in raw}
    if wrong:  # padded to the first pass's batch: no recompilation
        again, _ = compute_maps(model, x[wrong], pred[wrong], settings, config,
                                pad_to=min(settings.batch_size, len(x)))
        raw_pred = {m: dict(zip(wrong, r)) for m, r in again.items()}
    return raw, raw_pred, probs, pred


def _panel_row(i, x, masks, labels, pred, probs, raw, raw_pred, groups, task) -> dict[str, Any]:
    size = x.shape[1:3]
    if task == "classification":
        title = f"{groups[labels[i]]} -> {groups[pred[i]]} ({probs[i, pred[i]]:.2f})"
    else:
        title = f"{groups[labels[i]]}: tumour {'found' if pred[i] else 'missed'}"
    maps = {}
    for m, r in raw.items():
        own = display_map(r[i], m, size)
        if i in raw_pred[m]:
            maps[m] = {"pred": display_map(raw_pred[m][i], m, size), "true": own}
        else:
            maps[m] = {"pred": own, "true": None}
    return {"image": x[i, ..., 0], "mask": masks[i], "title": title, "maps": maps}


def write_section(wd: str | Path, section: Mapping[str, Any]) -> Path:
    """Store ``section`` as metrics.json's ``"saliency"`` (the workdir's metrics.json must exist)."""
    data = workdir.read_metrics(wd)
    data[SECTION] = dict(section)
    return workdir.write_json(Path(wd) / workdir.METRICS, data)
