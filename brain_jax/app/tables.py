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

COVERAGE_NOTE = ("Measured coverage of the 95% intervals on simulated clustered test sets (BENCHMARKS.md): accuracy "
                 "95% at 23, 46 and 200 patients; BCa intervals (macro-F1, Dice; expanded for few patients) "
                 "93-94% at 23 and 46 patients, 95% at 200.")
_KEYS = ("estimate", "low", "high", "n_clusters")


def class_entry(per_class: Mapping[str, Any], metric: str, i: int) -> dict[str, Any]:
    """Class i's {"estimate", "low", "high"(, "n_clusters")} of a per-class interval block."""
    return {k: per_class[metric][k][i] for k in _KEYS if k in per_class[metric]}


def interval_text(entry: Any, digits: int = 4) -> str:
    """``0.9312 [0.9100, 0.9500] n=46`` from an {"estimate", "low", "high"(, "n_clusters")} entry: the estimate,
    its interval and the number of clusters behind it (the estimate alone without bounds)."""
    if not isinstance(entry, Mapping) or "estimate" not in entry:
        return "" if entry is None else str(entry)
    f = f"{{:.{digits}f}}"
    est = f.format(entry["estimate"]) if entry["estimate"] is not None else "n/a"
    lo, hi = entry.get("low"), entry.get("high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return est
    n = f" n={entry['n_clusters']}" if "n_clusters" in entry else ""
    return f"{est} [{f.format(lo)}, {f.format(hi)}]{n}"


def interval_note(meta: Mapping[str, Any]) -> str:
    """One line saying how an interval block was made (``n=`` beside an interval: the clusters behind it)."""
    method = meta["method"]
    if method == "percentile":  # written before the per-metric intervals
        method = "percentile cluster bootstrap"
    return (f"{100 * meta['confidence']:g}% intervals: {method}; {meta['n_resamples']} resamples (seed "
            f"{meta['seed']}) of {meta['n_units']} {meta['resampled_unit']} units ({meta['n_examples']} examples); "
            "n= the clusters behind each interval")


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
    lines += _models_md(c)
    if c["task"] == "classification":
        lines += _classification_md(c, alpha)
    else:
        lines += _segmentation_md(c, alpha)
    endpoint = "accuracy" if c["task"] == "classification" else "the slice-weighted mean Dice"
    lines += ["## How to read this", "",
              f"- The primary endpoint is {endpoint}; every other number is descriptive. The primary test swaps the "
              f"two models' predictions within each {c['interval']['resampled_unit']} cluster (exact for "
              "accuracy), so slices of one patient and copies of one slice count once; the verdict follows its "
              f"Holm-adjusted p across the pairs (family-wise error α = {alpha:g}). The difference's interval is "
              "simultaneous (Bonferroni level), so one that excludes 0 always goes with a Holm rejection.",
              f"- \"No difference shown at α = {alpha:g}\" means the data cannot tell the models apart; it is not "
              "evidence of equivalence.",
              "- Slice-level McNemar (and per-slice Wilcoxon) are shown as papers report them: they ignore "
              "patients and copies and call equal models different far above α.",
              f"- {COVERAGE_NOTE}", ""]
    lines += [f"- {n}" for n in c["notes"]]
    if figures:
        shown = [f for f in (workdir.MODEL_COMPARISON_PNG, workdir.PER_CLASS_PNG, workdir.DIFFERENCES_PNG)
                 if f != workdir.PER_CLASS_PNG or c["task"] == "classification"]
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in shown]
    return "\n".join(lines).rstrip() + "\n"


def _models_md(c: Mapping[str, Any]) -> list[str]:
    """What each model started from: a comparison across pre-training data or sizes is not one of architectures."""
    rows = [[m["name"], m.get("pretraining", "not recorded"), _count(m.get("backbone_parameters"))]
            for m in c["models"]]
    lines = ["## What each model started from", ""] + table(["model", "pre-training", "backbone parameters"], rows)
    starts = {r[1] for r in rows}
    sizes = [m.get("backbone_parameters") for m in c["models"] if m.get("backbone_parameters")]
    if len(starts) > 1 or (sizes and max(sizes) > 1.5 * min(sizes)):
        lines += ["", "The models differ in pre-training data or size: a difference below measures the whole "
                  "package (architecture, pre-training, size), not the architecture alone."]
    return lines + [""]


