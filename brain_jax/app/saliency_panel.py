"""``eval --explain N`` and the demo's saliency panel: where a workdir's model looks on cases of a split.

``explain_split`` draws N cases per class of the evaluated split into ``figures/saliency.png`` (scan, map
for the predicted class, map for the true class when they differ; ``figures.saliency_panel_png``) and stores
localisation numbers, scored on the true class's maps, in metrics.json's ``"saliency"`` section, which
``report`` renders. The methods and their settings are ``brain-jax explain``'s (``brain_jax.app.explain``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from brain_jax import saliency, workdir
from brain_jax.app import figures
from brain_jax.app.explain import SEG_TARGET, Settings, compute_maps, display_heat, localisation
from brain_jax.train import forward, model_factory
from brain_jax.train.data import PipelineData
from brain_jax.train.spec import RunSpec, label_names


def _collect(batches: Any, k: int, num_groups: int, spec: RunSpec) -> dict[str, np.ndarray]:
    """The first ``k`` valid examples of each label, in split order: model input (the loader's 8-bit image
    with the weights' mean / std, as the eval step makes it), label, mask (zeros without one)."""
    keep: dict[str, list] = {"image": [], "label": [], "mask": []}
    count = np.zeros(num_groups, int)
    for b in batches:
        for i in np.flatnonzero(np.asarray(b["valid"])):
            y = int(b["label"][i])
            if count[y] < k:
                keep["image"].append(forward.normalise(np.asarray(b["image"][i], np.float32) / np.float32(255),
                                                       spec.input))
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
                  out: str | Path | None = None, spec: RunSpec | None = None, model: Any = None) -> dict[str, Any]:
    """Saliency panel and localisation numbers of a workdir's model on ``n_per_class`` cases per class of
    ``split`` (classification: per true class; segmentation: per tumour type, maps of the tumour class).

    Localisation is scored on the first ``scored_per_class`` (default ``n_per_class``) cases per class
    (those with a tumour mask), on the true class's maps. Writes ``OUT/figures/saliency.png`` and the ``"saliency"``
    section of ``OUT/metrics.json`` (OUT: ``out``, default the workdir, whose metrics.json must exist);
    returns ``{"section", "figure"}``. ``spec`` and ``model``: the run's and the workdir's, when the caller
    (``eval --explain``) already has them; else built from ``config`` and loaded from ``wd``.
    """
    if n_per_class < 1:
        raise ValueError(f"--explain {n_per_class}: expected a number of cases per class >= 1")
    wd, out = Path(wd), Path(out or wd)
    spec = spec if spec is not None else RunSpec.from_config(config)
    # the architecture is the workdir's own (model.json, else its config.json), as trained and evaluated
    if model is None:
        model = model_factory.load_model_from_workdir(wd, model_factory.dtype_of(spec.dtype))
    settings = Settings.checked(model, methods, layer=layer, ig_steps=ig_steps, baseline=baseline,
                                batch_size=int(config.eval_batch_size))
    task, groups = spec.task, label_names(config, spec)
    k = max(n_per_class, scored_per_class or n_per_class)
    cases = _collect(PipelineData(config, spec).eval_batches(split), k, len(groups), spec)
    if not len(cases["label"]):
        raise ValueError(f"split {split!r}: no examples to explain")
    x, labels, masks = cases["image"], cases["label"], cases["mask"]
    shown = np.flatnonzero(_first_per_label(labels, n_per_class))
    shown = shown[np.argsort(labels[shown], kind="stable")]  # the panel's rows grouped by class
    raw, raw_pred, probs, pred = _case_maps(model, spec, settings, x, labels, shown)
    scored = _first_per_label(labels, scored_per_class or n_per_class)
    loc = localisation({m: r[scored] for m, r in raw.items()}, masks[scored], labels[scored], groups)
    rows = [_panel_row(i, x, masks, labels, pred, probs, raw, raw_pred, groups, task) for i in shown]
    section = {"split": split, "n_per_class": n_per_class, "scored_per_class": scored_per_class or n_per_class,
               "scored_on": "true class" if task == "classification" else SEG_TARGET,
               "methods": {m: settings.describe(model, m) for m in settings.methods},
               "map_shape": {m: list(r.shape[1:3]) for m, r in raw.items()},
               "localisation": loc, "figure": f"{workdir.FIGURES}/{workdir.PANEL_PNG}"}
    figure = out / workdir.FIGURES / workdir.PANEL_PNG
    if jax.process_index() == 0:  # each process explains its own shard of the split; process 0's is kept
        figures.saliency_panel_png(rows, settings.methods, figure)
        write_section(out, section)
    return {"section": section, "figure": figure}


def _case_maps(model, spec: RunSpec, settings: Settings, x: np.ndarray, labels: np.ndarray, shown: np.ndarray):
    """Raw maps of every case (true class; segmentation: tumour), those of the predicted class for the
    ``shown`` cases it differs on, the probabilities (classification) and the predictions."""
    task, head = spec.task, spec.class_names
    seg_target = head.index(SEG_TARGET) if task == "segmentation" else -1
    targets = labels if task == "classification" else np.full(len(x), seg_target)
    raw, out_logits = compute_maps(model, x, targets, settings, spec.input)
    if out_logits is None:
        out_logits = forward.logits(model, x, settings.batch_size)
    probs = forward.softmax(out_logits) if task == "classification" else None
    pred = probs.argmax(axis=1) if task == "classification" else (out_logits.argmax(axis=-1) == seg_target).any((1, 2))
    wrong = [int(i) for i in shown if task == "classification" and pred[i] != labels[i]]
    raw_pred: dict[str, dict[int, np.ndarray]] = {m: {} for m in raw}
    if wrong:  # padded to the first pass's batch: no recompilation
        again, _ = compute_maps(model, x[wrong], pred[wrong], settings, spec.input,
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
        own = display_heat(r[i], m, size)
        if i in raw_pred[m]:
            maps[m] = {"pred": display_heat(raw_pred[m][i], m, size), "true": own}
        else:
            maps[m] = {"pred": own, "true": None}
    return {"image": x[i, ..., 0], "mask": masks[i], "title": title, "maps": maps}


def write_section(wd: str | Path, section: Mapping[str, Any]) -> Path:
    """Store ``section`` as metrics.json's ``"saliency"`` (the workdir's metrics.json must exist)."""
    data = workdir.read_metrics(wd)
    data[workdir.SALIENCY] = dict(section)
    return workdir.write_json(Path(wd) / workdir.METRICS, data)
