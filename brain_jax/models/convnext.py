"""ConvNeXt V1 (layer scale) and ConvNeXt V2 (Global Response Normalization) in Flax NNX, NHWC.

Attribute names follow transformers' ``modeling_convnext.py`` / ``modeling_convnextv2.py`` so that the
conversion map in ``brain_jax/convert/convnext.py`` is a rename plus transposes:
``embeddings.{patch_embeddings, layernorm}``, ``encoder.stages.N.downsampling_layer.{0: LayerNorm,
1: 2x2/2 conv}``, ``encoder.stages.N.layers.M.{dwconv, layernorm, pwconv1, grn, pwconv2,
layer_scale_parameter, drop_path}``, final ``layernorm`` (after global average pooling), ``classifier``.

Numerics follow HF exactly: every LayerNorm inside the network uses eps 1e-6; only the final pooled
LayerNorm uses ``config.layer_norm_eps`` (1e-12 in HF configs).

The V2 blocks, stages and :func:`encode` also take an optional patch ``mask`` (FCMAE pretraining,
``brain_jax/models/fcmae.py``): the same modules and parameters run as the dense *masked* convolution of
the official ``TRAINING.md``; without a mask the computation is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from brain_jax.models import common
from brain_jax.models.common import DepthwiseConv, DropPath, drop_path_rates, gelu, layer_norm, linear

MODEL_TYPES = ("convnextv2", "convnext")
BLOCK_EPS = 1e-6  # HF hard-codes this inside the network, independent of config.layer_norm_eps

@dataclass(frozen=True)
class ConvNeXtConfig:
    """Architecture hyper-parameters (HF field names where HF has them)."""

    model_type: str = "convnextv2"  # "convnextv2" (GRN) or "convnext" (V1, layer scale)
    num_labels: int = 1000
    hidden_sizes: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (3, 3, 9, 3)
    num_channels: int = 3
    patch_size: int = 4
    layer_norm_eps: float = 1e-12  # final pooled LayerNorm only
    layer_scale_init_value: float = 0.0  # V1: 1e-6 in HF; 0 means no layer scale
    drop_path_rate: float = 0.0
    head_dropout: float = 0.0  # dropout on the pooled features; HF has none (keep 0 for parity)
    image_size: int = 224  # informational (conv nets take any size); kept for the HF config
    label_names: tuple[str, ...] = ()  # id2label names, () -> LABEL_i
    depthwise_impl: str = "auto"  # "auto" | "shift" | "grouped" (same numbers; speed per backend)

    def __post_init__(self) -> None:
        problems = []
        if self.model_type not in MODEL_TYPES:
            problems.append(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if len(self.hidden_sizes) != len(self.depths) or not self.depths:
            problems.append(f"hidden_sizes {self.hidden_sizes} and depths {self.depths} must be non-empty, same length")
        if self.model_type == "convnextv2" and self.layer_scale_init_value:
            problems.append("layer_scale_init_value must be 0 for convnextv2 (V2 has GRN instead)")
        common.check_config(self, problems, at_least_one=("num_labels", "num_channels", "patch_size"),
                            rates=("drop_path_rate", "head_dropout"))


def _patch_conv(d_in: int, d_out: int, k: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """k×k stride-k conv, no padding (PyTorch floors odd sizes the same way as VALID)."""
    return common.patch_conv(d_in, d_out, k, dtype=dtype, kernel_init=common.TRUNC_NORMAL, rngs=rngs)


class GRN(nnx.Module):
    """Global Response Normalization: x + weight·(x·N(x)) + bias, N = ‖x‖₂ over H,W / channel-mean."""

    def __init__(self, dim: int, *, dtype: jnp.dtype = jnp.float32):
        # HF initialises both to zero (GRN starts as the identity).
        self.weight = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.dtype = dtype

    def __call__(self, x: jax.Array, visible: jax.Array | None = None) -> jax.Array:
        """``visible`` (B, H, W, 1) bool: the norm runs over each image's visible positions only (FCMAE);
        the output at hidden positions is left to the caller to discard."""
        x = x.astype(self.dtype)
        # norms in float32 even under bfloat16 compute: a sum of H·W squares loses too much precision in bf16
        xf = x.astype(jnp.float32)
        if visible is not None:
            xf = jnp.where(visible, xf, 0.0)
        gx = jnp.sqrt(jnp.sum(jnp.square(xf), axis=(1, 2), keepdims=True))
        nx = (gx / (jnp.mean(gx, axis=-1, keepdims=True) + 1e-6)).astype(self.dtype)
        w = self.weight[...].astype(self.dtype)
        b = self.bias[...].astype(self.dtype)
        return w * (x * nx) + b + x


class ConvNeXtLayer(nnx.Module):
    """One block: 7×7 depthwise conv -> LN -> Linear 4C -> GELU [-> GRN] -> Linear C [-> ·γ] -> drop path + x."""

    def __init__(self, cfg: ConvNeXtConfig, dim: int, drop_path: float, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dwconv = DepthwiseConv(dim, 7, 3, dtype=dtype, impl=cfg.depthwise_impl, rngs=rngs)  # type: ignore[arg-type]
        self.layernorm = layer_norm(dim, BLOCK_EPS, dtype=dtype, rngs=rngs)
        self.pwconv1 = linear(dim, 4 * dim, dtype=dtype, rngs=rngs)
        self.grn = GRN(4 * dim, dtype=dtype) if cfg.model_type == "convnextv2" else nnx.data(None)
        self.pwconv2 = linear(4 * dim, dim, dtype=dtype, rngs=rngs)
        if cfg.model_type == "convnext" and cfg.layer_scale_init_value > 0:
            self.layer_scale_parameter = nnx.Param(jnp.full((dim,), cfg.layer_scale_init_value, jnp.float32))
        else:
            self.layer_scale_parameter = nnx.data(None)
        self.drop_path = DropPath(drop_path, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array, visible: jax.Array | None = None) -> jax.Array:
        """``visible`` (B, H, W, 1) bool (V2 only): the block's input and its depthwise conv's output are
        zeroed at hidden positions (``where``, so nothing there can leak) and GRN sees visible positions only:
        at visible positions this equals the official sparse block (``convnextv2_sparse.py``)."""
        if visible is not None:
            if self.grn is None:
                raise ValueError("a patch mask needs a ConvNeXt V2 block (GRN); V1 has no masked form")
            x = jnp.where(visible, x, jnp.zeros((), x.dtype))
        h = self.dwconv(x)
        if visible is not None:
            h = jnp.where(visible, h, jnp.zeros((), h.dtype))
        h = self.layernorm(h)
        h = gelu(self.pwconv1(h))
        if self.grn is not None:
            h = self.grn(h, visible)
        h = self.pwconv2(h)
        if self.layer_scale_parameter is not None:
            h = h * self.layer_scale_parameter[...].astype(self.dtype)
        return x.astype(self.dtype) + self.drop_path(h)


class ConvNeXtStage(nnx.Module):
    """Optional downsampling (LN, 2×2/2 conv) then ``depth`` blocks."""

    def __init__(self, cfg: ConvNeXtConfig, d_in: int, d_out: int, downsample: bool, rates: list[float], *,
                 dtype: jnp.dtype, rngs: nnx.Rngs):
        if downsample:
            self.downsampling_layer = nnx.List(
                [layer_norm(d_in, BLOCK_EPS, dtype=dtype, rngs=rngs), _patch_conv(d_in, d_out, 2, dtype, rngs)]
            )
        else:
            self.downsampling_layer = nnx.List([])
        self.layers = nnx.List([ConvNeXtLayer(cfg, d_out, r, dtype=dtype, rngs=rngs) for r in rates])

    def __call__(self, x: jax.Array, visible: jax.Array | None = None) -> jax.Array:
        """``visible``: (B, H', W', 1) bool on this stage's grid (after downsampling), or None."""
        for layer in self.downsampling_layer:
            x = layer(x)
        for layer in self.layers:
            x = layer(x, visible)
        return x


