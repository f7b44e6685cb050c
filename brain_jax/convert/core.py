"""Generic HF <-> Flax NNX conversion machinery: checkpoint I/O, explicit key maps, hooks, errors.

Each architecture module in this package provides an explicit ``{our_path: (hf_key, hook)}`` map;
this module applies it in both directions and refuses partial loads, listing every offender at once.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from flax import nnx


class ConversionError(ValueError):
    """A checkpoint does not match the model: raised with every unused, missing or mis-shaped key."""


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


def _check_safetensors_file(path: Path) -> None:
    """Detect truncation before safetensors does (its own error does not name the file)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ConversionError(f"{path}: truncated safetensors header (needs {n} bytes, file has {size})")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ConversionError(
            f"{path}: truncated safetensors file: tensors need {8 + n + end} bytes, file has {size}"
        )


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = Path(path)
    _check_safetensors_file(path)
    try:
        return dict(load_file(str(path)))
    except Exception as e:  # corrupt header, bad dtype...
        raise ConversionError(f"{path}: cannot read safetensors file: {e}") from e


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ConversionError(
            f"{path}: reading pytorch_model.bin needs torch; convert it to model.safetensors or install torch"
        ) from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(f"{path}: cannot load with torch.load(weights_only=True): {e}") from e
    return {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy() for k, v in sd.items()}


def load_hf_checkpoint(src: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read ``config.json`` and all tensors from a ``save_pretrained`` folder or an HF Hub id."""
    path = Path(src)
    if not path.exists():
        if str(src).startswith((".", "/", "~")) or os.sep in str(src) and str(src).count("/") > 1:
            raise ConversionError(f"{src}: no such folder")
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(src), allow_patterns=["*.json", "*.safetensors"]))
        except Exception as e:
            raise ConversionError(f"{src}: not a local folder and could not be fetched from the Hub: {e}") from e
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{path}: no config.json (expected a transformers save_pretrained folder)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{cfg_path}: invalid JSON: {e}") from e
    tensors: dict[str, np.ndarray] = {}
    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").is_file():
        tensors = read_safetensors(path / "model.safetensors")
    elif index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        for f in files:
            tensors.update(read_safetensors(path / f))
    elif (path / "pytorch_model.bin").is_file():
        tensors = _read_torch_bin(path / "pytorch_model.bin")
    else:
        raise ConversionError(f"{path}: no model.safetensors, sharded index or pytorch_model.bin")
    return config, tensors


def write_hf_checkpoint(out_dir: str | os.PathLike, config: dict, tensors: Mapping[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # ascontiguousarray makes 0-d arrays (e.g. num_batches_tracked) 1-d: keep the original shape
    arrays = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()}
    save_file(arrays, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


# --------------------------------------------------------------------------- applying key maps


def _path_str(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def model_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
    """Every Param and BatchStat of ``model`` by dotted path (``encoder.stages.0.dwconv.kernel``)."""
    out = {}
    for path, var in nnx.iter_graph(model):
        if isinstance(var, (nnx.Param, nnx.BatchStat)):
            out[_path_str(path)] = var
    return out


def load_into(
    model: nnx.Module,
    tensors: Mapping[str, np.ndarray],
    key_map: KeyMap,
    *,
    ignore: Callable[[str], bool] = lambda k: False,
    source: str = "checkpoint",
) -> None:
    """Fill ``model`` in place from HF ``tensors`` through ``key_map``; all-or-nothing.

    Raises ConversionError listing every HF key left unused (unless ``ignore`` says so), every model
    variable the map does not fill, every HF key the map needs but the checkpoint lacks, and every shape
    mismatch. Nothing is written unless everything matches.
    """
    variables = model_variables(model)
    problems: list[str] = []
    unmapped = sorted(set(variables) - set(key_map))
    problems += [f"model variable {p} has no entry in the key map" for p in unmapped]
    extra = sorted(set(key_map) - set(variables))
    problems += [f"key map names {p}, which the model does not have" for p in extra]
    used: set[str] = set()
    staged: list[tuple[nnx.Variable, np.ndarray]] = []
    for ours, (hf_key, hook) in key_map.items():
        if ours not in variables:
            continue
        if hf_key not in tensors:
            problems.append(f"missing {hf_key} (for {ours})")
            continue
        used.add(hf_key)
        var = variables[ours]
        want = tuple(var.get_value().shape)
        try:
            arr = hook.to_ours(np.asarray(tensors[hf_key]))
        except ValueError as e:  # e.g. a reshape hook given a tensor of another size
            problems.append(f"{hf_key} {tuple(np.shape(tensors[hf_key]))}: {hook.name} hook failed ({e}); {ours} is {want}")
            continue
        if tuple(arr.shape) != want:
            problems.append(
                f"shape of {hf_key} {tuple(tensors[hf_key].shape)} gives {tuple(arr.shape)} after "
                f"{hook.name}, but {ours} is {want}"
            )
            continue
        staged.append((var, arr))
    unused = sorted(k for k in tensors if k not in used and not ignore(k))
    problems += [f"unused {k} {tuple(np.shape(tensors[k]))}" for k in unused]
    if problems:
        head = f"{source} does not match the model ({len(problems)} problem(s)):\n  "
        raise ConversionError(head + "\n  ".join(problems))
    for var, arr in staged:
        var.set_value(np.asarray(arr, dtype=var.get_value().dtype))


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
