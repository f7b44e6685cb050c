"""``brain-jax eval``: evaluate a workdir's trained model on a split; results, figures and a table.

For each split evaluated it writes, beside the summary in metrics.json (one section per split):

- the predictions CSV (``brain_jax.workdir.write_predictions``): one row per example with its id, source, patient or
  duplicate group, label, predicted class and probabilities (segmentation: Dice, IoU, HD, HD95, areas);
- 95 % cluster-bootstrap intervals of every headline metric (``intervals``: patients, else duplicate
  groups, else slices resampled; method, resamples and seed recorded), per class also specificity and
  one-vs-rest AUROC, and the same metrics per source (``per_source``: a shortcut, e.g. every "no tumour"
  image from one source, shows as a source scored far above the others);
- figures: the confusion matrix, or Fig. 10's best / median / worst case by Dice;
- ``composition.*``: the class x source x split table of the config's splits.

Everything that can fail (config/workdir mismatch, no checkpoint, missing dataset) fails before
anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np

import input_pipeline
from brain_jax import N_RESAMPLES, workdir
from brain_jax.app import figures, results
from brain_jax.app.tables import class_entry, interval_note, interval_text
from brain_jax.metrics import stats
from brain_jax.train import model_factory
from brain_jax.train.data import PipelineData
from brain_jax.train.evaluate import Evaluator, SplitResult, reconstructions
from brain_jax.train.spec import RunSpec, check_workdir
from input_pipeline.augment import StepInputs

SEG_METRICS = ("dice", "iou", "hd_mm", "hd95_mm")


# ------------------------------------------------------------------------------------------ tables


def print_table(summary: dict[str, Any], task: str, class_names: Sequence[str]) -> str:
    """Human-readable summary with 95 % intervals (per-class table for classification, per-source lines)."""
    ci = summary.get("intervals")
    lines = []
    if task == "fcmae":
        return (f"held-out masked-patch loss {summary['loss']:.4f} (fixed masks, ratio {summary.get('mask_ratio')}, "
                f"norm_pix_loss {summary.get('norm_pix_loss')}) over {summary['num_examples']} slices")
    if task == "segmentation":
        for k in SEG_METRICS:
            if k in summary:
                shown = interval_text(ci[k]) if ci and k in ci else f"{summary[k]:.4f}"
                lines.append(f"{k:>18}: {shown}")
        for k in ("miou", "num_cases", "num_missed", "num_missed_tumour", "num_false_alarm", "num_empty_both"):
            if k in summary:
                v = summary[k]
                lines.append(f"{k:>18}: {v:.4f}" if isinstance(v, float) else f"{k:>18}: {v}")
    else:
        head = (f"accuracy {interval_text(ci['accuracy'])}   macro F1 {interval_text(ci['macro_f1'])}" if ci else
                f"accuracy {summary['accuracy']:.4f}   macro F1 {summary['macro_f1']:.4f}")
        lines.append(f"{head}   examples: {summary.get('num_examples', '?')}")
        width = max(len(c) for c in class_names) + 2
        if ci:
            pc = ci["per_class"]
            lines.append(f"{'class':<{width}} {'precision':>9} {'recall (sensitivity)':>32} {'specificity':>11} "
                         f"{'f1':>6} {'auroc':>6} {'support':>8}")
            for i, name in enumerate(class_names):
                auroc = pc["auroc"]["estimate"][i] if "auroc" in pc else float("nan")
                lines.append(f"{name:<{width}} {pc['precision']['estimate'][i]:9.4f} "
                             f"{interval_text(class_entry(pc, 'recall', i)):>32} "
                             f"{pc['specificity']['estimate'][i]:11.4f} "
                             f"{pc['f1']['estimate'][i]:6.4f} {auroc:6.4f} {int(summary['support'][i]):8d}")
        else:
            lines.append(f"{'class':<{width}} precision  recall     f1  support")
            for i, name in enumerate(class_names):
                lines.append(f"{name:<{width}} {summary['precision'][i]:9.4f} {summary['recall'][i]:7.4f} "
                             f"{summary['f1'][i]:6.4f} {int(summary['support'][i]):8d}")
    for src, s in (summary.get("per_source") or {}).items():
        key = "accuracy" if task == "classification" else "dice"
        lines.append(f"  {src}: {key} {interval_text(s[key])} (n={s['num_examples']})")
    if ci:
        lines.append(interval_note(ci["interval"]))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ uncertainty


def _with_unit(block: dict[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    block["interval"] = dict(block["interval"], resampled_unit=results.unit_name(counts),
                             examples_by_unit_kind=dict(counts))
    return block


def intervals_for(task: str, examples: Mapping[str, np.ndarray], ids: Mapping[str, np.ndarray], num_classes: int,
                  *, n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Cluster-bootstrap intervals of a task's metrics over the given examples (resampling unit from ``ids``)."""
    clusters, kind, counts = results.resampling_clusters(ids)
    opts = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    if task == "classification":
        block = stats.classification_intervals(examples["label"], examples["pred"], examples["probs"], clusters,
                                               kind, num_classes=num_classes, **opts)
    else:
        block = stats.segmentation_intervals({k: examples[k] for k in SEG_METRICS}, clusters, kind, **opts)
    return _with_unit(block, counts)


