"""ViT: torch-compatible bicubic position-embedding interpolation, parity with HF transformers at the
trained and at other resolutions, conversion round trips, training-mode behaviour, golden fixture.

Tiny configs (hidden 32, 2 layers, images <= 56 px), except the check of ``small_16`` (DeiT-S) against
transformers: its full config, and a forward at full width but 2 layers.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brain_jax.convert import ConversionError, from_hf, to_hf
from brain_jax.models import create, variants, vit
from brain_jax.models.weights import model_variables
from tests.fixtures.make_golden import VIT_GOLDEN, hf_vit
from tests.model_helpers import call_jit as _call
from tests.model_helpers import check_bfloat16_compute, check_dropout_only_in_training, check_hf_export, perturb
from tests.model_helpers import nhwc as _nhwc
from tests.model_helpers import randn as _randn

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit_hf") / "tiny"
    hf_vit(seed=4, **VIT_GOLDEN).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def ours(hf_dir):
    return from_hf(hf_dir)


# --------------------------------------------------------------------------- interpolation


@pytest.mark.torch
@pytest.mark.parametrize("grid,out", [(4, (7, 7)), (4, (3, 3)), (5, (9, 6)), (7, (2, 11)), (14, (24, 24)),
                                      (3, (3, 5))])
def test_bicubic_matches_torch_interpolate(grid, out):
    import torch

    pos = _randn((1, 1 + grid * grid, 6), seed=grid)
    got = np.asarray(vit.interpolate_pos_encoding(jnp.asarray(pos), *out))
    patch = torch.from_numpy(pos[:, 1:]).reshape(1, grid, grid, 6).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(patch, size=out, mode="bicubic", align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 6).numpy()
    np.testing.assert_array_equal(got[:, :1], pos[:, :1])
    np.testing.assert_allclose(got[:, 1:], ref, atol=1e-5, rtol=0)


def test_bicubic_matrix_properties():
    """Rows sum to 1; same size is the identity; halving puts each output at t = 0.5 between two inputs,
    where Keys' kernel with a = −0.75 weighs the taps (−3/32, 19/32, 19/32, −3/32)."""
    for n_in, n_out in [(4, 7), (7, 4), (5, 5), (3, 12)]:
        m = vit.torch_bicubic_matrix(n_in, n_out)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(vit.torch_bicubic_matrix(6, 6), np.eye(6, dtype=np.float32))
    row = vit.torch_bicubic_matrix(8, 4)[1]  # source 2.5: taps 1..4
    np.testing.assert_allclose(row, [0, -3 / 32, 19 / 32, 19 / 32, -3 / 32, 0, 0, 0], atol=1e-7)


# --------------------------------------------------------------------------- whole model vs HF


@pytest.mark.torch
@pytest.mark.parametrize("size", [
    (32, 32),  # the configured resolution: embeddings used as stored
    (48, 40),  # 6×5 grid, interpolated from 4×4, non-square
    (24, 24),  # 3×3 grid: bicubic downsampling
    (35, 33),  # 4×4 grid plus remainder pixels the patch conv drops
])
def test_logits_and_hidden_states_match_hf(hf_dir, ours, size):
    import torch
    from transformers import ViTForImageClassification

    hf = ViTForImageClassification.from_pretrained(hf_dir).eval()
    x = _randn((2, 3) + size, seed=size[0])
    with torch.no_grad():
        o = hf(torch.from_numpy(x), output_hidden_states=True, interpolate_pos_encoding=True)
    logits, hidden = _call(ours, _nhwc(x), hidden=True)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logits), o.logits.numpy(), atol=1e-4, rtol=0)
    assert len(hidden) == len(o.hidden_states) == 3
    for i, (a, b) in enumerate(zip(hidden, o.hidden_states)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4, rtol=0, err_msg=f"hidden state {i}")


def test_golden_fixture_without_torch():
    io = np.load(FIXTURES / "vit_golden" / "io.npz")
    model = from_hf(FIXTURES / "vit_golden")
    assert io["pixel_values"].shape[2:] != (model.config.image_size,) * 2  # interpolated positions
    np.testing.assert_allclose(np.asarray(_call(model, _nhwc(io["pixel_values"]))), io["logits"], atol=1e-4,
                               rtol=0)


# --------------------------------------------------------------------------- conversion


@pytest.mark.torch
def test_export_loads_cleanly_in_transformers_and_round_trips(tmp_path):
    model = create("vit", "test", 4, image_size=24, drop_path_rate=0.1, rngs=nnx.Rngs(params=7, dropout=1))
    perturb(model)  # make the (trunc-normal) bias tables and norms clearly non-default
    check_hf_export(model, tmp_path / "export", _randn((2, 3, 24, 24), seed=2), "ViTForImageClassification")


