"""Hugging Face <-> brain-jax weight conversion (public contract: ``from_hf``, ``to_hf``).

Architectures plug in as modules of this package (``convnext``, ``swin``, ``vit``, ``segformer``), each
providing:

- ``MODEL_TYPES``: the HF ``model_type`` strings it handles;
- ``config_from_hf(hf_config: dict, where: str) -> config``: the model registry's config of the checkpoint
  (fields absent from the dict read as transformers' defaults, ``config_json.complete``);
- ``key_map(model) -> KeyMap``: ``{our dotted path: (hf key, Hook)}`` for every Param/BatchStat;
- ``ignore(hf_key) -> bool``: HF keys that are constants we recompute (buffers), never weights;
- ``hf_config(model) -> dict``: a transformers ``config.json`` dict describing ``model``;
- optionally ``prepare(hf_config, tensors, where) -> (hf_config, tensors)``: bring another checkpoint
  layout of the architecture (e.g. a headless ViTModel) to the one ``key_map`` describes.

Not a transformers layout: ``fcmae_from_official`` (``convert/fcmae.py``) reads the official ConvNeXt V2
FCMAE pretraining checkpoints (``*_fcmae.pt``) into ``brain_jax.models.fcmae.FCMAE``.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import jax.numpy as jnp
from flax import nnx

from brain_jax import models
from brain_jax.convert.core import ConversionError, export_from, load_hf_checkpoint, load_into, write_hf_checkpoint
from brain_jax.convert.fcmae import from_official as fcmae_from_official
from brain_jax.models.weights import abstract

# HF model_type -> architecture module of this package
_ARCH_MODULES = {
    "convnextv2": "convnext",
    "convnext": "convnext",
    "swin": "swin",
    "vit": "vit",
    "segformer": "segformer",
}

__all__ = ["ConversionError", "from_hf", "to_hf", "arch_module", "load_hf_checkpoint", "fcmae_from_official"]


def arch_module(model_type: str, *, where: str = "config.json") -> ModuleType:
    if model_type not in _ARCH_MODULES:
        raise ConversionError(
            f"{where}: unknown model_type {model_type!r}; supported: {', '.join(sorted(_ARCH_MODULES))}"
        )
    return importlib.import_module(f"brain_jax.convert.{_ARCH_MODULES[model_type]}")


def from_hf(src: str | os.PathLike, dtype: jnp.dtype = jnp.float32) -> nnx.Module:
    """Build a brain-jax model from a transformers checkpoint (folder or Hub id), in eval mode.

    ``model(pixel_values_nhwc)`` then gives the HF model's logits; inputs are HF ``pixel_values``
    transposed to NHWC.
    """
    config, tensors = load_hf_checkpoint(src)
    where = f"{src}/config.json"
    mod = arch_module(config.get("model_type", "<missing>"), where=where)
    prepare = getattr(mod, "prepare", None)  # optional: adapt another layout of the same architecture
    if prepare is not None:
        config, tensors = prepare(config, tensors, where)
    cfg = mod.config_from_hf(config, where)
    arch = models.module_for(cfg.model_type)
    # no random init: load_into fills every variable (or refuses the checkpoint)
    model = abstract(lambda: arch.from_config(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)), where=where)
    load_into(model, tensors, mod.key_map(model), ignore=mod.ignore, source=str(src))
    model.eval()
    return model


def to_hf(model: nnx.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that transformers' Auto classes load cleanly."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type is None:
        raise ConversionError(f"{type(model).__name__} has no config.model_type; not a brain-jax model")
    mod = arch_module(model_type, where=type(model).__name__)
    tensors = export_from(model, mod.key_map(model))
    # optional: HF buffers with no model variable (e.g. BatchNorm num_batches_tracked) so loads report none missing
    extra = getattr(mod, "hf_extra_tensors", None)
    if extra is not None:
        tensors.update(extra(model))
    return write_hf_checkpoint(out_dir, mod.hf_config(model), tensors)
