"""Model registry: ``create(name, variant, num_classes, ...)`` picks an architecture module by name.

Every architecture module (``convnext`` for ``convnextv2``/``convnext``, ``swin``, ``vit``, ``segformer``)
exports the same functions, bound from ``common.Architecture``: ``variants(name)``,
``config_for(name, variant, num_classes, **overrides)``, ``config_from_dict(d)``,
``from_config(config, *, dtype, rngs)`` and ``create(name, variant, num_classes, *, dtype, rngs,
**overrides)``, plus its ``VARIANTS`` table of sizes (each with a tiny ``"test"`` size).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# model name -> module in this package
_MODULES = {
    "convnextv2": "convnext",
    "convnext": "convnext",
    "swin": "swin",
    "vit": "vit",
    "segformer": "segformer",
}

NAMES = tuple(_MODULES)


def module_for(name: str) -> ModuleType:
    """The architecture module that builds model ``name``."""
    if name not in _MODULES:
        raise ValueError(f"unknown model name {name!r}; expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"brain_jax.models.{_MODULES[name]}")


def variants(name: str) -> tuple[str, ...]:
    """The sizes of model ``name`` (including ``"test"``)."""
    return module_for(name).variants(name)


def create(
    name: str,
    variant: str,
    num_classes: int,
    *,
    dtype: Any = None,
    rngs: Any = None,
    **overrides,
) -> Any:
    """A freshly initialised model, e.g. ``create("convnextv2", "tiny", 4)`` (float32 unless ``dtype``; seeds
    params 0, dropout 1 unless ``rngs``). The registry itself imports no JAX: an architecture module is
    imported when first named, so ``NAMES`` and ``variants`` cost nothing at start-up."""
    import jax.numpy as jnp
    from flax import nnx

    dtype = jnp.float32 if dtype is None else dtype
    rngs = nnx.Rngs(params=0, dropout=1) if rngs is None else rngs
    return module_for(name).create(name, variant, num_classes, dtype=dtype, rngs=rngs, **overrides)
