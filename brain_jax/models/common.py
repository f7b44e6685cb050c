"""What the architecture modules share: layers with their inits, drop path, depthwise convolution, GELU,
bilinear resize, and the registry functions every architecture module exports (``Architecture``)."""
from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

DepthwiseImpl = Literal["auto", "shift", "grouped"]

# HF's initializer_range: Linear weights (and ConvNeXt's patch convs) start as trunc-normal(0, 0.02)
TRUNC_NORMAL = nnx.initializers.truncated_normal(stddev=0.02)


def linear(d_in: int, d_out: int, *, dtype: Any, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    """A Linear layer as HF initialises it (trunc-normal(0.02) kernel, zero bias), float32 params."""
    return nnx.Linear(d_in, d_out, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                      kernel_init=TRUNC_NORMAL, rngs=rngs)


def layer_norm(dim: int, eps: float, *, dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm over the last axis with float32 params and torch's two-pass variance.

    The one-pass E[x²]−E[x]² form (flax's default) drifts from torch by ~1e-5 on large activations.
    """
    return nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False,
                         rngs=rngs)


class PatchConv(nnx.Conv):
    """``nnx.Conv`` with a k×k kernel, stride k and no padding (a patchify stem or downsampler; k = 1 is a
    pointwise projection), computed as one matrix multiply over the non-overlapping k×k patches.

    Same parameters, init and numbers as the convolution (sizes that k does not divide are floored, as
    VALID and PyTorch do); XLA:CPU runs these convolutions, and their gradients, several times slower
    than the equivalent dot. Build it with :func:`patch_conv`.
    """

    def __call__(self, inputs: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        b, h, w, c = inputs.shape
        ho, wo = h // kh, w // kw
        x = inputs[:, : ho * kh, : wo * kw, :]
        if kh * kw > 1:  # (B, ho, kh, wo, kw, C) -> (B, ho, wo, kh, kw, C): HWIO order of the kernel
            x = x.reshape(b, ho, kh, wo, kw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, ho, wo, kh * kw * c)
        kernel = self.kernel[...].reshape(kh * kw * c, -1)
        bias = self.bias[...] if self.bias is not None else None
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        y = jax.lax.dot_general(x, kernel, (((3,), (0,)), ((), ())), precision=self.precision)
        return y if bias is None else y + bias


def patch_conv(d_in: int, d_out: int, k: int, *, use_bias: bool = True, dtype: Any, kernel_init: Callable,
               rngs: nnx.Rngs) -> PatchConv:
    """A k×k stride-k unpadded convolution with float32 params (see :class:`PatchConv`)."""
    return PatchConv(d_in, d_out, (k, k), strides=(k, k), padding="VALID", use_bias=use_bias, dtype=dtype,
                     param_dtype=jnp.float32, kernel_init=kernel_init, rngs=rngs)


class Dense(nnx.Module):
    """A holder for one Linear layer named ``dense`` (HF's ``*.output.dense`` / ``intermediate.dense``)."""

    def __init__(self, d_in: int, d_out: int, *, dtype: Any, rngs: nnx.Rngs):
        self.dense = linear(d_in, d_out, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dense(x)


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of NHWC ``x`` to ``size`` = (H, W) with half-pixel centres, in ``x``'s dtype.

    Matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (no antialias),
    both for up- and downsampling (SegFormer's decode head, HF's loss and post-processing on logits);
    an identity when the size is unchanged.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[1:3]) == size:
        return x
    out = jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method="bilinear", antialias=False)
    return out.astype(x.dtype)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, what HF calls ``"gelu"``."""
    return jax.nn.gelu(x, approximate=False)


def resolve_depthwise_impl(impl: DepthwiseImpl = "auto") -> str:
    """Pick the depthwise-conv implementation for the current backend.

    XLA:CPU lowers grouped (depthwise) convolutions 20-70x slower than a sum of k² shifted multiply-adds;
    GPU/TPU send the grouped form to cuDNN / the MXU. Both give the same numbers.
    ``BRAIN_JAX_DEPTHWISE=shift|grouped`` overrides ``auto`` (benchmarks, tests).
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


def _pad_hw(x: jax.Array, pad: int) -> jax.Array:
    """Zero-pad the two spatial axes of NHWC ``x`` by ``pad`` on each side."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _correlate(xp: jax.Array, kernel: jax.Array) -> jax.Array:
    """Valid depthwise correlation of the padded NHWC ``xp`` with a (k_h, k_w, 1, C) kernel: k_h·k_w
    shifted multiply-adds, which XLA fuses into one loop over the output."""
    k_h, k_w = kernel.shape[0], kernel.shape[1]
    h_out, w_out = xp.shape[1] - k_h + 1, xp.shape[2] - k_w + 1
    out = None
    for i in range(k_h):
        for j in range(k_w):
            term = xp[:, i : i + h_out, j : j + w_out, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shift_add_vjp(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    return _correlate(_pad_hw(x, padding), kernel)


def _shift_add_fwd(x: jax.Array, kernel: jax.Array, padding: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _correlate(_pad_hw(x, padding), kernel), (x, kernel)


def _shift_add_bwd(padding: int, res: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Autodiff of the forward sum would give one zero-padded copy of the output gradient per kernel tap,
    # materialised one by one and summed (slow on XLA:CPU, to run and to compile). The input gradient
    # is instead the correlation of the gradient, padded by k-1-padding, with the flipped kernel: one
    # fused loop again. The kernel gradient is one reduction per tap, accumulated in float32.
    x, kernel = res
    k_h, k_w = kernel.shape[0], kernel.shape[1]
    if k_h != k_w or padding > k_h - 1:
        raise ValueError(f"depthwise conv backward needs a square kernel and padding <= k-1; got {kernel.shape}, "
                         f"padding {padding}")
    dx = _correlate(_pad_hw(dy, k_h - 1 - padding), kernel[::-1, ::-1])
    xp = _pad_hw(x, padding)
    h_out, w_out = dy.shape[1], dy.shape[2]
    dyf = dy.astype(jnp.float32)
    # one reduction per tap: faster on XLA:CPU than one reduction over a stack of the k² shifted inputs
    taps = [jnp.sum(xp[:, i : i + h_out, j : j + w_out, :].astype(jnp.float32) * dyf, axis=(0, 1, 2))
            for i in range(k_h) for j in range(k_w)]
    dk = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return dx.astype(x.dtype), dk


_shift_add_vjp.defvjp(_shift_add_fwd, _shift_add_bwd)


@functools.partial(jax.jit, static_argnums=2)
def _shift_add(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
    # jitted so that eager callers compile one program per shape instead of ~3·k² tiny ones
    return _shift_add_vjp(x, kernel, padding)


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


# --------------------------------------------------------------------------- configs and the registry


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` read from JSON or an override as the annotated type ``tp`` (lists -> tuples, 3 -> 3.0)."""
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(item, v, where) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float) and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if not float(value).is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        return float(value)
    if tp is str and not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    return value


def config_from_dict(cls: type, d: Mapping[str, Any]):
    """Config dataclass ``cls`` from field values read back from JSON (``dataclasses.asdict`` output).

    Values are brought to each field's annotated type (JSON lists -> tuples, integers -> floats); an
    unknown field or a value of the wrong kind is a ValueError naming the field.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected a subset of {sorted(fields)}")
    return cls(**{k: _coerce(hints[k], v, f"{cls.__name__}.{k}") for k, v in d.items()})


def check_config(cfg: Any, problems: list[str], *, at_least_one: Sequence[str] = (),
                 rates: Sequence[str] = ()) -> None:
    """Raise one ValueError listing ``problems`` plus the checks every config shares: ``at_least_one``
    fields >= 1, ``rates`` in [0, 1), and ``label_names`` either empty or one name per label."""
    problems = list(problems)
    problems += [f"{n} must be >= 1, got {getattr(cfg, n)}" for n in at_least_one if getattr(cfg, n) < 1]
    problems += [f"{n} must be in [0, 1), got {getattr(cfg, n)}" for n in rates if not 0.0 <= getattr(cfg, n) < 1.0]
    if cfg.label_names and len(cfg.label_names) != cfg.num_labels:
        problems.append(f"label_names has {len(cfg.label_names)} names for num_labels={cfg.num_labels}")
    if problems:
        raise ValueError(f"invalid {type(cfg).__name__}: " + "; ".join(problems))


# create() overrides every architecture accepts, for configs whose fields carry HF's names (Swin, ViT)
HF_DROPOUT_ALIASES = {
    "dropout": "hidden_dropout_prob",
    "hidden_dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The registry functions of one architecture module, built from its table of sizes.

    Every architecture module binds them (``functions()``) as its module-level ``variants``,
    ``config_for``, ``config_from_dict``, ``from_config`` and ``create``, so all take the same arguments.

    ``config_class``: the module's config dataclass (with ``model_type`` and ``num_labels`` fields);
    ``tables``: model name -> ``{variant: config}`` (each with a tiny ``"test"`` size);
    ``build(config, *, dtype, rngs)``: the model; ``aliases``: override names shared by the architectures
    (``dropout``, ...) -> this config's field; ``ignored``: overrides accepted and dropped.
    """

    config_class: type
    tables: Mapping[str, Mapping[str, Any]]
    build: Callable[..., nnx.Module]
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ignored: frozenset[str] = frozenset()

    def _table(self, name: str) -> Mapping[str, Any]:
        if name not in self.tables:
            raise ValueError(f"{self.config_class.__name__} describes {', '.join(self.tables)}, not {name!r}")
        return self.tables[name]

    def variants(self, name: str) -> tuple[str, ...]:
        """The sizes of model ``name``, e.g. ``("test", "atto", ...)``."""
        return tuple(self._table(name))

    def config_for(self, name: str, variant: str, num_classes: int, **overrides: Any):
        """The config of a named size with ``num_classes`` labels and field overrides.

        An override is a config field or an alias; anything else is a ValueError naming it and listing
        the valid names.
        """
        table = self._table(name)
        if variant not in table:
            raise ValueError(f"unknown {name} variant {variant!r}; expected one of {', '.join(table)}")
        values = dataclasses.asdict(table[variant])
        allowed = set(values) - {"model_type", "num_labels"}
        values["num_labels"] = num_classes
        for key, value in overrides.items():
            if key in self.ignored:
                continue
            field = self.aliases.get(key, key)
            if field not in allowed:
                valid = ", ".join(sorted(allowed | set(self.aliases) | self.ignored))
                raise ValueError(f"unknown {name} override {key!r}; expected one of {valid}")
            values[field] = value
        return self.config_from_dict(values)

    def config_from_dict(self, d: Mapping[str, Any]):
        """The config from ``dataclasses.asdict`` output read back from JSON."""
        return config_from_dict(self.config_class, d)

    def from_config(self, config: Any, *, dtype: Any = jnp.float32, rngs: nnx.Rngs) -> nnx.Module:
        """The model of ``config``: float32 params, ``dtype`` compute, initialised from ``rngs``."""
        return self.build(config, dtype=dtype, rngs=rngs)

    def create(self, name: str, variant: str, num_classes: int, *, dtype: Any = jnp.float32, rngs: nnx.Rngs,
               **overrides: Any) -> nnx.Module:
        """A freshly initialised model of a named size, e.g. ``create("swin", "tiny_w7", 4, drop_path_rate=0.2)``."""
        return self.from_config(self.config_for(name, variant, num_classes, **overrides), dtype=dtype, rngs=rngs)

    def functions(self) -> tuple[Callable[..., Any], ...]:
        """``(variants, config_for, config_from_dict, from_config, create)``, for a module to export."""
        return self.variants, self.config_for, self.config_from_dict, self.from_config, self.create
