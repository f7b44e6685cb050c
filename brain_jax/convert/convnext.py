"""HF ConvNeXt V1 / V2 <-> brain-jax: config translation and the explicit per-key weight map.

HF layout (``convnextv2.`` or ``convnext.`` prefix on the body): torch Conv2d weights are OIHW, the 7×7
depthwise kernel is (C, 1, 7, 7), Linear weights are (out, in), GRN weight/bias are (1, 1, 1, 4C) and
LayerNorms call their scale ``weight``. The map below names every tensor once; nothing is inferred from
a tensor's rank.
"""
from __future__ import annotations

from brain_jax.convert.config_json import classifier_config, classifier_fields, completed, expect, make_config
from brain_jax.convert.core import (
    CONV,
    DEPTHWISE,
    IDENTITY,
    LINEAR,
    ConversionError,
    Hook,
    KeyMap,
    dense_entries,
    norm_entries,
    reshape_hook,
)
from brain_jax.models.convnext import ConvNeXt, ConvNeXtConfig, config_from_dict

MODEL_TYPES = ("convnextv2", "convnext")
_ARCHITECTURES = {"convnextv2": "ConvNextV2ForImageClassification", "convnext": "ConvNextForImageClassification"}
# ConvNeXtConfig fields stored in config.json under the same name
_FIELDS = ("num_channels", "hidden_sizes", "depths", "layer_norm_eps", "drop_path_rate")


def config_from_hf(hf: dict, where: str = "config.json") -> ConvNeXtConfig:
    """Translate a transformers ConvNext(V2)Config dict, refusing what this implementation cannot honour."""
    hf = completed(hf, MODEL_TYPES, where)
    model_type = hf["model_type"]
    archs = hf.get("architectures") or [_ARCHITECTURES[model_type]]
    if not set(archs) & set(_ARCHITECTURES.values()):
        raise ConversionError(
            f"{where}: architectures {archs} has no image-classification model; expected "
            f"{_ARCHITECTURES[model_type]} (a bare backbone checkpoint has no classifier to load)"
        )
    expect(hf, "hidden_act", "gelu", where)
    if "num_stages" in hf and hf["num_stages"] != len(hf["depths"]):
        raise ConversionError(f"{where}: num_stages {hf['num_stages']} != len(depths) {len(hf['depths'])}")
    v1 = {"layer_scale_init_value": hf["layer_scale_init_value"]} if model_type == "convnext" else {}
    return make_config(config_from_dict, where, model_type=model_type, **classifier_fields(hf, where),
                       **{k: hf[k] for k in _FIELDS}, **v1)


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
    v1 = {"layer_scale_init_value": cfg.layer_scale_init_value} if cfg.model_type == "convnext" else {}
    return classifier_config(cfg, _ARCHITECTURES[cfg.model_type], _FIELDS, num_stages=len(cfg.depths), **v1)
