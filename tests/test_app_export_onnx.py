"""``brain-jax export --format onnx`` and ``predict`` through ONNX Runtime.

One export per architecture (tiny configs, every variable perturbed so that zero-initialised ones such as
ConvNeXt V2's GRN take part), shared by the module: ONNX Runtime's logits against our JAX forward at batch
1 and 8 on random inputs and on phantom slices written in the real file formats; ``predict --model`` against
today's ``predict --workdir``; no JAX in the ONNX route; one-line errors for bad input.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brain_jax.app import export as export_app, onnx_predict, predict as predict_app
from brain_jax.cli import main
from brain_jax.io import read_slice
from brain_jax.train import forward
from input_pipeline.phantoms import render_slice
from input_pipeline.synthetic import write_dicom, write_figshare_mat, write_nifti

pytestmark = pytest.mark.torch  # the export runs transformers' PyTorch models through torch.onnx

OLD = Path(__file__).parent / "fixtures" / "workdir_v0"  # cls: convnextv2 test; seg: segformer test
ARCHS = {"convnextv2": 4, "convnext": 4, "swin": 4, "vit": 4, "segformer": 2}
SIZE = 32
TOL = 1e-4


def _randn(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """name -> (JAX model, .onnx path): converted folders of perturbed tiny models, each exported once."""
    from brain_jax.convert.native import save_native
    from brain_jax.models import create
    from tests.model_helpers import perturb

    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, n in ARCHS.items():
        model = create(name, "test", n)
        perturb(model, 0.1)
        model.eval()
        src = save_native(model, root / name)
        # the tests below check parity at batch 1 and 8 (the CLI's exports check it at batch 2)
        res = export_app.export_onnx(src, root / f"{name}.onnx", image_size=SIZE, check=False)
        out[name] = (model, res["model"])
    return out


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> Path:
    """A copy of the kept cls / seg workdirs, each exported through the CLI to WORKDIR/onnx/model.onnx."""
    root = tmp_path_factory.mktemp("wd") / "wd"
    shutil.copytree(OLD, root)
    for kind in ("cls", "seg"):
        assert main(["export", "--format", "onnx", "--from", str(root / kind)]) == 0
    return root


@pytest.fixture(scope="module")
def real_files(tmp_path_factory) -> list[str]:
    """Phantom slices (the brain_phantoms renderer) written as Figshare .mat, DICOM, NIfTI, 16-bit PNG."""
    from PIL import Image

    d = tmp_path_factory.mktemp("files")
    imgs = [render_slice(0, p, i, 96)[:2] for p in range(4) for i in range(2)]
    files = [
        write_figshare_mat(d / "1.mat", imgs[0][0].astype(np.int16), imgs[0][1], 1.0),
        write_figshare_mat(d / "2.mat", imgs[1][0].astype(np.int16), imgs[1][1], 2.0, version="5"),
        write_dicom(d / "3.dcm", imgs[2][0].astype(np.int16)),
        write_nifti(d / "4.nii.gz", np.stack([imgs[3][0], imgs[4][0]], -1).astype(np.int16)),
    ]
    Image.fromarray(imgs[5][0].astype(np.uint16)).save(d / "5.png")
    Image.fromarray(imgs[6][0].astype(np.float32), mode="F").save(d / "6.tif")
    files.append(write_dicom(d / "7.dcm", imgs[7][0].astype(np.int16), rle=True, spacing=None))
    return [str(f) for f in files] + [str(d / "5.png"), str(d / "6.tif"), str(OLD / "scan.png")]  # 8 files


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("name", list(ARCHS))
def test_ort_matches_jax_on_random_inputs(exports, name):
    model, path = exports[name]
    ort_model = onnx_predict.OnnxModel(path)
    size = ort_model.companion.input.image_size
    assert size == SIZE
    fwd = forward.forward_fn(model)
    for batch in (1, 8):
        x = _randn((batch, size, size, 3), seed=batch)
        ref = fwd(x)
        got = ort_model.logits(x, batch)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=TOL, rtol=0, err_msg=f"{name} batch {batch}")
        assert np.abs(ref).max() > 0.1  # the comparison is not between near-zero outputs


@pytest.mark.parametrize("name", list(ARCHS))
def test_graph_contract(exports, name):
    """Dynamic batch, NCHW float32 pixel_values, logits out, opset 17, grouped depthwise Conv for ConvNeXt."""
    import onnx

    _, path = exports[name]
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == export_app.DEFAULT_OPSET
    (inp,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    size = json.loads(onnx_predict.companion_path(path).read_text())["preprocessing"]["image_size"]
    assert inp.name == "pixel_values" and dims == ["batch", 3, size, size]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [o.name for o in proto.graph.output] == ["logits"]
    ops = {n.op_type for n in proto.graph.node}
    assert "LayerNormalization" in ops and "Einsum" not in ops
    if name.startswith("convnext"):
        groups = [a.i for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
        assert max(groups) > 1  # depthwise as one grouped Conv, not shifted multiply-adds


def test_grn_rewrite_is_the_same_function():
    import torch
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

    cfg = ConvNextV2Config(num_stages=2, depths=[1, 1], hidden_sizes=[8, 16], num_labels=3)
    hf = ConvNextV2ForImageClassification(cfg).eval()
    grns = [m for m in hf.modules() if type(m).__name__ == "ConvNextV2GRN"]
    for g in grns:
        torch.nn.init.normal_(g.weight)
        torch.nn.init.normal_(g.bias)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(x).logits
        export_app._fuse_grn(hf)
        assert not any(type(m).__name__ == "ConvNextV2GRN" for m in hf.modules()) and grns
        got = hf(x).logits
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5, rtol=0)


def test_companion_schema(workdirs):
    doc = json.loads((workdirs / "seg" / "onnx" / "model.onnx.json").read_text())
    assert doc["schema"] == "brain-jax-onnx" and doc["schema_version"] == 1
    assert doc["task"] == "segmentation" and doc["class_names"] == ["background", "tumour"]
    assert doc["model"]["name"] == "segformer" and doc["model"]["model_type"] == "segformer"
    pre = doc["preprocessing"]
    cfg = json.loads((workdirs / "seg" / "config.json").read_text())["data"]
    assert pre["image_size"] == cfg["image_size"] and pre["upper_percentile"] == cfg["upper_percentile"]
    assert pre["mean"] == list(cfg["mean"]) and pre["std"] == list(cfg["std"])
    assert doc["input"]["layout"] == "NCHW" and doc["opset"] == 17
    assert 0 <= doc["parity"]["max_abs_logit_diff"] <= TOL


# ------------------------------------------------------------------------------- real-format files


@pytest.mark.parametrize("kind", ["cls", "seg"])
def test_ort_matches_jax_on_real_format_files(workdirs, real_files, kind):
    from brain_jax.app.inputs import load_workdir

    model, spec = load_workdir(workdirs / kind)
    x = predict_app.model_inputs([read_slice(f) for f in real_files], spec.input)
    assert len(x) == 8
    ort_model = onnx_predict.OnnxModel(workdirs / kind / "onnx" / "model.onnx")
    fwd = forward.forward_fn(model)
    for batch in (1, 8):
        np.testing.assert_allclose(ort_model.logits(x[:batch], batch), fwd(x[:batch]), atol=TOL, rtol=0)


def _predictions(out: Path) -> list[dict]:
    return json.loads((out / "predictions.json").read_text())["predictions"]


@pytest.mark.parametrize("kind", ["cls", "seg"])
def test_predict_onnx_matches_predict_workdir(workdirs, real_files, tmp_path, kind):
    wd = workdirs / kind
    assert main(["predict", "--workdir", str(wd), "--out", str(tmp_path / "xla"), *real_files]) == 0
    assert main(["predict", "--workdir", str(wd), "--onnx", "--out", str(tmp_path / "ort"), *real_files]) == 0
    want, got = _predictions(tmp_path / "xla"), _predictions(tmp_path / "ort")
    assert len(got) == len(want) == len(real_files)
    for w, g in zip(want, got):
        assert g["file"] == w["file"]
        if kind == "cls":
            assert g["predicted_class"] == w["predicted_class"]
            np.testing.assert_allclose([g["probabilities"][k] for k in w["probabilities"]],
                                       list(w["probabilities"].values()), atol=TOL, rtol=0)
        else:
            assert g["tumour_pixels"] == w["tumour_pixels"] and g["area_mm2"] == w["area_mm2"]
            from PIL import Image

            a, b = (np.asarray(Image.open(d / w["mask_png"])) for d in (tmp_path / "xla", tmp_path / "ort"))
            np.testing.assert_array_equal(a, b)


def test_predict_model_file_imports_no_jax(workdirs, tmp_path):
    """predict --model in a fresh process: JAX never imported, the compilation cache never created."""
    cache = tmp_path / "xla_cache_never_made"
    code = ("import sys; from brain_jax.cli import main; "
            f"rc = main(['predict', '--model', {str(workdirs / 'cls' / 'onnx' / 'model.onnx')!r}, '--out', "
            f"{str(tmp_path / 'p')!r}, {str(OLD / 'scan.png')!r}]); "
            "assert rc == 0, rc; assert 'jax' not in sys.modules and 'torch' not in sys.modules, 'imported'")
    env = {**__import__("os").environ, "BRAIN_JAX_COMPILATION_CACHE": str(cache)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not cache.exists()
    rec = _predictions(tmp_path / "p")[0]
    want = json.loads((OLD / "predictions_cls.json").read_text())["predictions"][0]
    assert rec["predicted_class"] == want["predicted_class"]


# ---------------------------------------------------------------------------------------- bad input


def _one_line_error(capsys, *must) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for m in must:
        assert m in err, err
    return err


@pytest.mark.parametrize("argv,named", [(["--format", "tflite"], "--format tflite"), (["--opset", "11"], "--opset 11"),
                                        (["--image-size", "64"], "--image-size")])
def test_export_option_that_cannot_export(tmp_path, capsys, argv, named):
    assert main(["export", "--from", str(OLD / "cls"), "--out", str(tmp_path / "m.onnx"), *argv]) == 2
    _one_line_error(capsys, named)
    assert not (tmp_path / "m.onnx").exists()


def test_export_damaged_workdir(tmp_path, capsys):
    wd = tmp_path / "cls"
    shutil.copytree(OLD / "cls", wd)
    for f in (wd / "best").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0garbage")
    assert main(["export", "--from", str(wd)]) == 2
    _one_line_error(capsys, str(wd))
    assert not (wd / "onnx" / "model.onnx").exists()


def test_export_needs_torch(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ValueError, match="needs torch"):
        export_app.export_onnx(OLD / "cls", tmp_path / "m.onnx")


def test_predict_companion_missing_or_mismatched(workdirs, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(workdirs / "cls" / "onnx" / "model.onnx", model)
    scan = str(OLD / "scan.png")
    assert main(["predict", "--model", str(model), scan]) == 2
    _one_line_error(capsys, "m.onnx.json", "missing")
    shutil.copy(workdirs / "seg" / "onnx" / "model.onnx.json", tmp_path / "m.onnx.json")  # another export's
    assert main(["predict", "--model", str(model), scan]) == 2
    _one_line_error(capsys, "m.onnx.json", "another export")
    (tmp_path / "m.onnx.json").write_text("{not json")
    assert main(["predict", "--model", str(model), scan]) == 2
    _one_line_error(capsys, "m.onnx.json")
    assert not (tmp_path / "predictions").exists()


def test_predict_route_arguments(tmp_path, capsys):
    scan = str(OLD / "scan.png")
    assert main(["predict", scan]) == 2
    _one_line_error(capsys, "--workdir", "--model")
    assert main(["predict", "--workdir", str(OLD / "cls"), "--onnx", scan]) == 2
    _one_line_error(capsys, "model.onnx", "brain-jax export")
