"""The numpy-only stages of inference: preprocessing of one scan and the softmax after the forward pass.

Kept apart from ``brain_jax.train.forward`` (which imports JAX and re-exports these names) so that the ONNX
Runtime route of ``predict`` (``brain_jax.app.onnx_predict``) prepares images with the very same functions
without importing JAX.

- ``to_unit``: a slice -> float [0, 1] image at the model's size (intensity window: minimum -> 0,
  ``upper_percentile`` -> 1; bilinear resize; quantised to 8 bits as the cache stores it). Kept apart for
  what needs the scan before normalisation (saliency baselines, drawings).
- ``normalise``: [0, 1] image -> (H, W, 3) model input with the pretrained weights' mean/std.
  ``preprocess`` = ``normalise(to_unit(...))``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from input_pipeline import transforms

if TYPE_CHECKING:
    from brain_jax.train.spec import InputSpec


def to_unit(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(h, w) scan -> (S, S) float32 in [0, 1] at the model's input size ``spec.image_size``, on the prepared
    cache's 8-bit grid (``transforms.prepare``, then / 255): the very pixels training and evaluation read."""
    u8 = transforms.prepare(image, None, np.ones(2, np.float32), spec.image_size, spec.upper_percentile)[0]
    return u8.astype(np.float32) / np.float32(255.0)


def normalise(image01: np.ndarray, spec: InputSpec) -> np.ndarray:
    """[0, 1] gray image(s) (..., H, W) -> (..., H, W, 3) float32 model input (numpy reference)."""
    return transforms.to_model_input(image01, spec.mean, spec.std)


def preprocess(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One (h, w) scan -> (S, S, 3) float32 model input, exactly as the loader prepares evaluation images."""
    return normalise(to_unit(image, spec), spec)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in ``x``'s dtype."""
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
