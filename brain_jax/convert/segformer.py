"""SegFormer / MiT <-> HF transformers conversion (``SegformerForSemanticSegmentation``,
``SegformerForImageClassification``), plus loading a MiT encoder under a fresh decode head.

HF checkpoints are read with the key names ``save_pretrained`` writes (v5.24 still writes the legacy
``segformer.encoder.block.S.L.attention.self.query`` layout; our attribute paths are the same names).

Label reduction: ADE20k checkpoints ship a preprocessor with ``do_reduce_labels=True`` (label 0 is
dropped, 255 ignored). Our binary tumour task has background 0 / tumour 1, so exports write
``do_reduce_labels: false`` (in config.json and in ``write_preprocessor_config``): reducing labels would
turn the background into the ignore index.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from flax import nnx

from brain_jax.convert import core
from brain_jax.convert.config_json import (
    completed,
    expect,
    json_value,
    label_fields,
    make_config,
    placeholder_names,
    read_labels,
)
from brain_jax.convert.core import CONV, DEPTHWISE, IDENTITY, LINEAR, ConversionError, Hook, KeyMap
from brain_jax.models import segformer as sf
from brain_jax.models.common import DepthwiseConv

MODEL_TYPES = ("segformer",)
# checkpoint heads that load_encoder_into skips on purpose
_HEAD_PREFIXES = ("classifier.", "decode_head.")

_ARCH_TASK = {"SegformerForSemanticSegmentation": "segmentation", "SegformerForImageClassification": "classification"}
# config.json fields that set the encoder's shapes, read under the same name
_SHAPE_FIELDS = ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios")
# names an export writes for the tumour segmentation task (background 0 / tumour 1) when the model has none
_TUMOUR_NAMES = ("background", "tumour")


def _task(hf: dict, where: str) -> str:
    archs = hf.get("architectures") or []
    tasks = {_ARCH_TASK[a] for a in archs if a in _ARCH_TASK}
    if len(tasks) == 1:
        return tasks.pop()
    if not archs:
        return "segmentation"
    raise ConversionError(
        f"{where}: architectures {archs} names no single SegFormer head; expected one of "
        f"{sorted(_ARCH_TASK)} (an encoder-only SegformerModel goes through load_encoder_into)"
    )


def default_label_names(task: str, num_labels: int) -> tuple[str, ...]:
    """id2label written when the config has no names: the tumour task's two classes, else LABEL_i."""
    if task == "segmentation" and num_labels == 2:
        return _TUMOUR_NAMES
    return placeholder_names(num_labels)


def config_from_hf(hf: dict, where: str = "config.json") -> sf.SegformerConfig:
    """Our config for a transformers SegFormer ``config.json`` dict; errors name the bad field."""
    hf = completed(hf, MODEL_TYPES, where)
    expect(hf, "hidden_act", "gelu", where)
    n_stages = len(hf["hidden_sizes"])
    if hf.get("num_encoder_blocks", n_stages) != n_stages:
        raise ConversionError(
            f"{where}: num_encoder_blocks={hf['num_encoder_blocks']} but hidden_sizes has {n_stages} entries"
        )
    task = _task(hf, where)
    num_labels, names = read_labels(hf, where, _TUMOUR_NAMES if task == "segmentation" else ())
    return make_config(
        sf.config_from_dict, where, task=task, num_labels=num_labels, label_names=names,
        num_channels=hf["num_channels"], decoder_hidden_size=hf["decoder_hidden_size"],
        hidden_dropout=hf["hidden_dropout_prob"], attention_dropout=hf["attention_probs_dropout_prob"],
        classifier_dropout=hf["classifier_dropout_prob"], drop_path_rate=hf["drop_path_rate"],
        **{k: hf[k] for k in _SHAPE_FIELDS},
    )


def ignore(hf_key: str) -> bool:
    """BatchNorm's step counter is not a weight (momentum is fixed at 0.1)."""
    return hf_key.endswith(".num_batches_tracked")


def hf_extra_tensors(model: nnx.Module) -> dict[str, np.ndarray]:
    """``num_batches_tracked`` (int64 0) for each BatchNorm: HF expects the buffer; we keep no counter."""
    return {
        ".".join(str(p) for p in path) + ".num_batches_tracked": np.zeros((), np.int64)
        for path, node in nnx.iter_graph(model)
        if isinstance(node, sf.BatchNorm2d)
    }


