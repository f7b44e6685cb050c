"""Swin: parity with HF transformers (padding, shifts, merging), the shrunk-window bias rule, conversion
round trips, training-mode behaviour, and a golden fixture for runs without torch.

Tiny configs only (embed 8-16, depths 1-2, images <= 192 px with tiny widths).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brain_jax.convert import ConversionError, from_hf
from brain_jax.convert import swin as conv_swin
from brain_jax.models import create, swin, variants
from brain_jax.models.weights import model_variables
from tests.fixtures.make_golden import hf_swin
from tests.model_helpers import call_jit as _call
from tests.model_helpers import check_bfloat16_compute, check_dropout_only_in_training, check_hf_export, perturb
from tests.model_helpers import nhwc as _nhwc
from tests.model_helpers import randn as _randn

FIXTURES = Path(__file__).parent / "fixtures"
# window 7 on a 2-stage, patch-4 model: 64 px gives 16×16 then 8×8 maps (both padded, both shifted)
TINY_HF = dict(image_size=64, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=7,
               num_labels=3)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("swin_hf") / "tiny"
    hf_swin(seed=3, **TINY_HF).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def ours(hf_dir):
    return from_hf(hf_dir)


# --------------------------------------------------------------------------- building blocks


@pytest.mark.torch
@pytest.mark.parametrize("window", [2, 7, 12])
def test_relative_position_index_matches_hf_buffer(window):
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias

    hf_idx = SwinRelativePositionBias(1, (window, window)).relative_position_index.numpy()
    np.testing.assert_array_equal(swin.relative_position_index(window).reshape(-1), hf_idx)


def test_shrunk_window_bias_is_the_table_centre():
    """A 5×5 window inside a 7-window model: same bias for the same offset, = central 9×9 of the 13×13 table."""
    cfg = swin.SwinConfig(embed_dim=8, depths=(1,), num_heads=(2,), window_size=7, num_labels=2)
    attn = swin.SwinSelfAttention(cfg, 8, 2, dtype=jnp.float32, rngs=nnx.Rngs(0))
    table = _randn((13 * 13, 2), seed=1)
    attn.relative_position_bias_table.set_value(jnp.asarray(table))
    full, small = np.asarray(attn.bias(7)), np.asarray(attn.bias(5))
    assert small.shape == (2, 25, 25)
    # tokens of the top-left 5×5 sub-window of a 7×7 window have the same pairwise offsets
    sub = np.array([r * 7 + c for r in range(5) for c in range(5)])
    np.testing.assert_array_equal(small, full[:, sub][:, :, sub])
    # independently: crop the 2-D table to offsets −4..4 and look up (dy, dx) = query − key
    crop = table.reshape(13, 13, 2)[2:11, 2:11]
    for qi, ki in [(0, 0), (0, 24), (24, 0), (7, 13), (12, 3)]:
        dy, dx = qi // 5 - ki // 5, qi % 5 - ki % 5
        np.testing.assert_array_equal(small[:, qi, ki], crop[dy + 4, dx + 4])
    with pytest.raises(ValueError, match="window 9"):
        swin.relative_position_index(9, 7)


@pytest.mark.torch
@pytest.mark.parametrize("height,width", [(8, 12), (16, 8)])
def test_shift_mask_matches_hf(height, width):
    from transformers import SwinConfig
    from transformers.models.swin.modeling_swin import SwinLayer

    layer = SwinLayer(SwinConfig(window_size=4), dim=8, input_resolution=(height, width), num_heads=1,
                      shift_size=2)
    import torch

    hf = layer.get_attn_mask(height, width, dtype=torch.float32, device="cpu").numpy()
    np.testing.assert_array_equal(swin.shift_attention_mask(height, width, 4, 2), hf)


# --------------------------------------------------------------------------- whole model vs HF


@pytest.mark.torch
@pytest.mark.parametrize("size", [
    (64, 80),  # 16×20 then 8×10 maps: padded to window 7 multiples, shifted + masked in both stages
    (56, 56),  # stage 2 map 7×7 == window: HF drops the shift
    (62, 60),  # image padded to the patch size; odd 16×15 map padded before patch merging
])
def test_logits_and_hidden_states_match_hf(hf_dir, ours, size):
    import torch
    from transformers import SwinForImageClassification

    # fresh HF model per size: HF's layers keep the window/shift they shrank to on a previous call
    hf = SwinForImageClassification.from_pretrained(hf_dir).eval()
    x = _randn((2, 3) + size, seed=size[0])
    with torch.no_grad():
        o = hf(torch.from_numpy(x), output_hidden_states=True)
    logits, hidden = _call(ours, _nhwc(x), hidden=True)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logits), o.logits.numpy(), atol=1e-4, rtol=0)
    assert len(hidden) == len(o.reshaped_hidden_states) == 3
    for i, (a, b) in enumerate(zip(hidden, o.reshaped_hidden_states)):
        np.testing.assert_allclose(np.asarray(a), b.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0,
                                   err_msg=f"hidden state {i}")


@pytest.mark.torch
def test_shrunk_window_matches_hf_given_the_central_bias(hf_dir, ours):
    """40 px: stage 2 map is 5×5 < window 7. HF shrinks the window but keeps the 7×7 bias and crashes, so
    the reference is HF with that stage's bias module replaced by a 5-window one holding the table centre."""
    import torch
    from transformers import SwinForImageClassification
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias

    hf = SwinForImageClassification.from_pretrained(hf_dir).eval()
    for block in hf.swin.encoder.layers[1].blocks:
        old = block.attention.relative_position_bias
        heads = old.relative_position_bias_table.shape[1]
        new = SwinRelativePositionBias(heads, (5, 5))
        with torch.no_grad():
            centre = old.relative_position_bias_table.reshape(13, 13, heads)[2:11, 2:11]
            new.relative_position_bias_table.copy_(centre.reshape(81, heads))
        block.attention.relative_position_bias = new
    x = _randn((2, 3, 40, 40), seed=5)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(np.asarray(_call(ours, _nhwc(x))), ref, atol=1e-4, rtol=0)


