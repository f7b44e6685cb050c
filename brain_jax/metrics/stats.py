"""Uncertainty and model comparison from per-example results, on the host (numpy / scipy).

These run after evaluation, on the arrays an accumulator kept (``examples()``), so they are numpy, not
jit: vectorised over bootstrap replicates, 2,000 resamples over a few thousand examples take well
under a second.

The unit
--------
Examples from one patient (or one duplicate group: the same slice stored several times) are not
independent, so every interval and every test here works on clusters: ``clusters`` gives each
example's patient / group id, and slices are the unit only when neither is known (``resampled_unit``
then says ``"slice"``). Every result carries the number of clusters behind it.

Intervals (``classification_intervals``, ``segmentation_intervals``)
-------------------------------------------------------------------
Which metric gets which interval (each entry records its ``method`` and ``n_clusters``):

* Proportions (accuracy; per-class precision, recall, specificity): the **Korn-Graubard** interval, a
  Clopper-Pearson interval on the effective sample size n / design effect, the design effect from
  the between-cluster variance of the ratio estimator (linearisation, K/(K-1) small-sample factor)
  and the effective size shrunk by (z / t_{K-1})^2. Closed form, no resampling.
* Everything else (balanced accuracy, macro / weighted averages, per-class F1, AUROC, Dice, IoU, HD):
  **BCa** from a cluster bootstrap (``n_units`` clusters drawn with replacement, the statistic
  recomputed from the resample: confusion-matrix metrics from the resampled confusion matrix, a
  segmentation mean as sum over the drawn cases / number of drawn cases), its acceleration from the
  leave-one-cluster-out jackknife.
* An estimate at exactly 0 or 1 (where both would collapse to zero width): the exact
  Clopper-Pearson interval with the clusters behind the metric as the trials. Never zero width.

Point estimates keep sklearn's ``zero_division=0`` convention (precision of a class never predicted
is 0). In bootstrap replicates an undefined ratio (a class absent from the resample, or never
predicted) is undefined, not 0: that replicate is left out of that metric's interval, a macro
average is undefined when one of its classes is, and ``undefined_resamples`` counts them.
Measured coverage: ``benchmarks/bench_intervals.py`` and BENCHMARKS.md.

Paired comparison (``paired_comparison``, ``pairwise_comparisons``)
------------------------------------------------------------------
Two models scored on the same examples (same ids in the same order; the caller aligns them). The
**primary endpoint** is accuracy (classification) or the slice-weighted mean Dice (segmentation);
everything else is descriptive. The primary test is the **cluster swap test**: under the null, model
A's and model B's predictions are exchangeable within each cluster, so swapping them in cluster k
flips the sign of d_k, the cluster's difference in correct slices (or its sum of Dice differences),
and the statistic is sum_k d_k (N times the accuracy difference). For integer d_k its null
distribution is exact, by convolving the |d_k| (``swap_test``); with at most one discordant slice per
cluster it is the exact McNemar test. For real d_k (Dice) the flips are enumerated up to 16
non-zero clusters, else 9,999 random flips give a valid p-value ((1 + count) / (1 + flips)).
Across several pairs, Holm's step-down adjusts the primary p-values and the **verdict follows the
Holm-adjusted p**; the interval of the difference shown beside it is at the Bonferroni level
1 - alpha / m (cluster-robust t with K - 1 degrees of freedom), so a simultaneous interval that
excludes 0 always goes with a Holm rejection. Per-class precision, recall and F1 differences get the
same swap test (recall exactly; precision and F1, ratios of model-dependent sums, by enumeration or
random swaps), two-sided and one-sided, for claims like "A beats B on every class" tested as an
intersection-union hypothesis (``intersection_union``: every one-sided test must reject; no
adjustment). Slice-level McNemar and per-slice Wilcoxon remain as columns labelled "as papers
report; ignores patients": with several slices per patient or copies they call equal models
different far above alpha (tests/test_metrics_stats.py measures it).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats

from brain_jax import N_RESAMPLES
from brain_jax.metrics.classification import summarize_confusions

RESAMPLED_UNITS = ("patient", "duplicate_group", "slice")
INTERVAL_METHOD = "per metric: Korn-Graubard for proportions, cluster-bootstrap BCa otherwise"
KORN_GRAUBARD = "Korn-Graubard (design-effect Clopper-Pearson)"
BCA = "BCa cluster bootstrap"
EXACT_AT_BOUND = "Clopper-Pearson on clusters (estimate at 0 or 1)"
NO_DIFFERENCE = "no difference shown at α = {alpha:g}"
PAPERS_NOTE = "as papers report; ignores patients"
SWAP_FLIPS = 9999  # random swaps where a swap test cannot be exact
_ENUMERATE_UP_TO = 14  # swap tests enumerate every flip of at most this many differing clusters
# Bootstrap work is done in blocks of replicates holding at most this many (replicate, example) cells.
_BLOCK_CELLS = 1 << 22


# --------------------------------------------------------------------------- resampling


def _draw_blocks(n_units: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The resamples' drawn units, in blocks of at most 2^22 draws, from ``np.random.default_rng(seed)``."""
    if n_units < 1 or n_resamples < 1:
        raise ValueError(f"need at least one unit and one resample; got n_units={n_units}, n_resamples={n_resamples}")
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK_CELLS // n_units)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n_units, (min(rows, n_resamples - start), n_units), dtype=np.int32)


