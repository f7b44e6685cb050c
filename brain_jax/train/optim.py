"""Optimizers: Adam/AdamW, warmup + cosine/constant schedules, layer-wise lr decay, clipping, EMA."""
from __future__ import annotations

import re
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``opt.lr`` over ``opt.warmup_steps``, then cosine to ``lr * min_lr_ratio`` or flat."""
    lr = float(opt.lr)
    warmup = int(min(max(opt.warmup_steps, 0), max(total_steps - 1, 0)))
    if opt.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif opt.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1), alpha=float(opt.min_lr_ratio))
    else:
        raise ValueError(f"config field optimizer.schedule: {opt.schedule!r}; expected 'cosine' or 'constant'")
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


_BLOCK_INDEX = re.compile(r"\.(\d+)(?=\.|$)")


def layer_ids(paths: Iterable[str], head_paths: Iterable[str]) -> tuple[dict[str, int], int]:
    """Depth index of every parameter path for layer-wise lr decay, and the top index.

    Backbone blocks are ordered by the integers in their path (``stages.2.layers.5`` -> (2, 5)), which
    follows the forward order in every model here; embeddings come first (0) and everything without a
    block index that is not an embedding (final norms, pooler, decode/classification head) is on top.
    """
    paths = list(paths)
    head_paths = tuple(head_paths)
    keys: dict[str, tuple[int, ...] | None] = {}
    for p in paths:
        if any(p == h or p.startswith(h + ".") for h in head_paths):
            keys[p] = None
            continue
        nums = tuple(int(n) for n in _BLOCK_INDEX.findall(p))
        if nums:
            keys[p] = nums
        elif "embed" in p:
            keys[p] = ()
        else:
            keys[p] = None
    ranked = sorted({k for k in keys.values() if k})
    rank = {k: i + 1 for i, k in enumerate(ranked)}
    top = len(ranked) + 1
    return {p: (top if k is None else 0 if k == () else rank[k]) for p, k in keys.items()}, top


def layer_decay_scales(paths: Iterable[str], head_paths: Iterable[str], decay: float) -> dict[str, float]:
    """lr multiplier per parameter path: ``decay ** (top - layer_id)`` (1 for the head)."""
    ids, top = layer_ids(paths, head_paths)
    return {p: float(decay) ** (top - i) for p, i in ids.items()}


def scale_by_tree(scales: Any) -> optax.GradientTransformation:
    """Multiply updates by a fixed pytree of per-parameter factors (stateless)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(init, update)


def _decay_mask(params: Any) -> Any:
    """Weight decay on kernels/matrices only, never on biases, norms, GRN or layer-scale vectors."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    opt: ml_collections.ConfigDict,
    total_steps: int,
    *,
    lr_scales: Any | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain of a config's ``optimizer`` group; ``lr_scales`` is a params-shaped tree or None."""
    schedule = learning_rate_schedule(opt, total_steps)
    parts = []
    if opt.grad_clip_norm and opt.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
    name = opt.name.lower()
    if name not in ("adam", "adamw", "sgd"):
        raise ValueError(f"config field optimizer.name: {opt.name!r}; expected 'adam', 'adamw' or 'sgd'")
    if name == "sgd":
        parts.append(optax.trace(decay=float(opt.b1)))
    else:
        parts.append(optax.scale_by_adam(b1=float(opt.b1), b2=float(opt.b2), eps=float(opt.eps)))
    if name == "adamw" and opt.weight_decay > 0:
        parts.append(optax.add_decayed_weights(float(opt.weight_decay), mask=_decay_mask))
    elif name == "adam" and opt.weight_decay > 0:
        raise ValueError("config field optimizer.weight_decay: Adam has no decoupled weight decay; use adamw")
    parts.append(optax.scale_by_learning_rate(schedule))
    if lr_scales is not None:
        parts.append(scale_by_tree(lr_scales))
    return optax.chain(*parts), schedule


def ema_update(ema: Any, params: Any, decay: float | jax.Array) -> Any:
    """Exponential moving average of weights (kept in float32 beside the params)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, params)
