"""The workdir layout: every file a run keeps, and how each one is read and written.

A workdir is what ``brain-jax train`` creates and every later verb reads::

    WORKDIR/
      config.json        the resolved experiment config (``read_config`` turns it back into a ConfigDict)
      model.json         the built model's architecture: {"model_type", "config"} (dataclass fields)
      checkpoints/       orbax: the latest train states (brain_jax.train.checkpoints)
      best/              orbax: the best state by the config's ``best_metric``
      damaged/           checkpoint steps a resume could not restore (cut short, files lost), kept aside
      metrics.jsonl      one JSON object per logged step and split, each once: {"step", "split", scalars...}
      metrics.json       evaluation results, one section per task and split (``METRICS_SCHEMA``)
      predictions_<split>.csv   per-example results of ``eval`` on a split (``write_predictions``)
      figures/           PNG figures of ``eval`` / ``report`` (``CONFUSION_MATRIX_PNG``, ``OVERLAYS_PNG`` ...)
      report.md          ``brain-jax report``
      predictions/       default output folder of ``brain-jax predict`` (predictions.json, masks, overlays)
      explain/           default output folder of ``brain-jax explain`` (explain.json / .csv, maps, overlays)
      tensorboard/       TensorBoard events of training

This module is the only one that knows these names. It imports nothing of brain_jax above it.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import ml_collections
import numpy as np

CONFIG = "config.json"
MODEL = "model.json"
CHECKPOINTS = "checkpoints"
BEST = "best"
DAMAGED = "damaged"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
FIGURES = "figures"
REPORT = "report.md"
PREDICT_DIR = "predictions"
PREDICTIONS_JSON = "predictions.json"  # predict's results, in its output folder
EXPLAIN_DIR = "explain"
EXPLAIN_JSON, EXPLAIN_CSV = "explain.json", "explain.csv"  # explain's results, in its output folder
ONNX_EXPORT = "onnx/model.onnx"  # export --format onnx default (and model.onnx.json beside it)
PANEL_PNG = "saliency.png"  # eval --explain / the demo's saliency panel, in FIGURES
SALIENCY = "saliency"  # metrics.json section of that panel: its settings and localisation numbers
TENSORBOARD = "tensorboard"
# outputs of the experiment verbs (in a workdir or their --out folder)
COMPOSITION = "composition"  # composition.json / .csv / .md: class x source x split table
COMPARE_JSON, COMPARE_MD = "compare.json", "compare.md"
SUITE_SPEC, SUITE_JSON, SUITE_MD = "suite_spec.json", "suite.json", "suite.md"
LEAKAGE_JSON, LEAKAGE_MD = "leakage.json", "leakage.md"
RUNS = "runs"  # suite / study --out: runs/<model>/<fold|seed>/ and runs/<arm>/, one training workdir each
COMPARE = "compare"  # suite --out: compare/<fold|seed>/, the compare outputs of one test set
# figures: in FIGURES of a workdir / a suite or study --out, or in a compare --out folder itself
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
CONFUSION_MATRIX_NORMALIZED_PNG = "confusion_matrix_normalized.png"
OVERLAYS_PNG = "overlays.png"  # Fig. 10: best / median / worst segmentation case
TRAINING_CURVES_PNG = "training_curves.png"
RECONSTRUCTION_PNG = "reconstruction.png"  # FCMAE pretraining: held-out slices, visible patches, reconstruction
MODEL_COMPARISON_PNG, PER_CLASS_PNG, DIFFERENCES_PNG = "model_comparison.png", "per_class.png", "differences.png"
LEAKAGE_PNG = "leakage.png"
SUITE_PNG = "suite_{metric}.png"  # one forest plot per metric of a suite

# metrics.json schema. 1 (before 2026-11-30): {"<task>": summary, "meta": {...}} with the split in
# meta["<task>_split"]. 2: {"schema_version": 2, "meta": {...}, "<task>": {"<split>": summary}}.
METRICS_SCHEMA = 2
TASKS = ("classification", "segmentation", "fcmae")  # fcmae: a pretraining run's held-out loss


def predictions_csv(workdir: str | os.PathLike, split: str) -> Path:
    """Per-example results of evaluating ``split`` (split strings may hold '+', ':' or '%')."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in split)
    return Path(workdir) / f"predictions_{safe}.csv"


def has_checkpoint(workdir: str | os.PathLike) -> bool:
    """Whether ``workdir`` holds a committed checkpoint step (latest or best; orbax renames a finished
    step's folder into place last)."""
    wd = Path(workdir)
    return any(
        p.is_dir() and p.name.isdigit() for d in (wd / CHECKPOINTS, wd / BEST) if d.is_dir() for p in d.iterdir()
    )


def has_run(workdir: str | os.PathLike) -> bool:
    """Whether ``workdir`` holds a training run (its resolved config)."""
    return (Path(workdir) / CONFIG).is_file()


# ------------------------------------------------------------------------------------------ JSON


