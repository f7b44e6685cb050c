"""``brain-jax study leakage``: how much a random slice-level split inflates the score of one config.

    brain-jax study leakage --config configs/paper/classifier.py:model=convnextv2 --out studies/leakage

Trains the config twice on the same pool (every split of every source; ``data.dedup`` as configured):
once under ``split_by="random"`` (each slice drawn into train / validation / test on its own: the
paper's protocol) and once under ``split_by="group"`` (whole patients and groups of exact / near
copies drawn together), with the same split fractions and seed. Each arm is evaluated on its own test
split, with a cluster-bootstrap interval.

The two test sets differ, so the difference (random − group) cannot be paired: its interval comes from
an unpaired bootstrap, each arm's test set resampled on its own (by patient / duplicate group, with
independent draws) and the difference taken replicate by replicate. The study also counts the test
images that have an exact copy (same pixels) or a near copy (perceptual hash within
``data.near_dup_bits``) in their arm's training split: the leak itself.

Writes ``leakage.json``, ``leakage.md``, ``figures/leakage.png``, ``composition/<arm>/`` and the two
workdirs ``runs/random`` and ``runs/group`` to ``--out``; a finished arm is not trained again.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import input_pipeline
from brain_jax import N_RESAMPLES, workdir
from brain_jax.app import figures, results
from brain_jax.app.suite import Training, train_then_evaluate
from brain_jax.app.tables import leakage_markdown
from brain_jax.metrics import stats
from brain_jax.metrics.classification import summarize_confusions
from brain_jax.train.config import load_config

ARMS = ("random", "group")  # data.split_by of each arm; the difference is random - group
DIFFERENCE_METRICS = ("accuracy", "macro_f1")


def arm_runs(config_spec: str, out: str | Path, overrides: Sequence[str] = ()) -> list[Training]:
    """The two trainings of the study: the config under each protocol, splits train / validation / test."""
    base = load_config(config_spec, overrides)
    if base.data.task != "classification":
        raise ValueError(f"the leakage study compares classification accuracy; {config_spec} is a "
                         f"{base.data.task} config")
    runs = []
    for arm in ARMS:
        cfg = base.copy_and_resolve_references()
        cfg.data.update({"split_by": arm, "num_folds": 0, "fold": 0, "train_split": "train",
                         "eval_split": "validation", "test_split": "test"})
        input_pipeline.split_protocol(cfg.data)  # a bad data field fails here, before any training
        runs.append(Training(arm, arm, cfg, Path(out) / workdir.RUNS / arm))
    return runs


def bootstrap_metrics(labels: np.ndarray, preds: np.ndarray, clusters: np.ndarray | None, cluster_kind: str,
                      num_classes: int, *, n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """(n_resamples,) replicates of accuracy and macro-F1: clusters drawn with ``stats.bootstrap_indices``,
    each replicate's confusion matrix summed over the drawn clusters."""
    k = int(num_classes)
    units = stats.resampling_units(clusters, cluster_kind, len(labels))
    n_units = int(units.max()) + 1
    unit_cm = np.bincount(units * k * k + labels * k + preds, minlength=n_units * k * k).reshape(n_units, k * k)
    drawn = stats.bootstrap_indices(n_units, n_resamples, seed)
    counts = np.stack([np.bincount(row, minlength=n_units) for row in drawn])
    reps = summarize_confusions((counts @ unit_cm).reshape(-1, k, k))
    return {m: np.asarray(reps[m]) for m in DIFFERENCE_METRICS}


