"""HF ``SwinForImageClassification`` <-> ``brain_jax.models.swin.Swin``: explicit key map and config.

HF keys are the ones ``save_pretrained`` writes (transformers 5.24 renames them to ``q_proj``/``mlp.fc1``
internally on load and back on save): ``swin.`` + our path, with ``.weight``/``.bias`` for our
``.kernel``/``.bias`` (LayerNorm ``scale`` <-> ``weight``), and ``classifier.*`` for the head.
"""
from __future__ import annotations

import re

from brain_jax.convert.config_json import classifier_config, classifier_fields, completed, expect, make_config
from brain_jax.convert.core import CONV, IDENTITY, KeyMap, dense_entries, norm_entries
from brain_jax.models.swin import Swin, SwinConfig, config_from_dict

MODEL_TYPES = ("swin",)

# buffers HF stored in older checkpoints; we recompute them from the window size
_IGNORE = re.compile(r"\.attention\.(self|relative_position_bias)\.relative_position_index$")
# SwinConfig fields read from config.json under the same name
_FIELDS = ("embed_dim", "depths", "num_heads", "window_size", "num_channels", "mlp_ratio", "qkv_bias",
           "hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate", "layer_norm_eps")


def ignore(hf_key: str) -> bool:
    return bool(_IGNORE.search(hf_key))


def config_from_hf(hf: dict, where: str = "config.json") -> SwinConfig:
    """SwinConfig from a transformers config.json dict; unsupported options raise ConversionError."""
    hf = completed(hf, MODEL_TYPES, where)
    expect(hf, "hidden_act", "gelu", where)
    expect(hf, "use_absolute_embeddings", False, where)
    return make_config(config_from_dict, where, **classifier_fields(hf, where), **{k: hf[k] for k in _FIELDS})


def key_map(model: Swin) -> KeyMap:
    """``{our dotted path: (HF key, hook)}`` for every parameter of ``model``."""
    cfg = model.config
    m: dict = {}
    proj = "embeddings.patch_embeddings.projection"
    m[f"{proj}.kernel"] = (f"swin.{proj}.weight", CONV)
    m[f"{proj}.bias"] = (f"swin.{proj}.bias", IDENTITY)
    m.update(norm_entries("embeddings.norm", "swin.embeddings.norm"))
    for s, depth in enumerate(cfg.depths):
        for b in range(depth):
            p = f"encoder.layers.{s}.blocks.{b}"
            m.update(norm_entries(f"{p}.layernorm_before", f"swin.{p}.layernorm_before"))
            for name in ("query", "key", "value"):
                qkv = f"{p}.attention.self.{name}"
                m.update(dense_entries(qkv, f"swin.{qkv}", bias=cfg.qkv_bias))
            table = f"{p}.attention.self.relative_position_bias_table"
            m[table] = (f"swin.{table}", IDENTITY)
            for name in ("attention.output.dense", "intermediate.dense", "output.dense"):
                m.update(dense_entries(f"{p}.{name}", f"swin.{p}.{name}"))
            m.update(norm_entries(f"{p}.layernorm_after", f"swin.{p}.layernorm_after"))
        if s < len(cfg.depths) - 1:
            d = f"encoder.layers.{s}.downsample"
            m.update(dense_entries(f"{d}.reduction", f"swin.{d}.reduction", bias=False))
            m.update(norm_entries(f"{d}.norm", f"swin.{d}.norm"))
    m.update(norm_entries("layernorm", "swin.layernorm"))
    m.update(dense_entries("classifier", "classifier"))
    return m


def hf_config(model: Swin) -> dict:
    """A config.json that ``transformers.AutoModelForImageClassification`` loads as this model."""
    cfg = model.config
    return classifier_config(cfg, "SwinForImageClassification", _FIELDS, encoder_stride=32,
                             hidden_size=cfg.num_features, num_layers=len(cfg.depths), use_absolute_embeddings=False)
