"""The prepared cache: each built split of a dataset, intensity-normalised, resized and quantised once.

Training reads whole batches from it with one gather per array (memory-mapped ``.npy``), so the host does
no decoding, percentile, resize or float work per step; augmentation and the model's mean / std run on
the device (``input_pipeline.augment``).

One folder per (dataset, builder config, built split, image size, upper percentile), under
``data.cache_dir`` (default: ``<data_dir>/brain_jax_cache``)::

    <cache_dir>/<name>/<config>/<split>/s<size>_p<percentile>/
        manifest.json   format, size, percentile, record count, fingerprint, each array's sha256
        image.npy       (N, S, S) uint8: transforms.prepare (min -> 0, percentile -> 255)
        mask.npy        (N, S, S) uint8 0/1 (absent when no record of the split has a mask)
        spacing.npy     (N, 2) float32 pixel spacing after the resize (mm)
        label.npy       (N,) int16 stored label (features.CLASS_NAMES); has_mask.npy (N,) bool

Why uint8: the normalised image lies in [0, 1]; 8 bits round it by at most 1/510, 0.009 after the
ImageNet std (0.225); BENCHMARKS.md ("Prepared cache") measures what that changes in a trained model's
probabilities and metrics, which is why 16 bits were not needed.

Safety: a cache is written into a temporary folder and renamed into place when complete, so a killed
``data prepare`` leaves no folder under the final name. Its fingerprint is the sha256 of the source
records' pixel sha256s, labels, mask flags and file names (read from the dataset's metadata, which split
resolution reads anyway) with the size, percentile and format; each array's sha256 is checked once per
process when the cache is opened. A stale cache (the dataset was rebuilt) or a damaged one is rebuilt
with a one-line message, or refused in one line when ``build`` is off; it is never read.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from input_pipeline import transforms
from input_pipeline.sources import data_dir_of, dataset_name, open_split, split_metadata

FORMAT = 1
ARRAYS = ("image", "mask", "spacing", "label", "has_mask")


class CacheError(ValueError):
    """A prepared cache that cannot be used (damaged, stale, unwritable); the message names its folder."""


def cache_root(data_cfg) -> Path:
    """``data.cache_dir``, else ``<data_dir>/brain_jax_cache``."""
    d = str(data_cfg.get("cache_dir", "") or "")
    return Path(d).expanduser() if d else Path(data_dir_of(data_cfg)) / "brain_jax_cache"


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def part_dir(root: Path, name: str, config: str | None, split: str, size: int, percentile: float) -> Path:
    return root / _safe(name) / _safe(config or "default") / _safe(split) / f"s{int(size)}_p{float(percentile):g}"


def fingerprint(meta: dict[str, list], size: int, percentile: float) -> str:
    """What the cache depends on: every source record (pixels via its sha256, label, mask flag, file name)
    and the preparation settings."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "size": int(size), "percentile": float(percentile)}).encode())
    for key in ("sha256", "label", "has_mask", "file_name"):
        h.update(f"\n{key}:".encode())
        h.update("\x1f".join(str(v) for v in meta[key]).encode())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class PartCache:
    """One prepared split, memory-mapped: ``gather(records)`` -> arrays of those records."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.n, self.size = int(manifest["n"]), int(manifest["size"])
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self):  # grain workers reopen the memory maps themselves
        return {"folder": self.folder, "manifest": self.manifest}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["manifest"])

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.folder / f"{k}.npy", mmap_mode="r")
                            for k in ARRAYS if (self.folder / f"{k}.npy").exists()}
        return self._arrays

    def gather(self, records: np.ndarray) -> dict[str, np.ndarray]:
        a = self.arrays()
        out = {k: np.asarray(v[records]) for k, v in a.items()}
        if "mask" not in out:
            out["mask"] = np.zeros((len(records), self.size, self.size), np.uint8)
        return out


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _problem(folder: Path, manifest: dict[str, Any] | None, want: str) -> str | None:
    """Why the cache in ``folder`` cannot be read (None: it can); checks each array's sha256."""
    if manifest is None:
        return "no readable manifest.json"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')}, this version reads {FORMAT}"
    if manifest.get("fingerprint") != want:
        return "stale: the dataset's records changed since it was prepared"
    for key, digest in manifest.get("sha256", {}).items():
        path = folder / f"{key}.npy"
        if not path.is_file():
            return f"{key}.npy is missing"
        if _file_sha256(path) != digest:
            return f"{key}.npy is damaged (its sha256 differs from the manifest's)"
    return None


