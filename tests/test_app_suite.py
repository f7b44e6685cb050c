"""``suite`` (3 folds x 3 tiny models), ``compare`` and ``report`` end to end on the ``hard`` phantoms, resuming
and refusing bad input; ``study leakage``'s planning and statistics (its end-to-end run is part of
``reproduce --smoke``, tests/test_app_reproduce.py). Each end-to-end test is one function (pytest-xdist runs it
once); every training is a tiny ViT or Swin at 32 px, so the folds of a model reuse its compiled step."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import input_pipeline as ip
from brain_jax import cli, workdir
from brain_jax.app import study, suite, tables
from brain_jax.metrics import stats
from brain_jax.train.config import load_config
from input_pipeline.splits import identities, resolve

SMALL = ["--config.data.builder_config=hard", "--config.data.image_size=32", "--config.batch_size=32",
         "--config.eval_batch_size=64", "--config.progress_bar=false", "--config.mesh.num_devices=1",
         "--config.optimizer.schedule=constant"]


@pytest.fixture(scope="module")
def hard(tmp_path_factory) -> Path:
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    d = tmp_path_factory.mktemp("hard")
    ip.build_dataset("brain_phantoms", d, builder_config="hard")
    return d


def _snapshot(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


def test_leakage_seeds_plan_their_workdirs(tiny_phantoms, tmp_path):
    data = [f"--config.data.data_dir={tiny_phantoms}", "--config.data.builder_config=tiny", "--config.seed=3"]
    one = study.arm_runs("configs/vit_cls.py:runlocal", tmp_path, data)
    assert [(r.model, r.tag, r.workdir) for r in one] == [("random", "random", tmp_path / "runs" / "random"),
                                                          ("group", "group", tmp_path / "runs" / "group")]
    runs = study.arm_runs("configs/vit_cls.py:runlocal", tmp_path, data, seeds=2)
    assert [(r.model, r.tag, r.config.seed) for r in runs] == [("random", "seed0", 3), ("random", "seed1", 4),
                                                               ("group", "seed0", 3), ("group", "seed1", 4)]
    assert runs[1].workdir == tmp_path / "runs" / "random" / "seed1"
    assert {(r.config.data.seed, r.config.data.split_by) for r in runs} == {(0, "random"), (0, "group")}
    with pytest.raises(ValueError, match="--seeds must be at least 1"):
        study.arm_runs("configs/vit_cls.py:runlocal", tmp_path, data, seeds=0)
    # a one-seed study's folder is not reused for several seeds (its runs would nest in the old workdirs)
    (tmp_path / "runs" / "random").mkdir(parents=True)
    (tmp_path / "runs" / "random" / workdir.CONFIG).write_text("{}")
    with pytest.raises(ValueError, match="holds a one-seed study's run; use a fresh --out for --seeds 2"):
        study.run_leakage("configs/vit_cls.py:runlocal", tmp_path, overrides=data, seeds=2)


def _noaug_config(tmp_path: Path) -> str:
    """A third model on the ViT's compiled step: the same network trained without augmentation."""
    path = tmp_path / "vit_noaug.py"
    path.write_text("from configs import vit_cls\n\n\ndef get_config(arg=None):\n"
                    "    c = vit_cls.get_config(arg)\n    c.data.augment.enabled = False\n    return c\n")
    return f"{path}:runlocal"


