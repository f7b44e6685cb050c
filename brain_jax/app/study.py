"""``brain-jax study leakage``: how much a random slice-level split inflates the score of one config.

    brain-jax study leakage --config configs/paper/classifier.py:model=convnextv2 --out studies/leakage --seeds 5

Trains the config on the same pool (every split of every source; ``data.dedup`` as configured) under
``split_by="random"`` (each slice drawn into train / validation / test on its own: the paper's protocol)
and under ``split_by="group"`` (whole patients and groups of exact / near copies drawn together), with
the same split fractions and data seed; with ``--seeds N`` each arm is trained N times (run seed
``config.seed + i``, one test split per arm). Each arm is scored on its own test split: accuracy,
macro-F1 and balanced accuracy as the mean over its seeds, with a two-level bootstrap interval
(``brain_jax.metrics.multilevel``: seeds, then patients / duplicate groups; one seed: the cluster bootstrap).

The two test sets differ, so the difference (random − group) cannot be paired: its interval comes from
independent bootstraps of the two arms (seeds ``seed`` and ``seed + 1``), the difference taken
replicate by replicate. The study also counts the test images that have an exact copy (same pixels)
or a near copy (perceptual hash within ``data.near_dup_bits``) in their arm's training split (the
leak itself), and measures the leak inside one model: the random arm's accuracy on the test images
with a copy in training against those without. When the group arm is not above chance (4 classes:
0.25) the difference is memorised copies against a model that learned nothing, and the study says so.

Writes ``leakage.json``, ``leakage.md``, ``figures/leakage.png``, ``composition/<arm>/`` and the
workdirs ``runs/<arm>`` (one seed) or ``runs/<arm>/seed<i>`` to ``--out``; a finished run is not trained
again.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import input_pipeline
from brain_jax import N_RESAMPLES, workdir
from brain_jax.app import figures
from brain_jax.app.suite import Training, stacked_predictions, train_then_evaluate
from brain_jax.app.tables import interval_text, leakage_markdown
from brain_jax.metrics import multilevel, stats
from brain_jax.metrics.classification import summarize_confusions
from brain_jax.train.config import load_config

ARMS = ("random", "group")  # data.split_by of each arm; the difference is random - group
DIFFERENCE_METRICS = multilevel.CLASSIFICATION_METRICS  # accuracy, macro-F1, balanced accuracy


def arm_runs(config_spec: str, out: str | Path, overrides: Sequence[str] = (), seeds: int = 1) -> list[Training]:
    """The study's trainings: the config under each protocol (splits train / validation / test), ``seeds``
    times with run seeds ``config.seed + i``. One seed keeps the workdirs ``runs/<arm>`` (so a study started
    before ``--seeds`` resumes); several go to ``runs/<arm>/seed<i>``."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1; got {seeds}")
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
        folder = Path(out) / workdir.RUNS / arm
        if seeds == 1:
            runs.append(Training(arm, arm, cfg, folder))
            continue
        for i in range(seeds):
            seeded = cfg.copy_and_resolve_references()
            seeded.seed = int(base.seed) + i
            runs.append(Training(arm, f"seed{i}", seeded, folder / f"seed{i}"))
    return runs


def arm_data(runs: Sequence[Training]) -> dict[str, Any]:
    """One arm's test predictions over its seeds: ``label`` (n,), ``pred`` (S, n) in the first seed's row
    order, ``clusters``, ``cluster_kind`` and ``example_id`` (``suite.stacked_predictions``)."""
    d = stacked_predictions(runs)
    return {"label": d["label"], "pred": d["values"], "clusters": d["clusters"], "cluster_kind": d["cluster_kind"],
            "example_id": d["example_id"]}


