"""Grad-CAM, integrated gradients and attention rollout on brain_jax models: jitted, batched, NHWC.

Every function takes the model (any mode: it runs on an eval-mode copy), a batch of model inputs
(B, H, W, C) and, for the class-specific methods, one target class per image. The target is the class
logit (never the softmax); for a segmentation model it is the sum of the target class's logits over
the pixels predicted as that class (at the logits' resolution, region held fixed), so an image with no
such pixel gets an all-zero map.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brain_jax.saliency.taps import Layer, architecture, gradcam_layer, recorder, tapped, task, to_grid

METHODS = ("gradcam", "ig", "rollout")
CLASSIFICATION_ONLY = ("rollout",)  # reads the class token: no segmentation analogue
# Integral approximations, with the points and weights Captum's IntegratedGradients uses for them.
IG_QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle")
IG_STEPS = 50  # Captum's default step count
BLUR_FRACTION = 16  # blurred baseline: Gaussian sigma = the image's shorter side / 16
HEAD_FUSIONS = ("mean", "max", "min")


def supported_methods(model: nnx.Module) -> tuple[str, ...]:
    """The methods that apply to ``model``: Grad-CAM and integrated gradients for every model, attention
    rollout for ViT classifiers."""
    if architecture(model) == "vit":
        return METHODS
    return tuple(m for m in METHODS if m != "rollout")


def check_method(model: nnx.Module, method: str) -> None:
    """ValueError naming ``method`` when ``model`` does not support it, and what it does support."""
    name = f"{model.config.model_type} ({task(model)})"
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; expected one of {', '.join(METHODS)}")
    if task(model) == "segmentation" and method in CLASSIFICATION_ONLY:
        raise ValueError(f"saliency method {method!r} is classification-only; a {name} model supports "
                         f"{', '.join(supported_methods(model))}")
    if method not in supported_methods(model):
        raise ValueError(f"saliency method {method!r} needs a ViT; a {name} model supports "
                         f"{', '.join(supported_methods(model))}")


def _eval_copy(graphdef: Any, state: Any) -> nnx.Module:
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


def target_score(logits: jax.Array, targets: jax.Array, region: jax.Array | None = None) -> jax.Array:
    """Sum over the batch of each image's target score (examples do not interact, so the gradient of the
    sum holds each image's own gradient).

    Classification logits (B, K): the target class's logit. Segmentation logits (B, h, w, K): the target
    class's logits summed over ``region`` (default: the pixels whose argmax is the target class).
    """
    targets = targets.astype(jnp.int32)
    if logits.ndim == 2:
        return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()
    chosen = jnp.take_along_axis(logits, targets[:, None, None, None], axis=-1)[..., 0]
    if region is None:
        region = predicted_region(logits, targets)
    return jnp.sum(chosen * region)


def predicted_region(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """(B, h, w) float 0/1: pixels of segmentation ``logits`` predicted as each image's target class."""
    pred = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
    return (pred == targets.astype(pred.dtype)[:, None, None]).astype(logits.dtype)


def _split(model: nnx.Module, images: Any, targets: Any | None = None):
    graphdef, state = nnx.split(model)
    x = jnp.asarray(images, jnp.float32)
    if x.ndim != 4:
        raise ValueError(f"saliency: expected a batch of NHWC images (B, H, W, C), got shape {x.shape}")
    if targets is None:
        return graphdef, state, x
    t = jnp.asarray(targets, jnp.int32).reshape(-1)
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"saliency: {t.shape[0]} targets for {x.shape[0]} images; expected one class per image")
    k = model.config.num_labels
    bad = np.asarray(t)[(np.asarray(t) < 0) | (np.asarray(t) >= k)]
    if bad.size:
        raise ValueError(f"saliency: target class {int(bad[0])} is out of range for a model with {k} classes")
    return graphdef, state, x, t


# --------------------------------------------------------------------------- Grad-CAM


class GradCam(NamedTuple):
    """``raw``: the Grad-CAM map at the layer's resolution, before ReLU, normalisation or resizing,
    (B, h, w); ``logits``: the model's output; ``layer``: where it was read."""

    raw: jax.Array
    logits: jax.Array
    layer: Layer


def grad_cam(model: nnx.Module, images: Any, targets: Any, *, layer: int | None = None) -> GradCam:
    """Grad-CAM (Selvaraju et al. 2017) of each image for its target class at ``gradcam_layer(model, layer)``.

    With A the layer's activation (B, h, w, C) and y the target score: weights α_c = mean over (h, w)
    of ∂y/∂A_c, map = Σ_c α_c A_c (signed; the usual display applies ReLU).
    """
    where = gradcam_layer(model, layer)
    graphdef, state, x, t = _split(model, images, targets)
    raw, logits = _grad_cam(graphdef, state, x, t, where)
    return GradCam(raw, logits, where)


