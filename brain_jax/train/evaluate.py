"""Evaluation over a whole split: sufficient statistics per batch (in jit), reduced on the host.

One door: ``Evaluator`` (a built model on a mesh) and ``run_split`` (one pass over a split with any
compiled eval step; the trainer's periodic evaluation calls it with its own step). The rows counted are
``engine.counted``'s. Writes nothing: the ``eval`` verb (``brain_jax.app.evaluate``) stores results and figures.

Per-example results come out in the accumulators' order: batch after batch, within a batch the rows of
the global arrays, i.e. process 0's valid rows, then process 1's, and so on. The host-side identity of
each example (``ID_KEYS``, strings the loader puts in evaluation batches) is collected in that same
order: each process keeps its own valid rows and, on several processes, they are all-gathered and
interleaved batch by batch, so row i of ``ids`` names row i of ``examples``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from brain_jax import metrics
from brain_jax.models import fcmae
from brain_jax.train import engine
from input_pipeline.augment import StepInputs

# Host-side keys of an evaluation batch (input_pipeline.make_loader, train=False) naming each example.
ID_KEYS = ("example_id", "cluster_id", "cluster_kind", "source", "dataset")


@dataclasses.dataclass
class SplitResult:
    """One pass over a split: the summary, a few samples for figures, and the per-example results.

    ``examples``: the accumulator's ``examples()`` (classification: label, pred, probs; segmentation:
    dice, iou, hd_mm, hd95_mm, areas, flags), one row per counted example. ``ids``: ``ID_KEYS`` string
    arrays in the same order, or None when the batches carry no ids (e.g. a test's fake data).
    """

    summary: dict[str, Any]
    samples: dict[str, list]
    examples: dict[str, np.ndarray]
    ids: dict[str, np.ndarray] | None


class ReconstructionAccumulator:
    """FCMAE's held-out loss over a split: summed hidden-patch errors / hidden patches (never a mean of batch
    means), and each counted example's own mean error (``examples()["mse"]``, in evaluation order)."""

    def __init__(self) -> None:
        self.error_sum, self.hidden, self.n = 0.0, 0, 0
        self._per_image: list[np.ndarray] = []

    def update(self, stats: dict[str, Any]) -> None:
        host = {k: np.asarray(metrics.to_host(v)) for k, v in stats.items()}
        self.error_sum += float(host["error_sum"])
        self.hidden += int(host["hidden_patches"])
        self.n += int(host["num_examples"])

    def add_examples(self, per_image: np.ndarray) -> None:
        self._per_image.append(np.asarray(per_image, np.float64))

    def result(self) -> dict[str, Any]:
        return {"loss": self.error_sum / max(self.hidden, 1), "num_examples": self.n, "hidden_patches": self.hidden}

    def examples(self) -> dict[str, np.ndarray]:
        return {"mse": np.concatenate(self._per_image) if self._per_image else np.zeros(0)}


def _counted(local: dict[str, np.ndarray], task: str) -> np.ndarray:
    """``engine.counted`` of a host batch, as a flat bool array."""
    return np.asarray(engine.counted(local, task), bool).reshape(-1)


