"""Surface-distance metrics (border, exact EDT, HD, HD95) against medpy, scipy and MONAI."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from brain_jax.metrics import (
    border,
    directed_surface_distances,
    hausdorff_distance,
    hausdorff_distances,
    image_diagonal_mm,
)
from brain_jax.metrics.surface import _pass2, masked_percentile

H, W = 48, 40  # one static shape for most tests: one compile


def random_mask(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    """A varied binary mask: ellipses, rectangles, smoothed noise, thin lines, dots, edge touches."""
    kind = rng.integers(0, 6)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    if kind == 0:  # union of ellipses, possibly leaving the image
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(-3, h + 3), rng.uniform(-3, w + 3)
            ry, rx = rng.uniform(1, h / 3), rng.uniform(1, w / 3)
            m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    elif kind == 1:  # rectangles
        for _ in range(rng.integers(1, 3)):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0 : y0 + rng.integers(1, h // 2), x0 : x0 + rng.integers(1, w // 2)] = True
    elif kind == 2:  # smoothed noise: irregular blobs with holes
        m = ndimage.gaussian_filter(rng.normal(size=(h, w)), rng.uniform(1, 3)) > rng.uniform(0.05, 0.3)
    elif kind == 3:  # thin lines (every pixel is border)
        r = rng.integers(0, h)
        m[r, rng.integers(0, w // 2) :] = True
        m[:, rng.integers(0, w)] = True
    elif kind == 4:  # a few single pixels
        m[rng.integers(0, h, 3), rng.integers(0, w, 3)] = True
    else:  # ring (a hole has an inner border)
        rr = np.hypot(yy - rng.uniform(0, h), xx - rng.uniform(0, w))
        r0 = rng.uniform(3, 12)
        m = (rr <= r0 + rng.uniform(2, 6)) & (rr > r0)
    if not m.any():
        m[rng.integers(0, h), rng.integers(0, w)] = True
    return m


def random_batch(seed: int, b: int, h: int = H, w: int = W):
    rng = np.random.default_rng(seed)
    pred = np.stack([random_mask(rng, h, w) for _ in range(b)])
    target = np.stack([random_mask(rng, h, w) for _ in range(b)])
    # some pairs share most of their shape (small distances), others are unrelated
    near = rng.random(b) < 0.4
    pred[near] = ndimage.binary_dilation(target[near], iterations=1) ^ (rng.random((near.sum(), h, w)) < 0.02)
    spacing = rng.uniform(0.2, 2.5, size=(b, 2)).astype(np.float32)
    spacing[0] = (1.0, 1.0)
    return pred, target, spacing


def _medpy():
    from medpy.metric import binary

    return binary


def test_border_matches_medpy_definition_including_image_edge():
    rng = np.random.default_rng(1)
    masks = np.stack([random_mask(rng) for _ in range(12)])
    masks[0] = True  # whole image: only the image edge is border
    cross = ndimage.generate_binary_structure(2, 1)
    ref = np.stack([m ^ ndimage.binary_erosion(m, structure=cross, iterations=1) for m in masks])
    got = np.asarray(border(masks))
    np.testing.assert_array_equal(got, ref)
    assert got[0].sum() == 2 * (H + W) - 4


def test_distance_maps_equal_scipy_edt_anisotropic():
    pred, target, spacing = random_batch(2, 12)
    d_p, b_p, d_t, b_t = map(np.asarray, directed_surface_distances(pred, target, spacing))
    for i in range(12):
        ref_t = ndimage.distance_transform_edt(~b_t[i], sampling=spacing[i].astype(np.float64))
        ref_p = ndimage.distance_transform_edt(~b_p[i], sampling=spacing[i].astype(np.float64))
        np.testing.assert_allclose(d_p[i], ref_t, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(d_t[i], ref_p, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("seed", [3, 4])
def test_hd_and_hd95_match_medpy(seed):
    binary = _medpy()
    b = 12
    pred, target, spacing = random_batch(seed, b)
    hd, hd95 = map(np.asarray, hausdorff_distances(pred, target, spacing))
    for i in range(b):
        sp = spacing[i].astype(np.float64)
        np.testing.assert_allclose(hd[i], binary.hd(pred[i], target[i], voxelspacing=sp), rtol=1e-5)
        np.testing.assert_allclose(hd95[i], binary.hd95(pred[i], target[i], voxelspacing=sp), rtol=1e-5)
    # the checks are not vacuous: distances vary and HD95 is below HD somewhere
    assert np.ptp(hd) > 5 and np.any(hd95 < hd - 1e-3)


@pytest.mark.parametrize("extent", [5, 11, 23])
def test_compacted_budgets_match_medpy(extent):
    """Masks spanning at most ``extent`` rows/columns take the H/8, H/4, H/2 compacted paths."""
    binary = _medpy()
    rng = np.random.default_rng(extent)
    b = 12
    pred, target = np.zeros((2, b, H, W), bool)
    for m in (*pred, *target):
        for _ in range(rng.integers(1, 4)):  # scattered pieces inside one extent x extent window
            y, x = rng.integers(0, extent - 2, 2)
            m[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
        oy, ox = rng.integers(0, H - extent), rng.integers(0, W - extent)
        m[:] = np.roll(m, (oy, ox), axis=(0, 1))
    spacing = rng.uniform(0.3, 2.0, (b, 2)).astype(np.float32)
    rows_used = max(np.any(m, axis=1).sum() for m in (*pred, *target))
    cols_used = max(np.any(m, axis=0).sum() for m in (*pred, *target))
    assert max(rows_used, cols_used) <= extent
    hd, hd95 = map(np.asarray, hausdorff_distances(pred, target, spacing))
    for i in range(b):
        sp = spacing[i].astype(np.float64)
        np.testing.assert_allclose(hd[i], binary.hd(pred[i], target[i], voxelspacing=sp), rtol=1e-5)
        np.testing.assert_allclose(hd95[i], binary.hd95(pred[i], target[i], voxelspacing=sp), rtol=1e-5)


def test_other_percentiles_match_numpy_on_medpy_surface_sets():
    pred, target, spacing = random_batch(5, 12)
    d_p, b_p, d_t, b_t = map(np.asarray, directed_surface_distances(pred, target, spacing))
    qs = (0.0, 37.5, 50.0, 99.0, 100.0)
    for q, got in zip(qs, hausdorff_distances(pred, target, spacing, qs)):
        for i in range(12):
            union = np.concatenate([d_p[i][b_p[i]], d_t[i][b_t[i]]])
            np.testing.assert_allclose(got[i], np.percentile(union, q), rtol=1e-5, atol=1e-6)


def test_masked_percentile_matches_numpy_linear():
    rng = np.random.default_rng(6)
    vals = rng.exponential(3.0, size=(20, 50)).astype(np.float32)
    vals[:, ::7] = vals[:, :1]  # ties
    valid = rng.random((20, 50)) < 0.5
    valid[0] = False
    valid[1] = False
    valid[1, 3] = True  # a single value
    for q in (95.0, 50.0, 3.0):
        got = np.asarray(masked_percentile(vals, valid, q))
        assert np.isnan(got[0])
        for i in range(1, 20):
            np.testing.assert_allclose(got[i], np.percentile(vals[i][valid[i]], q), rtol=1e-6)


def test_hd_matches_scipy_directed_hausdorff_on_border_points():
    pred, target, spacing = random_batch(7, 12)
    got = np.asarray(hausdorff_distances(pred, target, spacing)[0])
    bp, bt = np.asarray(border(pred)), np.asarray(border(target))
    for i in range(12):
        pts_p = np.argwhere(bp[i]) * spacing[i].astype(np.float64)
        pts_t = np.argwhere(bt[i]) * spacing[i].astype(np.float64)
        ref = max(directed_hausdorff(pts_p, pts_t)[0], directed_hausdorff(pts_t, pts_p)[0])
        np.testing.assert_allclose(got[i], ref, rtol=1e-5)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_hd_matches_monai_with_mapped_conventions():
    """MONAI: one-hot (B, 2, H, W), include_background=False, spacing per case, directed=False.

    Its HD equals ours; its HD95 is the max of the two directed 95th percentiles, which is our
    ``symmetric="max"``, and differs from medpy's union convention (the default).
    """
    import torch
    from monai.metrics import HausdorffDistanceMetric

    b = 12
    pred, target, spacing = random_batch(8, b)
    onehot = lambda m: torch.from_numpy(np.stack([~m, m], axis=1).astype(np.float32))  # noqa: E731
    sp = [[float(s) for s in row] for row in spacing]
    hd_ref = HausdorffDistanceMetric(include_background=False, directed=False)(
        onehot(pred), onehot(target), spacing=sp
    ).numpy()[:, 0]
    q_ref = HausdorffDistanceMetric(include_background=False, percentile=95, directed=False)(
        onehot(pred), onehot(target), spacing=sp
    ).numpy()[:, 0]
    hd, hd95_union = map(np.asarray, hausdorff_distances(pred, target, spacing))
    hd95_max = np.asarray(hausdorff_distance(pred, target, spacing, 95, symmetric="max"))
    np.testing.assert_allclose(hd, hd_ref, rtol=1e-5)
    np.testing.assert_allclose(hd95_max, q_ref, rtol=1e-5)
    assert np.any(np.abs(hd95_max - hd95_union) > 1e-3), "the two HD95 conventions should differ somewhere"


def test_empty_mask_conventions():
    pred, target, spacing = random_batch(11, 12)  # 4 special cases + 8 ordinary ones
    pred[:4] = target[:4] = False
    pred[1, 5:9, 5:9] = True  # prediction without ground truth
    target[2, 10:12, 3:30] = True  # missed ground truth
    pred[3, 0, 0] = target[3, H - 1, W - 1] = True  # opposite corners: farthest possible pair
    spacing[:4] = [[1.0, 1.0], [0.5, 2.0], [0.7, 0.3], [1.5, 0.5]]
    hd, hd95 = map(np.asarray, hausdorff_distances(pred, target, spacing))
    diag = np.hypot(H * spacing[:, 0], W * spacing[:, 1])
    np.testing.assert_allclose(np.asarray(image_diagonal_mm((H, W), spacing)), diag, rtol=1e-6)
    assert hd[0] == 0 and hd95[0] == 0
    np.testing.assert_allclose(hd[1:3], diag[1:3], rtol=1e-6)
    np.testing.assert_allclose(hd95[1:3], diag[1:3], rtol=1e-6)
    # the diagonal penalty exceeds any distance between pixel centres
    far = np.hypot((H - 1) * 1.5, (W - 1) * 0.5)
    np.testing.assert_allclose(hd[3], far, rtol=1e-6)
    assert hd[3] < diag[3]


def test_single_case_and_broadcast_spacing_and_bad_input():
    pred, target, _ = random_batch(9, 12)
    one = np.asarray(hausdorff_distances(pred[0], target[0], (0.5, 0.8))[1])
    both = np.asarray(hausdorff_distances(pred, target, np.array([0.5, 0.8], np.float32))[1])
    assert one.shape == (1,) and one[0] == both[0]
    with pytest.raises(ValueError, match="spacing_mm"):
        hausdorff_distance(pred, target, np.ones((3, 2)))
    with pytest.raises(ValueError, match="equal shape"):
        hausdorff_distance(pred, target[:, :-1], (1.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(pred, target, (1.0, 1.0), 120)


def test_one_larger_case_matches_medpy():
    binary = _medpy()
    pred, target, spacing = random_batch(10, 1, 128, 128)
    spacing[0] = (0.49, 0.61)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd, hd95 = map(np.asarray, hausdorff_distances(pred, target, spacing))
    sp = spacing[0].astype(np.float64)
    np.testing.assert_allclose(hd[0], binary.hd(pred[0], target[0], voxelspacing=sp), rtol=1e-5)
    np.testing.assert_allclose(hd95[0], binary.hd95(pred[0], target[0], voxelspacing=sp), rtol=1e-5)


def test_pass2_loop_and_block_forms_are_bit_identical():
    """The CPU form (running min) and the accelerator form (blocked reduction) give the same bits."""
    rng = np.random.default_rng(12)
    n, h, w = 3, 24, 20
    col = np.where(rng.random((n, h, w)) < 0.2, np.inf, rng.random((n, h, w)) * 50).astype(np.float32)
    sp = rng.uniform(0.3, 2.0, (n, 2)).astype(np.float32)
    src = np.stack([rng.permutation(h)[:10] for _ in range(n)]).astype(np.int32)
    dst = np.stack([rng.permutation(h)[:8] for _ in range(n)]).astype(np.int32)
    ref = np.stack([
        [[min((sp[i, 0] * np.float32(d - r)) ** 2 + col[i, r, c] for r in src[i]) for c in range(w)] for d in dst[i]]
        for i in range(n)
    ])
    rows_of_src = np.take_along_axis(col, src[:, :, None], axis=1)  # pass 2 gets the source rows only
    for impl in ("loop", "blocks"):
        got = np.asarray(_pass2(rows_of_src, sp, src, dst, impl))
        np.testing.assert_allclose(got, ref, rtol=1e-6, err_msg=impl)
    a = np.asarray(_pass2(col, sp, None, None, "loop"))
    b = np.asarray(_pass2(col, sp, None, None, "blocks"))
    np.testing.assert_array_equal(a, b)
