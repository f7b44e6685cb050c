"""What ``eval`` keeps per example and how it reaches its outputs: ids in the accumulators' order (one
process and several), the predictions CSV, intervals and per-source metrics wired to the statistics,
Fig. 10's chosen cases. The end-to-end eval of trained models is in tests/test_app_suite.py and
tests/test_app_train.py."""
from __future__ import annotations

import numpy as np
import pytest

import jax.numpy as jnp

from brain_jax import metrics, workdir
from brain_jax.app import results
from brain_jax.app.evaluate import add_uncertainty, intervals_for, print_table
from brain_jax.metrics import stats
from brain_jax.train import engine
from brain_jax.train.evaluate import (ID_KEYS, SplitResult, decode_strings, encode_strings, gather_ids,
                                      interleave, run_split)

NAMES = ("glioma", "meningioma", "pituitary")
SEG_NAMES = ("background", "tumour")


def _names(task: str) -> tuple[str, ...]:
    return NAMES if task == "classification" else SEG_NAMES


def _batches(task: str, rows: list[list[str]], has_mask: dict[str, bool] | None = None):
    """Host batches as the loader gives them: ids per row ("" on padding), label from the id's last digit,
    logits that predict it right unless the id ends in 7 (classification), masks (segmentation)."""
    for ids in rows:
        n = len(ids)
        valid = np.array([bool(i) for i in ids])
        label = np.array([int(i[-1]) % 3 if i else 0 for i in ids], np.int32)
        logits = np.full((n, 1, 1, 3), -1.0, np.float32)
        for r, i in enumerate(ids):
            logits[r, 0, 0, (label[r] + (i.endswith("7"))) % 3] = 2.0
        mask = np.zeros((n, 4, 4), np.int32)
        mask[:, :2, :2] = 1
        b = {"image": logits, "label": label, "valid": valid, "mask": mask, "spacing_mm": np.ones((n, 2), np.float32),
             "has_mask": np.array([(has_mask or {}).get(i, True) if i else False for i in ids])}
        b |= {k: np.array([f"{k}:{i}" if i else "" for i in ids]) for k in ID_KEYS}
        yield b


def _step(task: str):
    def step(params, bs, rest, batch):
        logits = batch["image"][:, 0, 0, :]
        pred = jnp.argmax(logits, -1).astype(jnp.int32)
        if task == "classification":
            stats_ = metrics.classification_batch_stats(logits, batch["label"], batch["valid"], 3)
            return {"stats": stats_, "pred": pred}
        # predicted mask: the true one for label 0, empty otherwise -> Dice 1 or 0 per case
        pmask = batch["mask"] * (pred == 0)[:, None, None]
        ok = batch["valid"] & batch["has_mask"]
        return {"stats": metrics.segmentation_batch_stats(pmask, batch["mask"], batch["spacing_mm"], ok), "pred": pmask}
    return step


ROWS = [["a0", "a1", "a2"], ["b3", "b4", "b5"], ["c7", "c8", "", ""]]  # last batch padded by the loader


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_ids_follow_the_accumulators_rows(task):
    mesh = engine.make_mesh(2)  # 3-row host batches are padded to 4 (two devices): padding never counts
    no_mask = {"b4": False}  # a case without a ground-truth mask is not a segmentation case
    res = run_split(_step(task), None, None, None, _batches(task, ROWS, no_mask), mesh=mesh, task=task,
                    class_names=_names(task), keep_examples=True)
    expect = [i for r in ROWS for i in r if i and (task == "classification" or i not in no_mask)]
    assert res.ids["example_id"].tolist() == [f"example_id:{i}" for i in expect]
    assert res.ids["source"].tolist() == [f"source:{i}" for i in expect]
    if task == "classification":
        # row i of the examples is the example named by row i of the ids
        assert res.examples["label"].tolist() == [int(i[-1]) % 3 for i in expect]
        assert (res.examples["pred"] == res.examples["label"]).tolist() == [not i.endswith("7") for i in expect]
        assert res.examples["probs"].shape == (len(expect), 3)
    else:
        assert res.examples["dice"].tolist() == [1.0 if int(i[-1]) % 3 == 0 else 0.0 for i in expect]
    # the trainer's pass keeps no ids
    plain = run_split(_step(task), None, None, None, _batches(task, ROWS), mesh=mesh, task=task,
                      class_names=_names(task))
    assert plain.ids is None


def test_batches_without_ids_give_unnamed_results():
    rows = list(_batches("classification", ROWS))
    for b in rows:
        for k in ID_KEYS:
            del b[k]
    res = run_split(_step("classification"), None, None, None, rows, mesh=engine.make_mesh(1),
                    task="classification", class_names=NAMES, keep_examples=True)
    assert res.ids is None and len(res.examples["label"]) == 8


