"""``brain_phantoms``: procedurally generated T1-like axial slices with class-specific tumours.

Every slice is a pure function of (config seed, patient index, slice index), so builds are
reproducible across machines and image sizes (shapes are drawn in normalised [-1, 1] coordinates and
texture comes from fixed-size random grids upsampled to the output size). The patient decides the class
(patient k has class k mod 4, so classes are balanced) and the split (train / validation / test by
patient, stratified by class), so no patient spans two splits.

Anatomy (T1 after contrast, values in [0, 1] before scaling to 0..1000 in ``uint16``): bright scalp fat,
dark skull, thin dark CSF rim, grey matter (0.45) around white matter (0.65) with sulci and a smooth
texture, dark lateral ventricles and falx, a multiplicative bias field and Rician noise.
Tumours (the mask is the tumour itself, not the oedema):
- glioma: intra-axial, irregular outline, heterogeneous enhancing rim around a dark necrotic core, with
  surrounding oedema (darker, outside the mask);
- meningioma: round, homogeneous and bright, attached to the inner table of the skull (extra-axial);
- pituitary: small, bright, on the midline near the skull base (low in the image);
- notumor: none (all-zero mask, still ``has_mask=True``: we know there is no tumour).

Configs: ``tiny`` (unit tests), ``small`` (demo), ``large``, and ``hard``, a pool where memorising pays
(for leakage studies): faint, small tumours under a per-patient shading, and every slice repeated
under other patient ids (``PhantomConfig.copies``), as merged public sets repeat Figshare slices.
``rank`` ranks models: 156 test patients and tumours a little fainter and smaller (contrast 0.7, size 0.9),
so a tiny model trained longer is measurably better (``configs/controls.py``: compare's controls).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage

from input_pipeline.features import CLASS_NAMES, features, make_example, to_uint8

GLIOMA, MENINGIOMA, NOTUMOR, PITUITARY = range(4)
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
SPACING_AT_256_MM = 0.98  # Figshare's 0.49 mm at 512
_GRID = 16  # size of the random grids that texture is upsampled from


def _smooth_field(rng: np.random.Generator, size: int, grid: int = _GRID) -> np.ndarray:
    """Zero-mean, unit-ish smooth random field of shape (size, size)."""
    g = rng.standard_normal((grid, grid)).astype(np.float32)
    return ndimage.zoom(g, size / grid, order=3, mode="reflect")[:size, :size]


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``d`` (>0 inside), one pixel wide edge."""
    return np.clip(0.5 + d / px, 0.0, 1.0)


def patient_params(seed: int, patient: int) -> dict:
    """Everything shared by a patient's slices."""
    rng = np.random.default_rng([seed, patient, 0])
    label = patient % 4
    p = {
        "label": label,
        "ax": rng.uniform(0.74, 0.84),
        "ay": rng.uniform(0.86, 0.94),
        "tilt": rng.uniform(-0.12, 0.12),
        "vent": rng.uniform(0.8, 1.3),
        "bias": rng.uniform(-0.12, 0.12, size=3),
        "gm": rng.uniform(0.40, 0.48),
        "wm": rng.uniform(0.56, 0.62),
        "noise": rng.uniform(0.015, 0.035),
        "tex_seed": int(rng.integers(2**31)),
        "z0": rng.uniform(-0.3, 0.3),
    }
    ang = rng.uniform(0, 2 * np.pi)
    if label == GLIOMA:
        r = rng.uniform(0.2, 0.5)
        p["tumour"] = dict(cx=r * np.cos(ang) * 0.8, cy=r * np.sin(ang) * 0.8,
                           R=rng.uniform(0.18, 0.26), harm=rng.uniform(0.06, 0.14, 4),
                           phase=rng.uniform(0, 2 * np.pi, 4), core=rng.uniform(0.4, 0.6))
    elif label == MENINGIOMA:
        # Any direction but the skull base (bottom), where the pituitary lives.
        ang = rng.uniform(-np.pi * 0.95, np.pi * 0.05) if rng.random() < 0.5 else rng.uniform(-np.pi, -0.05)
        p["tumour"] = dict(ang=ang, R=rng.uniform(0.18, 0.24), ecc=rng.uniform(0.9, 1.1))
    elif label == PITUITARY:
        p["tumour"] = dict(cx=rng.uniform(-0.03, 0.03), cy=rng.uniform(0.44, 0.52),
                           R=rng.uniform(0.13, 0.17), ecc=rng.uniform(0.8, 1.05))
    return p


