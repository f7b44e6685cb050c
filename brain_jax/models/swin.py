"""Swin Transformer (Liu et al. 2021) image classifier in Flax NNX, numerically matching HF transformers.

Attribute names follow the keys that transformers' ``save_pretrained`` writes for
``SwinForImageClassification`` (without the ``swin.`` prefix), e.g.
``encoder.layers.0.blocks.1.attention.self.relative_position_bias_table``, so conversion is a rename
map plus transposes (``brain_jax/convert/swin.py``).

Variants (``variants("swin")``): ``{tiny,small,base,large}_w7`` (window 7, 224 px, e.g.
``microsoft/swin-tiny-patch4-window7-224``), ``{tiny,small,base,large}_w12`` (window 12, 384 px, e.g.
``microsoft/swin-base-patch4-window12-384``) and ``test`` (a tiny CPU size for tests and the demo).

Any input size runs (the configured ``image_size`` is only what a checkpoint was trained at):

- the image is zero-padded right/bottom to a multiple of the patch size, every feature map to a multiple
  of the (effective) window before attention, and odd maps by one row/column before patch merging, as HF
  does; padded tokens are not masked out (HF does not mask them either);
- when a stage's map is no larger than the window (``min(H, W) <= window_size``) the block uses a window of
  ``min(H, W)`` and no shift, which is HF's rule. HF then still adds the full ``window_size²`` bias and
  crashes ("The size of tensor a (25) must match the size of tensor b (49)", e.g. a 160 or 192 px input
  with window 7). We instead take the central part of the learned bias table that covers the smaller
  window's offsets: the bias for a relative offset (dy, dx) is always the table entry for (dy, dx), so a
  shrunk window sees exactly the biases the full window uses for the same offsets
  (``relative_position_index(window, table_window)``).

Training-time regularisation follows HF: ``hidden_dropout_prob`` after the patch embedding, after the
attention projection and after the MLP; ``attention_probs_dropout_prob`` on attention weights;
stochastic depth (``drop_path_rate``, linear per-block schedule) on the attention branch only — HF's
Swin, unlike the original code, does not drop the MLP branch.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brain_jax.models import common
from brain_jax.models.common import Dense, DropPath, drop_path_rates, gelu, layer_norm, linear


@dataclass(frozen=True)
class SwinConfig:
    """Hyper-parameters of a Swin classifier; field names follow HF ``SwinConfig``."""

    num_labels: int = 1000
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    image_size: int = 224
    patch_size: int = 4
    num_channels: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-5
    label_names: tuple[str, ...] = ()
    model_type: str = "swin"

    def __post_init__(self) -> None:
        problems = []
        if self.model_type != "swin":
            problems.append(f"model_type must be 'swin', got {self.model_type!r}")
        if len(self.depths) != len(self.num_heads) or not self.depths:
            problems.append(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty, same length")
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if heads < 1 or dim % heads:
                problems.append(f"num_heads[{i}]={heads} must divide stage width {dim}")
        common.check_config(self, problems, at_least_one=("window_size", "patch_size", "num_channels", "embed_dim",
                                                          "num_labels"),
                            rates=("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"))

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


# --------------------------------------------------------------------------- window helpers


def relative_position_index(window: int, table_window: int | None = None) -> np.ndarray:
    """(window², window²) indices into a ``(2·table_window−1)²`` bias table, rows = queries.

    With ``table_window == window`` this is HF's ``relative_position_index`` buffer. With a smaller
    ``window`` (a stage map smaller than the configured window) it indexes the central part of the table,
    so each relative offset (dy, dx) keeps its learned bias.
    """
    tw = window if table_window is None else table_window
    if not 1 <= window <= tw:
        raise ValueError(f"window {window} must be in [1, table window {tw}]")
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): query minus key
    return (rel[0] + tw - 1) * (2 * tw - 1) + (rel[1] + tw - 1)


def effective_window(height: int, width: int, window: int, shift: int) -> tuple[int, int]:
    """HF's rule: a map no larger than the window is one window, unshifted."""
    if min(height, width) <= window:
        return min(height, width), 0
    return window, shift


def shift_attention_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """(num_windows, N, N) additive mask for shifted windows: −100 between tokens of different regions."""
    def regions(n: int) -> np.ndarray:
        idx = np.arange(n)
        return (idx >= n - window).astype(np.int64) + (idx >= n - shift).astype(np.int64)

    img = regions(height)[:, None] * 3 + regions(width)[None, :]
    win = img.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    win = win.reshape(-1, window * window)
    return np.where(win[:, None, :] != win[:, :, None], -100.0, 0.0).astype(np.float32)


