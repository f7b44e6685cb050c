"""brain_jax.saliency without torch: localisation scores computed by hand, quadratures, the taps leave the
model alone, batching, completeness of integrated gradients, and bad input.

Tiny models at 32 px. The depthwise convolutions use the grouped form here: the same numbers as the
CPU default (shift-and-add), but several times faster to compile under autodiff.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flax import nnx

from brain_jax import models, saliency
from brain_jax.models.weights import model_variables
from brain_jax.saliency import localisation, taps
from tests.model_helpers import perturb


@pytest.fixture(autouse=True)
def _grouped_depthwise(monkeypatch):
    monkeypatch.setenv("BRAIN_JAX_DEPTHWISE", "grouped")


def _model(name: str, num_classes: int = 3, **kw):
    m = models.create(name, "test", num_classes, rngs=nnx.Rngs(params=0, dropout=1), **kw)
    perturb(m, 0.1)  # non-zero biases: at HF's init a LayerNorm after a bias-free conv is scale-invariant
    return m


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


# --------------------------------------------------------------------------- localisation, by hand


def test_peak_points_are_cell_centres():
    maps = np.zeros((2, 2, 2))
    maps[0, 1, 0] = 1.0  # bottom-left cell of a 2x2 map over 64x64 px: centre (48, 16)
    maps[1] = [[0.5, 0.5], [0.1, 0.2]]  # a tie: the first in row-major order
    np.testing.assert_array_equal(localisation.peak_points(maps, (64, 64)), [[48, 16], [16, 16]])


def test_pointing_game_uses_the_dilated_mask():
    heat = np.zeros((1, 2, 2))
    heat[0, 1, 0] = 1.0  # points at (48, 16)
    inside = np.zeros((1, 64, 64), np.uint8)
    inside[0, 46:50, 14:18] = 1
    near = np.zeros((1, 64, 64), np.uint8)
    near[0, 52:56, 14:18] = 1  # 4 rows below the point
    assert localisation.pointing_game(heat, inside, tolerance=0).tolist() == [True]
    assert localisation.pointing_game(heat, near, tolerance=3).tolist() == [False]
    assert localisation.pointing_game(heat, near, tolerance=4).tolist() == [True]
    assert localisation.default_tolerance((64, 64)) == 2 and localisation.default_tolerance((224, 224)) == 7
    # an all-zero map has no maximum: a miss even when its first cell lies in the mask
    assert localisation.pointing_game(np.zeros((1, 2, 2)), np.ones((1, 64, 64)), tolerance=0).tolist() == [False]


def test_mass_inside_by_hand():
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, :32, :32] = 1
    np.testing.assert_allclose(localisation.mass_inside(mask * 3.0, mask), [1.0])
    np.testing.assert_allclose(localisation.mass_inside(np.ones((1, 64, 64)), mask), [0.25])
    assert np.isnan(localisation.mass_inside(np.zeros((1, 4, 4)), mask)[0])
    # 2x2 map with only its top-left cell on, bilinear (half-pixel) to 64 px: along each axis the weight
    # is 1 on rows 0-15, 1.5 - (y + 0.5) / 32 on rows 16-47, 0 below; sums 28 (rows < 32) of 32.
    coarse = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(localisation.mass_inside(coarse, mask), [(28 / 32) ** 2], rtol=1e-6)


def test_chance_levels_by_hand():
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, :32] = 1  # top half; a 2x2 map's cell centres sit on rows 16 and 48
    hit, mass = localisation.chance_levels(mask, (2, 2), tolerance=0)
    np.testing.assert_allclose([hit[0], mass[0]], [0.5, 0.5])
    assert localisation.chance_levels(mask, (2, 2), tolerance=16)[0][0] == 0.5  # grown to row 47
    assert localisation.chance_levels(mask, (2, 2), tolerance=17)[0][0] == 1.0  # grown to row 48


def test_summarise_per_class_only_over_masked_images():
    heat = np.zeros((3, 2, 2))
    heat[:, 0, 0] = 1.0  # every map points at (16, 16)
    masks = np.zeros((3, 64, 64), np.uint8)
    masks[0, 10:20, 10:20] = 1  # hit, mass inside well below 1
    masks[1, 40:50, 40:50] = 1  # miss
    s = localisation.summarise(heat, masks, [0, 0, 2], ["a", "b", "c"], tolerance=0)
    assert list(s["per_class"]) == ["a"] and s["all"]["n"] == 2 and s["tolerance_px"] == 0
    assert s["per_class"]["a"]["pointing_game"] == 0.5
    assert 0 < s["per_class"]["a"]["mass_inside"] < 0.5
    np.testing.assert_allclose(s["per_class"]["a"]["chance_mass"], 100 / 4096)


def test_heatmaps_keep_the_positive_evidence():
    np.testing.assert_array_equal(saliency.heatmap(np.array([[[-1.0, 2.0]]]), "gradcam"), [[[0.0, 2.0]]])
    ig = np.array([[[[1.0, -3.0, 1.0], [2.0, 0.5, 0.5]]]])  # (1, 1, 2, 3): channels summed, then ReLU
    np.testing.assert_array_equal(saliency.heatmap(ig, "ig"), [[[0.0, 3.0]]])
    with pytest.raises(ValueError, match="maps .* and masks"):
        saliency.pointing_game(np.ones((2, 4, 4)), np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match="non-negative"):
        saliency.mass_inside(-np.ones((1, 4, 4)), np.ones((1, 8, 8)))


# --------------------------------------------------------------------------- quadrature


def test_quadratures():
    a, w = saliency.quadrature("riemann_left", 4)
    np.testing.assert_allclose(a, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(saliency.quadrature("riemann_right", 4)[0], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(saliency.quadrature("riemann_middle", 4)[0], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(w, 0.25)
    a, w = saliency.quadrature("gausslegendre", 5)  # exact for polynomials up to degree 9 on [0, 1]
    assert np.all((0 < a) & (a < 1))
    np.testing.assert_allclose([np.sum(w * a**k) for k in range(10)], [1 / (k + 1) for k in range(10)], atol=1e-12)
    with pytest.raises(ValueError, match="quadrature 'trapezoid'"):
        saliency.quadrature("trapezoid", 8)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        saliency.quadrature("riemann_left", 1)


# --------------------------------------------------------------------------- the model is left alone


def test_taps_leave_the_model_and_its_numbers_alone():
    model = _model("convnextv2")
    before = {k: np.asarray(v.get_value()) for k, v in model_variables(model).items()}
    x = _images(4, seed=2)  # the shapes of the completeness test below: compiled once
    cam = saliency.grad_cam(model, x, [0, 2, 1, 2])
    np.testing.assert_allclose(np.asarray(cam.logits), np.asarray(saliency.logits(model, x)), atol=1e-5)
    assert type(model.encoder.stages[3]).__name__ == "ConvNeXtStage"
    after = {k: np.asarray(v.get_value()) for k, v in model_variables(model).items()}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="no submodule 'encoder.stages.9'"):
        with taps.tapped(model, {"encoder.stages.9": ("output", lambda a: a)}):
            pass
    assert type(model.encoder.stages[3]).__name__ == "ConvNeXtStage"


def test_maps_are_per_image_whatever_the_batch():
    """An image's maps do not depend on the other images of its batch (two batches sharing image 0)."""
    model = _model("vit")
    x = _images(3, seed=1)
    one, two = x[[0, 1]], x[[0, 2]]
    t = np.array([2, 0])
    for fn in (lambda b: saliency.grad_cam(model, b, t).raw,
               lambda b: saliency.integrated_gradients(model, b, t, steps=4),
               lambda b: saliency.attention_rollout(model, b)):
        a, b = np.asarray(fn(one)), np.asarray(fn(two))
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)
        assert not np.allclose(a[1], b[1])
    assert np.asarray(saliency.grad_cam(model, one, t).raw).shape == (2, 4, 4)
    roll = np.asarray(saliency.attention_rollout(model, one))
    assert roll.shape == (2, 4, 4) and np.all(roll > 0) and np.all(roll.sum(axis=(1, 2)) < 1)  # the class
    # token's row of a product of row-stochastic matrices with positive entries, less its own share


