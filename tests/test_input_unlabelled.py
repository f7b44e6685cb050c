"""``unlabelled_mri``: a folder of unlabelled MRI files (PNG 8/16-bit, float TIFF, NIfTI with empty slices,
DICOM with and without extension, multi-frame DICOM, a text file, a corrupt PNG) built with the TFDS builder,
checked against the files read directly (PIL, nibabel, pydicom); bad inputs; the refusal of other tasks; one
the FCMAE pretraining data path on it through ``configs/fcmae_pretrain.py:dataset=unlabelled``."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import input_pipeline as ip
from brain_jax import cli
from input_pipeline.synthetic import write_dicom, write_figshare_mat, write_nifti

SIZE = 64
NAME = "unlabelled_mri"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def manual(tmp_path_factory) -> Path:
    """Two patient folders and one file at the top; a corrupt PNG, a volume with NaN, a text file, a hidden
    folder."""
    m = tmp_path_factory.mktemp("unlabelled") / "manual"
    p1, p2 = m / "p1", m / "p2" / "scans"
    p1.mkdir(parents=True)
    p2.mkdir(parents=True)
    Image.fromarray(_rng(1).integers(0, 256, (SIZE, SIZE)).astype(np.uint8)).save(p1 / "a8.png")
    Image.fromarray(_rng(2).integers(300, 61000, (SIZE, SIZE)).astype(np.uint16)).save(p1 / "a16.png")
    vol = _rng(3).integers(0, 900, (SIZE, SIZE, 7)).astype(np.float32)
    vol[..., 0] = 0.0  # empty end slices, and one constant slice inside
    vol[..., 6] = 0.0
    vol[..., 3] = 42.0
    vol[..., 4] += 0.25  # fractional: rescaled
    write_nifti(p1 / "vol.nii.gz", vol, np.diag([0.9, 0.8, 3.0, 1.0]))
    (p1 / "notes.txt").write_text("scanner notes")
    write_figshare_mat(p1 / "7.mat", _rng(10).integers(0, 900, (SIZE, SIZE)).astype(np.int16))
    Image.fromarray((_rng(4).standard_normal((SIZE, SIZE)) * 5 - 2).astype(np.float32)).save(m / "p2" / "f.tif")
    write_dicom(p2 / "one.dcm", _rng(5).integers(-100, 900, (SIZE, SIZE)).astype(np.int16), spacing=(0.5, 0.8))
    write_dicom(p2 / "IM0001", _rng(6).integers(0, 900, (SIZE, SIZE)).astype(np.int16), spacing=None)
    write_dicom(p2 / "multi.dcm", _rng(7).integers(0, 900, (3, SIZE, SIZE)).astype(np.int16))
    (p2 / "broken.png").write_bytes((p1 / "a8.png").read_bytes()[:60])  # a PNG cut short
    nan = _rng(9).random((SIZE, SIZE, 3)).astype(np.float32)
    nan[..., 0], nan[5, 5, 2] = 0.0, np.nan  # a constant slice first, then one holding NaN: a bad file
    write_nifti(p2 / "nan.nii", nan)
    Image.fromarray(_rng(8).integers(0, 256, (SIZE, SIZE)).astype(np.uint8)).save(m / "top.png")
    (m / ".cache").mkdir()
    (m / ".cache" / "junk.png").write_bytes(b"not read")
    return m


def _expected_slices(m: Path) -> dict[str, np.ndarray]:
    """file_name -> source pixels of every non-constant slice, read with the libraries directly."""
    import h5py
    import nibabel as nib
    import pydicom

    out = {}
    with h5py.File(m / "p1/7.mat", "r") as f:
        out["p1/7.mat"] = f["cjdata/image"][()].T  # MATLAB's column-major array, as h5py sees it
    for rel in ("p1/a8.png", "p1/a16.png", "p2/f.tif", "top.png"):
        out[rel] = np.asarray(Image.open(m / rel))
    for rel in ("p2/scans/one.dcm", "p2/scans/IM0001"):
        out[rel] = pydicom.dcmread(m / rel).pixel_array
    frames = pydicom.dcmread(m / "p2/scans/multi.dcm").pixel_array
    out.update({f"p2/scans/multi.dcm#{k}": f for k, f in enumerate(frames)})
    vol = np.asarray(nib.load(m / "p1/vol.nii.gz").get_fdata())  # RAS already: axis 2 is axial
    out.update({f"p1/vol.nii.gz#{k}": vol[..., k] for k in range(vol.shape[2]) if np.ptp(vol[..., k]) > 0})
    return out


@pytest.fixture(scope="module")
def built(manual, tmp_path_factory):
    """The strict build's error, then a --skip-bad build: (data dir, records by file_name, the strict build's
    error, the builder, what the second build printed)."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    data_dir = tmp_path_factory.mktemp("unlabelled_data")
    with pytest.raises(ValueError) as strict:
        ip.build_dataset(NAME, data_dir, manual_dir=manual)
    assert not [p for p in data_dir.rglob("*") if p.is_file()]  # nothing half built
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        b = ip.build_dataset(NAME, data_dir, manual_dir=manual, skip_bad=True)
    ds = b.as_data_source(split="train")
    records = {}
    for i in range(len(ds)):
        ex = ds[i]
        records[ex["file_name"].decode()] = ex
    return data_dir, records, str(strict.value), b, printed.getvalue()


