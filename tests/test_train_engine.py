"""Training engine on a tiny NNX CNN and a fake resumable batch iterator (no pipeline, no real model)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from brain_jax.train import checkpoints, trainer
from brain_jax.train.engine import tree_paths
from configs.common import base_config

SIZE = 16


@pytest.fixture(autouse=True, scope="module")
def compilation_cache(tmp_path_factory):
    """Persistent XLA cache for this module: the runs below compile the same steps many times."""
    from jax._src import compilation_cache as cc

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in keys}
    jax.config.update(keys[0], str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update(keys[1], 0.0)
    jax.config.update(keys[2], 0)
    cc.reset_cache()
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    cc.reset_cache()


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    model_type: str = "tinycnn"
    num_labels: int = 4


class TinyCNN(nnx.Module):
    """conv -> BatchNorm -> ReLU -> dropout -> pooled linear head (or a 1x1 conv head for masks)."""

    head_paths = ("head",)

    def __init__(self, num_labels: int = 4, *, segmentation: bool = False, seed: int = 0):
        rngs = nnx.Rngs(params=seed, dropout=seed + 1)
        self.config = TinyConfig(num_labels=num_labels)
        self.segmentation = segmentation
        self.conv = nnx.Conv(3, 8, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        if segmentation:  # logits at half resolution, like SegFormer's reduced-size output
            self.head = nnx.Conv(8, num_labels, (2, 2), strides=(2, 2), padding="VALID", rngs=rngs)
        else:
            self.head = nnx.Linear(8, num_labels, rngs=rngs)

    def __call__(self, x):
        x = self.drop(nnx.relu(self.bn(self.conv(x))))
        if self.segmentation:
            return self.head(x)
        return self.head(x.mean(axis=(1, 2)))


def fake_example(index: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Class k lights up quadrant k; the mask is that quadrant."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(0, 4))
    img = rng.normal(0, 0.3, (SIZE, SIZE, 3)).astype(np.float32)
    mask = np.zeros((SIZE, SIZE), np.int32)
    h = SIZE // 2
    r, c = divmod(label, 2)
    img[r * h:(r + 1) * h, c * h:(c + 1) * h] += 1.0
    mask[r * h:(r + 1) * h, c * h:(c + 1) * h] = 1
    return {"image": img, "label": np.int32(label), "mask": mask, "has_mask": np.bool_(True),
            "spacing_mm": np.array([1.0, 1.0], np.float32), "valid": np.bool_(True)}


def stack(examples: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class FakeIterator:
    """Deterministic batches from a position; get_state/set_state like grain's iterators."""

    def __init__(self, batch_size: int, poison_at: int | None = None):
        self.batch_size, self.pos, self.poison_at = batch_size, 0, poison_at

    def __next__(self):
        batch = stack([fake_example(self.pos * self.batch_size + i) for i in range(self.batch_size)])
        self.pos += 1
        if self.poison_at is not None and self.pos == self.poison_at:
            batch["image"][:] = np.nan
        return batch

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, state):
        self.pos = int(state["pos"])


class FakeData:
    def __init__(self, task: str, batch_size: int, *, steps_per_epoch: int = 4, poison_at: int | None = None,
                 eval_examples: int = 13):
        self.task, self.batch_size, self._spe = task, batch_size, steps_per_epoch
        self.poison_at, self.eval_examples = poison_at, eval_examples

    def steps_per_epoch(self) -> int:
        return self._spe

    def train_iterator(self):
        return FakeIterator(self.batch_size, self.poison_at)

    def eval_batches(self, split: str):
        # Last batch padded with valid=False, like the real eval loader.
        n, b = self.eval_examples, self.batch_size
        for start in range(0, n, b):
            exs = [fake_example(10_000 + i) for i in range(start, min(start + b, n))]
            while len(exs) < b:
                pad = fake_example(0)
                pad["valid"] = np.bool_(False)
                pad["label"] = np.int32(3)
                exs.append(pad)
            yield stack(exs)


def tiny_config(**overrides):
    c = base_config()
    c.model.name = "convnextv2"
    c.model.variant = "test"
    c.data.task = "classification"
    c.data.eval_split = ""
    c.batch_size = 8
    c.num_train_steps = 8
    c.optimizer.lr = 3e-2
    c.optimizer.warmup_steps = 2
    c.log_every_steps = 1
    c.checkpoint_every_steps = 4
    c.mesh.num_devices = 1
    c.progress_bar = False
    c.async_checkpoint = False
    c.best_metric = ""
    for k, v in overrides.items():
        node = c
        parts = k.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return c


class LossRecorder:
    def __init__(self):
        self.losses: list[float] = []

    def __call__(self, step, state, metrics):
        self.losses.append(float(metrics["loss"]))


def run(config, workdir, *, task="classification", data=None, hooks=(), model=None):
    data = data or FakeData(task, config.batch_size)
    model = model or TinyCNN(2 if task == "segmentation" else 4, segmentation=task == "segmentation")
    return trainer.train_and_evaluate(config, workdir, data=data, model=model, hooks=hooks)


def params_of(result) -> dict[str, np.ndarray]:
    p = result["state"]["params"]
    leaves = jax.tree_util.tree_leaves(p)
    return dict(zip(tree_paths(p), (np.asarray(x) for x in leaves)))


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

    def sigterm_at_3(step, state, metrics):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    wd = tmp_path / "interrupted"
    first = run(tiny_config(**ema), wd, hooks=[sigterm_at_3])
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
    cfg = tiny_config(**{"data.task": task, "data.eval_split": "validation", "eval_every_steps": 4,
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
