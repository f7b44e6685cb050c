"""From a method's raw output to a heat map, and how well heat maps point at a known tumour mask.

- ``heatmap``: a non-negative (B, h, w) map at the method's own resolution — Grad-CAM: ReLU of the raw
  map; integrated gradients: ReLU of the attributions summed over channels (positive evidence for the
  target); rollout: as is.
- ``upsample``: bilinear with half-pixel centres to the mask's (or image's) size.
- Pointing game (Zhang et al. 2016): a hit when the map's maximum lies inside the tumour mask dilated by
  ``tolerance`` pixels (default ``default_tolerance``: 1/32 of the shorter side, 2 px at 64 px, 7 px at
  224 px); scored only on images with a tumour. The maximum is the centre of the map's top cell at the
  method's own resolution. An all-zero map has no maximum and scores a miss.
- Mass inside: the share of the upsampled map's total inside the (undilated) mask; NaN for an all-zero
  map.
- Chance levels beside them: a map whose top cell is uniformly random hits with probability = the share
  of the map's cell centres inside the dilated mask, and a uniform map puts the mask's area share inside.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from brain_jax.models.common import resize_bilinear


def heatmap(raw: Any, method: str) -> np.ndarray:
    """(B, h, w) non-negative float32 map from a method's raw output (see the module docstring)."""
    raw = np.asarray(raw, np.float32)
    if method == "gradcam":
        return np.maximum(raw, 0.0)
    if method == "ig":
        return np.maximum(raw.sum(axis=-1), 0.0)
    if method == "rollout":
        return raw
    raise ValueError(f"unknown saliency method {method!r}")


def upsample(maps: Any, size: Sequence[int]) -> np.ndarray:
    """(B, h, w) -> (B, H, W), bilinear with half-pixel centres (``torch.nn.functional.interpolate``'s
    ``align_corners=False``): each cell of a coarse map is centred on the image region it summarises."""
    maps = jnp.asarray(maps, jnp.float32)
    return np.asarray(resize_bilinear(maps[..., None], (int(size[0]), int(size[1])))[..., 0])


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (an all-zero map stays zero): for display only."""
    top = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(top > 0, top, 1.0)[:, None, None]


def default_tolerance(size: Sequence[int]) -> int:
    """Pointing-game tolerance in pixels: 1/32 of the shorter side, at least 1."""
    return max(1, round(min(int(size[0]), int(size[1])) / 32))


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def dilate(masks: np.ndarray, tolerance: int) -> np.ndarray:
    """(B, H, W) bool masks grown by a disk of radius ``tolerance`` pixels."""
    masks = np.asarray(masks) > 0
    if tolerance <= 0:
        return masks
    return np.stack([ndimage.binary_dilation(m, structure=_disk(tolerance)) for m in masks])


def peak_points(maps: Any, size: Sequence[int]) -> np.ndarray:
    """(B, 2) pixel (row, col) of each map's maximum at image size ``size``: the centre of the maximal cell
    of the map at its own resolution (ties: the first in row-major order). Taking the maximum after
    upsampling would not do: a coarse map's top cell becomes a plateau that runs to the image border."""
    maps = np.asarray(maps, np.float64)
    b, h, w = maps.shape
    idx = np.argmax(maps.reshape(b, -1), axis=1)
    rows, cols = np.divmod(idx, w)
    return np.stack([np.floor((rows + 0.5) * size[0] / h), np.floor((cols + 0.5) * size[1] / w)], 1).astype(int)


def pointing_game(maps: Any, masks: Any, tolerance: int | None = None) -> np.ndarray:
    """(B,) bool: whether each map's maximum (``peak_points``) falls in its mask dilated by ``tolerance``
    pixels. ``maps`` (B, h, w) at the method's resolution, ``masks`` (B, H, W) at the image's; an
    all-zero (or non-finite) map is a miss."""
    maps, masks = _check(maps, masks)
    tol = default_tolerance(masks.shape[1:]) if tolerance is None else int(tolerance)
    grown = dilate(masks, tol)
    points = peak_points(maps, masks.shape[1:])
    hit = grown[np.arange(len(maps)), points[:, 0], points[:, 1]]
    flat = maps.reshape(len(maps), -1)
    return hit & np.isfinite(flat).all(axis=1) & (flat.max(axis=1) > 0)


def mass_inside(maps: Any, masks: Any) -> np.ndarray:
    """(B,) share of each map's sum inside its mask, after bilinear upsampling of the (B, h, w) maps to the
    (B, H, W) masks (as the map is drawn); NaN where a map sums to 0."""
    maps, masks = _check(maps, masks)
    up = upsample(maps, masks.shape[1:]) if maps.shape != masks.shape else maps
    total = up.reshape(len(up), -1).sum(axis=1)
    inside = (up * masks).reshape(len(up), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def chance_levels(masks: Any, map_shape: Sequence[int], tolerance: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(B,) pointing-game hit rate of a map whose top cell is drawn uniformly among its ``map_shape`` cells
    (the share of cell centres inside the dilated mask), and (B,) mass share of a uniform map (the mask's
    area share)."""
    masks = np.asarray(masks) > 0
    tol = default_tolerance(masks.shape[1:]) if tolerance is None else int(tolerance)
    h, w = int(map_shape[0]), int(map_shape[1])
    rows = np.floor((np.arange(h) + 0.5) * masks.shape[1] / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * masks.shape[2] / w).astype(int)
    centres = dilate(masks, tol)[:, rows][:, :, cols]
    return centres.mean(axis=(1, 2)), masks.mean(axis=(1, 2))


def _check(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, np.float64)
    masks = np.asarray(masks) > 0
    if maps.ndim != 3 or masks.ndim != 3 or len(maps) != len(masks):
        raise ValueError(f"localisation: maps {maps.shape} (B, h, w) and masks {masks.shape} (B, H, W) must hold "
                         "the same images")
    if (maps < 0).any():
        raise ValueError("localisation: maps must be non-negative (use heatmap() on the raw output)")
    return maps, masks


def summarise(maps: np.ndarray, masks: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
              tolerance: int | None = None) -> dict[str, Any]:
    """Per-class and overall localisation of images with a non-empty mask; ``maps`` (B, h, w) at the
    method's resolution, ``masks`` (B, H, W) at the image's.

    ``{"tolerance_px", "per_class": {name: {"n", "pointing_game", "mass_inside", "chance_pointing",
    "chance_mass"}}, "all": {...}}``: means over images (mass over images whose map is not all zero).
    Classes without a masked image are left out.
    """
    maps, masks = _check(maps, masks)
    tol = default_tolerance(masks.shape[1:]) if tolerance is None else int(tolerance)
    has = masks.reshape(len(masks), -1).any(axis=1)
    labels = np.asarray(labels)
    hits, mass = pointing_game(maps, masks, tol), mass_inside(maps, masks)
    chance_hit, chance_mass = chance_levels(masks, maps.shape[1:], tol)

    def row(sel: np.ndarray) -> dict[str, Any]:
        sel = sel & has
        m = mass[sel]
        return {"n": int(sel.sum()), "pointing_game": _mean(hits[sel]),
                "mass_inside": _mean(m[np.isfinite(m)]), "chance_pointing": _mean(chance_hit[sel]),
                "chance_mass": _mean(chance_mass[sel])}

    per_class = {name: row(labels == i) for i, name in enumerate(class_names)}
    return {"tolerance_px": tol, "per_class": {k: v for k, v in per_class.items() if v["n"]},
            "all": row(np.ones(len(maps), bool))}


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else math.nan
