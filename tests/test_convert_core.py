"""Conversion core for ConvNeXt: refusal of bad checkpoints, torch .bin reading, export naming, native folders."""
from __future__ import annotations

import dataclasses
import json
import shutil
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from brain_jax.convert import ConversionError, from_hf, to_hf
from brain_jax.convert.native import META_FILE, PARAMS_FILE, load_native, save_native
from brain_jax.models.weights import abstract, model_variables

FIXTURES = Path(__file__).parent / "fixtures"
V2, V1 = FIXTURES / "convnextv2_golden", FIXTURES / "convnext_golden"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def _golden_logits(folder: Path, model) -> tuple[np.ndarray, np.ndarray]:
    io = np.load(folder / "io.npz")
    return np.asarray(model(jnp.asarray(io["pixel_values"].transpose(0, 2, 3, 1)))), io["logits"]


# --------------------------------------------------------------------------- refusing bad checkpoints


def test_other_architecture_checkpoint_is_refused(tmp_path):
    folder = _copy(V2, tmp_path / "mixed")
    shutil.copy(V1 / "model.safetensors", folder / "model.safetensors")  # V1 weights, V2 config
    with pytest.raises(ConversionError) as err:
        from_hf(folder)
    msg = str(err.value)
    assert "missing convnextv2.embeddings.patch_embeddings.weight" in msg
    assert "missing convnextv2.encoder.stages.0.layers.0.grn.weight" in msg
    assert "unused convnext.encoder.stages.0.layers.0.layer_scale_parameter" in msg


def test_wrong_size_checkpoint_lists_every_shape_mismatch(tmp_path):
    folder = _copy(V2, tmp_path / "resized")
    _edit_config(folder, hidden_sizes=[8, 12, 16, 32])
    with pytest.raises(ConversionError) as err:
        from_hf(folder)
    lines = str(err.value).splitlines()
    # named by HF key, both shapes in HF's (out, in) layout
    pwconv1 = "convnextv2.encoder.stages.3.layers.0.pwconv1.weight"
    assert f"  {pwconv1}: {folder} has (96, 24), model expects (128, 32)" in lines
    assert f"  classifier.weight: {folder} has (4, 24), model expects (4, 32)" in lines
    assert not any("classifier.kernel" in line for line in lines)  # each offender once, by its HF key


def test_truncated_safetensors_is_refused(tmp_path):
    folder = _copy(V2, tmp_path / "trunc")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated"):
        from_hf(folder)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"model_type": "resnet"}, "unknown model_type 'resnet'"),
        ({"model_type": None}, "unknown model_type"),
        ({"architectures": ["ConvNextV2Backbone"]}, "no image-classification model"),
        ({"hidden_act": "relu"}, "hidden_act='relu' is not supported"),
        ({"num_stages": 3}, "num_stages 3 != len\\(depths\\) 4"),
    ],
)
def test_bad_config_is_refused(tmp_path, changes, match):
    folder = _copy(V2, tmp_path / "cfg")
    _edit_config(folder, **changes)
    with pytest.raises(ConversionError, match=match):
        from_hf(folder)


def test_missing_folder_and_weights(tmp_path):
    with pytest.raises(ConversionError, match="no such folder"):
        from_hf(tmp_path / "nope")
    folder = _copy(V2, tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="no model.safetensors"):
        from_hf(folder)


# --------------------------------------------------------------------------- export naming (no torch)


