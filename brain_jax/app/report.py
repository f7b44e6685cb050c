"""``report.md`` from a workdir's evaluation results, with the figures and how to read them.

``write_report(workdir)`` reads ``metrics.json`` (any schema version, through ``brain_jax.workdir``),
leads each task with its test split (else the last split evaluated), lists the other splits, shows each
metric with its 95 % interval, per source and per class, the split composition and Fig. 10's chosen
cases (from the predictions CSV), draws what it can (confusion matrix, training curves from
``metrics.jsonl``), renders the outputs of ``compare``, ``suite`` and ``study leakage`` found in the
folder (which may hold only those), embeds every PNG in the folder and its ``figures/`` and ends with
the paper's numbers beside ours, where the paper disagrees with itself, and how (not) to compare them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from brain_jax import workdir
from brain_jax.app import paper, results
from brain_jax.app.figures import confusion_matrix_pngs, is_number, training_curves_png
from brain_jax.app.tables import (
    COVERAGE_NOTE,
    class_entry,
    compare_markdown,
    fmt,
    interval_note,
    interval_text,
    leakage_markdown,
    suite_markdown,
    table,
)
from brain_jax.train.spec import RunSpec


def _class_names(cls: Mapping[str, Any], wd: Path, k: int | None) -> list[str]:
    """The summary's own names (``class_names``, else the keys of a per-class table); else the run's config."""
    names = cls.get("class_names")
    per_class = cls.get("per_class")
    if not isinstance(names, (list, tuple)) and isinstance(per_class, Mapping) and per_class \
            and all(isinstance(v, Mapping) for v in per_class.values()):
        names = list(per_class)
    if isinstance(names, (list, tuple)) and (k is None or len(names) == k):
        return [str(n) for n in names]
    if workdir.has_run(wd):  # an old metrics.json without names: the run's own classes
        names = RunSpec.from_config(workdir.read_config(wd), where=str(wd / workdir.CONFIG)).class_names
        if k is None or len(names) == k:
            return list(names)
    return [f"class {i}" for i in range(k or 0)]


def _per_class_rows(per_class: Any, names: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Accept {class: {metric: v}} or {metric: [v per class]}; return (metric names, rows)."""
    if not isinstance(per_class, Mapping) or not per_class:
        return [], []
    first = next(iter(per_class.values()))
    if isinstance(first, Mapping):
        metrics = list(dict.fromkeys(m for d in per_class.values() for m in d))
        return metrics, [[c] + [d.get(m, "") for m in metrics] for c, d in per_class.items()]
    metrics = list(per_class)
    k = max(len(v) for v in per_class.values() if isinstance(v, (list, tuple)))
    names = names if len(names) == k else [f"class {i}" for i in range(k)]
    return metrics, [[names[i]] + [per_class[m][i] for m in metrics] for i in range(k)]


_CLS_MAIN = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1", "weighted_precision",
             "weighted_recall", "balanced_accuracy", "ece", "num_examples")
_SEG_LABELS = {
    "dice": "Dice (mean over cases)",
    "iou": "IoU (mean over cases)",
    "miou": "mIoU (pooled counts, background + tumour)",
    "hd95_mm": "HD95 (mm, mean over cases)",
    "hd_mm": "Hausdorff (mm, mean over cases)",
    "hd95_mm_detected": "HD95 (mm, detected cases only)",
    "hd_mm_detected": "Hausdorff (mm, detected cases only)",
}
_SEG_CI = {"dice": ("dice_ci95", "dice_ci"), "hd95_mm": ("hd95_mm_ci95", "hd95_mm_ci")}
_SEG_COUNTS = {
    "num_cases": "n",
    "num_missed": "missed (both kinds)",
    "num_missed_tumour": "missed tumours",
    "num_false_alarm": "false alarms",
    "num_empty_both": "both empty",
}


def _splits_line(metrics: Mapping[str, Any], task: str, shown: str) -> list[str]:
    others = [s for s in metrics.get(task, {}) if s != shown]
    line = f"Split: `{shown}`."
    if others:
        line += " Also evaluated (in metrics.json): " + ", ".join(f"`{s}`" for s in others) + "."
    return [line, ""]


def _with_ci(summary: Mapping[str, Any], k: str) -> Any:
    """A summary's value, with its 95 % interval when the summary has one for it."""
    ci = summary.get("intervals") or {}
    return interval_text(ci[k]) if isinstance(ci.get(k), Mapping) else summary[k]