def unpaired_difference(a: Mapping[str, Any], b: Mapping[str, Any], num_classes: int, *,
                        n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy and macro-F1 of arm a minus arm b with a percentile interval from independent cluster
    bootstraps of the two test sets (seeds ``seed`` and ``seed + 1``). ``a`` / ``b``: {"label", "pred",
    "clusters", "cluster_kind"} of each arm's test examples."""
    reps = [bootstrap_metrics(arm["label"], arm["pred"], arm["clusters"], arm["cluster_kind"], num_classes,
                              n_resamples=n_resamples, seed=seed + i) for i, arm in enumerate((a, b))]
    points = [summarize_confusions(np.bincount(arm["label"] * num_classes + arm["pred"],
                                               minlength=num_classes ** 2).reshape(num_classes, num_classes))
              for arm in (a, b)]
    q = 100 * np.array([(1 - confidence) / 2, (1 + confidence) / 2])
    alpha = round(1 - confidence, 10)
    out: dict[str, Any] = {"method": "unpaired percentile cluster bootstrap (each test set resampled on its own)",
                           "confidence": confidence, "n_resamples": n_resamples, "seeds": [seed, seed + 1]}
    for m in DIFFERENCE_METRICS:
        low, high = np.percentile(reps[0][m] - reps[1][m], q)
        est = float(points[0][m] - points[1][m])
        if low > 0:
            verdict = f"inflation shown (the interval excludes 0, α = {alpha:g})"
        elif high < 0:
            verdict = f"the random split scored lower (the interval excludes 0, α = {alpha:g})"
        else:
            verdict = stats.NO_DIFFERENCE.format(alpha=alpha)
        out[m] = {"estimate": est, "low": float(low), "high": float(high), "verdict": verdict}
    return out


def _arm_data(run: Training) -> dict[str, Any]:
    p = workdir.read_predictions(workdir.predictions_csv(run.workdir, run.test_split))
    clusters, kind, _ = results.resampling_clusters(p.ids)
    return {"label": p.label, "pred": p.pred, "clusters": clusters, "cluster_kind": kind}


def run_leakage(config_spec: str, out: str | Path, *, overrides: Sequence[str] = (), n_resamples: int = N_RESAMPLES,
                seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Train and evaluate both arms (unless finished), then write the study's tables and figure."""
    out = Path(out)
    runs = arm_runs(config_spec, out, overrides)
    status = {}
    for run in runs:
        status[run.model] = train_then_evaluate(run, n_resamples=n_resamples, seed=seed)
        if status[run.model] == "preempted":
            return {"status": "preempted", "runs": status, "paths": []}
    arms = {}
    for run in runs:
        folder = out / workdir.COMPOSITION / run.model
        input_pipeline.write_composition(input_pipeline.split_composition(run.config.data), folder)
        s = workdir.read_metrics(run.workdir)["classification"][run.test_split]
        arms[run.model] = {"protocol": s["split_protocol"], "workdir": str(run.workdir), "n_test": s["num_examples"],
                           "accuracy": s["intervals"]["accuracy"], "macro_f1": s["intervals"]["macro_f1"],
                           "interval": s["intervals"]["interval"],
                           "copies_in_training": input_pipeline.copies_in_training(run.config.data, run.test_split)}
    k = len(workdir.read_metrics(runs[0].workdir)["classification"][runs[0].test_split]["class_names"])
    diff = unpaired_difference(_arm_data(runs[0]), _arm_data(runs[1]), k, n_resamples=n_resamples, seed=seed,
                               confidence=confidence)
    study = {"config": config_spec, "overrides": list(overrides), "dataset": str(runs[0].config.data.name),
             "arms": arms, "difference": diff}
    paths = [workdir.write_json(out / workdir.LEAKAGE_JSON, study)]
    (out / workdir.LEAKAGE_MD).write_text(leakage_markdown(study))
    paths.append(out / workdir.LEAKAGE_MD)
    rows = [(f"{a} split", arms[a]["accuracy"]["estimate"], arms[a]["accuracy"]["low"], arms[a]["accuracy"]["high"])
            for a in ARMS]
    d = diff["accuracy"]
    rows.append(("random − group", d["estimate"], d["low"], d["high"]))
    paths.append(figures.forest_png(rows, out / workdir.FIGURES / workdir.LEAKAGE_PNG, xlabel="test accuracy",
                                    title="accuracy by split protocol, 95% intervals"))
    return {"status": "done", "runs": status, "paths": paths, "study": study}
