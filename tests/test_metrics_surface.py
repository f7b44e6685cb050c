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
from brain_jax.metrics.surface import (
    _choose_method,
    _cumsum,
    _hausdorff,
    _list_points,
    _methods,
    _pack_rows,
    _packed_border,
    _packed_borders,
    _pass2,
    _point_distances,
    _unpack_rows,
    masked_percentile,
)

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
def test_small_scattered_masks_match_medpy(extent):
    """Scattered pieces inside an ``extent`` x ``extent`` window (few border points) match medpy."""
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


# ----------------------------------------------------------------------------- the exact methods


def _hd_medpy(pred, target, spacing):
    binary = _medpy()
    ref = [(binary.hd(p, t, voxelspacing=sp.astype(np.float64)), binary.hd95(p, t, voxelspacing=sp.astype(np.float64)))
           for p, t, sp in zip(pred, target, spacing)]
    return np.array(ref).T


def _blobs(rng, b: int, size: int, radius: tuple[float, float], centre: tuple[float, float]):
    """Irregular blobs (smoothed-noise radius) and perturbed copies, as in a segmentation batch."""
    yy, xx = np.mgrid[:size, :size]
    pred, target = np.zeros((2, b, size, size), bool)
    for i in range(b):
        cy, cx = rng.uniform(*centre, 2) * size
        r = rng.uniform(*radius) * size
        wobble = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3) * size / 10
        target[i] = np.hypot(yy - cy, xx - cx) + wobble < r
        pred[i] = ndimage.binary_dilation(target[i], iterations=2) ^ (rng.random((size, size)) < 0.01) & target[i]
    return pred, target


_forced = jax.jit(_hausdorff, static_argnames=("percentiles", "symmetric", "method"))


def test_every_method_gives_the_same_numbers_and_matches_medpy():
    """Lesion-sized masks fit every method: each, forced, gives the same numbers (to an ulp: the compiler may
    fuse a multiply-add in one method and not in another), equal to medpy's HD and HD95."""
    rng = np.random.default_rng(20)
    size = 128
    methods = _methods(size, size)
    assert methods == [("points", 1024), ("grid", 2), ("grid", None)]
    pred, target = _blobs(rng, 4, size, (0.05, 0.15), (0.35, 0.65))
    pred[3, 50, 40] = True  # a far false-positive pixel
    spacing = rng.uniform(0.4, 1.2, (4, 2)).astype(np.float32)
    outs = [np.asarray(_forced(pred, target, spacing, (None, 95.0), "union", method=i)) for i in range(len(methods))]
    for i, out in enumerate(outs[1:], 1):
        np.testing.assert_array_max_ulp(out, outs[0], maxulp=1)
    np.testing.assert_allclose(outs[0], _hd_medpy(pred, target, spacing), rtol=1e-5)
    auto = np.asarray(hausdorff_distances(pred, target, spacing))
    np.testing.assert_array_equal(auto, outs[int(_choose_method(*_packed_borders(pred, target)[1::2], size, size))])


def test_many_border_points_take_the_larger_budget_and_match_medpy():
    """1024 < border points <= 4096 spread over the whole image: the 4096-slot budget, equal to the
    whole-image transform and to medpy."""
    rng = np.random.default_rng(21)
    size = 256
    pred, target = _blobs(rng, 2, size, (0.1, 0.2), (0.4, 0.6))
    pred[0] |= rng.random((size, size)) < 0.02  # ~1300 isolated specks
    spacing = np.float32([[0.5, 0.7], [1.0, 1.0]])
    packed, words, pc, cum = _packed_borders(pred, target)
    counts = np.asarray(cum)[:, -1]
    assert 1024 < counts.max() <= 4096
    methods = _methods(size, size)
    assert methods[int(_choose_method(words, cum[:, -1], size, size))] == ("points", 4096)
    got = np.asarray(hausdorff_distances(pred, target, spacing))
    whole = np.asarray(_forced(pred, target, spacing, (None, 95.0), "union", method=len(methods) - 1))
    np.testing.assert_array_max_ulp(got, whole, maxulp=1)
    np.testing.assert_allclose(got, _hd_medpy(pred, target, spacing), rtol=1e-5)