@functools.partial(jax.jit, static_argnames=("graphdef", "layer"))
def _grad_cam(graphdef: Any, state: Any, x: jax.Array, targets: jax.Array, layer: Layer):
    def run(delta):
        model = _eval_copy(graphdef, state)
        box: dict = {}
        with tapped(model, {layer.path: (layer.where, recorder(box, "a", delta))}):
            logits = model(x)
        return target_score(logits, targets), (box["a"], logits)

    shape = jax.eval_shape(lambda: run(None)[1][0])
    grads, (act, logits) = jax.grad(run, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
    act = to_grid(act, layer, x.shape[1:3]).astype(jnp.float32)
    grads = to_grid(grads, layer, x.shape[1:3]).astype(jnp.float32)
    weights = jnp.mean(grads, axis=(1, 2))
    raw = jnp.einsum("bhwc,bc->bhw", act, weights, precision=jax.lax.Precision.HIGHEST)
    return raw, logits


# --------------------------------------------------------------------------- integrated gradients


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of an integral over [0, 1]: Gauss-Legendre nodes, or left/right/midpoint Riemann
    sums with equal weights 1/steps (the points Captum uses for the same names)."""
    if method not in IG_QUADRATURES:
        raise ValueError(f"integrated gradients: unknown quadrature {method!r}; expected one of "
                         f"{', '.join(IG_QUADRATURES)}")
    if steps < 1 or (steps < 2 and method != "gausslegendre"):
        raise ValueError(f"integrated gradients: steps must be >= {1 if method == 'gausslegendre' else 2}, "
                         f"got {steps}")
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * w
    start = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(steps) + start) / steps, np.full(steps, 1.0 / steps)


def _chunk(steps: int, batch: int, max_images: int = 32) -> int:
    """Path points per vectorised evaluation: the largest divisor of ``steps`` keeping chunk·batch small."""
    limit = max(1, max_images // max(batch, 1))
    return max(d for d in range(1, min(steps, limit) + 1) if steps % d == 0)


def integrated_gradients(model: nnx.Module, images: Any, targets: Any, *, baseline: Any = 0.0,
                         steps: int = IG_STEPS, method: str = "gausslegendre",
                         chunk: int | None = None) -> jax.Array:
    """Integrated gradients (Sundararajan et al. 2017) of each image's target score, (B, H, W, C).

    attribution = (x − x′) ⊙ Σ_i w_i ∂y/∂x (x′ + α_i (x − x′)) with (α_i, w_i) = ``quadrature(method, steps)``;
    x′ = ``baseline``: a scalar, an array broadcastable to the images, or a function of the images
    (``blurred``); default zeros in the normalised input space, i.e. the dataset mean. ``chunk`` path points are
    evaluated per vectorised pass (default: keep ≤ 32 images per pass). Completeness: the attributions of an
    image sum to y(x) − y(x′) up to the quadrature error.
    """
    alphas, weights = quadrature(method, steps)
    graphdef, state, x, t = _split(model, images, targets)
    x0 = jnp.broadcast_to(jnp.asarray(baseline(x) if callable(baseline) else baseline, jnp.float32), x.shape)
    chunk = _chunk(steps, x.shape[0]) if chunk is None else int(chunk)
    if chunk < 1 or steps % chunk:
        raise ValueError(f"integrated gradients: chunk={chunk} must divide steps={steps}")
    a = jnp.asarray(alphas, jnp.float32).reshape(-1, chunk)
    w = jnp.asarray(weights, jnp.float32).reshape(-1, chunk)
    return _integrated_gradients(graphdef, state, x, t, x0, a, w)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _integrated_gradients(graphdef: Any, state: Any, x: jax.Array, targets: jax.Array, x0: jax.Array,
                          alphas: jax.Array, weights: jax.Array) -> jax.Array:
    model = _eval_copy(graphdef, state)
    out = model(x)
    region = predicted_region(out, targets) if out.ndim == 4 else None
    grad = jax.grad(lambda xp: target_score(model(xp), targets, region))

    def body(total, chunk):
        a, w = chunk
        g = jax.vmap(lambda ai: grad(x0 + ai * (x - x0)))(a)
        return total + jnp.tensordot(w, g, axes=1, precision=jax.lax.Precision.HIGHEST), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), (alphas, weights))
    return (x - x0) * total


def blur_sigma(size: Any) -> float:
    """Default sigma (pixels) of ``blurred``: the shorter side / ``BLUR_FRACTION`` (4 px at 64 px, 14 at 224)."""
    return min(int(size[0]), int(size[1])) / BLUR_FRACTION


def blurred(images: Any, sigma: float | None = None, *, truncate: float = 4.0) -> jax.Array:
    """(B, H, W, C) images, each channel Gaussian-blurred over H and W: the blurred-image baseline of
    integrated gradients (Fong & Vedaldi 2017; Sturmfels et al. 2020). A constant baseline credits pixels
    for being far from its value (the black background and dark ventricles against a mean-grey image); a
    blurred copy of the image keeps its coarse intensities, so the path only adds back detail finer than
    about sigma — with the default sigma (``blur_sigma``) a lesion-sized structure. Matches
    ``scipy.ndimage.gaussian_filter(images, (0, sigma, sigma, 0), mode="reflect", truncate=truncate)``."""
    x = jnp.asarray(images, jnp.float32)
    if x.ndim != 4:
        raise ValueError(f"blurred: images must be (B, H, W, C), got shape {tuple(x.shape)}")
    sigma = blur_sigma(x.shape[1:3]) if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"blurred: sigma must be > 0 pixels, got {sigma}")
    return _blurred(x, sigma, truncate)


@functools.partial(jax.jit, static_argnames=("sigma", "truncate"))
def _blurred(x: jax.Array, sigma: float, truncate: float) -> jax.Array:
    radius = int(truncate * sigma + 0.5)  # scipy's kernel half-width
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps / taps.sum(), jnp.float32)
    channels = x.shape[-1]
    for axis in (1, 2):  # separable: H, then W; "reflect" about the edge = numpy's "symmetric" padding
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        shape = [1, 1, 1, channels]
        shape[axis - 1] = 2 * radius + 1
        kernel = jnp.broadcast_to(taps.reshape([-1 if i == axis - 1 else 1 for i in range(4)]), shape)
        x = jax.lax.conv_general_dilated(jnp.pad(x, pad, mode="symmetric"), kernel, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
                                         precision=jax.lax.Precision.HIGHEST)
    return x


# --------------------------------------------------------------------------- attention rollout


def attention_rollout(model: nnx.Module, images: Any, *, head_fusion: str = "mean") -> jax.Array:
    """Attention rollout (Abnar & Zuidema 2020) of a ViT: (B, gh, gw), the class token's row of
    Π_l (½ A_l + ½ I) (last layer on the left, A_l the heads' attention fused by ``head_fusion``, rows
    renormalised), over the patch tokens. Class-agnostic: the same map for every class.
    """
    check_method(model, "rollout")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"attention rollout: head_fusion {head_fusion!r}; expected one of {', '.join(HEAD_FUSIONS)}")
    graphdef, state, x = _split(model, images)
    return _attention_rollout(graphdef, state, x, head_fusion)


def attention_probs(self_attention: nnx.Module, h: jax.Array) -> jax.Array:
    """(B, heads, N, N) softmax attention of a ViT self-attention module on its (LayerNorm-ed) input ``h``."""
    b, n, c = h.shape
    heads = self_attention.num_heads
    hd = c // heads
    q = self_attention.query(h).reshape(b, n, heads, hd)
    k = self_attention.key(h).reshape(b, n, heads, hd)
    scores = jnp.einsum("bnhd,bmhd->bhnm", q, k).astype(jnp.float32) * hd**-0.5
    return jax.nn.softmax(scores, axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "head_fusion"))
def _attention_rollout(graphdef: Any, state: Any, x: jax.Array, head_fusion: str) -> jax.Array:
    model = _eval_copy(graphdef, state)
    blocks = model.encoder.layer
    box: dict = {}
    taps = {f"encoder.layer.{i}.layernorm_before": ("output", recorder(box, str(i))) for i in range(len(blocks))}
    with tapped(model, taps):
        model(x)
    fuse = {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[head_fusion]
    n = box["0"].shape[1]
    eye = jnp.eye(n, dtype=jnp.float32)
    rollout = jnp.broadcast_to(eye, (x.shape[0], n, n))
    for i, block in enumerate(blocks):
        a = 0.5 * fuse(attention_probs(block.attention.attention, box[str(i)]), axis=1) + 0.5 * eye
        a = a / jnp.sum(a, axis=-1, keepdims=True)
        rollout = jnp.einsum("bij,bjk->bik", a, rollout, precision=jax.lax.Precision.HIGHEST)
    p = model.config.patch_size
    return rollout[:, 0, 1:].reshape(x.shape[0], x.shape[1] // p, x.shape[2] // p)


# --------------------------------------------------------------------------- forward


def logits(model: nnx.Module, images: Any) -> jax.Array:
    """The eval-mode model's output on ``images`` (jitted)."""
    graphdef, state, x = _split(model, images)
    return _forward(graphdef, state, x)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _forward(graphdef: Any, state: Any, x: jax.Array) -> jax.Array:
    return _eval_copy(graphdef, state)(x)
