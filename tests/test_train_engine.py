"""Training engine on a tiny NNX CNN and a fake resumable batch iterator (no pipeline, no real model)."""
from __future__ import annotations

import json
import os
import signal

import jax
import numpy as np
import pytest

from brain_jax.train import checkpoints, trainer
from tests.train_helpers import FakeData, LossRecorder, compilation_cache, params_of, run, tiny_config


@pytest.fixture(autouse=True, scope="module")
def xla_cache(tmp_path_factory):
    """Persistent XLA cache for this module: the runs below compile the same steps many times."""
    with compilation_cache(tmp_path_factory.mktemp("xla_cache")):
        yield


def test_one_and_eight_devices_give_the_same_loss_curve(tmp_path):
    curves = {}
    for n in (1, 8):
        rec = LossRecorder()
        run(tiny_config(**{"mesh.num_devices": n}), tmp_path / f"d{n}", hooks=[rec])
        curves[n] = rec.losses
    assert len(curves[1]) == 8
    np.testing.assert_allclose(curves[1], curves[8], rtol=2e-4, atol=1e-5)
    assert curves[1][-1] < curves[1][0]  # it learns


def test_sigterm_saves_and_resume_is_bit_exact(tmp_path):
    ema = {"optimizer.ema_decay": 0.9}  # the EMA weights are part of the checkpointed state too
    full = run(tiny_config(**ema), tmp_path / "full")

    def sigterm_at_2(step, state, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    wd = tmp_path / "interrupted"
    first = run(tiny_config(**ema), wd, hooks=[sigterm_at_2])
    # every process stops one step after the first signal (the stop vote is read one step late)
    assert first["status"] == "preempted" and first["step"] == 3
    ck = checkpoints.Checkpointer(wd)
    assert ck.latest_step() == 3  # saved on the signal, not at the periodic step 4
    ck.close()
    second = run(tiny_config(**ema), wd)
    assert second["status"] == "done" and second["step"] == 8
    a, b = params_of(full), params_of(second)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for x, y, p in zip(jax.tree_util.tree_leaves(full["state"]["ema"]),
                       jax.tree_util.tree_leaves(second["state"]["ema"]),
                       jax.tree_util.tree_leaves(full["state"]["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert any(not np.array_equal(np.asarray(x), np.asarray(p)) for x, p in zip(
        jax.tree_util.tree_leaves(full["state"]["ema"]), jax.tree_util.tree_leaves(full["state"]["params"])))
    bs_a = jax.tree_util.tree_leaves(full["state"]["batch_stats"])
    bs_b = jax.tree_util.tree_leaves(second["state"]["batch_stats"])
    for x, y in zip(bs_a, bs_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_signal_in_the_last_step_lets_the_run_finish(tmp_path, spec_builds):
    """The stop lands one step after the signal: here the last step, which ends the run as usual."""
    def sigterm_at_7(step, state, metrics):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    result = run(tiny_config(**{"data.eval_split": "validation", "best_metric": "accuracy"}), tmp_path,
                 hooks=[sigterm_at_7])
    assert result["status"] == "done" and result["step"] == 8 and result["eval"]["num_examples"] == 13
    assert spec_builds == ["config"]  # training resolves the run once (tests/test_train_spec.py)
    assert checkpoints.load_weights(tmp_path, which="best")[1] == 8


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(checkpoint_every_steps=2, log_every_steps=3)
    data = FakeData("classification", cfg.batch_size, poison_at=5)
    with pytest.raises(trainer.TrainingDiverged, match=r"step 5.*last good checkpoint \(step 4\)"):
        run(cfg, tmp_path, data=data)
    flat, step, _ = checkpoints.load_weights(tmp_path, which="latest")
    assert step == 4
    assert all(np.isfinite(v).all() for v in flat.values())


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_eval_counts_each_example_once_and_keeps_best(tmp_path, task):
    seg = task == "segmentation"
    cfg = tiny_config(**{"data.task": task, "model.name": "segformer" if seg else "convnextv2",
                         "data.eval_split": "validation", "eval_every_steps": 4,
                         "best_metric": "dice" if seg else "accuracy", "mesh.num_devices": 1 if seg else 8,
                         "loss.dice_weight": 1.0 if seg else 0.0, "num_train_steps": 12 if seg else 8,
                         "optimizer.lr": 5e-2 if seg else 3e-2})
    rec = LossRecorder()
    result = run(cfg, tmp_path, task=task, hooks=[rec])
    if seg:  # cross-entropy + soft Dice at label resolution (logits upsampled from half size) learns
        assert np.isfinite(rec.losses).all()
        assert np.mean(rec.losses[-3:]) < 0.7 * np.mean(rec.losses[:3])
    ev = result["eval"]
    # 13 real examples in two batches of 8: the 3 padded rows must not count
    assert ev["num_examples" if task == "classification" else "num_cases"] == 13
    if task == "classification":
        assert np.asarray(ev["confusion_matrix"]).sum() == 13
        assert 0.0 <= ev["accuracy"] <= 1.0 and "macro_f1" in ev
    else:
        assert 0.0 <= ev["dice"] <= 1.0 and np.isfinite(ev["hd95_mm"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "eval"] == ([4, 8, 12] if seg else [4, 8])
    assert (tmp_path / "config.json").is_file()
    flat, step, src = checkpoints.load_weights(tmp_path, which="best")
    assert src.endswith("best") and step in (4, 8, 12)