def run_split(
    eval_step: Callable,
    params: Any,
    batch_stats: Any,
    rest: Any,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    mesh: jax.sharding.Mesh,
    task: str,
    class_names: Sequence[str],
    keep_samples: int = 0,
    keep_examples: bool = False,
) -> SplitResult:
    """One pass over ``batches``: summary, samples and (with ``keep_examples``) per-example results and ids.

    Summary: classification -> ``classification_summary`` fields, confusion matrix, ECE, per-class
    table; segmentation -> mean Dice / IoU / HD / HD95 (mm, from each example's spacing), mIoU and
    the miss counts. Samples: up to ``keep_samples`` valid examples with their predictions (images,
    masks, preds, labels, spacing_mm) for figures. Segmentation always keeps its per-case values.
    """
    multiple = engine.local_batch_multiple(mesh)
    num_classes = len(class_names)
    if task == "segmentation":
        acc: Any = metrics.SegmentationAccumulator(num_classes)
    elif task == "fcmae":
        acc = ReconstructionAccumulator()
    else:
        acc = metrics.ClassificationAccumulator(num_classes, class_names=list(class_names), keep_examples=keep_examples)
    samples: dict[str, list] = {"images": [], "masks": [], "preds": [], "labels": [], "spacing_mm": []}
    ids: dict[str, list[np.ndarray]] | None = {k: [] for k in ID_KEYS} if keep_examples else None
    counts: list[int] = []
    n_batches = 0
    for local in batches:
        if ids is not None:
            if all(k in local for k in ID_KEYS):
                ok = _counted(local, task)
                for k in ID_KEYS:
                    ids[k].append(np.asarray(local[k]).astype(str)[ok])
                counts.append(int(ok.sum()))
            else:
                ids = None  # batches without ids (fake data): results stay unnamed
        local = engine.pad_local_batch(local, multiple)
        out = eval_step(params, batch_stats, rest, engine.to_global(local, mesh))
        acc.update(out["stats"])
        if task == "fcmae" and keep_examples and jax.process_count() == 1:
            acc.add_examples(metrics.to_host(out["pred"])[_counted(local, task)])
        n_batches += 1
        if len(samples["images"]) < keep_samples:
            _keep(samples, local, metrics.to_host(out["pred"]), keep_samples, task)
    if n_batches == 0:
        raise ValueError("evaluation split yielded no batches")
    summary = acc.result()
    if task == "classification":
        summary["per_class"] = {k: summary[k] for k in ("precision", "recall", "f1", "support") if k in summary}
    examples = acc.examples() if keep_examples or task == "segmentation" else {}
    if task == "fcmae" and jax.process_count() > 1:
        examples = {}  # rows of all processes' padding are mixed in: per-example values on one process only
    named = None
    if ids is not None and keep_examples and examples:
        named = gather_ids(np.asarray(counts, np.int64), {k: _concat(v) for k, v in ids.items()})
        n = len(next(iter(examples.values())))
        if len(named["example_id"]) != n:
            raise ValueError(f"{len(named['example_id'])} example ids for {n} evaluated examples: the batches' "
                             "id arrays do not follow their valid rows")
    return SplitResult(summary, samples, examples, named)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, str)


def _keep(samples: dict[str, list], local: dict[str, np.ndarray], pred: np.ndarray, limit: int, task: str) -> None:
    # ``pred`` is global; on one host it lines up with ``local``. On many hosts keep process 0's rows.
    n_local = len(local["valid"])
    offset = jax.process_index() * n_local if len(pred) > n_local else 0
    ok = _counted(local, task)
    for i in range(n_local):
        if len(samples["images"]) >= limit:
            return
        if not ok[i]:
            continue
        samples["images"].append(np.asarray(local["image"][i]))
        samples["masks"].append(np.asarray(local["mask"][i]) if "mask" in local else None)
        samples["preds"].append(np.asarray(pred[offset + i]))
        samples["labels"].append(int(local["label"][i]) if "label" in local else -1)
        samples["spacing_mm"].append(np.asarray(local["spacing_mm"][i]) if "spacing_mm" in local else None)


# --------------------------------------------------------------------------- ids across processes


def encode_strings(values: np.ndarray, width: int | None = None) -> np.ndarray:
    """(n,) strings -> (n, width) uint8 UTF-8 bytes, zero-padded (NUL never occurs inside UTF-8 text)."""
    raw = np.char.encode(np.asarray(values, str), "utf-8") if len(values) else np.zeros(0, "S1")
    w = max(1, raw.dtype.itemsize) if width is None else width
    return np.ascontiguousarray(raw.astype(f"S{w}")).view(np.uint8).reshape(len(values), w)


