"""Evaluation over a whole split: sufficient statistics per batch (in jit), reduced on the host."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from brain_jax import metrics
from brain_jax.train import engine

# metrics.json uses the report's names for the segmentation case counts
_SEG_RENAMES = {"num_miss": "num_missed", "num_both_empty": "num_empty_both"}


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
            _keep(samples, local, engine.to_host(out["pred"]), keep_samples, task)
    if n_batches == 0:
        raise ValueError("evaluation split yielded no batches")
    summary = acc.result()
    if task == "segmentation":
        summary = {_SEG_RENAMES.get(k, k): v for k, v in summary.items()}
    else:
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


def print_table(summary: dict[str, Any], task: str, class_names: Sequence[str]) -> str:
    """Human-readable summary (per-class table for classification)."""
    lines = []
    if task == "segmentation":
        for k in ("dice", "iou", "miou", "hd95_mm", "hd_mm", "hd95_mm_detected", "num_cases", "num_missed",
                  "num_missed_tumour", "num_false_alarm",
                  "num_empty_both"):
            if k in summary:
                v = summary[k]
                lines.append(f"{k:>18}: {v:.4f}" if isinstance(v, float) else f"{k:>18}: {v}")
        return "\n".join(lines)
    lines.append(f"accuracy {summary['accuracy']:.4f}   macro F1 {summary['macro_f1']:.4f}   "
                 f"n={summary.get('num_examples', '?')}")
    width = max(len(c) for c in class_names) + 2
    lines.append(f"{'class':<{width}} precision  recall     f1  support")
    for i, name in enumerate(class_names):
        lines.append(f"{name:<{width}} {summary['precision'][i]:9.4f} {summary['recall'][i]:7.4f} "
                     f"{summary['f1'][i]:6.4f} {int(summary['support'][i]):8d}")
    return "\n".join(lines)


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


def evaluate_workdir(config, workdir, *, split: str | None = None, keep_samples: int = 4) -> dict[str, Any]:
    """Evaluate a workdir's best (else latest) checkpoint on ``split``; writes metrics.json and figures.

    Everything that can fail (config/workdir mismatch, no checkpoint, missing dataset) fails before
    anything is written.
    """
    from pathlib import Path

    from brain_jax.train import builders, report
    from brain_jax.train.checkpoints import has_checkpoint, load_model_from_workdir
    from brain_jax.train.commands import update_metrics_json
    from brain_jax.train.trainer import check_workdir

    workdir = Path(workdir)
    builders.validate_config(config)
    if not has_checkpoint(workdir):
        raise FileNotFoundError(f"{workdir}: no checkpoint to evaluate; run `brain-jax train` with this workdir first")
    check_workdir(config, workdir)
    split = split or str(config.data.eval_split)
    task = config.data.task
    names = builders.class_names(config)
    data = builders.PipelineData(config)
    batches = data.eval_batches(split)  # a missing dataset / unknown split fails here
    model = load_model_from_workdir(workdir, builders.compute_dtype(config))
    summary, samples = evaluate_model(model, batches, task=task, class_names=names,
                                      keep_samples=keep_samples if task == "segmentation" else 0)
    meta = {"model": f"{config.model.name}-{config.model.variant}", "dataset": str(config.data.name),
            "split_by": str(config.data.split_by), f"{task}_split": split,
            f"{task}_workdir": str(workdir)}
    figures = []
    if jax.process_index() == 0:
        fig_dir = workdir / report.FIGURES_DIR
        if task == "classification":
            figures.append(report.confusion_matrix_png(summary["confusion_matrix"], names,
                                                       fig_dir / "confusion_matrix.png"))
        elif samples["images"]:
            figures.append(report.overlays_png(samples["images"], samples["masks"], samples["preds"],
                                               fig_dir / "overlays.png", spacing_mm=samples["spacing_mm"]))
        path = update_metrics_json(workdir, task, summary, meta)
    else:
        path = workdir / "metrics.json"
    return {"summary": summary, "samples": samples, "class_names": names, "figures": figures, "metrics_json": path}