def render_slice(seed: int, patient: int, index: int, size: int, *, contrast: float = 1.0,
                 scale: float = 1.0, shading: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """One slice: (image uint16 (size, size), mask uint8 0/1, label index). ``contrast`` weighs every
    tumour-made change of the image (1 = the standard phantoms, 0 = invisible), ``scale`` the tumour's
    size, and ``shading`` the amplitude of a coarse multiplicative intensity pattern drawn per patient
    (0 = none): a nuisance that tells patients apart but says nothing about the class."""
    p = patient_params(seed, patient)
    rng = np.random.default_rng([seed, patient, 1, index])
    # Slices lie ~6 mm apart: cortex folding and texture differ from slice to slice.
    tex = np.random.default_rng([p["tex_seed"], index])
    px = 2.0 / size
    lin = (np.arange(size, dtype=np.float32) + 0.5) * px - 1.0
    y, x = np.meshgrid(lin, lin, indexing="ij")
    # Slice position: the head narrows away from the centre slice.
    dz = rng.uniform(-0.45, 0.45)
    hs = np.sqrt(1.0 - (0.35 * (p["z0"] + 0.3 * dz)) ** 2)
    c, s = np.cos(p["tilt"]), np.sin(p["tilt"])
    xr, yr = c * x + s * y, -s * x + c * y
    wobble = 1.0 + 0.015 * _smooth_field(tex, size, 8)
    re = np.sqrt((xr / (p["ax"] * hs)) ** 2 + (yr / (p["ay"] * hs)) ** 2) * wobble
    rpx = px / (p["ax"] * hs)  # one pixel in units of re

    img = np.zeros((size, size), np.float32)
    head, skull_in, brain_in = _soft(1.0 - re, rpx), _soft(0.93 - re, rpx), _soft(0.85 - re, rpx)
    img += head * (0.75 + 0.05 * _smooth_field(tex, size))  # scalp fat
    img -= skull_in * 0.68  # dark bone
    gyri = _smooth_field(tex, size, 24)
    wm_in = _soft(0.62 + 0.12 * gyri - re, rpx)
    brain = p["gm"] + (p["wm"] - p["gm"]) * wm_in + 0.03 * _smooth_field(tex, size, 32)
    sulci = np.exp(-((gyri - 0.3) / 0.08) ** 2) * (re > 0.55) * 0.15
    brain = brain - sulci
    img = img * (1 - brain_in) + brain_in * brain
    csf = skull_in * (1 - brain_in)
    img = img * (1 - csf) + csf * 0.1
    # Falx and lateral ventricles.
    img -= brain_in * 0.25 * np.exp(-((xr / (1.2 * px)) ** 2)) * (np.abs(yr) > 0.25)
    vs = p["vent"] * (0.75 + 0.25 * np.cos(2.2 * dz))
    for side in (-1, 1):
        vx, vy = xr - side * 0.11 * vs, yr + 0.06
        rv = np.sqrt((vx / (0.06 * vs)) ** 2 + (vy / (0.24 * vs)) ** 2)
        v = _soft(1.0 - rv, px / (0.06 * vs))
        img = img * (1 - v) + v * 0.12
    mask = np.zeros((size, size), np.uint8)
    if p["label"] != NOTUMOR:
        img, mask = _tumour(img, p, x, y, xr, yr, re, px, hs, dz, tex, size, contrast, scale)
    # Bias field, per-patient shading (hard config) and Rician noise.
    b = p["bias"]
    img = img * (1.0 + b[0] * x + b[1] * y + b[2] * x * y)
    if shading:
        field = _smooth_field(np.random.default_rng([seed, patient, 2]), size, grid=4)
        img = img * np.clip(1.0 + shading * field, 0.2, 3.0)
    n1, n2 = rng.standard_normal((2, size, size)).astype(np.float32) * p["noise"]
    img = np.sqrt((img + n1) ** 2 + n2**2)
    return np.clip(img * 1000.0, 0, 65535).astype(np.uint16), mask, p["label"]


def _tumour(img, p, x, y, xr, yr, re, px, hs, dz, tex, size, contrast, scale):
    """Paint the class-specific tumour; returns (image, mask)."""
    t, label = p["tumour"], p["label"]
    shrink = np.sqrt(max(1.0 - dz**2, 0.0)) * scale  # ellipsoid cross-section at this slice
    c = contrast
    if label == GLIOMA:
        dx, dy = x - t["cx"] * hs, y - t["cy"] * hs
        th, r = np.arctan2(dy, dx), np.sqrt(dx**2 + dy**2)
        R = t["R"] * shrink * (1.0 + sum(a * np.cos((k + 2) * th + ph)
                                         for k, (a, ph) in enumerate(zip(t["harm"], t["phase"], strict=True))))
        d = R - r
        oedema = _soft(1.6 * R - r, px) * (1 - _soft(d, px))
        img = img - c * 0.18 * oedema
        inside = c * _soft(d, px)
        core = _soft(t["core"] * R - r, px)
        het = 0.06 * _smooth_field(tex, size, 32)
        val = (0.95 + het) * (1 - core) + (0.12 + 0.5 * het) * core
        img = img * (1 - inside) + inside * val
        return img, (d > 0).astype(np.uint8)
    if label == MENINGIOMA:
        R = t["R"] * shrink
        # Centre just inside the inner table, so the tumour touches the skull.
        rb = 0.85 * hs * np.array([p["ax"] * np.cos(t["ang"]), p["ay"] * np.sin(t["ang"])])
        cdir = rb / np.linalg.norm(rb)
        cx, cy = rb - cdir * 0.9 * R
        dx, dy = xr - cx, yr - cy
        r = np.sqrt((dx / t["ecc"]) ** 2 + dy**2)
        d = np.minimum(R - r, (0.85 - re) * p["ax"] * hs)  # the inner table of the skull stops it
        cleft = c * _soft(d + 3.0 * px, px) * (1 - _soft(d, px))  # thin CSF cleft: extra-axial
        img = img * (1 - cleft) + cleft * 0.1
        inside = c * _soft(d, px)
        img = img * (1 - inside) + inside * (0.95 + 0.03 * _smooth_field(tex, size, 32))
        return img, (d > 0).astype(np.uint8)
    R = t["R"] * shrink
    dx, dy = (x - t["cx"] * hs) / t["ecc"], y - t["cy"] * hs
    r = np.sqrt(dx**2 + dy**2)
    d = R - r
    # The sella: a dark rim of bone and CSF around the adenoma.
    sella = c * _soft(d + 0.35 * R + px, px) * (1 - _soft(d, px))
    img = img * (1 - sella) + sella * 0.12
    inside = c * _soft(d, px)
    img = img * (1 - inside) + inside * (0.92 + 0.03 * _smooth_field(tex, size, 32))
    return img, (d > 0).astype(np.uint8)


def patient_splits(num_patients: int) -> dict[int, str]:
    """Stratified by class: within each class, the first 70% of patients train, then validation, test
    (at least one patient each in validation and test when a class has three or more)."""
    out: dict[int, str] = {}
    for cls in range(4):
        pats = list(range(cls, num_patients, 4))
        n = len(pats)
        n_val = max(1, round(n * SPLIT_FRACTIONS["validation"])) if n >= 3 else 0
        n_test = max(1, round(n * SPLIT_FRACTIONS["test"])) if n >= 3 else 0
        n_train = n - n_val - n_test
        for i, pt in enumerate(pats):
            out[pt] = "train" if i < n_train else ("validation" if i < n_train + n_val else "test")
    return out


@dataclasses.dataclass(eq=False)
class PhantomConfig(tfds.core.BuilderConfig):
    """Size and difficulty of the synthetic set. ``copies``: every slice appears this many more times,
    as merged public sets repeat Figshare slices: odd copies are pixel-exact under another patient id
    (patient p's copy k is patient ``k * num_patients + p``, a renumbered repackaging), even ones are
    re-quantised to 8 bits without a patient id (a JPEG re-upload: a near duplicate). A copy stays in
    its original's builder split."""

    image_size: int = 128
    num_patients: int = 96
    slices_per_patient: int = 4
    seed: int = 0
    tumour_contrast: float = 1.0
    tumour_scale: float = 1.0
    shading: float = 0.0
    copies: int = 0


class BrainPhantoms(tfds.core.GeneratorBasedBuilder):
    """Synthetic T1-like brain slices with glioma / meningioma / pituitary tumours and masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    CLASSES = CLASS_NAMES
    BUILDER_CONFIGS = [
        PhantomConfig(name="tiny", description="32x32, 16 patients x 2 slices (unit tests)",
                      image_size=32, num_patients=16, slices_per_patient=2),
        PhantomConfig(name="small", description="128x128, 480 patients x 2 slices (demo default)",
                      image_size=128, num_patients=480, slices_per_patient=2),
        PhantomConfig(name="large", description="256x256, 800 patients x 6 slices",
                      image_size=256, num_patients=800, slices_per_patient=6),
        # Memorising pays here: faint small tumours under a per-patient shading that a tiny model tells
        # apart easily, and every slice 4 times (3 copies under other patient ids), so a slice-level
        # random split puts a copy of most test images in training.
        PhantomConfig(name="hard", description="32x32, 128 patients x 1 slice, faint small tumours, patient "
                      "shading, each slice under 4 patient ids (512 records; leakage studies)",
                      image_size=32, num_patients=128, slices_per_patient=1, tumour_contrast=0.2,
                      tumour_scale=0.6, shading=0.6, copies=3),
        # Models of different strength differ here: the tumours are a little fainter and smaller than the
        # standard ones, so a tiny model is at ~0.8 after 20 steps and ~0.98 after 600 (configs/controls.py),
        # on 156 test patients, enough for the swap test to tell them apart.
        PhantomConfig(name="rank", description="32x32, 1040 patients x 2 slices (156 test patients), tumours at "
                      "0.7 contrast and 0.9 size (models of different strength differ: compare's controls)",
                      image_size=32, num_patients=1040, slices_per_patient=2, tumour_contrast=0.7,
                      tumour_scale=0.9),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "small"

    def __init__(self, *, skip_bad: bool = False, **kwargs):
        del skip_bad  # generated data cannot be bad; accepted for a uniform builder interface
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=features(), supervised_keys=("image", "label")
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        splits = patient_splits(self.builder_config.num_patients)
        return {name: self._generate_examples([p for p, s in splits.items() if s == name])
                for name in SPLIT_FRACTIONS}

    def _generate_examples(self, patients):
        cfg = self.builder_config
        spacing = SPACING_AT_256_MM * 256.0 / cfg.image_size
        for pt in patients:
            for i in range(cfg.slices_per_patient):
                image, mask, label = render_slice(cfg.seed, pt, i, cfg.image_size, contrast=cfg.tumour_contrast,
                                                  scale=cfg.tumour_scale, shading=cfg.shading)
                for k in range(cfg.copies + 1):
                    owner = k * cfg.num_patients + pt
                    key = f"P{owner:05d}_{i:02d}"
                    reupload = k > 0 and k % 2 == 0
                    yield key, make_example(
                        requantise_8bit(image) if reupload else image, mask, label,
                        patient_id="" if reupload else f"phantom{owner:05d}", source="brain_phantoms",
                        spacing_mm=(spacing, spacing), file_name=key,
                    )


def requantise_8bit(image: np.ndarray) -> np.ndarray:
    """The image min/max-scaled to 0..255 (an 8-bit re-upload of the same slice)."""
    return to_uint8(image).astype(np.uint16)


assert CLASS_NAMES[GLIOMA] == "glioma" and CLASS_NAMES[PITUITARY] == "pituitary"
