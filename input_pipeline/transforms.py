"""Host-side per-image preparation (numpy), shared by the prepared cache and by predict / explain:
intensity normalisation, resize with the pixel spacing updated, quantisation to uint8. Augmentation and
the model's mean / std run on the device (``input_pipeline.augment``); ``augment`` and ``to_model_input``
here are their numpy references for tests and host-side tools."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage


def normalise_intensity(image: np.ndarray, upper_percentile: float = 99.5) -> np.ndarray:
    """Map each image to [0, 1]: minimum -> 0, the given upper percentile -> 1 (clipped above), so
    16-bit MRI and 8-bit JPEG sources land on the same scale and a few hot pixels do not set it."""
    x = np.asarray(image, np.float32)
    lo = float(x.min())
    flat = x.ravel()
    k = min(int(round(upper_percentile / 100.0 * (flat.size - 1))), flat.size - 1)
    hi = float(np.partition(flat, k)[k])  # the nearest-rank percentile: one partition, no sort
    if hi <= lo:
        hi = float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def resize(image: np.ndarray, mask: np.ndarray, spacing_mm: np.ndarray, size: int):
    """Resize to (size, size): antialiased bilinear for the image, nearest for the mask; the spacing
    per axis grows by the shrink factor (non-square inputs get anisotropic spacing)."""
    h, w = image.shape
    spacing = np.asarray(spacing_mm, np.float32) * np.array([h / size, w / size], np.float32)
    if (h, w) == (size, size):
        return image, mask, spacing
    img = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BILINEAR), np.float32)
    m = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.NEAREST))
    return img, m, spacing


def quantise(image01: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 0..255, rounded to nearest (the prepared cache's storage; |error| <= 1/510)."""
    return np.round(np.clip(np.asarray(image01, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def prepare(image: np.ndarray, mask: np.ndarray | None, spacing_mm: Any, size: int, upper_percentile: float = 99.5):
    """Stored image -> (uint8 (size, size) image, uint8 mask or None, spacing): normalise, resize, quantise.

    The one preparation of an image for a model: the cache stores its output for training and evaluation
    and predict / explain call it on image files, so training and serving see the same pixels."""
    img01 = normalise_intensity(image, upper_percentile)
    m = np.zeros(img01.shape, np.uint8) if mask is None else np.asarray(mask, np.uint8)
    img01, m, spacing = resize(img01, m, np.asarray(spacing_mm, np.float32), size)
    return quantise(img01), (None if mask is None else np.asarray(m, np.uint8)), spacing


def augment(image: np.ndarray, mask: np.ndarray, spacing_mm: np.ndarray, rng: np.random.Generator,
            cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random flips, rotation + isotropic scale about the centre, brightness/contrast (image only).

    The same geometry goes to the mask with nearest-neighbour sampling. Zooming in by s divides the
    physical size of a pixel by s, so the spacing follows.
    """
    if cfg.hflip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if cfg.vflip and rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    angle = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if cfg.rotate_deg else 0.0
    scale = rng.uniform(cfg.scale_min, cfg.scale_max) if cfg.scale_max > cfg.scale_min else 1.0
    if angle != 0.0 or scale != 1.0:
        c, s = np.cos(angle), np.sin(angle)
        # affine_transform maps output coords to input coords: inverse of "rotate then zoom by scale".
        mat = np.array([[c, s], [-s, c]], np.float64) / scale
        centre = (np.array(image.shape, np.float64) - 1) / 2
        offset = centre - mat @ centre
        image = ndimage.affine_transform(np.ascontiguousarray(image), mat, offset, order=1, cval=0.0)
        if mask.any():  # an empty mask stays empty
            mask = ndimage.affine_transform(np.ascontiguousarray(mask), mat, offset, order=0, cval=0)
        spacing_mm = np.asarray(spacing_mm, np.float32) / np.float32(scale)
    if cfg.contrast or cfg.brightness:
        cf = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        br = rng.uniform(-cfg.brightness, cfg.brightness)
        image = (image - 0.5) * cf + 0.5 + br
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), spacing_mm


def to_model_input(image01: np.ndarray, mean, std) -> np.ndarray:
    """Grayscale [0, 1] -> (H, W, 3) float32 normalised with the pretrained weights' mean/std."""
    inv = 1.0 / np.asarray(std, np.float32)
    return np.asarray(image01, np.float32)[..., None] * inv - np.asarray(mean, np.float32) * inv
