"""A tiny NNX CNN, a fake resumable batch source and a config for them: training-engine tests without the
input pipeline or a real model.

``python -m tests.train_helpers WORKDIR OVERRIDES_JSON OUT_NPZ`` trains them in a fresh process (as the
fault tests need: a process that SIGKILLs itself) and writes the final params to OUT_NPZ. It sets what
tests/conftest.py sets, so its numbers equal an in-process run's bit for bit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Iterator

import jax
import numpy as np
from flax import nnx

from brain_jax.train import trainer
from brain_jax.train.engine import tree_paths
from configs.common import base_config

SIZE = 16


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
    """Class k lights up quadrant k; the mask is that quadrant. As the loader sends it: uint8 (S, S) image
    and mask (the step normalises and augments)."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(0, 4))
    img = rng.normal(0.3, 0.1, (SIZE, SIZE)).astype(np.float32)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    h = SIZE // 2
    r, c = divmod(label, 2)
    img[r * h:(r + 1) * h, c * h:(c + 1) * h] += 0.5
    mask[r * h:(r + 1) * h, c * h:(c + 1) * h] = 1
    return {"image": np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), "label": np.int32(label), "mask": mask,
            "has_mask": np.bool_(True), "spacing_mm": np.array([1.0, 1.0], np.float32), "valid": np.bool_(True)}


def stack(examples: list[dict]) -> dict[str, np.ndarray]:
    """Examples -> a batch with each one's position in it (``index``, as the loader sends it)."""
    out = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    return out | {"index": np.arange(len(examples), dtype=np.int32)}


class FakeIterator:
    """Deterministic batches from a position; get_state/set_state like grain's iterators."""

    def __init__(self, batch_size: int, poison_at: int | None = None):
        self.batch_size, self.pos, self.poison_at = batch_size, 0, poison_at

    def __next__(self):
        batch = stack([fake_example(self.pos * self.batch_size + i) for i in range(self.batch_size)])
        self.pos += 1
        if self.poison_at is not None and self.pos == self.poison_at:
            batch["image"] = np.full(batch["image"].shape, np.nan, np.float32)  # the step reads it as float
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


@contextlib.contextmanager
def compilation_cache(path: Path) -> Iterator[None]:
    """XLA's persistent cache in ``path`` for every compile (runs that compile the same steps many times)."""
    from jax._src import compilation_cache as cc

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in keys}
    jax.config.update(keys[0], str(path))
    jax.config.update(keys[1], 0.0)
    jax.config.update(keys[2], 0)
    cc.reset_cache()
    try:
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)
        cc.reset_cache()


def save_params(result: dict, path: Path) -> None:
    np.savez(path, **params_of(result))


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    wd, overrides, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    cache = overrides.pop("_compilation_cache", None)
    with compilation_cache(Path(cache)) if cache else contextlib.nullcontext():
        result = run(tiny_config(**overrides), wd)
    save_params(result, out)
    print(f"status {result['status']} step {result['step']}", flush=True)
    sys.exit(0 if result["status"] == "done" else 143)