def test_every_readable_non_constant_slice_is_one_record(manual, built):
    _, records, _, b, _ = built
    expected = _expected_slices(manual)
    assert sorted(records) == sorted(expected)
    assert list(b.info.splits) == ["train"] and b.info.splits["train"].num_examples == len(expected)
    # the NIfTI volume: 7 slices, 3 constant
    assert sorted(k for k in records if k.startswith("p1/vol")) == [f"p1/vol.nii.gz#{k}" for k in (1, 2, 4, 5)]
    for ex in records.values():
        assert ex["label"] == 0 and not ex["has_mask"] and not ex["mask"].any()


def test_group_ids_are_the_first_level_folders(built):
    _, records, _, _, _ = built
    got = {name: ex["patient_id"].decode() for name, ex in records.items()}
    for name, pid in got.items():
        assert pid == ("top" if name == "top.png" else name.split("/")[0]), (name, pid)
    assert set(got.values()) == {"p1", "p2", "top"}


def test_whole_number_pixels_are_stored_unchanged(manual, built):
    _, records, _, _, _ = built
    expected = _expected_slices(manual)
    for rel in ("p1/a8.png", "p1/a16.png", "top.png", "p1/7.mat", "p2/scans/IM0001", "p2/scans/multi.dcm#1"):
        np.testing.assert_array_equal(records[rel]["image"], expected[rel].astype(np.int64), err_msg=rel)
    assert records["p1/a16.png"]["image"].max() > 255  # 16 bits kept, not squeezed to 8
    assert records["p2/scans/IM0001"]["pixel_spacing_mm"].tolist() == [0.0, 0.0]  # unknown
    assert records["p2/scans/one.dcm"]["pixel_spacing_mm"].tolist() == pytest.approx([0.5, 0.8])
    assert records["p1/vol.nii.gz#2"]["pixel_spacing_mm"].tolist() == pytest.approx([0.8, 0.9])


@pytest.mark.parametrize("rel", ["p2/f.tif", "p2/scans/one.dcm", "p1/vol.nii.gz#4"])
def test_other_pixels_are_a_linear_rescale_to_the_uint16_range(manual, built, rel):
    """Floats, negatives, fractions: the stored slice is a linear, increasing map of the source onto 0..65535."""
    _, records, _, _, _ = built
    src = np.asarray(_expected_slices(manual)[rel], np.float64)
    img = records[rel]["image"].astype(np.float64)
    if rel.startswith("p1/vol"):  # radiological display of RAS axes: rows = reversed y, cols = reversed x
        src = src[::-1, ::-1].T
    assert img.min() == 0 and img.max() == 65535
    slope, intercept = np.polyfit(src.ravel(), img.ravel(), 1)
    assert slope > 0 and np.abs(slope * src + intercept - img).max() <= 1.0  # rounding to integers, and the fit
    order = np.argsort(src.ravel(), kind="stable")
    assert np.all(np.diff(img.ravel()[order]) >= 0)


