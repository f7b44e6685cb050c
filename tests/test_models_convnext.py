"""ConvNeXt V1/V2: parity with transformers (torch tests), golden fixtures (no torch), modes, dtypes, registry."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import brain_jax.models as models
from brain_jax.convert import from_hf
from brain_jax.models import convnext as cx
from brain_jax.models.common import depthwise_conv2d, layer_norm
from brain_jax.models.weights import abstract, model_variables
from tests.model_helpers import check_hf_export

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = dict(hidden_sizes=(8, 16, 32, 64), depths=(1, 1, 2, 1))


def randomize(model: nnx.Module, seed: int) -> None:
    """Random values in every variable (our init zeroes GRN and sets layer scale to 1e-6)."""
    rng = np.random.default_rng(seed)
    for path, var in model_variables(model).items():
        shape = var.get_value().shape
        if path.endswith(("kernel",)):
            fan_in = int(np.prod(shape[:-1]))
            val = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif path.endswith("scale"):
            val = 1.0 + 0.3 * rng.standard_normal(shape)
        else:
            val = 0.5 * rng.standard_normal(shape)
        var.set_value(jnp.asarray(val, jnp.float32))


def small_model(model_type: str, seed: int = 0, **overrides) -> cx.ConvNeXt:
    # abstract: no random-init compiles; every variable is overwritten by randomize anyway
    model = abstract(lambda: models.create(model_type, "test", 3, rngs=nnx.Rngs(params=seed, dropout=seed + 1),
                                           **overrides))
    randomize(model, seed)
    return model


def jitted(model: nnx.Module):
    """One XLA program for the whole eval-mode forward (cheaper than eager's per-op compiles at a new shape)."""
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, output_hidden_states=True))
    return lambda x: fwd(state, x)



# --------------------------------------------------------------------------- golden fixtures (no torch)


@pytest.mark.parametrize("model_type", ["convnextv2", "convnext"])
def test_golden_fixture_logits(model_type):
    folder = FIXTURES / f"{model_type}_golden"
    io = np.load(folder / "io.npz")
    model = from_hf(folder)
    assert model.config.model_type == model_type
    logits = np.asarray(model(jnp.asarray(io["pixel_values"].transpose(0, 2, 3, 1))))
    assert logits.shape == io["logits"].shape
    np.testing.assert_allclose(logits, io["logits"], atol=1e-4, rtol=0)
    # the fixture must exercise GRN / layer scale with non-trivial values
    big = [k for k, v in model_variables(model).items() if "grn" in k or "layer_scale" in k]
    assert big and all(float(jnp.std(model_variables(model)[k].get_value())) > 0.1 for k in big)


# --------------------------------------------------------------------------- structure and registry


def test_variants_match_hf_sizes():
    expect_v2 = {
        "atto": ((2, 2, 6, 2), 40), "femto": ((2, 2, 6, 2), 48), "pico": ((2, 2, 6, 2), 64),
        "nano": ((2, 2, 8, 2), 80), "tiny": ((3, 3, 9, 3), 96), "base": ((3, 3, 27, 3), 128),
        "large": ((3, 3, 27, 3), 192), "huge": ((3, 3, 27, 3), 352),
    }
    expect_v1 = {
        "tiny": ((3, 3, 9, 3), 96), "small": ((3, 3, 27, 3), 96), "base": ((3, 3, 27, 3), 128),
        "large": ((3, 3, 27, 3), 192), "xlarge": ((3, 3, 27, 3), 256),
    }
    for name, expect in (("convnextv2", expect_v2), ("convnext", expect_v1)):
        assert set(models.variants(name)) == set(expect) | {"test"}
        for v, (depths, c) in expect.items():
            cfg = cx.config_for(name, v, 1000)
            assert cfg.depths == depths and cfg.hidden_sizes == (c, 2 * c, 4 * c, 8 * c), (name, v)
    assert cx.config_for("convnext", "tiny", 2).layer_scale_init_value == 1e-6
    assert cx.config_for("convnextv2", "tiny", 2).layer_scale_init_value == 0.0


