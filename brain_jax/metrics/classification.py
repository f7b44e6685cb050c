"""Classification metrics: confusion matrix (sufficient statistic) and the summary derived from it."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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


def _safe_div(num: Any, den: Any, xp: Any) -> Any:
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0.0)


def _summary(cm: Any, xp: Any) -> dict[str, Any]:
    """The summary's formulas over the last two axes of ``cm``, for ``xp`` = jax.numpy or numpy."""
    tp = xp.diagonal(cm, axis1=-2, axis2=-1)
    support = xp.sum(cm, axis=-1)
    predicted = xp.sum(cm, axis=-2)
    total = xp.sum(support, axis=-1)
    precision = _safe_div(tp, predicted, xp)
    recall = _safe_div(tp, support, xp)
    f1 = _safe_div(2.0 * tp, support + predicted, xp)
    # one-vs-rest: true negatives are the examples neither labelled nor predicted as the class
    tn = total[..., None] - support - predicted + tp
    specificity = _safe_div(tn, tn + predicted - tp, xp)
    weights = _safe_div(support, total[..., None], xp)
    has_support = support > 0
    return {
        "accuracy": _safe_div(xp.sum(tp, axis=-1), total, xp),
        # sklearn balanced_accuracy_score: mean recall over the classes that have support
        "balanced_accuracy": _safe_div(
            xp.sum(xp.where(has_support, recall, 0.0), axis=-1), xp.sum(has_support, axis=-1), xp
        ),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "specificity": specificity,
        "support": support,
        "macro_precision": xp.mean(precision, axis=-1),
        "macro_recall": xp.mean(recall, axis=-1),
        "macro_f1": xp.mean(f1, axis=-1),
        "weighted_precision": xp.sum(weights * precision, axis=-1),
        "weighted_recall": xp.sum(weights * recall, axis=-1),
        "weighted_f1": xp.sum(weights * f1, axis=-1),
    }


@jax.jit
def classification_summary(cm: jax.Array) -> dict[str, jax.Array]:
    """Accuracy, per-class precision / recall / F1 / specificity / support, macro and weighted averages.

    Zero-division convention (sklearn ``zero_division=0``): a ratio whose denominator is 0 is 0, e.g.
    precision of a class never predicted, recall of a class with no support; F1 = 2TP / (2TP + FP + FN)
    (0 when that is 0/0). Recall is the sensitivity; specificity is the one-vs-rest TN / (TN + FP).
    Macro averages weigh every class equally (classes with no support included, as sklearn with
    ``labels=range(C)``); weighted averages weigh by support. ``balanced_accuracy`` (as sklearn's)
    averages recall over the classes that have support only. ``cm`` may carry leading batch axes.
    """
    out = _summary(jnp.asarray(cm, jnp.float32), jnp)
    out["support"] = out["support"].astype(jnp.int32)
    return out


def summarize_confusions(cms: np.ndarray) -> dict[str, np.ndarray]:
    """``classification_summary`` in numpy float64 over confusion matrices (..., C, C), e.g. bootstrap replicates.

    Same formulas and conventions as the jitted version; runs on the host without a device round trip.
    """
    return _summary(np.asarray(cms, np.float64), np)
