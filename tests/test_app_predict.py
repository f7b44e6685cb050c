"""Slice readers (every format writes a tiny asymmetric file and reads it back) and the predictor."""
from __future__ import annotations

import numpy as np
import pytest

from brain_jax.io import read_slice
from input_pipeline.synthetic import write_dicom, write_figshare_mat

H, W = 5, 7  # asymmetric on purpose: a transposed or flipped read changes shape or values


def _ramp(dtype=np.uint8) -> np.ndarray:
    return (np.arange(H * W).reshape(H, W) * 3 + 1).astype(dtype)


# ------------------------------------------------------------------------------- raster images


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_gray_raster_exact(tmp_path, ext):
    from PIL import Image

    a = _ramp()
    f = tmp_path / f"x.{ext}"
    Image.fromarray(a).save(f)
    s = read_slice(f)
    assert s.image.dtype == np.float32 and s.image.shape == (H, W)
    np.testing.assert_array_equal(s.image, a)
    assert s.pixel_spacing_mm is None and s.mask is None


def test_png_16bit_and_float_tiff(tmp_path):
    from PIL import Image

    a16 = (_ramp(np.uint16) * 1000).astype(np.uint16)  # values above 255 must survive
    Image.fromarray(a16).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_slice(tmp_path / "x.png").image, a16.astype(np.float32))
    af = _ramp(np.float32) / 7.0 - 3.0
    Image.fromarray(af, mode="F").save(tmp_path / "x.tiff")
    np.testing.assert_allclose(read_slice(tmp_path / "x.tiff").image, af, rtol=0, atol=0)


