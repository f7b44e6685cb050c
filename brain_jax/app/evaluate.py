"""``brain-jax eval``: evaluate a workdir's trained model on a split; results, figures and a table.

Everything that can fail (config/workdir mismatch, no checkpoint, missing dataset) fails before
anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections

from brain_jax import workdir
from brain_jax.app import figures
from brain_jax.train import builders
from brain_jax.train.checkpoints import has_checkpoint
from brain_jax.train.data import PipelineData
from brain_jax.train.evaluate import evaluate_model
from brain_jax.train.trainer import check_workdir


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


def evaluate_workdir(config: ml_collections.ConfigDict, wd: str | Path, *, split: str | None = None,
                     keep_samples: int = 4) -> dict[str, Any]:
    """Evaluate a workdir's best (else latest) checkpoint on ``split``; writes metrics.json and figures."""
    wd = Path(wd)
    builders.validate_config(config)
    if not has_checkpoint(wd):
        raise FileNotFoundError(f"{wd}: no checkpoint to evaluate; run `brain-jax train` with this workdir first")
    check_workdir(config, wd)
    split = split or str(config.data.eval_split)
    task = config.data.task
    names = builders.class_names(config)
    batches = PipelineData(config).eval_batches(split)  # a missing dataset / unknown split fails here
    model = builders.load_model_from_workdir(wd, builders.compute_dtype(config))
    summary, samples = evaluate_model(model, batches, task=task, class_names=names,
                                      keep_samples=keep_samples if task == "segmentation" else 0)
    summary["class_names"] = list(names)
    meta = {"model": f"{config.model.name}-{config.model.variant}", "dataset": str(config.data.name),
            "split_by": str(config.data.split_by)}
    figs = []
    path = wd / workdir.METRICS
    if jax.process_index() == 0:
        fig_dir = wd / workdir.FIGURES
        if task == "classification":
            figs.append(figures.confusion_matrix_png(summary["confusion_matrix"], names,
                                                     fig_dir / "confusion_matrix.png"))
        elif samples["images"]:
            figs.append(figures.overlays_png(samples["images"], samples["masks"], samples["preds"],
                                             fig_dir / "overlays.png", spacing_mm=samples["spacing_mm"]))
        path = workdir.update_metrics(wd, task, split, summary, meta)
    return {"summary": summary, "samples": samples, "class_names": names, "figures": figs, "split": split,
            "metrics_json": path}