def test_suite_of_three_models_over_three_folds_then_compare_report_resume(hard, tmp_path, capsys):
    out = tmp_path / "suite"
    configs = ["configs/vit_cls.py:runlocal", "--models", "configs/swin_cls.py:runlocal", _noaug_config(tmp_path)]
    common = [f"--config.data.data_dir={hard}", *SMALL, "--config.data.split_by=group", "--config.num_train_steps=4",
              "--config.checkpoint_every_steps=2", "--config.keep_checkpoints=3", "--config.log_every_steps=1"]
    args = ["suite", "--config", *configs, "--folds", "3", "--out", str(out), "--resamples", "300", *common]
    # one process per fold (the SLURM array's way): fold 1 only, no table yet
    assert cli.main([*args, "--index", "0"]) == 0
    assert "without --index to tabulate" in capsys.readouterr().out and not (out / workdir.SUITE_JSON).exists()
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("already finished, kept") == 3 and printed.count(": done") == 6
    t = json.loads((out / workdir.SUITE_JSON).read_text())
    models = ["vit-test-1", "swin-test", "vit-test-2"]
    assert list(t["rows"]) == models and t["runs"] == ["fold1", "fold2", "fold3"]
    for m in models:
        acc = [r["accuracy"]["estimate"] for r in t["rows"][m]]
        assert t["per_model"][m]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
        assert t["per_model"][m]["accuracy"]["sd"] == pytest.approx(np.std(acc, ddof=1))
    pair = t["pairs"][0]
    assert pair["models"] == ["vit-test-1", "swin-test"]
    assert pair["per_run"]["accuracy"]["fold2"] == pytest.approx(
        t["rows"]["vit-test-1"][1]["accuracy"]["estimate"] - t["rows"]["swin-test"][1]["accuracy"]["estimate"])
    md = (out / workdir.SUITE_MD).read_text()
    assert "| vit-test-1 − swin-test |" in md and "mean ± sd" in md
    assert all((out / "figures" / f"suite_{k}.png").is_file() for k in ("accuracy", "macro_f1"))
    # the folds' test sets are disjoint and cover the pool; each run's CSV follows the loader's order
    seen = []
    for fold in (1, 2, 3):
        wd = out / "runs" / "swin-test" / f"fold{fold}"
        p = workdir.read_predictions(workdir.predictions_csv(wd, "test"))
        cfg = load_config("configs/swin_cls.py:runlocal", common)
        cfg.data.update({"num_folds": 3, "fold": fold - 1})
        assert p.ids["example_id"].tolist() == identities(cfg.data, resolve(cfg.data, "test"))["example_id"].tolist()
        seen += p.ids["example_id"].tolist()
        assert (out / "composition" / f"fold{fold}" / "composition.md").is_file()
        assert json.loads((out / "compare" / f"fold{fold}" / "compare.json").read_text())["n_examples"] == len(p)
    assert len(seen) == len(set(seen)) == 512
    _pooled_out_of_fold(out, t, configs, common, seen)
    _eval_outputs_are_the_statistics_of_the_csv(out / "runs" / "vit-test-1" / "fold1")
    _compare_and_report(out, capsys)
    _resume_and_refuse(out, args, common, capsys)


def _pooled_out_of_fold(out: Path, t: dict, configs: list[str], common: list[str], seen: list[str]) -> None:
    """Each model's three test folds pooled: every example once, n the folds' sum, the clusters of the
    folds together (a group split puts no cluster in two folds), compared in compare/pooled/."""
    pooled = t["pooled"]
    assert pooled["folds"] == ["fold1", "fold2", "fold3"] and pooled["n"] == 512
    runs = suite.plan([c for c in configs if c != "--models"], out, folds=3, overrides=common)
    swin = [r for r in runs if r.model == "swin-test"]
    p = suite.pooled_predictions(swin)
    assert p.ids["example_id"].tolist() == seen  # fold after fold, each example once
    folds = [workdir.read_predictions(workdir.predictions_csv(r.workdir, "test")) for r in swin]
    for m, row in pooled["models"].items():
        assert row["n"] == sum(r["n"] for r in t["rows"][m]) == 512
        assert row["n_clusters"] == sum(suite.n_clusters(f.ids) for f in folds)
        assert row["accuracy"]["low"] <= row["accuracy"]["estimate"] <= row["accuracy"]["high"]
    mine = workdir.read_predictions(workdir.predictions_csv(swin[0].workdir, "test"))
    assert pooled["models"]["swin-test"]["accuracy"]["estimate"] == pytest.approx(np.mean(p.label == p.pred))
    assert len(mine) < len(p)
    c = json.loads((out / "compare" / "pooled" / "compare.json").read_text())
    assert c["n_examples"] == 512 and list(c["metrics"]) == ["vit-test-1", "swin-test", "vit-test-2"]
    assert len(c["pairs"]) == 3 and pooled["comparison"] == "compare/pooled/compare.md"
    md = (out / workdir.SUITE_MD).read_text()
    assert md.index("## Pooled out-of-fold") < md.index("## accuracy")
    assert "Every patient is tested exactly once" in md and "(compare/pooled/compare.md)" in md
    # folds whose test splits overlap cannot be pooled: the error names both folds and an example
    import dataclasses

    with pytest.raises(ValueError, match=r"example '.+' is in the test split of both fold1 and fold9"):
        suite.pooled_predictions([swin[0], dataclasses.replace(swin[0], tag="fold9")])


