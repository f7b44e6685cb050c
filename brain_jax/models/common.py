"""Blocks shared by several architectures: drop path, depthwise convolution, GELU, dtypes."""
from __future__ import annotations

import functools
import os
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

DepthwiseImpl = Literal["auto", "shift", "grouped"]


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, what HF calls ``"gelu"``."""
    return jax.nn.gelu(x, approximate=False)


def resolve_depthwise_impl(impl: DepthwiseImpl = "auto") -> str:
    """Pick the depthwise-conv implementation for the current backend.

    XLA:CPU lowers grouped convolutions 20-70x slower than a sum of shifted multiply-adds
    (../shared/REFERENCE.md); GPU/TPU send the grouped form to cuDNN / the MXU. Both give the same
    numbers. ``BRAIN_JAX_DEPTHWISE=shift|grouped`` overrides ``auto`` (benchmarks, tests).
    """
    if impl == "auto":
        impl = os.environ.get("BRAIN_JAX_DEPTHWISE", "auto")  # type: ignore[assignment]
    if impl == "auto":
        return "shift" if jax.default_backend() == "cpu" else "grouped"
    if impl not in ("shift", "grouped"):
        raise ValueError(f"depthwise impl must be 'auto', 'shift' or 'grouped', got {impl!r}")
    return impl


def depthwise_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    padding: int,
    impl: DepthwiseImpl = "auto",
) -> jax.Array:
    """Stride-1 depthwise convolution of NHWC ``x`` with a ``(k, k, 1, C)`` kernel, zero padding."""
    if resolve_depthwise_impl(impl) == "grouped":
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(1, 1),
            padding=((padding, padding), (padding, padding)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
        )
    return _shift_add(x, kernel, padding)


@functools.partial(jax.jit, static_argnums=2)
def _shift_add(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    # jitted so that eager callers compile one program per shape instead of ~3·k² tiny ones
    k_h, k_w = kernel.shape[0], kernel.shape[1]
    h_out = x.shape[1] + 2 * padding - k_h + 1
    w_out = x.shape[2] + 2 * padding - k_w + 1
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = None
    for i in range(k_h):
        for j in range(k_w):
            term = xp[:, i : i + h_out, j : j + w_out, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


class DepthwiseConv(nnx.Module):
    """Depthwise k×k conv (stride 1, ``padding`` each side) with bias; kernel stored as (k, k, 1, C)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        padding: int,
        *,
        use_bias: bool = True,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        impl: DepthwiseImpl = "auto",
        rngs: nnx.Rngs,
    ):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, kernel_size, 1, channels), param_dtype))
        self.bias = nnx.Param(jnp.zeros((channels,), param_dtype)) if use_bias else nnx.data(None)
        self.padding = padding
        self.dtype = dtype
        self.impl = impl

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = depthwise_conv2d(x, self.kernel[...].astype(self.dtype), self.padding, self.impl)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class DropPath(nnx.Module):
    """Stochastic depth: drops the whole residual branch per example while training.

    Like ``nnx.Dropout`` it follows ``model.train()`` / ``model.eval()`` through ``deterministic``.
    """

    def __init__(self, rate: float, *, deterministic: bool = False, rngs: nnx.Rngs | None = None):
        self.rate = float(rate)
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork() if (rngs is not None and rate > 0) else nnx.data(None)

    def set_view(self, deterministic: bool | None = None, **_) -> None:  # nnx.view hook
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.rate == 0.0 or self.deterministic:
            return x
        if self.rngs is None:
            raise ValueError("DropPath in training mode needs rngs with a 'dropout' stream")
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def drop_path_rates(drop_path_rate: float, depths: tuple[int, ...]) -> list[list[float]]:
    """Linearly increasing stochastic-depth rates per block, grouped by stage (as HF/timm do)."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)] if total else []
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out


def config_from_dict(cls: type, d: dict):
    """Rebuild config dataclass ``cls`` from ``dataclasses.asdict`` output read back from JSON.

    JSON turns tuples into lists; they are turned back. Unknown fields are an error naming them.
    """
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected a subset of {sorted(fields)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def apply_overrides(base, overrides: dict, aliases: dict[str, str], what: str, **fixed):
    """``dataclasses.replace(base, **fixed, **overrides)`` with override names mapped through ``aliases``.

    An override that names no field of the config (nor an alias) is an error listing the valid names.
    """
    import dataclasses

    fields = {f.name for f in dataclasses.fields(base)} - {"model_type"} - set(fixed)
    kw = {}
    for key, val in overrides.items():
        field = aliases.get(key, key)
        if field not in fields:
            raise ValueError(f"unknown {what} override {key!r}; expected one of {sorted(fields | set(aliases))}")
        kw[field] = tuple(val) if isinstance(val, list) else val
    return dataclasses.replace(base, **fixed, **kw)