def _count(n: Any) -> str:
    return f"{n / 1e6:.1f} M" if isinstance(n, (int, float)) and n else "not recorded"


def _primary_rows(c: Mapping[str, Any], diff_key: str) -> list[str]:
    rows = []
    for p in c["pairs"]:
        pr, d = p["primary"], p[diff_key]
        rows.append([f"{p['models'][0]} vs {p['models'][1]}", f"{pr['n_clusters']} ({pr['n_discordant_clusters']})",
                     _p(pr["p_value"]), _p(pr["p_holm"]),
                     interval_text(d) + f" ({100 * d['confidence']:.4g}%)", pr["verdict"]])
    return table(["A vs B", "clusters (differing)", "swap-test p", "p (Holm)", "A − B [simultaneous interval]",
                  "verdict"], rows)


def _classification_md(c: Mapping[str, Any], alpha: float) -> list[str]:
    names = c["class_names"]
    lines = ["## Models", ""]
    rows = [[m] + [interval_text(b[k]) for k in ("accuracy", "macro_f1", "balanced_accuracy", "macro_auroc")]
            for m, b in c["metrics"].items()]
    lines += table(["model", "accuracy (primary)", "macro-F1", "balanced accuracy", "macro AUROC"], rows)
    lines += ["", "## Per class (Table I layout, descriptive)", ""]
    rows = []
    for i, cls in enumerate(names):
        for m, b in c["metrics"].items():
            pc = b["per_class"]
            rows.append([cls, m] + [interval_text(class_entry(pc, x, i)) if x in pc else ""
                                    for x in ("precision", "recall", "f1", "specificity", "auroc")])
    lines += table(["class", "model", "precision", "recall (sensitivity)", "F1", "specificity", "AUROC"], rows)
    lines += ["", "## Pairs: accuracy (primary endpoint)", ""] + _primary_rows(c, "accuracy_difference")
    lines += ["", "## Pairs: descriptive", ""]
    rows = [[f"{p['models'][0]} vs {p['models'][1]}", interval_text(p["macro_f1_difference"]),
             p["mcnemar_slices"]["a_right_b_wrong"], p["mcnemar_slices"]["a_wrong_b_right"],
             _p(p["mcnemar_slices"]["p_value"])] for p in c["pairs"]]
    lines += table(["A vs B", "macro-F1 A − B [95% BCa]", "slices A right, B wrong", "slices A wrong, B right",
                    "slice McNemar p (as papers report; ignores patients)"], rows)
    lines += ["", "### Per-class differences (A − B; swap-test p, unadjusted, descriptive)", ""]
    rows = []
    for p in c["pairs"]:
        pc = p["per_class"]
        for i, cls in enumerate(names):
            rows.append([f"{p['models'][0]} vs {p['models'][1]}", cls]
                        + [f"{pc[m]['difference'][i]:+.4f} (p {_p(pc[m]['p_value'][i])})"
                           for m in ("precision", "recall", "f1")])
    lines += table(["A vs B", "class", "precision", "recall", "F1"], rows) + [""]
    if c.get("claims"):
        lines += ["## Claims (intersection-union tests, each at α = " f"{alpha:g})", ""]
        rows = [[cl["claim"], cl["n_hypotheses"], _p(cl["p_value"]), cl["verdict"]] for cl in c["claims"]]
        lines += table(["claim", "one-sided tests", "p (largest)", "verdict"], rows)
        lines += ["", "A claim holds only when every one of its one-sided swap tests rejects; no adjustment is "
                  "needed, and a claim chosen after looking at the results is not covered by its α.", ""]
    return lines


def _segmentation_md(c: Mapping[str, Any], alpha: float) -> list[str]:
    keys = ("dice", "iou", "hd95_mm", "hd_mm")
    rows = [[m] + [interval_text(b[k]) for k in keys] + [b["num_missed_tumour"], b["num_false_alarm"]]
            for m, b in c["metrics"].items()]
    lines = ["## Models", ""] + table(["model", "Dice (primary)", "IoU", "HD95 (mm)", "HD (mm)", "missed tumours",
                                       "false alarms"], rows)
    lines += ["", "## Pairs: mean Dice (primary endpoint)", ""] + _primary_rows(c, "dice_difference")
    rows = [[f"{p['models'][0]} vs {p['models'][1]}",
             f"{_p(p['wilcoxon_slices']['p_value'])} ({p['wilcoxon_slices']['method']})"] for p in c["pairs"]]
    lines += ["", "## Pairs: descriptive", ""] + table(["A vs B", "per-slice Wilcoxon p (as papers report; ignores "
                                                         "patients)"], rows)
    return lines + [""]


