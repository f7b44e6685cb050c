"""Untrusted files run no code and reach no other files.

- No unrestricted deserialization anywhere in the code we ship (read from the source with ``ast``):
  no pickle-family modules, ``torch.load`` only with ``weights_only=True``, no ``allow_pickle=True``,
  no unsafe YAML loaders, no ``eval`` / ``exec``; every ``scipy.io.loadmat`` call sits in a function
  that first runs ``check_mat5`` (scipy's v5 reader is not hardened against corrupt files).
- No archive is ever extracted (no ``extract`` / ``extractall`` / ``unpack_archive`` / ``tarfile``):
  Figshare zips are read member by member into memory, and members whose names would escape the
  archive's folder are refused.
- A pickle payload in ``pytorch_model.bin`` is refused, not run; HDF5 links and external storage that
  point at other files are refused; a sharded checkpoint's index cannot name files outside its folder.
"""
from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from brain_jax.io import read_slice
from input_pipeline import synthetic

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("brain_jax", "input_pipeline", "configs", "benchmarks", "launch")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "tarfile"}
EXTRACTORS = {"extract", "extractall", "unpack_archive"}


def _name(node: ast.AST) -> str:
    """Dotted name of a call's target (``torch.load``, ``np.load``, ``zf.extractall``)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def unsafe_calls(source: str, where: str) -> list[str]:
    """Every unrestricted deserialization, extraction or dynamic evaluation in ``source``."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}:{node.lineno}: imports {m}" for m in mods if m.split(".")[0] in PICKLE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name, line = _name(node.func), f"{where}:{node.lineno}"
        last = name.rsplit(".", 1)[-1]
        if name.endswith("torch.load") and _kw(node, "weights_only") is not True:
            found.append(f"{line}: torch.load without weights_only=True")
        if last == "load" and name.split(".")[0] in ("np", "numpy") and _kw(node, "allow_pickle") is True:
            found.append(f"{line}: np.load with allow_pickle=True")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "pd.read_pickle", "pandas.read_pickle"):
            found.append(f"{line}: {name}")
        if last in EXTRACTORS:
            found.append(f"{line}: {name} extracts an archive")
        if isinstance(node.func, ast.Name) and name in ("eval", "exec"):  # the builtins, not model.eval()
            found.append(f"{line}: {name}")
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            calls = [(_name(c.func), c.lineno) for c in ast.walk(fn) if isinstance(c, ast.Call)]
            checked = any(n.endswith("check_mat5") for n, _ in calls)
            found += [f"{where}:{ln}: loadmat without check_mat5 first" for n, ln in calls
                      if n.endswith("loadmat") and not checked]
    return found


def test_no_unrestricted_deserialization_or_extraction_in_the_code():
    offenders = []
    for pkg in SHIPPED:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            offenders += unsafe_calls(path.read_text(), str(path.relative_to(ROOT)))
    assert not offenders, "\n".join(offenders)


def test_the_scanner_sees_what_it_should():
    bad = """
import pickle
import torch, yaml, numpy as np
from scipy import io as sio
def f(p, zf):
    torch.load(p)
    torch.load(p, weights_only=False)
    np.load(p, allow_pickle=True)
    yaml.load(p)
    zf.extractall("out")
    eval("1")
    zf.eval()
    return sio.loadmat(p)
def g(p):
    check_mat5(p, "x")
    return torch.load(p, weights_only=True), yaml.safe_load(p), np.load(p), sio.loadmat(p)
"""
    found = unsafe_calls(bad, "x.py")
    assert [f.split(":")[1] for f in found] == ["2", "6", "7", "8", "9", "10", "11", "13"], found


# ------------------------------------------------------------------------------------------ pickle