def test_strings_round_trip_through_bytes():
    s = np.array(["figshare_brain_tumor:12.mat#0", "brain_tumor_mri:Training/glioma/Tr-gl_0010.jpg#0", "",
                  "kaggle:ümlaut ñ/ß.png#3"])
    codes = encode_strings(s, 80)
    assert codes.shape == (4, 80) and codes.dtype == np.uint8
    assert decode_strings(codes).tolist() == s.tolist()
    assert decode_strings(encode_strings(np.zeros(0, str))).tolist() == []


def test_interleave_puts_each_batch_process_by_process():
    # batch b of the global arrays = process 0's valid rows, then process 1's (accumulators.py's order)
    host0 = [["a0", "a1"], ["b0"], []]
    host1 = [["A0"], ["B0", "B1"], ["C0"]]
    counts = np.array([[len(b) for b in host0], [len(b) for b in host1]])
    rows = [{"example_id": np.array(sum(h, []), str)} for h in (host0, host1)]
    got = interleave(counts, rows)["example_id"].tolist()
    assert got == ["a0", "a1", "A0", "b0", "B0", "B1", "C0"]
    one = {"example_id": np.array(["x", "y"])}
    assert gather_ids(np.array([2]), one) is one  # one process: nothing to gather


def _fake_result(n=60, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n).astype(np.int32)
    pred = np.where(rng.random(n) < 0.8, label, rng.integers(0, 3, n)).astype(np.int32)
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    probs[np.arange(n), pred] += 1.0
    probs /= probs.sum(1, keepdims=True)
    patient = rng.integers(0, 15, n)
    kind = np.where(patient < 12, "patient", "slice")
    cluster = np.array([f"patient:p{p}" if k == "patient" else f"slice:{i}"
                        for i, (p, k) in enumerate(zip(patient, kind))])
    ids = {"example_id": np.array([f"d:{i}.png#0" for i in range(n)]), "cluster_id": cluster, "cluster_kind": kind,
           "source": np.where(np.arange(n) % 3 == 0, "kaggle:a", "figshare"), "dataset": np.full(n, "d")}
    return SplitResult({}, {}, {"label": label, "pred": pred, "probs": probs}, ids)


def test_intervals_and_per_source_are_the_statistics_of_the_examples():
    res = _fake_result()
    summary = metrics.ClassificationAccumulator(3).result()
    add_uncertainty(summary, res, "classification", 3, n_resamples=300, seed=5)
    ex, ids = res.examples, res.ids
    ref = stats.classification_intervals(ex["label"], ex["pred"], ex["probs"], ids["cluster_id"], "patient",
                                         num_classes=3, n_resamples=300, seed=5)
    got = summary["intervals"]
    for k in ("accuracy", "macro_f1", "macro_auroc"):
        assert got[k] == ref[k], k
    assert got["per_class"]["auroc"] == ref["per_class"]["auroc"]
    meta = got["interval"]
    assert meta["resampled_unit"] == "patient+slice" and meta["n_resamples"] == 300 and meta["seed"] == 5
    assert meta["examples_by_unit_kind"] == {"patient": int(np.sum(ids["cluster_kind"] == "patient")),
                                             "slice": int(np.sum(ids["cluster_kind"] == "slice"))}
    assert summary["per_class"]["auroc"] == ref["per_class"]["auroc"]["estimate"]
    # per source: the metrics of that source's examples alone
    for src in ("kaggle:a", "figshare"):
        rows = ids["source"] == src
        entry = summary["per_source"][src]
        assert entry["num_examples"] == int(rows.sum())
        assert entry["accuracy"]["estimate"] == pytest.approx(np.mean(ex["label"][rows] == ex["pred"][rows]))
        assert entry["support"] == np.bincount(ex["label"][rows], minlength=3).tolist()
        assert entry["accuracy"]["low"] <= entry["accuracy"]["estimate"] <= entry["accuracy"]["high"]
    text = print_table(summary, "classification", NAMES)
    assert "resamples (seed" in text and "patient+slice" in text and "kaggle:a: accuracy" in text
    # slices only: no clusters passed, the unit says so
    only = {k: v for k, v in ids.items()} | {"cluster_kind": np.full(60, "slice"),
                                             "cluster_id": np.array([f"slice:{i}" for i in range(60)])}
    block = intervals_for("classification", ex, only, 3, n_resamples=50)
    assert block["interval"]["resampled_unit"] == "slice" and block["interval"]["n_units"] == 60


