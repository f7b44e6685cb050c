"""The app's text: interval text, markdown tables, and the markdown of compare, suite and study results.

``interval_text`` / ``interval_note`` render an interval entry / block (console and markdown alike);
``table`` renders a markdown table (cells through ``fmt``). ``compare_markdown``, ``suite_markdown`` and
``leakage_markdown`` render the JSON that ``compare``, ``suite`` and ``study leakage`` write, for their own
``.md`` files and for ``report``. This module imports no verb: ``report`` renders those files without
loading the verbs that made them (and the training loop behind ``suite`` and ``study``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from brain_jax import workdir
from brain_jax.app.figures import is_number

# ------------------------------------------------------------------------------------------ cells and tables

FMT = "{:.4f}"


def fmt(v: Any) -> str:
    """A table cell: floats with 4 decimals, a pair of numbers as [low, high], anything else as str."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return FMT.format(v) if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(x) for x in v):
        return f"[{fmt(float(v[0]))}, {fmt(float(v[1]))}]"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table's lines, every cell through ``fmt``."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return out


# ------------------------------------------------------------------------------------------ intervals

COVERAGE_NOTE = ("Percentile cluster-bootstrap intervals run a little narrow at accuracies near 0.99: in "
                 "simulations with clustered test sets their 95% intervals covered the true value 91-92% of "
                 "the time.")


def interval_text(entry: Any, digits: int = 4) -> str:
    """``0.9312 [0.9100, 0.9500]`` from an {"estimate", "low", "high"} entry (the estimate alone without bounds)."""
    if not isinstance(entry, Mapping) or "estimate" not in entry:
        return "" if entry is None else str(entry)
    f = f"{{:.{digits}f}}"
    est = f.format(entry["estimate"]) if entry["estimate"] is not None else "n/a"
    lo, hi = entry.get("low"), entry.get("high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return est
    return f"{est} [{f.format(lo)}, {f.format(hi)}]"


def interval_note(meta: Mapping[str, Any]) -> str:
    """One line saying how an interval block was made."""
    return (f"{100 * meta['confidence']:g}% intervals: {meta['method']} cluster bootstrap, {meta['n_resamples']} "
            f"resamples of {meta['n_units']} {meta['resampled_unit']} units ({meta['n_examples']} examples), "
            f"seed {meta['seed']}")


# ------------------------------------------------------------------------------------------ compare


def _p(v: float) -> str:
    return f"{v:.2e}" if v < 1e-3 else f"{v:.4f}"


def compare_markdown(c: Mapping[str, Any], figures: bool = True) -> str:
    """compare.md from ``brain_jax.app.compare.compare_runs``' result (with ``figures``, links to the PNGs
    beside it)."""
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
        shown = [f for f in (workdir.MODEL_COMPARISON_PNG, workdir.PER_CLASS_PNG, workdir.DIFFERENCES_PNG)
                 if f != workdir.PER_CLASS_PNG or c["task"] == "classification"]
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in shown]
    return "\n".join(lines).rstrip() + "\n"


def _classification_md(c: Mapping[str, Any], alpha: float) -> list[str]:
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


def _segmentation_md(c: Mapping[str, Any], alpha: float) -> list[str]:
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


# ------------------------------------------------------------------------------------------ suite


