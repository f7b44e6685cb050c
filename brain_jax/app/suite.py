"""``brain-jax suite``: one or several configs over K folds or N seeds, and the table of their results.

    brain-jax suite --config configs/paper/classifier.py:model=convnextv2,dataset=figshare --folds 5 --out suites/f5 \
        --models configs/paper/classifier.py:model=convnext,dataset=figshare

Folds: ``input_pipeline.fold_splits`` (Figshare's patient-disjoint cvind folds under ``split_by=builder``;
grouped K-fold of patients / duplicate groups under ``split_by=group``; slice-level under ``random``).
Seeds: the run seed (initialisation, batch order, augmentation) is ``config.seed + i``; the data split
stays, so every seed is scored on the same test set and the seed-to-seed spread is training
randomness alone, reported apart from the test-set bootstrap interval.

Layout of ``--out``::

    suite_spec.json            what was asked (configs, overrides, folds / seeds): a resumed suite must match
    runs/<model>/<fold1|seed0>/  one training workdir per model and fold / seed (train, then eval of the test split)
    composition/<fold1>/       class x source x split table of each fold (composition/ for seeds)
    compare/<fold1>/           ``brain-jax compare`` of the models on that fold (two or more models)
    compare/pooled/            the same on the pooled out-of-fold predictions (folds, two or more models)
    suite.json / suite.md      per-run rows with intervals, mean ± sd per model, paired per-run differences,
                               pooled out-of-fold results (folds) or the two-level bootstrap (seeds)
    figures/suite_<metric>.png

Folds pooled: each patient is in exactly one fold's test split, so the test predictions of a model's
K folds, concatenated, score every patient once. That pooled set (K times a fold's patients) is the
headline: its intervals and the paired comparison of the models on it (``compare/pooled/``), rather
than the mean ± sd over folds, whose folds share most of their training data.

Seeds: every seed is scored on one test set; a two-level bootstrap (``brain_jax.metrics.multilevel``:
seeds, then patients) gives each model's mean over seeds an interval that holds both training
randomness and test-set sampling, and each pair of models a paired difference (patients drawn once for
both, seeds drawn apart). Fewer than 5 seeds are flagged.

A run whose workdir already holds its test predictions is never trained or evaluated again; an
interrupted run resumes from its last checkpoint. ``--index I`` runs fold / seed I only (one process
per fold, e.g. ``launch/suite_array.sbatch``, where the SLURM array index is I); the same command without
``--index`` then trains what is left (nothing) and writes the tables.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

import input_pipeline
from brain_jax import N_RESAMPLES, workdir
from brain_jax.app import compare as compare_app
from brain_jax.app import figures, results
from brain_jax.app.evaluate import evaluate_workdir, intervals_for
from brain_jax.app.tables import compare_markdown, suite_markdown
from brain_jax.metrics import multilevel
from brain_jax.train.config import load_config
from brain_jax.train.spec import RunSpec, lookup
from brain_jax.train.trainer import train_and_evaluate

METRICS = {"classification": ("accuracy", "macro_f1"), "segmentation": ("dice", "iou", "hd95_mm")}
TWO_LEVEL_METRICS = {"classification": ("accuracy", "macro_f1"), "segmentation": ("dice",)}
POOLED = "pooled"  # compare/pooled/: the comparison of the pooled out-of-fold predictions


@dataclasses.dataclass
class Training:
    """One training of a suite (a model, its config, on one fold or with one seed) or of a study's arm."""

    model: str  # the model's tag in tables
    tag: str  # "fold1" ... or "seed0" ...
    config: ml_collections.ConfigDict
    workdir: Path

    @property
    def test_split(self) -> str:
        return str(self.config.data.test_split)


def is_finished(run: Training) -> bool:
    """Whether the run's workdir holds its test-split predictions and results (then it is never re-run)."""
    wd, split = run.workdir, run.test_split
    if not (workdir.predictions_csv(wd, split).is_file() and (wd / workdir.METRICS).is_file()):
        return False
    return split in workdir.read_metrics(wd).get(str(run.config.data.task), {})