def test_bad_checkpoints_fail_with_every_offender(tmp_path):
    from safetensors.numpy import load_file, save_file

    src = FIXTURES / "vit_golden"
    tensors = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    tensors["vit.embeddings.position_embeddings"] = tensors["vit.embeddings.position_embeddings"][:, :-1]
    del tensors["vit.encoder.layer.1.output.dense.bias"]
    tensors["vit.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError) as e:
        from_hf(tmp_path)
    msg = str(e.value)
    for key in ("vit.embeddings.position_embeddings", "vit.encoder.layer.1.output.dense.bias",
                "vit.pooler.dense.weight"):
        assert key in msg
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(ConversionError, match="hidden_act"):
        from_hf(tmp_path)


# --------------------------------------------------------------------------- registry and modes


def test_registry_variants_and_config_round_trip():
    assert set(variants("vit")) == {"small_16", "base_16", "base_32", "large_16", "large_32", "huge_14", "test"}
    huge = vit.VARIANTS["huge_14"]
    assert (huge.hidden_size, huge.num_hidden_layers, huge.patch_size, huge.intermediate_size) == (1280, 32, 14, 5120)
    model = create("vit", "test", 5, dropout=0.1, attention_dropout=0.2, image_size=48)
    cfg = model.config
    assert (cfg.model_type, cfg.num_labels, cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob) == (
        "vit", 5, 0.1, 0.2)
    assert model.embeddings.position_embeddings.get_value().shape == (1, 1 + 36, 32)
    assert vit.ViT.head_paths == ("classifier",) and "classifier.kernel" in model_variables(model)
    again = vit.config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg
    with pytest.raises(ValueError, match="base_16"):
        create("vit", "base", 3)
    with pytest.raises(ValueError, match="num_attention_heads"):
        vit.ViTConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="patch_size=8"):
        model(jnp.zeros((1, 4, 4, 3)))


# facebook/deit-small-patch16-224 as transformers ships it (a ViTForImageClassification): ViTConfig defaults
# (gelu, qkv_bias, layer_norm_eps 1e-12, 224 px, patch 16) with DeiT-S's sizes.
DEIT_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)


@pytest.mark.torch
def test_small_16_is_deit_small_as_transformers_builds_it(tmp_path):
    import torch
    from transformers import ViTConfig

    from brain_jax.convert.vit import config_from_hf

    assert config_from_hf(ViTConfig(**DEIT_SMALL, num_labels=1000).to_dict()) == vit.config_for("vit", "small_16", 1000)
    # The same widths, 6 heads of 64 and the 197-token position table in a forward at 224 px; 2 of the 12
    # identical layers keep it cheap.
    hf = hf_vit(seed=3, **{**DEIT_SMALL, "num_hidden_layers": 2}, num_labels=5)
    hf.save_pretrained(tmp_path)
    ours = from_hf(tmp_path)
    assert ours.config == vit.config_for("vit", "small_16", 5, num_hidden_layers=2)
    x = _randn((1, 3, 224, 224), seed=1)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(np.asarray(_call(ours, _nhwc(x))), ref, atol=1e-4, rtol=0)


def test_dropout_and_drop_path_act_only_in_training():
    check_dropout_only_in_training("vit", jnp.asarray(_randn((4, 32, 32, 3), seed=9)),
                                   ({"dropout": 0.3}, {"attention_dropout": 0.3}))


def test_bfloat16_compute():
    check_bfloat16_compute("vit", jnp.asarray(_randn((2, 40, 40, 3), seed=4)))


# --------------------------------------------------------------------------- headless (in21k-style) checkpoints


@pytest.fixture(scope="module")
def headless_dir(tmp_path_factory):
    """A ViTModel save (as google/vit-base-patch16-224-in21k ships): no prefix, no classifier, a pooler."""
    import torch
    from transformers import ViTConfig, ViTModel

    from tests.fixtures.make_golden import randomize_

    torch.manual_seed(0)
    cfg = {k: v for k, v in VIT_GOLDEN.items() if k != "num_labels"}
    hf = ViTModel(ViTConfig(**cfg), add_pooling_layer=True).eval()
    randomize_(hf, 5)
    out = tmp_path_factory.mktemp("vit_headless") / "in21k_like"
    hf.save_pretrained(out)
    return out, hf


@pytest.mark.torch
def test_headless_checkpoint_gives_the_class_token(headless_dir, tmp_path):
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForImageClassification

    folder, hf = headless_dir
    keys = load_file(str(folder / "model.safetensors")).keys()
    assert "embeddings.cls_token" in keys and "pooler.dense.weight" in keys  # the layout this test is about
    with pytest.warns(UserWarning, match="vit.pooler.dense.weight"):
        model = from_hf(folder)
    assert model.config.num_labels == 0 and model.classifier is None
    x = _randn((2, 3, 40, 32), seed=3)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x), interpolate_pos_encoding=True).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(np.asarray(_call(model, _nhwc(x))), ref, atol=1e-4, rtol=0)
    # Exported back, transformers reads it as a classifier with an Identity head: the same features.
    out = to_hf(model, tmp_path / "export")
    back, info = AutoModelForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        got = back.eval()(torch.from_numpy(x), interpolate_pos_encoding=True).logits.numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.torch
def test_init_from_headless_checkpoint_adds_a_fresh_classifier(headless_dir):
    from brain_jax.train.model_factory import create_model
    from brain_jax.train.spec import RunSpec
    from configs.common import base_config

    folder, _ = headless_dir
    config = base_config()
    config.model.name, config.model.variant = "vit", "test"
    config.model.kwargs = {"drop_path_rate": 0.0}
    config.init_from = str(folder)
    with pytest.warns(UserWarning, match="pooler"):
        model = create_model(RunSpec.from_config(config))
    assert model.classifier.kernel.get_value().shape == (32, 4)
    from safetensors.numpy import load_file

    want = load_file(str(folder / "model.safetensors"))["encoder.layer.1.output.dense.weight"].T
    np.testing.assert_array_equal(np.asarray(model.encoder.layer[1].output.dense.kernel.get_value()), want)
