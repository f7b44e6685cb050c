"""Workdirs written before the app/train split (tests/fixtures/workdir_v0) still load, evaluate, predict
and report, giving the numbers that version gave."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brain_jax import cli, workdir
from brain_jax.io import read_slice
from brain_jax.train.forward import preprocess
from brain_jax.train.model_factory import load_model_from_workdir
from brain_jax.train.spec import RunSpec

OLD = Path(__file__).parent / "fixtures" / "workdir_v0"
CONFIGS = {"cls": "configs/convnextv2_cls.py:runlocal", "seg": "configs/segformer_seg.py:runlocal"}


@pytest.fixture
def data_dir(tiny_phantoms) -> Path:
    return tiny_phantoms


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(OLD / name, dst)
    return dst


# Since the prepared cache (issue 22), an image reaches the model on the cache's 8-bit grid (normalised,
# resized, rounded to 1/255), in training, evaluation and predict alike. On this fixture's scan that moved the
# logits by at most 6.7e-4 (cls) and 1.4e-4 (seg) and the probabilities by at most 1.6e-4 (measured
# 2026-12-07); the float input of the old version still gives the old logits to 1e-5.
QUANTISATION_LOGITS = {"cls": 1e-3, "seg": 3e-4}
QUANTISATION_PROBABILITIES = 3e-4


def _float_input(image, spec):
    """The old version's preprocessing: the same window and resize, kept in float32 (no 8-bit rounding)."""
    from input_pipeline import transforms

    img = transforms.normalise_intensity(image, spec.upper_percentile)
    img = transforms.resize(img, np.zeros(img.shape, np.uint8), np.ones(2, np.float32), spec.image_size)[0]
    return transforms.to_model_input(img, spec.mean, spec.std)


@pytest.mark.parametrize("name", ["cls", "seg"])
def test_old_workdir_gives_the_old_logits(name):
    model = load_model_from_workdir(OLD / name)
    spec = RunSpec.from_config(workdir.read_config(OLD / name))
    image = read_slice(OLD / "scan.png").image
    old = np.load(OLD / f"logits_{name}.npy")
    np.testing.assert_allclose(np.asarray(model(_float_input(image, spec.input)[None])), old, atol=1e-5)
    now = np.asarray(model(preprocess(image, spec.input)[None]))
    np.testing.assert_allclose(now, old, atol=QUANTISATION_LOGITS[name])
    assert not np.allclose(now, old, atol=1e-6)  # the 8-bit input really is what the model sees now


def test_old_workdir_predicts_as_before(tmp_path, spec_builds):
    out = tmp_path / "pred"
    assert cli.main(["predict", "--workdir", str(OLD / "cls"), "--out", str(out), str(OLD / "scan.png")]) == 0
    assert spec_builds == [str(OLD / "cls" / workdir.CONFIG)]  # predict resolves the run once
    new = json.loads((out / "predictions.json").read_text())["predictions"][0]
    old = json.loads((OLD / "predictions_cls.json").read_text())["predictions"][0]
    assert new["predicted_class"] == old["predicted_class"]
    np.testing.assert_allclose(list(new["probabilities"].values()), list(old["probabilities"].values()),
                               atol=QUANTISATION_PROBABILITIES)
    assert list(new["probabilities"]) == list(old["probabilities"])


def test_old_metrics_json_reads_and_reports(tmp_path):
    wd = _copy("cls", tmp_path)
    metrics = workdir.read_metrics(wd)
    old = json.loads((OLD / "cls" / "metrics.json").read_text())
    assert "schema_version" not in old  # the fixture really is the old layout
    assert metrics["schema_version"] == workdir.METRICS_SCHEMA
    assert metrics["classification"]["test"] == old["classification"]
    assert cli.main(["report", "--workdir", str(wd)]) == 0
    text = (wd / "report.md").read_text()
    assert f"| accuracy | {old['classification']['accuracy']:.4f} |" in text


@pytest.mark.parametrize("name", ["cls", "seg"])
def test_old_workdir_evaluates_to_the_old_numbers(name, tmp_path, data_dir, spec_builds):
    wd = _copy(name, tmp_path)
    old = json.loads((OLD / name / "metrics.json").read_text())
    task = "classification" if name == "cls" else "segmentation"
    args = ["eval", "--config", CONFIGS[name], "--workdir", str(wd), "--split", "test",
            f"--config.data.data_dir={data_dir}", "--config.data.builder_config=tiny",
            "--config.data.image_size=32", "--config.eval_batch_size=8"]
    assert cli.main(args) == 0
    # eval resolves its config once, and the workdir's saved config once for the identity check
    assert spec_builds == ["config", str(wd / workdir.CONFIG)], spec_builds
    new = workdir.read_metrics(wd)[task]["test"]
    if task == "classification":
        assert new["confusion_matrix"] == old[task]["confusion_matrix"]
        assert new["accuracy"] == pytest.approx(old[task]["accuracy"])
    else:
        for k in ("dice", "iou", "hd95_mm", "hd_mm", "num_cases"):
            assert new[k] == pytest.approx(old[task][k], abs=1e-5), k
        assert new["num_missed"] == old[task]["num_missed"] and new["num_empty_both"] == old[task]["num_empty_both"]