def decode_strings(codes: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_strings``."""
    codes = np.ascontiguousarray(codes, np.uint8)
    if codes.shape[0] == 0:
        return np.zeros(0, str)
    return np.char.decode(codes.view(f"S{codes.shape[1]}").reshape(-1), "utf-8").astype(str)


def interleave(counts: np.ndarray, rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows in global order from per-process rows: ``counts[p, b]`` rows of batch b came from process p,
    and batch b's global rows are process 0's, then process 1's, and so on."""
    counts = np.asarray(counts, np.int64)
    starts = np.cumsum(counts, axis=1) - counts  # first row of batch b within process p's rows
    order = [(p, s, c) for b in range(counts.shape[1]) for p, (s, c) in enumerate(zip(starts[:, b], counts[:, b]))]
    return {k: _concat([rows[p][k][s:s + c] for p, s, c in order]) for k in rows[0]}


def gather_ids(counts: np.ndarray, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's id rows (``counts[b]`` per batch) -> every process's, in global order (a collective:
    every process calls it)."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    keys = list(local)
    widths = [max(1, np.char.encode(local[k], "utf-8").dtype.itemsize if len(local[k]) else 1) for k in keys]
    header = multihost_utils.process_allgather(np.array([len(local[keys[0]]), *widths], np.int64))
    all_counts = multihost_utils.process_allgather(counts)
    n_max, w_max = int(header[:, 0].max()), header[:, 1:].max(axis=0)
    rows: list[dict[str, np.ndarray]] = [{} for _ in range(jax.process_count())]
    for j, k in enumerate(keys):
        mine = np.zeros((n_max, int(w_max[j])), np.uint8)
        mine[:len(local[k])] = encode_strings(local[k], int(w_max[j]))
        everyone = multihost_utils.process_allgather(mine)
        for p in range(jax.process_count()):
            rows[p][k] = decode_strings(everyone[p, :int(header[p, 0])])
    return interleave(all_counts, rows)


# --------------------------------------------------------------------------- a built model


def scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a summary (for metrics.jsonl / TensorBoard)."""
    return {k: float(v) for k, v in summary.items() if isinstance(v, (int, float, np.floating, np.integer))
            and not isinstance(v, bool)}


class Evaluator:
    """A built model (eval mode) ready to score splits on a mesh: ``split`` for a whole pass, ``cases`` to
    fetch a few chosen examples with their predictions (figures)."""

    def __init__(self, model: Any, *, task: str, class_names: Sequence[str], inputs: StepInputs,
                 mesh: jax.sharding.Mesh | None = None, seed: int = 0):
        """``inputs``: the mean / std that turn the loader's uint8 images into model input; ``seed``: the run's
        (FCMAE draws its fixed held-out masks from it)."""
        parts = engine.split_model(model)
        self.mesh = mesh if mesh is not None else engine.make_mesh()
        self.task, self.class_names = task, tuple(class_names)
        ratio = float(getattr(getattr(model, "config", None), "mask_ratio", 0.0))
        self.step = jax.jit(engine.make_eval_step(parts, task, inputs, seed=seed, mask_ratio=ratio))
        self.state = tuple(engine.replicate(t, self.mesh) for t in (parts.params, parts.batch_stats, parts.rest))

    def split(self, batches: Iterable[dict[str, np.ndarray]], *, keep_samples: int = 0,
              keep_examples: bool = True) -> SplitResult:
        return run_split(self.step, *self.state, batches, mesh=self.mesh, task=self.task, class_names=self.class_names,
                         keep_samples=keep_samples, keep_examples=keep_examples)

    def cases(self, batches: Iterable[dict[str, np.ndarray]], positions: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Image, mask, prediction, label and spacing of the examples at ``positions`` (rows of ``split``'s
        per-example results; the same batches in the same order). Runs the model only on the batches that
        hold one; every process must call it (global arrays are gathered)."""
        wanted, out, seen = set(int(p) for p in positions), {}, 0
        multiple = engine.local_batch_multiple(self.mesh)
        for local in batches:
            if len(out) == len(wanted):
                break
            g = engine.to_global(engine.pad_local_batch(local, multiple), self.mesh)
            rows = np.flatnonzero(metrics.to_host(jnp.asarray(engine.counted(g, self.task))))
            hits = [(seen + j, r) for j, r in enumerate(rows) if seen + j in wanted]
            seen += len(rows)
            if not hits:
                continue
            pred = metrics.to_host(self.step(*self.state, g)["pred"])
            host = {k: metrics.to_host(g[k]) for k in ("image", "mask", "label", "spacing_mm") if k in g}
            for pos, r in hits:
                out[pos] = {k: v[r] for k, v in host.items()} | {"pred": pred[r]}
        return out


# --------------------------------------------------------------------------- FCMAE reconstructions


def reconstructions(model: Any, batches: Iterable[dict[str, np.ndarray]], inputs: StepInputs, *, seed: int,
                    limit: int = 6) -> dict[str, np.ndarray]:
    """The first ``limit`` counted examples of a split through an FCMAE under the evaluation's fixed masks
    (``engine.EVAL_MASK_STEP``; the same masks as ``run_split``'s held-out loss), on the host (one process).

    Returns ``image`` (N, S, S) in [0, 1], ``hidden`` (N, S/32, S/32) bool, ``reconstruction`` (N, S, S) in
    [0, 1] (visible patches as given, hidden ones predicted; with ``norm_pix_loss`` each predicted patch is
    brought back with its true patch's mean and standard deviation, as MAE visualisations do) and ``mse`` (N,)
    each image's mean error over its hidden patches (the loss's per-image term).
    """
    cfg = model.config
    parts = engine.split_model(model)
    run = jax.jit(lambda params, batch_stats, batch: _reconstruct(parts.merge(params, batch_stats), batch, cfg, seed))
    out: dict[str, list] = {"image": [], "hidden": [], "reconstruction": [], "mse": []}
    for local in batches:
        x, mask, recon, mse = (np.asarray(a) for a in run(parts.params, parts.batch_stats,
                                                          engine.prepare_batch(local, inputs)))
        # model input -> [0, 1] intensity through channel 0's mean / std (the three channels are equal)
        to01 = lambda a: np.clip(a[..., 0] * inputs.std[0] + inputs.mean[0], 0, 1)  # noqa: E731
        ok = np.asarray(engine.counted(local, "fcmae"), bool).reshape(-1)
        for k, v in (("image", to01(x)), ("hidden", mask), ("reconstruction", to01(recon)), ("mse", mse)):
            out[k].extend(list(v[ok]))
        if len(out["mse"]) >= limit:
            break
    if not out["mse"]:
        raise ValueError("evaluation split yielded no examples to reconstruct")
    return {k: np.stack(v[:limit]) for k, v in out.items()}


def _reconstruct(model: Any, batch: dict[str, jax.Array], cfg: Any, seed: int) -> tuple[jax.Array, ...]:
    """(input, hidden mask, reconstruction in model-input space, per-image hidden-patch MSE) of one batch."""
    mask = engine.fcmae_mask(batch, seed, engine.EVAL_MASK_STEP, cfg.mask_ratio)
    pred, err = engine.fcmae_errors(model, batch, mask)
    x = batch["image"].astype(jnp.float32)
    target = fcmae.patchify(x)
    p = pred.reshape(target.shape)
    if cfg.norm_pix_loss:  # undo the per-patch normalisation with the true patch's statistics
        mean = jnp.mean(target, axis=-1, keepdims=True)
        std = jnp.sqrt(jnp.var(target, axis=-1, keepdims=True, ddof=1) + 1e-6)
        p = p * std + mean
    hidden = mask.reshape(mask.shape[0], -1)
    mixed = jnp.where(hidden[..., None], p, target)
    grid = tuple(mask.shape[1:3])
    recon = fcmae.unpatchify(mixed, grid, x.shape[-1])
    mse = jnp.sum(jnp.where(hidden, err, 0.0), 1) / jnp.maximum(jnp.sum(hidden, 1), 1)
    return x, mask, recon, mse
