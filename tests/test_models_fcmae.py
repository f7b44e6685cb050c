"""FCMAE (ConvNeXt V2 masked autoencoder): masks, the leak test, encoder = V2 when nothing is hidden, the
loss, and (torch) a reference written from the official facebookresearch/ConvNeXt-V2 files plus the
converter for its ``*_fcmae.pt`` layout."""
from __future__ import annotations

import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import brain_jax.models as models
from brain_jax.models import convnext as cx
from brain_jax.models import fcmae
from brain_jax.models.weights import abstract, assign, model_variables

SIZE = 96  # 3 x 3 patches of 32 px; ratio 0.6 keeps int(9 * 0.4) = 3
DEC = 24  # a small decoder width for the tests (official: 512)


def randomize(model: nnx.Module, seed: int) -> None:
    """Random values in every variable (init zeroes GRN and biases, which would hide mistakes)."""
    rng = np.random.default_rng(seed)
    for path, var in model_variables(model).items():
        shape = var.get_value().shape
        if path.endswith("kernel"):
            val = rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[:-1])))
        elif path.endswith("scale"):
            val = 1.0 + 0.3 * rng.standard_normal(shape)
        else:
            val = 0.5 * rng.standard_normal(shape)
        var.set_value(jnp.asarray(val, jnp.float32))


def small_fcmae(seed: int = 0, dtype=jnp.float32, **overrides) -> fcmae.FCMAE:
    cfg = fcmae.config_for("test", image_size=SIZE, decoder_embed_dim=DEC, **overrides)
    model = abstract(lambda: fcmae.FCMAE(cfg, dtype=dtype, rngs=nnx.Rngs(params=seed, dropout=seed + 1)))
    randomize(model, seed)
    return model


@jax.jit
def _masks(seed, step, idx):
    return fcmae.random_mask(fcmae.mask_keys(seed, step, idx), SIZE)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, x, mask):
    return nnx.merge(graphdef, state)(x, mask, output_hidden_states=True)


def forward(model: fcmae.FCMAE, x, mask):
    """One compiled program per architecture (weights are an argument, so models of a config share it)."""
    graphdef, state = nnx.split(model)
    return _forward(graphdef, state, jnp.asarray(x), jnp.asarray(mask))


