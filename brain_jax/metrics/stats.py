"""Uncertainty and model comparison from per-example results, on the host (numpy / scipy).

These run after evaluation, on the arrays an accumulator kept (``examples()``), so they are numpy, not
jit: vectorised over bootstrap replicates, a 2,000-resample interval over a few thousand examples
takes well under a second.

Cluster bootstrap
-----------------
Examples from one patient (or one duplicate group: the same slice stored several times) are not
independent, so the resampled unit is the cluster: ``n_units`` clusters are drawn with replacement
(``bootstrap_indices``), every example of a drawn cluster enters as often as its cluster was drawn,
and the statistic is recomputed from the resample: accuracy, F1 and the rest from the resampled
confusion matrix (never a mean of per-case values), a segmentation mean as (sum over the drawn
cases) / (number of drawn cases). The interval is the percentile interval: the (1 - confidence)/2 and
(1 + confidence)/2 quantiles (numpy's linear interpolation) of the replicates. Every result carries
an ``interval`` block (method, confidence, resamples, seed, resampled unit and how many units) so a
number is never separated from how its interval was made. Slices are the unit only when neither
patients nor duplicate groups are known; ``resampled_unit`` then says ``"slice"``.

Paired comparison
-----------------
Two models scored on the same examples (same ids in the same order; the caller aligns them):
McNemar's exact test on the discordant slices, and a paired cluster bootstrap of the difference
A - B (the same resampled clusters for both models). The verdict reads the difference interval:
"no difference shown at α = 0.05" when it covers 0 (which is not evidence of equivalence), else which
model is better. Holm's step-down correction adjusts the p-values of several pairs. For segmentation,
the Wilcoxon signed-rank test on per-case Dice and a paired bootstrap of the mean-Dice difference.
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
INTERVAL_METHOD = "percentile"
NO_DIFFERENCE = "no difference shown at α = {alpha:g}"
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


def _interval(estimate: Any, replicates: np.ndarray, confidence: float) -> dict[str, Any]:
    """{"estimate", "low", "high"} (plain Python) from replicates (R, ...); NaN replicates are left out."""
    reps = np.asarray(replicates, np.float64)
    q = 100.0 * np.array([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    undefined = np.isnan(reps).sum(axis=0)
    if not undefined.any():
        low, high = np.percentile(reps, q, axis=0)
    else:
        flat = reps.reshape(len(reps), -1)
        bounds = np.full((2, flat.shape[1]), np.nan)
        for j, col in enumerate(flat.T):
            if not np.isnan(col).all():
                bounds[:, j] = np.percentile(col[~np.isnan(col)], q)
        low, high = bounds.reshape((2,) + reps.shape[1:])
    out = {
        "estimate": np.asarray(estimate, np.float64).tolist(),
        "low": np.asarray(low).tolist(),
        "high": np.asarray(high).tolist(),
    }
    if undefined.any():
        out["undefined_resamples"] = undefined.tolist()
    return out


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
    """Point estimates and cluster-bootstrap percentile intervals of the classification metrics.

    ``labels``, ``preds`` (n,) class indices; ``probs`` (n, C) class probabilities (adds one-vs-rest
    AUROC); ``clusters`` (n,) the patient or duplicate-group id of each example (None: slices).
    ``num_classes`` defaults to ``probs.shape[1]``. Returns ``interval`` (the metadata), the headline
    metrics ``accuracy``, ``balanced_accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``,
    ``weighted_f1`` (and ``macro_auroc`` with probs) each as {"estimate", "low", "high"}, and
    ``per_class`` {"precision", "recall" (= sensitivity), "f1", "specificity" (and "auroc")} each as
    {"estimate", "low", "high"} lists over classes. Every value is recomputed from each resample's
    confusion matrix. AUROC entries add ``undefined_resamples`` where a resample lacks positives or
    negatives of a class; those resamples are left out of its interval; ``macro_auroc`` averages the
    classes whose AUROC is defined on the whole set.
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
    point = summarize_confusions(unit_cm.sum(0).reshape(k, k))
    reps = summarize_confusions(np.concatenate(cm_reps).reshape(-1, k, k))
    out: dict[str, Any] = {"interval": rs.meta}
    for name in _HEADLINE:
        out[name] = _interval(point[name], reps[name], confidence)
    out["per_class"] = {name: _interval(point[name], reps[name], confidence) for name in _PER_CLASS}
    if plans:
        auc_point = roc_auc_ovr(labels, probs)
        auc = np.concatenate(auc_reps)
        out["per_class"]["auroc"] = _interval(auc_point, auc, confidence)
        present = ~np.isnan(auc_point)
        macro_reps = np.mean(auc[:, present], axis=1) if present.any() else np.full(len(auc), np.nan)
        macro_point = np.mean(auc_point[present]) if present.any() else np.nan
        out["macro_auroc"] = _interval(macro_point, macro_reps, confidence)
    return out


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
    """Cluster-bootstrap percentile intervals of the mean over cases of each per-case metric.

    ``per_case`` maps a name (e.g. ``dice``, ``iou``, ``hd_mm``, ``hd95_mm``) to (n,) values, one per
    case in the same order as ``clusters``. Each replicate is the mean over the resampled cases.
    Returns ``interval`` (the metadata) and, per name, {"estimate", "low", "high"}.
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
    out: dict[str, Any] = {"interval": rs.meta}
    for j, name in enumerate(names):
        out[name] = _interval(values[j].mean(), reps[:, j], confidence)
    return out


# --------------------------------------------------------------------------- paired comparison


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


def _verdict(entry: dict[str, Any], names: tuple[str, str], confidence: float, higher_is_better: bool = True) -> str:
    """Verdict of a difference A - B from its interval."""
    alpha = 1.0 - confidence
    lo, hi = entry["low"], entry["high"]
    if lo <= 0.0 <= hi:
        return NO_DIFFERENCE.format(alpha=round(alpha, 10))
    a_better = (lo > 0.0) == higher_is_better
    better, worse = names if a_better else names[::-1]
    return f"{better} better than {worse} (interval of the difference excludes 0, α = {round(alpha, 10):g})"


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
) -> dict[str, Any]:
    """Compare two classifiers on the same examples (same order): McNemar and a paired cluster bootstrap.

    Returns ``models`` (the two names), ``n_examples``, ``mcnemar`` (``mcnemar_exact`` on slices),
    ``accuracy_difference`` and ``macro_f1_difference`` (A - B) as {"estimate", "low", "high",
    "verdict"}, and ``interval`` (the metadata). Both models' confusion matrices are recomputed on the
    same resampled clusters, so the interval is of the paired difference.
    """
    k = int(num_classes)
    labels, preds_a = _check_classification(labels, preds_a, k, f"paired_comparison ({names[0]})")
    _, preds_b = _check_classification(labels, preds_b, k, f"paired_comparison ({names[1]})")
    rs = _Resampling(clusters, cluster_kind, len(labels), n_resamples, seed, confidence)
    cms = [_unit_confusions(rs, labels, p, k) for p in (preds_a, preds_b)]
    points = [summarize_confusions(cm.sum(0).reshape(k, k)) for cm in cms]
    reps: list[list[dict[str, np.ndarray]]] = [[], []]
    for counts in rs.count_blocks(k * k):
        for i, cm in enumerate(cms):
            reps[i].append(summarize_confusions((counts @ cm).reshape(-1, k, k)))
    out: dict[str, Any] = {"models": list(names), "n_examples": len(labels),
                           "mcnemar": mcnemar_exact(preds_a == labels, preds_b == labels)}
    for metric in ("accuracy", "macro_f1"):
        diff = np.concatenate([ra[metric] - rb[metric] for ra, rb in zip(*reps)])
        entry = _interval(points[0][metric] - points[1][metric], diff, confidence)
        out[f"{metric}_difference"] = entry | {"verdict": _verdict(entry, names, confidence)}
    out["interval"] = rs.meta
    return out


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
) -> dict[str, Any]:
    """Compare two segmenters by per-case Dice on the same cases (same order).

    Returns ``models``, ``n_cases``, ``wilcoxon`` (``wilcoxon_signed_rank`` of Dice A vs B over cases),
    ``dice_difference`` (mean Dice A - B with its paired cluster-bootstrap interval and ``verdict``)
    and ``interval`` (the metadata).
    """
    a = np.asarray(dice_a, np.float64).reshape(-1)
    b = np.asarray(dice_b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired_segmentation_comparison: {len(a)} cases for {names[0]}, {len(b)} for {names[1]}")
    diff = segmentation_intervals({"dice_difference": a - b}, clusters, cluster_kind, n_resamples=n_resamples,
                                  seed=seed, confidence=confidence)
    entry = diff["dice_difference"]
    return {
        "models": list(names),
        "n_cases": len(a),
        "wilcoxon": wilcoxon_signed_rank(a, b),
        "dice_difference": entry | {"verdict": _verdict(entry, names, confidence)},
        "interval": diff["interval"],
    }


def _with_holm(pairs: list[dict[str, Any]], test: str, confidence: float) -> list[dict[str, Any]]:
    adj = holm([p[test]["p_value"] for p in pairs], alpha=1.0 - confidence)
    for p, pa, rej in zip(pairs, adj["p_adjusted"], adj["reject"]):
        p[test] |= {"p_holm": pa, "significant_holm": rej, "n_pairs_holm": len(pairs)}
    return pairs


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
    """``paired_comparison`` for every pair of models (in the mapping's order, A before B), with Holm.

    Each pair's ``mcnemar`` gains ``p_holm`` (Holm-adjusted across all pairs), ``significant_holm``
    (p_holm <= 1 - confidence) and ``n_pairs_holm``. All pairs share the same resamples (same seed).
    """
    if len(preds) < 2:
        raise ValueError(f"pairwise_comparisons: need at least two models; got {list(preds)}")
    pairs = [paired_comparison(labels, preds[a], preds[b], clusters, cluster_kind, num_classes=num_classes,
                               names=(a, b), n_resamples=n_resamples, seed=seed, confidence=confidence)
             for a, b in itertools.combinations(preds, 2)]
    return _with_holm(pairs, "mcnemar", confidence)


def pairwise_segmentation_comparisons(
    dice: Mapping[str, Any],
    clusters: Any = None,
    cluster_kind: str = "slice",
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """``paired_segmentation_comparison`` for every pair of models, Holm-adjusting the Wilcoxon p-values."""
    if len(dice) < 2:
        raise ValueError(f"pairwise_segmentation_comparisons: need at least two models; got {list(dice)}")
    pairs = [paired_segmentation_comparison(dice[a], dice[b], clusters, cluster_kind, names=(a, b),
                                            n_resamples=n_resamples, seed=seed, confidence=confidence)
             for a, b in itertools.combinations(dice, 2)]
    return _with_holm(pairs, "wilcoxon", confidence)