def _build(folder: Path, name: str, config: str | None, data_dir: str, split: str, size: int, percentile: float,
           want: str, progress: bool) -> dict[str, Any]:
    """Prepare every record of the split into a temporary folder, then rename it into place."""
    ds = open_split(name, config, data_dir, split)
    n = len(ds)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a shared data dir's cache is readable by all
    try:
        meta = split_metadata(name, config, data_dir, split)
        with_masks = any(meta["has_mask"])
        image = np.lib.format.open_memmap(tmp / "image.npy", "w+", np.uint8, (n, size, size))
        mask = np.lib.format.open_memmap(tmp / "mask.npy", "w+", np.uint8, (n, size, size)) if with_masks else None
        spacing = np.zeros((n, 2), np.float32)
        label = np.zeros(n, np.int16)
        has_mask = np.zeros(n, bool)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"prepare {dataset_name(name, config)}:{split} at {size}px", unit="img",
                       leave=False, file=sys.stderr, delay=2.0)  # shown only when it takes a while
        for i in range(n):
            ex = ds[i]
            img, m, sp = transforms.prepare(ex["image"], ex["mask"], ex["pixel_spacing_mm"], size, percentile)
            image[i] = img
            if mask is not None:
                mask[i] = m > 0
            spacing[i], label[i], has_mask[i] = sp, int(ex["label"]), bool(ex["has_mask"])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        image.flush()
        del image
        if mask is not None:
            mask.flush()
            del mask
        for key, value in (("spacing", spacing), ("label", label), ("has_mask", has_mask)):
            np.save(tmp / f"{key}.npy", value)
        manifest = {"format": FORMAT, "dataset": dataset_name(name, config), "split": split, "n": n, "size": size,
                    "percentile": percentile, "fingerprint": want,
                    "sha256": {k: _file_sha256(tmp / f"{k}.npy") for k in ARRAYS if (tmp / f"{k}.npy").exists()}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        for f in tmp.iterdir():  # durable before the rename makes it visible
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        if folder.exists():  # stale or damaged: replaced
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if _read_manifest(folder) is None:  # not another process's complete cache: a real failure
                raise
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@functools.lru_cache(maxsize=256)
def _open(folder: str, name: str, config: str | None, data_dir: str, split: str, size: int, percentile: float,
          build: bool, progress: bool) -> PartCache:
    path = Path(folder)
    want = fingerprint(split_metadata(name, config, data_dir, split), size, percentile)
    manifest = _read_manifest(path) if path.exists() else None
    problem = _problem(path, manifest, want) if path.exists() else "not prepared"
    if problem is None:
        return PartCache(path, manifest)
    what = f"prepared cache {path} ({dataset_name(name, config)}:{split} at {size}px)"
    if not build:
        raise CacheError(f"{what}: {problem}; prepare it with: brain-jax data prepare {name} --data-dir {data_dir} "
                         f"--image-size {size}" + (f" --config {config}" if config else ""))
    if path.exists():
        print(f"{what}: {problem}; rebuilding it", file=sys.stderr, flush=True)
    try:
        manifest = _build(path, name, config, data_dir, split, size, percentile, want, progress)
    except OSError as e:
        raise CacheError(f"{what} cannot be written ({e.strerror or e}); set config field data.cache_dir to a "
                         "writable folder") from None
    problem = _problem(path, manifest, want)
    if problem is not None:
        raise CacheError(f"{what}: {problem} right after it was written")
    return PartCache(path, manifest)


def open_part(data_cfg, name: str, config: str | None, split: str, *, build: bool = True,
              progress: bool = True) -> PartCache:
    """The prepared cache of one built split at the config's image size and percentile, built if missing,
    stale or damaged (``build``), else CacheError naming it."""
    size, pct = int(data_cfg.image_size), float(data_cfg.upper_percentile)
    folder = part_dir(cache_root(data_cfg), name, config, split, size, pct)
    return _open(str(folder), name, config, data_dir_of(data_cfg), split, size, pct, build, progress)


def forget() -> None:
    """Drop this process's memory of opened caches (tests that damage or rebuild one)."""
    _open.cache_clear()


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file())
