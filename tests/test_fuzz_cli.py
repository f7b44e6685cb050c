"""Bad files through the command line: ``brain-jax predict`` on cut-short, corrupted and oversized files
of every format exits with code 2 and one line on stderr naming the file, and writes nothing;
``brain-jax data build`` on a manual dir holding bad files lists every one of them and leaves no
half-built dataset behind. One test runs the CLI in a separate interpreter, so that what libraries
print straight to stderr (nibabel's log handler, HDF5 diagnostics, warnings) would show.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from brain_jax.cli import main
from input_pipeline import synthetic
from tests.fuzz_helpers import FUZZ, Worker, mutations, png_with_size

ROOT = Path(__file__).resolve().parents[1]
H, W = 24, 20


def _image() -> np.ndarray:
    return (np.arange(H * W).reshape(H, W) * 7 % 900 + 10).astype(np.int16)


def _valid_files(d: Path) -> list[Path]:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    img = _image()
    Image.fromarray(img.astype(np.uint8)).save(d / "a.png")
    Image.fromarray(img.astype(np.uint8)).save(d / "a.jpg")
    Image.fromarray(img.astype(np.float32)).save(d / "a.tif")
    Image.fromarray(img.astype(np.uint8)).save(d / "a.bmp")
    vol = np.stack([img.T.astype(np.float32)] * 3, axis=-1)
    return [d / "a.png", d / "a.jpg", d / "a.tif", d / "a.bmp",
            synthetic.write_figshare_mat(d / "b.mat", img), synthetic.write_figshare_mat(d / "c.mat", img, version="7"),
            synthetic.write_dicom(d / "a.dcm", img), synthetic.write_nifti(d / "a.nii", vol),
            synthetic.write_nifti(d / "a.nii.gz", vol)]


def _bad_files(d: Path) -> list[Path]:
    """Each valid file cut in half, plus files that once crashed, flooded stderr or were decoded whole."""
    bad = []
    for f in _valid_files(d / "valid"):
        out = d / f"half_{f.name}"
        out.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        bad.append(out)
    v6 = synthetic.write_figshare_mat(d / "valid" / "v6.mat", _image(), version="5").read_bytes()
    tag = v6.index(struct.pack("<II", 3, H * W * 2))
    (d / "typecode.mat").write_bytes(v6[:tag] + bytes([24]) + v6[tag + 1:])  # segfaulted scipy's reader
    (d / "huge.png").write_bytes(png_with_size(50_000, 50_000))
    nii = bytearray((d / "valid" / "a.nii").read_bytes())
    struct.pack_into("<i", nii, 0, 347)  # sizeof_hdr: nibabel fixes it and logs to stderr
    struct.pack_into("<2h", nii, 42, 30_000, 30_000)  # ... and the volume is now too large
    (d / "loud.nii").write_bytes(bytes(nii))
    return bad + [d / "typecode.mat", d / "huge.png", d / "loud.nii"]


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A workdir as far as predict reads it before the model: its config (the files are read first)."""
    wd = tmp_path / "wd"
    wd.mkdir()
    cfg = {"model": {"name": "vit", "variant": "test"}, "data": {
        "task": "classification", "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
        "upper_percentile": 99.5, "num_classes": 4}}
    (wd / "config.json").write_text(json.dumps(cfg))
    return wd


def _tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_predict_on_bad_files_exits_2_with_one_line_naming_the_file(tmp_path, workdir, capsys):
    out = tmp_path / "out"
    before = _tree(workdir)
    for f in _bad_files(tmp_path / "inputs"):
        assert main(["predict", "--workdir", str(workdir), "--out", str(out), str(f)]) == 2, f
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"brain-jax predict: error: {f}:"), captured.err
        assert not out.exists() and _tree(workdir) == before


def test_predict_in_a_fresh_interpreter_prints_exactly_one_line_per_bad_file(tmp_path, workdir):
    bad = _bad_files(tmp_path / "inputs")
    code = ("import sys; from brain_jax.cli import main; "
            f"print([main(['predict', '--workdir', {str(workdir)!r}, '--out', {str(tmp_path / 'out')!r}, f]) "
            "for f in sys.argv[1:]])")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, bad)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str([2] * len(bad))
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(bad), proc.stderr
    for line, f in zip(lines, bad):
        assert line.startswith(f"brain-jax predict: error: {f}:"), line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def worker():
    with Worker("brain_jax.io") as w:
        yield w


