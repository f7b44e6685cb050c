"""``brain-jax compare WORKDIR... --out DIR``: which model is better, by how much, and how sure we are.

Reads each workdir's predictions CSV of one split (``brain-jax eval`` writes it), checks that every model
was scored on the same examples (same ids; rows are aligned by id) and writes to ``--out``:

- ``compare.md`` / ``compare.json``: every model's metrics with 95 % cluster-bootstrap intervals, the
  per-class precision / recall / F1 table (the paper's Table I layout) and, for every pair of models,
  the exact McNemar test on the discordant slices (what papers report; Holm-adjusted across pairs) and
  a paired cluster bootstrap of the accuracy and macro-F1 differences (patients / duplicate groups
  resampled, both models on the same resamples). Segmentation: mean Dice / IoU / HD / HD95 with
  intervals, the Wilcoxon signed-rank test on per-case Dice (Holm-adjusted) and the paired bootstrap
  of the mean-Dice difference;
- ``model_comparison.png`` (Fig. 9: overall bars with intervals), ``per_class.png`` (Fig. 9 per class)
  and ``differences.png`` (each pair's difference with its interval).

A difference whose interval covers 0 reads "no difference shown at α = 0.05": absence of evidence, never
evidence of equivalence.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brain_jax import workdir
from brain_jax.app import figures, results
from brain_jax.app.evaluate import N_RESAMPLES, intervals_for
from brain_jax.app.results import COVERAGE_NOTE, interval_note, interval_text
from brain_jax.metrics import stats



@dataclasses.dataclass
class Run:
    """One workdir's evaluation of the split: its name in tables and its per-example results."""

    name: str
    workdir: Path
    preds: results.Predictions
    dataset: str
    protocol: str


def eval_command(wd: Path, split: str) -> str:
    return f"brain-jax eval --workdir {wd} --split {split}"


def _model_name(wd: Path) -> str:
    cfg = workdir.read_config_dict(wd)
    model = cfg.get("model", {})
    return f"{model.get('name', '?')}-{model.get('variant', '?')}"


def _summary(wd: Path, split: str) -> dict[str, Any]:
    """The workdir's metrics.json section of ``split`` (either task), {} when there is none."""
    if not (wd / workdir.METRICS).is_file():
        return {}
    metrics = workdir.read_metrics(wd)
    return next((metrics[t][split] for t in workdir.TASKS if split in metrics.get(t, {})), {})


def load_runs(workdirs: Sequence[str | Path], split: str, names: Sequence[str] | None = None) -> list[Run]:
    """The predictions of ``split`` in every workdir; one FileNotFoundError listing the eval commands to run
    for those without, ValueError for a workdir that is not one."""
    wds = [Path(w) for w in workdirs]
    if len(wds) < 2:
        raise ValueError(f"compare needs at least two workdirs; got {len(wds)}")
    if names is not None and len(names) != len(wds):
        raise ValueError(f"--names gives {len(names)} names for {len(wds)} workdirs")
    for wd in wds:
        if not workdir.has_run(wd):
            raise FileNotFoundError(f"{wd}: not a training workdir (no {workdir.CONFIG})")
    missing = [wd for wd in wds if not workdir.predictions_csv(wd, split).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no predictions for split {split!r} in {', '.join(map(str, missing))}; evaluate "
            f"{'it' if len(missing) == 1 else 'them'} first: " + "; ".join(eval_command(w, split) for w in missing))
    labels = list(names) if names is not None else [_model_name(wd) for wd in wds]
    if len(set(labels)) < len(labels):  # the same architecture twice: tell them apart by folder
        labels = [f"{n} ({wd.name})" for n, wd in zip(labels, wds)]
    if len(set(labels)) < len(labels):
        labels = [f"{n} #{i + 1}" for i, n in enumerate(labels)]
    runs = []
    for name, wd in zip(labels, wds):
        summary = _summary(wd, split)
        cfg = workdir.read_config_dict(wd)
        runs.append(Run(name, wd, results.read_predictions(workdir.predictions_csv(wd, split)),
                        str(summary.get("dataset", cfg.get("data", {}).get("name", ""))),
                        str(summary.get("split_protocol", ""))))
    return runs


def align(runs: list[Run]) -> list[Run]:
    """Every run's rows in the first run's example order; ValueError when the example sets, tasks, classes
    or labels differ (with the differing ids counted)."""
    first = runs[0]
    ids0 = first.preds.ids["example_id"]
    pos0 = {e: i for i, e in enumerate(ids0.tolist())}
    out = [first]
    for r in runs[1:]:
        if r.preds.task != first.preds.task:
            raise ValueError(f"{r.workdir} holds {r.preds.task} results, {first.workdir} {first.preds.task}: "
                             "compare models of one task")
        if r.preds.class_names != first.preds.class_names:
            raise ValueError(f"{r.workdir} predicts classes {list(r.preds.class_names)}, {first.workdir} "
                             f"{list(first.preds.class_names)}: compare models with the same head")
        ids = r.preds.ids["example_id"].tolist()
        only_r = [e for e in ids if e not in pos0]
        only_0 = len(ids0) - (len(ids) - len(only_r))
        if only_r or only_0:
            example = f" (e.g. {only_r[0]!r})" if only_r else ""
            raise ValueError(
                f"{first.workdir} and {r.workdir} were evaluated on different example sets: {len(only_r)} examples "
                f"of {r.workdir}{example} are not in {first.workdir}, {only_0} of {first.workdir} are not in "
                f"{r.workdir}. Evaluate every model on the same split with the same data settings")
        order = np.argsort([pos0[e] for e in ids])
        aligned = dataclasses.replace(r, preds=r.preds.take(order))
        if first.preds.task == "classification":
            bad = int(np.sum(aligned.preds.label != first.preds.label))
            if bad:
                raise ValueError(f"{r.workdir} and {first.workdir} give {bad} examples different labels: the "
                                 "same ids must come from the same data")
        out.append(aligned)
    return out