def train_then_evaluate(run: Training, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                        composition: bool = False) -> str:
    """Train (resuming) and evaluate the test split unless the run is finished: "kept", "done" or "preempted"."""
    if is_finished(run):
        return "kept"
    result = train_and_evaluate(run.config, run.workdir)
    if result["status"] == "preempted":
        return "preempted"
    evaluate_workdir(run.config, run.workdir, split=run.test_split, n_resamples=n_resamples, seed=seed,
                     composition=composition)
    return "done"


def _tags(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
    """The model label (``RunSpec.label``) per config; a tag that repeats gets ``-1``, ``-2``... in order."""
    tags = [RunSpec.from_config(c).label for c in configs]
    seen: dict[str, int] = {}
    out = []
    for t in tags:
        seen[t] = seen.get(t, 0) + 1
        out.append(f"{t}-{seen[t]}" if tags.count(t) > 1 else t)
    return out


def plan(config_specs: Sequence[str], out: str | Path, *, folds: int = 0, seeds: int = 0,
         overrides: Sequence[str] = ()) -> list[Training]:
    """Every run of the suite, model by model; ValueError before anything runs when the folds cannot be
    made (a dataset without folds names the splits it has) or the request is inconsistent."""
    if (folds > 0) == (seeds > 0):
        raise ValueError("give exactly one of --folds K (K >= 2) or --seeds N (N >= 1)")
    if seeds < 0 or folds < 0:
        raise ValueError(f"--folds / --seeds must be positive; got folds={folds}, seeds={seeds}")
    configs = [load_config(spec, overrides) for spec in config_specs]
    tasks = {str(c.data.task) for c in configs}
    if len(tasks) > 1:
        raise ValueError(f"the suite's configs mix tasks {sorted(tasks)}; run one suite per task")
    out = Path(out)
    runs = []
    for tag, base in zip(_tags(configs), configs):
        if folds:
            variants = []
            for i, spec in enumerate(input_pipeline.fold_splits(base.data, folds)):
                cfg = base.copy_and_resolve_references()
                cfg.data.update(spec)
                variants.append((f"fold{i + 1}", cfg))
        else:
            variants = []
            for i in range(seeds):
                cfg = base.copy_and_resolve_references()
                cfg.seed = int(base.seed) + i
                variants.append((f"seed{cfg.seed}", cfg))
        runs += [Training(tag, run_tag, cfg, out / workdir.RUNS / tag / run_tag) for run_tag, cfg in variants]
    _check_same_test_sets(runs)
    return runs


# The data fields that decide which examples a test split holds.
TEST_SET_FIELDS = ("name", "builder_config", "task", "classes", "split_by", "dedup", "near_dup_bits",
                   "group_split_fractions", "seed", "num_folds", "fold", "test_split")


def _check_same_test_sets(runs: list[Training]) -> None:
    """Every model of a fold / seed must be tested on the same examples (compared pair by pair)."""
    for r in runs:
        first = next(x for x in runs if x.tag == r.tag)
        diff = [f for f in TEST_SET_FIELDS
                if lookup(first.config, f"data.{f}", None) != lookup(r.config, f"data.{f}", None)]
        if diff:
            raise ValueError(f"{first.model} and {r.model} would be tested on different examples in {r.tag} (config "
                             f"fields {', '.join('data.' + f for f in diff)} differ); give the suite's models the "
                             "same data settings")


def _check_spec(out: Path, spec: dict[str, Any]) -> None:
    """Record what the suite asked for; a resumed suite (or another array task) must ask the same."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / workdir.SUITE_SPEC
    text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:  # a hard link appears whole and only once: concurrent array tasks write it once, none reads half
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    saved = workdir.read_json(path, "the settings this suite was started with")
    if saved != json.loads(text):
        diff = [k for k in sorted(set(saved) | set(spec)) if saved.get(k) != spec.get(k)]
        raise ValueError(f"{out} holds a suite started with other settings ({', '.join(diff)} differ: was "
                         f"{ {k: saved.get(k) for k in diff} }); use a fresh --out or the same arguments")


def run_suite(config_specs: Sequence[str], out: str | Path, *, folds: int = 0, seeds: int = 0,
              overrides: Sequence[str] = (), index: int | None = None, n_resamples: int = N_RESAMPLES,
              seed: int = 0, claim_best: str | None = None) -> dict[str, Any]:
    """Run what is not finished (only fold / seed ``index`` when given), then, without ``index``, write the
    tables. ``claim_best`` (a model's tag) tests the claims that it beats each other model on the pooled
    out-of-fold predictions (once, not per fold: ``compare.claims``). Returns
    ``{"status": "done" | "preempted" | "partial", "runs": {...}, "paths": [...]}``."""
    out = Path(out)
    runs = plan(config_specs, out, folds=folds, seeds=seeds, overrides=overrides)
    tags = list(dict.fromkeys(r.tag for r in runs))
    if index is not None and not 0 <= index < len(tags):
        kind = "folds" if folds else "seeds"
        raise ValueError(f"--index {index}: the suite has {len(tags)} {kind} (0..{len(tags) - 1})")
    _check_spec(out, {"configs": list(config_specs), "overrides": list(overrides), "folds": folds, "seeds": seeds,
                      "n_resamples": n_resamples, "bootstrap_seed": seed})
    chosen = [t for i, t in enumerate(tags) if index is None or i == index]
    status: dict[str, str] = {}
    for tag in chosen:
        _write_composition(runs, tag, out, folds)
        for run in (r for r in runs if r.tag == tag):
            status[f"{run.model}/{tag}"] = train_then_evaluate(run, n_resamples=n_resamples, seed=seed)
            if status[f"{run.model}/{tag}"] == "preempted":
                return {"status": "preempted", "runs": status, "paths": []}
    if index is not None:
        return {"status": "partial", "runs": status, "paths": []}
    paths = []
    models = list(dict.fromkeys(r.model for r in runs))
    if len(models) > 1:
        for tag in tags:
            wds = [r.workdir for r in runs if r.tag == tag]
            split = next(r.test_split for r in runs if r.tag == tag)
            res = compare_app.compare(wds, out / workdir.COMPARE / tag, split=split, names=models,
                                      n_resamples=n_resamples, seed=seed)
            paths += res["paths"][:2]
    table = aggregate(runs, folds=folds)
    opts = {"n_resamples": n_resamples, "seed": seed}
    if folds:
        table["pooled"] = pool_folds(runs, out, claim_best=claim_best, **opts)
        if table["pooled"]["comparison"]:
            paths += [out / table["pooled"]["comparison"], out / workdir.COMPARE / POOLED / workdir.COMPARE_JSON]
    else:
        table["two_level"] = seed_bootstrap(runs, **opts)
    paths += write_tables(table, out)
    return {"status": "done", "runs": status, "paths": paths, "table": table}


def _write_composition(runs: list[Training], tag: str, out: Path, folds: int) -> None:
    """The split composition of a fold (of the first model's config; every seed shares one split)."""
    if not folds and tag != runs[0].tag:
        return
    folder = out / workdir.COMPOSITION / tag if folds else out / workdir.COMPOSITION
    if (folder / f"{workdir.COMPOSITION}.json").is_file():
        return
    first = next(r for r in runs if r.tag == tag)
    input_pipeline.write_composition(input_pipeline.split_composition(first.config.data), folder)


# ------------------------------------------------------------------------------------------ the table


def _test_summary(run: Training) -> dict[str, Any]:
    return workdir.read_metrics(run.workdir)[str(run.config.data.task)][run.test_split]


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"), "n": len(v)}


def aggregate(runs: list[Training], *, folds: int) -> dict[str, Any]:
    """Per-run rows with intervals, mean ± sd over runs per model, and paired per-run differences between
    models (same fold / seed, same test set)."""
    task = str(runs[0].config.data.task)
    keys = METRICS[task]
    models = list(dict.fromkeys(r.model for r in runs))
    tags = list(dict.fromkeys(r.tag for r in runs))
    summaries = {(r.model, r.tag): _test_summary(r) for r in runs}
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    for r in runs:
        s = summaries[(r.model, r.tag)]
        ci = s["intervals"]
        rows[r.model].append({"run": r.tag, "workdir": str(r.workdir), "split": r.test_split,
                              "n": int(s.get("num_examples", s.get("num_cases", 0))),
                              **{k: ci[k] for k in keys}})
    per_model = {}
    for m in models:
        per_model[m] = {k: _mean_sd([row[k]["estimate"] for row in rows[m]])
                        | {"mean_interval_width": float(np.mean([row[k]["high"] - row[k]["low"] for row in rows[m]]))}
                        for k in keys}
    pairs = []
    for a, b in itertools.combinations(models, 2):  # A before B, as compare pairs them
        diffs = {k: [summaries[(a, t)]["intervals"][k]["estimate"] - summaries[(b, t)]["intervals"][k]["estimate"]
                     for t in tags] for k in keys}
        pairs.append({"models": [a, b], "per_run": {k: dict(zip(tags, v)) for k, v in diffs.items()},
                      **{k: _mean_sd(v) | {"runs_a_higher": int(np.sum(np.asarray(v) > 0))} for k, v in diffs.items()}})
    first = summaries[(runs[0].model, runs[0].tag)]
    protocols = {t: summaries[(models[0], t)].get("split_protocol", "") for t in tags}
    note = None if folds else multilevel.few_seeds_note(len(tags))
    return {"task": task, "mode": "folds" if folds else "seeds", "runs": tags, "metrics": list(keys),
            "split_protocol": protocols, "dataset": first.get("dataset", ""),
            "interval": first["intervals"]["interval"], "rows": rows, "per_model": per_model, "pairs": pairs,
            "notes": [note] if note else []}


# ------------------------------------------------------------------------------------------ folds pooled


def _predictions(run: Training) -> workdir.Predictions:
    return workdir.read_predictions(workdir.predictions_csv(run.workdir, run.test_split))


def pooled_predictions(runs: Sequence[Training]) -> workdir.Predictions:
    """One model's test predictions of every fold, one fold after another; ValueError naming two folds and
    an example when an example is in both folds' test splits (then the folds do not partition the pool)."""
    seen: dict[str, str] = {}
    parts = []
    for run in runs:
        p = _predictions(run)
        for e in p.ids["example_id"].tolist():
            if e in seen:
                raise ValueError(f"{run.model}: example {e!r} is in the test split of both {seen[e]} and {run.tag}; "
                                 "pooled out-of-fold predictions need every example tested once")
            seen[e] = run.tag
        parts.append(p)
    return workdir.Predictions.concat(parts, path=runs[0].workdir.parent)


def n_clusters(ids: dict[str, np.ndarray]) -> int:
    """How many resampling units (patients / duplicate groups, else slices) the examples hold."""
    clusters, _, _ = results.resampling_clusters(ids)
    return len(ids["example_id"]) if clusters is None else len(np.unique(clusters))


def pool_folds(runs: list[Training], out: Path, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
               claim_best: str | None = None) -> dict[str, Any]:
    """Every model's pooled out-of-fold predictions with intervals and, with several models, their comparison
    in ``compare/pooled/`` (``compare.compare_runs``, as each fold's)."""
    task, keys = str(runs[0].config.data.task), METRICS[str(runs[0].config.data.task)]
    models = list(dict.fromkeys(r.model for r in runs))
    folds = list(dict.fromkeys(r.tag for r in runs))
    pooled = {m: pooled_predictions([r for r in runs if r.model == m]) for m in models}
    first = _test_summary(runs[0])
    protocol = (f"out-of-fold test predictions of {len(folds)} folds pooled; {folds[0]}: "
                f"{first.get('split_protocol', '')}")
    comparison = None
    if len(models) > 1:  # each model named by its first fold's workdir (its config is every fold's but the data)
        compared = [compare_app.ComparedModel(m, next(r.workdir for r in runs if r.model == m), pooled[m],
                                              str(first.get("dataset", "")), protocol) for m in models]
        c = compare_app.compare_runs(compared, n_resamples=n_resamples, seed=seed, claim_best=claim_best)
        blocks = c["metrics"]
        c["split"] = f"{runs[0].test_split} of {len(folds)} folds, pooled"
        folder = out / workdir.COMPARE / POOLED
        folder.mkdir(parents=True, exist_ok=True)
        compare_app.write_figures(c, folder)
        workdir.write_json(folder / workdir.COMPARE_JSON, c)
        (folder / workdir.COMPARE_MD).write_text(compare_markdown(c))
        comparison = (folder / workdir.COMPARE_MD).relative_to(out).as_posix()
    else:
        p = pooled[models[0]]
        examples = ({"label": p.label, "pred": p.pred, "probs": p.probs} if task == "classification" else p.values)
        blocks = {models[0]: intervals_for(task, examples, p.ids, len(p.class_names), n_resamples=n_resamples,
                                           seed=seed)}
    rows = {m: {"n": len(pooled[m]), "n_clusters": n_clusters(pooled[m].ids), **{k: blocks[m][k] for k in keys}}
            for m in models}
    return {"folds": folds, "split": runs[0].test_split, "protocol": protocol, "n": len(pooled[models[0]]),
            "interval": blocks[models[0]]["interval"], "models": rows, "comparison": comparison}


# ------------------------------------------------------------------------------------------ seeds


def stacked_predictions(runs: Sequence[Training], order: Sequence[str] | None = None) -> dict[str, Any]:
    """The test predictions of runs scored on one test set, rows aligned by example id (to ``order``, else to
    the first run's rows): ``values`` (runs, n) predicted classes or per-case Dice, ``label`` (n,) for
    classification, ``clusters``, ``cluster_kind``, ``example_id``, ``num_classes``; ValueError when a run was
    tested on other examples."""
    parts = [_predictions(r) for r in runs]
    ids = list(order) if order is not None else parts[0].ids["example_id"].tolist()
    pos = {e: i for i, e in enumerate(ids)}
    values, label, ref = [], None, None
    for run, p in zip(runs, parts):
        got = p.ids["example_id"].tolist()
        if len(got) != len(pos) or any(e not in pos for e in got):
            raise ValueError(f"{run.workdir} was tested on other examples than {runs[0].workdir} ({len(got)} vs "
                             f"{len(pos)}); the runs must share one test split (same data settings)")
        p = p.take(np.argsort([pos[e] for e in got]))
        if ref is None:
            ref, label = p, p.label
        elif p.task == "classification" and np.any(p.label != label):
            raise ValueError(f"{run.workdir} and {runs[0].workdir} label the same examples differently")
        values.append(p.pred if p.task == "classification" else p.values["dice"])
    clusters, kind, _ = results.resampling_clusters(ref.ids)
    return {"values": np.stack(values), "label": label, "clusters": clusters, "cluster_kind": kind,
            "example_id": ref.ids["example_id"], "num_classes": len(ref.class_names), "task": ref.task}


def seed_bootstrap(runs: list[Training], *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, Any]:
    """Each model's mean over its seeds with a two-level interval (seeds, then patients), and the paired
    difference of every pair of models (patients drawn once for both, each model's seeds on its own)."""
    task = str(runs[0].config.data.task)
    keys = TWO_LEVEL_METRICS[task]
    models = list(dict.fromkeys(r.model for r in runs))
    order = _predictions(runs[0]).ids["example_id"].tolist()
    data = {m: stacked_predictions([r for r in runs if r.model == m], order) for m in models}
    d0 = data[models[0]]
    opts = {"labels": d0["label"], "num_classes": d0["num_classes"], "n_resamples": n_resamples, "seed": seed,
            "confidence": confidence}
    per_model, meta = {}, None
    for m in models:
        fit, _ = multilevel.two_level(task, data[m]["values"], d0["clusters"], d0["cluster_kind"], **opts)
        per_model[m] = {k: fit[k] for k in keys}
        meta = meta or fit["interval"]
    pairs = []
    for a, b in itertools.combinations(models, 2):
        d = multilevel.paired_difference(task, data[a]["values"], data[b]["values"], d0["clusters"],
                                         d0["cluster_kind"], **opts)
        pairs.append({"models": [a, b], **{k: d[k] for k in keys}, "interval": d["interval"]})
    return {"metrics": list(keys), "interval": meta, "per_model": per_model, "pairs": pairs}


def write_tables(t: dict[str, Any], out: Path) -> list[Path]:
    """suite.json, suite.md and one forest plot per metric (each run's estimate with its interval)."""
    paths = [workdir.write_json(out / workdir.SUITE_JSON, t)]
    (out / workdir.SUITE_MD).write_text(suite_markdown(t))
    paths.append(out / workdir.SUITE_MD)
    for k in t["metrics"]:
        rows = [(f"{m} {r['run']}", r[k]["estimate"], r[k]["low"], r[k]["high"])
                for m, rs in t["rows"].items() for r in rs]
        path = out / workdir.FIGURES / workdir.SUITE_PNG.format(metric=k)
        paths.append(figures.forest_png(rows, path, reference=None,
                                        title=f"{k} per {t['mode'][:-1]}, 95% intervals", xlabel=k))
    return paths