def suite_markdown(t: Mapping[str, Any]) -> str:
    """suite.md from ``brain_jax.app.suite.aggregate``'s table."""
    mode, tags = t["mode"], t["runs"]
    unit = "fold" if mode == "folds" else "seed"
    lines = [f"# Suite: {len(tags)} {mode} ({t['task']})", "", f"Data: `{t['dataset']}`.", "",
             f"| {unit} | split protocol |", "|---|---|"]
    lines += [f"| {tag} | {p} |" for tag, p in t["split_protocol"].items()]
    lines += ["",
             "Each cell: the test-set estimate [95% cluster-bootstrap interval]; last column: mean ± sd over "
             f"{mode}.", ""]
    for k in t["metrics"]:
        lines += [f"## {k}", "", "| model | " + " | ".join(tags) + " | mean ± sd |",
                  "|---|" + "---|" * (len(tags) + 1)]
        for m, rows in t["rows"].items():
            agg = t["per_model"][m][k]
            lines.append(f"| {m} | " + " | ".join(interval_text(r[k]) for r in rows)
                         + f" | {agg['mean']:.4f} ± {agg['sd']:.4f} |")
        lines.append("")
    if t["pairs"]:
        lines += [f"## Paired per-{unit} differences (A − B, same test set in each {unit})", ""]
        for k in t["metrics"]:
            lines += [f"### {k}", "", "| A − B | " + " | ".join(tags) + f" | mean ± sd | {mode} with A higher |",
                      "|---|" + "---|" * (len(tags) + 2)]
            for p in t["pairs"]:
                lines.append(f"| {p['models'][0]} − {p['models'][1]} | "
                             + " | ".join(f"{p['per_run'][k][tag]:+.4f}" for tag in tags)
                             + f" | {p[k]['mean']:+.4f} ± {p[k]['sd']:.4f} | {p[k]['runs_a_higher']} of {len(tags)} |")
            lines.append("")
    lines += ["## Spread", ""]
    for m in t["rows"]:
        for k in t["metrics"]:
            agg = t["per_model"][m][k]
            lines.append(f"- {m}, {k}: sd over {mode} {agg['sd']:.4f}; mean width of one test set's 95% bootstrap "
                         f"interval {agg['mean_interval_width']:.4f}")
    if mode == "seeds":
        lines += ["", "Every seed is scored on the same test set: the sd over seeds is training randomness "
                  "(initialisation, batch order, augmentation) alone, while each bootstrap interval is the "
                  "uncertainty from sampling the test set. Neither contains the other."]
    else:
        lines += ["", "The sd over folds mixes training randomness and test-set differences; the folds share most "
                  "of their training data, so it understates the uncertainty of the mean, and no test over folds "
                  "is given. The per-fold bootstrap intervals show each test set's own uncertainty."]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ study leakage


def leakage_markdown(study: Mapping[str, Any], figures: bool = True) -> str:
    """leakage.md from ``brain_jax.app.study.run_leakage``'s study dict (with ``figures``, a link to its PNG).

    Rows follow the dict: its arms in the order the study wrote them (random, then group) and every metric
    entry of its difference (accuracy, macro-F1), so a leakage.json read back renders as it was written.
    """
    arms, diff = study["arms"], study["difference"]
    metrics = [m for m, entry in diff.items() if isinstance(entry, Mapping)]
    lines = ["# Leakage study: random slice-level split vs split by patient / duplicate group", "",
             f"Config `{study['config']}`" + (f" with {' '.join(study['overrides'])}" if study["overrides"] else "")
             + f", pool `{study['dataset']}`.", "",
             "| split protocol | test examples | accuracy | macro-F1 | test images with an exact copy in training "
             "| with only a near copy |", "|---|---:|---|---|---:|---:|"]
    for r in arms.values():
        c = r["copies_in_training"]
        exact, near = (f"{c[x]} ({100 * c[x] / max(c['num_examples'], 1):.0f}%)" for x in ("exact", "near"))
        lines.append(f"| {r['protocol']} | {r['n_test']} | {interval_text(r['accuracy'])} | "
                     f"{interval_text(r['macro_f1'])} | {exact} | {near} |")
    lines += ["", "## Inflation (random − group)", "", "| metric | difference [95% interval] | verdict |",
              "|---|---|---|"]
    for m in metrics:
        lines.append(f"| {m} | {interval_text(diff[m])} | {diff[m]['verdict']} |")
    lines += ["", f"Interval of the difference: {diff['method']}, {diff['n_resamples']} resamples, seeds "
              f"{diff['seeds'][0]} and {diff['seeds'][1]}. The two protocols test on different images, so the "
              "difference is not paired. Each arm's own interval: "
              + interval_note(next(iter(arms.values()))["interval"]) + ".", "",
              "A copy of a test image in the training split lets a model score by recognising the image rather "
              "than the tumour; the random split's higher score measures that leak, not a better model."]
    if figures:
        lines += ["", f"![leakage]({workdir.FIGURES}/{workdir.LEAKAGE_PNG})"]
    return "\n".join(lines) + "\n"