# --------------------------------------------------------------------------- completeness


def _scores(model, x, targets, baseline: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """y(x) and y(baseline) per image, from plain forward passes (segmentation: the region at x, fixed)."""
    fx = np.asarray(saliency.logits(model, x), np.float64)
    f0 = np.asarray(saliency.logits(model, np.broadcast_to(np.asarray(baseline, np.float32), x.shape)), np.float64)
    idx = np.arange(len(x))
    if fx.ndim == 2:
        return fx[idx, targets], f0[idx, targets]
    region = fx.argmax(axis=-1) == targets[:, None, None]
    return tuple(np.array([(f[i, ..., t] * region[i]).sum() for i, t in enumerate(targets)]) for f in (fx, f0))


def _check_complete(total: np.ndarray, y: np.ndarray, y0: np.ndarray) -> None:
    """Σ attributions = y(x) − y(x′) within 1 % where the difference is not small, i.e. not a small residue
    of larger endpoint values (|Δ| ≥ ¼ (|y(x)| + |y(x′)|)); elsewhere within 1 % of |y(x)| + |y(x′)|."""
    delta, scale = y - y0, np.abs(y) + np.abs(y0)
    big = np.abs(delta) >= 0.25 * scale
    assert big.sum() >= 2, (y, y0)  # the relative check must run
    np.testing.assert_allclose(total[big], delta[big], rtol=0.01)
    assert np.all(np.abs(total - delta)[~big] <= 0.01 * scale[~big]), (total, delta)


@pytest.mark.parametrize("name,steps", [
    ("convnextv2", 32),
    ("swin", 32),
    ("vit", 32),
    ("segformer", 128),  # ReLU in the decode head: a kinked integrand needs more points
])
def test_integrated_gradients_are_complete(name, steps):
    seg = name == "segformer"
    model = _model(name, 2 if seg else 3)
    x = _images(4, seed=2)
    targets = np.array([1, 1, 0, 1]) if seg else np.array([0, 2, 1, 2])
    y, y0 = _scores(model, x, targets)
    total = np.asarray(saliency.integrated_gradients(model, x, targets, steps=steps), np.float64).sum(axis=(1, 2, 3))
    _check_complete(total, y, y0)


def test_completeness_holds_for_another_baseline():
    model = _model("convnextv2")
    x = _images(4, seed=3)
    t = np.array([1, 2, 0, 1])
    black = -2.0
    total = np.asarray(saliency.integrated_gradients(model, x, t, baseline=black, steps=32)).sum(axis=(1, 2, 3))
    _check_complete(total, *_scores(model, x, t, baseline=black))


def test_completeness_holds_for_the_blurred_baseline():
    """A baseline given as a function of the images (``saliency.blurred``): the path starts at each image's
    own blurred copy, and the attributions sum to y(x) − y(blurred x)."""
    model = _model("convnextv2")
    x = _images(4, seed=4)
    t = np.array([2, 0, 1, 1])
    total = np.asarray(saliency.integrated_gradients(model, x, t, baseline=saliency.blurred, steps=32))
    _check_complete(total.sum(axis=(1, 2, 3)), *_scores(model, x, t, baseline=np.asarray(saliency.blurred(x))))


@pytest.mark.parametrize("shape,sigma", [((2, 64, 64, 3), None), ((1, 37, 50, 2), 2.3), ((1, 224, 224, 1), None),
                                         ((1, 9, 9, 1), 1.0)])
def test_blurred_matches_scipy(shape, sigma):
    """The blurred baseline is scipy's Gaussian filter over H and W (reflected borders, truncate 4), with
    sigma = the shorter side / 16 by default."""
    from scipy import ndimage

    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    s = min(shape[1:3]) / 16 if sigma is None else sigma
    ref = ndimage.gaussian_filter(x.astype(np.float64), (0, s, s, 0), mode="reflect", truncate=4.0)
    np.testing.assert_allclose(np.asarray(saliency.blurred(x, sigma)), ref, atol=1e-6)
    assert saliency.blur_sigma(shape[1:3]) == min(shape[1:3]) / 16


def test_blurred_rejects_bad_input():
    with pytest.raises(ValueError, match=r"must be \(B, H, W, C\), got shape \(8, 8\)"):
        saliency.blurred(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="sigma must be > 0 pixels, got 0.0"):
        saliency.blurred(np.zeros((1, 8, 8, 1)), 0.0)


# --------------------------------------------------------------------------- bad input


def test_unsupported_methods_and_bad_arguments_fail_clearly():
    cnx = models.create("convnextv2", "test", 3)
    seg = models.create("segformer", "test", 2)
    with pytest.raises(ValueError, match="'rollout' needs a ViT; a convnextv2 .* supports gradcam, ig"):
        saliency.check_method(cnx, "rollout")
    with pytest.raises(ValueError, match="'rollout' is classification-only; a segformer \\(segmentation\\)"):
        saliency.check_method(seg, "rollout")
    with pytest.raises(ValueError, match="'rollout' needs a ViT"):
        saliency.attention_rollout(cnx, _images(1))
    with pytest.raises(ValueError, match="unknown saliency method 'lime'"):
        saliency.check_method(cnx, "lime")
    with pytest.raises(ValueError, match="layer 4 is out of range for 4 ConvNeXt stages"):
        saliency.gradcam_layer(cnx, 4)
    with pytest.raises(ValueError, match="target class 3 is out of range for a model with 3 classes"):
        saliency.grad_cam(cnx, _images(1), [3])
    with pytest.raises(ValueError, match="2 targets for 1 images"):
        saliency.integrated_gradients(cnx, _images(1), [0, 1])
    with pytest.raises(ValueError, match="NHWC"):
        saliency.logits(cnx, np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="head_fusion 'median'"):
        saliency.attention_rollout(models.create("vit", "test", 3), _images(1), head_fusion="median")
    assert saliency.supported_methods(cnx) == ("gradcam", "ig")
    assert saliency.supported_methods(models.create("vit", "test", 3)) == ("gradcam", "ig", "rollout")