def _eval_outputs_are_the_statistics_of_the_csv(wd: Path) -> None:
    s = workdir.read_metrics(wd)["classification"]["test"]
    p = workdir.read_predictions(workdir.predictions_csv(wd, "test"))
    assert len(p) == s["num_examples"] and s["predictions_csv"] == "predictions_test.csv"
    assert np.mean(p.label == p.pred) == pytest.approx(s["accuracy"])
    np.testing.assert_allclose(p.probs.sum(1), 1.0, atol=1e-5)
    meta = s["intervals"]["interval"]
    assert meta["resampled_unit"] == "patient" and meta["n_resamples"] == 300
    assert meta["method"] == stats.INTERVAL_METHOD
    ref = stats.classification_intervals(p.label, p.pred, p.probs, p.ids["cluster_id"], "patient", num_classes=4,
                                         n_resamples=300, seed=meta["seed"])
    assert s["intervals"]["accuracy"] == ref["accuracy"] and s["intervals"]["macro_f1"] == ref["macro_f1"]
    assert s["intervals"]["per_class"]["specificity"] == ref["per_class"]["specificity"]
    assert len(s["per_class"]["auroc"]) == 4
    assert s["split_protocol"].startswith("split by patient and duplicate group")


def _compare_and_report(out: Path, capsys) -> None:
    fold1 = [str(out / "runs" / m / "fold1") for m in ("vit-test-1", "swin-test", "vit-test-2")]
    cmp = out / "cmp"
    assert cli.main(["compare", *fold1, "--out", str(cmp), "--names", "vit,swin,vit-noaug", "--resamples", "300"]) == 0
    c = json.loads((cmp / "compare.json").read_text())
    assert [m["name"] for m in c["models"]] == ["vit", "swin", "vit-noaug"] and len(c["pairs"]) == 3
    assert all(p["primary"]["n_pairs_holm"] == 3 for p in c["pairs"])
    for f in ("compare.md", "model_comparison.png", "per_class.png", "differences.png"):
        assert (cmp / f).stat().st_size > 500, f
    capsys.readouterr()
    for d in (cmp, out, Path(fold1[0])):
        assert cli.main(["report", "--workdir", str(d)]) == 0
    text = (out / "report.md").read_text()
    assert "## Folds and seeds" in text and "| vit-test-1 | " in text and "[fold1](compare/fold1/compare.md)" in text
    assert "[pooled](compare/pooled/compare.md)" in text and "### Pooled out-of-fold (the headline)" in text
    assert "## Split composition" in text
    text = (Path(fold1[0]) / "report.md").read_text()
    assert f"Values in brackets: 95% intervals: {stats.INTERVAL_METHOD}; 300 resamples" in text
    assert "recall (sensitivity)" in text and "AUROC (one-vs-rest)" in text
    assert "| vit-test | 0.9850 |" in text  # the paper's ViT accuracy beside this run's


