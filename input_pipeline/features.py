"""Features shared by every builder, so that sources can be merged record for record.

Image storage convention: ``image`` is a 2-D ``uint16`` array (grayscale). Figshare keeps its raw MRI
intensities (negative values, which the public files do not contain, would be clipped to 0 and counted
as a bad input); 8-bit sources (Kaggle JPEGs) keep their 0-255 values in the ``uint16`` container. Both
are stored zlib-compressed (``tfds.features.Tensor``) because TFDS' PNG decoder cannot read 16-bit PNGs
without OpenCV. ``mask`` is ``uint8`` 0/1 of the same shape, all zero with ``has_mask=False`` where a
source has no masks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")

# Perceptual hash: imagehash's DCT pHash, 8x8 -> 64 bits, stored as 16 hex digits.
PHASH_SIZE = 8


def features():
    """The FeaturesDict used by every builder (imports TFDS lazily: it is slow to import)."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(None, None), dtype=np.uint16, encoding="zlib"),
            "mask": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
            "has_mask": tfds.features.Scalar(dtype=np.bool_),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "patient_id": tfds.features.Text(),
            "source": tfds.features.Text(),
            "pixel_spacing_mm": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "sha256": tfds.features.Text(),
            "phash": tfds.features.Text(),
            "file_name": tfds.features.Text(),
        }
    )


def pixel_sha256(image: np.ndarray) -> str:
    """SHA-256 of the stored pixels (shape and dtype included), so format changes do not matter."""
    a = np.ascontiguousarray(image, dtype=np.uint16)
    h = hashlib.sha256(f"{a.shape[0]}x{a.shape[1]}:".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Min/max-scale any grayscale array to 8 bits (for hashing and contact sheets)."""
    a = np.asarray(image, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def perceptual_hash(image: np.ndarray) -> str:
    """imagehash pHash of the intensity-normalised image, so a 16-bit slice and its 8-bit JPEG copy
    hash alike."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(to_uint8(image)), hash_size=PHASH_SIZE))


def make_example(
    image: np.ndarray,
    mask: np.ndarray | None,
    label: int,
    *,
    patient_id: str,
    source: str,
    spacing_mm: tuple[float, float],
    file_name: str,
) -> dict:
    """One record in the common format; ``mask=None`` means the source has no mask."""
    image = np.asarray(image)
    has_mask = mask is not None
    m = np.zeros(image.shape, np.uint8) if mask is None else (np.asarray(mask) > 0).astype(np.uint8)
    return {
        "image": image.astype(np.uint16),
        "mask": m,
        "has_mask": has_mask,
        "label": int(label),
        "patient_id": patient_id,
        "source": source,
        "pixel_spacing_mm": np.asarray(spacing_mm, np.float32),
        "sha256": pixel_sha256(image),
        "phash": perceptual_hash(image),
        "file_name": file_name,
    }


@dataclasses.dataclass
class BadInputs:
    """Collects every unreadable / invalid input so a build fails once, listing them all, or (with
    ``skip_bad``) skips them and reports the count: nothing is dropped silently."""

    dataset: str
    skip_bad: bool = False
    problems: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def add(self, path: str | Path, why: str) -> None:
        """Record ``path`` and what is wrong with it (a reader's message that already starts with the
        file's name is not prefixed with it twice)."""
        self.problems.append((str(path), why.removeprefix(f"{path}: ")))

    def check(self) -> None:
        """Raise ValueError listing all offenders unless skipping was asked for."""
        if not self.problems:
            return
        if not self.skip_bad:
            lines = "\n".join(f"  {p}: {w}" for p, w in self.problems)
            raise ValueError(
                f"{self.dataset}: {len(self.problems)} bad input(s); fix them or rebuild with "
                f"--skip-bad (skip_bad=True) to skip them:\n{lines}"
            )
        print(f"{self.dataset}: skipping {len(self.problems)} bad input(s):")
        for p, w in self.problems:
            print(f"  {p}: {w}")

    def write(self, path: Path) -> None:
        path.write_text(json.dumps([{"file": p, "problem": w} for p, w in self.problems], indent=1))