def _module_entries(mod: nnx.Module) -> dict[str, tuple[str, Hook]] | None:
    """{our attr: (HF param name, hook)} for one leaf module type; None for containers."""
    if isinstance(mod, nnx.Linear):
        return {"kernel": ("weight", LINEAR), "bias": ("bias", IDENTITY)}
    if isinstance(mod, nnx.Conv):
        out = {"kernel": ("weight", CONV)}
        if mod.bias is not None:
            out["bias"] = ("bias", IDENTITY)
        return out
    if isinstance(mod, DepthwiseConv):
        return {"kernel": ("weight", DEPTHWISE), "bias": ("bias", IDENTITY)}
    if isinstance(mod, nnx.LayerNorm):
        return {"scale": ("weight", IDENTITY), "bias": ("bias", IDENTITY)}
    if isinstance(mod, sf.BatchNorm2d):
        return {"scale": ("weight", IDENTITY), "bias": ("bias", IDENTITY),
                "mean": ("running_mean", IDENTITY), "var": ("running_var", IDENTITY)}
    return None


def key_map(model: nnx.Module) -> KeyMap:
    """Our dotted variable path -> (HF key, hook); module paths are identical on both sides."""
    out: dict[str, tuple[str, Hook]] = {}
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        entries = _module_entries(node)
        if entries is None:
            continue
        prefix = ".".join(str(p) for p in path)
        for ours, (theirs, hook) in entries.items():
            out[f"{prefix}.{ours}"] = (f"{prefix}.{theirs}", hook)
    return out


def hf_config(model: nnx.Module) -> dict:
    """A transformers ``config.json`` for ``model`` (segmentation or classification form)."""
    cfg: sf.SegformerConfig = model.config
    arch = "SegformerForSemanticSegmentation" if cfg.task == "segmentation" else "SegformerForImageClassification"
    return {
        "architectures": [arch],
        "model_type": "segformer",
        "num_channels": cfg.num_channels,
        "num_encoder_blocks": len(cfg.hidden_sizes),
        **{k: json_value(getattr(cfg, k)) for k in _SHAPE_FIELDS},
        "decoder_hidden_size": cfg.decoder_hidden_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "classifier_dropout_prob": cfg.classifier_dropout,
        "drop_path_rate": cfg.drop_path_rate,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,  # HF default; unused by HF (its LayerNorms use 1e-5)
        "semantic_loss_ignore_index": 255,
        "reshape_last_stage": True,
        "do_reduce_labels": False,
        **label_fields(cfg.label_names or default_label_names(cfg.task, cfg.num_labels), cfg.num_labels),
    }


def write_preprocessor_config(out_dir: str | os.PathLike, image_size: int | tuple[int, int],
                              mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                              std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> Path:
    """A ``SegformerImageProcessor`` config with ``do_reduce_labels=False`` beside an exported model."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    path = Path(out_dir) / "preprocessor_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "image_processor_type": "SegformerImageProcessor", "do_resize": True, "size": {"height": h, "width": w},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(mean),
        "image_std": list(std), "do_reduce_labels": False,
    }, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- encoder transfer


def _encoder_tensors(tensors: dict[str, np.ndarray], src: str) -> dict[str, np.ndarray]:
    """Encoder tensors keyed ``encoder....`` from a classifier/segmentation or bare SegformerModel file."""
    if any(k.startswith("segformer.encoder.") for k in tensors):
        prefix = "segformer."
    elif any(k.startswith("encoder.") for k in tensors):
        prefix = ""
    else:
        raise ConversionError(f"{src}: no 'segformer.encoder.*' or 'encoder.*' tensors; not a SegFormer/MiT checkpoint")
    out: dict[str, np.ndarray] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "encoder."):
            out[k[len(prefix):]] = v
        elif not k.startswith(_HEAD_PREFIXES):
            out[k] = v  # anything else is reported as unused by load_into
    return out


def load_encoder_into(model: nnx.Module, src: str | os.PathLike) -> None:
    """Fill ``model.segformer`` (either head form) from a MiT/SegFormer checkpoint; the head is untouched.

    Used to start segmentation from an ImageNet MiT classifier (``nvidia/mit-b0``) with a freshly
    initialised decode head. The checkpoint's heads (``classifier``, ``decode_head``) are skipped on
    purpose; every encoder tensor must be used and every encoder variable filled with equal shapes, and
    the encoder hyper-parameters (including heads, which do not change shapes) must agree.
    """
    hf, tensors = core.load_hf_checkpoint(src)
    where = f"{src}/config.json"
    hf = completed(hf, MODEL_TYPES, where)
    cfg: sf.SegformerConfig = model.config
    diffs = [
        f"{k}={json_value(hf[k])} (model has {json_value(getattr(cfg, k))})"
        for k in (*_SHAPE_FIELDS, "num_channels")
        if json_value(hf[k]) != json_value(getattr(cfg, k))
    ]
    if diffs:
        raise ConversionError(f"{where}: encoder does not match the model: " + "; ".join(diffs))
    core.load_into(model.segformer, _encoder_tensors(tensors, str(src)), key_map(model.segformer),
              ignore=ignore, source=f"{src} (encoder)")
