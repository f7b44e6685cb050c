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

import numpy as np

from brain_jax.convert.config_json import classifier_config, classifier_fields, completed, expect, make_config
from brain_jax.convert.core import CONV, IDENTITY, ConversionError, KeyMap, dense_entries, norm_entries
from brain_jax.models.vit import ViT, ViTConfig, config_from_dict

MODEL_TYPES = ("vit",)
# ViTConfig fields read from config.json under the same name
_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_channels",
           "qkv_bias", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps")


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
    """ViTConfig from a transformers config.json dict; unsupported options raise ConversionError.

    0 labels: a headless checkpoint (see ``prepare``).
    """
    hf = completed(hf, MODEL_TYPES, where)
    expect(hf, "hidden_act", "gelu", where)
    if hf.get("head_dim") not in (None, hf["hidden_size"] // max(hf["num_attention_heads"], 1)):
        raise ConversionError(f"{where}: head_dim={hf['head_dim']} != hidden_size/num_attention_heads is not supported")
    # drop_path_rate is brain-jax's own field (HF's ViT has no stochastic depth): absent from transformers' configs
    return make_config(config_from_dict, where, **classifier_fields(hf, where),
                       drop_path_rate=hf.get("drop_path_rate", 0.0), **{k: hf[k] for k in _FIELDS})


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
            qkv = f"{p}.attention.attention.{name}"
            m.update(dense_entries(qkv, f"vit.{qkv}", bias=cfg.qkv_bias))
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
    # drop_path_rate: brain-jax's own field (HF's ViT has no stochastic depth and ignores it)
    return classifier_config(cfg, "ViTForImageClassification", _FIELDS, encoder_stride=cfg.patch_size,
                             drop_path_rate=cfg.drop_path_rate)
