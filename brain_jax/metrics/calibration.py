"""Calibration: the expected calibration error (ECE) from per-bin sufficient statistics."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("num_bins",))
def calibration_bins(
    probs: jax.Array, labels: jax.Array, num_bins: int = 15, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Sufficient statistics of the ECE: per-bin count, sum of confidence, sum of correctness.

    Confidence = max class probability, binned into ``num_bins`` equal-width bins (lo, hi] on [0, 1]
    (the first bin also holds 0). ``mask`` (B,) drops padded examples. Sum these over batches and
    hosts, then call ``ece_from_bins``.
    """
    probs = jnp.asarray(probs, jnp.float32)
    labels = jnp.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (B, C) and labels (B,); got {probs.shape} and {labels.shape}")
    conf = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=jnp.float32)
    in_bin = (conf[:, None] > edges[None, :-1]) & (conf[:, None] <= edges[None, 1:])
    in_bin = in_bin.at[:, 0].set(in_bin[:, 0] | (conf <= edges[0]))
    if mask is not None:
        in_bin = in_bin & jnp.asarray(mask).astype(bool).reshape(-1)[:, None]
    w = in_bin.astype(jnp.float32)
    return {
        "count": jnp.sum(in_bin, axis=0, dtype=jnp.int32),
        "confidence": jnp.sum(w * conf[:, None], axis=0),
        "correct": jnp.sum(w * correct[:, None], axis=0),
    }


@jax.jit
def ece_from_bins(count: jax.Array, confidence: jax.Array, correct: jax.Array) -> jax.Array:
    """ECE = sum_b |sum correct_b - sum confidence_b| / N (the count-weighted |accuracy - confidence|)."""
    n = jnp.sum(jnp.asarray(count))
    gap = jnp.abs(jnp.asarray(correct, jnp.float32) - jnp.asarray(confidence, jnp.float32))
    return jnp.where(n > 0, jnp.sum(gap) / jnp.maximum(n, 1), jnp.nan)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def expected_calibration_error(
    probs: jax.Array, labels: jax.Array, num_bins: int = 15, mask: jax.Array | None = None
) -> jax.Array:
    """Top-label ECE with ``num_bins`` equal-width bins; NaN when no example counts."""
    return ece_from_bins(**calibration_bins(probs, labels, num_bins, mask))
