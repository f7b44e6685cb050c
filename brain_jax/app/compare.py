"""``brain-jax compare WORKDIR... --out DIR``: which model is better, by how much, and how sure we are.

Reads each workdir's predictions CSV of one split (``brain-jax eval`` writes it), checks that every model
was scored on the same examples (same ids; rows are aligned by id) and writes to ``--out``:

- ``compare.md`` / ``compare.json``: what each model started from (pre-training data, backbone parameters),
  every model's metrics with 95 % intervals and the clusters behind them, the per-class precision /
  recall / F1 table (the paper's Table I layout) and, for every pair of models, the primary test: the
  exact cluster swap test of the accuracy difference (segmentation: the sign-flip test of the mean-Dice
  difference), Holm-adjusted across the pairs, its verdict and the difference's simultaneous interval
  (``pairs[i].primary = {test, statistic, p_value, p_holm, verdict, n_clusters, n_discordant_clusters}``);
  then descriptive columns: the macro-F1 difference, per-class swap tests, and the slice-level McNemar
  (or per-slice Wilcoxon) that papers report, labelled as ignoring patients. With ``claim_best``, the
  claims "it beats each other model" (accuracy) and "on precision, recall and F1 of every class" as
  intersection-union tests (``claims``);
- ``model_comparison.png`` (Fig. 9: overall bars with intervals), ``per_class.png`` (Fig. 9 per class)
  and ``differences.png`` (each pair's difference with its interval).

A pair the test cannot separate reads "no difference shown at α = 0.05": absence of evidence, never
evidence of equivalence. Workdirs whose predictions carry no patient or duplicate-group ids are refused
(the tests need the independent unit) unless ``allow_slices``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brain_jax import N_RESAMPLES, workdir
from brain_jax.app import figures, results
from brain_jax.app.evaluate import intervals_for
from brain_jax.app.tables import compare_markdown
from brain_jax.metrics import stats
from brain_jax.models import provenance
from brain_jax.train.spec import lookup, model_label


@dataclasses.dataclass
class ComparedModel:
    """One workdir's evaluation of the split: the model's name in tables and its per-example results."""

    name: str
    workdir: Path
    preds: workdir.Predictions
    dataset: str
    protocol: str


def eval_command(wd: Path, split: str) -> str:
    return f"brain-jax eval --workdir {wd} --split {split}"


def _model_name(wd: Path) -> str:
    """The label of the workdir's model from its config.json's model fields alone ('?' for a missing one)."""
    cfg = workdir.read_config_dict(wd)
    return model_label(lookup(cfg, "model.name", "?"), lookup(cfg, "model.variant", "?"))


def _summary(wd: Path, split: str) -> dict[str, Any]:
    """The workdir's metrics.json section of ``split`` (either task), {} when there is none."""
    if not (wd / workdir.METRICS).is_file():
        return {}
    metrics = workdir.read_metrics(wd)
    return next((metrics[t][split] for t in workdir.TASKS if split in metrics.get(t, {})), {})


def load_runs(workdirs: Sequence[str | Path], split: str,
              names: Sequence[str] | None = None) -> list[ComparedModel]:
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
        runs.append(ComparedModel(name, wd, workdir.read_predictions(workdir.predictions_csv(wd, split)),
                                  str(summary.get("dataset", lookup(cfg, "data.name", ""))),
                                  str(summary.get("split_protocol", ""))))
    return runs


def align(runs: list[ComparedModel]) -> list[ComparedModel]:
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


def _clusters(runs: list[ComparedModel], allow_slices: bool) -> tuple[Any, str]:
    """The first run's cluster ids and kind; ValueError when no example has a patient or group id."""
    clusters, kind, _ = results.resampling_clusters(runs[0].preds.ids)
    if kind == "slice" and not allow_slices:
        raise ValueError(f"{runs[0].preds.path}: no example has a patient or duplicate-group id (cluster_kind is "
                         "'slice' throughout), so slices would be treated as independent; evaluate data that "
                         "records patients or groups, or pass --allow-slices to compare slices knowingly")
    return clusters, kind


def _classification(runs: list[ComparedModel], opts: dict[str, Any], allow_slices: bool) -> dict[str, Any]:
    first = runs[0].preds
    k = len(first.class_names)
    blocks = {r.name: intervals_for("classification", {"label": r.preds.label, "pred": r.preds.pred,
                                                        "probs": r.preds.probs}, r.preds.ids, k, **opts)
              for r in runs}
    clusters, kind = _clusters(runs, allow_slices)
    pairs = stats.pairwise_comparisons(first.label, {r.name: r.preds.pred for r in runs}, clusters, kind,
                                       num_classes=k, **opts)
    return {"metrics": blocks, "pairs": pairs}


