"""The official FCMAE checkpoints (``convnextv2_*_fcmae.pt``, facebookresearch/ConvNeXt-V2) -> brain-jax.

Written from the official ``utils.py:remap_checkpoint_keys`` (what the official fine-tuning applies to
these files) and the modules that produce the layout (``models/fcmae.py``, ``models/convnextv2_sparse.py``,
``models/utils.py``, ``models/convnextv2.py``). The encoder sits under ``encoder.`` and is sparse
(MinkowskiEngine):

- a convolution's ``kernel`` is (k·k, in, out) and a depthwise one's (k·k, C); the k·k axis runs over the
  window with the *row* (height) offset fastest: remap turns it into torch's OIHW with
  ``reshape(.., k, k).transpose(3, 2)``, so entry ``w·k + h`` is tap (h, w). Ours are HWIO (k, k, in, out)
  and (k, k, 1, C);
- Minkowski conv biases are (1, C); GRN ``gamma`` / ``beta`` are (1, C) in the encoder and (1, 1, 1, C) in
  the dense decoder block; LayerNorms wrap ``nn.LayerNorm`` as ``ln`` and Linears ``nn.Linear`` as ``linear``;
- the stem (``downsample_layers.0``) is dense: Conv2d OIHW then a channels-first LayerNorm;
- the decoder is dense: ``proj`` / ``pred`` are 1×1 Conv2d (out, in, 1, 1), ``mask_token`` (1, D, 1, 1) and
  ``decoder.N`` is the dense ``Block`` (``dwconv`` (C, 1, 7, 7), ``norm``, ``pwconv1/2``, ``grn``).

Every tensor is named once in an explicit map (``key_map``); nothing is inferred from a tensor's rank.
The files are ``torch.save`` pickles whose ``args`` entry is an ``argparse.Namespace``: they are read
with torch's weights-only unpickler and an allow-list of that one class, never unrestricted unpickling.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from brain_jax.convert.core import (
    CONV,
    DEPTHWISE,
    IDENTITY,
    LINEAR,
    ConversionError,
    Hook,
    KeyMap,
    dense_entries,
    export_from,
    load_into,
    reshape_hook,
    write_hf_checkpoint,
)
from brain_jax import models
from brain_jax.convert import convnext as convnext_map
from brain_jax.models.fcmae import FCMAE, FCMAEConfig, encoder_arrays
from brain_jax.models.weights import abstract, assign

# the classes an official checkpoint may hold beyond tensors, containers and numbers (main_pretrain's args)
SAFE_GLOBALS = (argparse.Namespace,)


def _mink_conv_to_ours(a: np.ndarray) -> np.ndarray:
    kv, d_in, d_out = a.shape
    k = math.isqrt(kv)
    return a.reshape(k, k, d_in, d_out).transpose(1, 0, 2, 3)  # [w, h] -> [h, w]


def _mink_conv_to_official(a: np.ndarray) -> np.ndarray:
    k, _, d_in, d_out = a.shape
    return a.transpose(1, 0, 2, 3).reshape(k * k, d_in, d_out)


def _mink_dw_to_ours(a: np.ndarray) -> np.ndarray:
    kv, c = a.shape
    k = math.isqrt(kv)
    return a.reshape(k, k, c).transpose(1, 0, 2)[:, :, None, :]


def _mink_dw_to_official(a: np.ndarray) -> np.ndarray:
    k, _, _, c = a.shape
    return a[:, :, 0, :].transpose(1, 0, 2).reshape(k * k, c)


# Minkowski conv kernel (k·k, in, out) <-> HWIO; Minkowski depthwise kernel (k·k, C) <-> (k, k, 1, C)
MINK_CONV = Hook("minkowski_conv", _mink_conv_to_ours, _mink_conv_to_official)
MINK_DEPTHWISE = Hook("minkowski_depthwise", _mink_dw_to_ours, _mink_dw_to_official)
# 1x1 Conv2d (out, in, 1, 1) <-> Linear kernel (in, out)
CONV1X1 = Hook("conv1x1", lambda a: a[:, :, 0, 0].T, lambda a: a.T[:, :, None, None])


def _row(name: str, c: int) -> Hook:
    """A Minkowski bias or sparse GRN parameter: (1, C) <-> (C,)."""
    return reshape_hook(name, (1, c), (c,))


def _norm(ours: str, official: str) -> dict[str, tuple[str, Hook]]:
    return {f"{ours}.scale": (f"{official}.weight", IDENTITY), f"{ours}.bias": (f"{official}.bias", IDENTITY)}


def key_map(model: FCMAE) -> KeyMap:
    """``{our dotted path: (official key, hook)}`` for every parameter of ``model``."""
    cfg = model.config
    m: dict[str, tuple[str, Hook]] = {}
    m.update(dense_entries("embeddings.patch_embeddings", "encoder.downsample_layers.0.0", CONV))
    m.update(_norm("embeddings.layernorm", "encoder.downsample_layers.0.1"))
    for s, (dim, depth) in enumerate(zip(cfg.hidden_sizes, cfg.depths)):
        ours_s = f"encoder.stages.{s}"
        if s > 0:
            down = f"encoder.downsample_layers.{s}"
            m.update(_norm(f"{ours_s}.downsampling_layer.0", f"{down}.0.ln"))
            m[f"{ours_s}.downsampling_layer.1.kernel"] = (f"{down}.1.kernel", MINK_CONV)
            m[f"{ours_s}.downsampling_layer.1.bias"] = (f"{down}.1.bias", _row("bias", dim))
        for b in range(depth):
            ours, off = f"{ours_s}.layers.{b}", f"encoder.stages.{s}.{b}"
            m[f"{ours}.dwconv.kernel"] = (f"{off}.dwconv.kernel", MINK_DEPTHWISE)
            m[f"{ours}.dwconv.bias"] = (f"{off}.dwconv.bias", _row("bias", dim))
            m.update(_norm(f"{ours}.layernorm", f"{off}.norm.ln"))
            m.update(dense_entries(f"{ours}.pwconv1", f"{off}.pwconv1.linear", LINEAR))
            m.update(dense_entries(f"{ours}.pwconv2", f"{off}.pwconv2.linear", LINEAR))
            m[f"{ours}.grn.weight"] = (f"{off}.grn.gamma", _row("grn", 4 * dim))
            m[f"{ours}.grn.bias"] = (f"{off}.grn.beta", _row("grn", 4 * dim))
    d = cfg.decoder_embed_dim
    m.update(dense_entries("proj", "proj", CONV1X1))
    m["mask_token"] = ("mask_token", reshape_hook("mask_token", (1, d, 1, 1), (d,)))
    for b in range(cfg.decoder_depth):
        ours, off = f"decoder.{b}", f"decoder.{b}"
        m.update(dense_entries(f"{ours}.dwconv", f"{off}.dwconv", DEPTHWISE))
        m.update(_norm(f"{ours}.layernorm", f"{off}.norm"))
        m.update(dense_entries(f"{ours}.pwconv1", f"{off}.pwconv1", LINEAR))
        m.update(dense_entries(f"{ours}.pwconv2", f"{off}.pwconv2", LINEAR))
        m[f"{ours}.grn.weight"] = (f"{off}.grn.gamma", reshape_hook("grn", (1, 1, 1, 4 * d), (4 * d,)))
        m[f"{ours}.grn.bias"] = (f"{off}.grn.beta", reshape_hook("grn", (1, 1, 1, 4 * d), (4 * d,)))
    m.update(dense_entries("pred", "pred", CONV1X1))
    return m


# --------------------------------------------------------------------------- reading the file


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The model tensors of an official ``*_fcmae.pt`` (its ``model`` entry, or a bare state dict) as
    float32 numpy arrays. Weights-only unpickling with :data:`SAFE_GLOBALS` allowed; anything else in the
    pickle is refused with an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    try:
        import torch  # optional dependency, needed only to read torch pickles
    except ImportError as e:
        raise ConversionError(f"{path}: reading an official .pt checkpoint needs torch (pip install torch)") from e
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused (a class outside the allow-list), corrupt file...
        raise ConversionError(f"{path}: cannot load with torch.load(weights_only=True) and allow-list "
                              f"{[c.__qualname__ for c in SAFE_GLOBALS]}: {' '.join(str(e).split())[:400]}") from None
    sd = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not sd:
        raise ConversionError(f"{path}: expected a dict with a 'model' state dict, got {type(obj).__name__}")
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ConversionError(f"{path}: state dict entry {k!r} is a {type(v).__name__}, expected a tensor")
        a = v.detach().float().numpy()
        if not np.isfinite(a).all():
            raise ConversionError(f"{path}: {k} holds NaN or infinite values")
        out[k] = a
    return out


def _shape(tensors: dict[str, np.ndarray], key: str, ndim: int, where: str) -> tuple[int, ...]:
    if key not in tensors:
        raise ConversionError(f"{where}: missing {key} (expected the official FCMAE layout: "
                              "'encoder.'-prefixed sparse ConvNeXt V2, proj, mask_token, decoder, pred)")
    shape = tuple(tensors[key].shape)
    if len(shape) != ndim:
        raise ConversionError(f"{where}: {key} has shape {shape}, expected {ndim} dimensions")
    return shape


def config_from_official(tensors: dict[str, np.ndarray], *, where: str = "checkpoint", image_size: int = 224,
                         **overrides) -> FCMAEConfig:
    """The FCMAE sizes a checkpoint holds (read from its tensor shapes), for ``image_size``."""
    stem = _shape(tensors, "encoder.downsample_layers.0.0.weight", 4, where)
    dims, depths = [stem[0]], []
    for s in range(4):
        if s > 0:
            dims.append(_shape(tensors, f"encoder.downsample_layers.{s}.1.kernel", 3, where)[2])
        pat = re.compile(rf"encoder\.stages\.{s}\.(\d+)\.dwconv\.kernel$")
        depths.append(1 + max((int(mt.group(1)) for k in tensors if (mt := pat.match(k))), default=-1))
    if 0 in depths:
        raise ConversionError(f"{where}: missing encoder.stages.{depths.index(0)}.0.dwconv.kernel")
    proj = _shape(tensors, "proj.weight", 4, where)
    pred = _shape(tensors, "pred.weight", 4, where)
    dec = re.compile(r"decoder\.(\d+)\.dwconv\.weight$")
    decoder_depth = 1 + max((int(mt.group(1)) for k in tensors if (mt := dec.match(k))), default=-1)
    if decoder_depth == 0:
        raise ConversionError(f"{where}: missing decoder.0.dwconv.weight")
    channels = stem[1]
    patch = math.isqrt(pred[0] // channels)
    if patch * patch * channels != pred[0]:
        raise ConversionError(f"{where}: pred.weight has {pred[0]} outputs, not patch² · {channels} channels")
    values = dict(hidden_sizes=tuple(dims), depths=tuple(depths), num_channels=channels, image_size=image_size,
                  patch_size=patch, decoder_embed_dim=proj[0], decoder_depth=decoder_depth)
    values.update(overrides)
    try:
        return FCMAEConfig(**values)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from None


def from_official(path: str | os.PathLike, *, image_size: int = 224, dtype: jnp.dtype = jnp.float32,
                  **overrides) -> FCMAE:
    """An :class:`FCMAE` holding an official ``*_fcmae.pt`` checkpoint (all-or-nothing: one ConversionError
    lists every missing, unused or mis-shaped official key). ``overrides``: FCMAEConfig fields such as
    ``mask_ratio``."""
    tensors = read_official_checkpoint(path)
    cfg = config_from_official(tensors, where=str(path), image_size=image_size, **overrides)
    model = abstract(lambda: FCMAE(cfg, dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1)), where=str(path))
    load_into(model, tensors, key_map(model), source=str(path))
    return model


def to_official(model: FCMAE) -> dict[str, np.ndarray]:
    """The official state-dict layout of ``model`` (inverse of :func:`from_official`'s mapping), float32."""
    return export_from(model, key_map(model))


# ------------------------------------------------------------------- the encoder as transformers' ConvNextV2Model

HF_BACKBONE = "ConvNextV2Model"


def encoder_to_hf(model: FCMAE, out_dir: str | os.PathLike) -> Path:
    """Write a pretrained FCMAE's encoder as a transformers ``ConvNextV2Model`` folder (config.json,
    model.safetensors) that loads with no missing or unexpected key.

    The tensors are the ConvNeXt V2 classifier's (``convert.convnext.key_map``) without its ``convnextv2.``
    prefix and without ``classifier.*``. The final ``layernorm`` (after global pooling), which FCMAE never
    trains, is written as the identity affine (weight 1, bias 0): ``pooler_output`` is the mean of stage 4,
    normalised without scale or shift.
    """
    cfg = dataclasses.replace(model.config.encoder_config, num_labels=1, drop_path_rate=0.0)
    backbone = models.module_for("convnextv2").from_config(cfg, dtype=jnp.float32, rngs=nnx.Rngs(params=0, dropout=1))
    encoder = encoder_arrays(model)
    lnorm = {"layernorm.scale": np.ones(cfg.hidden_sizes[-1], np.float32),
             "layernorm.bias": np.zeros(cfg.hidden_sizes[-1], np.float32)}
    assign(backbone, {**encoder, **lnorm}, source="FCMAE encoder", fresh=["classifier.kernel", "classifier.bias"])
    tensors = export_from(backbone, convnext_map.key_map(backbone))
    prefix = "convnextv2."
    body = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    config = convnext_map.hf_config(backbone)
    config["architectures"] = [HF_BACKBONE]
    for k in ("id2label", "label2id", "num_labels", "problem_type"):
        config.pop(k, None)
    return write_hf_checkpoint(out_dir, config, body)