def images(seed: int, batch: int = 2, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype(np.float32)


def visible_at(mask: np.ndarray, grid: int) -> np.ndarray:
    """(B, grid, grid) bool visible map of a (B, g, g) patch mask."""
    s = grid // mask.shape[1]
    return ~np.repeat(np.repeat(np.asarray(mask), s, 1), s, 2)


# --------------------------------------------------------------------------- masks


def test_masks_keep_count_vary_and_repeat():
    idx = jnp.arange(8)
    m = np.asarray(_masks(0, 5, idx))
    assert m.shape == (8, 3, 3) and m.dtype == bool
    assert (m.reshape(8, -1).sum(1) == 6).all()  # exactly 9 - int(9 * 0.4) hidden in every image
    assert len({r.tobytes() for r in m}) > 4  # examples differ
    assert not np.array_equal(m, np.asarray(_masks(0, 6, idx)))  # steps differ
    assert not np.array_equal(m, np.asarray(_masks(1, 5, idx)))  # seeds differ
    # the same (seed, step, global index) repeats, whatever batch or position the example is in
    again = np.asarray(_masks(0, 5, jnp.asarray([7, 3, 100])))
    np.testing.assert_array_equal(again[:2], m[[7, 3]])
    assert fcmae.check_mask_geometry(SIZE, 0.1) == 8  # int(9 * 0.9): one hidden patch is enough
    # the count follows the official int(L * (1 - ratio)) at another size and ratio
    big = fcmae.random_mask(fcmae.mask_keys(3, 0, jnp.arange(4)), (224, 160), ratio=0.75)
    assert big.shape == (4, 7, 5) and (np.asarray(big).reshape(4, -1).sum(1) == 35 - int(35 * 0.25)).all()


@pytest.mark.parametrize("kwargs,field", [
    (dict(image_size=SIZE, ratio=0.6, patch=16), "fcmae.patch_size"),
    (dict(image_size=100, ratio=0.6), "data.image_size"),
    (dict(image_size=32, ratio=0.5), "data.image_size"),  # one patch: cannot be both visible and hidden
    (dict(image_size=64, ratio=0.8), "fcmae.mask_ratio"),  # int(4 * 0.2) = 0 visible
    (dict(image_size=SIZE, ratio=0.0), "fcmae.mask_ratio"),  # hides nothing
    (dict(image_size=SIZE, ratio=1.0), "fcmae.mask_ratio"),
])
def test_bad_mask_geometry_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        fcmae.random_mask(fcmae.mask_keys(0, 0, jnp.arange(1)), **kwargs)
    cfg = dict(image_size=kwargs["image_size"], mask_ratio=kwargs["ratio"], patch_size=kwargs.get("patch", 32))
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        fcmae.config_for("atto", **cfg)


def test_model_refuses_bad_inputs():
    model = nnx.eval_shape(lambda: fcmae.create("test", image_size=SIZE, decoder_embed_dim=DEC))
    with pytest.raises(ValueError, match=r"data\.image_size"):
        model(jnp.zeros((1, 80, 96, 3)), jnp.zeros((1, 2, 3), bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        model(jnp.zeros((1, 96, 96, 3)), jnp.zeros((1, 2, 2), bool))
    with pytest.raises(ValueError, match="model.variant"):
        fcmae.config_for("xlarge")


# --------------------------------------------------------------------------- the encoder is ConvNeXt V2


def test_all_visible_encoder_equals_v2_encoder():
    model = small_fcmae(seed=1)
    clf = abstract(lambda: models.create("convnextv2", "test", 3))
    randomize(clf, 2)  # head and final LayerNorm random; the encoder comes from the FCMAE below
    assign(clf, fcmae.encoder_arrays(model), source="fcmae", fresh=[p for p in model_variables(clf)
                                                                    if p.startswith(("layernorm", "classifier"))])
    x = images(3, size=128)  # another size divisible by 32: 4 x 4 cells
    graphdef, state = nnx.split(clf)
    _, want = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, output_hidden_states=True))(state, x)
    _, aux = forward(model, x, np.zeros((2, 4, 4), bool))
    assert len(aux["hidden_states"]) == len(want) == 5
    for a, b in zip(aux["hidden_states"], want):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_encoder_paths_are_the_classifiers():
    f = nnx.eval_shape(lambda: fcmae.create("atto", image_size=224))
    c = nnx.eval_shape(lambda: models.create("convnextv2", "atto", 4))
    enc = {p for p in model_variables(f) if fcmae.is_encoder_path(p)}
    dec = {p.split(".")[0] for p in model_variables(f) if not fcmae.is_encoder_path(p)}
    head = {p for p in model_variables(c) if p.startswith(("layernorm", "classifier"))}
    assert enc == set(model_variables(c)) - head
    assert dec == set(fcmae.DECODER_PATHS)
    assert model_variables(f)["pred.kernel"].get_value().shape == (512, 32 * 32 * 3)
    for variant in ("femto", "huge"):  # every size of the table builds, at any multiple of 32
        g = nnx.eval_shape(lambda: fcmae.create(variant, image_size=160))
        assert g.config.hidden_sizes == cx.VARIANTS["convnextv2"][variant].hidden_sizes


# --------------------------------------------------------------------------- no leak from hidden pixels


def _visible_outputs(model, x, mask):
    pred, aux = forward(model, x, mask)
    outs = []
    for h in aux["hidden_states"]:
        vis = visible_at(mask, h.shape[1])
        outs.append(np.asarray(h)[vis])
    outs.append(np.asarray(aux["decoder_input"])[~np.asarray(mask)])
    return outs, aux


def test_hidden_pixels_do_not_leak():
    model = small_fcmae(seed=4)
    x = images(5)
    mask = np.asarray(_masks(0, 1, jnp.arange(2)))
    hidden_px = ~visible_at(mask, SIZE)
    noise = 50.0 * np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    x2 = np.where(hidden_px[..., None], noise, x)
    x3 = np.where(hidden_px[..., None], np.float32(np.nan), x)  # `where`, not a product: NaN cannot leak
    ref, aux = _visible_outputs(model, x, mask)
    for other in (x2, x3):
        got, _ = _visible_outputs(model, other, mask)
        for a, b in zip(got, ref):
            assert np.isfinite(a).all()
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    # hidden positions of the encoder's outputs are zero and the decoder sees the mask token there
    for h in aux["hidden_states"]:
        assert not np.asarray(h)[~visible_at(mask, h.shape[1])].any()
    dec = np.asarray(aux["decoder_input"])[np.asarray(mask)]
    np.testing.assert_array_equal(dec, np.broadcast_to(model.mask_token.get_value(), dec.shape))
    # not vacuous: changing one visible pixel does change visible outputs
    i, j = np.argwhere(~hidden_px[0])[0]
    x4 = x.copy()
    x4[0, i, j] += 5.0
    assert np.abs(_visible_outputs(model, x4, mask)[0][-1] - ref[-1]).max() > 1e-4


def test_leak_test_catches_an_unmasked_encoder(monkeypatch):
    """Not vacuous: with the encoder's masking switched off, hidden pixels do reach visible outputs."""
    model = small_fcmae(seed=4)
    x = images(5)
    mask = np.asarray(_masks(0, 1, jnp.arange(2)))
    x2 = np.where(~visible_at(mask, SIZE)[..., None], 50.0, x).astype(np.float32)
    monkeypatch.setattr(cx, "stage_visibility", lambda m, grid: jnp.ones((m.shape[0], *grid, 1), bool))
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, jnp.asarray(mask), output_hidden_states=True)[1])
    a, b = run(state, x)["hidden_states"][-1], run(state, x2)["hidden_states"][-1]
    vis = visible_at(mask, a.shape[1])
    assert np.abs(np.asarray(a)[vis] - np.asarray(b)[vis]).max() > 1e-3