def _resume_and_refuse(out: Path, args: list[str], common: list[str], capsys) -> None:
    # an interrupted run (its last checkpoint and its evaluation lost) resumes from step 2; nothing else runs
    wd = out / "runs" / "vit-test-2" / "fold3"
    import shutil

    shutil.rmtree(wd / "checkpoints" / "4")
    shutil.rmtree(wd / "best")
    for f in (workdir.predictions_csv(wd, "test"), wd / workdir.METRICS):
        f.unlink()
    others = {k: v for k, v in _snapshot(out / "runs").items() if not k.startswith("vit-test-2/fold3")}
    capsys.readouterr()
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("already finished, kept") == 8 and "vit-test-2/fold3: done" in printed
    assert {k: v for k, v in _snapshot(out / "runs").items() if not k.startswith("vit-test-2/fold3")} == others
    steps = [r["step"] for r in workdir.read_log(wd) if r["split"] == "train"]
    assert steps[-2:] == [3, 4]
    # the same folder with other settings is refused before anything runs
    rc = cli.main([*args, "--config.optimizer.lr=0.5"])
    assert rc == 2 and "started with other settings (overrides differ" in capsys.readouterr().err


def test_bad_input_fails_cleanly(tiny_phantoms, tmp_path, capsys):
    data = [f"--config.data.data_dir={tiny_phantoms}", "--config.data.builder_config=tiny"]
    # a fold suite on a dataset without folds names the splits it has
    rc = cli.main(["suite", "--config", "configs/vit_cls.py:runlocal", "--folds", "5", "--out", str(tmp_path / "s"),
                   *data])
    err = capsys.readouterr().err
    assert rc == 2 and "has no folds (its splits: test, train, validation)" in err and "split_by='group'" in err
    assert not (tmp_path / "s").exists()
    # a label map that leaves a dataset label unmapped names it
    rc = cli.main(["train", "--config", "configs/vit_cls.py:runlocal", "--workdir", str(tmp_path / "w"), *data,
                   "--config.data.classes=glioma,meningioma"])
    err = capsys.readouterr().err
    assert rc == 2 and "['notumor', 'pituitary']" in err and "data.classes" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists()
    rc = cli.main(["suite", "--config", "configs/vit_cls.py:runlocal", "--seeds", "2", "--out", str(tmp_path / "s"),
                   "--index", "2", *data])
    assert rc == 2 and "the suite has 2 seeds (0..1)" in capsys.readouterr().err


def test_seeds_share_the_split_and_report_training_spread_apart(tiny_phantoms, tmp_path):
    data = [f"--config.data.data_dir={tiny_phantoms}", "--config.data.builder_config=tiny"]
    runs = suite.plan(["configs/vit_cls.py:runlocal"], tmp_path, seeds=3, overrides=["--config.seed=7", *data])
    assert [r.tag for r in runs] == ["seed7", "seed8", "seed9"] and [r.config.seed for r in runs] == [7, 8, 9]
    assert {r.config.data.seed for r in runs} == {0} and {r.test_split for r in runs} == {"test"}
    # the table from finished runs (fake results): sd over seeds beside the bootstrap interval's width
    for r, acc in zip(runs, (0.80, 0.84, 0.82)):
        ci = {"interval": {"method": "percentile", "confidence": 0.95, "n_resamples": 100, "seed": 0,
                           "resampled_unit": "patient", "n_units": 4, "n_examples": 8},
              "accuracy": {"estimate": acc, "low": acc - 0.1, "high": acc + 0.1},
              "macro_f1": {"estimate": acc - 0.05, "low": acc - 0.2, "high": acc}}
        workdir.update_metrics(r.workdir, "classification", "test", {"accuracy": acc, "num_examples": 8,
                                                                     "intervals": ci, "split_protocol": "p"})
    t = suite.aggregate(runs, folds=0)
    assert t["per_model"]["vit-test"]["accuracy"]["sd"] == pytest.approx(0.02)
    assert len(t["notes"]) == 1 and "use at least 5 seeds" in t["notes"][0]
    assert t["per_model"]["vit-test"]["accuracy"]["mean_interval_width"] == pytest.approx(0.2)
    md = tables.suite_markdown(t)
    assert "| vit-test | 0.8000 [0.7000, 0.9000] | 0.8400 [0.7400, 0.9400] |" in md
    assert "sd over seeds 0.0200; mean width of one test set's 95% bootstrap interval 0.2000" in md
    assert "training randomness" in md and "same test set" in md


