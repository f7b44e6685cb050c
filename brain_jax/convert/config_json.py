"""Reading and writing the fields of a transformers ``config.json`` the way transformers does.

``save_pretrained`` leaves out values equal to the config class's defaults (transformers 5.24 drops the
``PreTrainedConfig``-level ones, e.g. ``id2label`` of a 2-label model; configs written by other tools or
trimmed by hand may lack any field), and transformers fills them back from its classes on load. transformers
is not a dependency at run time, so ``DEFAULTS`` copies the defaults of every field the converters read,
per ``model_type``; ``complete`` fills them in before a converter reads the dict.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from brain_jax.convert.core import ConversionError

# transformers' <Arch>Config() defaults of the fields the converters read (tests compare with transformers)
DEFAULTS: dict[str, dict[str, Any]] = {
    "convnextv2": {
        "num_channels": 3, "patch_size": 4, "hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3],
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "drop_path_rate": 0.0, "image_size": 224,
    },
    "convnext": {
        "num_channels": 3, "patch_size": 4, "hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3],
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "layer_scale_init_value": 1e-6, "drop_path_rate": 0.0,
        "image_size": 224,
    },
    "swin": {
        "image_size": 224, "patch_size": 4, "num_channels": 3, "embed_dim": 96, "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0, "qkv_bias": True,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.1,
        "hidden_act": "gelu", "use_absolute_embeddings": False, "layer_norm_eps": 1e-5,
    },
    "vit": {
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": 1e-12, "image_size": 224, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
    },
    "segformer": {
        "num_channels": 3, "depths": [2, 2, 2, 2], "sr_ratios": [8, 4, 2, 1], "hidden_sizes": [32, 64, 160, 256],
        "patch_sizes": [7, 3, 3, 3], "strides": [4, 2, 2, 2], "num_attention_heads": [1, 2, 5, 8],
        "mlp_ratios": [4, 4, 4, 4], "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "classifier_dropout_prob": 0.1, "drop_path_rate": 0.1,
        "decoder_hidden_size": 256,
    },
}
# PreTrainedConfig: with neither id2label nor num_labels a config has 2 labels named LABEL_0, LABEL_1
DEFAULT_NUM_LABELS = 2


def placeholder_names(num_labels: int) -> tuple[str, ...]:
    """transformers' label names when a config names none: ``LABEL_0``, ``LABEL_1``, ..."""
    return tuple(f"LABEL_{i}" for i in range(num_labels))


def complete(hf: dict) -> dict:
    """A copy of config.json dict ``hf`` with every absent field set as transformers would set it.

    Fills the ``DEFAULTS`` of its ``model_type`` and, without ``id2label``, ``id2label`` from
    ``num_labels`` (default 2) with placeholder names. An unknown ``model_type`` gets only the labels.
    """
    model_type = hf.get("model_type")
    out = {**(DEFAULTS.get(model_type, {}) if isinstance(model_type, str) else {}), **hf}
    if hf.get("id2label") is None:
        n = hf.get("num_labels", DEFAULT_NUM_LABELS)
        if isinstance(n, int) and n >= 0:
            out["id2label"] = {str(i): name for i, name in enumerate(placeholder_names(n))}
    return out


def completed(hf: dict, model_types: Sequence[str], where: str) -> dict:
    """``complete(hf)`` after checking that its ``model_type`` is one of ``model_types``."""
    if hf.get("model_type") not in model_types:
        raise ConversionError(f"{where}: model_type {hf.get('model_type')!r} is not one of {tuple(model_types)}")
    return complete(hf)


def read_labels(hf: dict, where: str, defaults: Sequence[str] = ()) -> tuple[int, tuple[str, ...]]:
    """``(num_labels, label names)`` from a completed config's ``id2label`` (keys 0..n-1).

    Names equal to transformers' placeholders (or to ``defaults``, names an export writes for a model
    that has none) come back as ``()``, so that a round trip keeps the config free of them.
    """
    id2label = hf.get("id2label")
    if not isinstance(id2label, dict):
        raise ConversionError(f"{where}: needs id2label or a non-negative num_labels")
    try:
        items = sorted((int(k), str(v)) for k, v in id2label.items())
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{where}: id2label keys must be integers, got {list(id2label)[:10]}") from e
    if [i for i, _ in items] != list(range(len(items))):
        raise ConversionError(f"{where}: id2label keys must be 0..{len(items) - 1}, got {[i for i, _ in items][:10]}")
    if "num_labels" in hf and hf["num_labels"] != len(items):
        raise ConversionError(f"{where}: num_labels {hf['num_labels']} != {len(items)} id2label entries")
    names = tuple(name for _, name in items)
    if names in (placeholder_names(len(names)), tuple(defaults)):
        names = ()
    return len(items), names


def label_fields(names: Sequence[str], num_labels: int) -> dict[str, dict]:
    """``id2label`` / ``label2id`` of a config.json for ``num_labels`` classes ``names`` (placeholders if none)."""
    names = tuple(names) or placeholder_names(num_labels)
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def json_value(value: Any) -> Any:
    """A config value as config.json holds it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def expect(hf: dict, key: str, want: Any, where: str) -> None:
    """Refuse a field value this implementation does not compute."""
    if hf.get(key, want) != want:
        raise ConversionError(f"{where}: {key}={hf[key]!r} is not supported (brain-jax needs {want!r})")


def square(hf: dict, key: str, where: str) -> int:
    """An image/patch size given as ``n`` or ``[n, n]``; non-square sizes are refused."""
    v = hf[key]
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise ConversionError(f"{where}: non-square {key}={v} is not supported")
        v = v[0]
    return v


def classifier_fields(hf: dict, where: str) -> dict[str, Any]:
    """``num_labels``, ``label_names``, ``image_size`` and ``patch_size`` of an image classifier's config."""
    num_labels, names = read_labels(hf, where)
    return {"num_labels": num_labels, "label_names": names, "image_size": square(hf, "image_size", where),
            "patch_size": square(hf, "patch_size", where)}


def classifier_config(cfg: Any, architecture: str, fields: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The config.json of image classifier config ``cfg`` (the inverse of ``classifier_fields``): its
    ``architecture`` and ``model_type``, image and patch size, the ``fields`` stored under the same name,
    exact GELU, HF's initializer range, ``extra`` fields and the labels."""
    return {
        "architectures": [architecture],
        "model_type": cfg.model_type,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        **{k: json_value(getattr(cfg, k)) for k in fields},
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        **extra,
        **label_fields(cfg.label_names, cfg.num_labels),
    }


def make_config(config_from_dict: Callable[[dict], Any], where: str, **values: Any) -> Any:
    """An architecture's ``config_from_dict(values)``, its ValueError a ConversionError naming ``where``."""
    try:
        return config_from_dict(values)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from e