_NOT_ROWS = ("per_class", "confusion_matrix", "class_names", "intervals", "per_source", "split_protocol",
             "fig10_cases", "predictions_csv")


def _interval_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = [f"Split protocol: {summary['split_protocol']}.", ""] if summary.get("split_protocol") else []
    ci = summary.get("intervals")
    if isinstance(ci, Mapping) and "interval" in ci:
        lines += [f"Values in brackets: {interval_note(ci['interval'])}. {COVERAGE_NOTE}", ""]
    return lines


def _per_class_ci(cls: Mapping[str, Any], names: list[str]) -> list[str]:
    """Per-class precision, recall, F1, specificity and AUROC with their intervals."""
    pc = cls["intervals"]["per_class"]
    metrics = [m for m in ("precision", "recall", "f1", "specificity", "auroc") if m in pc]
    labels = {"recall": "recall (sensitivity)", "auroc": "AUROC (one-vs-rest)"}
    support = cls.get("support") or (cls.get("per_class") or {}).get("support") or [""] * len(names)
    rows = [[n] + [interval_text(class_entry(pc, m, i)) for m in metrics]
            + [support[i]] for i, n in enumerate(names)]
    return ["### Per class", ""] + table(["class"] + [labels.get(m, m) for m in metrics] + ["support"], rows) + [""]


def _per_source(summary: Mapping[str, Any], task: str) -> list[str]:
    """Headline metrics per source dataset: a source scored far above the rest is a shortcut to look at."""
    src = summary.get("per_source") or {}
    if not src:
        return []
    keys = ("accuracy", "macro_f1") if task == "classification" else ("dice", "hd95_mm")
    rows = [[s, v["num_examples"]] + [interval_text(v[k]) for k in keys] for s, v in src.items()]
    return (["### Per source", "", "Each source's own examples of the split (a source holding one class alone, "
             "e.g. every \"no tumour\" image, can be told apart by how its images were made rather than by "
             "what they show).", ""] + table(["source", "n"] + list(keys), rows) + [""])


def _classification_section(cls: Mapping[str, Any], wd: Path, fig_dir: Path) -> list[str]:
    out = []
    main = [(k, _with_ci(cls, k)) for k in _CLS_MAIN if k in cls]
    extra = [(k, _with_ci(cls, k)) for k, v in cls.items()
             if k not in _CLS_MAIN and k not in _NOT_ROWS and (is_number(v) or isinstance(v, str) and len(v) < 80)]
    out += table(["metric", "value"], main + extra) + [""] + _interval_lines(cls)
    cm = cls.get("confusion_matrix")
    k = len(cm) if isinstance(cm, list) else None
    names = _class_names(cls, wd, k)
    per_class = cls.get("per_class")
    if not per_class:  # classification_summary's flat layout: per-class vectors at the top level
        per_class = {m: cls[m] for m in ("precision", "recall", "f1", "support")
                     if isinstance(cls.get(m), list) and len(cls[m]) == len(names)}
    metrics, rows = _per_class_rows(per_class, names)
    if isinstance((cls.get("intervals") or {}).get("per_class"), Mapping):
        out += _per_class_ci(cls, names)
    elif rows:
        out += ["### Per class", ""] + table(["class"] + metrics, rows) + [""]
    out += _per_source(cls, "classification")
    if cm is not None:
        arr = np.asarray(cm)
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and len(names) == arr.shape[0]:
            confusion_matrix_pngs(arr, names, fig_dir)
            out += ["### Confusion matrix (rows: true class, columns: predicted)", ""]
            out += table(["true \\ predicted"] + names, [[n] + [int(x) for x in r] for n, r in zip(names, arr)])
            out += [""]
        else:
            out += [f"(confusion matrix of shape {arr.shape} could not be drawn with class names {names})", ""]
    return out


