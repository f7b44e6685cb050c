"""Saliency against the PyTorch twin: the same converted weights and input in HF transformers.

- Grad-CAM: a hook-based reference written from the definition (pytorch-grad-cam does not install
  beside torch 2.13: it needs torchvision, whose PyPI wheels need another torch). A forward hook (or
  pre-hook for ViT) keeps the target activation A and its gradient ∂y/∂A (``retain_grad``: the
  gradient through every use of the tensor); map = Σ_c mean_hw(∂y/∂A_c)·A_c, compared raw (before
  ReLU, normalisation and resizing) at the layer's resolution.
- Integrated gradients: Captum's ``IntegratedGradients`` at the same baseline, quadrature and steps.
- Attention rollout: numpy on HF's ``output_attentions`` (eager attention).

Tiny randomised HF models (every tensor random: HF's init zeroes biases and GRN, which would hide bugs).
Our depthwise convolutions use the grouped form here (the same numbers as the CPU default, faster to
compile under autodiff).
"""
from __future__ import annotations

import numpy as np
import pytest

from brain_jax import saliency
from brain_jax.convert import from_hf

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def _grouped_depthwise(monkeypatch):
    monkeypatch.setenv("BRAIN_JAX_DEPTHWISE", "grouped")


def _convert(hf, tmp_path, name: str):
    out = tmp_path / name
    hf.save_pretrained(out)
    return from_hf(out)


def _nchw(x_nhwc: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))


def _hf_score(logits, targets: np.ndarray):
    """The target score in torch: the class logit, or for (B, K, h, w) segmentation logits the target
    class's logits summed over the pixels predicted as that class."""
    import torch

    t = torch.from_numpy(targets).long()
    if logits.ndim == 2:
        return logits.gather(1, t[:, None]).sum()
    chosen = logits.gather(1, t[:, None, None, None].expand(-1, 1, *logits.shape[2:]))[:, 0]
    region = (logits.argmax(dim=1) == t[:, None, None]).to(logits.dtype).detach()
    return (chosen * region).sum()


def _hf_grad_cam(hf, x_nhwc: np.ndarray, targets: np.ndarray, layer: saliency.Layer, grid: tuple[int, int]):
    """Grad-CAM on the HF model from its definition, with hooks on ``layer.hf_module``."""
    import torch

    store = {}

    def keep(t):
        t.retain_grad()
        store["a"] = t

    module = hf.get_submodule(layer.hf_module)
    if layer.hf_where == "input":
        handle = module.register_forward_pre_hook(lambda m, args: keep(args[0]))
    else:
        handle = module.register_forward_hook(lambda m, args, out: keep(out[0] if isinstance(out, tuple) else out))
    try:
        hf.zero_grad()
        _hf_score(hf(_nchw(x_nhwc)).logits, targets).backward()
    finally:
        handle.remove()
    a, g = store["a"].detach(), store["a"].grad
    if a.ndim == 3:  # (B, N, C) tokens -> (B, C, h, w), non-patch tokens dropped
        a, g = (t[:, layer.class_tokens:].transpose(1, 2).reshape(t.shape[0], -1, *grid) for t in (a, g))
    weights = g.mean(dim=(2, 3))
    return torch.einsum("bchw,bc->bhw", a.double(), weights.double()).numpy()


def _check_grad_cam(hf, ours, x, targets, layer_index, grid):
    got = saliency.grad_cam(ours, x, targets, layer=layer_index)
    want = _hf_grad_cam(hf, x, targets, got.layer, grid)
    raw = np.asarray(got.raw)
    assert raw.shape == want.shape == (len(x), *grid)
    scale = np.abs(want).max()
    assert scale > 1e-3  # a map of zeros would match anything
    np.testing.assert_allclose(raw, want, atol=2e-4 * scale, rtol=0)
    return raw