class _Payload:
    """Unpickling this runs ``Path.touch`` on the marker: proof of code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.torch
def test_pickle_payload_in_pytorch_bin_is_refused_not_run(tmp_path):
    import torch

    from brain_jax.convert.core import ConversionError, load_hf_checkpoint

    folder, marker = tmp_path / "hf", tmp_path / "code-ran"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin.*weights_only=True"):
        load_hf_checkpoint(folder)
    assert not marker.exists()
    torch.load(folder / "pytorch_model.bin", weights_only=False)  # the control: the payload is live
    assert marker.exists()

    torch.save([torch.zeros(2)], folder / "pytorch_model.bin")  # allowed by weights_only, not a state dict
    with pytest.raises(ConversionError, match="expected a state dict"):
        load_hf_checkpoint(folder)


def test_images_are_decoded_by_the_raster_formats_only(tmp_path):
    """Pillow picks a decoder from the content: an EPS (run through Ghostscript) or a GIF named .png is refused."""
    from PIL import Image

    from input_pipeline.kaggle import read_image

    (tmp_path / "doc.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    Image.new("L", (8, 8)).save(tmp_path / "anim.gif")
    (tmp_path / "anim.png").write_bytes((tmp_path / "anim.gif").read_bytes())
    for name in ("doc.png", "anim.png"):
        with pytest.raises(ValueError, match=rf"{name}: not a readable image file"):
            read_slice(tmp_path / name)
        with pytest.raises(ValueError, match=rf"{name}: unreadable image"):
            read_image(tmp_path / name)


def test_matlab_objects_and_cells_are_data_refused_as_images(tmp_path):
    from scipy import io as sio

    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = np.eye(2), "text"
    sio.savemat(tmp_path / "cell.mat", {"image": cell})
    with pytest.raises(ValueError, match=r"cell\.mat: image has dtype object"):
        read_slice(tmp_path / "cell.mat")


# --------------------------------------------------------------------------------- other files


def test_hdf5_links_and_external_storage_to_other_files_are_refused(tmp_path):
    from input_pipeline.figshare import read_mat

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(64, dtype=np.int16).tobytes())
    target = synthetic.write_figshare_mat(tmp_path / "elsewhere.mat", np.ones((4, 4), np.int16))
    with h5py.File(tmp_path / "link.mat", "w") as f:
        f["cjdata"] = h5py.ExternalLink(str(target), "/cjdata")
    with h5py.File(tmp_path / "external.mat", "w") as f:
        g = f.create_group("cjdata")
        g.create_dataset("image", shape=(8, 8), dtype="<i2", external=[(str(secret), 0, 128)])
        g["tumorMask"], g["label"], g["PID"] = np.zeros((8, 8), np.uint8), np.ones((1, 1)), np.full((1, 1), 65)
    with pytest.raises(ValueError, match=r"link\.mat: cjdata is a link to another file"):
        read_slice(tmp_path / "link.mat")
    with pytest.raises(ValueError, match=r"external\.mat: cjdata/image stores its data in other files"):
        read_slice(tmp_path / "external.mat")
    with pytest.raises(ValueError, match=r"N\.mat: unexpected contents: 'cjdata' is not a group stored in this file"):
        read_mat((tmp_path / "link.mat").read_bytes(), "N.mat")
    with pytest.raises(ValueError, match="stores its data in other files"):
        read_mat((tmp_path / "external.mat").read_bytes(), "N.mat")


@pytest.mark.parametrize("member, escapes", [
    ("12.mat", False), ("brainTumorDataPublic/12.mat", False), ("../12.mat", True), ("a/../../12.mat", True),
    ("/tmp/12.mat", True), ("C:/data/12.mat", True), ("..\\12.mat", True), ("\\\\host\\12.mat", True)])
def test_zip_members_escaping_the_folder_are_refused(tmp_path, member, escapes):
    from input_pipeline.features import BadInputs
    from input_pipeline.figshare import find_inputs

    data = synthetic.write_figshare_mat(tmp_path / "x.mat", np.ones((4, 4), np.int16)).read_bytes()
    (tmp_path / "manual").mkdir()
    with zipfile.ZipFile(tmp_path / "manual" / "brainTumorDataPublic_1-766.zip", "w") as zf:
        zf.writestr(zipfile.ZipInfo(member), data)  # ZipFile.write would strip a leading "/"
    bad = BadInputs("figshare_brain_tumor")
    found = find_inputs(tmp_path / "manual", bad)
    if escapes:
        assert found == {} and len(bad.problems) == 1 and "zip slip" in bad.problems[0][1]
    else:
        assert list(found) == [12] and not bad.problems


def test_sharded_index_cannot_name_files_outside_its_folder(tmp_path):
    from safetensors.numpy import save_file

    from brain_jax.convert.core import ConversionError, load_hf_checkpoint

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "outside.safetensors"))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    with pytest.raises(ConversionError, match=r"index\.json: weight_map names \['\.\./outside\.safetensors'\]"):
        load_hf_checkpoint(folder)