def test_seed_suite_gets_a_two_level_bootstrap(tiny_phantoms, tmp_path):
    """Two models x three seeds on one test set (predictions CSVs written here, rows in another order in each
    run): each model's mean over seeds with its two-level interval, the paired difference, the few-seeds note."""
    data = [f"--config.data.data_dir={tiny_phantoms}", "--config.data.builder_config=tiny"]
    runs = suite.plan(["configs/vit_cls.py:runlocal", "configs/swin_cls.py:runlocal"], tmp_path, seeds=3,
                      overrides=data)
    rng = np.random.default_rng(0)
    n, names = 40, ["glioma", "meningioma", "notumor", "pituitary"]
    ids = {"example_id": np.array([f"ex{i:02d}" for i in range(n)]), "dataset": np.array(["d"] * n),
           "source": np.array(["s"] * n), "cluster_id": np.array([f"patient:p{i // 2}" for i in range(n)]),
           "cluster_kind": np.array(["patient"] * n)}
    label = rng.integers(0, 4, n)
    accuracy = {}
    for r, acc in zip(runs, (0.95, 0.9, 0.92, 0.4, 0.45, 0.5)):
        pred = np.where(rng.random(n) < acc, label, (label + 1) % 4)
        accuracy[(r.model, r.tag)] = np.mean(pred == label)
        order = rng.permutation(n)
        workdir.write_predictions(workdir.predictions_csv(r.workdir, "test"), {k: v[order] for k, v in ids.items()},
                                  {"label": label[order], "pred": pred[order], "probs": np.eye(4)[pred[order]]},
                                  "classification", names)
    block = suite.seed_bootstrap(runs, n_resamples=300, seed=0)
    vit = block["per_model"]["vit-test"]["accuracy"]
    assert vit["estimate"] == pytest.approx(np.mean([v for (m, _), v in accuracy.items() if m == "vit-test"]))
    assert block["interval"]["n_seeds"] == 3 and block["interval"]["n_clusters"] == 20
    pair = block["pairs"][0]
    assert pair["models"] == ["vit-test", "swin-test"] and pair["accuracy"]["low"] > 0
    assert pair["accuracy"]["estimate"] == pytest.approx(vit["estimate"]
                                                         - block["per_model"]["swin-test"]["accuracy"]["estimate"])
    # a run tested on other examples is refused
    first = workdir.read_predictions(workdir.predictions_csv(runs[1].workdir, "test"))
    workdir.write_predictions(workdir.predictions_csv(runs[1].workdir, "test"),
                              {k: v[1:] for k, v in first.ids.items()},
                              {"label": first.label[1:], "pred": first.pred[1:], "probs": first.probs[1:]},
                              "classification", names)
    with pytest.raises(ValueError, match="was tested on other examples"):
        suite.seed_bootstrap(runs, n_resamples=10)
    t = {"task": "classification", "mode": "seeds", "runs": ["seed0", "seed1", "seed2"], "metrics": ["accuracy"],
         "split_protocol": {}, "dataset": "d", "rows": {}, "per_model": {}, "pairs": [], "two_level": block,
         "notes": ["only 3 seeds per model: ... use at least 5 seeds"]}
    md = tables.suite_markdown(t)
    assert "## Over seeds and patients (two-level bootstrap)" in md and "| vit-test − swin-test |" in md
    assert "**Note:** only 3 seeds per model" in md


