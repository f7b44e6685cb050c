"""Losses: (weighted, label-smoothed) cross-entropy and soft Dice, masked for padded examples."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax


def _class_weight_vector(class_weights: Sequence[float], num_classes: int) -> jax.Array | None:
    if not class_weights:
        return None
    if len(class_weights) != num_classes:
        raise ValueError(
            f"config field loss.class_weights has {len(class_weights)} entries; the model has {num_classes} classes"
        )
    return jnp.asarray(class_weights, jnp.float32)


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    weight: jax.Array,
    *,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] = (),
) -> jax.Array:
    """Mean cross-entropy over entries with ``weight`` > 0 (weights broadcast to ``labels``' shape).

    ``logits`` (..., C) float, ``labels`` (...) int. Class weights multiply each entry's weight and the
    normaliser, so the loss stays a weighted mean.
    """
    num_classes = logits.shape[-1]
    logits = logits.astype(jnp.float32)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing > 0:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    per = -jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    w = jnp.broadcast_to(weight.astype(jnp.float32), per.shape)
    cw = _class_weight_vector(class_weights, num_classes)
    if cw is not None:
        w = w * cw[labels]
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1e-12)


def soft_dice_loss(logits: jax.Array, masks: jax.Array, weight: jax.Array, eps: float = 1.0) -> jax.Array:
    """1 - soft Dice of the foreground classes (all but 0), per example then averaged over ``weight``.

    ``logits`` (B, H, W, C), ``masks`` (B, H, W) int, ``weight`` (B,).
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]
    target = jax.nn.one_hot(masks, logits.shape[-1], dtype=jnp.float32)[..., 1:]
    inter = jnp.sum(probs * target, axis=(1, 2))
    denom = jnp.sum(probs, axis=(1, 2)) + jnp.sum(target, axis=(1, 2))
    dice = (2 * inter + eps) / (denom + eps)  # (B, C-1)
    per_example = 1.0 - jnp.mean(dice, axis=-1)
    w = weight.astype(jnp.float32)
    return jnp.sum(per_example * w) / jnp.maximum(jnp.sum(w), 1e-12)