def test_inputs_smaller_than_the_window_in_late_stages_run():
    """Window 7, 4 stages: the last map is 5×5 (160 px) or 6×6 (192 px), where HF 5.24 crashes."""
    model = create("swin", "tiny_w7", 3, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                   rngs=nnx.Rngs(params=0, dropout=1))
    model.eval()
    for size in (160, 192):
        logits, hidden = _call(model, jnp.asarray(_randn((1, size, size, 3))), hidden=True)
        assert logits.shape == (1, 3) and np.isfinite(np.asarray(logits)).all()
        assert [h.shape[1] for h in hidden] == [size // 4, size // 8, size // 16, size // 32, size // 32]


def test_golden_fixture_without_torch():
    io = np.load(FIXTURES / "swin_golden" / "io.npz")
    model = from_hf(FIXTURES / "swin_golden")
    np.testing.assert_allclose(np.asarray(_call(model, _nhwc(io["pixel_values"]))), io["logits"], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- conversion


@pytest.mark.torch
def test_export_loads_cleanly_in_transformers_and_round_trips(tmp_path):
    model = create("swin", "test", 4, rngs=nnx.Rngs(params=7, dropout=1))
    perturb(model)  # make the (trunc-normal) bias tables and norms clearly non-default
    x = _randn((2, 3, 36, 28), seed=2)  # 18×14 map, window 4: padding and shifts
    check_hf_export(model, tmp_path / "export", x, "SwinForImageClassification")


def test_old_checkpoints_with_index_buffers_load_and_bad_ones_fail(tmp_path):
    """relative_position_index (persistent in older transformers) is ignored; anything else unmatched fails."""
    from safetensors.numpy import load_file, save_file

    src = FIXTURES / "swin_golden"
    tensors = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    old = dict(tensors)
    old["swin.encoder.layers.0.blocks.0.attention.self.relative_position_index"] = (
        swin.relative_position_index(3).astype(np.int64))
    (tmp_path / "old").mkdir()
    save_file(old, str(tmp_path / "old" / "model.safetensors"))
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    from_hf(tmp_path / "old")

    bad = dict(tensors)
    table = "swin.encoder.layers.1.blocks.0.attention.self.relative_position_bias_table"
    bad[table] = bad[table][:-1]
    del bad["swin.layernorm.bias"]
    (tmp_path / "bad").mkdir()
    save_file(bad, str(tmp_path / "bad" / "model.safetensors"))
    (tmp_path / "bad" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError) as e:
        from_hf(tmp_path / "bad")
    assert table in str(e.value) and "swin.layernorm.bias" in str(e.value)

    with pytest.raises(ConversionError, match="use_absolute_embeddings"):
        conv_swin.config_from_hf({**cfg, "use_absolute_embeddings": True})


# --------------------------------------------------------------------------- registry and modes


def test_registry_variants_and_config_round_trip():
    names = variants("swin")
    for size in ("tiny", "small", "base", "large"):
        assert f"{size}_w7" in names and f"{size}_w12" in names
    assert "test" in names
    assert swin.VARIANTS["base_w12"].window_size == 12 and swin.VARIANTS["base_w12"].embed_dim == 128
    model = create("swin", "test", 5, drop_path_rate=0.2, dropout=0.1)
    cfg = model.config
    assert (cfg.model_type, cfg.num_labels, cfg.drop_path_rate, cfg.hidden_dropout_prob) == ("swin", 5, 0.2, 0.1)
    assert swin.Swin.head_paths == ("classifier",) and "classifier.kernel" in model_variables(model)
    again = swin.config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg
    assert set(model_variables(swin.from_config(again, rngs=nnx.Rngs(0)))) == set(model_variables(model))
    with pytest.raises(ValueError, match="tiny_w7"):
        create("swin", "tiny", 3)
    with pytest.raises(ValueError, match="bogus"):
        create("swin", "test", 3, bogus=1)
    with pytest.raises(ValueError, match="num_heads"):
        swin.SwinConfig(embed_dim=10, depths=(1,), num_heads=(3,))


def test_dropout_and_drop_path_act_only_in_training():
    check_dropout_only_in_training("swin", jnp.asarray(_randn((4, 32, 32, 3), seed=9)),
                                   ({"dropout": 0.3}, {"attention_dropout": 0.3}))


def test_bfloat16_compute():
    check_bfloat16_compute("swin", jnp.asarray(_randn((2, 36, 28, 3), seed=4)))