def test_unpaired_difference_resamples_each_arm_on_its_own():
    rng = np.random.default_rng(1)

    def arm(n, acc, n_patients):
        label = rng.integers(0, 3, n).astype(np.int64)
        pred = np.where(rng.random(n) < acc, label, (label + 1) % 3)
        return {"label": label, "pred": pred, "clusters": np.array([f"p{i % n_patients}" for i in range(n)]),
                "cluster_kind": "patient"}

    a, b = arm(90, 0.95, 30), arm(70, 0.6, 20)
    d = study.unpaired_difference(a, b, 3, n_resamples=500, seed=4)
    assert d["seeds"] == [4, 5] and d["accuracy"]["verdict"].startswith("inflation shown")
    reps = {"accuracy": [], "macro_f1": []}
    for i, x in enumerate((a, b)):
        units = stats.resampling_units(x["clusters"], "patient", len(x["label"]))
        acc, f1 = [], []
        for row in stats.bootstrap_indices(int(units.max()) + 1, 500, 4 + i):
            w = np.bincount(row, minlength=units.max() + 1)[units]
            cm = np.zeros((3, 3))
            np.add.at(cm, (x["label"], x["pred"]), w)
            tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
            acc.append(tp.sum() / cm.sum())
            f1.append(np.mean(np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), 0)))
        reps["accuracy"].append(np.array(acc))
        reps["macro_f1"].append(np.array(f1))
    for m in ("accuracy", "macro_f1"):
        np.testing.assert_allclose([d[m]["low"], d[m]["high"]],
                                   np.percentile(reps[m][0] - reps[m][1], [2.5, 97.5]), rtol=1e-9)
    same = study.unpaired_difference(a, a, 3, n_resamples=500, seed=4)["accuracy"]
    assert same["estimate"] == 0 and same["verdict"] == "no difference shown at α = 0.05"


def test_array_script_runs_its_fold_and_requeues_after_a_save(tmp_path):
    """launch/suite_array.sbatch outside SLURM, with stand-ins for brain-jax and scontrol on PATH."""
    import os
    import signal
    import subprocess
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "brain-jax").write_text(  # records its arguments; SIGTERM = "saved a checkpoint", exit 143
        f'#!/usr/bin/env bash\necho "brain-jax $*" >> {log}\ntrap "exit 143" TERM\n'
        'for _ in $(seq 300); do [ -f "$STOP_AT" ] && exit 0; sleep 0.1; done\n')
    (bin_dir / "scontrol").write_text(f'#!/usr/bin/env bash\necho "scontrol $*" >> {log}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "launch" / "suite_array.sbatch"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_ARRAY_JOB_ID="77",
               SLURM_ARRAY_TASK_ID="2", STOP_AT=str(tmp_path / "stop"))
    args = ["bash", str(script), "OUT", "configs/x.py:a", "--folds", "3", "--config.seed=1"]
    (tmp_path / "stop").write_text("")
    assert subprocess.run(args, env=env, capture_output=True, text=True, timeout=60).returncode == 0
    assert log.read_text().splitlines() == ["brain-jax suite --config configs/x.py:a --out OUT --index 2 --folds 3 "
                                            "--config.seed=1"]
    (tmp_path / "stop").unlink()
    log.unlink()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(100):  # until the stand-in runs
        if log.is_file():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # SLURM's --signal=B:TERM: the script passes it on, then requeues
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert log.read_text().splitlines()[-1] == "scontrol requeue 77_2" and "requeueing the task" in out
    env.pop("SLURM_ARRAY_TASK_ID")
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "--array" in res.stderr


def test_models_of_a_suite_must_share_their_test_sets(tiny_phantoms, tmp_path):
    data = [f"--config.data.data_dir={tiny_phantoms}", "--config.data.builder_config=tiny"]
    with pytest.raises(ValueError, match=r"tested on different examples in seed0 \(config fields data.name"):
        suite.plan(["configs/vit_cls.py:runlocal", "configs/paper/classifier.py:model=vit,dataset=figshare"],
                   tmp_path, seeds=1, overrides=data)
