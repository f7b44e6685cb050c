"""The device-side augmentation (input_pipeline.augment) against scipy and against the host-side numpy laws
it replaced: geometry, parameter distributions, keys, and the step's model input."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from scipy import ndimage

import input_pipeline as ip
from input_pipeline import augment


def _spec(**kw):
    cfg = ip.default_data_config().augment
    for k, v in kw.items():
        cfg[k] = v
    return augment.AugmentSpec.from_config(cfg)


def _scipy_reference(image, mask, hflip, vflip, angle, scale):
    """The former host path: flips, then rotation and zoom about the centre by scipy (order 1 / order 0)."""
    if hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if vflip:
        image, mask = image[::-1], mask[::-1]
    c, s = np.cos(angle), np.sin(angle)
    mat = np.array([[c, s], [-s, c]], np.float64) / scale
    centre = (np.array(image.shape, np.float64) - 1) / 2
    offset = centre - mat @ centre
    img = ndimage.affine_transform(np.ascontiguousarray(image), mat, offset, order=1, cval=0.0)
    m = ndimage.affine_transform(np.ascontiguousarray(mask), mat, offset, order=0, cval=0)
    return img, m, mat, offset


def _params(hflip, vflip, angle, scale):
    return {"hflip": jnp.bool_(hflip), "vflip": jnp.bool_(vflip), "angle": jnp.float32(angle),
            "scale": jnp.float32(scale)}


def _device(image, mask, params):
    mat = augment.inverse_affine(params, image.shape[0])
    return (np.asarray(augment.warp_bilinear(jnp.asarray(image, jnp.float32), mat)),
            np.asarray(augment.warp_nearest(jnp.asarray(mask), mat)))


@pytest.mark.parametrize("hflip,vflip,angle_deg,scale", [
    (False, False, 7.0, 1.0), (True, False, -9.5, 0.91), (False, True, 3.0, 1.08), (True, True, 10.0, 1.1),
    (True, False, 0.0, 0.95)])
def test_geometry_matches_scipy_affine_transform(hflip, vflip, angle_deg, scale):
    rng = np.random.default_rng(0)
    s = 48
    image = ndimage.gaussian_filter(rng.random((s, s)), 2).astype(np.float32)  # smooth, so order-1 is meaningful
    mask = np.zeros((s, s), np.uint8)
    mask[10:30, 14:25] = 1
    angle = np.deg2rad(angle_deg)
    ref_img, ref_mask, mat, off = _scipy_reference(image, mask, hflip, vflip, angle, scale)
    img, m = _device(image, mask, _params(hflip, vflip, angle, scale))
    # away from the border: output pixels whose source lies at least a pixel inside the image
    rr, cc = np.mgrid[:s, :s]
    src = np.einsum("ij,jhw->ihw", mat, np.stack([rr, cc]).astype(np.float64)) + off[:, None, None]
    inside = np.all((src >= 1) & (src <= s - 2), axis=0)
    assert inside.mean() > 0.7
    np.testing.assert_allclose(img[inside], ref_img[inside], atol=1e-4)
    assert np.all(img[~np.all((src > -1) & (src < s), axis=0)] == 0)  # constant 0 well outside
    # nearest: equal except where a source coordinate is a half-pixel tie (scipy rounds in the flipped image,
    # we in the original, so a tie can go either way); those are a small share of the pixels
    tie = np.any(np.abs(np.abs(src - np.floor(src)) - 0.5) < 1e-3, axis=0)
    assert np.all(m[~tie] == ref_mask[~tie]) and set(np.unique(m)) <= {0, 1}
    assert np.mean(m != ref_mask) <= 0.01


def test_identity_and_flips_are_exact():
    rng = np.random.default_rng(1)
    image = rng.random((20, 20)).astype(np.float32)
    mask = (rng.random((20, 20)) > 0.5).astype(np.uint8)
    for h, v in ((False, False), (True, False), (False, True), (True, True)):
        img, m = _device(image, mask, _params(h, v, 0.0, 1.0))
        want = image[::-1 if v else 1, ::-1 if h else 1]
        np.testing.assert_array_equal(img, want)
        np.testing.assert_array_equal(m, mask[::-1 if v else 1, ::-1 if h else 1])


def test_parameter_laws_equal_the_former_host_draws():
    """The old numpy path drew hflip ~ B(0.5), angle ~ U(+-rotate_deg), scale ~ U(min, max), contrast ~
    U(1 +- c), brightness ~ U(+-b): the same laws by sampling (Kolmogorov-Smirnov, binomial bounds)."""
    spec = _spec(vflip=True, rotate_deg=15.0, scale_min=0.8, scale_max=1.25, brightness=0.2, contrast=0.3)
    n = 4000
    keys = augment.example_keys(0, 5, jnp.arange(n))
    p = jax.vmap(lambda k: augment.sample(k, spec))(keys)
    rng = np.random.default_rng(0)
    host = {"angle": np.deg2rad(rng.uniform(-15, 15, n)), "scale": rng.uniform(0.8, 1.25, n),
            "contrast": rng.uniform(0.7, 1.3, n), "brightness": rng.uniform(-0.2, 0.2, n)}
    for k, v in host.items():
        got = np.asarray(p[k], np.float64)
        assert scipy.stats.ks_2samp(got, v).pvalue > 1e-3, k
        assert got.min() >= v.min() - 0.01 * np.ptp(v) and got.max() <= v.max() + 0.01 * np.ptp(v)
    for k in ("hflip", "vflip"):
        assert abs(np.mean(p[k]) - 0.5) < 4 * np.sqrt(0.25 / n), k
    off = jax.vmap(lambda k: augment.sample(k, _spec(hflip=False, rotate_deg=0.0, scale_min=1.0, scale_max=1.0,
                                                            brightness=0.0, contrast=0.0)))(keys[:50])
    assert not np.any(off["hflip"]) and np.all(off["angle"] == 0) and np.all(off["scale"] == 1)
    assert np.all(off["contrast"] == 1) and np.all(off["brightness"] == 0)


def test_keys_depend_on_seed_step_and_global_position_only():
    spec = augment.StepInputs(mean=(0.5,) * 3, std=(0.5,) * 3, augment=_spec(), seed=3)
    rng = np.random.default_rng(2)
    batch = {"image": rng.integers(0, 256, (6, 24, 24), dtype=np.uint8),
             "mask": (rng.random((6, 24, 24)) > 0.7).astype(np.uint8), "spacing_mm": np.ones((6, 2), np.float32),
             "index": np.arange(6, dtype=np.int32)}
    whole = augment.prepare(batch, spec, 7)
    again = augment.prepare(batch, spec, 7)
    np.testing.assert_array_equal(whole["image"], again["image"])
    # two hosts' halves with their global positions: the same examples as the whole batch
    for rows in (slice(0, 3), slice(3, 6)):
        half = augment.prepare({k: v[rows] for k, v in batch.items()}, spec, 7)
        for k in ("image", "mask", "spacing_mm"):
            np.testing.assert_array_equal(half[k], np.asarray(whole[k])[rows])
    later = augment.prepare(batch, spec, 8)
    other_seed = augment.prepare(batch, augment.StepInputs(spec.mean, spec.std, spec.augment, seed=4), 7)
    same_pixels = dict(batch, image=np.repeat(batch["image"][:1], 6, 0))
    per_position = np.asarray(augment.prepare(same_pixels, spec, 7)["image"])
    for other in (later, other_seed):
        assert not np.allclose(other["image"], whole["image"])
    assert not np.allclose(per_position[0], per_position[1])  # each position draws its own parameters


def test_image_and_mask_move_together_and_spacing_follows_the_zoom():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:20] = 1  # asymmetric
    spec = augment.StepInputs(mean=(0.0,) * 3, std=(1.0,) * 3, seed=0,
                              augment=_spec(brightness=0.0, contrast=0.0, rotate_deg=20.0, scale_min=0.8,
                                            scale_max=1.2))
    batch = {"image": np.repeat(mask[None] * 255, 8, 0), "mask": np.repeat(mask[None], 8, 0),
             "spacing_mm": np.ones((8, 2), np.float32), "index": np.arange(8, dtype=np.int32)}
    out = augment.prepare(batch, spec, 0)
    img, m, sp = (np.asarray(out[k]) for k in ("image", "mask", "spacing_mm"))
    assert img.shape == (8, 64, 64, 3) and m.dtype == np.int32
    moved = 0
    for i in range(8):
        assert set(np.unique(m[i])) <= {0, 1}
        assert ((img[i, ..., 0] > 0.5) == (m[i] > 0)).mean() > 0.97
        moved += not np.array_equal(m[i], mask)
        assert 1 / 1.2 - 1e-6 <= sp[i, 0] <= 1 / 0.8 + 1e-6 and sp[i, 0] == sp[i, 1]
    assert moved >= 6


def test_random_resized_crop_zooms_into_its_box():
    """A crop of fixed area share a: h * w = a of the image fills the output, so the pixel area shrinks by a."""
    spec = _spec(hflip=False, rotate_deg=0.0, scale_min=1.0, scale_max=1.0, brightness=0.0, contrast=0.0,
                 crop_min=0.25, crop_max=0.25)
    s = 32
    rr, cc = np.mgrid[:s, :s].astype(np.float32)
    img01 = jnp.asarray(rr / (s - 1))  # a vertical ramp: the crop's rows map linearly onto it
    for i in range(6):
        key = augment.example_keys(0, 0, jnp.arange(6))[i]
        p = augment.sample(key, spec)
        h, w, cy, cx = np.asarray(p["crop"])
        assert h * w == pytest.approx(0.25, rel=1e-5) and 0 <= cy - h / 2 and cy + h / 2 <= 1 + 1e-6
        out, _, sp = augment.augment_one(img01, jnp.zeros((s, s), jnp.int32), jnp.ones(2, jnp.float32), key, spec)
        assert float(sp[0] * sp[1]) == pytest.approx(0.25, rel=1e-5)
        col = np.asarray(out)[:, s // 2]
        slope = np.polyfit(np.arange(4, s - 4), col[4:-4], 1)[0]
        assert slope == pytest.approx(h / (s - 1), rel=0.02)  # one output row steps h input rows


def test_eval_input_is_the_numpy_normalisation_of_the_8_bit_image():
    from input_pipeline import transforms

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    u8 = np.random.default_rng(3).integers(0, 256, (2, 10, 10), dtype=np.uint8)
    got = augment.prepare({"image": u8, "mask": np.zeros_like(u8)}, augment.StepInputs(mean, std))
    want = transforms.to_model_input(u8.astype(np.float32) / np.float32(255), mean, std)
    np.testing.assert_allclose(np.asarray(got["image"]), want, rtol=0, atol=2e-6)


def test_bad_augment_fields_are_named():
    for field, value in (("scale_min", 0.0), ("contrast", 1.5), ("crop_min", 1.2), ("rotate_deg", -1.0)):
        with pytest.raises(ValueError, match=f"data.augment.{field}"):
            _spec(**{field: value})
    assert _spec(enabled=False) is None
