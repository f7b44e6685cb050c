"""The one batched forward pass of inference (``predict``, ``explain``) and its preprocessing stage.

Preprocessing (numpy, defined in ``brain_jax.train.preprocess`` so that the ONNX Runtime route of ``predict``
imports no JAX; re-exported here), as the prepared cache and the eval step prepare an evaluation image
(``input_pipeline.transforms.prepare``, ``input_pipeline.augment.prepare``):

- ``to_unit``: a slice -> float [0, 1] image at the model's size (intensity window: minimum -> 0,
  ``upper_percentile`` -> 1; bilinear resize; quantised to 8 bits as the cache stores it). Kept apart for
  what needs the scan before normalisation (saliency baselines, drawings).
- ``normalise``: [0, 1] image -> (H, W, 3) model input with the pretrained weights' mean/std (numpy, the
  reference); ``normalise_jnp`` is the same step in jnp, so that it can move onto the device (tests hold the
  two equal). ``preprocess`` = ``normalise(to_unit(...))``.

Forward: ``forward_fn`` splits an NNX model once (``engine.split_model``) and jits its eval-mode forward once;
``batched`` runs any function over fixed-size chunks (the last one zero-padded) so that a jitted function
compiles once for inputs of any length; ``logits`` is the two together. ``softmax`` is the one numpy softmax.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brain_jax.train import engine
from brain_jax.train.preprocess import normalise, preprocess, softmax, to_unit  # noqa: F401  (re-exported)
from brain_jax.train.spec import InputSpec

# ------------------------------------------------------------------------------------ preprocessing


def normalise_jnp(image01: jax.Array, spec: InputSpec) -> jax.Array:
    """``normalise`` in jnp: the same float32 constants and operations, for use on the device."""
    inv = 1.0 / np.asarray(spec.std, np.float32)
    shift = np.asarray(spec.mean, np.float32) * inv
    return jnp.asarray(image01, jnp.float32)[..., None] * inv - shift


# ------------------------------------------------------------------------------------------ forward


def forward_fn(model: Callable) -> Callable[[np.ndarray], np.ndarray]:
    """A batch -> float32 logits: an NNX model split once and its eval-mode forward jitted once; any other
    callable (tests' stubs) as it is."""
    if isinstance(model, nnx.Module):
        parts = engine.split_model(model)
        fwd = jax.jit(engine.make_forward(parts))
        return lambda x: np.asarray(fwd(parts.params, parts.batch_stats, parts.rest, x), np.float32)
    return lambda x: np.asarray(model(x), np.float32)


def batched(fn: Callable, arrays: Sequence[np.ndarray], batch_size: int, *, pad_to: int | None = None) -> Any:
    """``fn`` over chunks of ``batch_size`` rows of ``arrays`` (fewer when there are fewer rows), each
    zero-padded to ``pad_to`` rows (default: the chunk size), so that a jitted ``fn`` compiles once; outputs
    (arrays, or tuples of arrays) cut back to the real rows and joined."""
    n = len(arrays[0])
    bs = max(1, min(batch_size, n))
    size = max(bs, pad_to or 0)
    outs = []
    for i in range(0, n, bs):
        chunk = [a[i:i + bs] for a in arrays]
        k = len(chunk[0])
        chunk = [np.concatenate([c, np.zeros((size - k,) + c.shape[1:], c.dtype)]) if size > k else c
                 for c in chunk]
        out = fn(*chunk)
        outs.append(tuple(np.asarray(o)[:k] for o in out) if isinstance(out, tuple) else np.asarray(out)[:k])
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs))
    return np.concatenate(outs)


def logits(model: Callable, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """float32 logits of ``model`` (see ``forward_fn``) on model inputs of any number, ``batch_size`` at a time."""
    return batched(forward_fn(model), [inputs], batch_size)