def _fit(arm: Mapping[str, Any], num_classes: int, **opts: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return multilevel.two_level("classification", arm["pred"], arm["clusters"], arm["cluster_kind"],
                                labels=arm["label"], num_classes=num_classes, **opts)


def unpaired_difference(a: Mapping[str, Any], b: Mapping[str, Any], num_classes: int, *,
                        n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy, macro-F1 and balanced accuracy of arm a minus arm b with a percentile interval from
    independent two-level bootstraps of the two arms (seeds ``seed`` and ``seed + 1``; with one training
    per arm, independent cluster bootstraps of the two test sets). ``a`` / ``b``: {"label" (n,), "pred"
    (n,) or (seeds, n), "clusters", "cluster_kind"} of each arm's test examples."""
    fits = [_fit(arm, num_classes, n_resamples=n_resamples, seed=seed + i, confidence=confidence)
            for i, arm in enumerate((a, b))]
    n_seeds = [f[0]["interval"]["n_seeds"] for f in fits]
    levels = "training seeds, then test clusters" if max(n_seeds) > 1 else "test clusters"
    alpha = round(1 - confidence, 10)
    out: dict[str, Any] = {"method": f"unpaired percentile bootstrap ({levels}; each arm resampled on its own)",
                           "confidence": confidence, "n_resamples": n_resamples, "seeds": [seed, seed + 1],
                           "n_seeds": n_seeds}
    for m in DIFFERENCE_METRICS:
        entry = multilevel.percentile(fits[0][0][m]["estimate"] - fits[1][0][m]["estimate"],
                                      fits[0][1][m] - fits[1][1][m], confidence)
        if entry["low"] > 0:
            verdict = f"inflation shown (the interval excludes 0, α = {alpha:g})"
        elif entry["high"] < 0:
            verdict = f"the random split scored lower (the interval excludes 0, α = {alpha:g})"
        else:
            verdict = stats.NO_DIFFERENCE.format(alpha=alpha)
        out[m] = entry | {"verdict": verdict}
    return out


def inside_random_arm(arm: Mapping[str, Any], by_example: Mapping[str, str], *, n_resamples: int, seed: int,
                      confidence: float) -> dict[str, Any]:
    """The random arm's accuracy on its test images with a copy (exact or near) in training and on those
    without, and the difference, bootstrapped together (``multilevel.subset_difference``)."""
    missing = [e for e in arm["example_id"].tolist() if e not in by_example]
    if missing:
        raise ValueError(f"the random arm's predictions hold {len(missing)} examples that its test split does not "
                         f"(e.g. {missing[0]!r}); evaluate the arm again with the study's data settings")
    kinds = np.array([by_example[e] for e in arm["example_id"].tolist()])
    split = multilevel.subset_difference(arm["label"], arm["pred"], kinds != "none", arm["clusters"],
                                         arm["cluster_kind"], n_resamples=n_resamples, seed=seed,
                                         confidence=confidence)
    with_copy = split["inside"] | {k: int(np.sum(kinds == k)) for k in ("exact", "near")}
    return {"with_copy": with_copy, "without_copy": split["outside"], "difference": split["difference"],
            "interval": split["interval"]}


def learning_verdict(group: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    """Whether the group-split arm learnt: its accuracy interval's upper bound above chance (1 / classes)
    and its balanced-accuracy interval above chance; the line that says what the difference then means."""
    chance = 1.0 / num_classes
    acc, bal = group["accuracy"], group["balanced_accuracy"]
    reasons = []
    if acc["high"] <= chance:
        reasons.append(f"accuracy {interval_text(acc, 3)}: its upper bound is at or below chance {chance:.3g}")
    if bal["low"] <= chance:
        where = "includes" if bal["high"] >= chance else "lies below"
        reasons.append(f"balanced accuracy {interval_text(bal, 3)}: its interval {where} chance {chance:.3g}")
    if reasons:
        line = (f"the group-split arm did not learn ({'; '.join(reasons)}); the difference measures memorised "
                "copies, not inflation of a model that generalises")
    else:
        line = (f"both arms learnt (the group-split arm's accuracy and balanced-accuracy intervals lie above chance "
                f"{chance:.3g}): the difference is what the random split adds to a model that generalises")
    return {"chance": chance, "group_arm_learnt": not reasons, "verdict": line}


def _notes(seeds: int) -> list[str]:
    if seeds == 1:
        return ["one training per arm: the intervals hold test-set sampling only, not training randomness; "
                f"use --seeds {multilevel.MIN_SEEDS} or more"]
    note = multilevel.few_seeds_note(seeds)
    return [note] if note else []


def _arm_entry(runs: Sequence[Training], data: Mapping[str, Any], copies: Mapping[str, int], num_classes: int,
               **opts: Any) -> dict[str, Any]:
    """One arm's row: its protocol, test set, metrics over its seeds with their intervals, and its copies."""
    first, k = runs[0], num_classes
    s = workdir.read_metrics(first.workdir)["classification"][first.test_split]
    fit, _ = _fit(data, k, **opts)
    entry = {"protocol": s["split_protocol"], "workdir": str(first.workdir if len(runs) == 1 else first.workdir.parent),
             "n_test": len(data["label"]), "n_clusters": fit["interval"]["n_clusters"], "n_seeds": len(runs),
             "seeds": [int(r.config.seed) for r in runs], **{m: fit[m] for m in DIFFERENCE_METRICS},
             "interval": fit["interval"], "copies_in_training": dict(copies)}
    if len(runs) > 1:
        per_seed = summarize_confusions(np.stack([np.bincount(data["label"] * k + p, minlength=k * k).reshape(k, k)
                                                  for p in data["pred"]]))
        entry["per_seed"] = {m: per_seed[m].tolist() for m in DIFFERENCE_METRICS}
    return entry


def run_leakage(config_spec: str, out: str | Path, *, overrides: Sequence[str] = (), seeds: int = 1,
                n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Train and evaluate every run of both arms (unless finished), then write the study's tables and figure."""
    out = Path(out)
    runs = arm_runs(config_spec, out, overrides, seeds)
    if seeds > 1:
        one_seed = [out / workdir.RUNS / arm for arm in ARMS if workdir.has_run(out / workdir.RUNS / arm)]
        if one_seed:
            raise ValueError(f"{one_seed[0]} holds a one-seed study's run; use a fresh --out for --seeds {seeds}")
    status = {}
    for run in runs:
        key = run.model if seeds == 1 else f"{run.model}/{run.tag}"
        status[key] = train_then_evaluate(run, n_resamples=n_resamples, seed=seed)
        if status[key] == "preempted":
            return {"status": "preempted", "runs": status, "paths": []}
    by_arm = {arm: [r for r in runs if r.model == arm] for arm in ARMS}
    first = by_arm[ARMS[0]][0]
    k = len(workdir.read_metrics(first.workdir)["classification"][first.test_split]["class_names"])
    opts = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    data = {arm: arm_data(rs) for arm, rs in by_arm.items()}
    arms, by_example = {}, {}
    for arm, rs in by_arm.items():
        input_pipeline.write_composition(input_pipeline.split_composition(rs[0].config.data),
                                         out / workdir.COMPOSITION / arm)
        copies = input_pipeline.copies_in_training(rs[0].config.data, rs[0].test_split, per_example=True)
        by_example[arm] = copies.pop("by_example")
        arms[arm] = _arm_entry(rs, data[arm], copies, k, **opts)
    study = {"config": config_spec, "overrides": list(overrides), "dataset": str(first.config.data.name),
             "seeds": seeds, "arms": arms,
             "difference": unpaired_difference(data["random"], data["group"], k, **opts),
             "inside_random_arm": inside_random_arm(data["random"], by_example["random"], **opts),
             "learning": learning_verdict(arms["group"], k), "notes": _notes(seeds)}
    paths = [workdir.write_json(out / workdir.LEAKAGE_JSON, study)]
    (out / workdir.LEAKAGE_MD).write_text(leakage_markdown(study))
    paths.append(out / workdir.LEAKAGE_MD)
    paths.append(_figure(study, out))
    return {"status": "done", "runs": status, "paths": paths, "study": study}


def _figure(study: Mapping[str, Any], out: Path) -> Path:
    """Each arm's accuracy, the random arm's split by copies in training, and the difference, with intervals."""
    arms, inside = study["arms"], study["inside_random_arm"]
    rows = [(f"{a} split", arms[a]["accuracy"]["estimate"], arms[a]["accuracy"]["low"], arms[a]["accuracy"]["high"])
            for a in ARMS]
    for key, label in (("with_copy", "random, copy in training"), ("without_copy", "random, no copy in training")):
        e = inside[key]["accuracy"]
        if e is not None:
            rows.append((label, e["estimate"], e["low"], e["high"]))
    d = study["difference"]["accuracy"]
    rows.append(("random − group", d["estimate"], d["low"], d["high"]))
    return figures.forest_png(rows, out / workdir.FIGURES / workdir.LEAKAGE_PNG, xlabel="test accuracy",
                              title="accuracy by split protocol, 95% intervals")