@pytest.mark.parametrize("name,millions", [("convnextv2", 28.6), ("convnext", 28.6)])
def test_tiny_parameter_count(name, millions):
    """ConvNeXt(-V2)-T with a 1000-way head has 28.6M parameters (published figure)."""
    abstract = nnx.eval_shape(lambda: models.create(name, "tiny", 1000))
    n = sum(int(np.prod(v.get_value().shape)) for v in model_variables(abstract).values())
    assert abs(n / 1e6 - millions) < 0.05, n


def test_registry_config_roundtrip_and_errors():
    model = nnx.eval_shape(lambda: models.create("convnextv2", "test", 5, drop_path_rate=0.2, dropout=0.3))
    assert model.head_paths == ("classifier",)
    cfg = model.config
    assert (cfg.model_type, cfg.num_labels, cfg.drop_path_rate, cfg.head_dropout) == ("convnextv2", 5, 0.2, 0.3)
    back = cx.config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg
    assert nnx.eval_shape(lambda: cx.from_config(back, rngs=nnx.Rngs(0))).config == cfg
    with pytest.raises(ValueError, match="unknown convnextv2 variant 'small'"):
        models.create("convnextv2", "small", 4)
    with pytest.raises(ValueError, match="unknown convnext override"):
        models.create("convnext", "test", 4, window_size=7)
    with pytest.raises(ValueError, match="unknown ConvNeXtConfig field"):
        cx.config_from_dict({**dataclasses.asdict(cfg), "bogus": 1})
    with pytest.raises(ValueError, match="3 channels"):
        model(jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match="at least 32x32 pixels"):
        model(jnp.zeros((1, 31, 64, 3)))


def test_hidden_states_shapes_and_names():
    model = nnx.eval_shape(lambda: models.create("convnext", "test", 3))
    logits, hidden = nnx.eval_shape(lambda m, x: m(x, output_hidden_states=True), model, jnp.zeros((2, 72, 72, 3)))
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
    # stem, then stages (72/4 = 18 -> 9 -> 4 -> 2: PyTorch-style floor)
    assert [h.shape for h in hidden] == [(2, 18, 18, 8), (2, 18, 18, 8), (2, 9, 9, 16), (2, 4, 4, 32), (2, 2, 2, 64)]
    paths = set(model_variables(model))
    assert "encoder.stages.1.downsampling_layer.1.kernel" in paths
    assert "encoder.stages.2.layers.1.layer_scale_parameter" in paths
    assert not any("downsampling_layer" in p for p in paths if p.startswith("encoder.stages.0."))
    v2 = set(model_variables(nnx.eval_shape(lambda: models.create("convnextv2", "test", 3))))
    assert "encoder.stages.0.layers.0.grn.weight" in v2 and not any("layer_scale" in p for p in v2)


# --------------------------------------------------------------------------- depthwise, modes, dtypes


def test_depthwise_impls_identical():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 11, 9, 5)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((7, 7, 1, 5)), jnp.float32)
    a = depthwise_conv2d(x, k, 3, impl="shift")
    b = depthwise_conv2d(x, k, 3, impl="grouped")
    # independent reference: direct sum over the window
    xp = np.pad(np.asarray(x), ((0, 0), (3, 3), (3, 3), (0, 0)))
    ref = sum(xp[:, i:i + 11, j:j + 9, :] * np.asarray(k)[i, j, 0] for i in range(7) for j in range(7))
    np.testing.assert_allclose(a, ref, atol=1e-5)
    np.testing.assert_allclose(b, ref, atol=1e-5)

    shift = small_model("convnextv2", depthwise_impl="shift")
    grouped = small_model("convnextv2", depthwise_impl="grouped")
    img = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
    np.testing.assert_allclose(shift(img), grouped(img), atol=1e-5, rtol=0)