def per_source(task: str, examples: Mapping[str, np.ndarray], ids: Mapping[str, np.ndarray], num_classes: int,
               **opts: Any) -> dict[str, Any]:
    """Headline metrics with intervals for each source of the split (only when there are several)."""
    sources = list(dict.fromkeys(ids["source"].tolist()))
    if len(sources) < 2:
        return {}
    out = {}
    for src in sources:
        rows = np.flatnonzero(ids["source"] == src)
        ex = {k: v[rows] for k, v in examples.items()}
        block = intervals_for(task, ex, {k: v[rows] for k, v in ids.items()}, num_classes, **opts)
        entry: dict[str, Any] = {"num_examples": len(rows), "interval": block["interval"]}
        if task == "classification":
            entry |= {"accuracy": block["accuracy"], "macro_f1": block["macro_f1"],
                      "recall": block["per_class"]["recall"],
                      "support": np.bincount(ex["label"], minlength=num_classes).tolist()}
        else:
            entry |= {k: block[k] for k in SEG_METRICS}
            entry["num_missed"] = int(np.sum(ex["missed_tumour"] | ex["false_alarm"]))
        out[src] = entry
    return out


def add_uncertainty(summary: dict[str, Any], res: SplitResult, task: str, num_classes: int, **opts: Any) -> None:
    """Put ``intervals``, per-class specificity / AUROC and ``per_source`` into an evaluation summary."""
    block = intervals_for(task, res.examples, res.ids, num_classes, **opts)
    summary["intervals"] = block
    if task == "classification":
        pc = block["per_class"]
        summary["per_class"] = dict(summary.get("per_class", {}), specificity=pc["specificity"]["estimate"],
                                    auroc=pc["auroc"]["estimate"])
        summary["macro_auroc"] = block["macro_auroc"]["estimate"]
    summary["per_source"] = per_source(task, res.examples, res.ids, num_classes, **opts)


# ------------------------------------------------------------------------------------------ the verb


def _fig10(ev: Evaluator, data: PipelineData, split: str, res: SplitResult) -> list[dict[str, Any]]:
    """The best / median / worst cases by Dice with their images and predictions (a second, cheap pass)."""
    ex = res.examples
    chosen = results.chosen_cases(ex["dice"], ex["true_area_mm2"], res.ids["example_id"])
    fetched = ev.cases(data.eval_batches(split), [row for _, row in chosen])
    return [{"rank": rank, "row": row, "example_id": str(res.ids["example_id"][row]), "dice": float(ex["dice"][row]),
             "hd95_mm": float(ex["hd95_mm"][row]), **fetched[row]} for rank, row in chosen if row in fetched]


def _composition(config: ml_collections.ConfigDict, wd: Path) -> tuple[list[Path], list[str]]:
    """composition.* for the run's splits; a note instead when a split of the config cannot be read."""
    try:
        comp = input_pipeline.split_composition(config.data)
    except (ValueError, FileNotFoundError) as e:
        return [], [f"split composition not written: {e}"]
    return list(input_pipeline.write_composition(comp, wd).values()), []


