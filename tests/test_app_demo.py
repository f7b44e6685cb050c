"""The real ``brain-jax demo`` once, end to end: data build, two trainings, evaluation, report."""
from __future__ import annotations

import json

import pytest

from brain_jax import cli


@pytest.mark.slow
def test_demo_meets_its_targets(tmp_path, capsys):
    wd = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(wd)]) == 0
    assert "demo done" in capsys.readouterr().out
    metrics = json.loads((wd / "metrics.json").read_text())
    cls, seg = metrics["classification"]["test"], metrics["segmentation"]["test"]
    # every slice of the held-out synthetic patients (the builder's test split) is counted once
    import input_pipeline

    data = input_pipeline.default_data_config()
    data.data_dir, data.builder_config = str(wd / "data"), "small"
    n_test = input_pipeline.num_examples(data, "test")
    assert n_test > 0 and cls["num_examples"] == n_test and seg["num_cases"] == n_test
    assert cls["accuracy"] >= 0.95, cls
    assert cls["macro_f1"] >= 0.9, cls
    assert seg["dice"] >= 0.85, seg
    assert 0.0 <= seg["hd95_mm"] < 20.0, seg
    for fig in ("confusion_matrix.png", "overlays.png", "training_curves.png"):
        assert (wd / "figures" / fig).stat().st_size > 1000, fig
    report = (wd / "report.md").read_text()
    assert "Classification" in report and "Segmentation" in report and "synthetic" in report
    # the saliency panel with its localisation numbers, scored on every held-out case with a mask (12 per
    # tumour class): integrated gradients from a blurred copy of each image point into the tumour in most of
    # them (chance ~0.05). The score moves with training noise: over demo seeds 0-3 it was 0.89 / 0.89 /
    # 0.94 / 0.92 with host-side augmentation and 0.78 / 0.94 / 0.92 / 0.94 with it inside the step
    # (2026-12-07, docs/saliency.md), so the bound is 0.75, below every seed measured, not the 0.8 first
    # set from one seed. From the mean-grey (zeros) baseline and Grad-CAM: reported, not required.
    assert (wd / "figures" / "saliency.png").stat().st_size > 1000
    loc = metrics["saliency"]["localisation"]
    assert set(loc) == {"gradcam", "ig", "ig@blur"}, loc.keys()
    assert "notumor" not in loc["ig@blur"]["per_class"]  # no mask: not scored
    assert all(loc[m]["all"]["n"] == 36 for m in loc), loc
    top = loc["ig@blur"]["all"]
    assert top["pointing_game"] >= 0.75 and top["chance_pointing"] < 0.1, loc
    assert "## Saliency" in report and "pointing game" in report