def _classification(runs: list[Run], opts: dict[str, Any]) -> dict[str, Any]:
    first = runs[0].preds
    k = len(first.class_names)
    blocks = {r.name: intervals_for("classification", {"label": r.preds.label, "pred": r.preds.pred,
                                                        "probs": r.preds.probs}, r.preds.ids, k, **opts)
              for r in runs}
    clusters, kind, _ = results.resampling_clusters(first.ids)
    pairs = stats.pairwise_comparisons(first.label, {r.name: r.preds.pred for r in runs}, clusters, kind,
                                       num_classes=k, **opts)
    return {"metrics": blocks, "pairs": pairs}


def _segmentation(runs: list[Run], opts: dict[str, Any]) -> dict[str, Any]:
    first = runs[0].preds
    blocks = {}
    for r in runs:
        block = intervals_for("segmentation", r.preds.values, r.preds.ids, 0, **opts)
        block["num_missed_tumour"] = int(r.preds.values["missed_tumour"].sum())
        block["num_false_alarm"] = int(r.preds.values["false_alarm"].sum())
        blocks[r.name] = block
    clusters, kind, _ = results.resampling_clusters(first.ids)
    pairs = stats.pairwise_segmentation_comparisons({r.name: r.preds.values["dice"] for r in runs}, clusters, kind,
                                                    **opts)
    return {"metrics": blocks, "pairs": pairs}


def compare_runs(runs: list[Run], *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, Any]:
    """The comparison of aligned runs as a JSON-able dict (see the module docstring)."""
    runs = align(runs)
    opts = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    first = runs[0].preds
    body = _classification(runs, opts) if first.task == "classification" else _segmentation(runs, opts)
    meta = next(iter(body["metrics"].values()))["interval"]
    notes = []
    protocols = {r.protocol for r in runs if r.protocol}
    if len(protocols) > 1:
        notes.append(f"the runs were trained under different split protocols: {sorted(protocols)}")
    return {
        "task": first.task,
        "split_protocol": protocols.pop() if len(protocols) == 1 else "",
        "dataset": runs[0].dataset,
        "class_names": list(first.class_names),
        "n_examples": len(first),
        "interval": meta,
        "models": [{"name": r.name, "workdir": str(r.workdir), "predictions_csv": str(r.preds.path)} for r in runs],
        "metrics": body["metrics"],
        "pairs": body["pairs"],
        "notes": notes,
    }


# ------------------------------------------------------------------------------------------ outputs


def _p(v: float) -> str:
    return f"{v:.2e}" if v < 1e-3 else f"{v:.4f}"


def markdown(c: dict[str, Any], figures: bool = True) -> str:
    """compare.md from ``compare_runs``' result (with ``figures``, links to the PNGs beside it)."""
    alpha = round(1 - c["interval"]["confidence"], 10)
    lines = [f"# Model comparison ({c['task']}, split `{c['split']}`, {c['n_examples']} examples)", ""]
    if c["dataset"] or c["split_protocol"]:
        lines += [f"Data: `{c['dataset']}`; split protocol: {c['split_protocol'] or 'not recorded'}.", ""]
    lines += [interval_note(c["interval"]) + ".", ""]
    if c["task"] == "classification":
        lines += _classification_md(c, alpha)
    else:
        lines += _segmentation_md(c, alpha)
    lines += ["## How to read this", "",
              f"- An interval of a difference that covers 0 reads \"no difference shown at α = {alpha:g}\": the "
              "data cannot tell the models apart, which is not evidence of equivalence.",
              "- The bootstrap resamples whole patients / duplicate groups, so copies of one slice or slices of "
              "one patient do not count as independent evidence; the paired interval uses the same resamples "
              "for both models.",
              "- p (Holm) adjusts the test's p-values for the number of pairs compared (family-wise error at "
              f"α = {alpha:g}); the bootstrap verdicts are per pair, not adjusted.",
              f"- {COVERAGE_NOTE}", ""]
    lines += [f"- {n}" for n in c["notes"]]
    if figures:
        shown = [f for f in ("model_comparison.png", "per_class.png", "differences.png")
                 if f != "per_class.png" or c["task"] == "classification"]
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in shown]
    return "\n".join(lines).rstrip() + "\n"


