"""Property-based fuzzing of the slice readers ``brain-jax predict`` uses (PNG/JPEG/BMP/TIFF, Figshare
.mat v7.3 and v5, DICOM, NIfTI): valid files mutated (cut short, bytes overwritten, junk spliced in,
chunks repeated) or written with wrong shapes and dtypes, NaN/Inf pixels, empty and huge dimensions.

The property: a finite float32 2-D array of the declared shape (the written values where the format is
lossless), or one ValueError on one line that names the file; a header declaring more pixels than the
limits is refused before decoding. Each call runs in a worker process under a deadline, so a hang or a
crash in a decoder fails the test with its input instead of passing unseen.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from brain_jax.io.guards import MAX_PIXELS, MAX_VOXELS
from input_pipeline import synthetic
from tests.fuzz_helpers import (FUZZ, Seeds, Worker, assert_clean_error, bmp_with_size, jpeg_with_size, mutations,
                                png_with_size, poked)

H, W = 24, 20  # small, asymmetric seeds: fast calls, and a transposed read changes the shape
READ = "brain_jax.io:read_slice"


@pytest.fixture(scope="module")
def worker():
    with Worker("brain_jax.io") as w:
        yield w


def _pixels(dtype=np.int16) -> np.ndarray:
    return (np.arange(H * W).reshape(H, W) * 7 % 900 + 10).astype(dtype)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    """One valid file per format and encoding, as bytes."""
    from PIL import Image

    d = tmp_path_factory.mktemp("seeds")
    img = _pixels()
    mask = np.zeros((H, W), np.uint8)
    mask[3:9, 4:15] = 1
    rgb = np.stack([_pixels(np.uint8), _pixels(np.uint8)[::-1], np.full((H, W), 9, np.uint8)], axis=-1)
    Image.fromarray(_pixels(np.uint8)).save(d / "slice.png")
    Image.fromarray(_pixels(np.uint16) * 50).save(d / "slice16.png")
    Image.fromarray(_pixels(np.uint8)).save(d / "slice.jpg", quality=90)
    Image.fromarray(_pixels(np.float32) / 3).save(d / "slice.tif")
    Image.fromarray(rgb).save(d / "slice.bmp")
    synthetic.write_figshare_mat(d / "v73.mat", img, mask, 2.0, "PT1")
    synthetic.write_figshare_mat(d / "v6.mat", img, mask, 2.0, "PT1", version="5")
    synthetic.write_figshare_mat(d / "v7.mat", img, mask, 2.0, "PT1", version="7")
    synthetic.write_dicom(d / "scan.dcm", img, slope=2.0, intercept=-100.0)
    synthetic.write_dicom(d / "scan_rle.dcm", img, rle=True)
    vol = np.stack([img.T.astype(np.float32) + k for k in range(3)], axis=-1)
    synthetic.write_nifti(d / "vol.nii", vol, np.diag([0.9, 0.8, 2.0, 1.0]))
    synthetic.write_nifti(d / "vol.nii.gz", vol, np.diag([0.9, 0.8, 2.0, 1.0]))
    return Seeds({p.name: p.read_bytes() for p in d.iterdir()})


def check_slice(outcome: tuple, path: Path, shape: tuple[int, int] | None = None,
                values: np.ndarray | None = None):
    """The property: a sound Slice (of ``shape`` / with ``values`` when given) or a clean error."""
    if outcome[0] != "ok":
        assert_clean_error(outcome, path)
        return None
    s = outcome[1]
    assert s.image.dtype == np.float32 and s.image.ndim == 2 and 0 < s.image.size <= MAX_PIXELS
    assert np.isfinite(s.image).all()
    if shape is not None:
        assert s.image.shape == shape
    if values is not None:
        np.testing.assert_array_equal(s.image, values)
    if s.mask is not None:
        assert s.mask.shape == s.image.shape and s.mask.dtype == np.uint8 and set(np.unique(s.mask)) <= {0, 1}
    sp = s.pixel_spacing_mm
    assert sp is None or (len(sp) == 2 and all(np.isfinite(v) and v > 0 for v in sp))
    assert all("\n" not in n for n in s.notes)
    return s


# ------------------------------------------------------------------------------ mutated valid files


MUTATED = ["slice.png", "slice16.png", "slice.jpg", "slice.tif", "slice.bmp", "v73.mat", "v6.mat", "v7.mat",
           "scan.dcm", "scan_rle.dcm", "vol.nii", "vol.nii.gz"]


@pytest.mark.parametrize("name", MUTATED)
def test_mutated_files_read_or_fail_cleanly(name, seeds, worker, tmp_path):
    path = tmp_path / name
    seed = seeds[name]
    path.write_bytes(seed)
    assert worker.call(READ, str(path), None)[0] == "ok", "the seed itself must read"

    @FUZZ
    @given(data=mutations(seed))
    def check(data):
        path.write_bytes(data)
        check_slice(worker.call(READ, str(path), None), path)

    check()


def test_a_transfer_syntax_with_a_control_character_is_named_on_one_line(seeds, worker, tmp_path):
    """Found by the fuzzer in CI: a newline written into the transfer syntax UID of the RLE seed made the
    'cannot decode' error span two lines. The UID is file content; the message shows it escaped."""
    seed = seeds["scan_rle.dcm"]
    uid = b"1.2.840.10008.1.2.5"
    at = seed.index(uid)
    damaged = seed[:at + 1] + b"\n" + seed[at + 2:]  # '1\n2.840...' as in the failing example
    path = tmp_path / "scan_rle.dcm"
    path.write_bytes(damaged)
    outcome = worker.call(READ, str(path), None)
    msg = assert_clean_error(outcome, path)
    assert "transfer syntax" in msg and "\\n" in msg, msg


# ------------------------------------------------------------------------------------ raster images


# (array dtype, channels, formats PIL writes it in)
RASTERS = [(np.uint8, 0, ("png", "bmp", "tif", "jpg")), (np.uint16, 0, ("png", "tif")), (np.float32, 0, ("tif",)),
           (np.uint8, 2, ("png", "tif")), (np.uint8, 3, ("png", "bmp", "tif", "jpg")), (np.uint8, 4, ("png", "tif"))]


@FUZZ
@given(data=st.data())
def test_raster_pixels_of_every_kind(data, worker, tmp_path):
    from PIL import Image

    dtype, channels, formats = data.draw(st.sampled_from(RASTERS))
    ext = data.draw(st.sampled_from(formats))
    h, w = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    elements = st.floats(width=32) if dtype == np.float32 else None  # NaN and +-Inf included
    arr = data.draw(poked(hnp.arrays(dtype, (h, w, channels) if channels else (h, w), elements=elements)))
    path = tmp_path / f"x.{ext}"
    Image.fromarray(arr).save(path)
    outcome = worker.call(READ, str(path), None)
    if not np.isfinite(arr).all():
        assert "NaN or infinite" in assert_clean_error(outcome, path)
        return
    lossless_gray = ext != "jpg" and channels in (0, 2)
    expect = (arr if channels == 0 else arr[..., 0]).astype(np.float32) if lossless_gray else None
    assert check_slice(outcome, path, (h, w), expect) is not None, outcome


SIZED = {"png": (png_with_size, 2**31 - 1), "bmp": (bmp_with_size, 2**31 - 1), "jpg": (jpeg_with_size, 65535)}


@FUZZ
@given(fmt=st.sampled_from(sorted(SIZED)), data=st.data())
def test_raster_headers_with_empty_or_huge_sizes(fmt, data, worker, tmp_path):
    write, top = SIZED[fmt]
    side = st.one_of(st.just(0), st.integers(1, 64), st.integers(4097, top))
    w, h = data.draw(side), data.draw(side)
    path = tmp_path / f"sized.{fmt}"
    path.write_bytes(write(w, h))
    outcome = worker.call(READ, str(path), None)
    if w * h > MAX_PIXELS:
        assert_clean_error(outcome, path, limit=True)
    elif w == 0 or h == 0:
        assert_clean_error(outcome, path)
    else:
        check_slice(outcome, path, (h, w))


# ----------------------------------------------------------------------------------- MATLAB .mat


DTYPES = [np.int16, np.uint8, np.int64, np.float32, np.float64, np.bool_]


def _arrays(max_dims: int = 3) -> st.SearchStrategy[np.ndarray]:
    shapes = hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=6)
    return poked(st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(dt, shapes)))


def _valid_image(a: np.ndarray) -> bool:
    with np.errstate(over="ignore"):  # float64 beyond float32's range: infinite once read, so not valid
        return a.dtype.kind in "biuf" and a.ndim == 2 and a.size > 0 and bool(np.isfinite(a.astype(np.float32)).all())


@FUZZ
@given(image=_arrays(), mask=st.one_of(st.none(), st.just("valid"), _arrays()), top_level=st.booleans())
def test_mat73_arrays_of_every_kind(image, mask, top_level, worker, tmp_path):
    """HDF5 ``cjdata/image`` (+ ``tumorMask``) or a top-level ``image`` of any dtype, shape and values."""
    import h5py

    if isinstance(mask, str):
        mask = (np.arange(image.size).reshape(image.shape) % 2).astype(np.uint8)
    path = tmp_path / "x.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        g = f if top_level else f.create_group("cjdata")
        g["image"] = image.T  # MATLAB order, as the reader expects
        if mask is not None and not top_level:
            g["tumorMask"] = mask.T
    outcome = worker.call(READ, str(path), None)
    mask_ok = top_level or mask is None or (mask.shape == image.shape and np.isin(mask, (0, 1)).all())
    if _valid_image(image) and mask_ok:
        s = check_slice(outcome, path, image.shape, image.astype(np.float32))
        assert s is not None, outcome
        if mask is not None and not top_level:
            np.testing.assert_array_equal(s.mask, mask)
    else:
        assert_clean_error(outcome, path)


@FUZZ
@given(image=_arrays(), compressed=st.booleans(), in_struct=st.booleans())
def test_mat5_arrays_of_every_kind(image, compressed, in_struct, worker, tmp_path):
    """MATLAB v5 (scipy) ``cjdata.image`` or ``image`` of any dtype, shape and values; singleton axes are
    squeezed on reading, so only arrays with two axes longer than 1 are slices."""
    from scipy import io as sio

    path = tmp_path / "x.mat"
    sio.savemat(path, {"cjdata": {"image": image}} if in_struct else {"image": image}, do_compression=compressed)
    outcome = worker.call(READ, str(path), None)
    squeezed = np.squeeze(image)
    if _valid_image(squeezed):
        assert check_slice(outcome, path, squeezed.shape, squeezed.astype(np.float32)) is not None, outcome
    else:
        assert_clean_error(outcome, path)


@FUZZ
@given(rows=st.integers(1, 1 << 22), cols=st.integers(1, 1 << 22), top_level=st.booleans())
def test_mat73_huge_declared_arrays_are_refused_before_reading(rows, cols, top_level, worker, tmp_path):
    """An HDF5 dataset declaring up to 2^44 pixels (never written: the file stays ~2 KB) is refused by
    its declared shape; it is never allocated."""
    import h5py

    path = tmp_path / "huge.mat"
    with h5py.File(path, "w") as f:
        g = f if top_level else f.create_group("cjdata")
        g.create_dataset("image", shape=(cols, rows), dtype="i2", chunks=(min(cols, 64), min(rows, 64)))
    outcome = worker.call(READ, str(path), None)
    if rows * cols > MAX_PIXELS:
        assert_clean_error(outcome, path, limit=True)
    else:
        check_slice(outcome, path, (rows, cols), np.zeros((rows, cols), np.float32))


def test_mat5_declared_dims_and_decompression_bombs_are_refused(worker, tmp_path):
    """A compressed v5 array declaring more elements than the limit is refused from its header; one that
    inflates past the byte limit is refused while inflating (here with a small limit, in-process)."""
    from scipy import io as sio

    from brain_jax.io.guards import check_mat5

    buf = io.BytesIO()
    sio.savemat(buf, {"image": np.zeros((64, 64))}, do_compression=True)
    data = bytearray(buf.getvalue())
    inner = bytearray(zlib.decompress(bytes(data[136:])))
    struct.pack_into("<ii", inner, 32, 1 << 16, 1 << 16)  # dims 65536 x 65536, data still 64 x 64
    comp = zlib.compress(bytes(inner))
    bomb = bytes(data[:128]) + struct.pack("<II", 15, len(comp)) + comp
    path = tmp_path / "dims.mat"
    path.write_bytes(bomb)
    assert "limit" in assert_clean_error(worker.call(READ, str(path), None), path)

    sio.savemat(buf := io.BytesIO(), {"image": np.zeros((512, 512))}, do_compression=True)  # 2 MiB of zeros
    assert len(buf.getvalue()) < 10_000
    with pytest.raises(ValueError, match="decompression bomb"):
        check_mat5(buf.getvalue(), "bomb.mat", limit=1 << 20)
    check_mat5(buf.getvalue(), "bomb.mat", limit=1 << 22)  # the same file within a larger limit


def test_mat5_invalid_type_code_is_refused_before_scipy(worker, seeds, tmp_path):
    """scipy's v5 reader indexes a C table with the element type code: code 24 in the image's data tag
    crashed the process with a segmentation fault before this check."""
    data = bytearray(seeds["v6.mat"])
    tag = data.index(struct.pack("<II", 3, H * W * 2))  # miINT16 data element of the image
    data[tag] = 24
    path = tmp_path / "typecode.mat"
    path.write_bytes(bytes(data))
    assert "invalid MATLAB data type code 24" in assert_clean_error(worker.call(READ, str(path), None), path)


# ------------------------------------------------------------------------------------------- DICOM


@FUZZ
@given(data=st.data())
def test_dicom_headers_of_every_kind(data, worker, tmp_path):
    """Rows / Columns / frames / samples / bits / rescale / spacing / transfer syntax drawn at random,
    pixel data of the declared or another length."""
    import pydicom
    from pydicom import uid
    from pydicom.encaps import encapsulate

    syntaxes = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
                uid.RLELossless, uid.JPEGLSLossless, uid.JPEGLosslessSV1, uid.HTJ2KLossless]
    rows = data.draw(st.sampled_from([0, 1, 7, H, 65535]))
    cols = data.draw(st.sampled_from([0, 1, 5, W, 65535]))
    frames = data.draw(st.sampled_from([None, 0, 1, 3, 100000]))
    bits = data.draw(st.sampled_from([16, 8, 32, 12]))
    spp = data.draw(st.sampled_from([1, 1, 3, 2]))
    slope = data.draw(st.sampled_from(["1", "2.5", "-1", "0", "nan", "inf", "1e309"]))
    spacing = data.draw(st.sampled_from([["0.5", "0.8"], ["0", "1"], ["-1", "1"], ["nan", "1"], ["1"]]))
    syntax = data.draw(st.sampled_from(syntaxes))
    n_frames = frames or 1  # pydicom reads NumberOfFrames 0 as 1, and so do we
    n_pixels = rows * cols * n_frames * spp
    nbytes = data.draw(st.sampled_from([n_pixels * bits // 8, n_pixels * bits // 8 // 2, 6]))
    nbytes = min(max(nbytes, 2), 1 << 20)
    path = synthetic.write_dicom(tmp_path / "x.dcm", _pixels())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values written on purpose
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, bits, bits, bits - 1
        ds.SamplesPerPixel = spp
        if spp != 1:
            ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
        if frames is not None:
            ds.NumberOfFrames = frames
        ds.RescaleSlope, ds.PixelSpacing = slope, spacing
        pixel_data = bytes(np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8))
        ds.PixelData = encapsulate([pixel_data]) if syntax.is_compressed else pixel_data
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    outcome = worker.call(READ, str(path), None)
    # the checks run in this order: a decoder exists, sizes are sane, sizes are within the limits
    if syntax in (uid.JPEGLSLossless, uid.JPEGLosslessSV1, uid.HTJ2KLossless):
        assert "no decoder" in assert_clean_error(outcome, path)
    elif 0 in (rows, cols) or spp == 2:
        assert "expected positive sizes" in assert_clean_error(outcome, path)
    elif rows * cols > MAX_PIXELS or n_pixels > MAX_VOXELS:
        assert_clean_error(outcome, path, limit=True)
    elif n_frames > 1:
        assert "multi-frame" in assert_clean_error(outcome, path)  # no frame index given
    else:
        s = check_slice(outcome, path, (rows, cols))
        sound = syntax in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian) \
            and bits in (8, 16) and nbytes == n_pixels * bits // 8
        if sound and slope in ("nan", "inf", "1e309"):
            assert "NaN or infinite" in assert_clean_error(outcome, path)
        elif sound and spacing in (["0.5", "0.8"], ["1"]):  # one value: no spacing, not an error
            assert s is not None, outcome


# ------------------------------------------------------------------------------------------- NIfTI


@FUZZ
@given(data=st.data())
def test_nifti_headers_of_every_kind(data, worker, seeds, tmp_path):
    """dims (empty and huge included), datatype, scaling, voxel sizes and the sform written over a valid
    file's header; the data block keeps its length."""
    b = bytearray(seeds["vol.nii"])
    side = st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(1, 32767))
    ndim = data.draw(st.integers(1, 7))
    dims = [data.draw(side) for _ in range(ndim)]
    struct.pack_into("<8h", b, 40, ndim, *dims, *[1] * (7 - ndim))
    code = data.draw(st.sampled_from([None, 2, 4, 8, 16, 64, 128, 0, 7]))  # 0, 7: not NIfTI data types
    if code is not None:
        struct.pack_into("<h", b, 70, code)
    odd = st.sampled_from([0.0, -1.0, 1.5, float("nan"), float("inf"), 1e30])
    scaled = data.draw(st.booleans())
    if scaled:
        struct.pack_into("<ff", b, 112, data.draw(odd), data.draw(odd))  # scl_slope, scl_inter
    if data.draw(st.booleans()):
        struct.pack_into("<3f", b, 80, *(data.draw(odd) for _ in range(3)))  # pixdim[1..3]
    if data.draw(st.booleans()):
        struct.pack_into("<4f", b, 280, *(data.draw(odd) for _ in range(4)))  # srow_x
    path = tmp_path / "x.nii"
    path.write_bytes(bytes(b))
    outcome = worker.call(READ, str(path), None)
    voxels = int(np.prod(dims, dtype=object))
    if voxels > MAX_VOXELS:  # nibabel refuses some broken fields while reading the header, before our check
        assert_clean_error(outcome, path, limit=code not in (0, 7) and not scaled)
    elif 0 in dims:
        assert_clean_error(outcome, path)
    else:
        check_slice(outcome, path)
