"""brain-jax's own converted-checkpoint folder, for every architecture in the model registry.

Layout of ``DIR``:

- ``brain_jax_model.json``: ``{"format": 1, "model_type": ..., "config": dataclasses.asdict(model.config)}``;
- ``params.safetensors``: float32 arrays keyed by our dotted variable paths (Params and BatchStats,
  e.g. ``encoder.stages.0.layers.1.dwconv.kernel``).

The model is rebuilt with its architecture module's ``config_from_dict`` / ``from_config``, found from
``model_type`` through ``brain_jax.models.module_for``; loading is all-or-nothing like HF conversion.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from brain_jax import models
from brain_jax.convert.core import ConversionError, read_json, read_safetensors
from brain_jax.models.weights import abstract, assign, model_variables

META_FILE = "brain_jax_model.json"
PARAMS_FILE = "params.safetensors"
FORMAT = 1


def is_native_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def save_native(model: nnx.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``model``'s config and variables to ``out_dir`` (created if needed)."""
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "model_type"):
        raise ConversionError(f"{type(model).__name__} has no dataclass config with model_type; not a brain-jax model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(np.asarray(v.get_value(), dtype=np.float32))
               for k, v in model_variables(model).items()}
    save_file(tensors, str(out / PARAMS_FILE), metadata={"format": "brain_jax", "model_type": cfg.model_type})
    meta = {"format": FORMAT, "model_type": cfg.model_type, "config": dataclasses.asdict(cfg)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _read_meta(path: Path) -> dict:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no {META_FILE} (not a brain-jax converted checkpoint folder)")
    meta = read_json(meta_path)
    for field in ("model_type", "config"):
        if field not in meta:
            raise ConversionError(f"{meta_path}: missing field {field!r}")
    if meta.get("format", FORMAT) != FORMAT:
        raise ConversionError(f"{meta_path}: format {meta['format']!r} is not supported (expected {FORMAT})")
    return meta


def load_native(src: str | os.PathLike, dtype: jnp.dtype = jnp.float32) -> nnx.Module:
    """Rebuild the model saved by ``save_native`` (eval mode, float32 params, ``dtype`` compute)."""
    path = Path(src)
    meta = _read_meta(path)
    try:
        mod = models.module_for(meta["model_type"])
    except ValueError as e:
        raise ConversionError(f"{path / META_FILE}: {e}") from e
    try:
        cfg = mod.config_from_dict(dict(meta["config"]))
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{path / META_FILE}: bad config: {e}") from e
    if getattr(cfg, "model_type", meta["model_type"]) != meta["model_type"]:
        raise ConversionError(
            f"{path / META_FILE}: model_type {meta['model_type']!r} disagrees with config {cfg.model_type!r}"
        )
    model = abstract(lambda: mod.from_config(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)),
                     where=str(path / META_FILE))
    params_path = path / PARAMS_FILE
    if not params_path.is_file():
        raise FileNotFoundError(f"{path}: no {PARAMS_FILE}")
    assign(model, read_safetensors(params_path), source=str(params_path), error=ConversionError)
    model.eval()
    return model
