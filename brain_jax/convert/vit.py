"""HF ``ViTForImageClassification`` <-> ``brain_jax.models.vit.ViT``: explicit key map and config.

HF keys are the ones ``save_pretrained`` writes (transformers 5.24 renames them to ``q_proj``/``mlp.fc1``
internally and back on save): ``vit.`` + our path with ``.weight``/``.bias`` for ``.kernel``/``.bias``
(LayerNorm ``scale`` <-> ``weight``), and ``classifier.*`` for the head.

Headless ``ViTModel`` checkpoints (e.g. ``google/vit-base-patch16-224-in21k``: keys without the ``vit.``
prefix, no classifier, a ``pooler``) load as a ViT with ``num_labels=0`` whose output is the final class
token; ``init_from`` then adds a fresh classifier. Their pooler is not used (``ViTForImageClassification``
classifies the class token without it, as transformers does on the same load): ``prepare`` names the
skipped keys in a warning. In a checkpoint that has a classifier, pooler weights are an error like any
other unused key.
"""
from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
from flax import nnx

from brain_jax.convert.core import CONV, IDENTITY, ConversionError, KeyMap
from brain_jax.convert.core import dense_entries, norm_entries
from brain_jax.convert.native import skeleton
from brain_jax.convert.swin import expect_value, hf_labels, square_int
from brain_jax.models.vit import ViT, ViTConfig

MODEL_TYPES = ("vit",)


def ignore(hf_key: str) -> bool:
    """ViT checkpoints hold no buffers: every key is a weight."""
    return False


def prepare(hf: dict, tensors: dict[str, np.ndarray], where: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Bring a headless ``ViTModel`` checkpoint to the classifier layout (see the module docstring)."""
    if "vit.embeddings.cls_token" not in tensors and "embeddings.cls_token" in tensors:
        tensors = {f"vit.{k}": v for k, v in tensors.items()}  # a base-model save has no prefix
    if any(k.startswith("classifier.") for k in tensors):
        return hf, tensors
    pooler = sorted(k for k in tensors if k.startswith("vit.pooler."))
    if pooler:
        warnings.warn(f"{where}: headless ViT checkpoint; {', '.join(pooler)} not used (the classifier reads "
                      "the final class token without the pooler, as in transformers)", stacklevel=3)
        tensors = {k: v for k, v in tensors.items() if k not in pooler}
    hf = {k: v for k, v in hf.items() if k not in ("id2label", "label2id")}
    return {**hf, "num_labels": 0}, tensors


def config_from_hf(hf: dict, where: str = "config.json") -> ViTConfig:
    """ViTConfig from a transformers config.json dict; unsupported options raise ConversionError."""
    if hf.get("model_type") != "vit":
        raise ConversionError(f"{where}: model_type {hf.get('model_type')!r} is not 'vit'")
    expect_value(hf, "hidden_act", "gelu", where)
    hidden = int(hf.get("hidden_size", 768))
    heads = int(hf.get("num_attention_heads", 12))
    if hf.get("head_dim") not in (None, hidden // max(heads, 1)):
        raise ConversionError(f"{where}: head_dim={hf['head_dim']} != hidden_size/num_attention_heads is not supported")
    num_labels, names = (0, ()) if hf.get("num_labels") == 0 and not hf.get("id2label") else hf_labels(hf, where)
    try:
        return ViTConfig(
            num_labels=num_labels,
            label_names=names,
            hidden_size=hidden,
            num_hidden_layers=int(hf.get("num_hidden_layers", 12)),
            num_attention_heads=heads,
            intermediate_size=int(hf.get("intermediate_size", 3072)),
            image_size=square_int(hf.get("image_size", 224), "image_size", where),
            patch_size=square_int(hf.get("patch_size", 16), "patch_size", where),
            num_channels=int(hf.get("num_channels", 3)),
            qkv_bias=bool(hf.get("qkv_bias", True)),
            hidden_dropout_prob=float(hf.get("hidden_dropout_prob", 0.0)),
            attention_probs_dropout_prob=float(hf.get("attention_probs_dropout_prob", 0.0)),
            drop_path_rate=float(hf.get("drop_path_rate", 0.0)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        )
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from e


def build_from_hf_config(hf_config: dict, dtype: jnp.dtype = jnp.float32) -> ViT:
    """The model described by an HF config, with zero placeholder weights (``from_hf`` fills them all)."""
    cfg = config_from_hf(hf_config)
    return skeleton(lambda: ViT(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)))


def key_map(model: ViT) -> KeyMap:
    """``{our dotted path: (HF key, hook)}`` for every parameter of ``model``."""
    cfg = model.config
    m: dict = {
        "embeddings.cls_token": ("vit.embeddings.cls_token", IDENTITY),
        "embeddings.position_embeddings": ("vit.embeddings.position_embeddings", IDENTITY),
    }
    proj = "embeddings.patch_embeddings.projection"
    m[f"{proj}.kernel"] = (f"vit.{proj}.weight", CONV)
    m[f"{proj}.bias"] = (f"vit.{proj}.bias", IDENTITY)
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        m.update(norm_entries(f"{p}.layernorm_before", f"vit.{p}.layernorm_before"))
        for name in ("query", "key", "value"):
            m.update(dense_entries(f"{p}.attention.attention.{name}", f"vit.{p}.attention.attention.{name}", bias=cfg.qkv_bias))
        for name in ("attention.output.dense", "intermediate.dense", "output.dense"):
            m.update(dense_entries(f"{p}.{name}", f"vit.{p}.{name}"))
        m.update(norm_entries(f"{p}.layernorm_after", f"vit.{p}.layernorm_after"))
    m.update(norm_entries("layernorm", "vit.layernorm"))
    if cfg.num_labels:
        m.update(dense_entries("classifier", "classifier"))
    return m


def hf_config(model: ViT) -> dict:
    """A config.json that ``transformers.AutoModelForImageClassification`` loads as this model."""
    cfg = model.config
    names = cfg.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_labels))
    return {
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.num_channels,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "qkv_bias": cfg.qkv_bias,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "layer_norm_eps": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "encoder_stride": cfg.patch_size,
        "drop_path_rate": cfg.drop_path_rate,  # brain-jax only (HF's ViT has no stochastic depth; ignored there)
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }
