"""Augmentation and model-input normalisation on the device, inside the jitted step (jnp, per example).

The host sends prepared uint8 images (``input_pipeline.cache``: intensity-normalised to [0, 1], resized,
quantised to 0..255, one channel) and this module turns them into the model's input where the step runs:

1. ``u8 / 255`` back to [0, 1];
2. training only: one general affine per example (flips, rotation and isotropic scale about the centre;
   ``crop`` adds a random resized crop as another sampler of the same affine), bilinear for the image,
   nearest for the mask, constant 0 outside, the pixel spacing divided by the zoom; then contrast and
   brightness on the image;
3. grayscale -> 3 channels with the pretrained weights' mean / std.

Randomness is a pure function of (seed, ``AUGMENT_TAG``, step, the example's position in the global batch),
folded from keys inside the step: a resumed run, or one with another number of processes or loader
workers, sees the same augmented batches. The parameter laws are those of the former host-side numpy
augmentation (``tests/test_input_augment.py`` compares them by sampling and the geometry against
``scipy.ndimage.affine_transform``).

Coordinates are written as elementwise products and sums, never as a vmapped matrix-vector product
(jaxlib 0.10.2 computes some of those wrongly on CPU: jax #39103).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

AUGMENT_TAG = 0x41554731  # "AUG1": the augmentation's stream, apart from dropout and FCMAE masks


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """The augmentation a config asks for (hashable: a static argument of the step)."""

    hflip: bool = True
    vflip: bool = False
    rotate_deg: float = 10.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    brightness: float = 0.1
    contrast: float = 0.1
    # random resized crop (FCMAE's recipe): area share in [crop_min, crop_max], aspect 3/4..4/3; off at 0
    crop_min: float = 0.0
    crop_max: float = 1.0

    @classmethod
    def from_config(cls, aug: Any) -> "AugmentSpec | None":
        """``data.augment`` -> spec, or None when ``enabled`` is False; bad values name the field."""
        if not bool(aug.enabled):
            return None
        kw = {f.name: aug.get(f.name, f.default) for f in dataclasses.fields(cls)}
        out = cls(hflip=bool(kw["hflip"]), vflip=bool(kw["vflip"]),
                  **{k: float(kw[k]) for k in kw if k not in ("hflip", "vflip")})
        checks = (("rotate_deg", out.rotate_deg >= 0), ("scale_min", 0 < out.scale_min <= out.scale_max),
                  ("brightness", out.brightness >= 0), ("contrast", 0 <= out.contrast < 1),
                  ("crop_min", 0 <= out.crop_min <= out.crop_max <= 1))
        for field, ok in checks:
            if not ok:
                raise ValueError(f"config field data.augment.{field}={getattr(out, field)} is out of range "
                                 "(rotate_deg >= 0, 0 < scale_min <= scale_max, brightness >= 0, 0 <= contrast < 1, "
                                 "0 <= crop_min <= crop_max <= 1)")
        return out


@dataclasses.dataclass(frozen=True)
class StepInputs:
    """How the step turns a host batch into model input: augmentation (None: none) and mean / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec | None = None
    seed: int = 0

    @classmethod
    def from_data_config(cls, data: Any, seed: int, *, train: bool) -> "StepInputs":
        aug = AugmentSpec.from_config(data.augment) if train else None
        return cls(mean=tuple(float(m) for m in data.mean), std=tuple(float(s) for s in data.std), augment=aug,
                   seed=int(seed))


# --------------------------------------------------------------------------- randomness


