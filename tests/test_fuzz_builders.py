"""Property-based fuzzing of the dataset builders' readers: Figshare ``N.mat`` (v7.3 / v5 / v7),
``cvind.mat`` and the zips they ship in, and the Kaggle images.

The property: a record whose image is a finite 2-D array of whole numbers that fits the uint16
container, with a 0/1 mask of its shape, a label 1-3 and a PID (Figshare), or 8-bit pixels of the
declared size (Kaggle); otherwise one ValueError on one line naming the file (and zip member). Each
call runs in a worker process under a deadline (tests/fuzz_helpers.py).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from input_pipeline import synthetic
from tests.fuzz_helpers import FUZZ, Seeds, Worker, assert_clean_error, mutations, png_with_size, poked

READ_MAT = "input_pipeline.figshare:read_mat"
READ_CVIND = "input_pipeline.figshare:read_cvind"
READ_IMAGE = "input_pipeline.kaggle:read_image"
WHERE = "/manual/brainTumorDataPublic_1-766.zip:12.mat"


@pytest.fixture(scope="module")
def worker():
    with Worker("input_pipeline.figshare", "input_pipeline.kaggle") as w:  # imports TensorFlow: slow once
        yield w


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    from PIL import Image

    d = tmp_path_factory.mktemp("seeds")
    img = (np.arange(24 * 20).reshape(24, 20) * 7 % 900).astype(np.int16)
    mask = np.zeros(img.shape, np.uint8)
    mask[3:9, 4:15] = 1
    for version in ("7.3", "5", "7"):
        synthetic.write_figshare_mat(d / f"v{version}.mat", img, mask, 3.0, "MRI0042", version=version)
    synthetic.write_cvind(d / "cvind.mat", [1, 2, 3, 4, 5, 1, 2])
    Image.fromarray(img.astype(np.uint8)).save(d / "k.jpg", quality=90)
    Image.fromarray(np.stack([img.astype(np.uint8)] * 3, -1)).save(d / "k.png")
    return Seeds({p.name: p.read_bytes() for p in d.iterdir()})


def _clean_record(outcome: tuple) -> dict | None:
    """The record if read: image fits the uint16 container, mask is 0/1 of its shape, label and PID set."""
    if outcome[0] != "ok":
        assert_clean_error(outcome, WHERE)
        return None
    rec = outcome[1]
    img = rec["image"]
    assert img.ndim == 2 and img.size > 0 and img.dtype.kind in "biuf"
    assert np.isfinite(img).all() and img.max() <= 65535 and np.array_equal(img, np.round(img))
    assert rec["mask"].shape == img.shape and np.isin(rec["mask"], (0, 1)).all()
    assert rec["label"] in (1.0, 2.0, 3.0) and isinstance(rec["pid"], str) and rec["pid"]
    return rec


# --------------------------------------------------------------------------------------- Figshare


@pytest.mark.parametrize("name", ["v7.3.mat", "v5.mat", "v7.mat"])
def test_figshare_mat_mutated(name, seeds, worker):
    assert _clean_record(worker.call(READ_MAT, seeds[name], WHERE)) is not None, "the seed itself must read"

    @FUZZ
    @given(data=mutations(seeds[name]))
    def check(data):
        _clean_record(worker.call(READ_MAT, data, WHERE))

    check()


def _numbers(dtypes, max_dims=3) -> st.SearchStrategy[np.ndarray]:
    shapes = hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5)
    return poked(st.sampled_from(dtypes).flatmap(lambda dt: hnp.arrays(dt, shapes)))


IMAGE_DTYPES = [np.int16, np.uint16, np.int32, np.float64, np.float32, np.uint8]


@FUZZ
@given(image=_numbers(IMAGE_DTYPES), mask=st.one_of(st.just("valid"), _numbers([np.uint8, np.float64])),
       label=st.sampled_from([1.0, 2.0, 3.0, 0.0, 4.0, 2.5, float("nan")]),
       pid=st.text("AZ09", max_size=6), version=st.sampled_from(["7.3", "5"]))
def test_figshare_records_of_every_kind(image, mask, label, pid, version, worker, tmp_path):
    """cjdata with any image dtype / shape / values (NaN, fractions, > 65535), any mask, label and PID."""
    if isinstance(mask, str):
        mask = (np.arange(image.size).reshape(image.shape) % 2).astype(np.uint8)
    path = tmp_path / "x.mat"
    if version == "5":
        from scipy import io as sio

        sio.savemat(path, {"cjdata": {"image": image, "tumorMask": mask, "label": label, "PID": pid}})
        image, mask = np.squeeze(image), np.squeeze(mask)  # the reader squeezes singleton axes
    else:
        import h5py

        with h5py.File(path, "w", userblock_size=512) as f:
            g = f.create_group("cjdata")
            g["image"], g["tumorMask"], g["label"] = image.T, mask.T, np.array([[label]])
            g["PID"] = np.array([[ord(c) for c in pid]], np.uint16).T
    outcome = worker.call(READ_MAT, path.read_bytes(), WHERE)
    valid = (image.ndim == 2 and image.size > 0 and np.isfinite(image).all() and image.max() <= 65535
             and np.array_equal(image, np.round(image)) and mask.shape == image.shape
             and np.isin(mask, (0, 1)).all() and label in (1.0, 2.0, 3.0) and pid != "")
    if valid:
        rec = _clean_record(outcome)
        assert rec is not None, outcome
        np.testing.assert_array_equal(rec["image"], image)
        np.testing.assert_array_equal(rec["mask"], mask)
        assert rec["label"] == label and rec["pid"] == pid
    else:
        assert_clean_error(outcome, WHERE)


@FUZZ
@given(folds=_numbers([np.float64, np.int32, np.uint8], max_dims=2))
def test_cvind_of_every_kind(folds, worker, tmp_path):
    """Fold ids of any dtype, shape and value: ids 1..5 or a clean error."""
    import h5py

    path = tmp_path / "cvind.mat"
    with h5py.File(path, "w") as f:
        f["cvind"] = folds
    outcome = worker.call(READ_CVIND, path.read_bytes(), str(path))
    valid = folds.size > 0 and np.isfinite(folds).all() and np.array_equal(folds, np.round(folds)) \
        and folds.min() >= 1 and folds.max() <= 5
    if valid:
        assert outcome[0] == "ok", outcome
        np.testing.assert_array_equal(outcome[1], folds.ravel())
    else:
        assert_clean_error(outcome, path)


@FUZZ
@given(data=st.data())
def test_cvind_mutated(data, seeds, worker):
    outcome = worker.call(READ_CVIND, data.draw(mutations(seeds["cvind.mat"])), "/manual/cvind.mat")
    if outcome[0] == "ok":
        assert outcome[1].dtype == np.int64 and outcome[1].min() >= 1 and outcome[1].max() <= 5
    else:
        assert_clean_error(outcome, "/manual/cvind.mat")


def _zip_of(seeds: Seeds, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, name in enumerate(names, 1):
            zf.writestr(f"{n}.mat", seeds[name])
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_figshare_zips_mutated(data, seeds, worker, tmp_path):
    """A shipped zip cut short or corrupted (central directory, local headers, deflate streams, CRCs):
    every problem is a bad input or a read error naming the zip; nothing else escapes."""
    manual = tmp_path / "manual"
    manual.mkdir(exist_ok=True)
    z = manual / "brainTumorDataPublic_1-766.zip"
    z.write_bytes(data.draw(mutations(_zip_of(seeds, ["v7.3.mat", "v5.mat", "v7.mat"]), head=4096)))
    outcome = worker.call("tests.fuzz_helpers:figshare_zip", str(manual))
    assert outcome[0] == "ok", f"an error escaped the builder's reading: {outcome!r:.300}"
    for where, why in outcome[1]["bad"]:
        assert where.startswith(str(z)) and "\n" not in why
    for result, detail in outcome[1]["read"].values():
        assert result == "ok" or (detail.startswith(f"{z}:") and "\n" not in detail), detail


# ----------------------------------------------------------------------------------------- Kaggle


@pytest.mark.parametrize("name", ["k.jpg", "k.png"])
def test_kaggle_images_mutated(name, seeds, worker, tmp_path):
    path = tmp_path / name

    @FUZZ
    @given(data=mutations(seeds[name]))
    def check(data):
        path.write_bytes(data)
        outcome = worker.call(READ_IMAGE, path)
        if outcome[0] == "ok":
            assert outcome[1].dtype == np.uint8 and outcome[1].ndim == 2 and outcome[1].size > 0
        else:
            assert_clean_error(outcome, path)

    check()


@FUZZ
@given(data=st.data())
def test_kaggle_pixels_of_every_kind(data, worker, tmp_path):
    """8-bit gray / RGB(A) images read as 8-bit gray of their size; 16-bit and float ones are refused
    (8 bits would clip them)."""
    from PIL import Image

    dtype, channels, ext = data.draw(st.sampled_from([
        (np.uint8, 0, "jpg"), (np.uint8, 0, "png"), (np.uint8, 3, "jpg"), (np.uint8, 4, "png"),
        (np.uint16, 0, "png"), (np.float32, 0, "tif")]))
    h, w = data.draw(st.integers(1, 32)), data.draw(st.integers(1, 32))
    arr = data.draw(hnp.arrays(dtype, (h, w, channels) if channels else (h, w)))
    path = tmp_path / f"x.{ext}"
    Image.fromarray(arr).save(path)
    outcome = worker.call(READ_IMAGE, path)
    if dtype != np.uint8:
        assert "8-bit" in assert_clean_error(outcome, path)
        return
    assert outcome[0] == "ok", outcome
    assert outcome[1].dtype == np.uint8 and outcome[1].shape == (h, w)
    if (channels, ext) == (0, "png"):
        np.testing.assert_array_equal(outcome[1], arr)


def test_kaggle_huge_header_is_refused_before_decoding(worker, tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_with_size(60000, 60000))
    assert_clean_error(worker.call(READ_IMAGE, Path(path)), path, limit=True)


def test_zip_member_size_is_checked_before_reading(seeds, worker, tmp_path):
    """A member whose central-directory entry declares 2 GiB (a zip bomb's signature) is refused from
    that entry, before a byte of it is inflated."""
    manual = tmp_path / "manual"
    manual.mkdir()
    data = bytearray(_zip_of(seeds, ["v7.3.mat"]))
    entry = data.index(b"PK\x01\x02")  # central directory file header; uncompressed size at +24
    data[entry + 24:entry + 28] = (2**31 - 1).to_bytes(4, "little")
    (manual / "brainTumorDataPublic_1-766.zip").write_bytes(bytes(data))
    outcome = worker.call("tests.fuzz_helpers:figshare_zip", str(manual))
    assert outcome[0] == "ok" and not outcome[1]["bad"], outcome
    result, detail = outcome[1]["read"][1]
    assert result == "error" and "1.mat: zip member of 2,147,483,647 bytes, over the limit" in detail, detail
