"""SegFormer / MiT: parity with HF transformers, HF round trips, encoder transfer, training behaviour.

Tiny configs only (hidden 8..32, images <= 96 px): the whole file must stay well under 2 minutes on
2 CPU cores.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brain_jax.convert import ConversionError, from_hf, to_hf
from brain_jax.convert import segformer as conv_sf
from brain_jax.models import create, variants
from brain_jax.models import segformer as sf
from brain_jax.models.common import resize_bilinear
from brain_jax.models.weights import abstract, model_variables
from tests.model_helpers import check_hf_export
from tests.model_helpers import randn as _randn

# HF configs share the "test" variant's shapes and tests share one input shape, HW, so that JAX compiles
# each op once for the whole file (eager mode); other shapes/configs go through nnx.jit.
HW = (64, 96)
FIXTURE = Path(__file__).parent / "fixtures" / "segformer_golden"


def _hf_model(tmp_path, *, arch: str = "seg", num_labels: int = 2, seed: int = 0, **extra):
    """A transformers SegFormer from a tiny config with EVERY tensor randomised, saved to tmp_path."""
    from tests.fixtures.make_golden import hf_segformer

    model = hf_segformer(arch, seed=seed, num_labels=num_labels, **extra)
    out = tmp_path / f"hf_{arch}_{num_labels}"
    model.save_pretrained(out)
    return model, out


def _hf_forward(model, x_nhwc: np.ndarray):
    import torch

    with torch.no_grad():
        o = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()), output_hidden_states=True)
    logits = o.logits.numpy()
    if logits.ndim == 4:
        logits = logits.transpose(0, 2, 3, 1)
    return logits, [h.numpy().transpose(0, 2, 3, 1) for h in o.hidden_states]


def _forward(model, x):
    return model(x, output_hidden_states=True)


@nnx.jit
def _jit_forward(model, x):
    return model(x, output_hidden_states=True)


def _model(num_labels: int = 2, *, seed: int = 0, dtype=jnp.float32, **overrides):
    """A "test"-variant model with every Param/BatchStat drawn with numpy (random init compiles an XLA
    program per parameter shape, too slow here); dropout streams use the cheap-to-compile rbg PRNG
    (``abstract`` gives them fresh keys of the implementation the factory chose)."""
    cfg = sf.config_for("segformer", "test", num_labels, **overrides)
    model = abstract(lambda: sf.from_config(cfg, dtype=dtype,
                                            rngs=nnx.Rngs(params=0, dropout=jax.random.key(0, impl="rbg"))))
    rng = np.random.default_rng(seed)
    for path, var in model_variables(model).items():
        shape = var.get_value().shape
        if path.endswith(".var"):
            value = rng.uniform(0.5, 2.0, shape)
        elif path.endswith(".scale"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        else:
            value = 0.2 * rng.standard_normal(shape)
        var.set_value(jnp.asarray(value, jnp.float32))
    return model


# --------------------------------------------------------------------------- building blocks


@pytest.mark.torch
@pytest.mark.parametrize("src,dst", [((8, 12), (16, 24)), ((2, 3), (16, 24)), ((13, 7), (25, 25)),
                                     ((25, 19), (100, 75)), ((16, 24), (5, 7))])
def test_resize_bilinear_matches_torch(src, dst):
    import torch

    x = _randn((2, *src, 3))
    ours = np.asarray(resize_bilinear(jnp.asarray(x), dst))
    ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=dst, mode="bilinear",
                                          align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.torch
def test_batchnorm_train_and_eval_match_torch():
    import torch

    c = 6
    ours = sf.BatchNorm2d(c)
    ref = torch.nn.BatchNorm2d(c)
    with torch.no_grad():
        g = _randn((c,), 1) * 0.3 + 1
        b = _randn((c,), 2) * 0.3
        ref.weight.copy_(torch.from_numpy(g))
        ref.bias.copy_(torch.from_numpy(b))
    ours.scale.set_value(jnp.asarray(g))
    ours.bias.set_value(jnp.asarray(b))
    ours.train()
    ref.train()
    for step in range(3):
        x = _randn((3, 5, 4, c), 10 + step) * 2 + 1
        y = np.asarray(ours(jnp.asarray(x)))
        y_ref = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(y, y_ref, atol=1e-5)
        np.testing.assert_allclose(np.asarray(ours.mean[...]), ref.running_mean.numpy(), atol=1e-6)
        # torch updates running_var with the unbiased batch variance
        np.testing.assert_allclose(np.asarray(ours.var[...]), ref.running_var.numpy(), rtol=1e-5)
    ours.eval()
    ref.eval()
    x = _randn((2, 3, 3, c), 20)
    before = np.asarray(ours.var[...]).copy()
    y_ref = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), y_ref, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ours.var[...]), before)


# --------------------------------------------------------------------------- parity with HF


@pytest.mark.torch
@pytest.mark.parametrize("num_labels,hw,extra", [
    (1, HW, {}), (2, HW, {}), (5, HW, {}),
    # sides not multiples of 32 (non-integer upsampling ratios), other sr / mlp ratios
    (2, (50, 70), dict(sr_ratios=[4, 2, 2, 1], mlp_ratios=[4, 2, 4, 4])),
])
def test_segmentation_matches_hf(tmp_path, num_labels, hw, extra):
    hf, path = _hf_model(tmp_path, num_labels=num_labels, seed=num_labels, **extra)
    x = _randn((2, *hw, 3), seed=num_labels)
    ref_logits, ref_hidden = _hf_forward(hf, x)
    model = from_hf(path)
    assert isinstance(model, sf.SegformerForSemanticSegmentation)
    assert model.config.num_labels == num_labels
    assert model.config.label_names == () and model.config.depths == (1, 2, 1, 1)
    logits, hidden = (_jit_forward if extra else _forward)(model, jnp.asarray(x))
    assert logits.shape == ref_logits.shape == (2, math.ceil(hw[0] / 4), math.ceil(hw[1] / 4), num_labels)
    assert len(hidden) == len(ref_hidden) == 4
    for i, (h, r) in enumerate(zip(hidden, ref_hidden)):
        np.testing.assert_allclose(np.asarray(h), r, atol=1e-4, err_msg=f"stage {i}")
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-4)
    up = resize_bilinear(logits, hw)
    assert up.shape == (2, *hw, num_labels)


@pytest.mark.torch
def test_classification_matches_hf(tmp_path):
    hf, path = _hf_model(tmp_path, arch="cls", num_labels=7, seed=3)
    x = _randn((2, *HW, 3), seed=4)
    ref_logits, ref_hidden = _hf_forward(hf, x)
    model = from_hf(path)
    assert isinstance(model, sf.SegformerForImageClassification)
    assert model.head_paths == ("classifier",)
    logits, hidden = _forward(model, jnp.asarray(x))
    assert logits.shape == (2, 7)
    for h, r in zip(hidden, ref_hidden):
        np.testing.assert_allclose(np.asarray(h), r, atol=1e-4)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-4)


@pytest.mark.torch
def test_train_mode_batch_statistics_match_hf(tmp_path):
    """With dropout / drop path at 0, train mode differs from eval only by BatchNorm: compare with HF."""
    import torch

    hf, path = _hf_model(tmp_path, num_labels=3, seed=5)
    model = from_hf(path)
    x = _randn((2, *HW, 3), seed=6)
    hf.train()
    with torch.no_grad():
        ref = hf(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy().transpose(0, 2, 3, 1)
    model.train()
    ours = np.asarray(model(jnp.asarray(x)))
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    bn = model.decode_head.batch_norm
    np.testing.assert_allclose(np.asarray(bn.mean[...]), hf.decode_head.batch_norm.running_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.var[...]), hf.decode_head.batch_norm.running_var.numpy(), rtol=1e-5)
    model.eval()
    assert np.abs(np.asarray(model(jnp.asarray(x))) - ours).max() > 1e-3  # running stats now in use


def test_golden_fixture_logits():
    """HF logits stored by tests/fixtures/make_golden.py: parity without torch."""
    io = np.load(FIXTURE / "io.npz")
    model = from_hf(FIXTURE)
    assert model.config.depths == (1, 2, 1, 1) and model.config.hidden_sizes == (8, 16, 24, 32)
    x = io["pixel_values"].astype(np.float32).transpose(0, 2, 3, 1)
    assert x.shape[1:3] == HW
    logits = np.asarray(model(jnp.asarray(x)))
    ref = io["logits"].transpose(0, 2, 3, 1)
    assert logits.shape == ref.shape == (2, 16, 24, 2)
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    bn = model.decode_head.batch_norm
    assert float(np.std(np.asarray(bn.mean[...]))) > 0.05 and float(np.min(np.asarray(bn.var[...]))) > 0.4


# --------------------------------------------------------------------------- export / round trip


@pytest.mark.torch
@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_export_loads_in_transformers_and_round_trips(tmp_path, task):
    model = _model(3, seed=7, task=task)
    x = _randn((2, *HW, 3), seed=9).transpose(0, 3, 1, 2).copy()
    if task == "segmentation":
        hf = check_hf_export(model, tmp_path / "export", x, "SegformerForSemanticSegmentation",
                             auto="AutoModelForSemanticSegmentation")
        assert hf.config.do_reduce_labels is False
        assert hf.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    else:
        check_hf_export(model, tmp_path / "export", x, "SegformerForImageClassification")


def test_hf_config_labels_and_errors(tmp_path):
    model = _model(2)
    cfg = conv_sf.hf_config(model)
    assert cfg["id2label"] == {"0": "background", "1": "tumour"} and cfg["do_reduce_labels"] is False
    out = to_hf(model, tmp_path / "m")
    bad = dict(cfg, hidden_act="relu")
    (out / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConversionError, match="hidden_act"):
        from_hf(out)
    (out / "config.json").write_text(json.dumps(dict(cfg, architectures=["SegformerModel"])))
    with pytest.raises(ConversionError, match="load_encoder_into"):
        from_hf(out)
    (out / "config.json").write_text(json.dumps(dict(cfg, num_attention_heads=[1, 2, 5, 8])))
    with pytest.raises(ConversionError, match="hidden_sizes\\[2\\]=24 is not divisible"):
        from_hf(out)
    (out / "config.json").write_text(json.dumps(dict(cfg, decoder_hidden_size=16)))
    with pytest.raises(ConversionError, match="decode_head.linear_fuse.weight"):
        from_hf(out)


# --------------------------------------------------------------------------- encoder transfer


def _classifier_checkpoint(tmp_path, seed=11, **overrides):
    cls = _model(10, seed=seed, task="classification", **overrides)
    return cls, to_hf(cls, tmp_path / f"mit_{seed}")


def test_load_encoder_into_fills_encoder_keeps_fresh_head(tmp_path):
    cls, ckpt = _classifier_checkpoint(tmp_path)
    seg = _model(2, seed=99)
    before = {k: np.asarray(v.get_value()).copy() for k, v in model_variables(seg).items()}
    conv_sf.load_encoder_into(seg, ckpt)
    src = model_variables(cls)
    after = model_variables(seg)
    n_enc = 0
    for k, v in after.items():
        if k.startswith("segformer."):
            n_enc += 1
            np.testing.assert_array_equal(np.asarray(v.get_value()), np.asarray(src[k].get_value()), err_msg=k)
        else:
            assert k.startswith("decode_head.")
            np.testing.assert_array_equal(np.asarray(v.get_value()), before[k], err_msg=k)
    assert n_enc == sum(k.startswith("segformer.") for k in src) > 50
    x = jnp.asarray(_randn((2, *HW, 3)))
    seg.eval()
    cls.eval()
    np.testing.assert_allclose(np.asarray(_forward(seg, x)[1][-1]), np.asarray(_forward(cls, x)[1][-1]), atol=1e-6)


def test_load_encoder_into_rejects_mismatches(tmp_path):
    from safetensors.numpy import load_file, save_file

    _, ckpt = _classifier_checkpoint(tmp_path, seed=12)
    seg = _model(2, num_attention_heads=(1, 1, 1, 1))
    with pytest.raises(ConversionError, match="num_attention_heads"):
        conv_sf.load_encoder_into(seg, ckpt)
    seg = _model(2)
    tensors = load_file(str(ckpt / "model.safetensors"))
    extra = dict(tensors, **{"segformer.encoder.block.0.1.layer_norm_1.weight": np.ones(8, np.float32)})
    save_file(extra, str(ckpt / "model.safetensors"))
    with pytest.raises(ConversionError, match="unused segformer|unused encoder.block.0.1"):
        conv_sf.load_encoder_into(seg, ckpt)
    bad = dict(tensors)
    bad["segformer.encoder.block.0.0.mlp.dense1.weight"] = np.ones((16, 8), np.float32)
    save_file(bad, str(ckpt / "model.safetensors"))
    with pytest.raises(ConversionError, match="mlp.dense1.weight"):
        conv_sf.load_encoder_into(seg, ckpt)
    k0 = np.asarray(seg.segformer.encoder.block[0][0].mlp.dense1.kernel[...]).copy()
    np.testing.assert_array_equal(np.asarray(seg.segformer.encoder.block[0][0].mlp.dense1.kernel[...]), k0)


# --------------------------------------------------------------------------- config / training


def test_variants_and_config_round_trip():
    assert set(variants("segformer")) == {"b0", "b1", "b2", "b3", "b4", "b5", "test"}
    # shapes only: random initialisation itself is flax's; what matters here is structure and config
    model = nnx.eval_shape(lambda: create("segformer", "test", 5, drop_path_rate=0.2, dropout=0.1,
                                          image_size=96, rngs=nnx.Rngs(0)))
    assert model.config.hidden_dropout == 0.1 and model.config.drop_path_rate == 0.2
    rates = [blk.drop_path.rate for stage in model.segformer.encoder.block for blk in stage]
    np.testing.assert_allclose(rates, [0.0, 0.2 / 4, 0.4 / 4, 0.6 / 4, 0.2])  # HF's linspace over 5 blocks
    assert model.config.model_type == "segformer" and model.config.num_labels == 5
    assert model.head_paths == ("decode_head.classifier",)
    d = json.loads(json.dumps(dataclasses.asdict(model.config)))
    cfg = sf.config_from_dict(d)
    assert cfg == model.config
    rebuilt = nnx.eval_shape(lambda: sf.from_config(cfg, rngs=nnx.Rngs(0)))
    assert {k: v.get_value().shape for k, v in model_variables(rebuilt).items()} == \
        {k: v.get_value().shape for k, v in model_variables(model).items()}
    with pytest.raises(ValueError, match="unknown segformer override 'depth'"):
        create("segformer", "test", 2, depth=3)
    with pytest.raises(ValueError, match="unknown segformer variant 'b9'"):
        create("segformer", "b9", 2)


# Encoder parameter counts (millions) of MiT-B0..B5 from the SegFormer paper (Xie et al. 2021, Table 1)
PAPER_ENCODER_MPARAMS = {"b0": 3.4, "b1": 13.1, "b2": 24.2, "b3": 44.0, "b4": 60.8, "b5": 81.4}


def test_variant_encoder_sizes_match_paper():
    """Each variant's encoder size: per-stage parameters of our modules x the variant's depths vs the paper."""
    def counts(variant):  # one-layer-per-stage copy, shapes only: per-stage fixed and per-block counts
        m = nnx.eval_shape(lambda: create("segformer", variant, 150, depths=(1, 1, 1, 1), rngs=nnx.Rngs(0)))
        fixed, block = [0] * 4, [0] * 4
        for k, v in model_variables(m).items():
            parts = k.split(".")
            if parts[0] != "segformer":
                continue
            n = math.prod(v.get_value().shape)
            if parts[2] == "block":
                block[int(parts[3])] += n
            else:
                fixed[int(parts[3])] += n
        return fixed, block

    per_width = {}
    for variant, paper in PAPER_ENCODER_MPARAMS.items():
        widths = sf.VARIANTS[variant].hidden_sizes
        if widths not in per_width:
            per_width[widths] = counts(variant)
        fixed, block = per_width[widths]
        total = sum(f + d * b for f, d, b in zip(fixed, sf.VARIANTS[variant].depths, block))
        assert round(total / 1e6, 1) == pytest.approx(paper, abs=0.15), variant


def test_dropout_and_drop_path_only_in_train_mode():
    model = _model(2, drop_path_rate=0.5, hidden_dropout=0.2, attention_dropout=0.2, classifier_dropout=0.3)
    x = jnp.asarray(_randn((2, *HW, 3)))
    model.eval()
    e1, e2 = np.asarray(model(x)), np.asarray(model(x))
    np.testing.assert_array_equal(e1, e2)
    model.train()
    t1, t2 = np.asarray(model(x)), np.asarray(model(x))
    assert np.abs(t1 - t2).max() > 1e-3
    # dropout/drop path are what differs: same batch-stat BatchNorm without them is deterministic
    quiet = _model(2, drop_path_rate=0.0, classifier_dropout=0.0)
    quiet.train()
    np.testing.assert_allclose(np.asarray(quiet(x)), np.asarray(quiet(x)), atol=1e-6)
    # drop path alone is stochastic too
    only_drop_path = _model(2, drop_path_rate=0.5, classifier_dropout=0.0)
    only_drop_path.train()
    assert np.abs(np.asarray(only_drop_path(x)) - np.asarray(only_drop_path(x))).max() > 1e-3


def test_bfloat16_compute_close_to_float32():
    m32, m16 = _model(2), _model(2, dtype=jnp.bfloat16)
    m32.eval()
    m16.eval()
    x = jnp.asarray(_randn((2, *HW, 3)))
    y32, y16 = np.asarray(_forward(m32, x)[0]), _jit_forward(m16, x)[0]
    assert y16.dtype == jnp.float32 and m16.segformer.encoder.layer_norm[0].scale[...].dtype == jnp.float32
    assert np.isfinite(np.asarray(y16)).all()
    assert np.abs(np.asarray(y16) - y32).max() < 0.1 * (np.abs(y32).max() + 1)
