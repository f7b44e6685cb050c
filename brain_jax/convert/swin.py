"""HF ``SwinForImageClassification`` <-> ``brain_jax.models.swin.Swin``: explicit key map and config.

HF keys are the ones ``save_pretrained`` writes (transformers 5.24 renames them to ``q_proj``/``mlp.fc1``
internally on load and back on save): ``swin.`` + our path, with ``.weight``/``.bias`` for our
``.kernel``/``.bias`` (LayerNorm ``scale`` <-> ``weight``), and ``classifier.*`` for the head.
"""
from __future__ import annotations

import re

import jax.numpy as jnp
from flax import nnx

from brain_jax.convert.core import CONV, IDENTITY, ConversionError, KeyMap
from brain_jax.convert.core import dense_entries, norm_entries
from brain_jax.convert.native import skeleton
from brain_jax.models.swin import Swin, SwinConfig

MODEL_TYPES = ("swin",)

# buffers HF stored in older checkpoints; we recompute them from the window size
_IGNORE = re.compile(r"\.attention\.(self|relative_position_bias)\.relative_position_index$")


def ignore(hf_key: str) -> bool:
    return bool(_IGNORE.search(hf_key))


def hf_labels(hf: dict, where: str) -> tuple[int, tuple[str, ...]]:
    """num_labels and id2label names from a config.json dict (shared with the ViT converter)."""
    id2label = hf.get("id2label")
    if id2label:
        try:
            names = tuple(str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(len(id2label)))
        except KeyError as e:
            raise ConversionError(f"{where}: id2label keys must be 0..{len(id2label) - 1}, missing {e}") from e
        if "num_labels" in hf and int(hf["num_labels"]) != len(names):
            raise ConversionError(f"{where}: num_labels {hf['num_labels']} != {len(names)} id2label entries")
        placeholder = names == tuple(f"LABEL_{i}" for i in range(len(names)))  # HF's default names
        return len(names), () if placeholder else names
    n = hf.get("num_labels")
    if not isinstance(n, int) or n < 1:
        raise ConversionError(f"{where}: needs id2label or a positive num_labels")
    return n, ()


def expect_value(hf: dict, key: str, want, where: str) -> None:
    if key in hf and hf[key] != want:
        raise ConversionError(f"{where}: {key}={hf[key]!r} is not supported (brain-jax Swin needs {want!r})")


def square_int(v, key: str, where: str) -> int:
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise ConversionError(f"{where}: non-square {key}={v} is not supported")
        v = v[0]
    return int(v)


def config_from_hf(hf: dict, where: str = "config.json") -> SwinConfig:
    """SwinConfig from a transformers config.json dict; unsupported options raise ConversionError."""
    if hf.get("model_type") != "swin":
        raise ConversionError(f"{where}: model_type {hf.get('model_type')!r} is not 'swin'")
    expect_value(hf, "hidden_act", "gelu", where)
    expect_value(hf, "use_absolute_embeddings", False, where)
    num_labels, names = hf_labels(hf, where)
    try:
        return SwinConfig(
            num_labels=num_labels,
            label_names=names,
            embed_dim=int(hf.get("embed_dim", 96)),
            depths=tuple(int(d) for d in hf.get("depths", (2, 2, 6, 2))),
            num_heads=tuple(int(h) for h in hf.get("num_heads", (3, 6, 12, 24))),
            window_size=int(hf.get("window_size", 7)),
            image_size=square_int(hf.get("image_size", 224), "image_size", where),
            patch_size=square_int(hf.get("patch_size", 4), "patch_size", where),
            num_channels=int(hf.get("num_channels", 3)),
            mlp_ratio=float(hf.get("mlp_ratio", 4.0)),
            qkv_bias=bool(hf.get("qkv_bias", True)),
            hidden_dropout_prob=float(hf.get("hidden_dropout_prob", 0.0)),
            attention_probs_dropout_prob=float(hf.get("attention_probs_dropout_prob", 0.0)),
            drop_path_rate=float(hf.get("drop_path_rate", 0.1)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
        )
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from e


def build_from_hf_config(hf_config: dict, dtype: jnp.dtype = jnp.float32) -> Swin:
    """The model described by an HF config, with zero placeholder weights (``from_hf`` fills them all)."""
    cfg = config_from_hf(hf_config)
    return skeleton(lambda: Swin(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)))


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
                m.update(dense_entries(f"{p}.attention.self.{name}", f"swin.{p}.attention.self.{name}", bias=cfg.qkv_bias))
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
    names = cfg.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_labels))
    return {
        "architectures": ["SwinForImageClassification"],
        "model_type": "swin",
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.num_channels,
        "embed_dim": cfg.embed_dim,
        "depths": list(cfg.depths),
        "num_heads": list(cfg.num_heads),
        "window_size": cfg.window_size,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": cfg.qkv_bias,
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "drop_path_rate": cfg.drop_path_rate,
        "hidden_act": "gelu",
        "use_absolute_embeddings": False,
        "layer_norm_eps": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "encoder_stride": 32,
        "hidden_size": cfg.num_features,
        "num_layers": len(cfg.depths),
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }
