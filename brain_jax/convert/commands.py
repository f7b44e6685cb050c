"""Handler of ``brain-jax convert``.

- ``brain-jax convert --hf SRC --out DIR``: HF folder / Hub id -> brain-jax native folder (``native.py``);
- ``brain-jax convert --to-hf --from DIR --out HF_DIR``: native folder, or a training workdir, -> HF
  ``config.json`` + ``model.safetensors`` that transformers' Auto classes load.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from brain_jax.convert import from_hf, to_hf
from brain_jax.convert.native import is_native_dir, load_native, save_native

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _check_args(args: argparse.Namespace) -> None:
    hf, to_hf_, src = getattr(args, "hf", None), getattr(args, "to_hf", False), getattr(args, "src", None)
    if hf and to_hf_:
        raise ValueError("--hf (import from HF) and --to-hf (export to HF) are exclusive; pick one")
    if to_hf_ and not src:
        raise ValueError("--to-hf needs --from DIR (a converted folder or a training workdir)")
    if src and not to_hf_:
        raise ValueError("--from is only used with --to-hf; to import from HF use --hf SRC")
    if not hf and not to_hf_:
        raise ValueError("nothing to do: use --hf SRC --out DIR, or --to-hf --from DIR --out HF_DIR")
    if getattr(args, "dtype", "float32") not in _DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(_DTYPES)}, got {args.dtype!r}")


def _load_for_export(src: Path, dtype: jnp.dtype) -> nnx.Module:
    if not src.exists():
        raise FileNotFoundError(f"--from {src}: no such folder")
    if is_native_dir(src):
        return load_native(src, dtype=dtype)
    try:
        from brain_jax.train.checkpoints import load_model_from_workdir
    except ImportError as e:
        raise ValueError(
            f"--from {src}: not a converted folder (no brain_jax_model.json), and training workdirs cannot be "
            f"read because brain_jax.train.checkpoints.load_model_from_workdir is unavailable ({e})"
        ) from e
    return load_model_from_workdir(str(src), dtype)


def convert(args: argparse.Namespace) -> int:
    """Run one conversion; returns 0. Bad arguments / inputs raise ValueError or FileNotFoundError."""
    _check_args(args)
    dtype = _DTYPES[getattr(args, "dtype", "float32")]
    out = Path(args.out)
    if args.hf:
        model = from_hf(args.hf, dtype=dtype)
        save_native(model, out)
        print(f"converted {args.hf} ({model.config.model_type}) -> {out}")
    else:
        model = _load_for_export(Path(args.src), dtype)
        to_hf(model, out)
        print(f"exported {args.src} ({model.config.model_type}) -> {out} (config.json, model.safetensors)")
    return 0