def test_train_mode_drop_path_and_head_dropout():
    img = jnp.asarray(np.random.default_rng(1).standard_normal((2, 32, 32, 3)), jnp.float32)
    plain = small_model("convnextv2", seed=3)
    plain.eval()
    ref = np.asarray(plain(img))
    for overrides in ({"drop_path_rate": 0.5}, {"head_dropout": 0.5}):
        model = small_model("convnextv2", seed=3, **overrides)
        model.eval()
        np.testing.assert_allclose(model(img), ref, atol=1e-6)  # eval: identical to the rate-0 model
        np.testing.assert_allclose(model(img), ref, atol=1e-6)
        model.train()
        t1, t2 = np.asarray(model(img)), np.asarray(model(img))
        assert np.abs(t1 - ref).max() > 1e-3, overrides  # randomness is applied ...
        assert np.abs(t1 - t2).max() > 1e-3, overrides  # ... and differs between calls


def test_bfloat16_compute_close_to_float32():
    img = jnp.asarray(np.random.default_rng(2).standard_normal((2, 32, 32, 3)), jnp.float32)
    f32 = small_model("convnext", seed=4)
    bf16 = abstract(lambda: models.create("convnext", "test", 3, dtype=jnp.bfloat16))
    nnx.update(bf16, nnx.state(f32, nnx.Param))
    assert all(v.get_value().dtype == jnp.float32 for v in model_variables(bf16).values())
    a = np.asarray(f32(img))
    b, hidden = jitted(bf16)(img)
    b = np.asarray(b)
    assert b.dtype == np.float32 and np.isfinite(b).all()
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max() + 0.05, (a, b)
    assert np.abs(a - b).max() > 0  # it did compute in lower precision
    assert hidden[-1].dtype == jnp.bfloat16


