"""Build the model a config names: fresh, grafted onto pretrained weights, or restored from a workdir."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

import input_pipeline
from brain_jax import models, workdir
from brain_jax.convert import from_hf
from brain_jax.convert.native import is_native_dir, load_native
from brain_jax.models.weights import abstract, assign
from brain_jax.train import checkpoints

SEG_CLASS_NAMES = ("background", "tumour")
# The one table of dtype names a config or a command line may use.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str, field: str = "model.dtype") -> Any:
    if name not in DTYPES:
        raise ValueError(f"{field}: {name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
    return dtype_of(str(config.model.dtype), "config field model.dtype")


# --------------------------------------------------------------------------- validation


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fail early, naming the field, on an unknown model / variant / task / dtype / batch size."""
    name = config.model.name
    if name not in models.NAMES:
        raise ValueError(f"config field model.name: unknown model {name!r}; expected one of {', '.join(models.NAMES)}")
    variants = models.variants(name)
    if config.model.variant not in variants:
        raise ValueError(
            f"config field model.variant: unknown {name} variant {config.model.variant!r}; "
            f"expected one of {', '.join(variants)}"
        )
    task = config.data.task
    if task not in ("classification", "segmentation"):
        raise ValueError(f"config field data.task: {task!r}; expected 'classification' or 'segmentation'")
    if (name == "segformer") != (task == "segmentation"):
        raise ValueError(
            f"config field data.task={task!r} does not fit model.name={name!r} "
            "(segformer does segmentation, the others classification)"
        )
    compute_dtype(config)
    if config.batch_size <= 0:
        raise ValueError(f"config field batch_size must be positive, got {config.batch_size}")


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The names of the model's outputs, in head order: the one place they are decided."""
    if config.data.task == "segmentation":
        return SEG_CLASS_NAMES
    return input_pipeline.class_names(config.data)


def num_classes(config: ml_collections.ConfigDict) -> int:
    return len(class_names(config))


# --------------------------------------------------------------------------- models


def load_pretrained(src: str, dtype: Any) -> nnx.Module:
    """``config.init_from``: a training workdir, a native converted folder, or an HF folder / Hub id."""
    path = Path(src).expanduser()
    if path.is_dir() and workdir.has_run(path) and (path / workdir.MODEL).is_file():
        return load_model_from_workdir(path, dtype)
    if path.is_dir() and is_native_dir(path):
        return load_native(path, dtype=dtype)
    return from_hf(str(src), dtype=dtype)


def _checked_overrides(cfg: Any, kwargs: dict, where: str) -> dict:
    fields = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(kwargs) - fields)
    if bad:
        raise ValueError(f"{where}: unknown field(s) {bad} for {type(cfg).__name__}; valid: {sorted(fields)}")
    return dict(kwargs)


def head_variables(model: nnx.Module) -> list[str]:
    """Dotted paths of every weight under the model's ``head_paths`` (re-initialised when grafting)."""
    head = tuple(getattr(model, "head_paths", ()))
    return [p for p in models.weights.model_variables(model)
            if any(p == h or p.startswith(h + ".") for h in head)]


def graft(model: nnx.Module, pretrained: nnx.Module, *, fresh_head: bool) -> list[str]:
    """Copy every weight of ``pretrained`` into ``model``; with ``fresh_head`` the head keeps its init.

    All-or-nothing (``models.weights.assign``): one error lists every missing, unused or mis-shaped
    weight. Returns the paths left at their fresh initialisation.
    """
    fresh = head_variables(model) if fresh_head else []
    theirs = {p: v.get_value() for p, v in models.weights.model_variables(pretrained).items()}
    if fresh_head:  # the old head's weights have no place in the new model
        theirs = {p: a for p, a in theirs.items() if p not in set(head_variables(pretrained))}
    assign(model, theirs, source="pretrained model", fresh=fresh)
    return fresh


def _kwargs(config: ml_collections.ConfigDict) -> dict:
    kw = config.model.kwargs
    return dict(kw.to_dict()) if hasattr(kw, "to_dict") else dict(kw)


def create_model(config: ml_collections.ConfigDict, *, dtype: Any | None = None, with_init: bool = True,
                 seed: int | None = None) -> nnx.Module:
    """The model a config describes; with ``with_init`` and ``init_from`` set, on pretrained weights.

    From a pretrained checkpoint the architecture is the checkpoint's own (with ``model.kwargs``, e.g.
    drop-path, applied) and the classification/segmentation head is re-initialised when the label
    count differs.
    """
    dtype = compute_dtype(config) if dtype is None else dtype
    seed = int(config.seed) if seed is None else seed
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    names = class_names(config)
    kwargs = _kwargs(config)
    init_from = str(config.get("init_from", "") or "")
    if not (with_init and init_from):
        return models.create(config.model.name, config.model.variant, len(names), dtype=dtype, rngs=rngs, **kwargs)
    pretrained = load_pretrained(init_from, dtype)
    ptype = pretrained.config.model_type
    if ptype != config.model.name:
        raise ValueError(
            f"config field init_from={init_from!r} holds a {ptype} model, but model.name is {config.model.name!r}"
        )
    changes = _checked_overrides(pretrained.config, kwargs, "config field model.kwargs")
    fresh_head = pretrained.config.num_labels != len(names)
    if fresh_head:
        changes["num_labels"] = len(names)
        if "label_names" in {f.name for f in dataclasses.fields(pretrained.config)}:
            changes["label_names"] = names
    cfg = dataclasses.replace(pretrained.config, **changes)
    model = models.module_for(ptype).from_config(cfg, dtype=dtype, rngs=rngs)
    graft(model, pretrained, fresh_head=fresh_head)
    return model


def model_from_json(meta: dict, dtype: Any) -> nnx.Module:
    """A freshly initialised model of the architecture ``model.json`` describes."""
    mod = models.module_for(meta["model_type"])
    return mod.from_config(mod.config_from_dict(dict(meta["config"])), dtype=dtype,
                           rngs=nnx.Rngs(params=0, dropout=1))


def load_model_from_workdir(wd: str | Path, dtype: Any = jnp.float32, *, which: str = "best") -> nnx.Module:
    """The trained model of a workdir (best checkpoint, else latest), in eval mode.

    The architecture comes from ``model.json`` (runs written before it existed: from ``config.json``);
    the weights are the EMA ones when the run kept them. Built without random init.
    """
    wd = Path(wd)
    config = workdir.read_config(wd)
    meta = workdir.read_model_json(wd)
    if meta is not None:
        model = abstract(lambda: model_from_json(meta, dtype), where=str(wd / workdir.MODEL))
    else:
        model = abstract(lambda: create_model(config, dtype=dtype, with_init=False), where=str(wd / workdir.CONFIG))
    flat, step, src = checkpoints.load_weights(wd, which=which, best_mode=str(config.get("best_mode", "max")))
    weights = "ema." if any(k.startswith("ema.") for k in flat) else "params."
    arrays = {k.split(".", 1)[1]: a for k, a in flat.items() if k.startswith((weights, "batch_stats."))}
    assign(model, arrays, source=f"{src} (step {step})")
    model.eval()
    return model
