"""``compare`` on workdirs holding predictions CSVs: the primary test is the swap test of the per-patient
differences the test recomputes from the CSVs, Holm is statsmodels', the papers' columns are statsmodels'
McNemar and scipy's Wilcoxon; rows are aligned by example id; different example sets, slice-only
predictions and missing predictions are refused with what to do. Trained models go through compare end to
end in tests/test_app_suite.py."""
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
    res = compare.compare(wds, out, n_resamples=R, seed=SEED, claim_best="convnextv2-tiny")
    return {"wds": wds, "models": models, "labels": labels, "out": out, "c": res["comparison"], "root": root}


def _per_patient(right: np.ndarray) -> np.ndarray:
    return right.reshape(-1, 4).sum(1)  # four slices per patient, in order


def test_primary_swap_test_holm_and_the_papers_mcnemar_column(three):
    c, models, labels = three["c"], three["models"], three["labels"]
    assert [p["models"] for p in c["pairs"]] == [["convnextv2-tiny", "swin-tiny"], ["convnextv2-tiny", "vit-tiny"],
                                                 ["swin-tiny", "vit-tiny"]]
    ps = []
    for p in c["pairs"]:
        a, b = (models[m.split("-")[0]]["pred"] == labels for m in p["models"])
        d = _per_patient(a).astype(int) - _per_patient(b)
        ref = stats.swap_test(d)
        prim = p["primary"]
        assert prim["statistic"] == d.sum() and prim["n_clusters"] == N // 4
        assert prim["n_discordant_clusters"] == np.sum(d != 0) and prim["p_value"] == ref["p_value"]
        ps.append(ref["p_value"])
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        mc = p["mcnemar_slices"]
        assert (mc["a_right_b_wrong"], mc["a_wrong_b_right"]) == (table[0][1], table[1][0])
        np.testing.assert_allclose(mc["p_value"], mcnemar(np.array(table), exact=True).pvalue, rtol=1e-10)
    reject, holm, _, _ = multipletests(ps, method="holm")
    np.testing.assert_allclose([p["primary"]["p_holm"] for p in c["pairs"]], holm, rtol=1e-10)
    assert [not p["primary"]["verdict"].startswith("no difference") for p in c["pairs"]] == reject.tolist()


def test_intervals_come_from_the_patients_in_the_csv(three):
    c, models, labels = three["c"], three["models"], three["labels"]
    sizes = np.full(N // 4, 4)
    for p in c["pairs"]:
        ra, rb = (models[m.split("-")[0]]["pred"] == labels for m in p["models"])
        ref = stats.difference_interval(_per_patient(ra).astype(int) - _per_patient(rb), sizes, 1 - 0.05 / 3)
        d = p["accuracy_difference"]
        assert [d["estimate"], d["low"], d["high"]] == pytest.approx([ref["estimate"], ref["low"], ref["high"]])
        assert d["estimate"] == pytest.approx(ra.mean() - rb.mean())
    got = c["metrics"]["swin-tiny"]["accuracy"]
    ref = stats.proportion_interval(_per_patient(models["swin"]["pred"] == labels), sizes)
    assert (got["low"], got["high"], got["n_clusters"]) == pytest.approx((ref["low"], ref["high"], N // 4))
    assert c["interval"]["resampled_unit"] == "patient" and c["interval"]["n_units"] == N // 4


def test_outputs_say_no_difference_never_equivalent(three):
    out, c = three["out"], three["c"]
    md = (out / workdir.COMPARE_MD).read_text()
    saved = json.loads((out / workdir.COMPARE_JSON).read_text())
    assert saved["pairs"][0]["primary"] == c["pairs"][0]["primary"]
    close = next(p for p in c["pairs"] if p["models"] == ["convnextv2-tiny", "vit-tiny"])  # 0.93 vs 0.92
    assert close["accuracy_difference"]["low"] < 0 < close["accuracy_difference"]["high"]
    assert close["primary"]["verdict"].startswith("no difference shown at α = 0.05 (Holm-adjusted p = ")
    row = next(line for line in md.splitlines() if line.startswith("| convnextv2-tiny vs vit-tiny"))
    assert "no difference shown at α = 0.05" in row and " n=60 " in row
    # the claims, tested once each: convnextv2 does not beat vit (0.93 vs 0.92) so neither holds
    assert [cl["verdict"] for cl in c["claims"]] == ["not shown at α = 0.05"] * 2
    assert c["claims"][1]["n_hypotheses"] == 2 * 3 * 4 and "## Claims" in md
    # what each model started from is stated (these test configs name no checkpoint)
    assert all(m["pretraining"] == "random initialisation" for m in c["models"])
    assert "## What each model started from" in md and "slice McNemar p (as papers report; ignores patients)" in md
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
    assert c["pairs"][0]["mcnemar_slices"] == ref["mcnemar_slices"]
    assert c["pairs"][0]["primary"]["p_value"] == ref["primary"]["p_value"]
    assert c["pairs"][0]["primary"]["p_holm"] == ref["primary"]["p_value"]  # one pair: nothing to adjust
    assert c["pairs"][0]["accuracy_difference"]["estimate"] == ref["accuracy_difference"]["estimate"]
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


def test_slice_only_predictions_are_refused_unless_allowed(three, tmp_path, capsys):
    ids = _ids(N)
    ids["cluster_kind"] = np.full(N, "slice")
    ids["cluster_id"] = ids["example_id"]
    a = _workdir(tmp_path, "a", three["models"]["swin"], ids=ids)
    b = _workdir(tmp_path, "b", three["models"]["vit"], ids=ids)
    rc = cli.main(["compare", str(a), str(b), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "no example has a patient or duplicate-group id" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / workdir.COMPARE_JSON).exists()
    c = compare.compare([a, b], tmp_path / "out", n_resamples=50, allow_slices=True)["comparison"]
    assert c["pairs"][0]["primary"]["n_clusters"] == N and c["interval"]["resampled_unit"] == "slice"


def test_segmentation_pairs_use_the_sign_flip_test_on_per_patient_dice(tmp_path):
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
        assert p["wilcoxon_slices"]["method"] == "exact"
        np.testing.assert_allclose(p["wilcoxon_slices"]["p_value"], ref.pvalue, rtol=1e-10)
        assert p["dice_difference"]["estimate"] == pytest.approx(np.mean(a - b))
        sums = (a - b).reshape(-1, 4).sum(1)  # ten patients of four cases: every sign flip enumerated
        np.testing.assert_allclose(p["primary"]["statistic"], sums.sum())
        assert p["primary"]["method"].startswith("exact")
        ps.append(p["primary"]["p_value"])
    np.testing.assert_allclose([p["primary"]["p_holm"] for p in c["pairs"]], multipletests(ps, method="holm")[1])
    md = (tmp_path / "out" / workdir.COMPARE_MD).read_text()
    assert "per-slice Wilcoxon p (as papers report; ignores patients)" in md and "| segformer-b0 | " in md
    # a segmentation run cannot be compared with a classifier
    cls = _workdir(tmp_path, "cls", _classifier(_labels(n), 0.9, 0))
    with pytest.raises(ValueError, match="compare models of one task"):
        compare.compare([wds[0], cls], tmp_path / "out2")