def test_jit_matches_eager():
    model = small_model("convnextv2", seed=5)
    model.eval()
    img = jnp.asarray(np.random.default_rng(3).standard_normal((2, 32, 32, 3)), jnp.float32)
    np.testing.assert_allclose(jitted(model)(img)[0], model(img), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- parity with transformers (torch)


def _hf_forward(hf, x_nchw):
    import torch

    with torch.no_grad():
        out = hf(torch.from_numpy(x_nchw), output_hidden_states=True)
    return out.logits.numpy(), [h.numpy().transpose(0, 2, 3, 1) for h in out.hidden_states]


@pytest.mark.torch
@pytest.mark.parametrize(
    "model_type,config,sizes",
    [
        # widths reuse the "test" variant's and the golden fixtures' shapes to keep XLA compiles few
        ("convnextv2", dict(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1]), (32, 72)),
        ("convnextv2", dict(hidden_sizes=[8, 12, 16, 24], depths=[2, 1, 1, 1], drop_path_rate=0.3), (36, 64)),
        ("convnext", dict(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1]), (32, 72)),
        ("convnext", dict(hidden_sizes=[8, 12, 16], depths=[1, 2, 1], num_stages=3, layer_norm_eps=1e-5), (36,)),
    ],
)
def test_hf_parity_logits_and_hidden_states(tmp_path, model_type, config, sizes):
    from tests.fixtures.make_golden import hf_model

    hf = hf_model(model_type, seed=7, num_labels=5, **config)
    hf.save_pretrained(tmp_path)
    ours = from_hf(tmp_path)
    rng = np.random.default_rng(8)
    for s in sizes:
        x = rng.standard_normal((2, 3, s, s)).astype(np.float32)
        want_logits, want_hidden = _hf_forward(hf, x)
        logits, hidden = jitted(ours)(jnp.asarray(x.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(np.asarray(logits), want_logits, atol=1e-4, rtol=0)
        assert len(hidden) == len(want_hidden)
        for i, (h, w) in enumerate(zip(hidden, want_hidden)):
            assert h.shape == w.shape, (s, i)
            np.testing.assert_allclose(np.asarray(h), w, atol=1e-4, rtol=1e-4, err_msg=f"size {s}, state {i}")


@pytest.mark.torch
@pytest.mark.parametrize("model_type", ["convnextv2", "convnext"])
def test_roundtrip_flax_hf_flax(tmp_path, model_type):
    ours = small_model(model_type, seed=11, label_names=("glioma", "meningioma", "notumor"))
    x = np.random.default_rng(12).standard_normal((2, 3, 32, 32)).astype(np.float32)
    hf_class = {"convnextv2": "ConvNextV2ForImageClassification", "convnext": "ConvNextForImageClassification"}
    hf = check_hf_export(ours, tmp_path, x, hf_class[model_type])
    assert hf.config.id2label == {0: "glioma", 1: "meningioma", 2: "notumor"}


# --------------------------------------------------------------------------- block parity (torch)


def _t(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.torch
def test_grn_matches_torch():
    import torch
    from transformers.models.convnextv2.modeling_convnextv2 import ConvNextV2GRN

    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 5, 6, 12)).astype(np.float32)
    w, b = rng.standard_normal(12).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    ref = ConvNextV2GRN(12)
    with torch.no_grad():
        ref.weight.copy_(_t(w.reshape(1, 1, 1, 12)))
        ref.bias.copy_(_t(b.reshape(1, 1, 1, 12)))
        want = ref(_t(x)).numpy()  # HF's GRN runs channels-last, like ours
    grn = cx.GRN(12)
    grn.weight.set_value(jnp.asarray(w))
    grn.bias.set_value(jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(grn(jnp.asarray(x))), want, atol=1e-5, rtol=1e-5)


@pytest.mark.torch
def test_channels_first_layernorm_and_downsampling_match_torch():
    import torch
    from transformers import ConvNextV2Config
    from transformers.models.convnextv2.modeling_convnextv2 import ConvNextV2LayerNorm, ConvNextV2Stage

    from tests.fixtures.make_golden import randomize_

    rng = np.random.default_rng(21)
    x = (3.0 + 2.0 * rng.standard_normal((2, 6, 9, 9))).astype(np.float32)  # NCHW, offset mean
    ln_ref = ConvNextV2LayerNorm(6, eps=1e-6, data_format="channels_first")
    stage_ref = ConvNextV2Stage(ConvNextV2Config(), in_channels=6, out_channels=10, stride=2, depth=1)
    randomize_(ln_ref, 22)
    randomize_(stage_ref, 23)
    with torch.no_grad():
        want_ln = ln_ref(_t(x)).numpy().transpose(0, 2, 3, 1)
        down = stage_ref.downsampling_layer
        want_down = down[1](down[0](_t(x))).numpy().transpose(0, 2, 3, 1)
        want_stage = stage_ref(_t(x)).numpy().transpose(0, 2, 3, 1)
    from brain_jax.convert.convnext import key_map

    # a 2-stage model whose stage 1 takes the reference stage's weights through the conversion map
    full = abstract(lambda: cx.from_config(cx.ConvNeXtConfig(hidden_sizes=(6, 10), depths=(1, 1), num_labels=2),
                                           rngs=nnx.Rngs(0)))
    sd = {f"convnextv2.encoder.stages.1.{k}": v.numpy() for k, v in stage_ref.state_dict().items()}
    variables, used = model_variables(full), set()
    for ours, (hf_key, hook) in key_map(full).items():
        if hf_key in sd:
            variables[ours].set_value(jnp.asarray(hook.to_ours(sd[hf_key])))
            used.add(hf_key)
    assert used == set(sd)
    stage = full.encoder.stages[1]
    xn = jnp.asarray(x.transpose(0, 2, 3, 1))
    ln = layer_norm(6, 1e-6, dtype=jnp.float32, rngs=nnx.Rngs(0))
    ln.scale.set_value(jnp.asarray(ln_ref.weight.detach().numpy()))
    ln.bias.set_value(jnp.asarray(ln_ref.bias.detach().numpy()))
    np.testing.assert_allclose(np.asarray(ln(xn)), want_ln, atol=1e-5, rtol=1e-5)
    d0, d1 = stage.downsampling_layer
    np.testing.assert_allclose(np.asarray(d1(d0(xn))), want_down, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(stage(xn)), want_stage, atol=1e-5, rtol=1e-5)