def bootstrap_indices(n_units: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_units) int32: row r lists the units drawn, with replacement, in resample r.

    Every function of this module draws its resamples here (block by block, so memory stays bounded),
    so a test can redo a bootstrap on the same indices.
    """
    return np.concatenate(list(_draw_blocks(n_units, n_resamples, seed)))


def resampling_units(clusters: Any, cluster_kind: str, n_examples: int) -> np.ndarray:
    """(n_examples,) int: the unit of each example, its cluster's position in ``np.unique(clusters)``.

    ``clusters`` None means every example is its own unit, which only ``cluster_kind="slice"`` allows.
    """
    if cluster_kind not in RESAMPLED_UNITS:
        raise ValueError(f"cluster_kind must be one of {RESAMPLED_UNITS}; got {cluster_kind!r}")
    if clusters is None:
        if cluster_kind != "slice":
            raise ValueError(f"cluster_kind={cluster_kind!r} needs the cluster id of every example; got clusters=None")
        return np.arange(n_examples)
    ids = np.asarray(clusters)
    if ids.shape != (n_examples,):
        raise ValueError(f"clusters must hold one id per example, shape ({n_examples},); got {ids.shape}")
    if ids.dtype.kind == "f":
        missing = np.isnan(ids)
    elif ids.dtype.kind in "US":
        missing = ids == ids.dtype.type()
    elif ids.dtype.kind == "O":
        missing = np.array([v is None or v == "" or (isinstance(v, float) and v != v) for v in ids.tolist()], bool)
    else:
        missing = np.zeros(n_examples, bool)
    if missing.any():
        raise ValueError(f"clusters: {int(missing.sum())} examples have no id (None / NaN / ''), first at index "
                         f"{int(np.argmax(missing))}; give each its own id or resample slices (clusters=None)")
    try:
        _, units = np.unique(ids, return_inverse=True)
    except TypeError as e:
        raise ValueError(f"clusters: ids must be all strings or all numbers ({e})") from None
    if cluster_kind == "slice" and units.max(initial=-1) + 1 != n_examples:
        raise ValueError("cluster_kind='slice' but clusters repeat ids: name the kind of group ('patient' or "
                         "'duplicate_group') or pass clusters=None")
    return units.reshape(-1)


class _Resampling:
    """Units of the examples and the bootstrap draws, with the metadata recorded beside each interval."""

    def __init__(self, clusters: Any, cluster_kind: str, n_examples: int, n_resamples: int, seed: int,
                 confidence: float):
        if n_examples < 1:
            raise ValueError("no examples to resample")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1); got {confidence}")
        self.unit = resampling_units(clusters, cluster_kind, n_examples)
        self.n_units = int(self.unit.max()) + 1
        self.n_resamples, self.seed = int(n_resamples), int(seed)
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1; got {n_resamples}")
        # Weighted sums over a resample stay below n_units * n_examples (twice that in AUROC): int32 unless that
        # could overflow.
        self.count_dtype = np.int32 if self.n_units * n_examples < 2**30 else np.int64
        self.meta = {
            "method": INTERVAL_METHOD,
            "confidence": float(confidence),
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "resampled_unit": cluster_kind,
            "n_units": self.n_units,
            "n_examples": int(n_examples),
        }

    def unit_sums(self, values: np.ndarray) -> np.ndarray:
        """(n_units, ...) sums of per-example ``values`` (n, ...) within each unit."""
        values = np.asarray(values, np.float64)
        out = np.zeros((self.n_units,) + values.shape[1:])
        np.add.at(out, self.unit, values)
        return out

    def count_blocks(self, width: int) -> Iterator[np.ndarray]:
        """Blocks of bootstrap counts (b, n_units), integers: how often each unit was drawn in each resample.

        ``width`` is the per-replicate size of the caller's work arrays, to bound their memory.
        """
        rows = max(1, _BLOCK_CELLS // max(width, self.n_units))
        for drawn in _draw_blocks(self.n_units, self.n_resamples, self.seed):
            for start in range(0, len(drawn), rows):
                idx = drawn[start : start + rows]
                counts = np.empty((len(idx), self.n_units), self.count_dtype)
                for r, units in enumerate(idx):
                    counts[r] = np.bincount(units, minlength=self.n_units)
                yield counts


# --------------------------------------------------------------------------- interval builders


def clopper_pearson(x: float, n: float, confidence: float) -> tuple[float, float]:
    """The exact binomial interval of x successes in n trials (x, n may be fractional: effective sizes)."""
    a = 1.0 - confidence
    low = float(scipy.stats.beta.ppf(a / 2, x, n - x + 1)) if x > 0 else 0.0
    high = float(scipy.stats.beta.ppf(1 - a / 2, x + 1, n - x)) if x < n else 1.0
    return low, high


def proportion_interval(successes: Any, trials: Any, confidence: float = 0.95) -> dict[str, Any]:
    """Korn-Graubard interval of the ratio sum(successes) / sum(trials) from per-cluster counts.

    ``successes``, ``trials``: (K,) counts of each cluster (clusters with no trials are left out). The
    variance of the ratio estimator is the cluster-robust K / (K - 1) * sum_k (y_k - p n_k)^2 / N^2; the
    effective size p (1 - p) / variance (at most N) is shrunk by (z / t_{K-1})^2 and the Clopper-Pearson
    interval is taken at that size. An estimate at 0 or 1 (or a single cluster) gets Clopper-Pearson with
    the clusters as trials.
    """
    y = np.asarray(successes, np.float64).reshape(-1)
    n = np.asarray(trials, np.float64).reshape(-1)
    y, n = y[n > 0], n[n > 0]
    k, total = len(n), float(n.sum())
    if k == 0:
        return {"estimate": 0.0, "low": float("nan"), "high": float("nan"), "method": "undefined (no examples)",
                "n_clusters": 0}
    p = float(y.sum()) / total
    if p <= 0.0 or p >= 1.0 or k < 2:
        low, high = clopper_pearson(p * k, k, confidence)
        return {"estimate": p, "low": low, "high": high, "method": EXACT_AT_BOUND, "n_clusters": k}
    var = k / (k - 1) * float(np.sum((y - p * n) ** 2)) / total**2
    n_eff = min(p * (1 - p) / var, total) if var > 0 else total
    a = 1.0 - confidence
    n_eff *= (scipy.stats.norm.ppf(1 - a / 2) / scipy.stats.t.ppf(1 - a / 2, k - 1)) ** 2
    low, high = clopper_pearson(p * n_eff, n_eff, confidence)
    return {"estimate": p, "low": low, "high": high, "method": KORN_GRAUBARD, "n_clusters": k}


def expanded_z(confidence: float, n_clusters: int) -> np.ndarray:
    """The (low, high) normal quantiles of a two-sided ``confidence`` interval, widened for ``n_clusters``
    independent units: sqrt(K / (K - 1)) t_{K-1} (Hesterberg's expanded percentile); plain z when K < 2."""
    q = np.array([(1 - confidence) / 2, (1 + confidence) / 2])
    k = int(n_clusters)
    if k < 2:
        return scipy.stats.norm.ppf(q)
    return np.sqrt(k / (k - 1)) * scipy.stats.t.ppf(q, k - 1)


def bca_interval(estimate: float, replicates: Any, jackknife: Any, confidence: float = 0.95, *,
                 n_clusters: int, bounded: bool = True) -> dict[str, Any]:
    """BCa interval from bootstrap replicates and leave-one-cluster-out jackknife values (NaN: undefined).

    Bias correction z0 = Phi^-1(share of replicates below the estimate, ties counted half); acceleration
    a = sum(d^3) / (6 sum(d^2)^1.5) with d the jackknife values' mean minus each value; the interval is the
    replicates' Phi(z0 + (z0 + z) / (1 - a (z0 + z))) quantiles, with z widened for few clusters as in
    Hesterberg's expanded percentile interval (2015, "What teachers should know about the bootstrap", 3.3):
    z = sqrt(K / (K - 1)) t_{K-1} for K = ``n_clusters`` >= 2, which restores the variance the plug-in
    bootstrap loses (factor (K - 1) / K) and the t tails of an estimated spread. Measured: macro-F1 at
    46 patients covered 92.7 % without it (BENCHMARKS.md, "Interval coverage"). ``bounded`` metrics (in
    [0, 1]) whose replicates all equal an estimate of 0 or 1 get Clopper-Pearson on ``n_clusters`` instead.
    """
    reps = np.asarray(replicates, np.float64).reshape(-1)
    undefined = int(np.isnan(reps).sum())
    reps = reps[~np.isnan(reps)]
    est = float(estimate)
    out: dict[str, Any] = {"estimate": est, "n_clusters": int(n_clusters)}
    if undefined:
        out["undefined_resamples"] = undefined
    if len(reps) < 2 or not np.isfinite(est):
        return out | {"low": float("nan"), "high": float("nan"), "method": "undefined (too few defined resamples)"}
    if reps.max() - reps.min() <= 1e-12 * max(1.0, abs(est)):
        if bounded and (est <= 0.0 or est >= 1.0):
            low, high = clopper_pearson(round(est) * n_clusters, n_clusters, confidence)
            return out | {"low": low, "high": high, "method": EXACT_AT_BOUND}
        return out | {"low": float(reps[0]), "high": float(reps[0]), "method": "degenerate (every resample equal)"}
    r = len(reps)
    share = (np.sum(reps < est) + 0.5 * np.sum(reps == est)) / r
    z0 = scipy.stats.norm.ppf(np.clip(share, 0.5 / r, 1 - 0.5 / r))
    jack = np.asarray(jackknife, np.float64).reshape(-1)
    jack = jack[np.isfinite(jack)]
    accel = 0.0
    if len(jack) >= 3:
        d = jack.mean() - jack
        ss = float(np.sum(d**2))
        accel = float(np.sum(d**3)) / (6.0 * ss**1.5) if ss > 0 else 0.0
    z = expanded_z(confidence, n_clusters)
    q = scipy.stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    low, high = np.percentile(reps, 100 * q)
    return out | {"low": float(low), "high": float(high), "method": BCA}


def _per_class(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-class entries joined into one entry of lists (``undefined_resamples`` a list when any has it)."""
    keys = ["estimate", "low", "high", "method", "n_clusters"]
    out = {k: [e[k] for e in entries] for k in keys}
    if any("undefined_resamples" in e for e in entries):
        out["undefined_resamples"] = [e.get("undefined_resamples", 0) for e in entries]
    return out


def difference_interval(diffs: Any, sizes: Any, confidence: float = 0.95) -> dict[str, Any]:
    """Interval of sum(diffs) / sum(sizes) from per-cluster sums of paired differences (A - B).

    Cluster-robust t: the ratio's linearised variance K / (K - 1) * sum_k (d_k - D n_k)^2 / N^2 and the t
    quantile with K - 1 degrees of freedom. When no cluster differs, the interval is +- the Clopper-Pearson
    upper bound on the share of differing clusters (0 of K), never zero width.
    """
    d = np.asarray(diffs, np.float64).reshape(-1)
    n = np.asarray(sizes, np.float64).reshape(-1)
    k, total = len(n), float(n.sum())
    est = float(d.sum()) / total
    a = 1.0 - confidence
    if not np.any(d != 0) or k < 2:
        half = 1.0 - (a / 2) ** (1.0 / k)
        return {"estimate": est, "low": est - half, "high": est + half, "confidence": confidence, "n_clusters": k,
                "method": "no differing cluster: ± Clopper-Pearson bound on the share of differing clusters"}
    se = np.sqrt(k / (k - 1) * float(np.sum((d - est * n) ** 2))) / total
    t = float(scipy.stats.t.ppf(1 - a / 2, k - 1))
    return {"estimate": est, "low": float(max(est - t * se, -1.0)), "high": float(min(est + t * se, 1.0)),
            "confidence": confidence, "n_clusters": k, "method": "cluster-robust t (K - 1 df)"}


# --------------------------------------------------------------------------- AUROC


def _auroc_plan(scores: np.ndarray, positive: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, ...]:
    """What one-vs-rest AUROC needs from the sorted scores, independent of the resample.

    Returns the units of the negatives in ascending score order, the units of the positives, and for
    each positive how many negatives lie strictly below its tie group (``lo``) and up to the end of it
    (``hi``): a positive earns the negatives below it plus half of those tied with it.
    """
    order = np.argsort(scores, kind="stable")
    s, pos = scores[order], positive[order]
    new_group = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(s)]  # exclusive
    neg_at, pos_at = np.flatnonzero(~pos), np.flatnonzero(pos)
    lo = np.searchsorted(neg_at, starts[group[pos_at]])
    hi = np.searchsorted(neg_at, ends[group[pos_at]])
    return unit[order[neg_at]], unit[order[pos_at]], lo, hi


def _auroc_from_counts(plan: tuple[np.ndarray, ...], counts: np.ndarray) -> np.ndarray:
    """AUROC (b,) of b resamples given as unit counts (b, n_units); NaN without positives or negatives.

    Mann-Whitney form with example weights w (its unit's count): sum over positive i, negative j of
    w_i w_j ([s_i > s_j] + [s_i = s_j] / 2), over (sum of positive w)(sum of negative w). Integer
    arithmetic (twice the numerator), so it is exact.
    """
    neg_units, pos_units, lo, hi = plan
    if len(neg_units) == 0 or len(pos_units) == 0:
        return np.full(len(counts), np.nan)
    # np.take keeps the gathered block C-contiguous, which makes the cumulative sum several times faster
    cum = np.cumsum(np.take(counts, neg_units, axis=1), axis=1, dtype=counts.dtype)

    def neg_weight_of_first(m: np.ndarray) -> np.ndarray:  # weight of the first m negatives, (b, n_pos)
        return np.take(cum, m - 1, axis=1) * (m > 0)

    w_pos = np.take(counts, pos_units, axis=1)
    twice_num = np.einsum("ij,ij->i", w_pos, neg_weight_of_first(lo) + neg_weight_of_first(hi), dtype=np.int64)
    den = w_pos.sum(axis=1, dtype=np.int64) * cum[:, -1].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, twice_num / (2.0 * den), np.nan)


def roc_auc_ovr(labels: Any, probs: Any) -> np.ndarray:
    """(C,) one-vs-rest AUROC of each class from class probabilities (n, C); NaN for a class that is
    absent from ``labels`` or is every label (AUROC needs positives and negatives). Ties count 1/2."""
    labels, probs = _check_labels_probs(labels, probs)
    unit, ones = np.arange(len(labels)), np.ones((1, len(labels)), np.int64)
    return np.array([_auroc_from_counts(_auroc_plan(probs[:, k], labels == k, unit), ones)[0]
                     for k in range(probs.shape[1])])


def _check_labels_probs(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (n, num_classes) with n = len(labels) = {len(labels)}; got {probs.shape}")
    if np.isnan(probs).any():
        raise ValueError("probs contain NaN")
    _check_classification(labels, labels, probs.shape[1], "roc_auc_ovr")
    return labels, probs


# --------------------------------------------------------------------------- classification


def _check_classification(labels: Any, preds: Any, num_classes: int, who: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    preds = np.asarray(preds).reshape(-1)
    if labels.shape != preds.shape:
        raise ValueError(f"{who}: labels and predictions differ in length: {labels.shape[0]} vs {preds.shape[0]}")
    for name, v in (("labels", labels), ("predictions", preds)):
        if not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"{who}: {name} must be integer class indices; got dtype {v.dtype}")
        bad = (v < 0) | (v >= num_classes)
        if bad.any():
            raise ValueError(f"{who}: {int(bad.sum())} {name} outside [0, {num_classes}) (first: {v[bad][0]})")
    return labels, preds


def _unit_confusions(rs: _Resampling, labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """(n_units, K*K) confusion matrix of each unit's examples, flattened."""
    flat = rs.unit * k * k + labels * k + preds
    return np.bincount(flat, minlength=rs.n_units * k * k).reshape(rs.n_units, k * k).astype(np.float64)


_HEADLINE = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1")
_PER_CLASS = ("precision", "recall", "f1", "specificity")
_PROPORTIONS = ("precision", "recall", "specificity")  # per class; and accuracy


def replicate_summary(cms: Any) -> dict[str, np.ndarray]:
    """``summarize_confusions`` of bootstrap / jackknife confusion matrices with undefined ratios as NaN.

    Precision of a class never predicted, recall of a class absent, F1 of a class neither present nor
    predicted and specificity without negatives are NaN (the point estimate's convention sets them to 0);
    a macro average is NaN when one of its classes is. Accuracy, balanced accuracy (over the classes
    present) and the support-weighted averages keep their definitions.
    """
    cms = np.asarray(cms, np.float64)
    out = dict(summarize_confusions(cms))
    support, predicted = cms.sum(-1), cms.sum(-2)
    negatives = cms.sum((-2, -1))[..., None] - support
    for name, den in (("precision", predicted), ("recall", support), ("f1", support + predicted),
                      ("specificity", negatives)):
        out[name] = np.where(den > 0, out[name], np.nan)
    for name in ("precision", "recall", "f1"):
        out[f"macro_{name}"] = np.mean(out[name], axis=-1)
    return out


def _class_clusters(unit_cm: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per class, how many clusters hold examples of each metric's denominator (labelled, predicted, ...)."""
    cm = unit_cm.reshape(-1, k, k)
    support, predicted = cm.sum(-1), cm.sum(-2)
    negatives = cm.sum((-2, -1))[:, None] - support
    return {"precision": (predicted > 0).sum(0), "recall": (support > 0).sum(0),
            "f1": ((support + predicted) > 0).sum(0), "specificity": (negatives > 0).sum(0),
            "auroc": np.full(k, len(cm))}


def _proportion_counts(unit_cm: np.ndarray, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-cluster (successes, trials), (K, C), of each per-class proportion, and of accuracy (K,)."""
    cm = unit_cm.reshape(-1, k, k)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)
    size = cm.sum((-2, -1))
    tn = size[:, None] - support - predicted + tp
    return {"accuracy": (tp.sum(-1), size), "precision": (tp, predicted), "recall": (tp, support),
            "specificity": (tn, size[:, None] - support)}


def classification_intervals(
    labels: Any,
    preds: Any,
    probs: Any = None,
    clusters: Any = None,
    cluster_kind: str = "slice",
    *,
    num_classes: int | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Point estimates and intervals of the classification metrics (see the module docstring for which
    interval each metric gets).

    ``labels``, ``preds`` (n,) class indices; ``probs`` (n, C) class probabilities (adds one-vs-rest
    AUROC); ``clusters`` (n,) the patient or duplicate-group id of each example (None: slices).
    ``num_classes`` defaults to ``probs.shape[1]``. Returns ``interval`` (the metadata), the headline
    metrics ``accuracy``, ``balanced_accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``,
    ``weighted_f1`` (and ``macro_auroc`` with probs) each as {"estimate", "low", "high", "method",
    "n_clusters"}, and ``per_class`` {"precision", "recall" (= sensitivity), "f1", "specificity" (and
    "auroc")} each as the same keys holding lists over classes. Bootstrap metrics are recomputed from each
    resample's confusion matrix; ``macro_auroc`` averages the classes whose AUROC is defined on the set.
    """
    if num_classes is None:
        if probs is None:
            raise ValueError("classification_intervals: pass num_classes (or probs, whose width gives it)")
        num_classes = int(np.shape(probs)[-1])
    k = int(num_classes)
    labels, preds = _check_classification(labels, preds, k, "classification_intervals")
    rs = _Resampling(clusters, cluster_kind, len(labels), n_resamples, seed, confidence)
    unit_cm = _unit_confusions(rs, labels, preds, k)
    if probs is not None:
        _, probs = _check_labels_probs(labels, probs)
        if probs.shape[1] != k:
            raise ValueError(f"classification_intervals: probs has {probs.shape[1]} classes, num_classes={k}")
    plans = [] if probs is None else [_auroc_plan(probs[:, j], labels == j, rs.unit) for j in range(k)]
    cm_reps, auc_reps = [], []
    for counts in rs.count_blocks(len(labels) if plans else k * k):
        cm_reps.append(counts @ unit_cm)
        auc_reps.append(np.stack([_auroc_from_counts(p, counts) for p in plans], axis=1) if plans else None)
    total = unit_cm.sum(0)
    point = summarize_confusions(total.reshape(k, k))
    reps = replicate_summary(np.concatenate(cm_reps).reshape(-1, k, k))
    jack = replicate_summary((total[None] - unit_cm).reshape(-1, k, k))
    props = _proportion_counts(unit_cm, k)
    n_class = _class_clusters(unit_cm, k)
    out: dict[str, Any] = {"interval": rs.meta}
    for name in _HEADLINE:
        if name == "accuracy":
            out[name] = proportion_interval(*props["accuracy"], confidence)
        else:
            out[name] = bca_interval(point[name], reps[name], jack[name], confidence, n_clusters=rs.n_units)
    out["per_class"] = {}
    for name in _PER_CLASS:
        if name in _PROPORTIONS:
            y, n = props[name]
            entries = [proportion_interval(y[:, j], n[:, j], confidence) | {"estimate": float(point[name][j])}
                       for j in range(k)]
        else:
            entries = [bca_interval(point[name][j], reps[name][:, j], jack[name][:, j], confidence,
                                    n_clusters=int(n_class[name][j])) for j in range(k)]
        out["per_class"][name] = _per_class(entries)
    if plans:
        auc_point = roc_auc_ovr(labels, probs)
        auc = np.concatenate(auc_reps)
        auc_jack = _auroc_jackknife(plans, rs.n_units, rs.count_dtype)
        out["per_class"]["auroc"] = _per_class([bca_interval(auc_point[j], auc[:, j], auc_jack[:, j], confidence,
                                                             n_clusters=rs.n_units) for j in range(k)])
        present = ~np.isnan(auc_point)
        if present.any():
            macro = bca_interval(np.mean(auc_point[present]), np.mean(auc[:, present], axis=1),
                                 np.mean(auc_jack[:, present], axis=1), confidence, n_clusters=rs.n_units)
        else:
            macro = {"estimate": float("nan"), "low": float("nan"), "high": float("nan"),
                     "method": "undefined (no class has positives and negatives)", "n_clusters": rs.n_units}
        out["macro_auroc"] = macro
    return out


def _auroc_jackknife(plans: list[tuple[np.ndarray, ...]], n_units: int, dtype: Any) -> np.ndarray:
    """(n_units, C) one-vs-rest AUROC with each cluster left out in turn."""
    rows = max(1, _BLOCK_CELLS // max(n_units, 1))
    out = []
    for start in range(0, n_units, rows):
        idx = np.arange(start, min(n_units, start + rows))
        counts = np.ones((len(idx), n_units), dtype)
        counts[np.arange(len(idx)), idx] = 0
        out.append(np.stack([_auroc_from_counts(p, counts) for p in plans], axis=1))
    return np.concatenate(out)


# --------------------------------------------------------------------------- segmentation


def segmentation_intervals(
    per_case: Mapping[str, Any],
    clusters: Any = None,
    cluster_kind: str = "slice",
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """BCa cluster-bootstrap intervals of the mean over cases of each per-case metric.

    ``per_case`` maps a name (e.g. ``dice``, ``iou``, ``hd_mm``, ``hd95_mm``) to (n,) values, one per
    case in the same order as ``clusters``. Each replicate is the mean over the resampled cases; the
    jackknife leaves one cluster out. Returns ``interval`` (the metadata) and, per name, {"estimate",
    "low", "high", "method", "n_clusters"}. Dice and IoU are bounded in [0, 1] (exact fallback at 0 / 1).
    """
    if not per_case:
        raise ValueError("segmentation_intervals: per_case is empty; expected e.g. {'dice': [...], 'hd95_mm': [...]}")
    names = list(per_case)
    values = [np.asarray(per_case[n], np.float64).reshape(-1) for n in names]
    for name, v in zip(names, values):
        if v.shape != values[0].shape:
            raise ValueError(f"segmentation_intervals: per_case[{name!r}] has {len(v)} cases, "
                             f"per_case[{names[0]!r}] has {len(values[0])}")
        if not np.isfinite(v).all():
            raise ValueError(f"segmentation_intervals: per_case[{name!r}] has {int((~np.isfinite(v)).sum())} "
                             "non-finite values")
    rs = _Resampling(clusters, cluster_kind, len(values[0]), n_resamples, seed, confidence)
    sums = rs.unit_sums(np.stack(values, axis=1))  # (units, metrics)
    sizes = rs.unit_sums(np.ones(len(values[0])))
    reps = np.concatenate([(c @ sums) / (c @ sizes)[:, None] for c in rs.count_blocks(len(names))])
    with np.errstate(invalid="ignore", divide="ignore"):
        jack = (sums.sum(0)[None] - sums) / (sizes.sum() - sizes)[:, None]
    out: dict[str, Any] = {"interval": rs.meta}
    for j, name in enumerate(names):
        out[name] = bca_interval(values[j].mean(), reps[:, j], jack[:, j], confidence, n_clusters=rs.n_units,
                                 bounded=name in ("dice", "iou"))
    return out


# --------------------------------------------------------------------------- tests


def swap_null(magnitudes: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact null distribution of T = sum_k s_k a_k, s_k = +-1 with probability 1/2 each, integer a_k >= 0.

    Returns (values, probabilities) over T = 2 S - A, S the sum of the a_k whose sign is +, A = sum a_k:
    the distribution of S is the product of (1 + x^{a_k}) / 2, built by convolving one cluster at a time.
    """
    a = np.asarray(magnitudes).reshape(-1)
    if a.size and (a.dtype.kind not in "iu" or (a < 0).any()):
        raise ValueError("swap_null: magnitudes must be non-negative integers")
    a = a[a > 0].astype(np.int64)
    total = int(a.sum())
    p = np.zeros(total + 1)
    p[0] = 1.0
    reach = 0
    for v in np.sort(a):
        q = p[: reach + 1].copy()
        p[: reach + 1] *= 0.5
        p[v : v + reach + 1] += 0.5 * q
        reach += int(v)
    return 2 * np.arange(total + 1) - total, p


def swap_test(diffs: Any) -> dict[str, Any]:
    """Exact cluster swap (sign-flip) test of sum_k d_k from integer per-cluster differences d_k.

    ``diffs`` (K,) e.g. model A's minus model B's correct slices in each cluster. Returns ``statistic``
    (sum d_k), ``p_value`` (two-sided: P(|T| >= |t|)), ``p_greater`` (P(T >= t): evidence that A > B),
    ``p_less``, ``n_clusters`` and ``n_discordant_clusters``. With |d_k| <= 1 this is the exact McNemar test.
    """
    d = np.asarray(diffs).reshape(-1)
    if d.dtype.kind not in "iu":
        if not np.all(d == np.round(d)):
            raise ValueError("swap_test: per-cluster differences must be integers (counts of correct slices)")
        d = d.astype(np.int64)
    t = int(d.sum())
    values, probs = swap_null(np.abs(d))
    return {"statistic": t, "p_value": float(min(1.0, probs[np.abs(values) >= abs(t)].sum())),
            "p_greater": float(min(1.0, probs[values >= t].sum())),
            "p_less": float(min(1.0, probs[values <= t].sum())),
            "n_clusters": len(d), "n_discordant_clusters": int(np.sum(d != 0))}


def _flips(m: int, seed: int, n_flips: int) -> tuple[np.ndarray, bool]:
    """(R, m) 0/1 swaps of m clusters: every one of the 2^m when m is small (exact), else random ones with the
    identity first (so the observed value is among them)."""
    if m <= _ENUMERATE_UP_TO:
        return ((np.arange(2**m)[:, None] >> np.arange(m)[None, :]) & 1).astype(np.float64), True
    rng = np.random.default_rng(seed)
    return np.concatenate([np.zeros((1, m)), rng.integers(0, 2, (n_flips, m)).astype(np.float64)]), False


def _p_values(null: np.ndarray, observed: float, exact: bool) -> dict[str, float]:
    """Two- and one-sided p-values of ``observed`` among the swapped statistics (which include it)."""
    tol = 1e-9 * max(1.0, float(np.nanmax(np.abs(null))))
    hi, lo = np.sum(null >= observed - tol), np.sum(null <= observed + tol)
    two = np.sum(np.abs(null) >= abs(observed) - tol)
    r = len(null)
    return {"p_value": float(two / r), "p_greater": float(hi / r), "p_less": float(lo / r),
            "method": "exact (every swap enumerated)" if exact
            else f"{r - 1} random swaps, p = (1 + count) / (1 + swaps)"}


def sign_flip_test(diffs: Any, *, seed: int = 0, n_flips: int = SWAP_FLIPS) -> dict[str, Any]:
    """Cluster sign-flip test of sum_k d_k from real per-cluster differences (e.g. sums of Dice A - B).

    Exact (all 2^m flips) when at most 14 clusters differ, else ``n_flips`` random flips plus the identity,
    which gives a valid p-value. Returns the keys of ``swap_test`` plus ``method``.
    """
    d = np.asarray(diffs, np.float64).reshape(-1)
    nz = d[d != 0]
    t = float(d.sum())
    flips, exact = _flips(len(nz), seed, n_flips)
    null = (1.0 - 2.0 * flips) @ nz if len(nz) else np.zeros(1)
    return {"statistic": t, **_p_values(null, t, exact), "n_clusters": len(d),
            "n_discordant_clusters": len(nz)}


def ratio_swap_test(num_a: Any, den_a: Any, num_b: Any, den_b: Any, *, seed: int = 0,
                    n_flips: int = SWAP_FLIPS) -> dict[str, Any]:
    """Cluster swap test of sum(num_a) / sum(den_a) - sum(num_b) / sum(den_b) (per-class precision, F1).

    Each argument is (K,) per-cluster sums; swapping cluster k exchanges its (num, den) between A and B.
    A ratio with a zero denominator counts as 0 (the point estimate's convention). Exact when at most 14
    clusters differ, else random swaps.
    """
    na, da, nb, db = (np.asarray(v, np.float64).reshape(-1) for v in (num_a, den_a, num_b, den_b))
    diff = (na != nb) | (da != db)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    observed = float(ratio(na.sum(), da.sum()) - ratio(nb.sum(), db.sum()))
    flips, exact = _flips(int(diff.sum()), seed, n_flips)
    dn, dd = nb[diff] - na[diff], db[diff] - da[diff]
    sa_n, sa_d = na.sum() + flips @ dn, da.sum() + flips @ dd
    sb_n, sb_d = nb.sum() - flips @ dn, db.sum() - flips @ dd
    null = ratio(sa_n, sa_d) - ratio(sb_n, sb_d)
    return {"statistic": observed, **_p_values(null, observed, exact), "n_clusters": len(na),
            "n_discordant_clusters": int(diff.sum())}


def mcnemar_exact(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """Exact McNemar test on paired right/wrong outcomes of two models on the same examples.

    ``a_right_b_wrong`` (b) and ``a_wrong_b_right`` (c) are the discordant counts; the p-value is the
    two-sided binomial test of b successes in b + c trials with p = 1/2 (1.0 when b + c = 0).
    """
    a = np.asarray(correct_a, bool).reshape(-1)
    b_ = np.asarray(correct_b, bool).reshape(-1)
    if a.shape != b_.shape:
        raise ValueError(f"mcnemar_exact: {len(a)} outcomes for model A, {len(b_)} for model B")
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    p = scipy.stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue if b + c else 1.0
    return {"a_right_b_wrong": b, "a_wrong_b_right": c, "p_value": float(p),
            "test": "exact McNemar (two-sided binomial test on the discordant examples)"}


def wilcoxon_signed_rank(x: Any, y: Any) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired values x - y (e.g. per-case Dice of models A and B).

    Zero differences are dropped (``zero_method="wilcox"``); tied |differences| (exactly equal floats) get
    their average rank.
    Without ties and with at most 50 non-zero differences the p-value is exact; with ties and at most
    13 it is exact by enumerating all sign flips; otherwise it is the normal approximation with the
    tie-corrected variance and no continuity correction. Identical inputs (no non-zero difference)
    give p = 1. ``statistic`` is min(W+, W-).
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"wilcoxon_signed_rank: {len(x)} values for model A, {len(y)} for model B")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("wilcoxon_signed_rank: values must be finite")
    d = x - y
    nz = d[d != 0]
    ties = len(np.unique(np.abs(nz))) < len(nz)
    out = {"n": len(d), "n_nonzero": len(nz), "zero_method": "wilcox", "ties": bool(ties)}
    if len(nz) == 0:
        return out | {"statistic": 0.0, "p_value": 1.0, "method": "none (all differences are zero)"}
    if not ties and len(nz) <= 50:
        method: Any = "exact"
    elif ties and len(nz) <= 13:
        method = scipy.stats.PermutationMethod(n_resamples=2 ** len(nz))  # every sign flip: exact, deterministic
    else:
        method = "asymptotic"
    res = scipy.stats.wilcoxon(nz, zero_method="wilcox", correction=False, alternative="two-sided", method=method)
    label = method if isinstance(method, str) else "exact (all sign flips)"
    return out | {"statistic": float(res.statistic), "p_value": float(res.pvalue), "method": label}


def holm(p_values: Sequence[float], alpha: float = 0.05) -> dict[str, list]:
    """Holm's step-down adjustment of m p-values: sorted ascending, p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j)).

    Returns ``p_adjusted`` (in the input order) and ``reject`` (p_adjusted <= alpha), which controls the
    family-wise error rate at ``alpha``.
    """
    p = np.asarray(p_values, np.float64).reshape(-1)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm: p-values must lie in [0, 1]; got {p.tolist()}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return {"p_adjusted": adjusted.tolist(), "reject": (adjusted <= alpha).tolist()}


def intersection_union(p_values: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Intersection-union test of "every one of these alternatives holds": reject only when every one-sided
    test rejects at ``alpha``, i.e. p = max of the p-values (no multiplicity adjustment is needed)."""
    p = np.asarray(p_values, np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("intersection_union: no p-values")
    return {"p_value": float(p.max()), "reject": bool(p.max() <= alpha), "n_hypotheses": int(p.size)}


def _primary_verdict(primary: dict[str, Any], names: Sequence[str], alpha: float) -> str:
    p = primary["p_holm"]
    a = round(alpha, 10)
    if p > alpha or primary["statistic"] == 0:
        return NO_DIFFERENCE.format(alpha=a) + f" (Holm-adjusted p = {p:.3g})"
    better, worse = names if primary["statistic"] > 0 else names[::-1]
    return f"{better} better than {worse} (Holm-adjusted p = {p:.3g} ≤ {a:g})"


def _finish_pairs(pairs: list[dict[str, Any]], endpoint: str, confidence: float) -> list[dict[str, Any]]:
    """Holm across the pairs' primary tests, the verdicts, and whether each interval agrees with them."""
    alpha = 1.0 - confidence
    adj = holm([p["primary"]["p_value"] for p in pairs], alpha=alpha)
    for p, pa in zip(pairs, adj["p_adjusted"]):
        prim = p["primary"]
        prim |= {"p_holm": pa, "n_pairs_holm": len(pairs), "alpha": round(alpha, 10)}
        prim["verdict"] = _primary_verdict(prim, p["models"], alpha)
        entry = p[endpoint]
        rejects = pa <= alpha and prim["statistic"] != 0
        excludes = entry["low"] > 0 or entry["high"] < 0
        entry["agrees_with_test"] = bool(rejects == excludes)
        entry["verdict"] = prim["verdict"]
    return pairs


def _per_class_swaps(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, rs: _Resampling, k: int,
                     seed: int) -> dict[str, Any]:
    """Per-class recall (exact swap test), precision and F1 (ratio swap tests) differences A - B."""
    out: dict[str, Any] = {}

    def per_unit(mask: np.ndarray) -> np.ndarray:
        return np.bincount(rs.unit, weights=mask.astype(np.float64), minlength=rs.n_units)
    support = [per_unit(labels == c) for c in range(k)]
    tp = {m: [per_unit((labels == c) & (p == c)) for c in range(k)] for m, p in (("a", preds_a), ("b", preds_b))}
    pp = {m: [per_unit(p == c) for c in range(k)] for m, p in (("a", preds_a), ("b", preds_b))}
    results: dict[str, list[dict[str, Any]]] = {"recall": [], "precision": [], "f1": []}
    for c in range(k):
        rec = swap_test(np.rint(tp["a"][c] - tp["b"][c]).astype(np.int64))
        n = support[c].sum()
        rec["statistic"] = rec["statistic"] / n if n else 0.0
        results["recall"].append(rec | {"method": "exact swap test"})
        results["precision"].append(ratio_swap_test(tp["a"][c], pp["a"][c], tp["b"][c], pp["b"][c], seed=seed + c))
        results["f1"].append(ratio_swap_test(2 * tp["a"][c], pp["a"][c] + support[c], 2 * tp["b"][c],
                                             pp["b"][c] + support[c], seed=seed + k + c))
    for name, rows in results.items():
        out[name] = {"difference": [r["statistic"] for r in rows], "p_value": [r["p_value"] for r in rows],
                     "p_greater": [r["p_greater"] for r in rows], "p_less": [r["p_less"] for r in rows],
                     "n_discordant_clusters": [r["n_discordant_clusters"] for r in rows],
                     "method": [r["method"] for r in rows]}
    return out


def paired_comparison(
    labels: Any,
    preds_a: Any,
    preds_b: Any,
    clusters: Any = None,
    cluster_kind: str = "slice",
    *,
    num_classes: int,
    names: tuple[str, str] = ("A", "B"),
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    family_size: int = 1,
) -> dict[str, Any]:
    """Compare two classifiers on the same examples (same order).

    Returns ``models``, ``n_examples``, ``primary`` (the exact cluster swap test of the accuracy
    difference: ``test``, ``statistic`` (sum of per-cluster differences in correct slices), ``p_value``,
    ``p_greater``, ``p_less``, ``p_holm``, ``verdict``, ``n_clusters``, ``n_discordant_clusters``),
    ``accuracy_difference`` (A - B, cluster-robust t interval at the Bonferroni level 1 - alpha /
    ``family_size``), ``macro_f1_difference`` (descriptive: paired BCa cluster bootstrap at ``confidence``),
    ``per_class`` (recall / precision / F1 differences with two- and one-sided swap-test p-values),
    ``mcnemar_slices`` (exact McNemar on slices, labelled as ignoring patients) and ``interval``.
    """
    k = int(num_classes)
    labels, preds_a = _check_classification(labels, preds_a, k, f"paired_comparison ({names[0]})")
    _, preds_b = _check_classification(labels, preds_b, k, f"paired_comparison ({names[1]})")
    rs = _Resampling(clusters, cluster_kind, len(labels), n_resamples, seed, confidence)
    right_a, right_b = preds_a == labels, preds_b == labels
    diffs = np.rint(rs.unit_sums(right_a.astype(np.int64) - right_b.astype(np.int64))).astype(np.int64)
    sizes = rs.unit_sums(np.ones(len(labels)))
    primary = swap_test(diffs) | {
        "test": "exact cluster swap test (sign flips of per-cluster differences in correct slices)",
        "endpoint": "accuracy", "unit": cluster_kind}
    level = 1.0 - (1.0 - confidence) / max(1, int(family_size))
    out: dict[str, Any] = {"models": list(names), "n_examples": len(labels), "primary": primary,
                           "accuracy_difference": difference_interval(diffs, sizes, level)}
    # descriptive: macro-F1 difference, paired BCa on the same resampled clusters for both models
    cms = [_unit_confusions(rs, labels, p, k) for p in (preds_a, preds_b)]
    totals = [cm.sum(0) for cm in cms]
    reps = np.concatenate([replicate_summary((c @ cms[0]).reshape(-1, k, k))["macro_f1"]
                           - replicate_summary((c @ cms[1]).reshape(-1, k, k))["macro_f1"]
                           for c in rs.count_blocks(k * k)])
    jack = (replicate_summary((totals[0][None] - cms[0]).reshape(-1, k, k))["macro_f1"]
            - replicate_summary((totals[1][None] - cms[1]).reshape(-1, k, k))["macro_f1"])
    point = [summarize_confusions(t.reshape(k, k))["macro_f1"] for t in totals]
    out["macro_f1_difference"] = bca_interval(point[0] - point[1], reps, jack, confidence, n_clusters=rs.n_units,
                                              bounded=False) | {"descriptive": True, "confidence": confidence}
    out["per_class"] = _per_class_swaps(labels, preds_a, preds_b, rs, k, seed)
    out["mcnemar_slices"] = mcnemar_exact(right_a, right_b) | {"note": PAPERS_NOTE}
    out["interval"] = rs.meta
    return _finish_pairs([out], "accuracy_difference", confidence)[0] if family_size == 1 else out


def paired_segmentation_comparison(
    dice_a: Any,
    dice_b: Any,
    clusters: Any = None,
    cluster_kind: str = "slice",
    *,
    names: tuple[str, str] = ("A", "B"),
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    family_size: int = 1,
) -> dict[str, Any]:
    """Compare two segmenters by per-case Dice on the same cases (same order).

    The estimand is the slice-weighted mean Dice (what the reports show). Returns ``models``, ``n_cases``,
    ``primary`` (cluster sign-flip test of the sum of per-cluster Dice differences), ``dice_difference``
    (mean Dice A - B, cluster-robust t interval at the Bonferroni level), ``wilcoxon_slices`` (per-slice
    Wilcoxon signed-rank, labelled as ignoring patients) and ``interval``.
    """
    a = np.asarray(dice_a, np.float64).reshape(-1)
    b = np.asarray(dice_b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired_segmentation_comparison: {len(a)} cases for {names[0]}, {len(b)} for {names[1]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_segmentation_comparison: Dice values must be finite")
    rs = _Resampling(clusters, cluster_kind, len(a), n_resamples, seed, confidence)
    diffs = rs.unit_sums(a - b)
    sizes = rs.unit_sums(np.ones(len(a)))
    primary = sign_flip_test(diffs, seed=seed) | {
        "test": "cluster sign-flip test of per-cluster sums of Dice differences", "endpoint": "mean Dice",
        "unit": cluster_kind}
    level = 1.0 - (1.0 - confidence) / max(1, int(family_size))
    out = {"models": list(names), "n_cases": len(a), "primary": primary,
           "dice_difference": difference_interval(diffs, sizes, level),
           "wilcoxon_slices": wilcoxon_signed_rank(a, b) | {"note": PAPERS_NOTE}, "interval": rs.meta}
    return _finish_pairs([out], "dice_difference", confidence)[0] if family_size == 1 else out


def pairwise_comparisons(
    labels: Any,
    preds: Mapping[str, Any],
    clusters: Any = None,
    cluster_kind: str = "slice",
    *,
    num_classes: int,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """``paired_comparison`` for every pair of models (in the mapping's order, A before B): the primary
    p-values Holm-adjusted across the pairs, the verdicts from them, the accuracy intervals at the
    Bonferroni level 1 - alpha / (number of pairs). All pairs share the same resamples (same seed)."""
    if len(preds) < 2:
        raise ValueError(f"pairwise_comparisons: need at least two models; got {list(preds)}")
    combos = list(itertools.combinations(preds, 2))
    pairs = [paired_comparison(labels, preds[a], preds[b], clusters, cluster_kind, num_classes=num_classes,
                               names=(a, b), n_resamples=n_resamples, seed=seed, confidence=confidence,
                               family_size=len(combos) if len(combos) > 1 else 1)
             for a, b in combos]
    return pairs if len(combos) == 1 else _finish_pairs(pairs, "accuracy_difference", confidence)


def pairwise_segmentation_comparisons(
    dice: Mapping[str, Any],
    clusters: Any = None,
    cluster_kind: str = "slice",
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """``paired_segmentation_comparison`` for every pair of models, Holm across the primary tests."""
    if len(dice) < 2:
        raise ValueError(f"pairwise_segmentation_comparisons: need at least two models; got {list(dice)}")
    combos = list(itertools.combinations(dice, 2))
    pairs = [paired_segmentation_comparison(dice[a], dice[b], clusters, cluster_kind, names=(a, b),
                                            n_resamples=n_resamples, seed=seed, confidence=confidence,
                                            family_size=len(combos) if len(combos) > 1 else 1)
             for a, b in combos]
    return pairs if len(combos) == 1 else _finish_pairs(pairs, "dice_difference", confidence)
