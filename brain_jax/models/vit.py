"""Vision Transformer (Dosovitskiy et al. 2021) image classifier in Flax NNX, matching HF transformers.

Attribute names follow the keys ``save_pretrained`` writes for ``ViTForImageClassification`` (without
the ``vit.`` prefix): ``embeddings.{cls_token, position_embeddings, patch_embeddings.projection}``,
``encoder.layer.N.{layernorm_before, attention.attention.{query,key,value}, attention.output.dense,
layernorm_after, intermediate.dense, output.dense}``, ``layernorm``, ``classifier``.

Variants (``variants("vit")``): ``small_16`` (DeiT-S: ``facebook/deit-small-patch16-224``, which HF ships
as a ``ViTForImageClassification``), ``base_16``, ``base_32``, ``large_16``, ``large_32``, ``huge_14`` (as
``google/vit-{base,large}-patch{16,32}-*``, ``google/vit-huge-patch14-224-in21k``; 224 px unless
``image_size`` is overridden) and ``test`` (a tiny CPU size).

Other resolutions: when the patch grid differs from the configured ``image_size // patch_size`` grid,
the patch position embeddings are resized like HF's ``interpolate_pos_encoding=True`` — PyTorch bicubic
(a = −0.75, ``align_corners=False``, no antialias, border-clamped taps) to ``(H // patch, W // patch)``;
``torch_bicubic_matrix`` reproduces it, since ``jax.image.resize`` uses a different cubic kernel. The
class-token position embedding is kept. Pixels beyond a multiple of the patch size are dropped, as the
stride-``patch`` convolution does in PyTorch.

Regularisation: ``hidden_dropout_prob`` (after embeddings, attention projection and MLP, as HF) and
``attention_probs_dropout_prob``; optional ``drop_path_rate`` (stochastic depth on both residual branches,
linear schedule) which HF's ViT does not have — its default 0 keeps HF's behaviour.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brain_jax.models import common
from brain_jax.models.common import Dense, DropPath, drop_path_rates, gelu, layer_norm, linear


@dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters of a ViT classifier; field names follow HF ``ViTConfig``."""

    num_labels: int = 1000
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-12
    label_names: tuple[str, ...] = ()
    model_type: str = "vit"

    def __post_init__(self) -> None:
        problems = []
        if self.model_type != "vit":
            problems.append(f"model_type must be 'vit', got {self.model_type!r}")
        if self.num_attention_heads < 1 or self.hidden_size % self.num_attention_heads:
            problems.append(
                f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}")
        if self.num_labels < 0:
            problems.append(f"num_labels must be >= 0 (0: no classifier), got {self.num_labels}")
        if self.image_size < self.patch_size:
            problems.append(f"image_size={self.image_size} is smaller than patch_size={self.patch_size}")
        common.check_config(self, problems, at_least_one=("hidden_size", "num_hidden_layers", "intermediate_size",
                                                          "patch_size", "num_channels"),
                            rates=("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"))

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


# --------------------------------------------------------------------------- torch-compatible bicubic


def _cubic_weights(t: float, a: float = -0.75) -> tuple[float, float, float, float]:
    """Keys' cubic convolution weights for taps at offsets −1, 0, 1, 2 (PyTorch uses a = −0.75)."""
    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


