"""SegFormer in Flax NNX: Mix Transformer (MiT) encoder b0-b5 + all-MLP decode head, or MiT classifier.

Attribute names follow the keys HF transformers writes with ``save_pretrained``
(``segformer.encoder.block.{stage}.{layer}.attention.self.query`` ...,
``decode_head.linear_c.{i}.proj``) so conversion is a rename plus transposes. Everything is NHWC: the
encoder keeps tokens as (B, H, W, C) maps and flattens them only inside attention.

Numerics follow HF transformers' SegFormer (v5.24):
- every encoder LayerNorm is ``nn.LayerNorm(C)``, i.e. eps 1e-5, whatever ``layer_norm_eps`` the HF
  config carries (that field is unused there), so eps is a constant here, not config;
- the decode head upsamples each projected stage bilinearly with ``align_corners=False`` to the stage-1
  size (H/4, W/4) and concatenates them in reverse order (c4, c3, c2, c1);
- the decode-head BatchNorm follows ``torch.nn.BatchNorm2d``: batch statistics in training, running
  statistics updated with momentum 0.1 and the *unbiased* batch variance (so ``nnx.BatchNorm``, which
  uses the biased one, is not used).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from brain_jax.models import common
from brain_jax.models.common import DepthwiseConv, DropPath, drop_path_rates, gelu, layer_norm, linear, resize_bilinear

# HF builds every encoder LayerNorm as nn.LayerNorm(C): eps 1e-5 regardless of config.layer_norm_eps.
ENCODER_LN_EPS = 1e-5
TASKS = ("segmentation", "classification")


@dataclasses.dataclass(frozen=True)
class SegformerConfig:
    """Shape and regularisation of a SegFormer; ``dataclasses.asdict`` of it rebuilds the model."""

    model_type: str = "segformer"
    task: str = "segmentation"  # "segmentation" (decode head) or "classification" (mean pool + linear)
    num_labels: int = 2
    label_names: tuple[str, ...] = ()  # id2label values; empty -> "LABEL_i"
    num_channels: int = 3
    hidden_sizes: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_attention_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)
    decoder_hidden_size: int = 256
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    classifier_dropout: float = 0.1
    drop_path_rate: float = 0.1
    batch_norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.9  # flax convention: running = m * running + (1 - m) * batch (torch 0.1)
    depthwise_impl: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, got {self.task!r}")
        n = len(self.hidden_sizes)
        for field in ("depths", "num_attention_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios"):
            if len(getattr(self, field)) != n:
                problems.append(f"{field} has {len(getattr(self, field))} entries, expected one per stage ({n}, "
                                "the length of hidden_sizes)")
        for i, (c, h) in enumerate(zip(self.hidden_sizes, self.num_attention_heads)):
            if h < 1 or c % h:
                problems.append(f"hidden_sizes[{i}]={c} is not divisible by num_attention_heads[{i}]={h}")
        common.check_config(self, problems, at_least_one=("num_labels", "num_channels", "decoder_hidden_size"),
                            rates=("hidden_dropout", "attention_dropout", "classifier_dropout", "drop_path_rate"))


# --------------------------------------------------------------------------- layers

def _conv(din: int, dout: int, k: int, stride: int, pad: int, dtype, rngs: nnx.Rngs, use_bias: bool = True):
    # SegFormer's own init: normal(0, sqrt(2 / fan_out)), fan_out = k*k*out.
    init = nnx.initializers.normal(stddev=math.sqrt(2.0 / (k * k * dout)))
    if k == stride and pad == 0:  # patchify / pointwise: computed as a matrix multiply
        return common.patch_conv(din, dout, k, use_bias=use_bias, dtype=dtype, kernel_init=init, rngs=rngs)
    return nnx.Conv(din, dout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                    use_bias=use_bias, dtype=dtype, kernel_init=init, rngs=rngs)


def _dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
    # no RNG stream for a rate of 0 (forking one would shift every later stream)
    return nnx.Dropout(rate, rngs=rngs if rate > 0 else None)


class BatchNorm2d(nnx.Module):
    """``torch.nn.BatchNorm2d`` semantics on NHWC: batch stats in training, unbiased running-var update.

    ``mean``/``var`` are BatchStats (HF ``running_mean``/``running_var``); ``scale``/``bias`` Params.
    ``use_running_average`` follows ``model.train()`` / ``model.eval()``.
    """

    def __init__(self, c: int, *, momentum: float = 0.9, epsilon: float = 1e-5, dtype=jnp.float32,
                 use_running_average: bool = False):
        self.scale = nnx.Param(jnp.ones((c,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((c,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((c,), jnp.float32))
        self.momentum = momentum
        self.epsilon = epsilon
        self.dtype = dtype
        self.use_running_average = use_running_average

    def set_view(self, use_running_average: bool | None = None) -> None:  # nnx.view hook
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)
            n = math.prod(x.shape[:-1])
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
            self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * unbiased)
        inv = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
        return ((xf - mean) * inv + self.bias[...]).astype(self.dtype)


class OverlapPatchEmbeddings(nnx.Module):
    """Strided k×k conv with k//2 padding (overlapping patches), then LayerNorm."""

    def __init__(self, din: int, dout: int, patch: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.proj = _conv(din, dout, patch, stride, patch // 2, dtype, rngs)
        self.layer_norm = layer_norm(dout, ENCODER_LN_EPS, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.layer_norm(self.proj(x))


class EfficientSelfAttention(nnx.Module):
    """Multi-head attention whose keys/values come from a map shrunk by an sr×sr stride-sr conv + LN."""

    def __init__(self, c: int, heads: int, sr: int, attn_drop: float, *, dtype, rngs: nnx.Rngs):
        self.num_heads = heads
        self.dtype = dtype
        self.query = linear(c, c, dtype=dtype, rngs=rngs)
        self.key = linear(c, c, dtype=dtype, rngs=rngs)
        self.value = linear(c, c, dtype=dtype, rngs=rngs)
        self.sr_ratio = sr
        if sr > 1:
            self.sr = _conv(c, c, sr, sr, 0, dtype, rngs)
            self.layer_norm = layer_norm(c, ENCODER_LN_EPS, dtype=dtype, rngs=rngs)
        else:
            self.sr = nnx.data(None)
            self.layer_norm = nnx.data(None)
        self.dropout = _dropout(attn_drop, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        hd = c // self.num_heads
        q = self.query(x).reshape(b, h * w, self.num_heads, hd)
        kv = x if self.sr is None else self.layer_norm(self.sr(x))
        n_kv = kv.shape[1] * kv.shape[2]
        k = self.key(kv).reshape(b, n_kv, self.num_heads, hd)
        v = self.value(kv).reshape(b, n_kv, self.num_heads, hd)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (hd**-0.5)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
        probs = self.dropout(probs)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return out.reshape(b, h, w, c)


class SelfOutput(nnx.Module):
    def __init__(self, c: int, drop: float, *, dtype, rngs: nnx.Rngs):
        self.dense = linear(c, c, dtype=dtype, rngs=rngs)
        self.dropout = _dropout(drop, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dropout(self.dense(x))


class Attention(nnx.Module):
    def __init__(self, c: int, heads: int, sr: int, cfg: SegformerConfig, *, dtype, rngs: nnx.Rngs):
        # ``self.self`` mirrors HF's ``attention.self`` module name.
        self.self = EfficientSelfAttention(c, heads, sr, cfg.attention_dropout, dtype=dtype, rngs=rngs)
        self.output = SelfOutput(c, cfg.hidden_dropout, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output(self.self(x))


class DWConv(nnx.Module):
    def __init__(self, c: int, *, dtype, impl: str, rngs: nnx.Rngs):
        self.dwconv = DepthwiseConv(c, 3, 1, dtype=dtype, impl=impl, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dwconv(x)


class MixFFN(nnx.Module):
    """dense1 -> 3×3 depthwise conv -> exact GELU -> dropout -> dense2 -> dropout."""

    def __init__(self, c: int, hidden: int, drop: float, *, dtype, impl: str, rngs: nnx.Rngs):
        self.dense1 = linear(c, hidden, dtype=dtype, rngs=rngs)
        self.dwconv = DWConv(hidden, dtype=dtype, impl=impl, rngs=rngs)
        self.dense2 = linear(hidden, c, dtype=dtype, rngs=rngs)
        self.dropout = _dropout(drop, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.dropout(gelu(self.dwconv(self.dense1(x))))
        return self.dropout(self.dense2(x))


class SegformerLayer(nnx.Module):
    """Pre-norm transformer block: x + DropPath(attn(LN(x))), then x + DropPath(MixFFN(LN(x)))."""

    def __init__(self, c: int, heads: int, sr: int, mlp_ratio: int, drop_path: float,
                 cfg: SegformerConfig, *, dtype, rngs: nnx.Rngs):
        self.layer_norm_1 = layer_norm(c, ENCODER_LN_EPS, dtype=dtype, rngs=rngs)
        self.attention = Attention(c, heads, sr, cfg, dtype=dtype, rngs=rngs)
        self.drop_path = DropPath(drop_path, rngs=rngs)
        self.layer_norm_2 = layer_norm(c, ENCODER_LN_EPS, dtype=dtype, rngs=rngs)
        self.mlp = MixFFN(c, int(c * mlp_ratio), cfg.hidden_dropout, dtype=dtype,
                          impl=cfg.depthwise_impl, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.drop_path(self.attention(self.layer_norm_1(x)))
        return x + self.drop_path(self.mlp(self.layer_norm_2(x)))


class MixTransformerEncoder(nnx.Module):
    """Four (or len(hidden_sizes)) stages of patch embedding -> blocks -> LayerNorm."""

    def __init__(self, cfg: SegformerConfig, *, dtype, rngs: nnx.Rngs):
        rates = drop_path_rates(cfg.drop_path_rate, cfg.depths)
        ins = (cfg.num_channels,) + tuple(cfg.hidden_sizes[:-1])
        self.patch_embeddings = nnx.List([
            OverlapPatchEmbeddings(ins[s], c, cfg.patch_sizes[s], cfg.strides[s], dtype=dtype, rngs=rngs)
            for s, c in enumerate(cfg.hidden_sizes)
        ])
        self.block = nnx.List([
            nnx.List([
                SegformerLayer(c, cfg.num_attention_heads[s], cfg.sr_ratios[s], cfg.mlp_ratios[s], rates[s][i],
                               cfg, dtype=dtype, rngs=rngs)
                for i in range(cfg.depths[s])
            ])
            for s, c in enumerate(cfg.hidden_sizes)
        ])
        self.layer_norm = nnx.List([layer_norm(c, ENCODER_LN_EPS, dtype=dtype, rngs=rngs) for c in cfg.hidden_sizes])

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """Per-stage NHWC feature maps (HF's ``hidden_states``, transposed)."""
        feats = []
        for embed, blocks, norm in zip(self.patch_embeddings, self.block, self.layer_norm):
            x = embed(x)
            for blk in blocks:
                x = blk(x)
            x = norm(x)
            feats.append(x)
        return feats


class SegformerModel(nnx.Module):
    def __init__(self, cfg: SegformerConfig, *, dtype, rngs: nnx.Rngs):
        self.encoder = MixTransformerEncoder(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        return self.encoder(x)


class MLPProjection(nnx.Module):
    def __init__(self, din: int, dout: int, *, dtype, rngs: nnx.Rngs):
        self.proj = linear(din, dout, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(x)


class DecodeHead(nnx.Module):
    """All-MLP head: project each stage, upsample to H/4, concat (c4..c1), fuse, BN, ReLU, classify."""

    def __init__(self, cfg: SegformerConfig, *, dtype, rngs: nnx.Rngs):
        d = cfg.decoder_hidden_size
        self.linear_c = nnx.List([MLPProjection(c, d, dtype=dtype, rngs=rngs) for c in cfg.hidden_sizes])
        self.linear_fuse = _conv(d * len(cfg.hidden_sizes), d, 1, 1, 0, dtype, rngs, use_bias=False)
        self.batch_norm = BatchNorm2d(d, momentum=cfg.batch_norm_momentum, epsilon=cfg.batch_norm_eps,
                                      dtype=dtype)
        self.dropout = _dropout(cfg.classifier_dropout, rngs)
        # normal(0, 0.02) as HF (initializer_range): the fan-out rule of the encoder convs would give a
        # 1x1 conv to a few labels std sqrt(2 / num_labels) and a first loss far above log(num_labels).
        self.classifier = common.patch_conv(d, cfg.num_labels, 1, dtype=dtype,
                                            kernel_init=nnx.initializers.normal(stddev=0.02), rngs=rngs)

    def __call__(self, feats: list[jax.Array]) -> jax.Array:
        size = feats[0].shape[1:3]
        maps = [resize_bilinear(proj(f), size) for proj, f in zip(self.linear_c, feats)]
        x = self.linear_fuse(jnp.concatenate(maps[::-1], axis=-1))
        x = jax.nn.relu(self.batch_norm(x))
        return self.classifier(self.dropout(x))


class _SegformerWithHead(nnx.Module):
    """The MiT encoder (``segformer``) under one of HF's heads: ``model(x)`` -> float32 logits.

    ``model(x, output_hidden_states=True)`` -> ``(logits, per-stage NHWC feature maps)``.
    """

    task: str  # the config.task the subclass implements

    def __init__(self, cfg: SegformerConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if cfg.task != self.task:
            raise ValueError(f"{type(self).__name__} needs task={self.task!r}, got {cfg.task!r}")
        self.config = cfg
        self.segformer = SegformerModel(cfg, dtype=dtype, rngs=rngs)

    def head(self, feats: list[jax.Array]) -> jax.Array:
        raise NotImplementedError

    def __call__(self, x: jax.Array, output_hidden_states: bool = False):
        feats = self.segformer(x)
        logits = self.head(feats).astype(jnp.float32)
        return (logits, feats) if output_hidden_states else logits


class SegformerForSemanticSegmentation(_SegformerWithHead):
    """Logits (B, H/4, W/4, num_labels) = HF ``logits`` transposed to NHWC."""

    task = "segmentation"
    head_paths = ("decode_head.classifier",)

    def __init__(self, cfg: SegformerConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(cfg, dtype=dtype, rngs=rngs)
        self.decode_head = DecodeHead(cfg, dtype=dtype, rngs=rngs)

    def head(self, feats: list[jax.Array]) -> jax.Array:
        return self.decode_head(feats)


class SegformerForImageClassification(_SegformerWithHead):
    """MiT classifier (e.g. nvidia/mit-b0): encoder -> mean over positions -> linear."""

    task = "classification"
    head_paths = ("classifier",)

    def __init__(self, cfg: SegformerConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(cfg, dtype=dtype, rngs=rngs)
        self.classifier = linear(cfg.hidden_sizes[-1], cfg.num_labels, dtype=dtype, rngs=rngs)

    def head(self, feats: list[jax.Array]) -> jax.Array:
        pooled = jnp.mean(feats[-1].astype(jnp.float32), axis=(1, 2)).astype(feats[-1].dtype)
        return self.classifier(pooled)


# --------------------------------------------------------------------------- sizes and registry functions


def _build(cfg: SegformerConfig, *, dtype=jnp.float32, rngs: nnx.Rngs) -> _SegformerWithHead:
    cls = SegformerForSemanticSegmentation if cfg.task == "segmentation" else SegformerForImageClassification
    return cls(cfg, dtype=dtype, rngs=rngs)


_WIDE = (64, 128, 320, 512)
VARIANTS: dict[str, SegformerConfig] = {
    "b0": SegformerConfig(hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_hidden_size=256),
    "b1": SegformerConfig(hidden_sizes=_WIDE, depths=(2, 2, 2, 2), decoder_hidden_size=256),
    "b2": SegformerConfig(hidden_sizes=_WIDE, depths=(3, 4, 6, 3), decoder_hidden_size=768),
    "b3": SegformerConfig(hidden_sizes=_WIDE, depths=(3, 4, 18, 3), decoder_hidden_size=768),
    "b4": SegformerConfig(hidden_sizes=_WIDE, depths=(3, 8, 27, 3), decoder_hidden_size=768),
    "b5": SegformerConfig(hidden_sizes=_WIDE, depths=(3, 6, 40, 3), decoder_hidden_size=768),
    # tiny: tests and the CPU demo (two layers in stage 2 so block indexing and the drop-path schedule show)
    "test": SegformerConfig(hidden_sizes=(8, 16, 24, 32), depths=(1, 2, 1, 1), num_attention_heads=(1, 2, 2, 2),
                            decoder_hidden_size=32),
}

# ``task="classification"`` in create's overrides gives the MiT classifier form. ``image_size`` is accepted
# and dropped: SegFormer has no position embeddings, any size works.
_ARCHITECTURE = common.Architecture(
    SegformerConfig, {"segformer": VARIANTS}, _build,
    aliases={"dropout": "hidden_dropout", "hidden_dropout_prob": "hidden_dropout",
             "attention_probs_dropout_prob": "attention_dropout", "classifier_dropout_prob": "classifier_dropout"},
    ignored=frozenset({"image_size"}),
)
variants, config_for, config_from_dict, from_config, create = _ARCHITECTURE.functions()
