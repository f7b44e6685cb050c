"""What ``eval``, ``compare``, ``study`` and ``report`` derive from per-example results (the predictions CSV,
written and read by ``brain_jax.workdir``): the unit a cluster bootstrap resamples, and Fig. 10's chosen cases.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def resampling_clusters(ids: Mapping[str, np.ndarray]) -> tuple[np.ndarray | None, str, dict[str, int]]:
    """(clusters, cluster_kind, examples per kind) for ``brain_jax.metrics.stats``.

    Slices only (no patient or duplicate group known): ``(None, "slice", ...)``. Otherwise the cluster ids,
    named by the coarsest kind present (patient, else duplicate_group); a split that mixes kinds (a Figshare
    + Kaggle pool: patients and duplicate groups) resamples each example's own cluster, and the returned
    counts say how many examples each kind holds, so outputs can name the mixture.
    """
    kinds = ids["cluster_kind"]
    counts = {k: int(np.sum(kinds == k)) for k in ("patient", "duplicate_group", "slice") if np.any(kinds == k)}
    if set(counts) <= {"slice"}:
        return None, "slice", counts
    return np.asarray(ids["cluster_id"]), ("patient" if "patient" in counts else "duplicate_group"), counts


def unit_name(counts: Mapping[str, int]) -> str:
    """The resampled unit as outputs name it: one kind, or the kinds joined by '+' when they are mixed."""
    return "+".join(counts) if counts else "slice"


# ----------------------------------------------------------------------------------------- Fig. 10 cases

CASE_RANKS = ("best", "median", "worst")


def chosen_cases(dice: np.ndarray, true_area_mm2: np.ndarray, example_ids: Sequence[str]) -> list[tuple[str, int]]:
    """The (rank, row) of the best, median and worst case by Dice (the paper's Fig. 10 shows such cases).

    Chosen among the cases whose ground truth holds tumour (a both-empty slice scores Dice 1 and shows
    nothing), or among all cases when none does; ties are broken by example id, so the choice is stable.
    The median is the lower middle of the sorted cases. Fewer than three cases give fewer rows.
    """
    dice = np.asarray(dice, np.float64)
    rows = np.flatnonzero(np.asarray(true_area_mm2) > 0)
    if len(rows) == 0:
        rows = np.arange(len(dice))
    order = sorted(rows.tolist(), key=lambda i: (dice[i], str(example_ids[i])))
    if not order:
        return []
    picks = {"best": order[-1], "median": order[(len(order) - 1) // 2], "worst": order[0]}
    out, seen = [], set()
    for rank in CASE_RANKS:
        if picks[rank] not in seen:
            out.append((rank, picks[rank]))
            seen.add(picks[rank])
    return out