def _segmentation_section(seg: Mapping[str, Any]) -> list[str]:
    out = []
    counts = "; ".join(f"{label} {seg[k]}" for k, label in _SEG_COUNTS.items() if k in seg)
    rows, used = [], set(_SEG_COUNTS) | set(_NOT_ROWS)
    for k, label in _SEG_LABELS.items():
        if k not in seg:
            continue
        value = fmt(_with_ci(seg, k))
        for ci_key in _SEG_CI.get(k, ()):
            if ci_key in seg:
                value += f" (95% CI {fmt(seg[ci_key])})"
                used.add(ci_key)
                break
        rows.append([label, value, counts])
        used.add(k)
    if isinstance(seg.get("iou_per_class"), list):
        rows.append(["IoU per class (background, tumour)", ", ".join(fmt(float(v)) for v in seg["iou_per_class"]), ""])
        used.add("iou_per_class")
    for k, v in seg.items():
        if k not in used and (is_number(v) or isinstance(v, str) and len(v) < 200
                              or isinstance(v, list) and len(v) == 2 and all(is_number(x) for x in v)):
            rows.append([k, v, ""])
    out += table(["metric", "value", "cases behind the mean"], rows) + [""]
    out += [
        "n: evaluated slices with a ground-truth mask; missed: exactly one of prediction and ground "
        "truth is empty, split into missed tumours (empty prediction) and false alarms (tumour "
        "predicted on a slice without one); both empty: neither has tumour. By the "
        "metrics code's convention a miss scores Dice 0 and the image diagonal as its distance, a "
        "both-empty case Dice 1 and distance 0; the \"detected cases only\" rows leave both kinds "
        "out. Means are over slices, not pixels: read each mean together with these counts.",
        "",
    ]
    return out + _interval_lines(seg) + _per_source(seg, "segmentation")


def _fig10_section(wd: Path, split: str) -> list[str]:
    """The best, median and worst cases by Dice, chosen from the split's predictions CSV (Fig. 10's rows)."""
    path = workdir.predictions_csv(wd, split)
    if not path.is_file():
        return []
    p = workdir.read_predictions(path)
    if p.task != "segmentation" or not len(p):
        return []
    v, ids = p.values, p.ids["example_id"]
    rows = [[rank, f"`{ids[i]}`", v["dice"][i], v["hd95_mm"][i], v["true_area_mm2"][i], v["pred_area_mm2"][i]]
            for rank, i in results.chosen_cases(v["dice"], v["true_area_mm2"], ids)]
    n_tumour = int(np.sum(v["true_area_mm2"] > 0))
    among = f"the {n_tumour} cases whose ground truth holds tumour" if n_tumour else "all cases (none holds tumour)"
    figure = f"{workdir.FIGURES}/{workdir.OVERLAYS_PNG}"
    return (["### Chosen cases (Fig. 10)", "", f"Best, median and worst case by Dice among {among}, of the {len(p)} "
             f"in `{path.name}`; `{figure}` shows them (scan, ground truth, prediction).", ""]
            + table(["case", "example", "Dice", "HD95 (mm)", "true area (mm²)", "predicted area (mm²)"], rows) + [""])


def _fcmae_section(summary: Mapping[str, Any]) -> list[str]:
    """The held-out masked-patch loss of a pretraining run; the loss curve and the panel are under Figures."""
    rows = [[k, fmt(summary[k]) if is_number(summary[k]) else summary[k]]
            for k in ("loss", "num_examples", "hidden_patches", "mask_ratio", "norm_pix_loss") if k in summary]
    return table(["metric", "value"], rows) + [
        "", "The loss is the mean squared error over hidden patches (per-patch normalised pixels with "
        "`norm_pix_loss`), under masks fixed for every evaluation of the run, so values compare across steps. "
        f"The training loss against step is in `{workdir.FIGURES}/{workdir.TRAINING_CURVES_PNG}`; the "
        f"reconstructions in `{workdir.FIGURES}/{workdir.RECONSTRUCTION_PNG}`.", ""]


