"""Two-level bootstrap: training seeds, then test clusters (numpy, on the host).

N trainings of one config that differ only in their run seed are scored on one test set. Their
mean score varies for two reasons: the test set is a sample of patients, and training is random.
A replicate of the two-level bootstrap redraws both:

1. N seeds with replacement from the N trainings (``seed_draws``);
2. the test clusters (patients / duplicate groups, as ``stats.resampling_units`` numbers them) with
   replacement: one draw per replicate, shared by every seed, since all seeds share one test set.

The statistic is the mean, over the drawn seeds, of the metric recomputed on the drawn clusters:
accuracy, macro-F1 and balanced accuracy from the summed confusion matrix
(``classification.summarize_confusions``), mean Dice as (sum over drawn cases) / (number of drawn
cases). The interval is the percentile interval of the replicates. The point estimate is the mean over
the N trainings of the metric on the whole test set, with ``summarize_confusions``' convention (an absent
or never-predicted class scores 0). In a replicate, a ratio whose denominator was not drawn (macro-F1 with
a class neither present nor predicted, a subset's accuracy, a mean Dice without cases) is undefined (NaN,
``stats.replicate_summary``), left out of the interval and counted (``undefined_resamples``), as in the
one-level cluster bootstrap.

Draws (``draws``): the clusters are ``stats.bootstrap_indices(n_units, n_resamples, seed)``, the same
draws as the one-level cluster bootstrap with that seed, so with one seed this reduces to it exactly;
the seeds come from ``np.random.default_rng([seed, stream])``. A paired difference of two models on the
same test set shares the cluster draws and draws each model's seeds from its own stream; two models on
different test sets (the leakage study's arms) are bootstrapped independently (different ``seed``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from brain_jax.metrics import stats
from brain_jax.metrics.classification import summarize_confusions

METHOD = "two-level percentile bootstrap (training seeds, then test clusters)"
ONE_SEED_METHOD = "percentile cluster bootstrap (one training: no seed level)"
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "balanced_accuracy")
MIN_SEEDS = 5  # below this the seed level is drawn from too few trainings for its interval to mean much

Statistic = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def draws(n_units: int, n_seeds: int, n_resamples: int, seed: int, stream: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(cluster_draws (R, n_units), seed_draws (R, n_seeds)): the units and the trainings drawn, with
    replacement, in each of the R = ``n_resamples`` replicates."""
    if n_seeds < 1:
        raise ValueError(f"need at least one training (seed); got n_seeds={n_seeds}")
    clusters = stats.bootstrap_indices(n_units, n_resamples, seed)
    seeds = np.random.default_rng([seed, stream]).integers(0, n_seeds, (n_resamples, n_seeds))
    return clusters, seeds


def cluster_counts(cluster_draws: np.ndarray, n_units: int) -> np.ndarray:
    """(R, n_units) float: how often each unit was drawn in each replicate."""
    r = len(cluster_draws)
    flat = (cluster_draws.astype(np.int64) + n_units * np.arange(r)[:, None]).ravel()
    return np.bincount(flat, minlength=r * n_units).reshape(r, n_units).astype(np.float64)


def replicates(unit_stats: np.ndarray, statistic: Statistic, cluster_draws: np.ndarray,
               seed_draws: np.ndarray) -> dict[str, np.ndarray]:
    """(R,) replicates of each metric of ``statistic``.

    ``unit_stats`` (S, n_units, D): additive sufficient statistics of each training's examples summed
    within each unit (a flattened confusion matrix, or Dice sum and case count); ``statistic`` maps
    summed statistics (..., D) to metrics (...). Replicate r: the units' statistics weighted by their
    draw counts, the metric of every training, then the mean over the trainings drawn in ``seed_draws[r]``.
    """
    s, u, d = unit_stats.shape
    counts = cluster_counts(cluster_draws, u)
    sums = (counts @ unit_stats.transpose(1, 0, 2).reshape(u, s * d)).reshape(len(counts), s, d)
    per_seed = statistic(sums)
    return {m: np.take_along_axis(np.asarray(v, np.float64), seed_draws, axis=1).mean(axis=1)
            for m, v in per_seed.items()}