@lru_cache(maxsize=64)
def torch_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``
    along one axis, for a call that passes ``size`` (scale = n_in / n_out)."""
    scale = n_in / n_out
    mat = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5  # no clamp at 0 for cubic
        x0 = min(math.floor(src), n_in - 1)
        t = min(max(src - x0, 0.0), 1.0)
        for k, w in enumerate(_cubic_weights(t)):
            mat[i, min(max(x0 - 1 + k, 0), n_in - 1)] += w
    return mat.astype(np.float32)


def interpolate_pos_encoding(pos: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
    """(1, 1 + g², D) position embeddings -> (1, 1 + grid_h·grid_w, D), as HF ``interpolate_pos_encoding``."""
    n = pos.shape[1] - 1
    g = int(round(math.sqrt(n)))
    if g * g != n:
        raise ValueError(f"position_embeddings has {n} patch positions, not a square grid")
    if (grid_h, grid_w) == (g, g):
        return pos
    patch = pos[0, 1:].reshape(g, g, -1)
    mh, mw = jnp.asarray(torch_bicubic_matrix(g, grid_h)), jnp.asarray(torch_bicubic_matrix(g, grid_w))
    patch = jnp.einsum("ih,hwd,jw->ijd", mh, patch.astype(jnp.float32), mw, precision=jax.lax.Precision.HIGHEST)
    patch = patch.astype(pos.dtype).reshape(1, grid_h * grid_w, -1)
    return jnp.concatenate([pos[:, :1], patch], axis=1)


# --------------------------------------------------------------------------- layers


class ViTSelfAttention(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.query = linear(d, d, dtype=dtype, rngs=rngs, use_bias=cfg.qkv_bias)
        self.key = linear(d, d, dtype=dtype, rngs=rngs, use_bias=cfg.qkv_bias)
        self.value = linear(d, d, dtype=dtype, rngs=rngs, use_bias=cfg.qkv_bias)
        self.dropout = nnx.Dropout(cfg.attention_probs_dropout_prob, rngs=rngs)
        self.num_heads = cfg.num_attention_heads
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        hd = c // self.num_heads

        def heads(t: jax.Array) -> jax.Array:
            return t.reshape(b, n, self.num_heads, hd).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = jnp.einsum("bhnd,bhmd->bhnm", q, k).astype(jnp.float32) * hd**-0.5
        probs = self.dropout(jax.nn.softmax(scores, axis=-1).astype(self.dtype))
        out = jnp.einsum("bhnm,bhmd->bhnd", probs, v)
        return out.transpose(0, 2, 1, 3).reshape(b, n, c)


class ViTAttention(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, rngs: nnx.Rngs):
        self.attention = ViTSelfAttention(cfg, dtype=dtype, rngs=rngs)
        self.output = Dense(cfg.hidden_size, cfg.hidden_size, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output(self.attention(x))


class ViTLayer(nnx.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ViTConfig, drop_path: float, *, dtype, rngs: nnx.Rngs):
        self.layernorm_before = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
        self.attention = ViTAttention(cfg, dtype=dtype, rngs=rngs)
        self.layernorm_after = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
        self.intermediate = Dense(cfg.hidden_size, cfg.intermediate_size, dtype=dtype, rngs=rngs)
        self.output = Dense(cfg.intermediate_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob, rngs=rngs)
        self.drop_path = DropPath(drop_path, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.drop_path(self.dropout(self.attention(self.layernorm_before(x))))
        y = self.output(gelu(self.intermediate(self.layernorm_after(x))))
        return x + self.drop_path(self.dropout(y))


class ViTEncoder(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, rngs: nnx.Rngs):
        rates = drop_path_rates(cfg.drop_path_rate, (cfg.num_hidden_layers,))[0]
        self.layer = nnx.List([ViTLayer(cfg, r, dtype=dtype, rngs=rngs) for r in rates])


class PatchEmbeddings(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, rngs: nnx.Rngs):
        p = cfg.patch_size
        self.projection = common.patch_conv(cfg.num_channels, cfg.hidden_size, p, dtype=dtype,
                                            kernel_init=nnx.initializers.lecun_normal(), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.projection(x)


class ViTEmbeddings(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, rngs: nnx.Rngs):
        d, n = cfg.hidden_size, cfg.grid_size**2
        self.cls_token = nnx.Param(common.TRUNC_NORMAL(rngs.params(), (1, 1, d), jnp.float32))
        self.position_embeddings = nnx.Param(common.TRUNC_NORMAL(rngs.params(), (1, 1 + n, d), jnp.float32))
        self.patch_embeddings = PatchEmbeddings(cfg, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        patches = self.patch_embeddings(x)
        b, gh, gw, d = patches.shape
        cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (b, 1, d))
        tokens = jnp.concatenate([cls, patches.reshape(b, gh * gw, d)], axis=1)
        pos = interpolate_pos_encoding(self.position_embeddings[...], gh, gw)
        return self.dropout(tokens + pos.astype(self.dtype))


class ViT(nnx.Module):
    """ViT image classifier: ``model(x_nhwc)`` -> logits (B, num_labels), float32, from the class token.

    ``model(x, output_hidden_states=True)`` -> ``(logits, hidden)`` where ``hidden`` matches HF's
    ``hidden_states``: token sequences (B, 1 + N, D) — the embeddings, then each layer's output
    (``num_hidden_layers + 1`` entries; token 0 is the class token, the rest row-major patches).
    """

    head_paths: tuple[str, ...] = ("classifier",)

    def __init__(self, config: ViTConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        self.embeddings = ViTEmbeddings(config, dtype=dtype, rngs=rngs)
        self.encoder = ViTEncoder(config, dtype=dtype, rngs=rngs)
        self.layernorm = layer_norm(config.hidden_size, config.layer_norm_eps, dtype=dtype, rngs=rngs)
        # num_labels = 0 (a headless ViTModel checkpoint, e.g. in21k): no classifier, the output is the
        # final class token, as HF's ViTForImageClassification gives with an Identity classifier.
        self.classifier = (linear(config.hidden_size, config.num_labels, dtype=dtype, rngs=rngs)
                           if config.num_labels else None)

    def __call__(self, x: jax.Array, output_hidden_states: bool = False):
        p = self.config.patch_size
        if x.ndim != 4 or x.shape[-1] != self.config.num_channels or min(x.shape[1:3]) < p:
            raise ValueError(
                f"ViT expects NHWC images with {self.config.num_channels} channels and sides >= patch_size={p}, "
                f"got {x.shape}"
            )
        h = self.embeddings(x.astype(self.dtype))
        hidden = [h]
        for layer in self.encoder.layer:
            h = layer(h)
            hidden.append(h)
        cls = self.layernorm(h[:, 0])
        logits = (cls if self.classifier is None else self.classifier(cls)).astype(jnp.float32)
        return (logits, hidden) if output_hidden_states else logits


# --------------------------------------------------------------------------- sizes and registry functions


_SIZES = {
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}
VARIANTS: dict[str, ViTConfig] = {
    "small_16": ViTConfig(patch_size=16, **_SIZES["small"]),
    "base_16": ViTConfig(patch_size=16, **_SIZES["base"]),
    "base_32": ViTConfig(patch_size=32, **_SIZES["base"]),
    "large_16": ViTConfig(patch_size=16, **_SIZES["large"]),
    "large_32": ViTConfig(patch_size=32, **_SIZES["large"]),
    "huge_14": ViTConfig(patch_size=14, **_SIZES["huge"]),
    "test": ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      image_size=32, patch_size=8),
}

_ARCHITECTURE = common.Architecture(ViTConfig, {"vit": VARIANTS}, ViT, aliases=common.HF_DROPOUT_ALIASES)
variants, config_for, config_from_dict, from_config, create = _ARCHITECTURE.functions()