def _saliency_section(sal: Any) -> list[str]:
    """``eval --explain`` / the demo: the saliency panel's settings and its localisation numbers."""
    if not isinstance(sal, Mapping) or not sal:
        return []
    methods = "; ".join(f"`{m}`: {d}" for m, d in (sal.get("methods") or {}).items())
    out = ["## Saliency", "", f"Split `{sal.get('split')}`, {sal.get('n_per_class')} case(s) per class drawn in "
           f"`{sal.get('figure')}` (scan, map for the predicted class, map for the true class when they differ). "
           f"Maps: {methods}.", ""]
    rows, tol = [], None
    for m, s in (sal.get("localisation") or {}).items():
        tol = s.get("tolerance_px")
        for cls, r in [*s["per_class"].items(), ("all", s["all"])]:
            rows.append([m, cls, r["n"], f"{fmt(r['pointing_game'])} ({fmt(r['chance_pointing'])})",
                         f"{fmt(r['mass_inside'])} ({fmt(r['chance_mass'])})"])
    if rows:
        out += [f"Localisation on the cases with a tumour mask ({sal.get('scored_per_class')} per class, maps of "
                f"the {sal.get('scored_on')}): pointing game = share of maps whose maximum lies in the mask grown by "
                f"{tol} px; mass inside = share of the map inside the mask; chance levels in brackets (a map "
                "whose top cell is random; a uniform map).", ""]
        out += table(["method", "class", "n", "pointing game (chance)", "mass inside (chance)"], rows) + [""]
    out += ["What the maps show: which regions raised the target class's logit — Grad-CAM at one layer's "
            "resolution (its positive part), integrated gradients per pixel along a straight path from a "
            "baseline image, attention rollout (ViT) how attention mixes the patches, for every class alike. "
            "What they do not show: what the model recognised there, whether the prediction is right, or "
            "anything finer than the map's grid; integrated gradients change with the baseline, and a high "
            "pointing game on phantoms (where the tumour is the only thing that differs between classes) says "
            "little about MRI.", ""]
    return out


_FIG_CAPTIONS = {
    workdir.CONFUSION_MATRIX_PNG: "Confusion matrix, counts (rows true, columns predicted).",
    workdir.CONFUSION_MATRIX_NORMALIZED_PNG: "Confusion matrix, row-normalised (diagonal = per-class recall).",
    workdir.TRAINING_CURVES_PNG: "Training loss and evaluation metrics against step.",
    workdir.MODEL_COMPARISON_PNG: "Overall metrics per model on the same test examples, with 95% intervals (Fig. 9).",
    workdir.PER_CLASS_PNG: "Per-class precision, recall and F1 per model, with 95% intervals (Fig. 9 per class).",
    workdir.DIFFERENCES_PNG: "Paired differences between models with their 95% intervals (0 = no difference).",
    workdir.LEAKAGE_PNG: "Accuracy under a random slice-level split and a patient / group split, and their difference.",
    workdir.RECONSTRUCTION_PNG: ("FCMAE on held-out slices: the slice, its visible 32-px patches (hidden ones grey), "
                                 "the reconstruction (hidden patches predicted, outlined) and each image's "
                                 "hidden-patch MSE."),
    workdir.OVERLAYS_PNG: "Fig. 10: scan / ground truth / prediction for the best, median and worst case by Dice.",
    workdir.PANEL_PNG: ("Saliency: scan (mask in green), map for the predicted class, map for the true class if "
                        "different."),
}


def _class_value(cls: Mapping[str, Any], names: list[str], metric: str, i: int) -> str:
    """Class i's ``metric`` with its interval, from any of the summary layouts ("" when absent)."""
    ci = (cls.get("intervals") or {}).get("per_class")
    if isinstance(ci, Mapping) and metric in ci:
        return interval_text(class_entry(ci, metric, i))
    pc = cls.get("per_class") or {}
    if isinstance(pc.get(names[i]), Mapping):  # {class: {metric: value}}
        return fmt(pc[names[i]].get(metric, ""))
    values = pc.get(metric, cls.get(metric))  # {metric: [value per class]} or the flat layout
    return fmt(values[i]) if isinstance(values, list) and i < len(values) else ""


def _paper_table(cls: Mapping[str, Any], seg: Mapping[str, Any], meta: Mapping[str, Any],
                 names: list[str]) -> list[str]:
    """The paper's numbers beside this run's: accuracy of the same architecture, Table I and Fig. 8 per class,
    Dice and Hausdorff distance."""
    out = []
    if "accuracy" in cls:
        model = str(meta.get("model", "this run"))
        out += table(["model", "paper accuracy", "this run"], paper.accuracy_rows({model: _with_ci(cls, "accuracy")}))
        out += [""]

        def ours(metric: str, i: int) -> str:
            return _class_value(cls, names, metric, i)

        rows = paper.per_class_rows(names, ours)
        if rows:
            out += ["Per class, the paper's ConvNeXt V2 (Table I and the counts of its Fig. 8) beside this run:", ""]
            out += table(["class", "metric", "paper, Table I", "paper, Fig. 8", "this run"], rows) + [""]
    if seg:
        shown = {k: _with_ci(seg, k) for k in ("dice", "hd_mm") if k in seg}
        out += table(["quantity", "paper", "this run"], paper.segmentation_rows(shown)) + [""]
    if not out:
        return []
    return ["The paper's numbers beside this run's, only so the gap is visible: the columns do not measure the "
            "same thing (see below).", ""] + out + _disagreements()


