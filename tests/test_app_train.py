"""``brain-jax train / eval / report`` end to end on the tiny synthetic phantoms, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from brain_jax import cli
from brain_jax.metrics import stats


@pytest.fixture
def data_dir(tiny_phantoms) -> Path:
    return tiny_phantoms


def _common(data_dir: Path) -> list[str]:
    return [f"--config.data.data_dir={data_dir}", "--config.data.builder_config=tiny",
            "--config.data.image_size=32", "--config.num_train_steps=3", "--config.batch_size=8",
            "--config.eval_batch_size=8", "--config.progress_bar=false", "--config.log_every_steps=1"]


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


def test_train_eval_predict_report_classification_then_bad_input(tmp_path, data_dir, capsys):
    # one test (not a shared fixture) so that pytest-xdist trains this model once
    wd = tmp_path / "cls" / "run"
    rc = cli.main(["train", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(wd),
                   *_common(data_dir)])
    assert rc == 0
    assert (wd / "config.json").is_file() and (wd / "metrics.jsonl").is_file()
    assert json.loads((wd / "config.json").read_text())["num_train_steps"] == 3
    assert list((wd / "tensorboard").iterdir())
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
    rc = cli.main(["eval", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(wd), "--split", "test",
                   *_common(data_dir)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "precision" in out and "glioma" in out and "pituitary" in out
    assert f"95% intervals: {stats.INTERVAL_METHOD}" in out and "predictions_test.csv" in out
    metrics = json.loads((wd / "metrics.json").read_text())
    assert metrics["schema_version"] == 2 and list(metrics["classification"]) == ["test"]
    cls = metrics["classification"]["test"]
    assert 0.0 <= cls["accuracy"] <= 1.0 and "macro_f1" in cls
    assert cls["class_names"] == ["glioma", "meningioma", "notumor", "pituitary"]
    import input_pipeline

    cfg = input_pipeline.default_data_config()
    cfg.data_dir, cfg.builder_config, cfg.image_size = str(data_dir), "tiny", 32
    assert cls["num_examples"] == input_pipeline.num_examples(cfg, "test")
    assert (wd / "figures" / "confusion_matrix.png").stat().st_size > 1000
    # predict delegates to brain_jax.app.predict with the trained workdir
    import numpy as np
    from PIL import Image

    png = tmp_path / "slice.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(png)
    assert cli.main(["predict", "--workdir", str(wd), "--out", str(tmp_path / "pred"), str(png)]) == 0
    assert any((tmp_path / "pred").iterdir())
    assert cli.main(["report", "--workdir", str(wd)]) == 0
    text = (wd / "report.md").read_text()
    assert "Classification" in text and "confusion_matrix.png" in text
    capsys.readouterr()
    _bad_input_fails_cleanly_and_leaves_the_workdir_alone(wd, data_dir, tmp_path, capsys)


def _bad_input_fails_cleanly_and_leaves_the_workdir_alone(wd, data_dir, tmp_path, capsys):
    before = _snapshot(wd)
    # a workdir of another architecture
    rc = cli.main(["train", "--config", "configs/segformer_seg.py:runlocal", "--workdir", str(wd), *_common(data_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "another model" in err and "segformer" in err
    # a misspelt key
    rc = cli.main(["train", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(wd),
                   "--config.optimizer.learning_rate=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "optimizer.learning_rate" in err and "lr" in err
    # an unknown model
    rc = cli.main(["train", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(wd),
                   "--config.model.name=resnet50"])
    assert rc == 2 and "resnet50" in capsys.readouterr().err
    assert _snapshot(wd) == before
    # a dataset that was never built: says how to build it, creates nothing
    fresh = tmp_path / "fresh"
    rc = cli.main(["train", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(fresh),
                   f"--config.data.data_dir={tmp_path / 'nodata'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "brain-jax data build brain_phantoms" in err
    assert not fresh.exists()
    # eval of a workdir without checkpoints
    rc = cli.main(["eval", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(tmp_path / "empty")])
    assert rc == 2 and "no checkpoint" in capsys.readouterr().err


def test_train_eval_segmentation_writes_overlays(tmp_path, data_dir):
    wd = tmp_path / "seg"
    args = ["--config", "configs/segformer_seg.py:runlocal", "--workdir", str(wd), *_common(data_dir)]
    assert cli.main(["train", *args]) == 0
    assert cli.main(["eval", *args, "--split", "test", "--resamples", "200"]) == 0
    seg = json.loads((wd / "metrics.json").read_text())["segmentation"]["test"]
    assert 0.0 <= seg["dice"] <= 1.0 and seg["num_cases"] > 0 and "hd95_mm" in seg and "miou" in seg
    assert (wd / "figures" / "overlays.png").stat().st_size > 1000
    # per-case results: the CSV's cases are the summary's, Fig. 10 shows the best / median / worst of them
    from brain_jax import workdir
    from brain_jax.app import results

    p = workdir.read_predictions(wd / "predictions_test.csv")
    assert p.task == "segmentation" and len(p) == seg["num_cases"]
    for k in ("dice", "iou", "hd_mm", "hd95_mm"):
        assert seg[k] == pytest.approx(p.values[k].mean(), rel=1e-6), k
        assert seg["intervals"][k]["estimate"] == pytest.approx(seg[k], rel=1e-9), k
    assert int(p.values["missed_tumour"].sum() + p.values["false_alarm"].sum()) == seg["num_missed"]
    chosen = results.chosen_cases(p.values["dice"], p.values["true_area_mm2"], p.ids["example_id"])
    assert [c["example_id"] for c in seg["fig10_cases"]] == [p.ids["example_id"][i] for _, i in chosen]
    assert seg["intervals"]["interval"]["resampled_unit"] == "patient"
    # eval without --config reads the workdir's own config
    assert cli.main(["eval", "--workdir", str(wd), "--split", "validation", "--resamples", "50"]) == 0
    assert (wd / "predictions_validation.csv").is_file()
    assert cli.main(["report", "--workdir", str(wd)]) == 0
    text = (wd / "report.md").read_text()
    assert "### Chosen cases (Fig. 10)" in text and f"`{seg['fig10_cases'][0]['example_id']}`" in text