def example_keys(seed: int, step: Any, index: jax.Array) -> jax.Array:
    """One key per example from (seed, AUGMENT_TAG, step, global position in the batch)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), AUGMENT_TAG), step)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(index, jnp.uint32))


def sample(key: jax.Array, spec: AugmentSpec) -> dict[str, jax.Array]:
    """One example's parameters: flips (bool), angle (rad), scale, crop box (centre and size as shares of
    the image), contrast factor, brightness offset."""
    k = jax.random.split(key, 8)
    u = lambda kk, lo, hi: jax.random.uniform(kk, (), jnp.float32, lo, hi)  # noqa: E731
    half = jnp.float32(0.5)
    out = {
        "hflip": (jax.random.uniform(k[0]) < half) & spec.hflip,
        "vflip": (jax.random.uniform(k[1]) < half) & spec.vflip,
        "angle": u(k[2], -spec.rotate_deg, spec.rotate_deg) * (math.pi / 180) if spec.rotate_deg else jnp.float32(0),
        "scale": u(k[3], spec.scale_min, spec.scale_max) if spec.scale_max > spec.scale_min else jnp.float32(1),
        "contrast": u(k[4], 1 - spec.contrast, 1 + spec.contrast) if spec.contrast else jnp.float32(1),
        "brightness": u(k[5], -spec.brightness, spec.brightness) if spec.brightness else jnp.float32(0),
    }
    if spec.crop_min > 0:
        area = u(k[6], spec.crop_min, spec.crop_max)
        log_ratio = u(k[7], math.log(3 / 4), math.log(4 / 3))
        ratio = jnp.exp(log_ratio)  # width / height
        h = jnp.minimum(jnp.sqrt(area / ratio), 1.0)
        w = jnp.minimum(jnp.sqrt(area * ratio), 1.0)
        kc = jax.random.split(k[7], 2)
        out["crop"] = jnp.stack([h, w, jax.random.uniform(kc[0]) * (1 - h) + h / 2,
                                 jax.random.uniform(kc[1]) * (1 - w) + w / 2])
    return out


# --------------------------------------------------------------------------- geometry


def inverse_affine(params: Mapping[str, jax.Array], size: int) -> jax.Array:
    """(2, 3) map from output (row, col) to input (row, col): zoom by ``scale`` and rotate by ``angle`` about
    the centre (scipy ``affine_transform``'s convention), then the flips; a crop box maps the output grid
    onto it first."""
    c, s = jnp.cos(params["angle"]), jnp.sin(params["angle"])
    inv = 1.0 / params["scale"]
    centre = (size - 1) / 2.0
    a = jnp.stack([jnp.stack([c * inv, s * inv]), jnp.stack([-s * inv, c * inv])])
    if "crop" in params:  # output pixel -> the crop box (shares of the image) -> input pixel
        h, w, cy, cx = params["crop"][0], params["crop"][1], params["crop"][2], params["crop"][3]
        a = a * jnp.stack([h, w])[None, :]
        shift = jnp.stack([(cy - 0.5) * size, (cx - 0.5) * size])
    else:
        shift = jnp.zeros(2, jnp.float32)
    # offset = centre - a @ centre, written elementwise (jax #39103)
    off = centre - (a[:, 0] * centre + a[:, 1] * centre) + shift
    flip = jnp.stack([params["vflip"], params["hflip"]])
    sign = jnp.where(flip, -1.0, 1.0)
    a = a * sign[:, None]
    off = jnp.where(flip, (size - 1) - off, off)
    return jnp.concatenate([a, off[:, None]], axis=1).astype(jnp.float32)


def _coords(mat: jax.Array, shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    r = jnp.arange(shape[0], dtype=jnp.float32)[:, None]
    c = jnp.arange(shape[1], dtype=jnp.float32)[None, :]
    return mat[0, 0] * r + mat[0, 1] * c + mat[0, 2], mat[1, 0] * r + mat[1, 1] * c + mat[1, 2]


def _gather(img: jax.Array, r: jax.Array, c: jax.Array) -> jax.Array:
    ok = (r >= 0) & (r < img.shape[0]) & (c >= 0) & (c < img.shape[1])
    v = img[jnp.clip(r, 0, img.shape[0] - 1), jnp.clip(c, 0, img.shape[1] - 1)]
    return jnp.where(ok, v, jnp.zeros((), img.dtype))


def warp_bilinear(img: jax.Array, mat: jax.Array) -> jax.Array:
    """(H, W) float image sampled at ``mat`` @ (row, col, 1), bilinear, 0 outside."""
    y, x = _coords(mat, img.shape)
    y0, x0 = jnp.floor(y), jnp.floor(x)
    wy, wx = y - y0, x - x0
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    return ((1 - wy) * ((1 - wx) * _gather(img, y0, x0) + wx * _gather(img, y0, x0 + 1))
            + wy * ((1 - wx) * _gather(img, y0 + 1, x0) + wx * _gather(img, y0 + 1, x0 + 1)))


def warp_nearest(mask: jax.Array, mat: jax.Array) -> jax.Array:
    """(H, W) label map sampled at the nearest pixel (half-pixel ties round to even), 0 outside."""
    y, x = _coords(mat, mask.shape)
    return _gather(mask, jnp.round(y).astype(jnp.int32), jnp.round(x).astype(jnp.int32))


def augment_one(img01: jax.Array, mask: jax.Array, spacing: jax.Array, key: jax.Array,
                spec: AugmentSpec) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One example: geometry on image and mask, spacing / zoom, then contrast and brightness."""
    p = sample(key, spec)
    mat = inverse_affine(p, img01.shape[0])
    img = warp_bilinear(img01, mat)
    mask = warp_nearest(mask, mat)
    zoom = p["scale"]
    if "crop" in p:  # a crop of h x w of the image filled to the full size zooms by 1/h and 1/w
        zoom = zoom / jnp.stack([p["crop"][0], p["crop"][1]])
    img = (img - 0.5) * p["contrast"] + 0.5 + p["brightness"]
    return img, mask, spacing / zoom


def model_input(img01: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    """(..., H, W) grayscale in [0, 1] -> (..., H, W, 3) float32 with the weights' mean / std."""
    inv = 1.0 / np.asarray(std, np.float32)
    return img01[..., None].astype(jnp.float32) * inv - np.asarray(mean, np.float32) * inv


def prepare(batch: Mapping[str, jax.Array], spec: StepInputs, step: Any = 0) -> dict[str, jax.Array]:
    """A device batch as the loader sends it (``image`` uint8 (B, S, S), ``mask`` uint8, ``index``) -> the
    batch the model and losses read (``image`` (B, S, S, 3) float32, ``mask`` int32), augmented when ``spec``
    says so with the keys of (seed, step, ``index``)."""
    out = dict(batch)
    img = jnp.asarray(batch["image"]).astype(jnp.float32) / 255.0
    mask = jnp.asarray(batch["mask"]).astype(jnp.int32) if "mask" in batch else None
    if spec.augment is not None:
        index = batch["index"] if "index" in batch else jnp.arange(img.shape[0])
        keys = example_keys(spec.seed, step, index)
        m = mask if mask is not None else jnp.zeros(img.shape, jnp.int32)
        sp = batch["spacing_mm"] if "spacing_mm" in batch else jnp.ones((img.shape[0], 2), jnp.float32)
        img, m, sp = jax.vmap(lambda i, mm, s, k: augment_one(i, mm, s, k, spec.augment))(img, m, sp, keys)
        if mask is not None:
            mask = m
        if "spacing_mm" in batch:
            out["spacing_mm"] = sp
    out["image"] = model_input(img, spec.mean, spec.std)
    if mask is not None:
        out["mask"] = mask
    return out