def test_rgb_and_rgba_to_luma(tmp_path):
    from PIL import Image

    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # pure red-ish 200, green 100 on one pixel, blue 50 elsewhere
    rgb[1, 2] = (10, 100, 0)
    rgb[..., 2] = 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    s = read_slice(tmp_path / "c.png")
    expect = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(s.image, expect, atol=1e-4)
    assert any("gray" in n for n in s.notes)

    rgba = np.concatenate([rgb, np.full((H, W, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "c4.png")
    np.testing.assert_allclose(read_slice(tmp_path / "c4.png").image, expect, atol=1e-4)

    # gray stored as RGB (as in the Kaggle JPGs) keeps its values exactly
    g = _ramp()
    Image.fromarray(np.repeat(g[..., None], 3, -1)).save(tmp_path / "g.bmp")
    np.testing.assert_allclose(read_slice(tmp_path / "g.bmp").image, g, atol=1e-4)


def test_jpeg_close(tmp_path):
    from PIL import Image

    a = np.kron(_ramp(), np.ones((8, 8), np.uint8))  # smooth blocks: JPEG reproduces them closely
    Image.fromarray(a).save(tmp_path / "x.JPEG", quality=100)
    s = read_slice(tmp_path / "x.JPEG")
    assert s.source_format == "jpeg" and s.image.shape == a.shape
    assert np.abs(s.image - a).mean() < 1.5


# ------------------------------------------------------------------------------------- MATLAB


def test_mat_v73_figshare_layout(tmp_path):
    a = _ramp(np.int16) * 10
    m = np.zeros((H, W), np.uint8)
    m[1:3, 4:6] = 1
    f = write_figshare_mat(tmp_path / "12.mat", a, m, 2.0)  # HDF5, column-major as MATLAB writes it
    s = read_slice(f)
    assert s.source_format == "mat-v7.3"
    np.testing.assert_array_equal(s.image, a)
    np.testing.assert_array_equal(s.mask, m)
    # 0.49 mm at 512 pixels -> 0.49 * 512 / n
    assert s.pixel_spacing_mm == pytest.approx((250.88 / H, 250.88 / W))


def test_mat_v73_native_512_spacing(tmp_path):
    f = write_figshare_mat(tmp_path / "a.mat", np.ones((512, 512), np.int16))
    assert read_slice(f).pixel_spacing_mm == pytest.approx((0.49, 0.49))


def test_mat_v5(tmp_path):
    import scipy.io

    a = _ramp(np.float64) - 4
    m = np.zeros((H, W), np.uint8)
    m[0, 6] = 1
    f = write_figshare_mat(tmp_path / "old.mat", a, m, 1.0, version="5")
    s = read_slice(f)
    assert s.source_format == "mat-v5"
    np.testing.assert_array_equal(s.image, a)
    np.testing.assert_array_equal(s.mask, m)
    assert s.pixel_spacing_mm == pytest.approx((250.88 / H, 250.88 / W))
    scipy.io.savemat(tmp_path / "plain.mat", {"image": a})
    s2 = read_slice(tmp_path / "plain.mat")
    np.testing.assert_array_equal(s2.image, a)
    assert s2.pixel_spacing_mm is None


# -------------------------------------------------------------------------------------- DICOM


def test_dicom_rescale_spacing_orientation(tmp_path):
    a = _ramp(np.int16) - 20
    write_dicom(tmp_path / "x.dcm", a, slope=2.0, intercept=-100.0)
    s = read_slice(tmp_path / "x.dcm")
    assert s.source_format == "dicom"
    np.testing.assert_array_equal(s.image, a * 2.0 - 100.0)
    assert s.pixel_spacing_mm == (0.5, 0.8)
    # extension-less DICOM is recognised by its magic number; no spacing -> None
    write_dicom(tmp_path / "IM0001", a, spacing=None)
    s2 = read_slice(tmp_path / "IM0001")
    np.testing.assert_array_equal(s2.image, a)
    assert s2.pixel_spacing_mm is None


def test_dicom_monochrome1_inverted(tmp_path):
    a = _ramp(np.int16)
    write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1")
    s = read_slice(tmp_path / "m1.dcm")
    np.testing.assert_array_equal(s.image, a.max() + a.min() - a.astype(np.float32))


def test_dicom_multiframe_needs_frame_index(tmp_path):
    a = np.stack([_ramp(np.int16) + 100 * k for k in range(3)])
    write_dicom(tmp_path / "mf.dcm", a)
    with pytest.raises(ValueError, match=r"mf\.dcm: multi-frame DICOM with 3 frames"):
        read_slice(tmp_path / "mf.dcm")
    np.testing.assert_array_equal(read_slice(tmp_path / "mf.dcm", 2).image, a[2])
    with pytest.raises(ValueError, match="frame 3 out of range"):
        read_slice(tmp_path / "mf.dcm", 3)


# -------------------------------------------------------------------------------------- NIfTI


def _marked_volume(nx=4, ny=6, nz=3):
    """RAS volume: slice k filled with 10*k; markers at the right-anterior and left-anterior corners."""
    v = np.zeros((nx, ny, nz), np.float32) + 10 * np.arange(nz, dtype=np.float32)
    v[nx - 1, ny - 1, :] = 500  # patient's right (x max), anterior (y max)
    v[0, ny - 1, :] = 700  # patient's left, anterior
    v[0, 0, :] = 900  # patient's left, posterior
    return v


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_radiological_orientation_and_spacing(tmp_path, suffix):
    import nibabel as nib

    v = _marked_volume()
    f = tmp_path / f"vol{suffix}"
    nib.save(nib.Nifti1Image(v, np.diag([0.7, 0.9, 2.5, 1.0])), f)
    s = read_slice(f)  # default: middle axial slice (index 1 of 3)
    assert s.source_format == "nifti"
    assert s.image.shape == (6, 4)  # rows = A-P (ny), cols = R-L (nx)
    assert s.image[0, 0] == 500  # top-left: anterior, patient's right
    assert s.image[0, -1] == 700  # top-right: anterior, patient's left
    assert s.image[-1, -1] == 900  # bottom-right: posterior, patient's left
    assert s.image[2, 1] == 10.0  # middle slice value
    assert s.pixel_spacing_mm == pytest.approx((0.9, 0.7))
    assert read_slice(f, 2).image[2, 1] == 20.0


def test_nifti_las_affine_gives_same_picture(tmp_path):
    import nibabel as nib

    v = _marked_volume()
    # Same anatomy stored left-to-right (LAS): x axis reversed in data and affine.
    aff = np.diag([-0.7, 0.9, 2.5, 1.0])
    aff[0, 3] = 0.7 * 3
    nib.save(nib.Nifti1Image(v[::-1].copy(), aff), tmp_path / "las.nii")
    nib.save(nib.Nifti1Image(v, np.diag([0.7, 0.9, 2.5, 1.0])), tmp_path / "ras.nii")
    a, b = read_slice(tmp_path / "las.nii", 0), read_slice(tmp_path / "ras.nii", 0)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.pixel_spacing_mm == pytest.approx(b.pixel_spacing_mm)


def test_nifti_2d(tmp_path):
    import nibabel as nib

    a = _ramp(np.float32)  # (x=5, y=7)
    nib.save(nib.Nifti1Image(a, np.diag([1.5, 0.5, 1.0, 1.0])), tmp_path / "s.nii")
    s = read_slice(tmp_path / "s.nii")
    assert s.image.shape == (W, H)
    assert s.image[0, 0] == a[H - 1, W - 1]  # anterior-right corner at top-left
    assert s.pixel_spacing_mm == pytest.approx((0.5, 1.5))


# ------------------------------------------------------------------------------------- errors


def test_errors_name_the_file(tmp_path):
    import h5py
    import nibabel as nib
    import scipy.io
    from PIL import Image

    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_slice(tmp_path / "nope.png")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"notes\.txt.*expected one of"):
        read_slice(tmp_path / "notes.txt")
    for name in ("bad.png", "bad.dcm", "bad.mat", "bad.nii", "bad.jpg"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 40)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            read_slice(tmp_path / name)
    Image.new("CMYK", (4, 3)).save(tmp_path / "cmyk.tif")
    with pytest.raises(ValueError, match=r"cmyk\.tif.*gray, RGB or RGBA"):
        read_slice(tmp_path / "cmyk.tif")
    with h5py.File(tmp_path / "vol.mat", "w") as h:
        h.create_group("cjdata")["image"] = np.zeros((3, 4, 5))
    with pytest.raises(ValueError, match=r"vol\.mat.*2-D"):
        read_slice(tmp_path / "vol.mat")
    with h5py.File(tmp_path / "empty.mat", "w") as h:
        h.create_group("cjdata")["image"] = np.zeros((0, 4))
    with pytest.raises(ValueError, match=r"empty\.mat.*empty"):
        read_slice(tmp_path / "empty.mat")
    with h5py.File(tmp_path / "other.mat", "w") as h:
        h["foo"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"other\.mat.*foo"):
        read_slice(tmp_path / "other.mat")
    scipy.io.savemat(tmp_path / "rgb5.mat", {"image": np.zeros((3, 4, 5))})
    with pytest.raises(ValueError, match=r"rgb5\.mat.*2-D"):
        read_slice(tmp_path / "rgb5.mat")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(ValueError, match=r"t\.nii.*3-D volume"):
        read_slice(tmp_path / "t.nii")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4)), tmp_path / "v.nii")
    with pytest.raises(ValueError, match=r"v\.nii.*slice 9 out of range"):
        read_slice(tmp_path / "v.nii", 9)
    Image.fromarray(_ramp()).save(tmp_path / "ok.png")
    with pytest.raises(ValueError, match="single slice"):
        read_slice(tmp_path / "ok.png", 2)
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"x\.npy"):
        read_slice(tmp_path / "x.npy")


