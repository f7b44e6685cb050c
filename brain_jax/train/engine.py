"""The one place that knows NNX split/merge, meshes and the pure train/eval steps.

The model is split once into a graph definition (train-mode and eval-mode copies) and plain array
trees; the steps are pure functions under ``jax.jit`` with the train state donated, the batch sharded
on the mesh's ``data`` axis and the state replicated. Dropout keys come from (seed, step) inside the
step, so no RNG state is ever checkpointed.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from brain_jax import metrics
from brain_jax.models import fcmae
from brain_jax.models.common import resize_bilinear
from input_pipeline.augment import StepInputs, prepare
from brain_jax.train import losses
from brain_jax.train.optim import ema_update

DATA_AXIS = "data"
# Keys of a pipeline batch that go to the device (anything else stays on the host).
BATCH_KEYS = ("image", "label", "mask", "has_mask", "spacing_mm", "valid", "index")


# --------------------------------------------------------------------------- mesh and global arrays


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """1-D ``data`` mesh over all devices (or the first ``num_devices``, for tests on fake devices)."""
    devices = jax.devices()
    if num_devices and num_devices > 0:
        if num_devices > len(devices):
            raise ValueError(f"config field mesh.num_devices={num_devices}, but only {len(devices)} devices exist")
        if jax.process_count() > 1:
            raise ValueError("config field mesh.num_devices must be 0 (all devices) in multi-process runs")
        devices = devices[:num_devices]
    # Auto axis types: shardings are propagated by the compiler (GSPMD), so model code needs no
    # sharding annotations (explicit mode would reject e.g. reshapes of batch-sharded activations).
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_multiple(mesh: jax.sharding.Mesh) -> int:
    """A per-host batch must be a multiple of this (the mesh devices this process owns)."""
    return max(1, sum(d.process_index == jax.process_index() for d in mesh.devices.flat))


def pad_local_batch(batch: Mapping[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Pad a host batch with invalid examples (``valid=False``) to a multiple of ``multiple`` rows."""
    out = {k: np.asarray(v) for k, v in batch.items() if k in BATCH_KEYS}
    n = len(out["valid"]) if "valid" in out else len(next(iter(out.values())))
    if "valid" not in out:
        out["valid"] = np.ones((n,), bool)
    pad = (-n) % multiple
    if pad:
        out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
    return out


def to_global(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Per-host numpy batch -> global arrays sharded on the data axis (one host or many)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


# --------------------------------------------------------------------------- model split


@dataclasses.dataclass
class ModelParts:
    """A model split once: graph definitions for train/eval mode plus array trees."""

    graphdef_train: Any
    graphdef_eval: Any
    params: Any
    batch_stats: Any
    rest: Any  # RNG streams and other non-trained variables; reseeded per step, never checkpointed
    head_paths: tuple[str, ...]
    num_classes: int

    def merge(self, params: Any, batch_stats: Any | None = None, *, train: bool = False) -> nnx.Module:
        graphdef = self.graphdef_train if train else self.graphdef_eval
        bs = self.batch_stats if batch_stats is None else batch_stats
        return nnx.merge(graphdef, params, bs, self.rest)


def split_model(model: nnx.Module) -> ModelParts:
    model.train()
    graphdef_train = nnx.graphdef(model)
    model.eval()
    graphdef_eval, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    num_classes = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
    return ModelParts(
        graphdef_train=graphdef_train,
        graphdef_eval=graphdef_eval,
        params=nnx.as_pure(params),
        batch_stats=nnx.as_pure(batch_stats),
        rest=nnx.as_pure(rest),
        head_paths=tuple(getattr(model, "head_paths", ())),
        num_classes=num_classes,
    )


def tree_paths(tree: Any) -> list[str]:
    """Dotted path of every leaf of an (as_pure) NNX state, in flatten order."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [".".join(_key_str(k) for k in path) for path, _ in leaves]


def _key_str(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def tree_from_paths(template: Any, values: Mapping[str, Any]) -> Any:
    """A tree shaped like ``template`` whose leaves are ``values[dotted path]``."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    return jax.tree_util.tree_unflatten(treedef, [values[p] for p in tree_paths(template)])


# --------------------------------------------------------------------------- train state


def init_train_state(parts: ModelParts, tx: optax.GradientTransformation, *, ema: bool) -> dict[str, Any]:
    """Everything that is checkpointed (besides the data iterator): arrays only, no RNG keys."""
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": parts.params,
        "batch_stats": parts.batch_stats,
        "opt_state": tx.init(parts.params),
        # first step whose loss was not finite (-1: none); once set, the state is frozen
        "bad_step": jnp.full((), -1, jnp.int32),
    }
    if ema:
        # a copy: the EMA must not share buffers with the params (both are donated to the step)
        state["ema"] = jax.tree.map(lambda p: jnp.array(p, dtype=jnp.float32, copy=True), parts.params)
    return state