def evaluate_pretraining(config: ml_collections.ConfigDict, wd: Path, model: Any, data: PipelineData, split: str,
                         spec: RunSpec, *, n_panel: int = 8) -> dict[str, Any]:
    """An FCMAE workdir on ``split``: the held-out masked-patch loss under the fixed evaluation masks (the
    trainer's, comparable across steps) into metrics.json, and the reconstruction panel into figures/."""
    inputs = StepInputs.from_data_config(config.data, int(config.seed), train=False)
    res = Evaluator(model, task="fcmae", class_names=(), inputs=inputs, seed=int(config.seed)).split(
        data.eval_batches(split), keep_examples=False)
    summary = dict(res.summary, mask_ratio=float(model.config.mask_ratio),
                   norm_pix_loss=bool(model.config.norm_pix_loss),
                   split_protocol=input_pipeline.split_protocol(config.data))
    rec = reconstructions(model, data.eval_batches(split), inputs, seed=int(config.seed), limit=n_panel)
    summary["panel_mse"] = [float(v) for v in rec["mse"]]
    meta = {"model": f"fcmae-{spec.label}", "dataset": str(config.data.name), "split_by": str(config.data.split_by)}
    figs, path = [], wd / workdir.METRICS
    if jax.process_index() == 0:
        figs.append(figures.reconstruction_panel_png(
            rec["image"], rec["hidden"], rec["reconstruction"], rec["mse"],
            wd / workdir.FIGURES / workdir.RECONSTRUCTION_PNG,
            titles=[f"{split} slice {i}" for i in range(len(rec["mse"]))]))
        path = workdir.update_metrics(wd, "fcmae", split, summary, meta)
    return {"summary": summary, "cases": [], "class_names": (), "spec": spec, "model": model, "figures": figs,
            "split": split, "metrics_json": path, "predictions_csv": None, "composition": [], "notes": []}


def evaluate_workdir(config: ml_collections.ConfigDict, wd: str | Path, *, split: str | None = None,
                     n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = 0.95,
                     composition: bool = True) -> dict[str, Any]:
    """Evaluate a workdir's best (else latest) checkpoint on ``split``; writes metrics.json, the predictions
    CSV, figures and (``composition``) the split composition of the config (process 0)."""
    wd = Path(wd)
    spec = RunSpec.from_config(config)
    if not workdir.has_checkpoint(wd):
        raise FileNotFoundError(f"{wd}: no checkpoint to evaluate; run `brain-jax train` with this workdir first")
    check_workdir(spec, wd)
    split = split or str(config.data.eval_split)
    task, names = spec.task, spec.class_names
    data = PipelineData(config, spec)
    batches = data.eval_batches(split)  # a missing dataset / unknown split fails here
    # the architecture is the workdir's own (model.json, else its config.json), as trained
    model = model_factory.load_model_from_workdir(wd, model_factory.dtype_of(spec.dtype))
    if task == "fcmae":
        return evaluate_pretraining(config, wd, model, data, split, spec)
    ev = Evaluator(model, task=task, class_names=names,
                   inputs=StepInputs.from_data_config(config.data, int(config.seed), train=False))
    res = ev.split(batches)
    if res.ids is None:
        raise ValueError(f"split {split!r}: evaluation batches carry no example ids ({', '.join(workdir.ID_COLUMNS)})")
    summary = res.summary
    add_uncertainty(summary, res, task, len(names), n_resamples=n_resamples, seed=seed, confidence=confidence)
    protocol = input_pipeline.split_protocol(config.data)
    csv_path = workdir.predictions_csv(wd, split)
    summary |= {"class_names": list(names), "dataset": str(config.data.name), "split_protocol": protocol,
                "predictions_csv": csv_path.name}
    cases = _fig10(ev, data, split, res) if task == "segmentation" else []
    if cases:
        summary["fig10_cases"] = [{k: c[k] for k in ("rank", "example_id", "dice", "hd95_mm")} for c in cases]
    meta = {"model": spec.label, "dataset": str(config.data.name),
            "split_by": str(config.data.split_by), "split_protocol": protocol}
    figs, comp, notes, path = [], [], [], wd / workdir.METRICS
    if jax.process_index() == 0:
        workdir.write_predictions(csv_path, res.ids, res.examples, task, names)
        fig_dir = wd / workdir.FIGURES
        if task == "classification":
            figs += figures.confusion_matrix_pngs(summary["confusion_matrix"], names, fig_dir, normalized=False)
        elif cases:
            figs.append(figures.overlays_png(
                [c["image"] for c in cases], [c["mask"] for c in cases], [c["pred"] for c in cases],
                fig_dir / workdir.OVERLAYS_PNG, spacing_mm=[c.get("spacing_mm") for c in cases],
                titles=[f"{c['rank']} Dice {c['dice']:.3f}\n{c['example_id']}" for c in cases]))
        comp, notes = _composition(config, wd) if composition else ([], [])
        path = workdir.update_metrics(wd, task, split, summary, meta)
    return {"summary": summary, "cases": cases, "class_names": names, "spec": spec, "model": model,
            "figures": figs, "split": split, "metrics_json": path, "predictions_csv": csv_path, "composition": comp,
            "notes": notes}
