"""``brain-jax explain``: where a trained model looks on image files; and the saliency settings it shares with
``eval --explain`` and the demo's panel (``brain_jax.app.saliency_panel``).

``explain`` reads image files like ``predict`` (``brain_jax.app.inputs``; the same preprocessing, the same
forward pass), computes saliency maps (``brain_jax.saliency``) for the predicted class or ``--class NAME``,
and writes per image and method a heat-map overlay at the file's resolution (``<stem>_<method>.png``, the
tumour mask outlined in green when the file carries one; ``figures.overlay_rgb``) and the raw map
(``<stem>_<method>.npy``: Grad-CAM before ReLU at the layer's resolution; integrated gradients (H, W, C) at
the model's input size; rollout on the patch grid), plus ``explain.json`` and ``explain.csv`` with the
predictions and, where a mask is known (Figshare ``tumorMask``), the pointing game and the map's mass
inside the mask.

Everything is read and computed before anything is written.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brain_jax import saliency, workdir
from brain_jax.app import figures
from brain_jax.app.inputs import ImageJob, output_stems
from brain_jax.io import Slice
from brain_jax.train import forward
from brain_jax.train.spec import InputSpec, RunSpec
from input_pipeline import transforms

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

    @classmethod
    def checked(cls, model: Any, methods: str | Sequence[str] | None, **kwargs: Any) -> Settings:
        """Settings for ``model`` with every choice checked before any work: the methods
        (``resolve_methods``), the baseline and the Grad-CAM layer (out of range: ValueError)."""
        settings = cls(resolve_methods(methods, model), **kwargs)
        _check_baseline(settings.baseline)
        saliency.gradcam_layer(model, settings.layer)
        return settings

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


def display_heat(raw: np.ndarray, spec: str, size: Sequence[int]) -> np.ndarray:
    """One image's raw map -> (H, W) in [0, 1] for drawing: heat map, upsampled bilinearly to ``size``,
    scaled by ``figures.display_map``."""
    return figures.display_map(saliency.upsample(_heatmap(raw[None], spec), size)[0])


def class_index(name: str, names: Sequence[str], where: str) -> int:
    """Index of class ``name`` among the model's outputs; ValueError listing the classes ``where`` knows."""
    if name not in names:
        raise ValueError(f"--class {name!r}: {where} knows the classes {', '.join(names)}")
    return list(names).index(name)


def _check_baseline(name: str) -> None:
    if name not in BASELINES:
        raise ValueError(f"--baseline {name!r}; expected one of {', '.join(BASELINES)}")


def baseline_value(name: str, spec: InputSpec) -> Any:
    """The ``baseline`` argument of ``saliency.integrated_gradients`` for a baseline's name."""
    _check_baseline(name)
    if name == "zeros":
        return 0.0
    if name == "blur":
        return saliency.blurred
    return forward.normalise(np.zeros((1, 1), np.float32), spec)[0, 0]  # a [0, 1] image of 0, normalised


# --------------------------------------------------------------------------------------- computing


