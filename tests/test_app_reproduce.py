"""``brain-jax reproduce``: the whole graph on tiny phantoms (``--smoke``), resumed without redoing anything;
the plan and its time estimate (``--dry-run``) for the real downloads; missing downloads refused in one line."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import input_pipeline as ip
from brain_jax import cli, workdir
from brain_jax.app import report, reproduce, study

TRAININGS = 2 * 2 + 1 + 2 + 2 * 2  # smoke classifiers x (random, group), SegFormer, leakage arms, 2-fold suite


@pytest.fixture(scope="module")
def smoke(tiny_phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    argv = ["reproduce", "--smoke", "--data-dir", str(tiny_phantoms), "--out", str(out), "--resamples", "200"]
    return {"out": out, "argv": argv, "rc": cli.main(argv)}


def test_smoke_runs_every_step_into_one_report(smoke):
    out = smoke["out"]
    assert smoke["rc"] == 0
    text = (out / reproduce.PAPER_REPORT).read_text()
    assert "**Smoke run**" in text
    for tag in ("random", "group"):
        c = json.loads((out / workdir.COMPARE / tag / workdir.COMPARE_JSON).read_text())
        assert len(c["models"]) == 2 and [cl["verdict"] for cl in c["claims"]]  # the paper's claims, tested
        assert all("primary" in p for p in c["pairs"])
    assert (out / "studies" / "leakage" / workdir.LEAKAGE_JSON).is_file()
    suite_dir = out / "suites" / "figshare_2fold"
    assert (suite_dir / workdir.SUITE_JSON).is_file() and (suite_dir / workdir.COMPARE / "pooled").is_dir()
    assert (out / "runs" / "segformer" / workdir.METRICS).is_file()
    # a row per claim and number: accuracies beside the paper's, both claims per split, SegFormer, leakage
    assert text.count("| claimed |") >= 4 and "99.60 %" in text and "SegFormer Dice" in text
    assert "accuracy inflation of the random split" in text


def test_the_leakage_study_of_the_smoke_run(smoke):
    """Both arms with accuracy, macro-F1 and balanced accuracy; the random arm split by copies in training
    (recomputed from its CSV and the copy flags); the difference of the arms; the reading of it; the report."""
    out = smoke["out"] / "studies" / "leakage"
    s = json.loads((out / workdir.LEAKAGE_JSON).read_text())
    rnd, grp = s["arms"]["random"], s["arms"]["group"]
    assert rnd["protocol"].startswith("random slice-level split (the paper's protocol")
    assert grp["protocol"].startswith("split by patient and duplicate group")
    for arm in (rnd, grp):
        assert {"accuracy", "macro_f1", "balanced_accuracy"} <= set(arm) and arm["n_seeds"] == 1
        assert arm["interval"]["n_clusters"] == arm["n_clusters"] <= arm["n_test"]
    assert rnd["workdir"] == str(out / "runs" / "random")  # one seed: the layout of studies made before --seeds
    p = workdir.read_predictions(workdir.predictions_csv(out / "runs" / "random", "test"))
    assert rnd["accuracy"]["estimate"] == pytest.approx(np.mean(p.label == p.pred))
    for m in ("accuracy", "balanced_accuracy"):
        assert s["difference"][m]["estimate"] == pytest.approx(rnd[m]["estimate"] - grp[m]["estimate"])
    assert grp["copies_in_training"]["exact"] == grp["copies_in_training"]["near"] == 0
    inside = s["inside_random_arm"]
    w, wo = inside["with_copy"], inside["without_copy"]
    c = rnd["copies_in_training"]
    assert w["n"] + wo["n"] == rnd["n_test"] and w["n"] == c["exact"] + c["near"] and "by_example" not in c
    flags = ip.copies_in_training(study.arm_runs(s["config"], out, s["overrides"])[0].config.data, per_example=True)
    copied = np.array([flags["by_example"][e] != "none" for e in p.ids["example_id"].tolist()])
    assert int(copied.sum()) == w["n"]
    if wo["n"]:
        assert wo["accuracy"]["estimate"] == pytest.approx(np.mean((p.label == p.pred)[~copied]))
    learnt = grp["accuracy"]["high"] > 0.25 and grp["balanced_accuracy"]["low"] > 0.25
    assert s["learning"]["group_arm_learnt"] == learnt and s["learning"]["chance"] == 0.25
    md = (out / workdir.LEAKAGE_MD).read_text()
    assert "balanced accuracy" in md and "## The leak inside one model" in md and "one training per arm" in md
    if not learnt:
        assert "the difference measures memorised copies, not inflation of a model that generalises" in md
    assert (out / "figures" / "leakage.png").stat().st_size > 5000
    text = report.write_report(out).read_text()
    assert "## Leakage study" in text and "## Split composition" in text


def test_a_second_run_keeps_every_finished_step(smoke, capsys):
    capsys.readouterr()
    report = smoke["out"] / reproduce.PAPER_REPORT
    before = report.stat().st_mtime_ns
    assert cli.main(smoke["argv"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert lines and all(line.endswith("done before, kept") for line in lines), lines
    assert report.stat().st_mtime_ns == before


def test_dry_run_prints_the_plan_with_trainings_and_an_estimate(smoke, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(smoke["argv"] + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"{TRAININGS} training runs" in text and "[to do]" not in text  # everything finished above
    # the real plan, from downloads laid out as docs/experiments.md says (never built here)
    manual = tmp_path / "downloads"
    (manual / "figshare").mkdir(parents=True)
    (manual / "figshare" / "cvind.mat").write_bytes(b"")
    (manual / "kaggle" / "nickparvar").mkdir(parents=True)
    argv = ["reproduce", "--manual-dir", str(manual), "--data-dir", str(tmp_path / "d"), "--out",
            str(tmp_path / "o"), "--dry-run", "--weights", "matched"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "35 training runs" in text  # 8 + 4 from matched pre-training + SegFormer + 2 arms + 5 folds x 4
    assert "[to do] build figshare_brain_tumor" in text and "compare the 4 classifiers (matched)" in text
    # the H200 measurements cover ConvNeXt V2-T at 224 and SegFormer-B0 at 512; the rest are named unmeasured
    h200 = next(line for line in text.splitlines() if line.startswith("estimate on h200"))
    assert float(re.search(r"([\d.]+) device hours", h200).group(1)) > 0
    assert "swin-tiny_w7 at 224px" in h200 and "convnextv2-tiny" not in h200.split("not measured")[1]
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()
    # a dataset without builder configs is prepared as NAME/VERSION/ (the phantoms' as NAME/CONFIG/VERSION/)
    (tmp_path / "d" / "figshare_brain_tumor" / "1.0.0").mkdir(parents=True)
    (tmp_path / "d" / "figshare_brain_tumor" / "1.0.0" / "dataset_info.json").write_text("{}")
    assert cli.main(argv) == 0
    assert "[done] build figshare_brain_tumor" in capsys.readouterr().out


def test_missing_downloads_are_named_in_one_line(tmp_path, capsys):
    manual = tmp_path / "downloads"
    (manual / "figshare").mkdir(parents=True)
    (manual / "figshare" / "1.mat").write_bytes(b"")
    argv = ["reproduce", "--manual-dir", str(manual), "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{manual / 'kaggle'}: missing or empty" in err
    (manual / "kaggle").mkdir()
    (manual / "kaggle" / "x.jpg").write_bytes(b"")
    assert cli.main(argv) == 2
    assert "cvind.mat: missing" in capsys.readouterr().err
    assert cli.main(argv[:1] + argv[3:]) == 2  # no --manual-dir and no --smoke
    assert "needs --manual-dir" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