@pytest.mark.parametrize("name", ["a.dcm", "b.mat", "a.nii"])
def test_predict_on_mutated_files(name, tmp_path_factory, workdir, worker, capsys):
    """Any mutation: exit 2 and one line, naming the file when the reader refuses it (checked first in a
    worker, so a crash could not take pytest down) and the workdir otherwise (it has no checkpoint)."""
    d = tmp_path_factory.mktemp("mut")
    seed = next(f for f in _valid_files(d / "valid") if f.name == name).read_bytes()
    path, out = d / name, d / "out"
    before = _tree(workdir)

    @FUZZ
    @given(data=mutations(seed))
    def check(data):
        path.write_bytes(data)
        refused = worker.call("brain_jax.io:read_slice", str(path), None)[0] == "raised"
        assert main(["predict", "--workdir", str(workdir), "--out", str(out), str(path)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert str(path if refused else workdir) in lines[0], lines[0]
        assert not out.exists() and _tree(workdir) == before

    check()


# ------------------------------------------------------------------------------------ data build


def _figshare_manual(m: Path) -> dict[str, str]:
    """A manual dir with good and bad inputs; returns bad input -> what its line must say."""
    m.mkdir()
    img = _image()
    for n in (1, 2):
        synthetic.write_figshare_mat(m / f"{n}.mat", img + n, None, 1.0, f"P{n}")
    synthetic.write_cvind(m / "cvind.mat", [1, 2, 3, 4, 5, 1, 2])
    (m / "3.mat").write_bytes((m / "1.mat").read_bytes()[:3000])
    v6 = synthetic.write_figshare_mat(m.parent / "v6.mat", img, None, 2.0, "P4", version="5").read_bytes()
    tag = v6.index(struct.pack("<II", 3, H * W * 2))
    (m / "4.mat").write_bytes(v6[:tag] + bytes([24]) + v6[tag + 1:])
    good = (m / "1.mat").read_bytes()
    z = m / "brainTumorDataPublic_5-7.zip"
    with zipfile.ZipFile(z, "w") as zf:  # stored, not deflated: the member's bytes appear as they are
        zf.writestr("5.mat", good)
        zf.writestr("../escape/6.mat", good)
        zf.writestr("7.mat", synthetic.write_figshare_mat(m.parent / "7.mat", img, None, 3.0, "P7").read_bytes())
    raw = bytearray(z.read_bytes())
    raw[raw.index(good) + 2000] ^= 0xFF  # one byte of 5.mat: its CRC no longer matches
    z.write_bytes(bytes(raw))
    return {f"{m / '3.mat'}": "unreadable MATLAB v7.3", f"{m / '4.mat'}": "invalid MATLAB data type code 24",
            f"{m / 'brainTumorDataPublic_5-7.zip'}:5.mat": "unreadable zip member",
            f"{m / 'brainTumorDataPublic_5-7.zip'}:../escape/6.mat": "escapes the archive"}


def test_data_build_lists_every_bad_input_and_leaves_nothing_half_built(tmp_path, capsys):
    manual, data_dir = tmp_path / "manual", tmp_path / "data"
    expected = _figshare_manual(manual)
    rc = main(["data", "build", "figshare_brain_tumor", "--manual-dir", str(manual), "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("brain-jax data: error: figshare_brain_tumor: 4 bad input(s)"), err
    for where, why in expected.items():
        assert any(line.strip().startswith(f"{where}: ") and why in line for line in err.splitlines()), (where, err)
    assert "1.mat:" not in err and "7.mat" not in err
    assert not [p for p in data_dir.rglob("*") if p.is_file()], _tree(data_dir)  # nothing half built
    assert not (tmp_path / "escape").exists() and not (manual.parent / "escape").exists()

    # --skip-bad: the good slices are built, the bad ones listed in skipped_inputs.json, none extracted
    assert main(["data", "build", "figshare_brain_tumor", "--manual-dir", str(manual), "--data-dir", str(data_dir),
                 "--skip-bad"]) == 0
    skipped = json.loads(next(data_dir.rglob("skipped_inputs.json")).read_text())
    assert {s["file"] for s in skipped} == set(expected)
    assert not (tmp_path / "escape").exists()


def test_data_build_kaggle_bad_images(tmp_path, capsys):
    from PIL import Image

    manual, data_dir = tmp_path / "manual", tmp_path / "data"
    (manual / "Training" / "glioma").mkdir(parents=True)
    folder = manual / "Training" / "glioma"
    Image.fromarray(_image().astype(np.uint8)).save(folder / "ok.jpg")
    (folder / "cut.jpg").write_bytes((folder / "ok.jpg").read_bytes()[:200])
    (folder / "huge.png").write_bytes(png_with_size(50_000, 50_000))
    Image.fromarray(_image().astype(np.uint16) * 60).save(folder / "deep.png")
    rc = main(["data", "build", "brain_tumor_mri", "--manual-dir", str(manual), "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "3 bad input(s)" in err, err
    for name, why in (("cut.jpg", "unreadable image"), ("huge.png", "limit"), ("deep.png", "8-bit")):
        assert any(line.strip().startswith(f"{folder / name}: ") and why in line for line in err.splitlines()), err
    assert "ok.jpg" not in err
    assert not [p for p in data_dir.rglob("*") if p.is_file()], _tree(data_dir)