def to_jsonable(o: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists (``json.dumps(default=...)``)."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented JSON through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, default=to_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parsed JSON of ``path``; FileNotFoundError / ValueError naming the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(e).split())}); expected {what}") from None


def read_object(path: str | os.PathLike, what: str, *, missing: str) -> dict:
    """A JSON object file: FileNotFoundError ``"{path}: {missing}"`` when absent, ValueError naming the file
    when it is not JSON or not an object (the one reader of config.json, metrics.json and their kin)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {missing}")
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------- config


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-able plain dict of a resolved config."""
    return json.loads(config.to_json_best_effort())


def write_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> Path:
    return write_json(Path(workdir) / CONFIG, config_to_dict(config), sort_keys=True)


def read_config_dict(workdir: str | os.PathLike) -> dict:
    """The saved config as a plain dict (tuples come back as lists)."""
    return read_object(Path(workdir) / CONFIG, "the run's resolved config",
                       missing="missing; expected a workdir written by `brain-jax train`")


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The run's resolved config (``config.json``) as a ConfigDict: what eval and predict both use."""
    d = read_config_dict(workdir)
    try:
        return ml_collections.ConfigDict(d)
    except (ValueError, TypeError, AttributeError, RecursionError) as e:  # e.g. a key with a dot, or __class__
        raise ValueError(f"{Path(workdir) / CONFIG}: not a config ({' '.join(str(e).split())})") from None


# ----------------------------------------------------------------------------------------- model


def write_model_json(workdir: str | os.PathLike, model_type: str, config: Mapping[str, Any]) -> Path:
    return write_json(Path(workdir) / MODEL, {"model_type": model_type, "config": dict(config)})


def read_model_json(workdir: str | os.PathLike) -> dict | None:
    """``{"model_type", "config"}`` of the built model, or None for runs that did not write one."""
    path = Path(workdir) / MODEL
    if not path.is_file():
        return None
    meta = read_json(path, "the model's architecture")
    if not (isinstance(meta, dict) and isinstance(meta.get("model_type"), str)
            and isinstance(meta.get("config"), dict)):
        raise ValueError(f"{path}: expected an object with 'model_type' (a string) and 'config' (an object)")
    return meta


# --------------------------------------------------------------------------------------- metrics


def _upgrade_metrics(data: dict, path: Path) -> dict:
    """Any schema -> the current one (schema 1 kept one summary per task, its split in meta)."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: schema_version {version!r}; expected a whole number from 1 to {METRICS_SCHEMA}")
    if version == METRICS_SCHEMA:
        return data
    if version != 1:
        raise ValueError(f"{path}: schema_version {version!r} is newer than this brain-jax reads ({METRICS_SCHEMA})")
    meta = dict(data.get("meta") or {})
    out: dict[str, Any] = {"schema_version": METRICS_SCHEMA, "meta": meta}
    for task in TASKS:
        if isinstance(data.get(task), dict) and data[task]:
            split = str(meta.get(f"{task}_split") or "test")
            out[task] = {split: data[task]}
    extra = {k: v for k, v in data.items() if k not in (*TASKS, "meta", "schema_version")}
    out.update(extra)
    return out


def read_metrics(workdir: str | os.PathLike) -> dict:
    """metrics.json in the current schema (older files are upgraded on read, not rewritten)."""
    path = Path(workdir) / METRICS
    data = read_object(path, "evaluation results",
                       missing=f"no metrics.json; run `brain-jax eval --workdir {workdir}` first")
    if not isinstance(data.get("meta", {}), dict):
        raise ValueError(f"{path}: 'meta' should be an object")
    data = _upgrade_metrics(data, path)
    for task in TASKS:
        sec = data.get(task, {})
        if not isinstance(sec, dict) or not all(isinstance(v, dict) for v in sec.values()):
            raise ValueError(f"{path}: '{task}' should map split names to result objects")
    return data


def update_metrics(workdir: str | os.PathLike, task: str, split: str, summary: Mapping[str, Any],
                   meta: Mapping[str, Any] | None = None) -> Path:
    """Store ``summary`` as the result of ``task`` on ``split``, keeping every other task and split."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    path = Path(workdir) / METRICS
    data = read_metrics(workdir) if path.is_file() else {"schema_version": METRICS_SCHEMA, "meta": {}}
    data.setdefault(task, {})[split] = dict(summary)
    data["meta"] = {**data.get("meta", {}), **dict(meta or {})}
    return write_json(path, data)


