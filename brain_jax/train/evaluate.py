"""Evaluation over a whole split: sufficient statistics per batch (in jit), reduced on the host.

Writes nothing: the ``eval`` verb (``brain_jax.app.evaluate``) stores results and figures.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from brain_jax import metrics
from brain_jax.train import engine

def evaluate_split(
    eval_step: Callable,
    params: Any,
    batch_stats: Any,
    rest: Any,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    mesh: jax.sharding.Mesh,
    task: str,
    num_classes: int,
    class_names: Sequence[str],
    keep_samples: int = 0,
) -> tuple[dict[str, Any], dict[str, list]]:
    """(summary, samples) for one pass over ``batches``.

    Summary: classification -> ``classification_summary`` fields, confusion matrix, ECE, per-class
    table; segmentation -> mean Dice / IoU / HD / HD95 (mm, from each example's spacing), mIoU and
    the miss counts. Samples: up to ``keep_samples`` valid examples with their predictions (images,
    masks, preds, labels, spacing_mm) for figures.
    """
    multiple = engine.local_batch_multiple(mesh)
    if task == "segmentation":
        acc: Any = metrics.SegmentationAccumulator(num_classes)
    else:
        acc = metrics.ClassificationAccumulator(num_classes, class_names=list(class_names))
    samples: dict[str, list] = {"images": [], "masks": [], "preds": [], "labels": [], "spacing_mm": []}
    n_batches = 0
    for local in batches:
        local = engine.pad_local_batch(local, multiple)
        out = eval_step(params, batch_stats, rest, engine.to_global(local, mesh))
        acc.update(out["stats"])
        n_batches += 1
        if len(samples["images"]) < keep_samples:
            _keep(samples, local, metrics.to_host(out["pred"]), keep_samples, task)
    if n_batches == 0:
        raise ValueError("evaluation split yielded no batches")
    summary = acc.result()
    if task == "classification":
        summary["per_class"] = {k: summary[k] for k in ("precision", "recall", "f1", "support") if k in summary}
    return summary, samples


def _keep(samples: dict[str, list], local: dict[str, np.ndarray], pred: np.ndarray, limit: int, task: str) -> None:
    # ``pred`` is global; on one host it lines up with ``local``. On many hosts keep process 0's rows.
    n_local = len(local["valid"])
    offset = jax.process_index() * n_local if len(pred) > n_local else 0
    for i in range(n_local):
        if len(samples["images"]) >= limit:
            return
        ok = bool(local["valid"][i]) and (task != "segmentation" or bool(local.get("has_mask", [True] * n_local)[i]))
        if not ok:
            continue
        samples["images"].append(np.asarray(local["image"][i]))
        samples["masks"].append(np.asarray(local["mask"][i]) if "mask" in local else None)
        samples["preds"].append(np.asarray(pred[offset + i]))
        samples["labels"].append(int(local["label"][i]) if "label" in local else -1)
        samples["spacing_mm"].append(np.asarray(local["spacing_mm"][i]) if "spacing_mm" in local else None)


def scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a summary (for metrics.jsonl / TensorBoard)."""
    return {k: float(v) for k, v in summary.items() if isinstance(v, (int, float, np.floating, np.integer))
            and not isinstance(v, bool)}


def evaluate_model(
    model: Any,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    task: str,
    class_names: Sequence[str],
    mesh: jax.sharding.Mesh | None = None,
    keep_samples: int = 0,
) -> tuple[dict[str, Any], dict[str, list]]:
    """``evaluate_split`` for a built model (eval mode), e.g. one restored from a workdir."""
    parts = engine.split_model(model)
    mesh = mesh if mesh is not None else engine.make_mesh()
    step = jax.jit(engine.make_eval_step(parts, task))
    params = engine.replicate(parts.params, mesh)
    bs = engine.replicate(parts.batch_stats, mesh)
    rest = engine.replicate(parts.rest, mesh)
    return evaluate_split(step, params, bs, rest, batches, mesh=mesh, task=task,
                          num_classes=len(class_names), class_names=class_names, keep_samples=keep_samples)
