"""Calibration (expected calibration error) and bootstrap confidence intervals for per-case metrics."""
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


@functools.partial(jax.jit, static_argnames=("num_resamples", "confidence"))
def bootstrap_ci(
    values: jax.Array,
    valid: jax.Array | None = None,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, jax.Array]:
    """Percentile-bootstrap confidence interval of the mean of a per-case metric.

    Each resample draws n = (number of valid cases) cases with replacement from the valid ones;
    padded / invalid cases never enter. Returns ``mean`` (of the valid values), ``low``, ``high``
    (the (1 - confidence)/2 and (1 + confidence)/2 percentiles of the resampled means, numpy's linear
    interpolation) and ``n``. All NaN when no case is valid. jit-able (``num_resamples`` static).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    values = jnp.asarray(values, jnp.float32).reshape(-1)
    ok = jnp.ones(values.shape, bool) if valid is None else jnp.asarray(valid).astype(bool).reshape(-1)
    m = values.shape[0]
    n = jnp.sum(ok, dtype=jnp.int32)
    order = jnp.argsort(~ok, stable=True)  # valid cases first
    key = jax.random.key(seed)
    draws = jax.random.randint(key, (num_resamples, m), 0, jnp.maximum(n, 1))
    # Only the first n of the m draws are used, so every resample has exactly n cases.
    used = (jnp.arange(m) < n)[None, :]
    sampled = jnp.where(used, values[order[draws]], 0.0)
    means = jnp.sum(sampled, axis=1) / jnp.maximum(n, 1)
    alpha = (1.0 - confidence) / 2.0
    low, high = jnp.percentile(means, jnp.array([100 * alpha, 100 * (1 - alpha)]))
    mean = jnp.sum(jnp.where(ok, values, 0.0)) / jnp.maximum(n, 1)
    nan = jnp.float32(jnp.nan)
    return {
        "mean": jnp.where(n > 0, mean, nan),
        "low": jnp.where(n > 0, low, nan),
        "high": jnp.where(n > 0, high, nan),
        "n": n,
    }