# --------------------------------------------------------------------------- the loss


def test_loss_reads_hidden_patches_only():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    pred = rng.standard_normal((2, 3, 3, 32 * 32 * 3)).astype(np.float32)
    mask = np.asarray(_masks(0, 2, jnp.arange(2)))
    loss = fcmae.fcmae_loss(x, pred, mask)
    changed = np.where(mask[..., None], pred, np.float32(np.nan))
    assert float(fcmae.fcmae_loss(x, changed, mask)) == float(loss)
    pred2 = pred.copy()
    pred2[np.nonzero(mask)[0][0], np.nonzero(mask)[1][0], np.nonzero(mask)[2][0]] += 1.0
    assert float(fcmae.fcmae_loss(x, pred2, mask)) != float(loss)
    g = jax.grad(lambda p: fcmae.fcmae_loss(x, p, mask))(jnp.asarray(pred))
    assert not np.asarray(g)[~mask].any() and np.asarray(g)[mask].any()
    # numpy re-derivation of the official formula, unbiased per-patch variance
    t = x.reshape(2, 3, 32, 3, 32, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 9, -1).astype(np.float64)
    t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
    err = ((pred.reshape(2, 9, -1) - t) ** 2).mean(-1)
    m = mask.reshape(2, 9)
    np.testing.assert_allclose(float(loss), (err * m).sum() / m.sum(), rtol=1e-5)
    np.testing.assert_allclose(fcmae.per_image_loss(x, pred, mask), (err * m).sum(1) / m.sum(1), rtol=1e-5)
    # padded examples drop out
    only0 = fcmae.fcmae_loss(x, pred, mask, example_mask=np.array([True, False]))
    np.testing.assert_allclose(float(only0), (err[0] * m[0]).sum() / m[0].sum(), rtol=1e-5)
    # the patch order round-trips
    np.testing.assert_array_equal(fcmae.unpatchify(fcmae.patchify(x), (3, 3), 3), x)