# ------------------------------------------------------------------------------------------ suite


def suite_markdown(t: Mapping[str, Any]) -> str:
    """suite.md from ``brain_jax.app.suite.aggregate``'s table."""
    mode, tags = t["mode"], t["runs"]
    unit = "fold" if mode == "folds" else "seed"
    lines = [f"# Suite: {len(tags)} {mode} ({t['task']})", "", f"Data: `{t['dataset']}`.", "",
             f"| {unit} | split protocol |", "|---|---|"]
    lines += [f"| {tag} | {p} |" for tag, p in t["split_protocol"].items()]
    lines += [""] + [f"**Note:** {n}." for n in t.get("notes", [])] + ([""] if t.get("notes") else [])
    if t.get("pooled"):
        lines += _pooled_md(t["pooled"], t["metrics"])
    if t.get("two_level"):
        lines += _two_level_md(t["two_level"], len(tags))
    lines += ["Each cell: the test-set estimate [95% cluster-bootstrap interval]; last column: mean ± sd over "
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


def _pooled_md(pooled: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """The pooled out-of-fold section of suite.md (``suite.pool_folds``' block)."""
    k = len(pooled["folds"])
    lines = ["## Pooled out-of-fold (the headline)", "",
             f"Every patient is tested exactly once, by the model of the one fold (of {k}) that did not train on "
             f"them: the {pooled['n']} test predictions of the {k} folds, pooled, are the headline result. The "
             f"mean ± sd over folds further down is not: its folds share most of their training data and each "
             f"tests about 1/{k} of the patients. Each pooled prediction comes from one of {k} fold models, so the "
             "pooled numbers score the training recipe, not one trained model.", "",
             "| model | examples | clusters | " + " | ".join(metrics) + " |", "|---|---:|---:|" + "---|" * len(metrics)]
    for m, row in pooled["models"].items():
        lines.append(f"| {m} | {row['n']} | {row['n_clusters']} | "
                     + " | ".join(interval_text(row[x]) for x in metrics) + " |")
    lines += ["", "Each cell: the pooled estimate [95% interval, made as each fold's, with the patients / duplicate "
              "groups of the pooled set as clusters]."]
    if pooled.get("comparison"):
        lines += [f"Paired tests of the models on the pooled predictions: [{pooled['comparison']}]"
                  f"({pooled['comparison']})."]
    return lines + [""]


def _two_level_md(block: Mapping[str, Any], n_seeds: int) -> list[str]:
    """The two-level bootstrap section of a seed suite's suite.md (``suite.seed_bootstrap``' block)."""
    meta, metrics = block["interval"], block["metrics"]
    lines = ["## Over seeds and patients (two-level bootstrap)", "",
             f"Each model's mean over its {n_seeds} seeds [95% interval: {_two_level_note(meta)}]. The interval "
             "holds training randomness and test-set sampling together.", "",
             "| model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [f"| {m} | " + " | ".join(interval_text(row[x]) for x in metrics) + " |"
              for m, row in block["per_model"].items()]
    if block["pairs"]:
        lines += ["", "Paired differences (A − B; the clusters drawn once for both models, each model's seeds drawn "
                  "on their own; descriptive):", "", "| A − B | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        lines += [f"| {p['models'][0]} − {p['models'][1]} | " + " | ".join(interval_text(p[x]) for x in metrics)
                  + " |" for p in block["pairs"]]
    return lines + [""]


def _two_level_note(meta: Mapping[str, Any]) -> str:
    """How a two-level interval was made (``brain_jax.metrics.multilevel``' metadata)."""
    seeds = meta["n_seeds"] if not isinstance(meta["n_seeds"], list) else " and ".join(map(str, meta["n_seeds"]))
    drawn = "" if seeds == 1 else f"{seeds} seeds and "
    return (f"{meta['method']}, {meta['n_resamples']} resamples of {drawn}{meta['n_clusters']} "
            f"{meta['resampled_unit']} clusters ({meta['n_examples']} examples), bootstrap seed {meta['seed']}")


# ------------------------------------------------------------------------------------------ study leakage


def leakage_markdown(study: Mapping[str, Any], figures: bool = True) -> str:
    """leakage.md from ``brain_jax.app.study.run_leakage``'s study dict (with ``figures``, a link to its PNG).

    Rows follow the dict: its arms in the order the study wrote them (random, then group) and every metric
    entry of its difference (accuracy, macro-F1, balanced accuracy), so a leakage.json read back renders as it
    was written (one written before seeds, balanced accuracy and the split inside the random arm included).
    """
    arms, diff = study["arms"], study["difference"]
    metrics = [m for m, entry in diff.items() if isinstance(entry, Mapping)]
    run_seeds = next(iter(arms.values())).get("seeds", [])
    trained = f"; {len(run_seeds)} trainings per arm (run seeds {', '.join(map(str, run_seeds))})" \
        if len(run_seeds) > 1 else ""
    lines = ["# Leakage study: random slice-level split vs split by patient / duplicate group", "",
             f"Config `{study['config']}`" + (f" with {' '.join(study['overrides'])}" if study["overrides"] else "")
             + f", pool `{study['dataset']}`{trained}.", ""]
    if study.get("learning"):
        lines += [f"**Reading:** {study['learning']['verdict']}.", ""]
    lines += [f"**Note:** {n}." for n in study.get("notes", [])] + ([""] if study.get("notes") else [])
    names = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy"}
    shown = [m for m in names if m in next(iter(arms.values()))]
    lines += ["| split protocol | test examples | clusters | " + " | ".join(names[m] for m in shown)
              + " | test images with an exact copy in training | with only a near copy |",
              "|---|---:|---:|" + "---|" * len(shown) + "---:|---:|"]
    for r in arms.values():
        c = r["copies_in_training"]
        exact, near = (f"{c[x]} ({100 * c[x] / max(c['num_examples'], 1):.0f}%)" for x in ("exact", "near"))
        lines.append(f"| {r['protocol']} | {r['n_test']} | {r.get('n_clusters', '')} | "
                     + " | ".join(interval_text(r[m]) for m in shown) + f" | {exact} | {near} |")
    lines += ["", "## Inflation (random − group)", "", "| metric | difference [95% interval] | verdict |",
              "|---|---|---|"]
    for m in metrics:
        lines.append(f"| {names.get(m, m)} | {interval_text(diff[m])} | {diff[m]['verdict']} |")
    meta = next(iter(arms.values()))["interval"]
    own = _two_level_note(meta) if "n_seeds" in meta else interval_note(meta)
    lines += ["", f"Interval of the difference: {diff['method']}, {diff['n_resamples']} resamples, seeds "
              f"{diff['seeds'][0]} and {diff['seeds'][1]}. The two protocols test on different images, so the "
              f"difference is not paired. Each arm's own interval: {own}.", ""]
    if study.get("inside_random_arm"):
        lines += _inside_md(study["inside_random_arm"])
    lines += ["A copy of a test image in the training split lets a model score by recognising the image rather "
              "than the tumour; the random split's higher score measures that leak, not a better model."]
    if figures:
        lines += ["", f"![leakage]({workdir.FIGURES}/{workdir.LEAKAGE_PNG})"]
    return "\n".join(lines) + "\n"


def _inside_md(inside: Mapping[str, Any]) -> list[str]:
    """The random arm's accuracy with and without a copy of the test image in training."""
    w, wo = inside["with_copy"], inside["without_copy"]
    lines = ["## The leak inside one model (random split)", "",
             "| random-split test images | examples | clusters | accuracy [95% interval] |", "|---|---:|---:|---|",
             f"| with a copy in training ({w['exact']} exact, {w['near']} only near) | {w['n']} | {w['n_clusters']} | "
             f"{interval_text(w['accuracy']) or 'none'} |",
             f"| without a copy in training | {wo['n']} | {wo['n_clusters']} | "
             f"{interval_text(wo['accuracy']) or 'none'} |"]
    if inside["difference"] is not None:
        lines.append(f"| difference (with − without) | | | {interval_text(inside['difference'])} |")
    return lines + ["", "Both accuracies come from the same trained model(s) on one test set, bootstrapped together "
                    f"({_two_level_note(inside['interval'])}); a patient's slices on both sides are not counted as "
                    "independent. A higher accuracy on images seen (as copies) in training is the leak measured "
                    "without a second protocol.", ""]
