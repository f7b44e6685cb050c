"""Model registry: ``create(name, variant, num_classes, ...)`` picks an architecture module by name.

Each architecture module exposes ``variants(name)`` (its variant names, including a tiny ``"test"`` size)
and ``create(name, variant, num_classes, *, dtype, rngs, **overrides)``.
"""
from __future__ import annotations

import importlib

import jax.numpy as jnp
from flax import nnx

# model name -> module in this package
_MODULES = {
    "convnextv2": "convnext",
    "convnext": "convnext",
    "swin": "swin",
    "vit": "vit",
    "segformer": "segformer",
}

NAMES = tuple(_MODULES)


def module_for(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown model name {name!r}; expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"brain_jax.models.{_MODULES[name]}")


def variants(name: str) -> tuple[str, ...]:
    return tuple(module_for(name).variants(name))


def create(
    name: str,
    variant: str,
    num_classes: int,
    *,
    dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs | None = None,
    **overrides,
) -> nnx.Module:
    """A freshly initialised model, e.g. ``create("convnextv2", "tiny", 4)``."""
    mod = module_for(name)
    rngs = rngs if rngs is not None else nnx.Rngs(params=0, dropout=1)
    return mod.create(name, variant, num_classes, dtype=dtype, rngs=rngs, **overrides)
