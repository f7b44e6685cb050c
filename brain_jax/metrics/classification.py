"""Classification metrics: confusion matrix (sufficient statistic) and the summary derived from it."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("num_classes",))
def confusion_matrix(
    labels: jax.Array, preds: jax.Array, num_classes: int, mask: jax.Array | None = None
) -> jax.Array:
    """(C, C) int32 counts, rows = true class, columns = predicted class.

    ``mask`` (B,) marks examples that count (padding never does). Entries whose label or prediction is
    outside [0, C) are not counted; ``ClassificationAccumulator`` compares the total with the number
    of valid examples and raises, so such labels are never dropped silently.
    """
    labels = jnp.asarray(labels).reshape(-1)
    preds = jnp.asarray(preds).reshape(-1)
    if labels.shape != preds.shape:
        raise ValueError(f"labels and preds must have the same length; got {labels.shape} and {preds.shape}")
    classes = jnp.arange(num_classes)
    lt = labels[:, None] == classes[None, :]  # (B, C)
    pp = preds[:, None] == classes[None, :]
    if mask is not None:
        lt = lt & jnp.asarray(mask).astype(bool).reshape(-1)[:, None]
    # Sum of per-example outer products: shards over the batch axis, no scatter.
    return jnp.sum(lt[:, :, None] & pp[:, None, :], axis=0, dtype=jnp.int32)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@jax.jit
def classification_summary(cm: jax.Array) -> dict[str, jax.Array]:
    """Accuracy, per-class precision / recall / F1 / support, macro and weighted averages.

    Zero-division convention (sklearn ``zero_division=0``): a ratio whose denominator is 0 is 0, e.g.
    precision of a class never predicted, recall of a class with no support; F1 = 2TP / (2TP + FP + FN)
    (0 when that is 0/0). Macro averages weigh every class equally (classes with no support
    included, as sklearn with ``labels=range(C)``); weighted averages weigh by support.
    ``balanced_accuracy`` (as sklearn's) averages recall over the classes that have support only.
    """
    cm = jnp.asarray(cm, jnp.float32)
    tp = jnp.diagonal(cm)
    support = jnp.sum(cm, axis=1)
    predicted = jnp.sum(cm, axis=0)
    total = jnp.sum(support)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2.0 * tp, support + predicted)
    weights = _safe_div(support, total)
    return {
        "accuracy": _safe_div(jnp.sum(tp), total),
        # sklearn balanced_accuracy_score: mean recall over the classes that have support
        "balanced_accuracy": _safe_div(jnp.sum(jnp.where(support > 0, recall, 0.0)), jnp.sum(support > 0)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(jnp.int32),
        "macro_precision": jnp.mean(precision),
        "macro_recall": jnp.mean(recall),
        "macro_f1": jnp.mean(f1),
        "weighted_precision": jnp.sum(weights * precision),
        "weighted_recall": jnp.sum(weights * recall),
        "weighted_f1": jnp.sum(weights * f1),
    }