def _reseed_policy(path: tuple, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    # A distinct stream per module (fold in a hash of its path) so layers never share a dropout mask.
    del shape
    return jax.random.fold_in(key, zlib.crc32(repr(path).encode()) & 0x7FFFFFFF)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    task: str  # "classification" | "segmentation" | "fcmae"
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] = ()
    dice_weight: float = 0.0
    mask_ratio: float = 0.0  # fcmae: the share of 32-px patches hidden (the model's FCMAEConfig.mask_ratio)

    @classmethod
    def from_config(cls, task: str, loss: ml_collections.ConfigDict, *, mask_ratio: float = 0.0) -> "LossConfig":
        return cls(
            task=task,
            label_smoothing=float(loss.label_smoothing),
            class_weights=tuple(float(w) for w in loss.class_weights),
            dice_weight=float(loss.dice_weight),
            mask_ratio=float(mask_ratio),
        )


# FCMAE's held-out masks: the keys of this "step" (never reached by training) and each example's position in
# the evaluation batch, so every evaluation of a run hides the same patches and its losses compare across steps.
EVAL_MASK_STEP = 0x7FFFFFFF


def fcmae_mask(batch: Mapping[str, jax.Array], seed: int, step: Any, ratio: float) -> jax.Array:
    """(B, H/32, W/32) bool hidden patches of a prepared batch: keys of (seed, step, each example's ``index``,
    its position in the global batch), so a resumed or multi-process run draws the same masks."""
    images = batch["image"]
    index = batch["index"] if "index" in batch else jnp.arange(images.shape[0])
    return fcmae.random_mask(fcmae.mask_keys(seed, step, index), tuple(images.shape[1:3]), ratio)


def prepare_batch(local: Mapping[str, np.ndarray], inputs: StepInputs) -> dict[str, jax.Array]:
    """A host batch as the loader sends it -> model input on the default device, without augmentation."""
    return prepare({k: jnp.asarray(v) for k, v in local.items() if k in BATCH_KEYS}, inputs)


