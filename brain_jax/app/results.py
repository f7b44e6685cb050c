"""Per-example results of ``brain-jax eval``: the predictions CSV, read back by ``compare`` and ``report``.

One row per evaluated example, in the order of evaluation. Every file starts with the example's identity:

- ``example_id``: ``dataset:file_name#k``, unique across merged sources and the same in every run;
- ``dataset`` (``name/config``) and ``source`` (the record's source field, e.g. ``brain_tumor_mri:<root>``);
- ``cluster_id`` / ``cluster_kind``: the unit a bootstrap resamples: the patient (``patient``), else the
  group of exact / near copies (``duplicate_group``), else the slice itself (``slice``).

Classification rows add ``label`` and ``prediction`` (class names), ``correct`` (0/1) and one
``prob_<class>`` column per class of the head, in head order. Segmentation rows add ``dice``, ``iou``,
``hd_mm``, ``hd95_mm`` (mm, a miss scored with the image diagonal), ``true_area_mm2``, ``pred_area_mm2`` and
the 0/1 flags ``missed_tumour``, ``false_alarm``, ``both_empty``. Floats are written with 9 significant
digits, which round-trips float32 exactly.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ID_COLUMNS = ("example_id", "dataset", "source", "cluster_id", "cluster_kind")
PROB_PREFIX = "prob_"
SEG_VALUES = ("dice", "iou", "hd_mm", "hd95_mm", "true_area_mm2", "pred_area_mm2")
SEG_FLAGS = ("missed_tumour", "false_alarm", "both_empty")


def _num(v: float) -> str:
    return format(float(v), ".9g")


def write_predictions(path: str | os.PathLike, ids: Mapping[str, np.ndarray], examples: Mapping[str, np.ndarray],
                      task: str, class_names: Sequence[str]) -> Path:
    """Write the predictions CSV of one evaluated split (``ids``: ``ID_COLUMNS`` arrays; ``examples``: the
    accumulator's ``examples()``, same order)."""
    path = Path(path)
    n = len(ids["example_id"])
    if task == "classification":
        header = [*ID_COLUMNS, "label", "prediction", "correct", *(PROB_PREFIX + c for c in class_names)]
        label, pred, probs = examples["label"], examples["pred"], examples["probs"]
        rows = ([*(ids[k][i] for k in ID_COLUMNS), class_names[label[i]], class_names[pred[i]],
                 int(label[i] == pred[i]), *(_num(p) for p in probs[i])] for i in range(n))
    else:
        header = [*ID_COLUMNS, *SEG_VALUES, *SEG_FLAGS]
        rows = ([*(ids[k][i] for k in ID_COLUMNS), *(_num(examples[k][i]) for k in SEG_VALUES),
                 *(int(examples[k][i]) for k in SEG_FLAGS)] for i in range(n))
    lengths = {k: len(v) for k, v in {**ids, **examples}.items()}
    if set(lengths.values()) != {n}:
        raise ValueError(f"write_predictions: per-example arrays differ in length: {lengths}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)
    return path


class Predictions:
    """A predictions CSV read back: ``ids`` (``ID_COLUMNS`` string arrays), ``task`` and, for classification,
    ``class_names``, ``label`` / ``pred`` (head indices) and ``probs`` (n, C); for segmentation ``values``
    (``SEG_VALUES`` float arrays and ``SEG_FLAGS`` bool arrays)."""

    def __init__(self, path: Path, ids: dict[str, np.ndarray], task: str, class_names: tuple[str, ...] = (),
                 label: np.ndarray | None = None, pred: np.ndarray | None = None, probs: np.ndarray | None = None,
                 values: dict[str, np.ndarray] | None = None):
        self.path, self.ids, self.task, self.class_names = path, ids, task, class_names
        self.label, self.pred, self.probs, self.values = label, pred, probs, values or {}

    def __len__(self) -> int:
        return len(self.ids["example_id"])

    def take(self, order: np.ndarray) -> Predictions:
        """The same results with rows in ``order`` (indices into this file's rows)."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[order]

        return Predictions(self.path, {k: v[order] for k, v in self.ids.items()}, self.task, self.class_names,
                           pick(self.label), pick(self.pred), pick(self.probs),
                           {k: v[order] for k, v in self.values.items()})


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Parse a predictions CSV; FileNotFoundError / ValueError naming the file, row and column at fault."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions file (written by `brain-jax eval`)")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty; expected a header and one row per example")
    header, body = rows[0], rows[1:]
    missing = [c for c in ID_COLUMNS if c not in header]
    probs_cols = [c for c in header if c.startswith(PROB_PREFIX)]
    task = "classification" if probs_cols else "segmentation"
    needed = ["label", "prediction"] if task == "classification" else [*SEG_VALUES, *SEG_FLAGS]
    missing += [c for c in needed if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected a predictions CSV of `brain-jax eval`")
    for i, r in enumerate(body, 2):
        if len(r) != len(header):
            raise ValueError(f"{path}:{i}: {len(r)} fields, the header has {len(header)}")
    col = {c: np.array([r[j] for r in body], dtype=str) for j, c in enumerate(header)}
    ids = {c: col[c] for c in ID_COLUMNS}
    if len(set(ids["example_id"].tolist())) != len(body):
        raise ValueError(f"{path}: example_id repeats; each example must appear once")

    def numbers(c: str) -> np.ndarray:
        try:
            return col[c].astype(np.float64)
        except ValueError:
            raise ValueError(f"{path}: column {c!r} holds a non-number") from None

    if task == "segmentation":
        values = {c: numbers(c) for c in SEG_VALUES} | {c: numbers(c).astype(bool) for c in SEG_FLAGS}
        return Predictions(path, ids, task, values=values)
    names = tuple(c[len(PROB_PREFIX):] for c in probs_cols)
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for c in ("label", "prediction"):
        unknown = sorted(set(col[c].tolist()) - set(names))
        if unknown:
            raise ValueError(f"{path}: column {c!r} names class(es) {unknown} that have no {PROB_PREFIX}* column")
        out[c] = np.array([index[v] for v in col[c].tolist()], np.int64)
    probs = np.stack([numbers(c) for c in probs_cols], axis=1) if body else np.zeros((0, len(names)))
    return Predictions(path, ids, task, names, out["label"], out["prediction"], probs)


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


# ----------------------------------------------------------------------------------------- rendering

COVERAGE_NOTE = ("Percentile cluster-bootstrap intervals run a little narrow at accuracies near 0.99: in "
                 "simulations with clustered test sets their 95% intervals covered the true value 91-92% of "
                 "the time.")


def interval_text(entry: Any, digits: int = 4) -> str:
    """``0.9312 [0.9100, 0.9500]`` from an {"estimate", "low", "high"} entry (the estimate alone without bounds)."""
    if not isinstance(entry, Mapping) or "estimate" not in entry:
        return "" if entry is None else str(entry)
    f = f"{{:.{digits}f}}"
    est = f.format(entry["estimate"]) if entry["estimate"] is not None else "n/a"
    lo, hi = entry.get("low"), entry.get("high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return est
    return f"{est} [{f.format(lo)}, {f.format(hi)}]"


def interval_note(meta: Mapping[str, Any]) -> str:
    """One line saying how an interval block was made."""
    return (f"{100 * meta['confidence']:g}% intervals: {meta['method']} cluster bootstrap, {meta['n_resamples']} "
            f"resamples of {meta['n_units']} {meta['resampled_unit']} units ({meta['n_examples']} examples), "
            f"seed {meta['seed']}")


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