def window_partition(x: jax.Array, window: int) -> jax.Array:
    """(B, H, W, C) -> (B·num_windows, window², C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: jax.Array, window: int, height: int, width: int) -> jax.Array:
    """Inverse of ``window_partition``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


# --------------------------------------------------------------------------- layers


class SwinSelfAttention(nnx.Module):
    """Window multi-head attention with a learned relative position bias table."""

    def __init__(self, cfg: SwinConfig, dim: int, heads: int, *, dtype, rngs: nnx.Rngs):
        self.query = linear(dim, dim, dtype=dtype, rngs=rngs, use_bias=cfg.qkv_bias)
        self.key = linear(dim, dim, dtype=dtype, rngs=rngs, use_bias=cfg.qkv_bias)
        self.value = linear(dim, dim, dtype=dtype, rngs=rngs, use_bias=cfg.qkv_bias)
        n = (2 * cfg.window_size - 1) ** 2
        self.relative_position_bias_table = nnx.Param(common.TRUNC_NORMAL(rngs.params(), (n, heads), jnp.float32))
        self.dropout = nnx.Dropout(cfg.attention_probs_dropout_prob, rngs=rngs)
        self.num_heads = heads
        self.table_window = cfg.window_size
        self.dtype = dtype

    def bias(self, window: int) -> jax.Array:
        """(heads, window², window²) bias for a ``window``-sized window (central part of the table)."""
        idx = relative_position_index(window, self.table_window)
        return jnp.transpose(self.relative_position_bias_table[...][idx], (2, 0, 1))

    def __call__(self, x: jax.Array, window: int, mask: np.ndarray | None) -> jax.Array:
        bw, n, c = x.shape
        hd = c // self.num_heads

        def heads(t: jax.Array) -> jax.Array:
            return t.reshape(bw, n, self.num_heads, hd).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = jnp.einsum("bhnd,bhmd->bhnm", q, k).astype(jnp.float32) * hd**-0.5
        scores = scores + self.bias(window)[None]
        if mask is not None:
            nw = mask.shape[0]
            scores = scores.reshape(bw // nw, nw, self.num_heads, n, n) + jnp.asarray(mask)[None, :, None]
            scores = scores.reshape(bw, self.num_heads, n, n)
        probs = self.dropout(jax.nn.softmax(scores, axis=-1).astype(self.dtype))
        out = jnp.einsum("bhnm,bhmd->bhnd", probs, v)
        return out.transpose(0, 2, 1, 3).reshape(bw, n, c)


class SwinAttention(nnx.Module):
    def __init__(self, cfg: SwinConfig, dim: int, heads: int, *, dtype, rngs: nnx.Rngs):
        self.self = SwinSelfAttention(cfg, dim, heads, dtype=dtype, rngs=rngs)
        self.output = Dense(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, window: int, mask: np.ndarray | None) -> jax.Array:
        return self.output(self.self(x, window, mask))


class SwinLayer(nnx.Module):
    """One (shifted-)window block on an NHWC map."""

    def __init__(self, cfg: SwinConfig, dim: int, heads: int, shift: int, drop_path: float, *, dtype,
                 rngs: nnx.Rngs):
        self.layernorm_before = layer_norm(dim, cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
        self.attention = SwinAttention(cfg, dim, heads, dtype=dtype, rngs=rngs)
        self.layernorm_after = layer_norm(dim, cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
        hidden = int(cfg.mlp_ratio * dim)
        self.intermediate = Dense(dim, hidden, dtype=dtype, rngs=rngs)
        self.output = Dense(hidden, dim, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob, rngs=rngs)
        self.drop_path = DropPath(drop_path, rngs=rngs)
        self.window_size = cfg.window_size
        self.shift_size = shift

    def __call__(self, x: jax.Array) -> jax.Array:
        _, h, w, _ = x.shape
        window, shift = effective_window(h, w, self.window_size, self.shift_size)
        y = self.layernorm_before(x)
        pad_h, pad_w = (-h) % window, (-w) % window
        y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        hp, wp = h + pad_h, w + pad_w
        if shift:
            y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
        mask = shift_attention_mask(hp, wp, window, shift) if shift else None
        attn = self.dropout(self.attention(window_partition(y, window), window, mask))
        y = window_reverse(attn, window, hp, wp)
        if shift:
            y = jnp.roll(y, (shift, shift), axis=(1, 2))
        x = x + self.drop_path(y[:, :h, :w, :])
        y = self.output(gelu(self.intermediate(self.layernorm_after(x))))
        return x + self.dropout(y)


class SwinPatchMerging(nnx.Module):
    """2×2 neighbourhood concat (HF order) -> LayerNorm(4C) -> Linear(4C, 2C, no bias)."""

    def __init__(self, dim: int, *, dtype, rngs: nnx.Rngs):
        self.reduction = linear(4 * dim, 2 * dim, dtype=dtype, rngs=rngs, use_bias=False)
        self.norm = layer_norm(4 * dim, 1e-5, dtype=dtype, rngs=rngs)  # HF uses nn.LayerNorm's default eps here

    def __call__(self, x: jax.Array) -> jax.Array:
        _, h, w, _ = x.shape
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        return self.reduction(self.norm(x))


class SwinStage(nnx.Module):
    def __init__(self, cfg: SwinConfig, idx: int, rates: list[float], *, dtype, rngs: nnx.Rngs):
        dim = cfg.embed_dim * 2**idx
        self.blocks = nnx.List([
            SwinLayer(cfg, dim, cfg.num_heads[idx], 0 if i % 2 == 0 else cfg.window_size // 2, rates[i],
                      dtype=dtype, rngs=rngs)
            for i in range(cfg.depths[idx])
        ])
        last = idx == len(cfg.depths) - 1
        self.downsample = nnx.data(None) if last else SwinPatchMerging(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class SwinEncoder(nnx.Module):
    def __init__(self, cfg: SwinConfig, *, dtype, rngs: nnx.Rngs):
        rates = drop_path_rates(cfg.drop_path_rate, tuple(cfg.depths))
        self.layers = nnx.List([SwinStage(cfg, i, rates[i], dtype=dtype, rngs=rngs) for i in range(len(cfg.depths))])


class PatchEmbeddings(nnx.Module):
    def __init__(self, cfg: SwinConfig, dim: int, *, dtype, rngs: nnx.Rngs):
        p = cfg.patch_size
        self.projection = common.patch_conv(cfg.num_channels, dim, p, dtype=dtype,
                                            kernel_init=nnx.initializers.lecun_normal(), rngs=rngs)
        self.patch_size = p

    def __call__(self, x: jax.Array) -> jax.Array:
        _, h, w, _ = x.shape
        x = jnp.pad(x, ((0, 0), (0, (-h) % self.patch_size), (0, (-w) % self.patch_size), (0, 0)))
        return self.projection(x)


class SwinEmbeddings(nnx.Module):
    def __init__(self, cfg: SwinConfig, *, dtype, rngs: nnx.Rngs):
        self.patch_embeddings = PatchEmbeddings(cfg, cfg.embed_dim, dtype=dtype, rngs=rngs)
        self.norm = layer_norm(cfg.embed_dim, 1e-5, dtype=dtype, rngs=rngs)  # HF: nn.LayerNorm default eps
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dropout(self.norm(self.patch_embeddings(x)))


class Swin(nnx.Module):
    """Swin image classifier: ``model(x_nhwc)`` -> logits (B, num_labels), float32.

    ``model(x, output_hidden_states=True)`` -> ``(logits, hidden)`` where ``hidden`` is HF's
    ``reshaped_hidden_states`` in NHWC: the patch-embedding output, then each stage's output (after its
    patch merging, as HF returns by default) — ``len(depths) + 1`` maps.
    """

    head_paths: tuple[str, ...] = ("classifier",)

    def __init__(self, config: SwinConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        self.embeddings = SwinEmbeddings(config, dtype=dtype, rngs=rngs)
        self.encoder = SwinEncoder(config, dtype=dtype, rngs=rngs)
        self.layernorm = layer_norm(config.num_features, config.layer_norm_eps, dtype=dtype, rngs=rngs)
        self.classifier = linear(config.num_features, config.num_labels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, output_hidden_states: bool = False):
        if x.ndim != 4 or x.shape[-1] != self.config.num_channels:
            raise ValueError(f"Swin expects NHWC images with {self.config.num_channels} channels, got {x.shape}")
        h = self.embeddings(x.astype(self.dtype))
        hidden = [h]
        for stage in self.encoder.layers:
            h = stage(h)
            hidden.append(h)
        pooled = jnp.mean(self.layernorm(h).astype(jnp.float32), axis=(1, 2))
        logits = self.classifier(pooled.astype(self.dtype)).astype(jnp.float32)
        return (logits, hidden) if output_hidden_states else logits


# --------------------------------------------------------------------------- sizes and registry functions


_SIZES = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
VARIANTS: dict[str, SwinConfig] = {
    f"{size}_w{w}": SwinConfig(window_size=w, image_size=224 if w == 7 else 384, **kw)
    for size, kw in _SIZES.items()
    for w in (7, 12)
}
VARIANTS["test"] = SwinConfig(
    embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, image_size=32, patch_size=2, drop_path_rate=0.0
)

_ARCHITECTURE = common.Architecture(SwinConfig, {"swin": VARIANTS}, Swin, aliases=common.HF_DROPOUT_ALIASES)
variants, config_for, config_from_dict, from_config, create = _ARCHITECTURE.functions()
