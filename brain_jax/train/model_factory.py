"""Build the model a RunSpec names: fresh, grafted onto pretrained weights, or restored from a workdir."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp
from flax import nnx

from brain_jax import models, workdir
from brain_jax.convert import from_hf
from brain_jax.convert.native import is_native_dir, load_native
from brain_jax.models import common as model_common, fcmae
from brain_jax.models.weights import abstract, assign
from brain_jax.train import checkpoints
from brain_jax.train.spec import DTYPES, RunSpec, check_dtype

# The jnp dtype of each name RunSpec accepts, in spec.DTYPES order.
JNP_DTYPES = dict(zip(DTYPES, (jnp.float32, jnp.bfloat16, jnp.float16), strict=True))


def dtype_of(name: str, field: str = "model.dtype") -> Any:
    """The jnp dtype named ``name``; ValueError naming ``field`` for a name RunSpec does not know."""
    return JNP_DTYPES[check_dtype(name, field)]


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
        name = cfg.__name__ if isinstance(cfg, type) else type(cfg).__name__
        raise ValueError(f"{where}: unknown field(s) {bad} for {name}; valid: {sorted(fields)}")
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


def fcmae_config(spec: RunSpec) -> fcmae.FCMAEConfig:
    """The FCMAE config of an ``fcmae`` run (no parameters built): ``model.variant``'s encoder, ``data.image_size``,
    ``model.kwargs`` and ``config.fcmae``; a bad value is a ValueError naming its field (``fcmae.patch_size``,
    ``fcmae.mask_ratio``, ``data.image_size``)."""
    kwargs = _checked_overrides(fcmae.FCMAEConfig, {"image_size": spec.input.image_size, **spec.model_kwargs,
                                                    **spec.pretrain}, "config field model.kwargs / fcmae")
    return fcmae.config_for(spec.variant, **kwargs)


def fresh_model(spec: RunSpec, *, dtype: Any | None = None, seed: int | None = None) -> nnx.Module:
    """The spec's architecture, randomly initialised (params seed ``seed``, dropout ``seed + 1``); for the
    ``fcmae`` task the masked autoencoder around the ConvNeXt V2 of ``model.variant`` (its settings checked
    here: a bad ``fcmae.*`` or ``data.image_size`` is a ValueError naming the field)."""
    seed = spec.seed if seed is None else seed
    if spec.task == "fcmae":
        return fcmae.FCMAE(fcmae_config(spec), dtype=dtype_of(spec.dtype) if dtype is None else dtype,
                           rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    return models.create(spec.model_name, spec.variant, spec.num_classes,
                         dtype=dtype_of(spec.dtype) if dtype is None else dtype,
                         rngs=nnx.Rngs(params=seed, dropout=seed + 1), **spec.model_kwargs)


def create_model(spec: RunSpec, *, dtype: Any | None = None, with_init: bool = True,
                 seed: int | None = None) -> nnx.Module:
    """The model a spec describes; with ``with_init`` and ``init_from`` set, on pretrained weights.

    From a pretrained checkpoint the architecture is the checkpoint's own (with ``model.kwargs``, e.g.
    drop-path, applied) and the classification/segmentation head is re-initialised when the label
    count differs.
    """
    if not (with_init and spec.init_from):
        return fresh_model(spec, dtype=dtype, seed=seed)
    dtype = dtype_of(spec.dtype) if dtype is None else dtype
    seed = spec.seed if seed is None else seed
    if is_pretraining_workdir(spec.init_from):
        return from_pretraining(spec, Path(spec.init_from).expanduser(), dtype=dtype, seed=seed)
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    names = spec.class_names
    pretrained = load_pretrained(spec.init_from, dtype)
    ptype = pretrained.config.model_type
    if ptype != spec.model_name:
        raise ValueError(
            f"config field init_from={spec.init_from!r} holds a {ptype} model, but model.name is {spec.model_name!r}"
        )
    changes = _checked_overrides(pretrained.config, dict(spec.model_kwargs), "config field model.kwargs")
    fresh_head = pretrained.config.num_labels != len(names)
    if fresh_head:
        changes["num_labels"] = len(names)
        if "label_names" in {f.name for f in dataclasses.fields(pretrained.config)}:
            changes["label_names"] = names
    cfg = dataclasses.replace(pretrained.config, **changes)
    model = models.module_for(ptype).from_config(cfg, dtype=dtype, rngs=rngs)
    graft(model, pretrained, fresh_head=fresh_head)
    return model


def is_pretraining_workdir(src: str | Path) -> bool:
    """Whether ``src`` is a training workdir of FCMAE pretraining (its model.json says ``fcmae``)."""
    path = Path(src).expanduser()
    if not (path.is_dir() and workdir.has_run(path)):
        return False
    meta = workdir.read_model_json(path)
    return meta is not None and meta["model_type"] == fcmae.FCMAEConfig.model_type


def from_pretraining(spec: RunSpec, src: Path, *, dtype: Any, seed: int) -> nnx.Module:
    """The classifier of ``spec`` with the encoder of an FCMAE pretraining workdir's latest checkpoint.

    Copies ``embeddings.*`` and ``encoder.*`` (the same paths in both models), drops the decoder
    (``fcmae.DECODER_PATHS``) and leaves the final ``layernorm`` and the ``classifier`` at their fresh init
    (FCMAE never trains them). Another architecture or size is a ValueError naming the field.
    """
    meta = workdir.read_model_json(src)
    cfg = model_common.config_from_dict(fcmae.FCMAEConfig, dict(meta["config"]))
    saved = workdir.read_config_dict(src)
    variant = str(saved.get("model", {}).get("variant", ""))
    where = f"config field init_from={str(spec.init_from)!r} is an FCMAE pretraining workdir of convnextv2-{variant}"
    if spec.model_name != "convnextv2":
        raise ValueError(f"config field model.name: {spec.model_name!r}; {where}, whose encoder only fits "
                         "model.name='convnextv2'")
    if spec.task != "classification":
        raise ValueError(f"config field data.task: {spec.task!r}; {where}: fine-tune it as a classifier "
                         "(data.task='classification')")
    model = fresh_model(spec, dtype=dtype, seed=seed)
    if (tuple(model.config.depths), tuple(model.config.hidden_sizes)) != (tuple(cfg.depths), tuple(cfg.hidden_sizes)):
        raise ValueError(f"config field model.variant: {spec.variant!r}; {where} (depths {list(cfg.depths)}, "
                         f"hidden sizes {list(cfg.hidden_sizes)}): set model.variant={variant!r}")
    flat, step, ckpt_dir = checkpoints.load_weights(src, which="latest")
    arrays = {k.split(".", 1)[1]: a for k, a in flat.items() if k.startswith("params.")}
    encoder = {k: a for k, a in arrays.items() if fcmae.is_encoder_path(k)}
    fresh = [p for p in models.weights.model_variables(model) if not fcmae.is_encoder_path(p)]
    assign(model, encoder, source=f"{ckpt_dir} (step {step})", fresh=fresh)
    print(f"init_from {src}: ConvNeXt V2 encoder ({len(encoder)} arrays: embeddings.*, encoder.*) loaded from "
          f"the latest pretraining checkpoint, step {step}", flush=True)
    print(f"init_from {src}: FCMAE decoder dropped ({', '.join(fcmae.DECODER_PATHS)}); the final layernorm and "
          f"the classifier start fresh ({len(fresh)} arrays)", flush=True)
    return model


def model_from_json(meta: dict, dtype: Any) -> nnx.Module:
    """A freshly initialised model of the architecture ``model.json`` describes."""
    if meta["model_type"] == fcmae.FCMAEConfig.model_type:
        cfg = model_common.config_from_dict(fcmae.FCMAEConfig, dict(meta["config"]))
        return fcmae.FCMAE(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1))
    mod = models.module_for(meta["model_type"])
    return mod.from_config(mod.config_from_dict(dict(meta["config"])), dtype=dtype,
                           rngs=nnx.Rngs(params=0, dropout=1))


def load_model_from_workdir(wd: str | Path, dtype: Any = jnp.float32, *, which: str = "best",
                            spec: RunSpec | None = None) -> nnx.Module:
    """The trained model of a workdir (best checkpoint, else latest), in eval mode.

    The architecture comes from ``model.json`` (runs written before it existed: from ``spec``, or the spec of
    ``config.json``);
    the weights are the EMA ones when the run kept them. Built without random init.
    """
    wd = Path(wd)
    config = workdir.read_config(wd)
    meta = workdir.read_model_json(wd)
    if meta is not None:
        model = abstract(lambda: model_from_json(meta, dtype), where=str(wd / workdir.MODEL))
    else:
        spec = spec if spec is not None else RunSpec.from_config(config, where=str(wd / workdir.CONFIG))
        model = abstract(lambda: fresh_model(spec, dtype=dtype), where=str(wd / workdir.CONFIG))
    flat, step, src = checkpoints.load_weights(wd, which=which, best_mode=str(config.get("best_mode", "max")))
    weights = "ema." if any(k.startswith("ema.") for k in flat) else "params."
    arrays = {k.split(".", 1)[1]: a for k, a in flat.items() if k.startswith((weights, "batch_stats."))}
    assign(model, arrays, source=f"{src} (step {step})")
    model.eval()
    return model
