"""``compare`` on workdirs holding predictions CSVs: its numbers are the reference libraries' (statsmodels'
McNemar and Holm, scipy's Wilcoxon) and an independent numpy bootstrap on the same resample indices; rows
are aligned by example id; different example sets and missing predictions are refused with what to do.
Trained models go through compare end to end in tests/test_app_suite.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from PIL import Image
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from brain_jax import cli, workdir
from brain_jax.app import compare, report
from brain_jax.metrics import stats

NAMES = ("glioma", "meningioma", "notumor", "pituitary")
N, R, SEED = 240, 400, 3


def _ids(n: int) -> dict[str, np.ndarray]:
    patient = np.arange(n) // 4  # four slices per patient
    return {"example_id": np.array([f"figshare_brain_tumor:{i}.mat#0" for i in range(n)]),
            "dataset": np.full(n, "figshare_brain_tumor"), "source": np.full(n, "figshare_brain_tumor"),
            "cluster_id": np.array([f"patient:figshare_brain_tumor:{p}" for p in patient]),
            "cluster_kind": np.full(n, "patient")}


def _labels(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4, n).astype(np.int32)


def _classifier(labels: np.ndarray, accuracy: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(labels)) > accuracy
    pred = np.where(wrong, (labels + rng.integers(1, 4, len(labels))) % 4, labels).astype(np.int32)
    probs = rng.dirichlet(np.ones(4), len(labels)).astype(np.float32)
    probs[np.arange(len(labels)), pred] += 2.0
    return {"label": labels, "pred": pred, "probs": probs / probs.sum(1, keepdims=True)}


def _workdir(root, name: str, examples, task: str = "classification", ids=None, model=("vit", "test"), order=None):
    wd = root / name
    ids = ids if ids is not None else _ids(len(next(iter(examples.values()))))
    if order is not None:
        ids = {k: v[order] for k, v in ids.items()}
        examples = {k: v[order] for k, v in examples.items()}
    workdir.write_json(wd / workdir.CONFIG, {"model": {"name": model[0], "variant": model[1]},
                                             "data": {"name": "figshare_brain_tumor", "task": task}})
    workdir.write_predictions(workdir.predictions_csv(wd, "test"), ids, examples, task, NAMES if task ==
                              "classification" else ())
    return wd


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    labels = _labels()
    models = {"convnextv2": _classifier(labels, 0.93, 1), "swin": _classifier(labels, 0.85, 2),
              "vit": _classifier(labels, 0.92, 3)}
    wds = [_workdir(root, m, ex, model=(m, "tiny")) for m, ex in models.items()]
    out = root / "out"
    res = compare.compare(wds, out, n_resamples=R, seed=SEED)
    return {"wds": wds, "models": models, "labels": labels, "out": out, "c": res["comparison"], "root": root}


def test_mcnemar_and_holm_match_statsmodels(three):
    c, models, labels = three["c"], three["models"], three["labels"]
    assert [p["models"] for p in c["pairs"]] == [["convnextv2-tiny", "swin-tiny"], ["convnextv2-tiny", "vit-tiny"],
                                                 ["swin-tiny", "vit-tiny"]]
    ps = []
    for p in c["pairs"]:
        a, b = (models[m.split("-")[0]]["pred"] == labels for m in p["models"])
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        assert (p["mcnemar"]["a_right_b_wrong"], p["mcnemar"]["a_wrong_b_right"]) == (table[0][1], table[1][0])
        ref = mcnemar(np.array(table), exact=True).pvalue
        np.testing.assert_allclose(p["mcnemar"]["p_value"], ref, rtol=1e-10)
        ps.append(ref)
    holm = multipletests(ps, method="holm")[1]
    np.testing.assert_allclose([p["mcnemar"]["p_holm"] for p in c["pairs"]], holm, rtol=1e-10)


def test_paired_bootstrap_matches_numpy_on_the_same_resamples(three):
    c, models, labels = three["c"], three["models"], three["labels"]
    ids = _ids(N)
    units = stats.resampling_units(ids["cluster_id"], "patient", N)
    draws = stats.bootstrap_indices(int(units.max()) + 1, R, SEED)
    q = [2.5, 97.5]
    for p in c["pairs"]:
        ra, rb = (models[m.split("-")[0]]["pred"] == labels for m in p["models"])
        diffs = []
        for row in draws:  # example weights: how often its patient was drawn
            w = np.bincount(row, minlength=units.max() + 1)[units]
            diffs.append((w * ra).sum() / w.sum() - (w * rb).sum() / w.sum())
        d = p["accuracy_difference"]
        np.testing.assert_allclose([d["low"], d["high"]], np.percentile(diffs, q), rtol=1e-10, atol=1e-12)
        assert d["estimate"] == pytest.approx(ra.mean() - rb.mean())
    # each model's own interval too: the accuracy of the resampled patients
    ex = models["swin"]
    accs = [(np.bincount(r, minlength=units.max() + 1)[units] * (ex["pred"] == labels)).sum() / N for r in draws]
    got = c["metrics"]["swin-tiny"]["accuracy"]
    np.testing.assert_allclose([got["low"], got["high"]], np.percentile(accs, q), rtol=1e-10)
    assert c["interval"]["resampled_unit"] == "patient" and c["interval"]["n_units"] == N // 4


def test_outputs_say_no_difference_never_equivalent(three):
    out, c = three["out"], three["c"]
    md = (out / workdir.COMPARE_MD).read_text()
    saved = json.loads((out / workdir.COMPARE_JSON).read_text())
    assert saved["pairs"][0]["mcnemar"]["p_value"] == c["pairs"][0]["mcnemar"]["p_value"]
    close = next(p for p in c["pairs"] if p["models"] == ["convnextv2-tiny", "vit-tiny"])  # 0.93 vs 0.92
    assert close["accuracy_difference"]["low"] < 0 < close["accuracy_difference"]["high"]
    assert close["accuracy_difference"]["verdict"] == "no difference shown at α = 0.05"
    row = next(line for line in md.splitlines() if line.startswith("| convnextv2-tiny vs vit-tiny"))
    assert "no difference shown at α = 0.05" in row
    assert "equivalent" not in md.lower()
    for name in ("model_comparison.png", "per_class.png", "differences.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 300
    # Table I layout: one row per class and model, with intervals
    assert sum(line.startswith("| meningioma | ") for line in md.splitlines()) == 3
    text = report.write_report(out).read_text()
    assert "## Model comparison" in text and "| vit-tiny | 0.9850 |" in text  # the paper's ViT beside ours
    assert "Table I lists these two pairs swapped" in text


def test_rows_are_aligned_by_example_id(three, tmp_path):
    labels, models = three["labels"], three["models"]
    perm = np.random.default_rng(7).permutation(N)
    wds = [_workdir(tmp_path, "a", models["convnextv2"], model=("convnextv2", "tiny")),
           _workdir(tmp_path, "b", models["swin"], model=("swin", "tiny"), order=perm)]
    c = compare.compare(wds, tmp_path / "out", n_resamples=R, seed=SEED)["comparison"]
    ref = next(p for p in three["c"]["pairs"] if p["models"] == ["convnextv2-tiny", "swin-tiny"])
    assert c["pairs"][0]["mcnemar"] == {k: v for k, v in ref["mcnemar"].items() if k not in
                                        ("p_holm", "significant_holm", "n_pairs_holm")} | {
        "p_holm": ref["mcnemar"]["p_value"], "significant_holm": c["pairs"][0]["mcnemar"]["significant_holm"],
        "n_pairs_holm": 1}
    assert c["pairs"][0]["accuracy_difference"] == ref["accuracy_difference"]
    assert len(labels) == c["n_examples"]


def test_different_example_sets_are_refused_with_counts(three, tmp_path):
    labels = three["labels"]
    ids = _ids(N)
    keep = np.r_[np.arange(3, N)]  # B lacks A's first 3 examples ...
    ids_b = {k: v[keep] for k, v in ids.items()}
    ids_b["example_id"] = ids_b["example_id"].copy()
    ids_b["example_id"][:2] = ["kaggle:x.jpg#0", "kaggle:y.jpg#0"]  # ... and has 2 of its own
    ex_b = {k: v[keep] for k, v in three["models"]["vit"].items()}
    a = _workdir(tmp_path, "a", three["models"]["swin"])
    b = _workdir(tmp_path, "b", ex_b, ids=ids_b)
    with pytest.raises(ValueError, match=r"different example sets: 2 examples of .*b .*are not in .*a, 5 of .*a are "
                                         r"not in .*b"):
        compare.compare([a, b], tmp_path / "out")
    assert len(labels) == N


def test_missing_predictions_say_which_eval_to_run(three, tmp_path, capsys):
    a = three["wds"][0]
    b = _workdir(tmp_path, "b", three["models"]["vit"])
    workdir.predictions_csv(b, "test").unlink()
    rc = cli.main(["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--split", "test"])
    err = capsys.readouterr().err
    assert rc == 2 and f"brain-jax eval --workdir {b} --split test" in err and len(err.strip().splitlines()) == 1
    rc = cli.main(["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--split", "fold5"])
    err = capsys.readouterr().err
    assert f"brain-jax eval --workdir {a} --split fold5; brain-jax eval --workdir {b} --split fold5" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        compare.compare([a, tmp_path / "nothing"], tmp_path / "out")


def test_segmentation_pairs_use_wilcoxon_on_per_case_dice(tmp_path):
    rng = np.random.default_rng(4)
    n = 40
    base = rng.uniform(0.5, 0.85, n)
    wds = []
    for i, shift in enumerate((0.0, 0.03, 0.0)):
        dice = base + shift + rng.normal(0, 0.03, n)  # in (0, 1), no two cases equal
        ex = {"dice": dice, "iou": dice / (2 - dice), "hd_mm": rng.uniform(1, 9, n), "hd95_mm": rng.uniform(1, 5, n),
              "true_area_mm2": rng.uniform(50, 300, n), "pred_area_mm2": rng.uniform(50, 300, n),
              "missed_tumour": np.zeros(n, bool), "false_alarm": np.zeros(n, bool), "both_empty": np.zeros(n, bool)}
        wds.append(_workdir(tmp_path, f"s{i}", ex, task="segmentation", ids=_ids(n), model=("segformer", f"b{i}")))
    c = compare.compare(wds, tmp_path / "out", n_resamples=300)["comparison"]
    assert c["task"] == "segmentation"
    dice = {f"segformer-b{i}": workdir.read_predictions(workdir.predictions_csv(w, "test")).values["dice"]
            for i, w in enumerate(wds)}
    ps = []
    for p in c["pairs"]:
        a, b = (dice[m] for m in p["models"])
        ref = scipy.stats.wilcoxon(a, b)  # no ties, n <= 50: scipy's exact test
        assert p["wilcoxon"]["method"] == "exact"
        np.testing.assert_allclose(p["wilcoxon"]["p_value"], ref.pvalue, rtol=1e-10)
        assert p["dice_difference"]["estimate"] == pytest.approx(np.mean(a - b))
        ps.append(ref.pvalue)
    np.testing.assert_allclose([p["wilcoxon"]["p_holm"] for p in c["pairs"]], multipletests(ps, method="holm")[1])
    md = (tmp_path / "out" / workdir.COMPARE_MD).read_text()
    assert "Wilcoxon p (per-case Dice)" in md and "| segformer-b0 | " in md
    # a segmentation run cannot be compared with a classifier
    cls = _workdir(tmp_path, "cls", _classifier(_labels(n), 0.9, 0))
    with pytest.raises(ValueError, match="compare models of one task"):
        compare.compare([wds[0], cls], tmp_path / "out2")