def percentile(estimate: float, reps: np.ndarray, confidence: float) -> dict[str, Any]:
    """{"estimate", "low", "high"}; replicates where the metric is undefined (NaN) are left out and counted."""
    reps = np.asarray(reps, np.float64)
    ok = reps[~np.isnan(reps)]
    q = 100.0 * np.array([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    low, high = np.percentile(ok, q) if len(ok) else (np.nan, np.nan)
    out = {"estimate": float(estimate), "low": float(low), "high": float(high)}
    if len(ok) < len(reps):
        out["undefined_resamples"] = int(len(reps) - len(ok))
    return out


def _meta(n_resamples: int, seed: int, confidence: float, n_seeds: Any, units: np.ndarray, cluster_kind: str,
          stream: Any = 1) -> dict[str, Any]:
    return {"method": ONE_SEED_METHOD if n_seeds == 1 else METHOD, "confidence": float(confidence),
            "n_resamples": int(n_resamples), "seed": int(seed),
            "seed_streams": stream, "n_seeds": n_seeds, "n_clusters": int(units.max(initial=-1)) + 1,
            "resampled_unit": cluster_kind, "n_examples": len(units)}


def _as_seeds(values: Any, n: int, what: str) -> np.ndarray:
    """(S, n) per-training values from (n,) or (S, n)."""
    v = np.asarray(values)
    v = v[None] if v.ndim == 1 else v
    if v.ndim != 2 or v.shape[1] != n or len(v) < 1:
        raise ValueError(f"{what}: expected ({n},) or (seeds, {n}) values, one row per training; got {v.shape}")
    return v


def unit_confusions(labels: np.ndarray, preds: np.ndarray, units: np.ndarray, n_units: int, k: int) -> np.ndarray:
    """(S, n_units, k*k): the confusion matrix of each unit's examples, per training (``preds`` (S, n))."""
    labels = np.asarray(labels, np.int64)
    return np.stack([np.bincount(units * k * k + labels * k + np.asarray(p, np.int64), minlength=n_units * k * k)
                     .reshape(n_units, k * k) for p in preds]).astype(np.float64)


def confusion_statistic(k: int, metrics: Sequence[str] = CLASSIFICATION_METRICS, *,
                        replicate: bool = True) -> Statistic:
    """The ``statistic`` of classification metrics from flattened k x k confusion matrices (..., k*k):
    undefined ratios NaN (``replicate``, ``stats.replicate_summary``) or 0 (a point estimate's convention)."""
    summary = stats.replicate_summary if replicate else summarize_confusions

    def stat(sums: np.ndarray) -> dict[str, np.ndarray]:
        s = summary(sums.reshape(*sums.shape[:-1], k, k))
        return {m: s[m] for m in metrics}

    return stat


def mean_statistic(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Mean of a per-case value from (..., 2) [sum, count]; NaN where no case was drawn."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"dice": np.where(sums[..., 1] > 0, sums[..., 0] / sums[..., 1], np.nan)}


def unit_means(values: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    """(S, n_units, 2): [sum of the values, number of cases] of each unit, per training (``values`` (S, n))."""
    counts = np.bincount(units, minlength=n_units).astype(np.float64)
    return np.stack([np.stack([np.bincount(units, weights=v, minlength=n_units), counts], axis=1)
                     for v in np.asarray(values, np.float64)])


def _task_stats(task: str, truth: Any, values: np.ndarray, units: np.ndarray, n_units: int,
                num_classes: int | None) -> tuple[np.ndarray, Statistic, Statistic]:
    """(unit statistics, the replicates' statistic, the point estimate's statistic)."""
    if task == "classification":
        k = int(num_classes or 0)
        if k < 1:
            raise ValueError("classification needs num_classes")
        return (unit_confusions(truth, values, units, n_units, k), confusion_statistic(k),
                confusion_statistic(k, replicate=False))
    if task == "segmentation":
        return unit_means(values, units, n_units), mean_statistic, mean_statistic
    raise ValueError(f"task must be 'classification' or 'segmentation'; got {task!r}")


def two_level(task: str, values: Any, clusters: Any, cluster_kind: str, *, labels: Any = None,
              num_classes: int | None = None, n_resamples: int, seed: int = 0, stream: int = 1,
              confidence: float = 0.95) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The two-level bootstrap of one model's N trainings on one test set.

    ``values``: classification predictions (S, n) with ``labels`` (n,) and ``num_classes``; segmentation
    per-case Dice (S, n). Returns ({metric: {"estimate", "low", "high"}, "interval": metadata}, the (R,)
    replicates of each metric, for differences).
    """
    n = len(np.asarray(labels)) if task == "classification" else int(np.shape(values)[-1])
    vals = _as_seeds(values, n, f"two_level({task})")
    units = stats.resampling_units(clusters, cluster_kind, n)
    n_units = int(units.max()) + 1
    unit_stats, statistic, point_statistic = _task_stats(task, labels, vals, units, n_units, num_classes)
    cd, sd = draws(n_units, len(vals), n_resamples, seed, stream)
    reps = replicates(unit_stats, statistic, cd, sd)
    points = {m: float(np.mean(v)) for m, v in point_statistic(unit_stats.sum(axis=1)).items()}
    out: dict[str, Any] = {m: percentile(points[m], reps[m], confidence) for m in reps}
    out["interval"] = _meta(n_resamples, seed, confidence, len(vals), units, cluster_kind, stream)
    return out, reps


def paired_difference(task: str, values_a: Any, values_b: Any, clusters: Any, cluster_kind: str, *,
                      labels: Any = None, num_classes: int | None = None, n_resamples: int, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, Any]:
    """Model A minus model B, both trained several times and scored on the same test set (same rows):
    the clusters drawn once per replicate for both, each model's seeds drawn on its own (streams 1 and 2)."""
    a = two_level(task, values_a, clusters, cluster_kind, labels=labels, num_classes=num_classes,
                  n_resamples=n_resamples, seed=seed, stream=1, confidence=confidence)
    b = two_level(task, values_b, clusters, cluster_kind, labels=labels, num_classes=num_classes,
                  n_resamples=n_resamples, seed=seed, stream=2, confidence=confidence)
    out: dict[str, Any] = {m: percentile(a[0][m]["estimate"] - b[0][m]["estimate"], a[1][m] - b[1][m], confidence)
                           for m in a[1]}
    n_seeds = [a[0]["interval"]["n_seeds"], b[0]["interval"]["n_seeds"]]
    out["interval"] = a[0]["interval"] | {"n_seeds": n_seeds, "seed_streams": [1, 2],
                                          "method": METHOD if max(n_seeds) > 1 else ONE_SEED_METHOD}
    return out


def subset_difference(labels: Any, preds: Any, in_subset: Any, clusters: Any, cluster_kind: str, *,
                      n_resamples: int, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy of one model's N trainings on the examples in a subset, outside it, and the difference
    (in − out), bootstrapped together (seeds, then the clusters of the whole test set), so examples of one
    cluster on both sides are not counted as independent. A replicate that draws no example of a side
    leaves that side's (and the difference's) replicate undefined."""
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    preds = _as_seeds(preds, n, "subset_difference")
    flag = np.asarray(in_subset, bool).reshape(-1)
    if flag.shape != (n,):
        raise ValueError(f"subset_difference: {flag.shape[0]} subset flags for {n} examples")
    units = stats.resampling_units(clusters, cluster_kind, n)
    n_units = int(units.max()) + 1
    correct = (preds == labels[None]).astype(np.float64)
    ones = np.ones_like(correct)
    cols = [correct * flag, ones * flag, correct * ~flag, ones * ~flag]  # correct and counted, inside / outside
    unit_stats = np.stack([np.stack([np.bincount(units, weights=c[s], minlength=n_units) for c in cols], axis=1)
                           for s in range(len(preds))])

    def stat(sums: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            inside = np.where(sums[..., 1] > 0, sums[..., 0] / sums[..., 1], np.nan)
            outside = np.where(sums[..., 3] > 0, sums[..., 2] / sums[..., 3], np.nan)
        return {"inside": inside, "outside": outside, "difference": inside - outside}

    reps = replicates(unit_stats, stat, *draws(n_units, len(preds), n_resamples, seed))
    points = {m: float(np.mean(v)) for m, v in stat(unit_stats.sum(axis=1)).items()}
    out: dict[str, Any] = {}
    for side, mask in (("inside", flag), ("outside", ~flag)):
        entry = percentile(points[side], reps[side], confidence) if mask.any() else None
        out[side] = {"n": int(mask.sum()), "n_clusters": len(np.unique(units[mask])), "accuracy": entry}
    both = flag.any() and (~flag).any()
    out["difference"] = percentile(points["difference"], reps["difference"], confidence) if both else None
    out["interval"] = _meta(n_resamples, seed, confidence, len(preds), units, cluster_kind)
    return out


def few_seeds_note(n_seeds: int) -> str | None:
    """The warning for fewer than ``MIN_SEEDS`` trainings (None from ``MIN_SEEDS`` on)."""
    if n_seeds >= MIN_SEEDS:
        return None
    return (f"only {n_seeds} seed{'s' if n_seeds != 1 else ''} per model: the two-level interval draws trainings from "
            f"{n_seeds} and says little about training randomness; use at least {MIN_SEEDS} seeds")