def test_bad_unknown_and_constant_inputs_are_reported(manual, built):
    data_dir, records, strict, _, out = built
    broken, nan = manual / "p2/scans/broken.png", manual / "p2/scans/nan.nii"
    assert "2 bad input(s)" in strict and "--skip-bad" in strict
    assert f"{broken}: " in strict and f"{nan}: " in strict and "NaN" in strict
    skipped = json.loads(next(data_dir.rglob("skipped_inputs.json")).read_text())
    assert sorted(s["file"] for s in skipped) == sorted([str(broken), str(nan)])
    # the text file is named once, not as a bad input; the 3 constant slices of the volume that was stored are
    # counted (not the bad file's)
    unknown = [line for line in out.splitlines() if "notes.txt" in line]
    assert len(unknown) == 1 and "1 file(s)" in unknown[0]
    assert "3 constant slice(s)" in out and "junk.png" not in out and ".cache" not in out
    assert not any(name.endswith("notes.txt") for name in records)


def test_read_slices_gives_every_slice_as_read_slice_does(manual):
    from brain_jax.io import read_slice, read_slices  # start-up

    for rel, n in (("p1/vol.nii.gz", 7), ("p2/scans/multi.dcm", 3), ("p1/a16.png", 1)):
        got = list(read_slices(manual / rel))
        assert len(got) == n, rel
        for k, sl in enumerate(got):
            want = read_slice(manual / rel, k if n > 1 else None)
            np.testing.assert_array_equal(sl.image, want.image, err_msg=f"{rel} {k}")
            assert (sl.pixel_spacing_mm, sl.notes, sl.source_format) == (want.pixel_spacing_mm, want.notes,
                                                                          want.source_format)
    broken = manual / "p2/scans/broken.png"
    with pytest.raises(ValueError) as one:
        read_slice(broken)
    with pytest.raises(ValueError) as every:
        read_slices(broken)
    assert str(every.value) == str(one.value) and str(one.value).startswith(f"{broken}: ")


def test_other_tasks_are_refused_on_one_line(built, tmp_path, capsys):
    data_dir = built[0]
    wd = tmp_path / "cls"
    rc = cli.main(["train", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(wd),
                   f"--config.data.name={NAME}", f"--config.data.data_dir={data_dir}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"data.name='{NAME}'" in err and "data.task='classification'" in err and "no labels" in err
    assert not wd.exists() or not any(wd.iterdir())
    # a classifier config does not take the pretraining dataset either
    rc = cli.main(["train", "--config", "configs/swin_cls.py:dataset=unlabelled", "--workdir", str(wd)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "dataset='unlabelled'" in err and len(err.splitlines()) == 1, err


def test_fcmae_pretraining_reads_the_folder_by_patient_group(built):
    """The documented route: configs/fcmae_pretrain.py with dataset=unlabelled (split by patient group) gives
    the trainer whole groups per split and uint8 batches of the folder's slices. (The FCMAE step itself is
    dataset-agnostic; tests/test_train_fcmae.py trains it.)"""
    from brain_jax.train.config import load_config  # start-up
    from brain_jax.train.data import PipelineData  # start-up
    from input_pipeline.splits import index_metadata, resolve  # start-up

    data_dir = built[0]
    spec = "configs/fcmae_pretrain.py:runlocal,dataset=unlabelled"
    # 3 groups: an even share, so that both splits hold one
    overrides = [f"--config.data.data_dir={data_dir}", "--config.data.group_split_fractions.validation=0.5",
                 "--config.batch_size=4"]
    config = load_config(spec, overrides)
    data = config.data
    assert (data.name, data.split_by, data.task) == (NAME, "group", "fcmae")
    pids = {s: set(index_metadata(data, resolve(data, s))["patient_id"]) for s in ("train", "validation")}
    assert pids["train"] and pids["validation"] and not pids["train"] & pids["validation"]  # whole patients
    # `data audit --config`'s table: every record in train or validation (no test share takes any)
    comp = ip.split_composition(data)
    assert comp["splits"] == ["train", "validation"] and sum(comp["totals"].values()) == len(built[1])
    assert comp["totals"]["train"] >= 4 and {row["class"] for row in comp["counts"]} == {"-"}  # no class shown
    batch = next(iter(PipelineData(config).train_iterator()))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (4, SIZE, SIZE)
    assert batch["image"].reshape(4, -1).std(1).min() > 0  # slices, not padding
