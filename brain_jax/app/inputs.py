"""The image inputs of ``predict`` and ``explain``: files and folders expanded, each one read (a volume at
``--slice``), the output folder checked, and the workdir's model and RunSpec loaded.

``read_job`` does all of it before anything is computed or written, so that a bad file, output folder or
workdir stops the command with one message and leaves the output folder untouched.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from brain_jax import workdir
from brain_jax.io import SUPPORTED, Slice, detect_format, read_slice
from brain_jax.train.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class ImageJob:
    """Everything a command on image files needs, read and checked."""

    workdir: str  # as given on the command line
    slices: list[Slice]
    out_dir: Path
    model: Any
    spec: RunSpec


def read_job(images: Sequence[str], wd: str | Path, *, out: str | Path | None, default_out: str,
             slice_index: int | None = None) -> ImageJob:
    """Read ``images`` (files or folders), check ``out`` (default ``WORKDIR/default_out``), load the workdir."""
    slices = read_slices(images, slice_index)
    out_dir = check_out(out, Path(wd) / default_out)
    model, spec = load_workdir(wd)
    return ImageJob(str(wd), slices, out_dir, model, spec)


def read_slices(images: Sequence[str], slice_index: int | None = None) -> list[Slice]:
    """Every image of ``images`` (files or folders) read; ``slice_index`` applies to volumes only."""
    return [read_slice(p, slice_index if _is_volume(p) else None) for p in expand_inputs(images)]


def check_out(out: str | Path | None, default: Path) -> Path:
    """The output folder, ``out`` or ``default``; an error when it exists and is not a folder."""
    out_dir = Path(out) if out else default
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder")
    return out_dir


def load_workdir(wd: str | Path) -> tuple[Any, RunSpec]:
    """(model, spec) of a training workdir: the spec built once from its config.json; clear errors when the
    folder, its config or its checkpoint is missing."""
    wd = Path(wd)
    if not wd.is_dir():
        raise FileNotFoundError(f"--workdir {wd}: no such folder")
    spec = RunSpec.from_config(workdir.read_config(wd), where=str(wd / workdir.CONFIG))
    if not workdir.has_checkpoint(wd):
        raise FileNotFoundError(f"--workdir {wd}: no checkpoint found (nothing saved yet?); train first")
    # start-up: predict's ONNX Runtime route reads its inputs here and must not import JAX
    from brain_jax.train import model_factory

    return model_factory.load_model_from_workdir(wd, spec=spec), spec


def expand_inputs(paths: Sequence[str]) -> list[str]:
    """Files as given, folders replaced by the readable files they hold (sorted, not recursive)."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            out.append(p)
            continue
        found = sorted(str(f) for f in path.iterdir() if f.is_file() and _readable(f))
        if not found:
            raise FileNotFoundError(f"{path}: a folder with no image files ({', '.join(SUPPORTED)} or DICOM)")
        out += found
    return out


def _readable(path: Path) -> bool:
    try:
        detect_format(path)
        return True
    except ValueError:
        return False


def _is_volume(path: str) -> bool:
    """Formats that can hold several slices (the --slice index applies to them only)."""
    try:
        return detect_format(path) in ("nifti", "dicom")
    except ValueError:
        return False


def output_stems(paths: Sequence[str]) -> list[str]:
    """File stems for outputs, made unique (``scan``, ``scan_2``...) when two inputs share a name."""
    stems, seen = [], {}
    for p in paths:
        name = Path(p).name
        stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem
        k = seen.get(stem, 0) + 1
        seen[stem] = k
        stems.append(stem if k == 1 else f"{stem}_{k}")
    # a generated "scan_2" may itself collide with an input called scan_2
    if len(set(stems)) != len(stems):
        stems = [f"{i:03d}_{s}" for i, s in enumerate(stems)]
    return stems
