"""``brain-jax convert`` end to end through ``brain_jax.cli.main`` on the tiny golden checkpoints."""
from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from brain_jax.cli import main
from brain_jax.convert.native import load_native

V2 = Path(__file__).parent / "fixtures" / "convnextv2_golden"


def _golden_check(model) -> None:
    io = np.load(V2 / "io.npz")
    logits = np.asarray(model(jnp.asarray(io["pixel_values"].transpose(0, 2, 3, 1))))
    np.testing.assert_allclose(logits, io["logits"], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "native"
    assert main(["convert", "--hf", str(V2), "--out", str(out)]) == 0
    return out


def test_import_then_export(native_dir, tmp_path, capsys):
    _golden_check(load_native(native_dir))
    hf_out = tmp_path / "hf"
    assert main(["convert", "--to-hf", "--from", str(native_dir), "--out", str(hf_out)]) == 0
    assert "exported" in capsys.readouterr().out
    want, got = load_file(str(V2 / "model.safetensors")), load_file(str(hf_out / "model.safetensors"))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.torch
def test_exported_folder_loads_in_transformers(native_dir, tmp_path):
    import torch
    from transformers import AutoModelForImageClassification

    hf_out = tmp_path / "hf"
    assert main(["convert", "--to-hf", "--from", str(native_dir), "--out", str(hf_out)]) == 0
    hf, info = AutoModelForImageClassification.from_pretrained(hf_out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    io = np.load(V2 / "io.npz")
    with torch.no_grad():
        logits = hf.eval()(torch.from_numpy(io["pixel_values"])).logits.numpy()
    np.testing.assert_allclose(logits, io["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--hf", "x", "--to-hf", "--from", "y"], "exclusive"),
        (["--to-hf"], "--to-hf needs --from"),
        (["--from", "y"], "--from is only used with --to-hf"),
        ([], "nothing to do"),
        (["--hf", "/no/such/folder"], "no such folder"),
        (["--to-hf", "--from", "/no/such/folder"], "no such folder"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main(["convert", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.torch
def test_training_workdir_exports_to_transformers(tmp_path):
    """A workdir (the one kept from the old layout) -> HF folder whose logits are the workdir model's."""
    import torch
    from transformers import AutoModelForImageClassification

    from brain_jax import workdir
    from brain_jax.io import read_slice
    from brain_jax.train.forward import preprocess
    from brain_jax.train.model_factory import load_model_from_workdir
    from brain_jax.train.spec import RunSpec

    old = Path(__file__).parent / "fixtures" / "workdir_v0"
    out = tmp_path / "hf"
    assert main(["convert", "--to-hf", "--from", str(old / "cls"), "--out", str(out)]) == 0
    hf = AutoModelForImageClassification.from_pretrained(out).eval()
    spec = RunSpec.from_config(workdir.read_config(old / "cls"))
    x = preprocess(read_slice(old / "scan.png").image, spec.input)[None]
    with torch.no_grad():
        logits = hf(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()
    ours = np.asarray(load_model_from_workdir(old / "cls")(x))
    np.testing.assert_allclose(logits, ours, atol=1e-5)
    # and the stored logits of the old version, up to the 8-bit input (tests/test_workdir_compat.py)
    np.testing.assert_allclose(logits, np.load(old / "logits_cls.npy"), atol=1e-3)


def test_folder_that_is_neither_kind_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "something"
    src.mkdir()
    assert main(["convert", "--to-hf", "--from", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "something" in err and "brain_jax_model.json" in err and "config.json" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