@pytest.mark.parametrize("golden", [V2, V1])
def test_export_reproduces_hf_checkpoint_exactly(tmp_path, golden):
    model = from_hf(golden)
    to_hf(model, tmp_path / "out")
    want, got = load_file(str(golden / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    hf_cfg, ours_cfg = (json.loads((d / "config.json").read_text()) for d in (golden, tmp_path / "out"))
    for field in ("model_type", "architectures", "hidden_sizes", "depths", "layer_norm_eps", "id2label"):
        assert ours_cfg[field] == hf_cfg[field], field


# --------------------------------------------------------------------------- pytorch_model.bin (torch)


@pytest.mark.torch
def test_pytorch_bin_loads(tmp_path):
    """A pytorch_model.bin checkpoint gives the safetensors one's logits (pickle payloads: test_io_security.py)."""
    import torch
    from safetensors.torch import load_file as load_torch

    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(V2 / "config.json", folder / "config.json")
    torch.save(load_torch(str(V2 / "model.safetensors")), folder / "pytorch_model.bin")
    logits, want = _golden_logits(V2, from_hf(folder))
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- abstract builds


def test_from_hf_model_trains_with_drop_path(tmp_path):
    """Models built without random init still carry working RNG streams for training mode."""
    folder = _copy(V2, tmp_path / "dp")
    _edit_config(folder, drop_path_rate=0.9)
    model = from_hf(folder)
    logits, want = _golden_logits(V2, model)
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)  # eval mode: no drop path
    model.train()
    a, b = _golden_logits(V2, model)[0], _golden_logits(V2, model)[0]
    assert np.abs(a - want).max() > 1e-3 and np.abs(a - b).max() > 1e-3


class _Buffer(nnx.Variable):
    pass


class _WithBuffer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.table = _Buffer(jnp.arange(4.0))  # a constant that only the real constructor computes


def test_abstract_keeps_constant_state_by_falling_back():
    model = abstract(lambda: _WithBuffer(nnx.Rngs(0)))
    np.testing.assert_array_equal(np.asarray(model.table.get_value()), np.arange(4.0))
    plain = abstract(lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(np.asarray(plain.kernel.get_value()), np.zeros((2, 3)))  # placeholder


# --------------------------------------------------------------------------- native folder


def test_native_roundtrip_exact(tmp_path):
    model = from_hf(V1)
    save_native(model, tmp_path / "n")
    meta = json.loads((tmp_path / "n" / META_FILE).read_text())
    assert meta["model_type"] == "convnext" and meta["config"]["hidden_sizes"] == [8, 12, 16, 24]
    stored = load_file(str(tmp_path / "n" / PARAMS_FILE))
    assert "encoder.stages.1.downsampling_layer.1.kernel" in stored
    back = load_native(tmp_path / "n")
    assert back.config == model.config
    a, b = model_variables(model), model_variables(back)
    assert set(a) == set(b) == set(stored)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k].get_value()), np.asarray(b[k].get_value()), err_msg=k)
    logits, want = _golden_logits(V1, back)
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)

    bf16 = load_native(tmp_path / "n", dtype=jnp.bfloat16)
    assert bf16.dtype == jnp.bfloat16
    assert all(v.get_value().dtype == jnp.float32 for v in model_variables(bf16).values())


def test_native_refuses_mismatch(tmp_path):
    save_native(from_hf(V1), tmp_path / "n")
    meta_path = tmp_path / "n" / META_FILE
    meta = json.loads(meta_path.read_text())

    meta["config"]["depths"] = [1, 1, 2, 1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match="missing encoder.stages.2.layers.1.dwconv.kernel"):
        load_native(tmp_path / "n")

    meta["config"]["depths"], meta["model_type"] = [1, 1, 1, 1], "resnet"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match="unknown model name 'resnet'"):
        load_native(tmp_path / "n")

    meta["model_type"] = "convnext"
    meta["config"]["window_size"] = 7
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match="window_size"):
        load_native(tmp_path / "n")

    del meta["config"]["window_size"]
    meta_path.write_text(json.dumps(meta))
    data = (tmp_path / "n" / PARAMS_FILE).read_bytes()
    (tmp_path / "n" / PARAMS_FILE).write_bytes(data[:-100])
    with pytest.raises(ConversionError, match="truncated"):
        load_native(tmp_path / "n")

    with pytest.raises(FileNotFoundError, match=META_FILE):
        load_native(tmp_path / "elsewhere")


@dataclasses.dataclass(frozen=True)
class _ToyConfig:
    model_type: str = "toy"
    num_labels: int = 2
    widths: tuple[int, ...] = (3, 4)


class _Toy(nnx.Module):
    def __init__(self, config: _ToyConfig, rngs: nnx.Rngs):
        self.config = config
        self.linear = nnx.Linear(config.widths[0], config.widths[1], rngs=rngs)
        self.norm = nnx.BatchNorm(config.widths[1], rngs=rngs)


def test_native_is_generic_over_architectures(tmp_path, monkeypatch):
    """Dispatch goes through the model registry by model_type; BatchStats travel with Params."""
    import brain_jax.models

    toy_module = types.SimpleNamespace(
        config_from_dict=lambda d: _ToyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}),
        from_config=lambda cfg, *, dtype, rngs: _Toy(cfg, rngs),
    )
    real = brain_jax.models.module_for
    monkeypatch.setattr(brain_jax.models, "module_for", lambda name: toy_module if name == "toy" else real(name))
    model = _Toy(_ToyConfig(), nnx.Rngs(0))
    model.norm.mean.set_value(jnp.arange(4.0))
    model.norm.var.set_value(jnp.full((4,), 3.0))
    save_native(model, tmp_path / "toy")
    back = load_native(tmp_path / "toy")
    assert isinstance(back, _Toy) and back.config == _ToyConfig()
    np.testing.assert_array_equal(np.asarray(back.norm.mean.get_value()), np.arange(4.0))
    np.testing.assert_array_equal(np.asarray(back.norm.var.get_value()), np.full(4, 3.0))
    np.testing.assert_array_equal(np.asarray(back.linear.kernel.get_value()),
                                  np.asarray(model.linear.kernel.get_value()))
    assert back.norm.use_running_average  # eval mode