def test_predictions_csv_round_trip(tmp_path):
    res = _fake_result(12)
    path = workdir.write_predictions(tmp_path / "p.csv", res.ids, res.examples, "classification", NAMES)
    p = workdir.read_predictions(path)
    assert p.task == "classification" and p.class_names == NAMES
    assert p.label.tolist() == res.examples["label"].tolist() and p.pred.tolist() == res.examples["pred"].tolist()
    np.testing.assert_array_equal(p.probs.astype(np.float32), res.examples["probs"])  # float32 exactly
    assert p.ids["cluster_id"].tolist() == res.ids["cluster_id"].tolist()
    header = path.read_text().splitlines()[0]
    assert header.startswith("example_id,dataset,source,cluster_id,cluster_kind,label,prediction,correct,prob_glioma")
    seg = {"dice": np.array([0.5, 1.0]), "iou": np.array([1 / 3, 1.0]), "hd_mm": np.array([2.0, 0.0]),
           "hd95_mm": np.array([1.5, 0.0]), "true_area_mm2": np.array([10.0, 0.0]), "pred_area_mm2": np.array([5.0, 0]),
           "missed_tumour": np.array([False, False]), "false_alarm": np.array([False, False]),
           "both_empty": np.array([False, True])}
    ids = {k: v[:2] for k, v in res.ids.items()}
    q = workdir.read_predictions(workdir.write_predictions(tmp_path / "s.csv", ids, seg, "segmentation", ()))
    assert q.task == "segmentation" and q.values["dice"].tolist() == [0.5, 1.0]
    assert q.values["both_empty"].tolist() == [False, True]


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("prediction,", "guess,", 1), "missing column"),
    (lambda t: t.replace(",meningioma,", ",astrocytoma,", 1), "astrocytoma"),
    (lambda t: t.replace("d:1.png#0", "d:0.png#0", 1), "repeats"),
    (lambda t: t + "x,y\n", "fields"),
])
def test_bad_predictions_csv_names_the_file(tmp_path, edit, match):
    res = _fake_result(6, seed=2)
    res.examples["label"][:] = 1
    path = workdir.write_predictions(tmp_path / "p.csv", res.ids, res.examples, "classification", NAMES)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ValueError, match=match) as e:
        workdir.read_predictions(path)
    assert "p.csv" in str(e.value)
    with pytest.raises(FileNotFoundError, match="brain-jax eval"):
        workdir.read_predictions(tmp_path / "none.csv")


def test_chosen_cases_best_median_worst_among_tumour_cases():
    dice = np.array([1.0, 0.2, 0.9, 0.5, 0.7, 0.5, 0.0])
    area = np.array([0.0, 3.0, 2.0, 1.0, 4.0, 2.0, 5.0])  # case 0 is both-empty: Dice 1, nothing to show
    ids = [f"e{i}" for i in range(7)]
    assert results.chosen_cases(dice, area, ids) == [("best", 2), ("median", 3), ("worst", 6)]
    # ties broken by id: e3 and e5 both score 0.5, e3 first
    assert results.chosen_cases(dice[[1, 3, 5]], area[[1, 3, 5]], ["e1", "e5", "e3"])[1] == ("median", 2)
    assert results.chosen_cases(np.array([1.0]), np.array([0.0]), ["x"]) == [("best", 0)]


def test_one_default_resample_count():
    """The CLI's --resamples, the verbs and the metrics functions default to the one count, brain_jax.N_RESAMPLES."""
    import inspect

    from brain_jax import N_RESAMPLES, cli
    from brain_jax.app import compare, evaluate, study, suite

    assert N_RESAMPLES == 2000
    parser = cli.build_parser()
    for argv in (["eval", "--workdir", "w"], ["compare", "a", "b", "--out", "o"],
                 ["suite", "--config", "c", "--seeds", "2", "--out", "o"], ["study", "leakage", "--config", "c",
                                                                             "--out", "o"]):
        assert parser.parse_args(argv).resamples == N_RESAMPLES, argv
    functions = (evaluate.evaluate_workdir, evaluate.intervals_for, compare.compare, compare.compare_runs,
                 suite.train_then_evaluate, suite.run_suite, study.unpaired_difference, study.run_leakage,
                 stats.classification_intervals, stats.segmentation_intervals, stats.paired_comparison,
                 stats.paired_segmentation_comparison, stats.pairwise_comparisons,
                 stats.pairwise_segmentation_comparisons, metrics.ClassificationAccumulator.intervals,
                 metrics.SegmentationAccumulator.intervals)
    for fn in functions:
        assert inspect.signature(fn).parameters["n_resamples"].default == N_RESAMPLES, fn.__qualname__
