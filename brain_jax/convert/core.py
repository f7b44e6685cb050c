"""Generic HF <-> Flax NNX conversion machinery: checkpoint I/O, explicit key maps, hooks, errors.

Each architecture module in this package provides an explicit ``{our_path: (hf_key, hook)}`` map;
this module applies it in both directions and refuses partial loads (through
``brain_jax.models.weights.assign``), listing every offender at once by its HF key.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from brain_jax.models.weights import WeightsMismatch, assign, model_variables


class ConversionError(WeightsMismatch):
    """A checkpoint or its config cannot become the model; a mismatch lists every offending key at once."""


@dataclass(frozen=True)
class Hook:
    """A pair of array transforms: HF layout -> ours, and ours -> HF layout."""

    name: str
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


IDENTITY = Hook("identity", lambda a: a, lambda a: a)
# torch Linear weight (out, in) <-> (in, out)
LINEAR = Hook("linear", lambda a: a.T, lambda a: a.T)
# torch Conv2d weight (O, I, kh, kw) <-> (kh, kw, I, O)
CONV = Hook("conv", lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
# torch depthwise Conv2d weight (C, 1, kh, kw) <-> (kh, kw, 1, C): same permutation as CONV
DEPTHWISE = Hook("depthwise", CONV.to_ours, CONV.to_hf)


def reshape_hook(name: str, hf_shape: tuple[int, ...], our_shape: tuple[int, ...]) -> Hook:
    """Pure reshape between layouts, e.g. GRN (1, 1, 1, C) <-> (C,)."""
    return Hook(name, lambda a: a.reshape(our_shape), lambda a: a.reshape(hf_shape))


KeyMap = Mapping[str, tuple[str, Hook]]


def dense_entries(ours: str, hf: str, hook: Hook = LINEAR, bias: bool = True) -> dict[str, tuple[str, Hook]]:
    """Key-map entries of a Linear/Conv: ``kernel`` from ``weight`` through ``hook``, ``bias`` as is."""
    out = {f"{ours}.kernel": (f"{hf}.weight", hook)}
    if bias:
        out[f"{ours}.bias"] = (f"{hf}.bias", IDENTITY)
    return out


def norm_entries(ours: str, hf: str) -> dict[str, tuple[str, Hook]]:
    """Key-map entries of a LayerNorm: flax ``scale``/``bias`` from torch ``weight``/``bias``."""
    return {f"{ours}.scale": (f"{hf}.weight", IDENTITY), f"{ours}.bias": (f"{hf}.bias", IDENTITY)}


# --------------------------------------------------------------------------- checkpoint I/O


# safetensors dtype names -> bytes per element; its header may be at most 100 MB (its own limit)
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ST_MAX_HEADER = 100_000_000


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_safetensors_file(path: Path) -> None:
    """Validate the header against the file before safetensors reads it (its own errors do not name
    the file): every entry has a known dtype, a shape and offsets holding exactly that many bytes,
    inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ConversionError(f"{path}: truncated safetensors header (needs {n} bytes, file has {size})")
        if n > _ST_MAX_HEADER:
            raise ConversionError(f"{path}: safetensors header of {n:,} bytes, over its limit of {_ST_MAX_HEADER:,}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ConversionError(f"{path}: corrupt safetensors header ({' '.join(str(e).split())})") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: safetensors header is a {type(header).__name__}, expected an object")
    end = 0
    for key, v in header.items():
        if key == "__metadata__":
            continue
        shape, offsets = (v.get("shape"), v.get("data_offsets")) if isinstance(v, dict) else (None, None)
        if not (isinstance(v, dict) and v.get("dtype") in _ST_ITEMSIZE and isinstance(shape, list)
                and all(_is_count(d) for d in shape) and isinstance(offsets, list) and len(offsets) == 2
                and all(_is_count(o) for o in offsets)):
            raise ConversionError(f"{path}: tensor {key!r} has a malformed header entry {str(v)[:120]}; expected "
                                  f"dtype (one of {', '.join(_ST_ITEMSIZE)}), shape and data_offsets")
        nbytes = math.prod(shape) * _ST_ITEMSIZE[v["dtype"]]
        if offsets[1] - offsets[0] != nbytes:
            raise ConversionError(f"{path}: tensor {key!r}: data_offsets {offsets} do not hold a {v['dtype']} "
                                  f"array of shape {tuple(shape)} ({nbytes} bytes)")
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise ConversionError(
            f"{path}: truncated safetensors file: tensors need {8 + n + end} bytes, file has {size}"
        )