def claims(best: str, pairs: list[dict[str, Any]], class_names: Sequence[str], alpha: float) -> list[dict[str, Any]]:
    """The paper's claims about model ``best`` as intersection-union tests of one-sided swap tests:
    "beats each other model" (accuracy) and "beats each other model on precision, recall and F1 of every
    class". Each is tested once at ``alpha``; it holds only when every one-sided test rejects."""
    ours = [p for p in pairs if best in p["models"]]
    if not ours:
        raise ValueError(f"--claim-best {best!r} is not one of the compared models "
                         f"({', '.join(sorted({m for p in pairs for m in p['models']}))})")

    def greater(p: dict[str, Any], block: dict[str, Any], i: int | None = None) -> float:
        key = "p_greater" if p["models"][0] == best else "p_less"  # one-sided: best > the other
        return block[key] if i is None else block[key][i]

    others = [m for p in ours for m in p["models"] if m != best]
    accuracy = stats.intersection_union([greater(p, p["primary"]) for p in ours], alpha)
    every = stats.intersection_union([greater(p, p["per_class"][m], i) for p in ours
                                      for m in ("precision", "recall", "f1") for i in range(len(class_names))], alpha)
    out = []
    for claim, res in ((f"{best} has higher accuracy than each of {', '.join(others)}", accuracy),
                       (f"{best} has higher precision, recall and F1 than each of {', '.join(others)} for every "
                        f"class ({', '.join(class_names)})", every)):
        verdict = "supported" if res["reject"] else f"not shown at α = {round(alpha, 10):g}"
        out.append({"claim": claim, **res, "verdict": verdict,
                    "test": "intersection-union of one-sided cluster swap tests"})
    return out


def _segmentation(runs: list[ComparedModel], opts: dict[str, Any], allow_slices: bool) -> dict[str, Any]:
    blocks = {}
    for r in runs:
        block = intervals_for("segmentation", r.preds.values, r.preds.ids, 0, **opts)
        block["num_missed_tumour"] = int(r.preds.values["missed_tumour"].sum())
        block["num_false_alarm"] = int(r.preds.values["false_alarm"].sum())
        blocks[r.name] = block
    clusters, kind = _clusters(runs, allow_slices)
    pairs = stats.pairwise_segmentation_comparisons({r.name: r.preds.values["dice"] for r in runs}, clusters, kind,
                                                    **opts)
    return {"metrics": blocks, "pairs": pairs}


def compare_runs(runs: list[ComparedModel], *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 confidence: float = 0.95, claim_best: str | None = None,
                 allow_slices: bool = False) -> dict[str, Any]:
    """The comparison of aligned runs as a JSON-able dict (see the module docstring)."""
    runs = align(runs)
    opts = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    first = runs[0].preds
    if claim_best is not None and first.task != "classification":
        raise ValueError("--claim-best tests classification claims; these are segmentation results")
    body = (_classification(runs, opts, allow_slices) if first.task == "classification"
            else _segmentation(runs, opts, allow_slices))
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
        "models": [{"name": r.name, "workdir": str(r.workdir), "predictions_csv": str(r.preds.path)}
                   | _provenance(r.workdir) for r in runs],
        "metrics": body["metrics"],
        "pairs": body["pairs"],
        "claims": claims(claim_best, body["pairs"], first.class_names, 1 - confidence) if claim_best else [],
        "notes": notes,
    }


def _provenance(wd: Path) -> dict[str, Any]:
    """The pre-training and backbone size of the workdir's model, from its config.json."""
    cfg = workdir.read_config_dict(wd)
    return provenance.describe(str(lookup(cfg, "model.name", "")), str(lookup(cfg, "model.variant", "")),
                               lookup(cfg, "init_from", None) or None)


# ------------------------------------------------------------------------------------------ outputs


def write_figures(c: dict[str, Any], out: Path) -> list[Path]:
    """model_comparison.png, per_class.png (classification) and differences.png in ``out``."""
    keys = ("accuracy", "macro_f1") if c["task"] == "classification" else ("dice", "iou")
    values = {m: {k: b[k]["estimate"] for k in keys} for m, b in c["metrics"].items()}
    bounds = {m: {k: (b[k]["low"], b[k]["high"]) for k in keys} for m, b in c["metrics"].items()}
    paths = [figures.model_comparison_png(values, out / workdir.MODEL_COMPARISON_PNG, intervals=bounds, keys=keys)]
    if c["task"] == "classification":
        paths.append(figures.per_class_bars_png({m: b["per_class"] for m, b in c["metrics"].items()},
                                                c["class_names"], out / workdir.PER_CLASS_PNG))
    diff = "accuracy_difference" if c["task"] == "classification" else "dice_difference"
    rows = [(f"{p['models'][0]} − {p['models'][1]}", p[diff]["estimate"], p[diff]["low"], p[diff]["high"])
            for p in c["pairs"]]
    paths.append(figures.forest_png(rows, out / workdir.DIFFERENCES_PNG, title="paired differences, 95% intervals",
                                    xlabel=diff.replace("_", " ")))
    return paths


def compare(workdirs: Sequence[str | Path], out: str | Path, *, split: str = "test",
            names: Sequence[str] | None = None, n_resamples: int = N_RESAMPLES, seed: int = 0,
            confidence: float = 0.95, claim_best: str | None = None, allow_slices: bool = False) -> dict[str, Any]:
    """Compare the workdirs' evaluations of ``split``; write compare.json, compare.md and figures to ``out``."""
    c = compare_runs(load_runs(workdirs, split, names), n_resamples=n_resamples, seed=seed, confidence=confidence,
                     claim_best=claim_best, allow_slices=allow_slices)
    c["split"] = split
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = write_figures(c, out)
    workdir.write_json(out / workdir.COMPARE_JSON, c)
    (out / workdir.COMPARE_MD).write_text(compare_markdown(c))
    return {"comparison": c, "paths": [out / workdir.COMPARE_JSON, out / workdir.COMPARE_MD, *figs]}