def compute_maps(model: Any, inputs: np.ndarray, targets: np.ndarray, settings: Settings, spec: InputSpec, *,
                 pad_to: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``({method: raw output}, logits)`` for each image and its target class (see ``saliency.heatmap``);
    the logits come with Grad-CAM's forward pass (None without Grad-CAM). ``spec``: the run's input
    normalisation (for the black baseline)."""
    targets = np.asarray(targets, np.int32)
    out, logits = {}, None
    for method_spec in settings.methods:
        method, base = parse_method(method_spec)
        if method == "gradcam":
            def fn(x, t):
                cam = saliency.grad_cam(model, x, t, layer=settings.layer)
                return cam.raw, cam.logits

            out[method_spec], logits = forward.batched(fn, [inputs, targets], settings.batch_size, pad_to=pad_to)
            continue
        if method == "ig":
            baseline = baseline_value(base or settings.baseline, spec)

            def fn(x, t):
                return saliency.integrated_gradients(model, x, t, baseline=baseline, steps=settings.ig_steps,
                                                     method=settings.ig_quadrature)
        else:
            def fn(x, t):
                return saliency.attention_rollout(model, x)
        out[method_spec] = forward.batched(fn, [inputs, targets], settings.batch_size, pad_to=pad_to)
    return out, logits


def localisation(raw: Mapping[str, np.ndarray], masks: np.ndarray, labels: np.ndarray,
                 names: Sequence[str]) -> dict[str, Any]:
    """``{method: saliency.summarise(...)}`` over the images with a tumour mask (empty when none has one)."""
    has = masks.reshape(len(masks), -1).any(axis=1)
    if not has.any():
        return {}
    return {m: saliency.summarise(_heatmap(r[has], m), masks[has], labels[has], names)
            for m, r in raw.items()}


# ------------------------------------------------------------------------------ brain-jax explain


def prepare(slices: Sequence[Slice], spec: RunSpec) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (as ``predict`` prepares them) and the files' masks at the input size (zeros if none)."""
    inputs = np.stack([forward.preprocess(s.image, spec.input) for s in slices])
    size = inputs.shape[1]
    masks = np.zeros((len(slices), size, size), np.uint8)
    for i, s in enumerate(slices):
        if s.mask is not None:
            img = transforms.normalise_intensity(s.image)
            masks[i] = transforms.resize(img, s.mask, np.ones(2, np.float32), size)[1] > 0
    return inputs, masks


def explain_arrays(model: Any, spec: RunSpec, inputs: np.ndarray, masks: np.ndarray,
                   settings: Settings, target: int | None = None) -> dict[str, Any]:
    """Predictions, target classes (``target``, else the predicted class; segmentation: tumour), raw maps
    and localisation for model inputs and their masks."""
    task, names = spec.task, spec.class_names
    out = forward.logits(model, inputs, settings.batch_size)
    if task == "classification":
        probs = forward.softmax(out)
        predicted = probs.argmax(axis=1)
    else:
        probs, predicted = None, (out.argmax(axis=-1) == names.index(SEG_TARGET)).any(axis=(1, 2)).astype(int)
    default = predicted if task == "classification" else np.full(len(inputs), names.index(SEG_TARGET))
    targets = default if target is None else np.full(len(inputs), target)
    raw, _ = compute_maps(model, inputs, targets, settings, spec.input)
    return {"task": task, "class_names": names, "probabilities": probs, "predicted": predicted,
            "targets": targets, "raw": raw, "localisation": localisation(raw, masks, targets, names)}


def explain_files(job: ImageJob, settings: Settings, target: int | None = None) -> tuple[Path, dict[str, Any]]:
    """``brain-jax explain`` on read inputs: maps, localisation and every output file; returns (explain.json
    path, ``explain_arrays``'s result)."""
    inputs, masks = prepare(job.slices, job.spec)
    res = explain_arrays(job.model, job.spec, inputs, masks, settings, target=target)
    meta = {"workdir": job.workdir, "model": job.spec.label,
            "methods": {m: settings.describe(job.model, m) for m in settings.methods}}
    return write_explanations(job.out_dir, job.slices, res, masks, meta), res


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
    stems = output_stems([s.path for s in slices])
    records = []
    for i, (s, stem) in enumerate(zip(slices, stems)):
        for m, raw in res["raw"].items():
            np.save(out_dir / f"{stem}_{_file_tag(m)}.npy", raw[i])
            heat = display_heat(raw[i], m, s.shape)
            overlay = figures.overlay_rgb(s.image, [(s.mask, figures.MASK_GREEN)], heat=heat, outline_px=1)
            Image.fromarray(overlay).save(out_dir / f"{stem}_{_file_tag(m)}.png")
        records.append(_image_record(i, s, stem, res, masks))
    doc = {**meta, "task": res["task"], "images": records, "localisation": res["localisation"]}
    path = workdir.write_json(out_dir / workdir.EXPLAIN_JSON, doc)
    with open(out_dir / workdir.EXPLAIN_CSV, "w", newline="") as f:
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