def update_meta(workdir: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Merge ``meta`` into metrics.json's run-level ``meta`` (timings, provenance)."""
    data = read_metrics(workdir)
    data["meta"] = {**data.get("meta", {}), **dict(meta)}
    return write_json(Path(workdir) / METRICS, data)


def headline(metrics: Mapping[str, Any], task: str) -> tuple[str, dict] | None:
    """(split, summary) a report leads with: the test split if evaluated, else the last one written."""
    sec = metrics.get(task) or {}
    if not sec:
        return None
    split = "test" if "test" in sec else list(sec)[-1]
    return split, sec[split]


# ------------------------------------------------------------------------------- predictions CSV
#
# ``predictions_<split>.csv`` (``predictions_csv``): one row per evaluated example, in the order of
# evaluation, written by ``eval`` and read back by ``compare``, ``suite``, ``study`` and ``report``. Every row
# starts with the example's identity (``ID_COLUMNS``):
#
# - ``example_id``: ``dataset:file_name#k``, unique across merged sources and the same in every run;
# - ``dataset`` (``name/config``) and ``source`` (the record's source field, e.g. ``brain_tumor_mri:<root>``);
# - ``cluster_id`` / ``cluster_kind``: the unit a bootstrap resamples: the patient (``patient``), else the
#   group of exact / near copies (``duplicate_group``), else the slice itself (``slice``).
#
# Classification rows add ``label`` and ``prediction`` (class names), ``correct`` (0/1) and one
# ``prob_<class>`` column per class of the head, in head order. Segmentation rows add ``dice``, ``iou``,
# ``hd_mm``, ``hd95_mm`` (mm, a miss scored with the image diagonal), ``true_area_mm2``, ``pred_area_mm2`` and
# the 0/1 flags ``missed_tumour``, ``false_alarm``, ``both_empty``. Floats are written with 9 significant
# digits, which round-trips float32 exactly.

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

    @classmethod
    def concat(cls, parts: Sequence[Predictions], path: str | os.PathLike | None = None) -> Predictions:
        """The rows of several predictions files one after another (e.g. the test folds of a K-fold suite);
        ValueError when their tasks or class heads differ. ``path``: what the result is named by (default: the
        folder that holds every part)."""
        if not parts:
            raise ValueError("Predictions.concat: no predictions to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.task != first.task or p.class_names != first.class_names:
                raise ValueError(f"{p.path} holds {p.task} results with classes {list(p.class_names)}, {first.path} "
                                 f"{first.task} with {list(first.class_names)}: concatenate one task and head")

        def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
            return None if arrays[0] is None else np.concatenate(arrays)

        where = Path(path) if path is not None else Path(os.path.commonpath([str(p.path) for p in parts]))
        ids = {k: np.concatenate([p.ids[k] for p in parts]) for k in first.ids}
        values = {k: np.concatenate([p.values[k] for p in parts]) for k in first.values}
        return cls(where, ids, first.task, first.class_names, cat([p.label for p in parts]),
                   cat([p.pred for p in parts]), cat([p.probs for p in parts]), values)


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


# ----------------------------------------------------------------------------------- metrics log


def log_row(step: int, split: str, scalars: Mapping[str, Any]) -> dict[str, Any]:
    """One metrics.jsonl row: finite numbers as numbers, NaN/Inf as strings, other values dropped."""
    row: dict[str, Any] = {"step": int(step), "split": split}
    for k, v in scalars.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(f):
            row[k] = str(f)
        else:
            row[k] = int(f) if isinstance(v, int) and not isinstance(v, bool) else f
    return row


def log_line(row: Mapping[str, Any]) -> str:
    """One metrics.jsonl line: the row as JSON, newline-terminated (a line without its newline is torn)."""
    return json.dumps(dict(row)) + "\n"


def append_log(workdir: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append one row in a single write: a crash leaves at most the last line cut short."""
    with open(Path(workdir) / METRICS_LOG, "a") as f:
        f.write(log_line(row))


def read_log(workdir_or_file: str | os.PathLike) -> list[dict]:
    """Rows of metrics.jsonl (a workdir or the file itself); errors name the file and line.

    A last line cut short by a crash (no newline, not JSON) is not a row and is left out.
    """
    path = Path(workdir_or_file)
    path = path / METRICS_LOG if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (expected one JSON object per line)")
    return [row for _, row in _rows(path)]


def truncate_log(workdir: str | os.PathLike, last_step: int) -> int:
    """Keep the rows of steps up to ``last_step`` (a run resumed from that checkpoint logs the later steps
    again, so each step stays logged once) and drop a torn last line; returns how many rows were dropped.

    The file is replaced atomically; a missing log is left missing.
    """
    path = Path(workdir) / METRICS_LOG
    if not path.is_file():
        return 0
    rows = [row for _, row in _rows(path)]
    kept = [row for row in rows if row.get("step", 0) <= last_step]
    torn = sum(1 for line in path.read_text().splitlines() if line.strip()) - len(rows)
    if len(kept) == len(rows) and not torn:
        return 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(log_line(row) for row in kept))
    os.replace(tmp, path)
    return len(rows) - len(kept) + torn


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, a torn last one (no newline, not JSON) left out."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text at byte {e.start} (expected one JSON object per line)") from None
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if n == len(lines) and not text.endswith("\n"):
            try:
                json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return  # cut short by a crash mid-write
        yield n, line


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    for n, line in _lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}:{n}: not a JSON object (nested too deeply)") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        yield n, row