def _classification_md(c: dict[str, Any], alpha: float) -> list[str]:
    names = c["class_names"]
    lines = ["## Models", "", "| model | accuracy | macro-F1 | balanced accuracy | macro AUROC |",
             "|---|---|---|---|---|"]
    for m, b in c["metrics"].items():
        lines.append(f"| {m} | " + " | ".join(interval_text(b[k]) for k in
                                             ("accuracy", "macro_f1", "balanced_accuracy", "macro_auroc")) + " |")
    lines += ["", "## Per class (Table I layout)", "",
              "| class | model | precision | recall (sensitivity) | F1 | specificity | AUROC |",
              "|---|---|---|---|---|---|---|"]
    for i, cls in enumerate(names):
        for m, b in c["metrics"].items():
            pc = b["per_class"]
            cells = [interval_text({k: pc[x][k][i] for k in ("estimate", "low", "high")}) if x in pc else ""
                     for x in ("precision", "recall", "f1", "specificity", "auroc")]
            lines.append(f"| {cls} | {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Pairs", "",
              "| A vs B | A right, B wrong | A wrong, B right | McNemar p | p (Holm) | accuracy A − B | "
              "macro-F1 A − B | verdict (accuracy) |", "|---|---:|---:|---|---|---|---|---|"]
    for p in c["pairs"]:
        mc = p["mcnemar"]
        lines.append(f"| {p['models'][0]} vs {p['models'][1]} | {mc['a_right_b_wrong']} | {mc['a_wrong_b_right']} | "
                     f"{_p(mc['p_value'])} | {_p(mc['p_holm'])} | {interval_text(p['accuracy_difference'])} | "
                     f"{interval_text(p['macro_f1_difference'])} | {p['accuracy_difference']['verdict']} |")
    lines += ["", f"McNemar's exact test counts slices (the unit papers report); it treats copies and slices of one "
              f"patient as independent. The differences' intervals resample {c['interval']['resampled_unit']} "
              "units.", ""]
    return lines


def _segmentation_md(c: dict[str, Any], alpha: float) -> list[str]:
    keys = ("dice", "iou", "hd95_mm", "hd_mm")
    lines = ["## Models", "", "| model | Dice | IoU | HD95 (mm) | HD (mm) | missed tumours | false alarms |",
             "|---|---|---|---|---|---:|---:|"]
    for m, b in c["metrics"].items():
        lines.append(f"| {m} | " + " | ".join(interval_text(b[k]) for k in keys)
                     + f" | {b['num_missed_tumour']} | {b['num_false_alarm']} |")
    lines += ["", "## Pairs", "", "| A vs B | Wilcoxon p (per-case Dice) | p (Holm) | mean Dice A − B | verdict |",
              "|---|---|---|---|---|"]
    for p in c["pairs"]:
        w = p["wilcoxon"]
        lines.append(f"| {p['models'][0]} vs {p['models'][1]} | {_p(w['p_value'])} ({w['method']}) | "
                     f"{_p(w['p_holm'])} | {interval_text(p['dice_difference'])} | {p['dice_difference']['verdict']} |")
    return lines + [""]


def write_figures(c: dict[str, Any], out: Path) -> list[Path]:
    """model_comparison.png, per_class.png (classification) and differences.png in ``out``."""
    keys = ("accuracy", "macro_f1") if c["task"] == "classification" else ("dice", "iou")
    values = {m: {k: b[k]["estimate"] for k in keys} for m, b in c["metrics"].items()}
    bounds = {m: {k: (b[k]["low"], b[k]["high"]) for k in keys} for m, b in c["metrics"].items()}
    paths = [figures.model_comparison_png(values, out / "model_comparison.png", intervals=bounds, keys=keys)]
    if c["task"] == "classification":
        paths.append(figures.per_class_bars_png({m: b["per_class"] for m, b in c["metrics"].items()},
                                                c["class_names"], out / "per_class.png"))
    diff = "accuracy_difference" if c["task"] == "classification" else "dice_difference"
    rows = [(f"{p['models'][0]} − {p['models'][1]}", p[diff]["estimate"], p[diff]["low"], p[diff]["high"])
            for p in c["pairs"]]
    paths.append(figures.forest_png(rows, out / "differences.png", title="paired differences, 95% intervals",
                                    xlabel=diff.replace("_", " ")))
    return paths


def compare(workdirs: Sequence[str | Path], out: str | Path, *, split: str = "test",
            names: Sequence[str] | None = None, n_resamples: int = N_RESAMPLES, seed: int = 0,
            confidence: float = 0.95) -> dict[str, Any]:
    """Compare the workdirs' evaluations of ``split``; write compare.json, compare.md and figures to ``out``."""
    c = compare_runs(load_runs(workdirs, split, names), n_resamples=n_resamples, seed=seed, confidence=confidence)
    c["split"] = split
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = write_figures(c, out)
    workdir.write_json(out / workdir.COMPARE_JSON, c)
    (out / workdir.COMPARE_MD).write_text(markdown(c))
    return {"comparison": c, "paths": [out / workdir.COMPARE_JSON, out / workdir.COMPARE_MD, *figs]}