def fcmae_errors(model: nnx.Module, batch: Mapping[str, jax.Array], mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pred, (B, L) per-patch squared error) of FCMAE on a prepared batch (labels are never read)."""
    pred = model(batch["image"], mask)
    return pred, fcmae.patch_errors(batch["image"], pred, model.config.norm_pix_loss)


def counted(batch: Mapping[str, Any], task: str) -> Any:
    """The rows a loss or a metric counts: ``valid`` (not padding) and, for segmentation, ``has_mask``.

    The one place this rule is written; it works on host (numpy) and device (jnp) batches alike.
    """
    ok = batch["valid"]
    if task == "segmentation" and "has_mask" in batch:
        ok = ok & batch["has_mask"]
    return ok


def compute_loss(logits: jax.Array, batch: Mapping[str, jax.Array], lc: LossConfig) -> tuple[jax.Array, dict]:
    """Task loss over the counted examples of a batch (``counted``)."""
    valid = counted(batch, lc.task)
    if lc.task == "segmentation":
        masks = batch["mask"]
        logits = resize_bilinear(logits, masks.shape[1:3]).astype(jnp.float32)
        ce = losses.cross_entropy(
            logits, masks, valid[:, None, None], label_smoothing=lc.label_smoothing, class_weights=lc.class_weights
        )
        loss = ce
        aux = {"ce": ce}
        if lc.dice_weight > 0:
            dl = losses.soft_dice_loss(logits, masks, valid)
            loss = loss + lc.dice_weight * dl
            aux["dice_loss"] = dl
        return loss, aux
    labels = batch["label"]
    loss = losses.cross_entropy(
        logits, labels, valid, label_smoothing=lc.label_smoothing, class_weights=lc.class_weights
    )
    correct = (jnp.argmax(logits, -1) == labels) & valid
    acc = jnp.sum(correct) / jnp.maximum(jnp.sum(valid), 1)
    return loss, {"accuracy": acc}


def make_train_step(
    parts: ModelParts,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    lc: LossConfig,
    *,
    seed: int,
    inputs: StepInputs,
    ema_decay: float = 0.0,
) -> Callable:
    """``step(state, batch, rest) -> (state, metrics)``: pure; a non-finite loss freezes the state.

    ``batch`` is the loader's (uint8 images): ``inputs`` turns it into model input inside the step,
    augmented with keys of (inputs.seed, the state's step, each example's ``index``)."""
    base_key = jax.random.key(seed)

    def loss_fn(params, batch_stats, rest, batch, key):
        model = nnx.merge(parts.graphdef_train, params, batch_stats, rest)
        if lc.task == "fcmae":  # masked-patch MSE; padded rows (valid=False) excluded, labels ignored
            pred = model(batch["image"], batch["fcmae_mask"])
            loss = model.loss(batch["image"], pred, batch["fcmae_mask"], example_mask=batch["valid"])
            aux = {}
        else:
            logits = model(batch["image"])
            loss, aux = compute_loss(logits, batch, lc)
        new_bs = nnx.as_pure(nnx.state(model, nnx.BatchStat))
        return loss, (new_bs, aux)

    def seeded(rest, key):
        # Reseed outside of grad: NNX refuses to mutate variables of an outer trace level.
        model = nnx.merge(parts.graphdef_train, parts.params, parts.batch_stats, rest)
        nnx.reseed(model, policy=_reseed_policy, dropout=key)
        return nnx.as_pure(nnx.split(model, nnx.Param, nnx.BatchStat, ...)[3])

    def step(state, batch, rest):
        batch = prepare(batch, inputs, state["step"])
        if lc.task == "fcmae":
            batch["fcmae_mask"] = fcmae_mask(batch, seed, state["step"], lc.mask_ratio)
        key = jax.random.fold_in(base_key, state["step"])
        rest = seeded(rest, key)
        (loss, (new_bs, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], rest, batch, key
        )
        updates, new_opt = tx.update(grads, state["opt_state"], state["params"])
        new_params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & (state["bad_step"] < 0)
        new = {"params": new_params, "batch_stats": new_bs, "opt_state": new_opt}
        if "ema" in state:
            new["ema"] = ema_update(state["ema"], new_params, ema_decay)
        keep = {k: state[k] for k in new}
        chosen = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, keep)
        out = dict(state, **chosen)
        out["step"] = state["step"] + 1
        out["bad_step"] = jnp.where(ok | (state["bad_step"] >= 0), state["bad_step"], state["step"])
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]), **aux}
        return out, metrics

    return step


def make_forward(parts: ModelParts) -> Callable:
    """``forward(params, batch_stats, rest, images) -> float32 logits`` in eval mode (pure; jit it)."""

    def forward(params, batch_stats, rest, images):
        model = nnx.merge(parts.graphdef_eval, params, batch_stats, rest)
        return model(images).astype(jnp.float32)

    return forward


def make_eval_step(parts: ModelParts, task: str, inputs: StepInputs | None, *, seed: int = 0,
                   mask_ratio: float = 0.0) -> Callable:
    """``eval_step(params, batch_stats, rest, batch) -> {"stats": ..., "pred": ...}``.

    ``batch`` is the loader's (uint8 images, turned into model input by ``inputs`` without augmentation),
    or, with ``inputs`` None, already model input. ``stats`` are brain_jax.metrics sufficient statistics
    of the batch (padded examples excluded), ``pred`` the predicted labels (segmentation: label maps at the
    mask's resolution). FCMAE (``task`` "fcmae"): the masked-patch loss's sums under the fixed masks of
    ``EVAL_MASK_STEP`` (``seed``, ``mask_ratio``), ``pred`` each example's mean error over its hidden patches.
    """
    forward = make_forward(parts)
    if inputs is not None and inputs.augment is not None:
        raise ValueError("evaluation does no augmentation: pass StepInputs(augment=None)")

    def eval_step(params, batch_stats, rest, batch):
        if inputs is not None:
            batch = prepare(batch, inputs)
        ok = counted(batch, task)
        if task == "fcmae":
            mask = fcmae_mask(batch, seed, EVAL_MASK_STEP, mask_ratio)
            model = nnx.merge(parts.graphdef_eval, params, batch_stats, rest)
            _, err = fcmae_errors(model, batch, mask)
            hidden = mask.reshape(mask.shape[0], -1) & ok[:, None]
            per_image = jnp.sum(jnp.where(hidden, err, 0.0), axis=1) / jnp.maximum(jnp.sum(hidden, axis=1), 1)
            stats = {"error_sum": jnp.sum(jnp.where(hidden, err, 0.0)), "hidden_patches": jnp.sum(hidden),
                     "num_examples": jnp.sum(ok)}
            return {"stats": stats, "pred": per_image}
        logits = forward(params, batch_stats, rest, batch["image"])
        if task == "segmentation":
            logits = resize_bilinear(logits, batch["mask"].shape[1:3])
            pred = jnp.argmax(logits, -1).astype(jnp.int32)
            stats = metrics.segmentation_batch_stats(
                pred, batch["mask"], batch["spacing_mm"], ok, num_classes=logits.shape[-1]
            )
            return {"stats": stats, "pred": pred}
        stats = metrics.classification_batch_stats(logits, batch["label"], ok, logits.shape[-1])
        return {"stats": stats, "pred": jnp.argmax(logits, -1).astype(jnp.int32)}

    return eval_step


def jit_train_step(step: Callable, mesh: jax.sharding.Mesh, state: Any) -> Callable:
    """Jit with the state donated and kept replicated; batch shardings follow the inputs."""
    repl = replicated(mesh)
    state_sh = jax.tree.map(lambda _: repl, state)
    return jax.jit(step, donate_argnums=(0,), out_shardings=(state_sh, repl))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Host values (the same on every process) -> arrays replicated over the whole mesh."""
    repl = replicated(mesh)
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: jax.device_put(x, repl), tree)

    def put(x):
        # device_put cannot target other hosts' devices: build each global array from local copies.
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            arr = jax.make_array_from_callback(data.shape, repl, lambda idx: data[idx])
            return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, repl, lambda idx: host[idx])

    return jax.tree.map(put, tree)
