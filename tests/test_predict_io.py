"""Slice readers (every format writes a tiny asymmetric file and reads it back) and the predictor."""
from __future__ import annotations

import numpy as np
import pytest

from brain_jax.io import read_slice

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
    import h5py

    a = _ramp(np.int16) * 10
    m = np.zeros((H, W), np.uint8)
    m[1:3, 4:6] = 1
    f = tmp_path / "12.mat"
    # MATLAB v7.3 = HDF5 with a 512-byte user block; column-major, so h5py sees the transpose.
    with h5py.File(f, "w", userblock_size=512) as h:
        g = h.create_group("cjdata")
        g["image"] = a.T
        g["tumorMask"] = m.T.astype(np.float64)
        g["label"] = np.array([[2.0]])
    s = read_slice(f)
    assert s.source_format == "mat-v7.3"
    np.testing.assert_array_equal(s.image, a)
    np.testing.assert_array_equal(s.mask, m)
    # 0.49 mm at 512 pixels -> 0.49 * 512 / n
    assert s.pixel_spacing_mm == pytest.approx((250.88 / H, 250.88 / W))


def test_mat_v73_native_512_spacing(tmp_path):
    import h5py

    f = tmp_path / "a.mat"
    with h5py.File(f, "w") as h:
        h.create_group("cjdata")["image"] = np.ones((512, 512), np.int16)
    assert read_slice(f).pixel_spacing_mm == pytest.approx((0.49, 0.49))


def test_mat_v5(tmp_path):
    import scipy.io

    a = _ramp(np.float64) - 4
    m = np.zeros((H, W), np.uint8)
    m[0, 6] = 1
    f = tmp_path / "old.mat"
    scipy.io.savemat(f, {"cjdata": {"image": a, "tumorMask": m, "label": 1.0}})
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


def _write_dicom(path, arr, spacing=(0.5, 0.8), slope=2.0, intercept=-100.0, photometric="MONOCHROME2"):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = arr.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_rescale_spacing_orientation(tmp_path):
    a = _ramp(np.int16) - 20
    _write_dicom(tmp_path / "x.dcm", a)
    s = read_slice(tmp_path / "x.dcm")
    assert s.source_format == "dicom"
    np.testing.assert_array_equal(s.image, a * 2.0 - 100.0)
    assert s.pixel_spacing_mm == (0.5, 0.8)
    # extension-less DICOM is recognised by its magic number; no spacing -> None
    _write_dicom(tmp_path / "IM0001", a, spacing=None, slope=1.0, intercept=0.0)
    s2 = read_slice(tmp_path / "IM0001")
    np.testing.assert_array_equal(s2.image, a)
    assert s2.pixel_spacing_mm is None


def test_dicom_monochrome1_inverted(tmp_path):
    a = _ramp(np.int16)
    _write_dicom(tmp_path / "m1.dcm", a, slope=1.0, intercept=0.0, photometric="MONOCHROME1")
    s = read_slice(tmp_path / "m1.dcm")
    np.testing.assert_array_equal(s.image, a.max() + a.min() - a.astype(np.float32))


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