def _check_finite(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    bad = [k for k, a in tensors.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
    if bad:
        raise ConversionError(f"{path}: NaN or infinite values in {len(bad)} tensor(s): {', '.join(sorted(bad)[:5])}"
                              + (" ..." if len(bad) > 5 else ""))


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays of the declared dtype and shape, all finite;
    ConversionError naming the file otherwise."""
    path = Path(path)
    _check_safetensors_file(path)
    try:
        tensors = dict(load_file(str(path)))
    except Exception as e:  # corrupt header, bad dtype...
        raise ConversionError(f"{path}: cannot read safetensors file: {' '.join(str(e).split())}") from e
    _check_finite(path, tensors)
    return tensors


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch  # optional and heavy: only for this legacy format
    except ImportError as e:
        raise ConversionError(
            f"{path}: reading pytorch_model.bin needs torch; convert it to model.safetensors or install torch"
        ) from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(f"{path}: cannot load with torch.load(weights_only=True): {e}") from e
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ConversionError(f"{path}: expected a state dict (tensor names -> tensors), got {type(sd).__name__}")
    tensors = {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
               for k, v in sd.items()}
    _check_finite(path, tensors)
    return tensors


def read_json(path: Path) -> dict:
    """The JSON object in file ``path``; invalid JSON or another kind of value is an error naming the file."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConversionError(f"{path}: invalid JSON: {' '.join(str(e).split())}") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _shard_files(index: Path) -> list[str]:
    """The shard file names of a sharded checkpoint's index: plain names of files beside it."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConversionError(f"{index}: no weight_map object")
    values = list(weight_map.values())
    bad = [str(n) for n in values if not isinstance(n, str) or Path(n).name != n or n in ("", ".", "..")]
    if bad:
        raise ConversionError(f"{index}: weight_map names {bad[:3]}; expected file names in {index.parent}")
    return sorted(set(values))


def load_hf_checkpoint(src: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read ``config.json`` and all tensors from a ``save_pretrained`` folder or an HF Hub id."""
    path = Path(src)
    if not path.exists():
        if str(src).startswith((".", "/", "~")) or os.sep in str(src) and str(src).count("/") > 1:
            raise ConversionError(f"{src}: no such folder")
        try:
            from huggingface_hub import snapshot_download  # imported for a Hub download only: slow to import

            path = Path(snapshot_download(str(src), allow_patterns=["*.json", "*.safetensors"]))
        except Exception as e:
            raise ConversionError(f"{src}: not a local folder and could not be fetched from the Hub: {e}") from e
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{path}: no config.json (expected a transformers save_pretrained folder)")
    config = read_json(cfg_path)
    tensors: dict[str, np.ndarray] = {}
    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").is_file():
        tensors = read_safetensors(path / "model.safetensors")
    elif index.is_file():
        for f in _shard_files(index):
            if not (path / f).is_file():
                raise ConversionError(f"{index}: names shard {f}, which {path} does not hold")
            tensors.update(read_safetensors(path / f))
    elif (path / "pytorch_model.bin").is_file():
        tensors = _read_torch_bin(path / "pytorch_model.bin")
    else:
        raise ConversionError(f"{path}: no model.safetensors, sharded index or pytorch_model.bin")
    return config, tensors


def write_hf_checkpoint(out_dir: str | os.PathLike, config: dict, tensors: Mapping[str, np.ndarray]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # ascontiguousarray makes 0-d arrays (e.g. num_batches_tracked) 1-d: keep the original shape
    arrays = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()}
    save_file(arrays, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


# --------------------------------------------------------------------------- applying key maps


def load_into(
    model: nnx.Module,
    tensors: Mapping[str, np.ndarray],
    key_map: KeyMap,
    *,
    ignore: Callable[[str], bool] = lambda k: False,
    source: str = "checkpoint",
) -> None:
    """Fill ``model`` in place from HF ``tensors`` through ``key_map``; all-or-nothing.

    Raises ConversionError listing, by HF key, every tensor the map needs but the checkpoint lacks,
    every shape mismatch (in HF's layout) and every tensor left unused (unless ``ignore`` says so), and
    every model variable the map misses. Nothing is written unless everything matches.
    """
    variables = model_variables(model)
    reported = sorted(set(variables) - set(key_map))  # model paths whose problem is listed by HF key or here
    problems = [f"model variable {p} has no entry in the key map" for p in reported]
    problems += [f"key map names {p}, which the model does not have" for p in sorted(set(key_map) - set(variables))]
    arrays: dict[str, np.ndarray] = {}
    for ours, (hf_key, hook) in key_map.items():
        if ours not in variables:
            continue
        if hf_key not in tensors:
            problems.append(f"missing {hf_key}")
            reported.append(ours)
            continue
        want = tuple(hook.to_hf(np.empty(variables[ours].get_value().shape, np.float32)).shape)
        got = tuple(np.shape(tensors[hf_key]))
        if got != want:
            problems.append(f"{hf_key}: {source} has {got}, model expects {want}")
            reported.append(ours)
            continue
        arrays[ours] = hook.to_ours(np.asarray(tensors[hf_key]))
    used = {hf_key for hf_key, _ in key_map.values()}
    unused = [k for k in sorted(tensors) if k not in used and not ignore(k)]
    problems += [f"unused {k} {tuple(np.shape(tensors[k]))}" for k in unused]
    assign(model, arrays, source=source, problems=problems, reported=reported, error=ConversionError)


def export_from(model: nnx.Module, key_map: KeyMap) -> dict[str, np.ndarray]:
    """Inverse of ``load_into``: HF-named float32 arrays from the model's variables."""
    variables = model_variables(model)
    missing = sorted(set(variables) - set(key_map))
    if missing:
        raise ConversionError("key map does not cover: " + ", ".join(missing))
    out: dict[str, np.ndarray] = {}
    for ours, (hf_key, hook) in key_map.items():
        arr = np.asarray(variables[ours].get_value(), dtype=np.float32)
        out[hf_key] = np.ascontiguousarray(hook.to_hf(arr))
    return out