# ------------------------------------------------------------------------------------ predictor


def _cfg(task, size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    model = "convnextv2" if task == "classification" else "segformer"  # the stubs stand in for one
    return {"model": {"name": model, "variant": "test"},
            "data": {"task": task, "image_size": size, "mean": list(mean), "std": list(std),
                     "upper_percentile": 99.5, "name": "brain_phantoms", "builder_config": "small",
                     "classes": "", "num_classes": 0}}


def _spec(cfg):
    """The RunSpec of a config, as predict builds it from a workdir's config.json."""
    from brain_jax.train.spec import RunSpec

    return RunSpec.from_config(cfg, where="config.json")


def _loader_input(image, size, mean, std):
    """What the training loader feeds the model for an evaluation image: the prepared cache's 8-bit image
    (normalised, resized, rounded), then the mean / std."""
    from input_pipeline import transforms

    img = transforms.normalise_intensity(image, 99.5)
    img, _, _ = transforms.resize(img, np.zeros(img.shape, np.uint8), np.ones(2, np.float32), size)
    u8 = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return transforms.to_model_input(u8.astype(np.float32) / np.float32(255), mean, std)


def _slice(img, spacing=None, mask=None, path="x.png"):
    from brain_jax.io import Slice

    return Slice(np.asarray(img, np.float32), spacing, "png", path, mask)


def test_predict_classification_stub_matches_loader_and_softmax():
    from brain_jax.app.predict import predict_arrays

    rng = np.random.default_rng(0)
    imgs = [rng.uniform(0, 900, size=(40, 56)), rng.uniform(0, 255, size=(64, 64)), rng.normal(size=(30, 20))]
    seen = []
    w = rng.normal(size=(3, 4))

    def model(x):  # records its input; logits = per-channel means @ w
        x = np.asarray(x)
        seen.append(x)
        return x.mean(axis=(1, 2)) @ w

    cfg = _cfg("classification", 32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    res = predict_arrays(model, _spec(cfg), [_slice(i) for i in imgs], batch_size=2)
    x = np.concatenate(seen)[: len(imgs)]  # second chunk is padded to the batch size
    assert np.concatenate(seen).shape == (4, 32, 32, 3)
    for i, img in enumerate(imgs):
        expect_x = _loader_input(img.astype(np.float32), 32, cfg["data"]["mean"], cfg["data"]["std"])
        np.testing.assert_allclose(x[i], expect_x, atol=1e-6)
        logits = expect_x.astype(np.float64).mean(axis=(0, 1)) @ w
        p = np.exp(logits - logits.max())
        p /= p.sum()
        got = res[i].probabilities
        assert list(got) == ["glioma", "meningioma", "notumor", "pituitary"]
        np.testing.assert_allclose(list(got.values()), p, atol=1e-5)
        assert res[i].predicted_class == list(got)[int(np.argmax(p))]


def test_write_outputs_classification(tmp_path):
    import json

    from brain_jax.app.predict import format_table, predict_arrays, write_outputs

    def model(x):  # bright images -> "notumor", dark -> "glioma"
        m = np.asarray(x).mean(axis=(1, 2, 3)) - 0.5
        return np.stack([-m, np.zeros_like(m), m, np.zeros_like(m)], axis=1) * 10

    a = np.zeros((20, 20), np.float32)
    a[:, :2] = 1  # mostly dark after min/max normalisation
    b = np.ones((20, 20), np.float32)
    b[:2, :2] = 0  # mostly bright
    slices = [_slice(a, path="dark.png"), _slice(b, path="bright.png")]
    res = predict_arrays(model, _spec(_cfg("classification", 16)), slices)
    assert [r.predicted_class for r in res] == ["glioma", "notumor"]
    path = write_outputs(res, slices, tmp_path / "o", "classification", {"model": "stub"})
    doc = json.loads(path.read_text())
    assert doc["task"] == "classification" and doc["model"] == "stub"
    assert [p["predicted_class"] for p in doc["predictions"]] == ["glioma", "notumor"]
    assert sum(doc["predictions"][1]["probabilities"].values()) == pytest.approx(1.0)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["predictions.json"]
    table = format_table(res, "classification").splitlines()
    assert table[0].split()[:3] == ["file", "predicted", "glioma"]
    assert table[2].split()[:2] == ["dark.png", "glioma"] and table[3].split()[:2] == ["bright.png", "notumor"]


def _rect_case(h=96, w=64, box=(20, 60, 10, 40)):
    img = np.full((h, w), 100.0, np.float32)
    img[box[0]:box[1], box[2]:box[3]] = 900.0
    m = np.zeros((h, w), np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = 1
    return img, m


def _stub_segmenter(x):
    """Tumour logit = 4x4-pooled intensity - 0.5 at H/4, like SegFormer's output stride."""
    x = np.asarray(x)[..., 0]
    b, h, w = x.shape
    pooled = x.reshape(b, h // 4, 4, w // 4, 4).mean(axis=(2, 4))
    return np.stack([np.zeros_like(pooled), pooled - 0.5], axis=-1)


def test_predict_segmentation_stub_original_resolution_and_area():
    from brain_jax.app.predict import predict_arrays

    img, m = _rect_case()
    res = predict_arrays(_stub_segmenter, _spec(_cfg("segmentation", 32)),
                         [_slice(img, (0.5, 0.8), m), _slice(img.T.copy())])
    r0, r1 = res
    assert r0.mask.shape == (96, 64) and r1.mask.shape == (64, 96)
    inter = np.logical_and(r0.mask, m).sum()
    assert 2 * inter / (r0.mask.sum() + m.sum()) > 0.9
    np.testing.assert_array_equal(r1.mask, r0.mask.T)  # orientation survives the round trip
    assert r0.area_mm2 == pytest.approx(r0.mask.sum() * 0.5 * 0.8)
    assert r0.area_mm2 == pytest.approx(40 * 30 * 0.4, rel=0.1)
    assert r0.dice_vs_file_mask == pytest.approx(2 * inter / (r0.mask.sum() + m.sum()))
    assert r1.area_mm2 is None and r1.tumour_pixels == int(r1.mask.sum())
    assert any("spacing unknown" in n for n in r1.notes)


def test_predict_wrong_model_output_shape():
    from brain_jax.app.predict import predict_arrays

    with pytest.raises(ValueError, match="segmentation.*expected \\(batch, height"):
        predict_arrays(lambda x: np.zeros((len(x), 4)), _spec(_cfg("segmentation")), [_slice(np.ones((8, 8)))])
    with pytest.raises(ValueError, match="classification.*expected \\(batch, num_classes"):
        predict_arrays(_stub_segmenter, _spec(_cfg("classification")), [_slice(np.ones((8, 8)))])


def test_write_outputs_segmentation_files(tmp_path):
    from PIL import Image

    from brain_jax.app.predict import format_table, predict_arrays, write_outputs

    img, m = _rect_case()
    slices = [_slice(img, (0.5, 0.8), m, "a/scan.mat"), _slice(img, None, None, "b/scan.png")]
    res = predict_arrays(_stub_segmenter, _spec(_cfg("segmentation", 32)), slices)
    path = write_outputs(res, slices, tmp_path / "out", "segmentation", {"model": "stub"})
    doc = __import__("json").loads(path.read_text())
    assert [p["mask_png"] for p in doc["predictions"]] == ["scan_mask.png", "scan_2_mask.png"]
    for rec, r in zip(doc["predictions"], res):
        mask = np.asarray(Image.open(tmp_path / "out" / rec["mask_png"]))
        assert mask.shape == (96, 64) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask > 0, r.mask > 0)
        ov = np.asarray(Image.open(tmp_path / "out" / rec["overlay_png"]))
        assert ov.shape == (96, 64, 3)
        assert ((ov[..., 0] == 255) & (ov[..., 1] == 40)).any()  # red prediction outline
        assert rec["tumour_pixels"] == int((mask > 0).sum())
    assert doc["predictions"][0]["area_mm2"] == pytest.approx((mask > 0).sum() * 0.4)
    assert doc["predictions"][1]["area_mm2"] is None
    table = format_table(res, "segmentation")
    assert "mm²" in table and "px*" in table


def _tiny_model(name: str, num_labels: int, seed: int):
    """A "test"-size model with random weights, built from its abstract shape: initialising the real
    way costs ~15 s of CPU per model (XLA compiles every initializer), this well under 1 s."""
    import jax
    from flax import nnx

    from brain_jax.models import create

    abstract = nnx.eval_shape(lambda: create(name, "test", num_labels, rngs=nnx.Rngs(seed)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(state):
        sds = var.get_value()
        leaf = str(path[-1])
        if isinstance(var, nnx.RngKey):
            value = jax.random.key(seed) if sds.shape == () else jax.random.split(jax.random.key(seed), sds.shape)
        elif isinstance(var, nnx.RngCount):
            value = np.zeros(sds.shape, sds.dtype)
        elif isinstance(var, nnx.BatchStat):
            value = (np.ones if "var" in leaf else np.zeros)(sds.shape, sds.dtype)
        else:
            value = (rng.normal(size=sds.shape) * 0.2 + (1.0 if leaf == "scale" else 0.0)).astype(sds.dtype)
        var.set_value(value)
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def tiny_models():
    return _tiny_model("convnextv2", 4, 0), _tiny_model("segformer", 2, 1)


def test_predict_real_tiny_models(tiny_models):
    from flax import nnx

    from brain_jax.app.predict import predict_arrays

    cls_model, seg_model = tiny_models
    rng = np.random.default_rng(1)
    slices = [_slice(rng.uniform(0, 500, size=s)) for s in ((40, 30), (32, 32), (50, 70))]
    cfg = _cfg("classification", 32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    # batch 2: the last chunk is zero-padded, which must not change its result
    res = predict_arrays(cls_model, _spec(cfg), slices, batch_size=2)
    x = np.stack([_loader_input(s.image, 32, cfg["data"]["mean"], cfg["data"]["std"]) for s in slices])
    cls_model.eval()
    logits = np.asarray(nnx.jit(lambda m, x: m(x))(cls_model, x), np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose([list(r.probabilities.values()) for r in res], p, atol=1e-5)
    seg = predict_arrays(seg_model, _spec(_cfg("segmentation", 32)), slices)
    assert [r.mask.shape for r in seg] == [(40, 30), (32, 32), (50, 70)]
    assert all(r.mask.dtype == np.uint8 and set(np.unique(r.mask)) <= {0, 1} for r in seg)


def _make_workdir(wd, model, task, size=32):
    """A workdir as the trainer leaves it: config.json, model.json and an orbax checkpoint."""
    import json

    import dataclasses

    from brain_jax import workdir
    from brain_jax.train import engine
    from brain_jax.train.checkpoints import Checkpointer

    wd.mkdir()
    cfg = {"model": {"name": model.config.model_type, "variant": "test"},
           "data": {"task": task, "image_size": size, "mean": [0.5] * 3, "std": [0.25] * 3,
                    "upper_percentile": 99.5, "num_classes": model.config.num_labels}}
    (wd / "config.json").write_text(json.dumps(cfg))
    workdir.write_model_json(wd, model.config.model_type, dataclasses.asdict(model.config))
    parts = engine.split_model(model)
    ck = Checkpointer(wd, async_save=False)
    ck.save(3, {"params": parts.params, "batch_stats": parts.batch_stats}, None, force=True)
    ck.close()
    return cfg


@pytest.mark.slow
def test_predict_command_end_to_end(tiny_models, tmp_path, capsys, monkeypatch):
    import json

    from PIL import Image

    from brain_jax.app.commands import predict
    from brain_jax.app.predict import predict_arrays
    from brain_jax.cli import build_parser

    seg_model = tiny_models[1]
    cfg = _make_workdir(tmp_path / "wd", seg_model, "segmentation")
    img, m = _rect_case(64, 48, (10, 40, 8, 30))
    write_figshare_mat(tmp_path / "7.mat", img, m)
    Image.fromarray(_ramp()).save(tmp_path / "p.png")
    inputs = [str(tmp_path / "7.mat"), str(tmp_path / "p.png")]

    from brain_jax.cli import main

    monkeypatch.chdir(tmp_path)  # a relative --workdir, as users type it
    assert main(["predict", "--workdir", "wd", *inputs]) == 0
    out = tmp_path / "wd" / "predictions"
    doc = json.loads((out / "predictions.json").read_text())
    expect = predict_arrays(seg_model, _spec(cfg), [read_slice(p) for p in inputs])
    assert 0 < expect[0].mask.mean() < 1  # a mixed mask, so the comparison below means something
    for rec, e in zip(doc["predictions"], expect):
        mask = np.asarray(Image.open(out / rec["mask_png"])) > 0
        np.testing.assert_array_equal(mask, e.mask > 0)  # the reloaded weights give the same masks
        assert (out / rec["overlay_png"]).is_file()
    assert doc["predictions"][0]["area_mm2"] == pytest.approx(
        int(np.asarray(Image.open(out / "7_mask.png")).astype(bool).sum()) * (250.88 / 64) * (250.88 / 48))
    assert doc["predictions"][1]["area_mm2"] is None
    printed = capsys.readouterr().out
    assert "7.mat" in printed and "p.png" in printed and "predictions.json" in printed

    # bad inputs: clear errors, nothing written
    bad_out = tmp_path / "bad_out"
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file" * 20)
    for argv, exc, pattern in [
        ([*inputs, str(tmp_path / "junk.dcm")], ValueError, r"junk\.dcm"),
        ([str(tmp_path / "missing.png")], FileNotFoundError, r"missing\.png"),
    ]:
        a = build_parser().parse_args(["predict", "--workdir", str(tmp_path / "wd"), "--out", str(bad_out), *argv])
        with pytest.raises(exc, match=pattern):
            predict(a)
    (tmp_path / "empty_wd").mkdir()
    (tmp_path / "empty_wd" / "config.json").write_text(json.dumps(cfg))
    a = build_parser().parse_args(["predict", "--workdir", str(tmp_path / "empty_wd"), "--out", str(bad_out), *inputs])
    with pytest.raises(FileNotFoundError, match=r"empty_wd: no checkpoint"):
        predict(a)
    (tmp_path / "a_file").write_text("x")
    a = build_parser().parse_args(["predict", "--workdir", str(tmp_path / "wd"), "--out", str(tmp_path / "a_file"),
                                   *inputs])
    with pytest.raises(ValueError, match="a_file: exists and is not a folder"):
        predict(a)
    a = build_parser().parse_args(["predict", "--workdir", str(tmp_path / "nowd"), "--out", str(bad_out), *inputs])
    with pytest.raises(FileNotFoundError, match="nowd"):
        predict(a)
    assert not bad_out.exists()
    # through the CLI: one line on stderr naming the file, exit code 2
    capsys.readouterr()
    assert main(["predict", "--workdir", str(tmp_path / "wd"), "--out", str(bad_out), str(tmp_path / "junk.dcm")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brain-jax predict: error:") and "junk.dcm" in err and len(err.splitlines()) == 1
    assert not bad_out.exists()


def test_absurd_image_size_in_config_is_refused():
    # predict reads a workdir's config.json through its RunSpec, which refuses the size before any work
    with pytest.raises(ValueError, match=r"config.json: data.image_size = 1000000; .* at most 4096"):
        _spec(_cfg("classification", 10**6))
