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
import itertools
import json
import os
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brain_jax.convert.core import ConversionError, model_variables, read_safetensors

META_FILE = "brain_jax_model.json"
PARAMS_FILE = "params.safetensors"
FORMAT = 1


def skeleton(factory: Callable[[], nnx.Module]) -> nnx.Module:
    """``factory()`` without its random initialisation, for models whose weights are loaded next.

    Random init compiles one XLA program per parameter shape (seconds for a tiny model on a busy CPU,
    minutes of work for ConvNeXt-H) only to be overwritten. The model is traced abstractly instead; its
    Params/BatchStats become zeros (placeholders: the caller must fill every one, as ``load_into`` and
    ``load_native`` check) and its RNG streams get fresh concrete keys so training mode still works.
    Falls back to ``factory()`` if the model holds any other array state (e.g. a constant buffer).
    """
    abstract = nnx.eval_shape(factory)
    seeds = itertools.count(1)
    fills: list[tuple[nnx.Variable, object]] = []
    for _, node in nnx.iter_graph(abstract):
        if isinstance(node, jax.ShapeDtypeStruct):
            return factory()  # a plain array attribute: cannot be rebuilt without running the init
        if not isinstance(node, nnx.Variable) or not isinstance(node.get_value(), jax.ShapeDtypeStruct):
            continue
        v = node.get_value()
        if isinstance(node, (nnx.Param, nnx.BatchStat, nnx.RngCount)):
            fills.append((node, lambda v=v: jnp.asarray(np.zeros(v.shape, v.dtype))))  # device_put: no compile
        elif isinstance(node, nnx.RngKey) and v.shape == ():
            fills.append((node, lambda: jax.random.key(next(seeds))))
        else:
            return factory()
    for var, make in fills:
        var.set_value(make())  # type: ignore[operator]
    return abstract


def is_native_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def save_native(model: nnx.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``model``'s config and variables to ``out_dir`` (created if needed)."""
    from safetensors.numpy import save_file

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
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{meta_path}: invalid JSON: {e}") from e
    for field in ("model_type", "config"):
        if field not in meta:
            raise ConversionError(f"{meta_path}: missing field {field!r}")
    if meta.get("format", FORMAT) != FORMAT:
        raise ConversionError(f"{meta_path}: format {meta['format']!r} is not supported (expected {FORMAT})")
    return meta


def load_native(src: str | os.PathLike, dtype: jnp.dtype = jnp.float32) -> nnx.Module:
    """Rebuild the model saved by ``save_native`` (eval mode, float32 params, ``dtype`` compute)."""
    from brain_jax.models import module_for

    path = Path(src)
    meta = _read_meta(path)
    try:
        mod = module_for(meta["model_type"])
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
    model = skeleton(lambda: mod.from_config(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)))
    params_path = path / PARAMS_FILE
    if not params_path.is_file():
        raise FileNotFoundError(f"{path}: no {PARAMS_FILE}")
    tensors = read_safetensors(params_path)
    variables = model_variables(model)
    problems = [f"missing {k}" for k in sorted(set(variables) - set(tensors))]
    problems += [f"unexpected {k}" for k in sorted(set(tensors) - set(variables))]
    for k in sorted(set(variables) & set(tensors)):
        want, got = tuple(variables[k].get_value().shape), tuple(tensors[k].shape)
        if want != got:
            problems.append(f"{k}: shape {got}, model expects {want}")
    if problems:
        raise ConversionError(
            f"{params_path} does not match its config ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    for k, var in variables.items():
        var.set_value(jnp.asarray(tensors[k], dtype=var.get_value().dtype))
    model.eval()
    return model
