"""HF ConvNeXt V1 / V2 <-> brain-jax: config translation and the explicit per-key weight map.

HF layout (``convnextv2.`` or ``convnext.`` prefix on the body): torch Conv2d weights are OIHW, the 7×7
depthwise kernel is (C, 1, 7, 7), Linear weights are (out, in), GRN weight/bias are (1, 1, 1, 4C) and
LayerNorms call their scale ``weight``. The map below names every tensor once; nothing is inferred from
a tensor's rank.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from brain_jax.convert.core import CONV, DEPTHWISE, IDENTITY, LINEAR, ConversionError, Hook, KeyMap, reshape_hook
from brain_jax.convert.core import dense_entries, norm_entries
from brain_jax.convert.native import skeleton
from brain_jax.models.convnext import ConvNeXt, ConvNeXtConfig, from_config

MODEL_TYPES = ("convnextv2", "convnext")
_ARCHITECTURES = {"convnextv2": "ConvNextV2ForImageClassification", "convnext": "ConvNextForImageClassification"}
_SUPPORTED_HEADS = set(_ARCHITECTURES.values())


def _labels(hf: dict) -> tuple[int, tuple[str, ...]]:
    """num_labels and id2label names (``()`` when they are HF's default ``LABEL_i``)."""
    id2label = hf.get("id2label")
    if id2label:
        try:
            names = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
        except ValueError as e:
            raise ConversionError(f"config.json: id2label keys must be integers, got {sorted(id2label)}") from e
        n = len(names)
        if "num_labels" in hf and int(hf["num_labels"]) != n:
            raise ConversionError(f"config.json: num_labels {hf['num_labels']} != {n} id2label entries")
        default = all(name == f"LABEL_{i}" for i, name in enumerate(names))
        return n, () if default else tuple(names)
    return int(hf.get("num_labels", 2)), ()


def config_from_hf(hf: dict) -> ConvNeXtConfig:
    """Translate a transformers ConvNext(V2)Config dict, refusing what this implementation cannot honour."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConversionError(f"config.json: model_type {model_type!r} is not one of {MODEL_TYPES}")
    archs = hf.get("architectures") or [_ARCHITECTURES[model_type]]
    if not set(archs) & _SUPPORTED_HEADS:
        raise ConversionError(
            f"config.json: architectures {archs} has no image-classification model; expected "
            f"{_ARCHITECTURES[model_type]} (a bare backbone checkpoint has no classifier to load)"
        )
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"config.json: hidden_act {act!r} is not supported (only 'gelu')")
    depths = tuple(int(d) for d in hf.get("depths", (3, 3, 9, 3)))
    dims = tuple(int(d) for d in hf.get("hidden_sizes", (96, 192, 384, 768)))
    if "num_stages" in hf and int(hf["num_stages"]) != len(depths):
        raise ConversionError(f"config.json: num_stages {hf['num_stages']} != len(depths) {len(depths)}")
    num_labels, names = _labels(hf)
    patch = hf.get("patch_size", 4)
    image = hf.get("image_size", 224)
    try:
        return ConvNeXtConfig(
            model_type=model_type,
            num_labels=num_labels,
            hidden_sizes=dims,
            depths=depths,
            num_channels=int(hf.get("num_channels", 3)),
            patch_size=int(patch[0] if isinstance(patch, (list, tuple)) else patch),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            layer_scale_init_value=float(hf.get("layer_scale_init_value", 1e-6)) if model_type == "convnext" else 0.0,
            drop_path_rate=float(hf.get("drop_path_rate", 0.0)),
            image_size=int(image[0] if isinstance(image, (list, tuple)) else image),
            label_names=names,
        )
    except ValueError as e:
        raise ConversionError(f"config.json: {e}") from e


def build_from_hf_config(hf_config: dict, dtype: jnp.dtype = jnp.float32) -> ConvNeXt:
    """The model described by an HF config, with zero placeholder weights (``from_hf`` fills them all)."""
    cfg = config_from_hf(hf_config)
    return skeleton(lambda: from_config(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)))


def key_map(model: ConvNeXt) -> KeyMap:
    """``{our dotted path: (HF key, hook)}`` for every parameter of ``model``."""
    p = model.config.model_type  # HF body prefix: "convnextv2." / "convnext."
    m: dict[str, tuple[str, Hook]] = {}
    m.update(dense_entries("embeddings.patch_embeddings", f"{p}.embeddings.patch_embeddings", CONV))
    m.update(norm_entries("embeddings.layernorm", f"{p}.embeddings.layernorm"))
    for s, stage in enumerate(model.encoder.stages):
        ours_s, hf_s = f"encoder.stages.{s}", f"{p}.encoder.stages.{s}"
        if len(stage.downsampling_layer):
            m.update(norm_entries(f"{ours_s}.downsampling_layer.0", f"{hf_s}.downsampling_layer.0"))
            m.update(dense_entries(f"{ours_s}.downsampling_layer.1", f"{hf_s}.downsampling_layer.1", CONV))
        for b, layer in enumerate(stage.layers):
            ours, hf = f"{ours_s}.layers.{b}", f"{hf_s}.layers.{b}"
            m.update(dense_entries(f"{ours}.dwconv", f"{hf}.dwconv", DEPTHWISE))
            m.update(norm_entries(f"{ours}.layernorm", f"{hf}.layernorm"))
            m.update(dense_entries(f"{ours}.pwconv1", f"{hf}.pwconv1", LINEAR))
            m.update(dense_entries(f"{ours}.pwconv2", f"{hf}.pwconv2", LINEAR))
            if layer.grn is not None:
                c = layer.grn.weight.get_value().shape[0]
                grn = reshape_hook("grn", (1, 1, 1, c), (c,))
                m[f"{ours}.grn.weight"] = (f"{hf}.grn.weight", grn)
                m[f"{ours}.grn.bias"] = (f"{hf}.grn.bias", grn)
            if layer.layer_scale_parameter is not None:
                m[f"{ours}.layer_scale_parameter"] = (f"{hf}.layer_scale_parameter", IDENTITY)
    m.update(norm_entries("layernorm", f"{p}.layernorm"))
    m.update(dense_entries("classifier", "classifier", LINEAR))
    return m


def ignore(hf_key: str) -> bool:
    """ConvNeXt stores no buffers: every HF tensor is a weight and must be used."""
    return False


def hf_config(model: ConvNeXt) -> dict:
    """A config.json for ``ConvNext(V2)ForImageClassification`` describing ``model``."""
    cfg = model.config
    names = cfg.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_labels))
    out = {
        "architectures": [_ARCHITECTURES[cfg.model_type]],
        "model_type": cfg.model_type,
        "num_channels": cfg.num_channels,
        "patch_size": cfg.patch_size,
        "num_stages": len(cfg.depths),
        "hidden_sizes": list(cfg.hidden_sizes),
        "depths": list(cfg.depths),
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "drop_path_rate": cfg.drop_path_rate,
        "image_size": cfg.image_size,
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }
    if cfg.model_type == "convnext":
        out["layer_scale_init_value"] = cfg.layer_scale_init_value
    return out
