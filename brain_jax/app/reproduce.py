"""``brain-jax reproduce``: the paper's experiments, honestly, from the manual downloads to one report.

    brain-jax reproduce --manual-dir ~/Downloads/brain --data-dir ~/tensorflow_datasets --out paper_run
    brain-jax reproduce ... --dry-run          # the plan, the number of trainings, a time estimate
    brain-jax reproduce --smoke --data-dir /tmp/d --out /tmp/r   # the whole graph on phantoms (CI)

``--manual-dir`` holds ``figshare/`` (Figshare's four zips or the N.mat files, and cvind.mat) and
``kaggle/`` (the Kaggle sets the paper merged, each unzipped into its own sub-folder; see
docs/experiments.md). The plan, each step resumable (a finished training is never redone):

1. build ``figshare_brain_tumor`` and ``brain_tumor_mri``; audit the merged pool's duplicates;
2. the four classifiers of ``configs/paper/classifier.py`` under the paper's random slice-level split and
   under the split by patient / duplicate group, each evaluated on its test split, and ``compare`` of each
   four with the claims "ConvNeXt V2 beats each other model" (accuracy; every metric of every class) tested;
3. SegFormer (``configs/paper/segformer.py``) on Figshare's fold 5;
4. ``study leakage`` (random vs group split of ConvNeXt V2);
5. the Figshare 5-fold suite of the four classifiers, with the pooled out-of-fold comparison;
6. with ``--weights matched``, the four classifiers from matched pre-training under the group split,
   compared the same way;
7. ``paper_report.md``: a row per claim of the paper, its number beside ours with the interval, the test
   and the verdict. Written last, once every step is finished, so a partial run never shows as a result.

``--smoke`` runs the same graph on the tiny phantoms with two of the classifiers (ConvNeXt V2 and ViT) in
their tiny test sizes (2 folds, a few steps each), which exercises every step; its numbers mean nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brain_jax import N_RESAMPLES, workdir

CLASSIFIERS = ("convnextv2", "convnext", "swin", "vit")
SMOKE_CLASSIFIERS = ("convnextv2", "vit")  # --smoke: two of the four run every step of the same graph
BEST = "convnextv2"  # the model the paper claims is best: named before any result is seen
SPLITS = ("random", "group")
CLASSIFIER = "configs/paper/classifier.py"
SEGFORMER = "configs/paper/segformer.py"
PAPER_REPORT = "paper_report.md"
MANUAL_PARTS = {"figshare": "figshare_brain_tumor", "kaggle": "brain_tumor_mri"}
# The paper's numbers (Table I, Fig. 9, Table II, text), for the report's rows.
PAPER_ACCURACY = {"convnextv2": 0.9960, "convnext": 0.9911, "swin": 0.9901, "vit": 0.985}
PAPER_DICE, PAPER_HD_MM = 0.95, 0.87
# Training images per run when the datasets are not built yet (the published sizes): the merged pool's
# 70 % training share of about 15,000 images; Figshare's 3,064 slices, 3 of 5 folds for training.
EXPECTED_TRAIN_IMAGES = {"merged": 10_500, "figshare_fold": 1_840, "figshare_5fold": 2_450}


@dataclasses.dataclass
class Step:
    """One unit of the plan: what it is, how much training it holds, how to run it and whether it is done."""

    name: str
    kind: str  # build | audit | train | compare | segment | study | suite | report
    run: Callable[[], Any]
    done: Callable[[], bool]
    trainings: int = 0
    train_images: int = 0  # images seen in training (epochs x training images), for the estimate
    model: tuple[str, str] | None = None
    image_size: int = 0


@dataclasses.dataclass
class Settings:
    manual_dir: Path | None
    data_dir: Path
    out: Path
    weights: str = "paper"
    smoke: bool = False
    n_resamples: int = N_RESAMPLES
    seed: int = 0


# ------------------------------------------------------------------------------------------ configs


def classifier_spec(model: str, s: Settings, *, weights: str | None = None, dataset: str = "merged",
                    split: str = "random") -> str:
    """The config spec of one classifier run (``--smoke``: the tiny phantoms and the test model)."""
    args = [f"model={model}", f"weights={weights or 'paper'}"]
    if s.smoke:
        return f"{CLASSIFIER}:" + ",".join(args + ["dataset=phantoms", "runlocal"])
    args.append(f"dataset={dataset}")
    if dataset == "merged":
        args.append(f"split={split}")
    return f"{CLASSIFIER}:" + ",".join(args)


def overrides(s: Settings, *, split: str | None = None) -> list[str]:
    """Config overrides every run of the plan gets: the data folder (and, smoke, the tiny phantoms)."""
    out = [f"--config.data.data_dir={s.data_dir}"]
    if s.smoke:  # a few steps of batch 8: folds of the tiny phantoms hold about 14 training images
        out += ["--config.data.builder_config=tiny", "--config.data.image_size=32", "--config.batch_size=8",
                "--config.eval_batch_size=16", "--config.num_train_steps=8", "--config.checkpoint_every_steps=4",
                "--config.log_every_steps=4", "--config.progress_bar=false", "--config.mesh.num_devices=1"]
        if split:  # phantoms keep their builder splits unless told: split the pool as the merged set is
            out += [f"--config.data.split_by={split}", "--config.data.train_split=train",
                    "--config.data.eval_split=validation", "--config.data.test_split=test"]
    return out


# ------------------------------------------------------------------------------------------ the plan


def check_downloads(s: Settings) -> None:
    """FileNotFoundError naming the first missing download (one line) unless ``--smoke``."""
    if s.smoke:
        return
    if s.manual_dir is None:
        raise FileNotFoundError("reproduce needs --manual-dir (a folder with figshare/ and kaggle/ holding your "
                                "downloads; see docs/experiments.md), or --smoke")
    for part, name in MANUAL_PARTS.items():
        folder = s.manual_dir / part
        if not folder.is_dir() or not any(folder.iterdir()):
            raise FileNotFoundError(f"{folder}: missing or empty; put the {name} downloads there (see "
                                    "docs/experiments.md#the-papers-data)")
    if not any((s.manual_dir / "figshare").glob("cvind.mat")):
        raise FileNotFoundError(f"{s.manual_dir / 'figshare' / 'cvind.mat'}: missing; it holds Figshare's "
                                "patient folds (download it beside the four zips)")


def _built(data_dir: Path, name: str) -> bool:
    """Whether TFDS prepared ``name`` in ``data_dir``: NAME/VERSION/ or, with builder configs, NAME/CONFIG/VERSION/."""
    return any((data_dir / name).glob("**/dataset_info.json"))


def plan(s: Settings) -> list[Step]:
    """Every step in order (nothing runs here)."""
    # start-up: `reproduce --help` and the download checks load no verb, JAX or TensorFlow
    from brain_jax.app import compare as compare_app  # start-up
    from brain_jax.app import study, suite  # start-up
    from brain_jax.train.config import load_config  # start-up
    from brain_jax.train.spec import RunSpec  # start-up
    from input_pipeline.builders import build_dataset  # start-up

    out = s.out
    classifiers = SMOKE_CLASSIFIERS if s.smoke else CLASSIFIERS
    steps: list[Step] = []
    if s.smoke:
        steps.append(Step("build brain_phantoms/tiny", "build", lambda: build_dataset(
            "brain_phantoms", s.data_dir, builder_config="tiny"), lambda: _built(s.data_dir, "brain_phantoms")))
    else:
        for part, name in MANUAL_PARTS.items():
            steps.append(Step(f"build {name}", "build", lambda part=part, name=name: build_dataset(
                name, s.data_dir, manual_dir=s.manual_dir / part, skip_bad=name == "brain_tumor_mri"),
                lambda name=name: _built(s.data_dir, name)))
        near_bits = int(load_config(classifier_spec(BEST, s), overrides(s)).data.near_dup_bits)
        steps.append(Step("audit the merged pool", "audit", lambda: _audit(s, near_bits),
                          lambda: (out / "audit" / "audit.json").is_file()))

    def trainings(tag: str, weights: str, split: str) -> list[suite.Training]:
        runs = []
        for m in classifiers:
            cfg = load_config(classifier_spec(m, s, weights=weights, split=split), overrides(s, split=split))
            runs.append(suite.Training(RunSpec.from_config(cfg).label, tag, cfg, out / "runs" / tag / m))
        return runs

    arms = [(split, "paper", split) for split in SPLITS]
    if s.weights == "matched":
        arms.append(("matched", "matched", "group"))
    for tag, weights, split in arms:
        runs = trainings(tag, weights, split)
        for run in runs:
            steps.append(_training_step(f"train + eval {run.model} ({tag})", run, s, "merged"))
        best = runs[classifiers.index(BEST)].model
        steps.append(Step(f"compare the {len(runs)} classifiers ({tag})", "compare",
                          lambda runs=runs, tag=tag, best=best: compare_app.compare(
                              [r.workdir for r in runs], out / workdir.COMPARE / tag, split=runs[0].test_split,
                              names=[r.model for r in runs], n_resamples=s.n_resamples, seed=s.seed,
                              claim_best=best),
                          lambda tag=tag: (out / workdir.COMPARE / tag / workdir.COMPARE_JSON).is_file()))
    seg_spec = f"{SEGFORMER}:dataset=phantoms,runlocal" if s.smoke else SEGFORMER
    seg_cfg = load_config(seg_spec, overrides(s, split="group" if s.smoke else None))
    seg = suite.Training("segformer", "segformer", seg_cfg, out / "runs" / "segformer")
    steps.append(_training_step("train + eval SegFormer", seg, s, "figshare_fold"))
    leak_spec = classifier_spec(BEST, s)
    leak_out = out / "studies" / "leakage"
    steps.append(Step("study leakage (random vs group split)", "study",
                      lambda: study.run_leakage(leak_spec, leak_out, overrides=overrides(s), n_resamples=s.n_resamples,
                                                seed=s.seed),
                      lambda: (leak_out / workdir.LEAKAGE_JSON).is_file(), trainings=2,
                      train_images=2 * _epochs_images(load_config(leak_spec, overrides(s)), s, "merged"),
                      model=_model(load_config(leak_spec, overrides(s))), image_size=224))
    folds = 2 if s.smoke else 5
    specs = [classifier_spec(m, s, dataset="figshare") for m in classifiers]
    suite_over = overrides(s) + (["--config.data.split_by=group"] if s.smoke else [])
    suite_out = out / "suites" / f"figshare_{folds}fold"
    first = load_config(specs[0], suite_over)
    steps.append(Step(f"suite: the {len(specs)} classifiers over {folds} folds, pooled", "suite",
                      lambda: suite.run_suite(specs, suite_out, folds=folds, overrides=suite_over,
                                              n_resamples=s.n_resamples, seed=s.seed,
                                              claim_best=RunSpec.from_config(first).label),
                      lambda: (suite_out / workdir.SUITE_JSON).is_file(), trainings=len(specs) * folds,
                      train_images=len(specs) * folds * _epochs_images(first, s, "figshare_5fold"),
                      model=_model(first),
                      image_size=int(first.data.image_size)))
    steps.append(Step(f"write {PAPER_REPORT}", "report", lambda: write_paper_report(s),
                      lambda: (out / PAPER_REPORT).is_file()))
    return steps


def _model(cfg: Any) -> tuple[str, str]:
    return str(cfg.model.name), str(cfg.model.variant)


def _epochs_images(cfg: Any, s: Settings, kind: str) -> int:
    """Training images seen by one run of ``cfg``: steps x batch when steps are fixed, else epochs x the
    expected training set."""
    steps = int(cfg.get("num_train_steps", 0) or 0)
    if steps > 0:
        return steps * int(cfg.batch_size)
    return int(float(cfg.get("num_epochs", 1.0)) * EXPECTED_TRAIN_IMAGES[kind])


def _training_step(name: str, run: Any, s: Settings, kind: str) -> Step:
    from brain_jax.app import suite  # start-up

    return Step(name, "train", lambda: suite.train_then_evaluate(run, n_resamples=s.n_resamples, seed=s.seed),
                lambda: suite.is_finished(run), trainings=1, train_images=_epochs_images(run.config, s, kind),
                model=_model(run.config), image_size=int(run.config.data.image_size))


def _audit(s: Settings, near_bits: int) -> None:
    from input_pipeline.audit import run_audit  # start-up

    run_audit(list(MANUAL_PARTS.values()), str(s.data_dir), str(s.out / "audit"), near_bits=near_bits)


# ------------------------------------------------------------------------------------------ estimate


def measured_rates(results: Path) -> dict[str, dict[tuple[str, str, int], float]]:
    """Training images/s per device kind and (model, variant, image size) from benchmarks/results/*.json
    (the rows ``bench_models.py`` writes: ``jax_images_per_s``); the kind is the file name's prefix."""
    rates: dict[str, dict[tuple[str, str, int], float]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            rows = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for r in rows if isinstance(rows, list) else []:
            if isinstance(r, dict) and r.get("jax_images_per_s"):
                kind = path.name.split("_")[0]
                rates.setdefault(kind, {})[(r["model"], r["variant"], int(r["image_size"]))] = float(
                    r["jax_images_per_s"])
    return rates


def estimate(steps: Sequence[Step], rates: dict[str, dict[tuple[str, str, int], float]]) -> dict[str, Any]:
    """Device hours of the training steps per device kind: images / measured rate; a model without a
    measurement at its size is listed as unmeasured (its time is not guessed)."""
    out = {}
    for kind, table in rates.items():
        seconds, missing = 0.0, set()
        for st in steps:
            if not st.trainings or st.model is None:
                continue
            rate = table.get((*st.model, st.image_size))
            if rate is None:
                missing.add(f"{st.model[0]}-{st.model[1]} at {st.image_size}px")
            else:
                seconds += st.train_images / rate
        out[kind] = {"hours_measured": seconds / 3600, "unmeasured": sorted(missing)}
    return out


def plan_text(steps: Sequence[Step], s: Settings, results: Path) -> str:
    lines = [f"brain-jax reproduce: {len(steps)} steps, {sum(st.trainings for st in steps)} training runs "
             f"({'smoke: tiny phantoms' if s.smoke else 'weights=' + s.weights}), into {s.out}"]
    for i, st in enumerate(steps, 1):
        state = "done" if st.done() else "to do"
        lines.append(f"{i:3d}. [{state}] {st.name}" + (f"  ({st.trainings} trainings)" if st.trainings > 1 else ""))
    for kind, e in estimate(steps, measured_rates(results)).items():
        line = f"estimate on {kind}: {e['hours_measured']:.1f} device hours of training for the measured models"
        if e["unmeasured"]:
            line += "; not measured there (not counted): " + ", ".join(e["unmeasured"])
        lines.append(line)
    lines.append("(training only, at the measured step rates; evaluation, building and the host loader add to it: "
                 "BENCHMARKS.md)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ running


def reproduce(s: Settings, *, dry_run: bool = False, results: Path | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or, ``dry_run``, list) the plan; returns {"status", "steps", "report"}."""
    check_downloads(s)
    results = results or Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    steps = plan(s)
    if dry_run:
        text = plan_text(steps, s, results)
        echo(text)
        return {"status": "planned", "steps": [st.name for st in steps], "text": text}
    s.out.mkdir(parents=True, exist_ok=True)
    ran = []
    for i, st in enumerate(steps, 1):
        if st.done():
            echo(f"[{i}/{len(steps)}] {st.name}: done before, kept")
            continue
        echo(f"[{i}/{len(steps)}] {st.name} ...")
        started = time.monotonic()
        result = st.run()
        echo(f"[{i}/{len(steps)}] {st.name}: {time.monotonic() - started:.0f} s")
        if result == "preempted" or (isinstance(result, dict) and result.get("status") == "preempted"):
            echo(f"[{i}/{len(steps)}] {st.name}: preempted; run the same command again to resume")
            return {"status": "preempted", "steps": ran}
        ran.append(st.name)
    return {"status": "done", "steps": ran, "report": s.out / PAPER_REPORT}


# ------------------------------------------------------------------------------------------ the report


def _read(path: Path) -> dict[str, Any]:
    return workdir.read_json(path, "a result reproduce wrote") if path.is_file() else {}


def paper_rows(out: Path) -> list[list[str]]:
    """The report's rows: claim, the paper's value, ours with its interval, the test, the verdict."""
    from brain_jax.app.tables import interval_text  # start-up

    rows = []
    for tag in (*SPLITS, "matched"):
        c = _read(out / workdir.COMPARE / tag / workdir.COMPARE_JSON)
        if not c:
            continue
        where = {"random": "random slice-level split (the paper's)", "group": "split by patient / duplicate group",
                 "matched": "matched pre-training, split by patient / group"}[tag]
        for name, block in c["metrics"].items():
            key = next((m for m in CLASSIFIERS if name.startswith(m)), None)  # convnextv2 is tried first
            paper = f"{100 * PAPER_ACCURACY[key]:.2f} %" if key in PAPER_ACCURACY and tag == "random" else "—"
            rows.append([f"{name} accuracy, {where}", paper, interval_text(block["accuracy"]), "—",
                         "the paper's value lies in our interval" if paper != "—" and
                         block["accuracy"]["low"] <= PAPER_ACCURACY[key] <= block["accuracy"]["high"] else "—"])
        for cl in c.get("claims", []):
            rows.append([f"{cl['claim']} ({where})", "claimed", f"p = {cl['p_value']:.3g} (largest of "
                         f"{cl['n_hypotheses']})", cl["test"], cl["verdict"]])
    suite_json = next(iter(sorted((out / "suites").glob("*/" + workdir.SUITE_JSON))), None) \
        if (out / "suites").is_dir() else None
    if suite_json:
        pooled = _read(suite_json.parent / workdir.COMPARE / "pooled" / workdir.COMPARE_JSON)
        for cl in pooled.get("claims", []):
            rows.append([f"{cl['claim']} (Figshare folds pooled: every patient tested once)", "claimed",
                         f"p = {cl['p_value']:.3g}", cl["test"], cl["verdict"]])
        for p in pooled.get("pairs", []):
            pr = p["primary"]
            rows.append([f"{p['models'][0]} vs {p['models'][1]}, Figshare folds pooled", "—",
                         interval_text(p["accuracy_difference"]), pr["test"], pr["verdict"]])
    seg = _read(out / "runs" / "segformer" / workdir.METRICS).get("segmentation", {})
    for split, m in seg.items():
        ci = m.get("intervals", {})
        rows.append([f"SegFormer Dice ({split})", f"{PAPER_DICE:.2f}", interval_text(ci.get("dice")), "—", "—"])
        rows.append([f"SegFormer HD (mm, {split})", f"{PAPER_HD_MM:.2f}", interval_text(ci.get("hd_mm")), "—", "—"])
    leak = _read(out / "studies" / "leakage" / workdir.LEAKAGE_JSON)
    if leak:
        d = leak["difference"]["accuracy"]
        rows.append(["accuracy inflation of the random split (random − group)", "not reported",
                     interval_text(d), leak["difference"].get("method", ""), d["verdict"]])
    return rows


def write_paper_report(s: Settings) -> Path:
    """paper_report.md from the results of the finished steps (written whole, then renamed into place)."""
    from brain_jax.app.tables import table  # start-up

    rows = paper_rows(s.out)
    lines = ["# The paper's claims, reproduced", "",
             "Each row: a claim or number of the paper (Rahman et al.), its value, ours with the 95 % interval "
             "and the clusters behind it, the test, and the verdict. The paper's accuracies come from a random "
             "slice-level split of a pool holding copies of the same slices; the rows under the patient / group "
             "split are the honest ones. Claims are tested once each (intersection-union: every one-sided "
             "cluster swap test must reject).", ""]
    if s.smoke:
        lines += ["**Smoke run**: tiny phantoms and tiny test models; these numbers mean nothing.", ""]
    lines += table(["claim", "paper", "ours", "test", "verdict"], rows)
    lines += ["", "Details: compare/*/compare.md, suites/*/suite.md, studies/leakage/leakage.md, runs/*/."]
    path = s.out / PAPER_REPORT
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