def test_method_choice_follows_border_extent_and_count():
    """Lesions take border points; dense borders take the smallest grid that holds their rows and columns."""
    size = 512
    rng = np.random.default_rng(22)
    assert _methods(size, size) == [("points", 1024), ("points", 4096), ("grid", 4), ("grid", 2), ("grid", None)]
    assert _methods(48, 40) == [("points", 1024), ("grid", None)]  # grids no larger than 1024 pixels never pay
    lesion_p, lesion_t = _blobs(rng, 1, size, (0.05, 0.1), (0.4, 0.6))
    yy, xx = np.mgrid[:size, :size]
    specks = rng.random((size, size)) < 0.006  # ~1600 isolated pixels everywhere
    noise = rng.random((size, size)) < 0.5
    square = lambda n: (yy < n) & (xx < n)  # noqa: E731
    cases = {
        ("points", 1024): lesion_p[0],
        ("points", 4096): specks,
        ("grid", 4): noise & square(120),  # > 4096 border pixels within 128 rows / columns
        ("grid", 2): noise & square(250),
        ("grid", None): noise,
    }
    choose = jax.jit(lambda p, t: _choose_method(*_packed_borders(p, t)[1::2], size, size))
    for expected, pred in cases.items():
        index = int(choose(pred[None], lesion_t))
        assert _methods(size, size)[index] == expected


def test_packed_border_matches_border_at_any_width():
    rng = np.random.default_rng(23)
    for h, w in ((7, 31), (9, 64), (8, 65)):
        masks = np.stack([random_mask(rng, h, w) for _ in range(6)] + [np.ones((h, w), bool)])
        masks[0, :, w // 2 :] = True  # runs across word boundaries
        packed = _pack_rows(masks)
        assert packed.shape == (7, h, -(-w // 32)) and packed.dtype == jnp.uint32
        np.testing.assert_array_equal(np.asarray(_unpack_rows(packed, w)), masks)
        got = np.asarray(_unpack_rows(_packed_border(packed), w))
        np.testing.assert_array_equal(got, np.asarray(border(masks)), err_msg=f"{h}x{w}")


def test_list_points_in_raster_order_and_truncated_to_budget():
    rng = np.random.default_rng(24)
    h, w, budget = 20, 70, 64
    masks = rng.random((4, h, w)) < np.array([0.01, 0.04, 0.2, 0.0])[:, None, None]  # ~14, ~56, ~280, 0 pixels
    words, pc, cum = (np.asarray(a) for a in jax.jit(lambda m: _packed_borders(m, m)[1:])(masks))
    ys, xs, ok = map(np.asarray, _list_points(words[:4], pc[:4], cum[:4], 96, budget))  # rows [0, 4): the masks
    # border of an isolated pixel is the pixel itself; compare with numpy's raster-order nonzero
    bord = np.asarray(border(masks))
    for i in range(4):
        ref_y, ref_x = np.nonzero(bord[i])
        k = min(len(ref_y), budget)
        assert ok[i].sum() == k and ok[i, :k].all()
        np.testing.assert_array_equal(ys[i, :k], ref_y[:k])
        np.testing.assert_array_equal(xs[i, :k], ref_x[:k])
    assert bord[2].sum() > budget and bord[3].sum() == 0


def test_two_level_cumsum_matches_numpy():
    x = np.random.default_rng(25).integers(0, 33, (3, 200)).astype(np.int32)
    for m in (1, 63, 64, 65, 200):
        np.testing.assert_array_equal(np.asarray(_cumsum(x[:, :m])), np.cumsum(x[:, :m], axis=1))


def test_point_distances_loop_and_block_forms_are_bit_identical():
    rng = np.random.default_rng(26)
    n, k = 3, 512
    pts = rng.integers(0, 300, (4, n, k)).astype(np.int32)
    valid = rng.random((n, k)) < 0.8
    valid[:, 300:] = False  # the contract: no valid source past num_sources (blocks of 256 visit 512 slots)
    sp = rng.uniform(0.3, 2.0, (n, 2)).astype(np.float32)
    num = jnp.int32(300)
    loop = np.asarray(_point_distances((pts[0], pts[1]), (pts[2], pts[3]), valid, num, sp, "loop"))
    blocks = np.asarray(_point_distances((pts[0], pts[1]), (pts[2], pts[3]), valid, num, sp, "blocks"))
    np.testing.assert_array_equal(loop, blocks)
    d2 = (sp[:, None, None, 0] * (pts[0][:, :, None] - pts[2][:, None, :300])) ** 2 + (
        sp[:, None, None, 1] * (pts[1][:, :, None] - pts[3][:, None, :300])
    ) ** 2
    ref = np.where(valid[:, None, :300], d2, np.inf).min(axis=2)
    np.testing.assert_allclose(loop, ref, rtol=1e-6)
