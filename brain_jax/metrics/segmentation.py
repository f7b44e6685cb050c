"""Overlap metrics for segmentation: per-case Dice / IoU on binary masks, multi-class mIoU from counts."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _counts(pred: jax.Array, target: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, ...]:
    """Per-case (intersection, |pred|, |target|) as int32 over the last two (spatial) axes."""
    p = jnp.asarray(pred).astype(bool)
    t = jnp.asarray(target).astype(bool)
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(f"pred and target must be masks of equal shape (..., H, W); got {p.shape} and {t.shape}")
    if mask is not None:
        m = jnp.broadcast_to(jnp.asarray(mask).astype(bool), p.shape)
        p, t = p & m, t & m
    axes = (-2, -1)
    return (
        jnp.sum(p & t, axis=axes, dtype=jnp.int32),
        jnp.sum(p, axis=axes, dtype=jnp.int32),
        jnp.sum(t, axis=axes, dtype=jnp.int32),
    )


@jax.jit
def dice(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Per-case Dice 2|P∩T| / (|P| + |T|) of binary masks (..., H, W); 1 when both are empty.

    ``mask`` (broadcastable to the masks) marks the pixels that count, e.g. to drop spatial padding.
    """
    inter, sp, st = _counts(pred, target, mask)
    den = sp + st
    return jnp.where(den > 0, 2.0 * inter / jnp.maximum(den, 1), 1.0).astype(jnp.float32)


@jax.jit
def iou(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Per-case IoU (Jaccard) |P∩T| / |P∪T| of binary masks (..., H, W); 1 when both are empty."""
    inter, sp, st = _counts(pred, target, mask)
    union = sp + st - inter
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def intersection_union_counts(
    pred_labels: jax.Array, target_labels: jax.Array, num_classes: int, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Per-class pixel intersection and union counts, int32 (num_classes,), summed over the batch.

    ``pred_labels`` / ``target_labels``: integer label maps (B, H, W). ``mask``: (B,) per-case
    validity or a pixel mask broadcastable to (B, H, W); masked pixels never count. These are the
    sufficient statistics of mIoU: sum them over batches and hosts, then call ``mean_iou``.
    """
    p = jnp.asarray(pred_labels)
    t = jnp.asarray(target_labels)
    if p.shape != t.shape:
        raise ValueError(f"pred_labels and target_labels must have equal shapes; got {p.shape} and {t.shape}")
    m = jnp.ones(p.shape, bool)
    if mask is not None:
        mask = jnp.asarray(mask).astype(bool)
        if mask.ndim == 1 and p.ndim > 1:
            mask = mask.reshape(mask.shape + (1,) * (p.ndim - 1))
        m = jnp.broadcast_to(mask, p.shape)
    inter, union = [], []
    for c in range(num_classes):  # a handful of classes: no (B, H, W, C) one-hot in memory
        pc, tc = (p == c) & m, (t == c) & m
        inter.append(jnp.sum(pc & tc, dtype=jnp.int32))
        union.append(jnp.sum(pc | tc, dtype=jnp.int32))
    return jnp.stack(inter), jnp.stack(union)


@jax.jit
def mean_iou(intersection: jax.Array, union: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mIoU, per-class IoU) from accumulated counts.

    A class with zero union (absent from both prediction and ground truth over the whole split) has
    IoU NaN and is left out of the mean, as in mmseg/torchmetrics; the mean is NaN if all are absent.
    """
    inter = jnp.asarray(intersection, jnp.float32)
    uni = jnp.asarray(union, jnp.float32)
    per_class = jnp.where(uni > 0, inter / jnp.maximum(uni, 1.0), jnp.nan)
    present = uni > 0
    miou = jnp.where(
        jnp.any(present), jnp.sum(jnp.where(present, per_class, 0.0)) / jnp.maximum(jnp.sum(present), 1), jnp.nan
    )
    return miou, per_class