def test_bfloat16_compute_close_to_float32():
    f32 = small_fcmae(seed=8)
    bf16 = small_fcmae(seed=8, dtype=jnp.bfloat16)
    assert all(v.get_value().dtype == jnp.float32 for v in model_variables(bf16).values())
    x, mask = images(9), np.asarray(_masks(0, 3, jnp.arange(2)))
    a, _ = forward(f32, x, mask)
    b, aux = forward(bf16, x, mask)
    assert b.dtype == jnp.float32 and aux["hidden_states"][-1].dtype == jnp.bfloat16
    a, b = np.asarray(a), np.asarray(b)
    assert np.isfinite(b).all() and 0 < np.abs(a - b).max() < 0.05 * np.abs(a).max() + 0.05


# --------------------------------------------------------------------------- torch reference (official files)
#
# Written from facebookresearch/ConvNeXt-V2: models/convnextv2_sparse.py (sparse encoder: dense stem, then
# Minkowski layers on the visible sites), models/utils.py (MinkowskiGRN: the norm over all sparse points of
# the batch; LayerNorm channels_first), models/convnextv2.py (dense Block, decoder), models/fcmae.py
# (forward_decoder, forward_loss). A sparse stride-1 conv on visible sites equals a dense conv of the
# zero-filled map read at those sites; the 2x2/2 downsampling windows never straddle a 32-px cell.
# Weights are in torch's dense layouts (what the official remap_checkpoint_keys produces).


def _ln(x, w, b):  # LayerNorm over the last axis, eps 1e-6 (official LayerNorm / MinkowskiLayerNorm)
    import torch

    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, 1e-6)


def _ref_sparse_block(W, pre, x, vis, grn_scope):
    """Official sparse Block on (N, C, H, W) ``x`` zero at hidden sites; returns the same layout."""
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    dw = F.conv2d(x, W[f"{pre}.dwconv.weight"], W[f"{pre}.dwconv.bias"], padding=3, groups=c)
    out = torch.zeros_like(x)
    groups = [torch.arange(x.shape[0])] if grn_scope == "batch" else [torch.tensor([n]) for n in range(x.shape[0])]
    for g in groups:  # sparse points of the batch (official) or of one image (ours)
        sel = vis[g]  # (n, H, W)
        f = dw[g].permute(0, 2, 3, 1)[sel]  # (points, C): the sparse tensor's features
        f = _ln(f, W[f"{pre}.norm.weight"], W[f"{pre}.norm.bias"])
        f = F.gelu(F.linear(f, W[f"{pre}.pwconv1.weight"], W[f"{pre}.pwconv1.bias"]))
        gx = torch.norm(f, p=2, dim=0, keepdim=True)  # MinkowskiGRN
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        f = W[f"{pre}.grn.gamma"] * (f * nx) + W[f"{pre}.grn.beta"] + f
        f = F.linear(f, W[f"{pre}.pwconv2.weight"], W[f"{pre}.pwconv2.bias"])
        res = x[g].permute(0, 2, 3, 1)[sel] + f
        dense = torch.zeros(len(g), x.shape[2], x.shape[3], c, dtype=x.dtype)
        dense[sel] = res
        out[g] = dense.permute(0, 3, 1, 2)
    return out