def _disagreements() -> list[str]:
    return ["Where the paper disagrees with itself:", ""] + [f"- {d}" for d in paper.DISAGREEMENTS] + [""]


def _how_to_read(meta: Mapping[str, Any], cls: Mapping[str, Any], seg: Mapping[str, Any],
                 names: list[str]) -> list[str]:
    dataset = str(meta.get("dataset", meta.get("data", "")) or "")
    out = ["## How to read this", ""]
    if "phantom" in dataset.lower():
        out += [
            f"**These numbers come from `{dataset}`, synthetic phantoms drawn by code, not patients.** "
            "They show that the pipeline trains, evaluates and reports end to end; they say nothing "
            "about diagnostic performance on MRI.",
            "",
        ]
    out += _paper_table(cls, seg, meta, names)
    split_by = meta.get("split_by")
    split_note = f" This run: `split_by` = `{split_by}`." if split_by else ""
    out += [
        "- Splits: `split_by=group` pools the sources and splits by patient (Figshare PIDs) or by "
        "duplicate group after exact + perceptual de-duplication, so no slice of a test patient and no "
        "copy of a test image is seen in training. `split_by=builder` uses each dataset's own splits: "
        "patient-disjoint for the phantoms and the Figshare `cvind` folds, but the Kaggle "
        "Training/Testing folders carry no patient ids and can share copies of a slice (check with "
        "`brain-jax data audit`)." + split_note,
        "- The paper reports 99.60% accuracy for ConvNeXt V2 (ConvNeXt V1 99.11%, Swin 99.01%, ViT 98.5%) "
        "and Dice 0.90-0.95 with a 0.87 mm Hausdorff distance for SegFormer on Figshare. Its "
        "classification pool (~15,000 images) merged Figshare with Kaggle sets that already contain the "
        "Figshare slices, so the same slice can appear up to ~4 times, and the split was random at "
        "slice level: near-copies of test images were in training. Yagis et al. (2021, Sci Rep) showed "
        "that slice-level splits inflate accuracy by 29-55 points; published patient-wise Figshare "
        "results sit around 91-98% (unverified literature figures).",
        "- Our numbers are therefore not comparable with the paper's and are expected to be lower. "
        "A gap is not by itself a reimplementation error; a match would need the same leaky split.",
        "- Segmentation means are per slice; the miss counts beside them matter as much as the means, "
        "because a model that outputs nothing on hard cases can keep a good mean over the rest.",
        "- Distances are in millimetres from each slice's pixel spacing (0.49 mm at 512 px for Figshare). "
        "The paper's 0.87 mm Hausdorff distance is under two native pixels and the paper does not say "
        "how it was computed or averaged, so that row of the table is not comparable either.",
        "",
    ]
    return out


def _demote(markdown: str) -> list[str]:
    """A study's markdown under a report section: its title dropped, its headings one level down."""
    lines = markdown.rstrip().splitlines()[1:]
    return [("#" + line) if line.startswith("#") else line for line in lines] + [""]


def _studies(wd: Path) -> list[str]:
    """Sections for the outputs of compare, suite and study leakage found in ``wd``."""
    out = []
    if (wd / workdir.COMPARE_JSON).is_file():
        c = workdir.read_json(wd / workdir.COMPARE_JSON, "a comparison written by `brain-jax compare`")
        out += ["## Model comparison", ""] + _demote(compare_markdown(c, figures=False))
        if c["task"] == "classification":
            rows = paper.accuracy_rows({m: interval_text(b["accuracy"]) for m, b in c["metrics"].items()})
            out += ["### Beside the paper", ""] + table(["model", "paper accuracy", "ours"], rows) + [""]
    if (wd / workdir.SUITE_JSON).is_file():
        t = workdir.read_json(wd / workdir.SUITE_JSON, "a suite table written by `brain-jax suite`")
        out += ["## Folds and seeds", ""] + _demote(suite_markdown(t))
        if "accuracy" in t["metrics"]:
            rows = paper.accuracy_rows({m: f"{a['accuracy']['mean']:.4f} ± {a['accuracy']['sd']:.4f}"
                                        for m, a in t["per_model"].items()})
            out += ["### Beside the paper", ""] + table(["model", "paper accuracy", "ours, mean ± sd"], rows) + [""]
        compared = sorted((wd / workdir.COMPARE).glob("*/" + workdir.COMPARE_MD))
        if compared:
            out += ["Comparisons on each test set: " + ", ".join(f"[{p.parent.name}]({p.relative_to(wd).as_posix()})"
                                                               for p in compared), ""]
    if (wd / workdir.LEAKAGE_JSON).is_file():
        s = workdir.read_json(wd / workdir.LEAKAGE_JSON, "a leakage study written by `brain-jax study leakage`")
        out += ["## Leakage study", ""] + _demote(leakage_markdown(s, figures=False))
    return out