class ConvNeXtEmbeddings(nnx.Module):
    """Patchify stem: p×p stride-p conv then LayerNorm (eps 1e-6)."""

    def __init__(self, cfg: ConvNeXtConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.patch_embeddings = _patch_conv(cfg.num_channels, cfg.hidden_sizes[0], cfg.patch_size, dtype, rngs)
        self.layernorm = layer_norm(cfg.hidden_sizes[0], BLOCK_EPS, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.layernorm(self.patch_embeddings(x))


class ConvNeXtEncoder(nnx.Module):
    def __init__(self, cfg: ConvNeXtConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        rates = drop_path_rates(cfg.drop_path_rate, tuple(cfg.depths))
        stages, prev = [], cfg.hidden_sizes[0]
        for i, (dim, r) in enumerate(zip(cfg.hidden_sizes, rates)):
            # HF downsamples whenever stride > 1 (every stage but the first) or the width changes
            stages.append(ConvNeXtStage(cfg, prev, dim, i > 0 or prev != dim, r, dtype=dtype, rngs=rngs))
            prev = dim
        self.stages = nnx.List(stages)


class ConvNeXt(nnx.Module):
    """ConvNeXt V1/V2 image classifier: ``model(x_nhwc)`` -> logits (B, num_labels), float32.

    ``model(x, output_hidden_states=True)`` -> (logits, [stem output, stage 1 ... stage N outputs]) in NHWC,
    the same list as HF's ``hidden_states`` (transposed).
    """

    head_paths = ("classifier",)

    def __init__(self, config: ConvNeXtConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        self.embeddings = ConvNeXtEmbeddings(config, dtype=dtype, rngs=rngs)
        self.encoder = ConvNeXtEncoder(config, dtype=dtype, rngs=rngs)
        self.layernorm = layer_norm(config.hidden_sizes[-1], config.layer_norm_eps, dtype=dtype, rngs=rngs)
        self.head_dropout = nnx.Dropout(config.head_dropout, rngs=rngs)
        self.classifier = linear(config.hidden_sizes[-1], config.num_labels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, output_hidden_states: bool = False):
        if x.ndim != 4 or x.shape[-1] != self.config.num_channels:
            raise ValueError(
                f"ConvNeXt expects NHWC input with {self.config.num_channels} channels, got shape {x.shape}"
            )
        smallest = self.config.patch_size * 2 ** (len(self.config.depths) - 1)
        if x.shape[1] < smallest or x.shape[2] < smallest:
            raise ValueError(f"ConvNeXt needs images of at least {smallest}x{smallest} pixels, got {x.shape[1:3]}")
        hidden = encode(self.embeddings, self.encoder, x)
        h = hidden[-1]
        pooled = jnp.mean(h.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        pooled = self.head_dropout(self.layernorm(pooled))
        logits = self.classifier(pooled).astype(jnp.float32)
        return (logits, hidden) if output_hidden_states else logits


MASK_PATCH = 32  # FCMAE's mask cell: the V2 encoder's total stride (stem 4 × three 2× downsamplings)


def stage_visibility(mask: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(B, H/32, W/32) bool patch mask (True = hidden, the official 1 = remove) -> (B, h, w, 1) bool
    *visible* map on a feature grid of size ``grid`` (each mask cell repeated, official ``upsample_mask``)."""
    b, mh, mw = mask.shape
    if grid[0] % mh or grid[1] % mw or grid[0] // mh != grid[1] // mw:
        raise ValueError(f"patch mask of {mh}x{mw} cells does not tile a {grid[0]}x{grid[1]} feature grid")
    s = grid[0] // mh
    up = jnp.repeat(jnp.repeat(jnp.logical_not(mask.astype(bool)), s, axis=1), s, axis=2)
    return up[..., None]


def encode(embeddings: ConvNeXtEmbeddings, encoder: ConvNeXtEncoder, x: jax.Array,
           mask: jax.Array | None = None) -> list[jax.Array]:
    """Stem then stages: ``[stem output, stage 1 ... stage N outputs]`` (NHWC), the classifier's features.

    ``mask`` (B, H/32, W/32) bool, True = hidden patch (V2 only; :data:`MASK_PATCH` must be the encoder's
    total stride, so every downsampling window lies inside one cell): the FCMAE encoder. The stem output,
    every block input and depthwise output are zeroed at hidden positions with ``where`` and GRN runs
    over visible positions (TRAINING.md: "numerically identical to sparse conv"); the returned features
    are zero at hidden positions, like the official sparse tensor densified.
    """
    h = embeddings(x)
    if mask is None:
        hidden = [h]
        for stage in encoder.stages:
            h = stage(h)
            hidden.append(h)
        return hidden
    zero = jnp.zeros((), h.dtype)
    h = jnp.where(stage_visibility(mask, h.shape[1:3]), h, zero)
    hidden = [h]
    for stage in encoder.stages:
        grid = (h.shape[1] // 2, h.shape[2] // 2) if len(stage.downsampling_layer) else h.shape[1:3]
        visible = stage_visibility(mask, grid)
        h = jnp.where(visible, stage(h, visible), zero)
        hidden.append(h)
    return hidden


# --------------------------------------------------------------------------- sizes and registry functions


def _sizes(model_type: str, table: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[str, ConvNeXtConfig]:
    scale = 1e-6 if model_type == "convnext" else 0.0  # HF's V1 default; V2 has GRN instead
    return {v: ConvNeXtConfig(model_type=model_type, depths=d, hidden_sizes=h, layer_scale_init_value=scale)
            for v, (d, h) in table.items()}


# (depths, hidden_sizes) of every size transformers/facebook publish, plus a tiny test size
_TEST = ((1, 1, 2, 1), (8, 16, 32, 64))
VARIANTS: dict[str, dict[str, ConvNeXtConfig]] = {
    "convnextv2": _sizes("convnextv2", {
        "test": _TEST,
        "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
        "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
        "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
        "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
        "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
        "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
        "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
        "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
    }),
    "convnext": _sizes("convnext", {
        "test": _TEST,
        "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
        "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
        "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
        "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
        "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
    }),
}

_ARCHITECTURE = common.Architecture(ConvNeXtConfig, VARIANTS, ConvNeXt, aliases={"dropout": "head_dropout"})
variants, config_for, config_from_dict, from_config, create = _ARCHITECTURE.functions()