def reference_fcmae(W, x_nchw, mask, depths, grn_scope="image"):
    """(hidden states NHWC at every stage, pred (N, L, p*p*C), loss) of the official FCMAE, in torch."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        m = torch.from_numpy(np.array(mask, bool))  # (N, g, g) True = hidden
        up = lambda s: ~m.repeat_interleave(s, 1).repeat_interleave(s, 2)  # noqa: E731  visible at a scale
        x = F.conv2d(x_nchw, W["downsample_layers.0.0.weight"], W["downsample_layers.0.0.bias"], stride=4)
        x = _ln(x.permute(0, 2, 3, 1), W["downsample_layers.0.1.weight"], W["downsample_layers.0.1.bias"])
        x = x.permute(0, 3, 1, 2) * up(x.shape[2] // m.shape[1])[:, None].to(x.dtype)
        hidden = [x]
        for s, depth in enumerate(depths):
            if s > 0:
                vis_in = up(x.shape[2] // m.shape[1])[:, None].to(x.dtype)
                h = _ln(x.permute(0, 2, 3, 1), W[f"downsample_layers.{s}.0.weight"], W[f"downsample_layers.{s}.0.bias"])
                x = h.permute(0, 3, 1, 2) * vis_in
                x = F.conv2d(x, W[f"downsample_layers.{s}.1.weight"], W[f"downsample_layers.{s}.1.bias"], stride=2)
            vis = up(x.shape[2] // m.shape[1])
            x = x * vis[:, None].to(x.dtype)
            for b in range(depth):
                x = _ref_sparse_block(W, f"stages.{s}.{b}", x, vis, grn_scope)
            hidden.append(x)
        # forward_decoder
        y = F.conv2d(x, W["proj.weight"], W["proj.bias"])
        mk = m[:, None].to(y.dtype)
        y = y * (1.0 - mk) + W["mask_token"].repeat(y.shape[0], 1, y.shape[2], y.shape[3]) * mk
        b = 0
        while f"decoder.{b}.dwconv.weight" in W:  # dense Block (models/convnextv2.py)
            pre = f"decoder.{b}"
            h = F.conv2d(y, W[f"{pre}.dwconv.weight"], W[f"{pre}.dwconv.bias"], padding=3, groups=y.shape[1])
            h = _ln(h.permute(0, 2, 3, 1), W[f"{pre}.norm.weight"], W[f"{pre}.norm.bias"])
            h = F.gelu(F.linear(h, W[f"{pre}.pwconv1.weight"], W[f"{pre}.pwconv1.bias"]))
            gx = torch.norm(h, p=2, dim=(1, 2), keepdim=True)
            h = W[f"{pre}.grn.gamma"] * (h * (gx / (gx.mean(dim=-1, keepdim=True) + 1e-6))) + W[f"{pre}.grn.beta"] + h
            h = F.linear(h, W[f"{pre}.pwconv2.weight"], W[f"{pre}.pwconv2.bias"])
            y = y + h.permute(0, 3, 1, 2)
            b += 1
        pred = F.conv2d(y, W["pred.weight"], W["pred.bias"])
        # forward_loss (norm_pix_loss=True)
        n, c = pred.shape[:2]
        pred = torch.einsum("ncl->nlc", pred.reshape(n, c, -1))
        p, g = 32, m.shape[1]
        t = x_nchw.reshape(n, 3, g, p, g, p)
        t = torch.einsum("nchpwq->nhwpqc", t).reshape(n, g * g, p * p * 3)
        t = (t - t.mean(dim=-1, keepdim=True)) / (t.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        per_patch = ((pred - t) ** 2).mean(dim=-1)
        mf = m.reshape(n, -1).to(per_patch.dtype)
        loss = (per_patch * mf).sum() / mf.sum()
    return [h.permute(0, 2, 3, 1).numpy() for h in hidden], pred.numpy(), float(loss)


def dense_weights_from_ours(model: fcmae.FCMAE) -> dict:
    """Our parameters in the official dense (remapped) layout, transposed by hand."""
    import torch

    v = {p: np.asarray(var.get_value()) for p, var in model_variables(model).items()}
    conv = lambda a: a.transpose(3, 2, 0, 1)  # noqa: E731  HWIO -> OIHW (also (k,k,1,C) -> (C,1,k,k))
    W = {"downsample_layers.0.0.weight": conv(v["embeddings.patch_embeddings.kernel"]),
         "downsample_layers.0.0.bias": v["embeddings.patch_embeddings.bias"],
         "downsample_layers.0.1.weight": v["embeddings.layernorm.scale"],
         "downsample_layers.0.1.bias": v["embeddings.layernorm.bias"]}

    def block(ours, off):
        W[f"{off}.dwconv.weight"] = conv(v[f"{ours}.dwconv.kernel"])
        W[f"{off}.dwconv.bias"] = v[f"{ours}.dwconv.bias"]
        W[f"{off}.norm.weight"], W[f"{off}.norm.bias"] = v[f"{ours}.layernorm.scale"], v[f"{ours}.layernorm.bias"]
        for fc in ("pwconv1", "pwconv2"):
            W[f"{off}.{fc}.weight"], W[f"{off}.{fc}.bias"] = v[f"{ours}.{fc}.kernel"].T, v[f"{ours}.{fc}.bias"]
        W[f"{off}.grn.gamma"], W[f"{off}.grn.beta"] = v[f"{ours}.grn.weight"], v[f"{ours}.grn.bias"]

    for s, depth in enumerate(model.config.depths):
        if s > 0:
            d, o = f"encoder.stages.{s}.downsampling_layer", f"downsample_layers.{s}"
            W[f"{o}.0.weight"], W[f"{o}.0.bias"] = v[f"{d}.0.scale"], v[f"{d}.0.bias"]
            W[f"{o}.1.weight"], W[f"{o}.1.bias"] = conv(v[f"{d}.1.kernel"]), v[f"{d}.1.bias"]
        for b in range(depth):
            block(f"encoder.stages.{s}.layers.{b}", f"stages.{s}.{b}")
    W["proj.weight"], W["proj.bias"] = v["proj.kernel"].T[:, :, None, None], v["proj.bias"]
    W["mask_token"] = v["mask_token"].reshape(1, -1, 1, 1)
    for b in range(model.config.decoder_depth):
        block(f"decoder.{b}", f"decoder.{b}")
    W["pred.weight"], W["pred.bias"] = v["pred.kernel"].T[:, :, None, None], v["pred.bias"]
    return {k: torch.from_numpy(np.array(a, np.float32)) for k, a in W.items()}


def _compare(model, W, x, mask, grn_scope="image", atol=1e-5, run=None):
    import torch

    want_hidden, want_pred, want_loss = reference_fcmae(W, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), mask,
                                                        model.config.depths, grn_scope)
    if run is None:
        pred, aux = forward(model, x, mask)
    else:
        pred, aux = run(nnx.state(model), jnp.asarray(x), jnp.asarray(mask))
    for a, b in zip(aux["hidden_states"], want_hidden):
        vis = visible_at(mask, a.shape[1])
        np.testing.assert_allclose(np.asarray(a)[vis], b[vis], atol=atol, rtol=0)
    b = x.shape[0]
    np.testing.assert_allclose(np.asarray(pred).reshape(b, -1, pred.shape[-1]), want_pred, atol=atol, rtol=0)
    np.testing.assert_allclose(float(model.loss(x, pred, mask)), want_loss, rtol=1e-5)
    return want_hidden


@pytest.mark.torch
def test_batch_of_one_matches_official_sparse_reference():
    model = small_fcmae(seed=10)
    W = dense_weights_from_ours(model)
    x = images(11, batch=1)
    mask = np.asarray(_masks(2, 0, jnp.arange(1)))
    _compare(model, W, x, mask)
    # not vacuous: a GRN whose norm also ran over hidden positions fails the comparison
    original = cx.GRN.__call__
    try:
        cx.GRN.__call__ = lambda self, h, visible=None: original(self, h)
        graphdef, state = nnx.split(model)
        with pytest.raises(AssertionError):
            _compare(model, W, x, mask, run=jax.jit(lambda s, x, m: nnx.merge(graphdef, s)(
                x, m, output_hidden_states=True)))
    finally:
        cx.GRN.__call__ = original
    # batches: ours is the per-image GRN; the official batch-wide MinkowskiGRN differs once images are 2
    x2, mask2 = images(12), np.asarray(_masks(2, 1, jnp.arange(2)))
    _compare(model, W, x2, mask2, grn_scope="image")
    import torch

    batch_hidden, _, _ = reference_fcmae(W, torch.from_numpy(x2.transpose(0, 3, 1, 2).copy()), mask2,
                                         model.config.depths, "batch")
    _, aux = forward(model, x2, mask2)
    last = np.asarray(aux["hidden_states"][-1])
    vis = visible_at(mask2, last.shape[1])
    assert np.abs(last[vis] - batch_hidden[-1][vis]).max() > 1e-3


# --------------------------------------------------------------------------- the official checkpoint layout


def official_state_dict(cfg: fcmae.FCMAEConfig, seed: int) -> dict:
    """A synthetic ``*_fcmae.pt`` state dict in the official layout (random, hence asymmetric, kernels)."""
    import torch

    rng = np.random.default_rng(seed)
    t = lambda *s: torch.from_numpy((0.4 * rng.standard_normal(s)).astype(np.float32))  # noqa: E731
    one = lambda *s: torch.from_numpy((1.0 + 0.3 * rng.standard_normal(s)).astype(np.float32))  # noqa: E731
    dims, c = cfg.hidden_sizes, cfg.num_channels
    sd = {"encoder.downsample_layers.0.0.weight": t(dims[0], c, 4, 4), "encoder.downsample_layers.0.0.bias": t(dims[0]),
          "encoder.downsample_layers.0.1.weight": one(dims[0]), "encoder.downsample_layers.0.1.bias": t(dims[0])}
    for s, (dim, depth) in enumerate(zip(dims, cfg.depths)):
        if s > 0:
            pre = f"encoder.downsample_layers.{s}"
            sd.update({f"{pre}.0.ln.weight": one(dims[s - 1]), f"{pre}.0.ln.bias": t(dims[s - 1]),
                       f"{pre}.1.kernel": t(4, dims[s - 1], dim) / math.sqrt(dims[s - 1]), f"{pre}.1.bias": t(1, dim)})
        for b in range(depth):
            pre = f"encoder.stages.{s}.{b}"
            sd.update({f"{pre}.dwconv.kernel": t(49, dim) / 3, f"{pre}.dwconv.bias": t(1, dim),
                       f"{pre}.norm.ln.weight": one(dim), f"{pre}.norm.ln.bias": t(dim),
                       f"{pre}.pwconv1.linear.weight": t(4 * dim, dim) / math.sqrt(dim),
                       f"{pre}.pwconv1.linear.bias": t(4 * dim),
                       f"{pre}.grn.gamma": t(1, 4 * dim), f"{pre}.grn.beta": t(1, 4 * dim),
                       f"{pre}.pwconv2.linear.weight": t(dim, 4 * dim) / math.sqrt(4 * dim),
                       f"{pre}.pwconv2.linear.bias": t(dim)})
    d = cfg.decoder_embed_dim
    sd.update({"proj.weight": t(d, dims[-1], 1, 1) / math.sqrt(dims[-1]), "proj.bias": t(d),
               "mask_token": t(1, d, 1, 1),
               "decoder.0.dwconv.weight": t(d, 1, 7, 7) / 3, "decoder.0.dwconv.bias": t(d),
               "decoder.0.norm.weight": one(d), "decoder.0.norm.bias": t(d),
               "decoder.0.pwconv1.weight": t(4 * d, d) / math.sqrt(d), "decoder.0.pwconv1.bias": t(4 * d),
               "decoder.0.grn.gamma": t(1, 1, 1, 4 * d), "decoder.0.grn.beta": t(1, 1, 1, 4 * d),
               "decoder.0.pwconv2.weight": t(d, 4 * d) / math.sqrt(4 * d), "decoder.0.pwconv2.bias": t(d),
               "pred.weight": t(32 * 32 * c, d, 1, 1) / math.sqrt(d), "pred.bias": t(32 * 32 * c)})
    return sd


def dense_weights_by_hand(sd: dict) -> dict:
    """The official state dict in dense layouts, every Minkowski kernel placed tap by tap: entry w*k + h of
    a Minkowski kernel is the tap at row h, column w (the order official remap_checkpoint_keys undoes)."""
    import torch

    W = {}
    for key, v in sd.items():
        k = key.removeprefix("encoder.").replace(".ln.", ".").replace(".linear.", ".")
        a = v.numpy()
        if key.endswith(".1.kernel"):  # Minkowski conv (k*k, in, out) -> (out, in, k, k)
            ks = math.isqrt(a.shape[0])
            dense = np.zeros((a.shape[2], a.shape[1], ks, ks), np.float32)
            for h in range(ks):
                for w in range(ks):
                    dense[:, :, h, w] = a[w * ks + h].T
            W[k.replace("kernel", "weight")] = dense
        elif key.endswith("dwconv.kernel"):  # Minkowski depthwise (k*k, C) -> (C, 1, k, k)
            ks = math.isqrt(a.shape[0])
            dense = np.zeros((a.shape[1], 1, ks, ks), np.float32)
            for h in range(ks):
                for w in range(ks):
                    dense[:, 0, h, w] = a[w * ks + h]
            W[k.replace("kernel", "weight")] = dense
        elif key.startswith("encoder.") and (k.endswith("bias") or ".grn." in k):
            W[k] = a.reshape(-1)
        else:
            W[k] = a
    return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in W.items()}


@pytest.mark.torch
def test_official_checkpoint_converts(tmp_path):
    import torch

    from brain_jax.convert.fcmae import from_official, to_official

    cfg = fcmae.config_for("test", image_size=SIZE, decoder_embed_dim=DEC)
    sd = official_state_dict(cfg, 13)
    path = tmp_path / "convnextv2_test_fcmae.pt"
    args = argparse.Namespace(model="convnextv2_test", mask_ratio=0.6, norm_pix_loss=True, input_size=224)
    torch.save({"model": sd, "args": args, "epoch": 799}, path)
    model = from_official(path, image_size=SIZE)
    assert model.config == cfg
    back = to_official(model)
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
    x, mask = images(14, batch=1), np.asarray(_masks(4, 0, jnp.arange(1)))
    _compare(model, dense_weights_by_hand(sd), x, mask)


@pytest.mark.torch
def test_official_checkpoint_errors(tmp_path):
    import collections

    import torch

    from brain_jax.convert.core import ConversionError
    from brain_jax.convert.fcmae import from_official

    cfg = fcmae.config_for("test", image_size=SIZE, decoder_embed_dim=DEC)
    sd = official_state_dict(cfg, 15)

    def save(obj, name):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    missing = dict(sd)
    del missing["encoder.stages.2.1.grn.gamma"]
    with pytest.raises(ConversionError, match=r"missing encoder\.stages\.2\.1\.grn\.gamma"):
        from_official(save({"model": missing}, "missing.pt"), image_size=SIZE)
    extra = dict(sd, **{"encoder.head.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match=r"unused encoder\.head\.weight"):
        from_official(save(extra, "extra.pt"), image_size=SIZE)  # a bare state dict is read too
    wrong = dict(sd, **{"encoder.stages.0.0.dwconv.kernel": torch.zeros(25, 8)})
    with pytest.raises(ConversionError, match=r"encoder\.stages\.0\.0\.dwconv\.kernel"):
        from_official(save(wrong, "wrong.pt"), image_size=SIZE)
    with pytest.raises(ConversionError, match=r"missing encoder\.downsample_layers\.0\.0\.weight"):
        from_official(save({"model": {"proj.weight": torch.zeros(2, 2, 1, 1)}}, "other.pt"))
    # anything outside the allow-list is refused by the weights-only unpickler, not executed
    evil = save({"model": sd, "args": collections.Counter(a=1), "hook": PickledThing()}, "evil.pt")
    with pytest.raises(ConversionError, match="weights_only"):
        from_official(evil, image_size=SIZE)
    with pytest.raises(ConversionError, match=r"fcmae\.mask_ratio"):
        from_official(save({"model": sd}, "ok.pt"), image_size=SIZE, mask_ratio=0.95)


class PickledThing:
    """A class no allow-list names."""