def _composition(wd: Path) -> list[str]:
    """The split-composition table written by eval (``composition.md``), or the first of a suite's / study's."""
    name = f"{workdir.COMPOSITION}.md"
    comps = sorted(wd.glob(name)) or sorted(wd.glob(f"{workdir.COMPOSITION}/**/{name}"))
    if not comps:
        return []
    out = ["## Split composition", ""] + comps[0].read_text().rstrip().splitlines() + [""]
    more = [q.relative_to(wd).as_posix() for q in comps[1:]]
    return out + ([f"The other splits: {', '.join(f'[{m}]({m})' for m in more)}", ""] if more else [])


def write_report(wd: str | Path) -> Path:
    """Write ``report.md`` (and figures under ``figures/``) for a workdir, or for the ``--out`` folder of
    compare / suite / study leakage; return its path."""
    wd = Path(wd)
    studies = _studies(wd) if wd.is_dir() else []
    if (wd / workdir.METRICS).is_file() or not studies:
        metrics = workdir.read_metrics(wd)  # no metrics.json and no study: FileNotFoundError naming it
    else:
        metrics = {"meta": {}}
    meta = metrics.get("meta", {})
    cls = workdir.headline(metrics, "classification")
    seg = workdir.headline(metrics, "segmentation")
    fc = workdir.headline(metrics, "fcmae")
    if cls is None and seg is None and fc is None and not studies:
        raise ValueError(f"{wd / workdir.METRICS}: no classification, segmentation or FCMAE pretraining results")
    fig_dir = wd / workdir.FIGURES

    title = meta.get("model") or meta.get("model_name") or wd.name
    lines = [f"# brain-jax results: {title}", ""]
    if meta:
        shown = [[k, v] for k, v in meta.items() if not isinstance(v, (dict, list)) or len(str(v)) < 120]
        lines += ["## Run", ""] + table(["field", "value"], shown) + [""]
    if cls is not None:
        lines += ["## Classification", ""] + _splits_line(metrics, "classification", cls[0])
        lines += _classification_section(cls[1], wd, fig_dir)
    if seg is not None:
        lines += ["## Segmentation", ""] + _splits_line(metrics, "segmentation", seg[0])
        lines += _segmentation_section(seg[1]) + _fig10_section(wd, seg[0])
    if fc is not None:
        lines += ["## FCMAE pretraining", ""] + _splits_line(metrics, "fcmae", fc[0]) + _fcmae_section(fc[1])
    lines += _saliency_section(metrics.get(workdir.SALIENCY))
    lines += studies + _composition(wd)
    if (wd / workdir.METRICS_LOG).is_file():
        try:
            training_curves_png(wd / workdir.METRICS_LOG, fig_dir / workdir.TRAINING_CURVES_PNG)
        except ValueError as e:
            lines += [f"(training curves not drawn: {e})", ""]

    figs = sorted(p for d in (wd, fig_dir) if d.is_dir() for p in d.glob("*.png"))
    if figs:
        lines += ["## Figures", ""]
        for p in figs:
            rel = p.relative_to(wd).as_posix()
            caption = _FIG_CAPTIONS.get(p.name, p.stem.replace("_", " "))
            lines += [f"![{caption}]({rel})", "", f"*{caption}* (`{rel}`)", ""]
    if fc is not None and not (cls or seg):
        pass  # a pretraining run: no classifier to hold against the paper's tables
    elif cls or seg:
        cm = cls[1].get("confusion_matrix") if cls else None
        names = _class_names(cls[1], wd, len(cm) if isinstance(cm, list) else None) if cls else []
        lines += _how_to_read(meta, cls[1] if cls else {}, seg[1] if seg else {}, names)
    else:
        lines += ["## The paper", ""] + _disagreements()
    out = wd / workdir.REPORT
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out