def _rng_images(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- Grad-CAM


@pytest.mark.parametrize("model_type", ["convnextv2", "convnext"])
def test_grad_cam_matches_hf_convnext(tmp_path, model_type):
    from tests.fixtures.make_golden import hf_model

    hf = hf_model(model_type, seed=3, hidden_sizes=[8, 12, 16, 24], depths=[1, 1, 2, 1], num_labels=4)
    ours = _convert(hf, tmp_path, model_type)
    x = _rng_images((3, 64, 64, 3), 1)
    targets = np.array([0, 3, 1])
    _check_grad_cam(hf, ours, x, targets, None, (2, 2))  # default: the last stage (64 px -> 2x2)
    if model_type == "convnextv2":
        _check_grad_cam(hf, ours, x, targets, 1, (8, 8))  # an earlier stage on request


def test_grad_cam_matches_hf_swin(tmp_path):
    from tests.fixtures.make_golden import SWIN_GOLDEN, hf_swin

    hf = hf_swin(seed=5, **SWIN_GOLDEN)
    ours = _convert(hf, tmp_path, "swin")
    # 48 px, patch 4: 12x12 tokens (window 3, shifted), merged to the final LayerNorm's 6x6 grid
    _check_grad_cam(hf, ours, _rng_images((2, 48, 48, 3), 2), np.array([2, 0]), None, (6, 6))


def test_grad_cam_matches_hf_vit(tmp_path):
    from tests.fixtures.make_golden import VIT_GOLDEN, hf_vit

    hf = hf_vit(seed=6, **VIT_GOLDEN)
    ours = _convert(hf, tmp_path, "vit")
    raw = _check_grad_cam(hf, ours, _rng_images((2, 32, 32, 3), 3), np.array([1, 2]), None, (4, 4))
    # the last block's input, not its output: at the output only the class token would get a gradient
    assert np.abs(raw).max() > 0


@pytest.mark.parametrize("arch", ["seg", "cls"])
def test_grad_cam_matches_hf_segformer(tmp_path, arch):
    from tests.fixtures.make_golden import hf_segformer

    hf = hf_segformer(arch, seed=7, num_labels=2 if arch == "seg" else 3)
    ours = _convert(hf, tmp_path, f"segformer_{arch}")
    x = _rng_images((2, 64, 64, 3), 4)
    targets = np.array([1, 1]) if arch == "seg" else np.array([2, 0])
    _check_grad_cam(hf, ours, x, targets, None, (2, 2))
    if arch == "seg":
        _check_grad_cam(hf, ours, x, targets, 1, (8, 8))


# --------------------------------------------------------------------------- integrated gradients


def _captum_ig(forward, x_nhwc, targets, *, steps, method):
    import torch
    from captum.attr import IntegratedGradients

    px = _nchw(x_nhwc)
    target = None if targets is None else torch.from_numpy(targets).long()
    attr = IntegratedGradients(forward).attribute(px, baselines=torch.zeros_like(px), target=target,
                                                  n_steps=steps, method=method)
    return attr.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
@pytest.mark.parametrize("steps", [2, 7, 50])
def test_quadrature_points_are_captums(method, steps):
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    a, w = saliency.quadrature(method, steps)
    np.testing.assert_allclose(a, alphas(steps), atol=1e-7)
    np.testing.assert_allclose(w, step_sizes(steps), atol=1e-12)


def test_integrated_gradients_match_captum_convnextv2(tmp_path):
    method, steps = "gausslegendre", 12
    from tests.fixtures.make_golden import hf_model

    hf = hf_model("convnextv2", seed=8, hidden_sizes=[8, 12, 16, 24], depths=[1, 1, 2, 1], num_labels=4)
    ours = _convert(hf, tmp_path, "cnv2")
    x = _rng_images((2, 32, 32, 3), 5)
    targets = np.array([3, 1])
    got = np.asarray(saliency.integrated_gradients(ours, x, targets, steps=steps, method=method))
    want = _captum_ig(lambda px: hf(px).logits, x, targets, steps=steps, method=method)
    scale = np.abs(want).max()
    assert scale > 1e-3
    np.testing.assert_allclose(got, want, atol=2e-4 * scale, rtol=0)


def test_integrated_gradients_match_captum_segformer_segmentation(tmp_path):
    import torch

    from tests.fixtures.make_golden import hf_segformer

    hf = hf_segformer("seg", seed=11, num_labels=2)
    ours = _convert(hf, tmp_path, "segformer")
    x = _rng_images((2, 64, 64, 3), 6)
    targets = np.array([1, 1])
    with torch.no_grad():  # the region is the prediction at the image itself, held fixed along the path
        region = (hf(_nchw(x)).logits.argmax(dim=1) == 1).float()
    assert 0 < float(region.mean(dim=(1, 2)).min()) and float(region.mean(dim=(1, 2)).max()) < 1

    def forward(px):  # Captum stacks the path points along the batch: point-major, images in order
        return (hf(px).logits[:, 1] * region.repeat(len(px) // len(region), 1, 1)).sum(dim=(1, 2))

    got = np.asarray(saliency.integrated_gradients(ours, x, targets, steps=8, method="riemann_right"))
    want = _captum_ig(forward, x, None, steps=8, method="riemann_right")
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=5e-4 * scale, rtol=0)


# --------------------------------------------------------------------------- attention rollout


def _numpy_rollout(attentions, head_fusion: str) -> np.ndarray:
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion]
    out = None
    for att in attentions:
        a = fuse(att.astype(np.float64), axis=1)
        a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        out = a if out is None else a @ out
    return out[:, 0, 1:]


@pytest.mark.parametrize("head_fusion", ["mean", "max"])
def test_attention_rollout_matches_numpy_on_hf_attentions(tmp_path, head_fusion):
    import torch

    from tests.fixtures.make_golden import VIT_GOLDEN, hf_vit

    hf = hf_vit(seed=10, **{**VIT_GOLDEN, "num_hidden_layers": 3})
    hf.config._attn_implementation = "eager"  # attention probabilities are returned by eager attention only
    ours = _convert(hf, tmp_path, "vit")
    x = _rng_images((2, 32, 32, 3), 7)
    with torch.no_grad():
        attentions = [a.numpy() for a in hf(_nchw(x), output_attentions=True).attentions]
    assert len(attentions) == 3 and attentions[0].shape == (2, 2, 17, 17)
    want = _numpy_rollout(attentions, head_fusion).reshape(2, 4, 4)
    got = np.asarray(saliency.attention_rollout(ours, x, head_fusion=head_fusion))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.ptp(want) > 1e-3  # a flat map would hide a wrong token order
