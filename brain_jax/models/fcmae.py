"""FCMAE, ConvNeXt V2's fully convolutional masked autoencoder, in Flax NNX (NHWC).

Written from the official facebookresearch/ConvNeXt-V2 sources: ``models/fcmae.py`` (the masked
autoencoder, ``gen_random_mask``, ``forward_decoder``, ``forward_loss``), ``models/convnextv2_sparse.py``
(the sparse encoder), ``models/utils.py`` (``MinkowskiGRN``), ``main_pretrain.py`` (defaults: ratio 0.6,
decoder 1 block of width 512, ``norm_pix_loss`` on) and ``TRAINING.md`` (the dense masked convolution the
paper's JAX/TPU runs used instead of sparse convolution).

The encoder *is* brain-jax's ConvNeXt V2 (``convnext.ConvNeXtEmbeddings`` / ``ConvNeXtEncoder`` run by
``convnext.encode`` with a mask), under the same attribute paths as the classifier: ``embeddings.*`` and
``encoder.*`` here are exactly the classifier's, so fine-tuning copies them as they are and starts only
``layernorm`` and ``classifier`` fresh (:data:`DECODER_PATHS` are dropped).

GRN over visible positions: each image's GRN norm runs over *its own* visible positions (the per-image
form of the dense JAX code in TRAINING.md, and of the classifier's GRN, in transformers' form: no epsilon
inside the square root). The official sparse ``MinkowskiGRN`` instead takes the norm over the visible
points of the *whole batch* (its features are one (points, C) matrix; official issue #86, PR #85, open),
so a batch's images influence each other there. Both agree for a batch of one image, which the tests
check against a PyTorch reference written from the official files.

Masks are drawn in the train step from keys folded from (seed, :data:`MASK_TAG`, step, global example
index) (:func:`mask_keys`, :func:`random_mask`), never from a model RNG stream, so the models' init is
untouched and a resumed run draws the same masks.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from brain_jax.models import common, convnext
from brain_jax.models.common import linear

MASK_PATCH = convnext.MASK_PATCH  # 32 px: the encoder's total stride, so a downsampling window never straddles cells
MASK_TAG = 0x6D61736B  # "mask": separates mask keys from any other use of the run seed
# top-level attributes of FCMAE that fine-tuning drops (everything else is the ConvNeXt V2 encoder)
DECODER_PATHS = ("proj", "mask_token", "decoder", "pred")
ENCODER_PATHS = ("embeddings", "encoder")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FCMAEConfig:
    """FCMAE hyper-parameters; encoder sizes as ``ConvNeXtConfig`` (official names in comments)."""

    model_type: ClassVar[str] = "fcmae"  # a workdir's model.json names the architecture by it (not a field)
    hidden_sizes: tuple[int, ...] = (96, 192, 384, 768)  # dims
    depths: tuple[int, ...] = (3, 3, 9, 3)
    num_channels: int = 3  # in_chans
    image_size: int = 224  # img_size: input height = width the masks are drawn for
    patch_size: int = MASK_PATCH  # the mask cell; must be 32
    mask_ratio: float = 0.6
    decoder_embed_dim: int = 512
    decoder_depth: int = 1
    norm_pix_loss: bool = True  # main_pretrain.py sets it on by default
    drop_path_rate: float = 0.0  # the official FCMAE builds its encoder without drop path
    depthwise_impl: str = "auto"

    def __post_init__(self) -> None:
        check_mask_geometry(self.image_size, self.mask_ratio, self.patch_size)
        if len(self.depths) != 4 or len(self.hidden_sizes) != 4:
            raise ValueError(f"model.depths / model.hidden_sizes: FCMAE needs the 4-stage ConvNeXt V2 "
                             f"(total stride 32), got depths {self.depths}, hidden_sizes {self.hidden_sizes}")
        for name in ("num_channels", "decoder_embed_dim", "decoder_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"fcmae.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def encoder_config(self) -> convnext.ConvNeXtConfig:
        """The ConvNeXt V2 classifier config whose encoder this is (``num_labels`` is a placeholder)."""
        return convnext.ConvNeXtConfig(model_type="convnextv2", hidden_sizes=self.hidden_sizes,
                                       depths=self.depths, num_channels=self.num_channels,
                                       drop_path_rate=self.drop_path_rate, image_size=self.image_size,
                                       depthwise_impl=self.depthwise_impl)


def check_mask_geometry(image_size: int | Sequence[int], ratio: float, patch: int = MASK_PATCH) -> int:
    """The number of visible patches per image; ValueError naming the config field when the patch is not
    32, the image size is not a multiple of it, or the ratio leaves no visible or no hidden patch."""
    if patch != MASK_PATCH:
        raise ValueError(f"fcmae.patch_size must be {MASK_PATCH} (the ConvNeXt V2 encoder's total stride), "
                         f"got {patch}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(s < patch or s % patch for s in size):
        raise ValueError(f"data.image_size must be a positive multiple of {patch} for FCMAE, got {image_size}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"fcmae.mask_ratio must be in [0, 1), got {ratio}")
    n = (size[0] // patch) * (size[1] // patch)
    if n < 2:
        raise ValueError(f"data.image_size {image_size} gives a single {patch}-px patch: FCMAE needs at least "
                         "one visible and one hidden patch (use 64 or more)")
    keep = int(n * (1.0 - ratio))  # official gen_random_mask: len_keep = int(L * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"fcmae.mask_ratio {ratio} hides all {n} patches of a {image_size} image; "
                         "lower it so that at least one patch stays visible")
    if keep >= n:
        raise ValueError(f"fcmae.mask_ratio {ratio} hides none of the {n} patches of a {image_size} image; "
                         "raise it so that at least one patch is hidden")
    return keep


# --------------------------------------------------------------------------- masks


def mask_keys(seed: int | jax.Array, step: int | jax.Array, global_indices: jax.Array) -> jax.Array:
    """One typed PRNG key per example: seed, :data:`MASK_TAG`, step and the example's global index folded
    in turn. Pure and jittable (traced ``step`` / indices are fine): the same (seed, step, example) always
    draws the same mask, on any number of devices or processes."""
    base = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), MASK_TAG), step)
    idx = jnp.asarray(global_indices, jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)


def random_mask(keys: jax.Array, image_size: int | Sequence[int], ratio: float = 0.6,
                patch: int = MASK_PATCH) -> jax.Array:
    """(B, H/32, W/32) bool, True = hidden (the official 1 = remove), one mask per key of ``keys`` (B,).

    Official ``gen_random_mask``: rank i.i.d. noise per image and hide all but the ``int(L·(1-ratio))``
    lowest, so every image keeps exactly that many patches (uniform noise here: any continuous noise gives
    the same uniform choice of subset).
    """
    keep = check_mask_geometry(image_size, ratio, patch)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    gh, gw = size[0] // patch, size[1] // patch

    def one(key: jax.Array) -> jax.Array:
        noise = jax.random.uniform(key, (gh * gw,))
        rank = jnp.argsort(jnp.argsort(noise))  # rank of each patch's noise among the image's patches
        return (rank >= keep).reshape(gh, gw)

    return jax.vmap(one)(keys)


# --------------------------------------------------------------------------- patches and the loss


def patchify(images: jax.Array, patch: int = MASK_PATCH) -> jax.Array:
    """(B, H, W, C) -> (B, L, p·p·C), patches in row-major order, each flattened as (row, column, channel):
    the official ``patchify`` order ('nchpwq->nhwpqc'), which the prediction head's channels follow."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: jax.Array, grid: tuple[int, int], channels: int) -> jax.Array:
    """Inverse of :func:`patchify`: (B, gh·gw, p·p·C) or (B, gh, gw, p·p·C) -> (B, gh·p, gw·p, C)."""
    b = patches.shape[0]
    p = math.isqrt(patches.shape[-1] // channels)
    x = patches.reshape(b, grid[0], grid[1], p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid[0] * p, grid[1] * p, channels)


def patch_targets(images: jax.Array, norm_pix_loss: bool = True, patch: int = MASK_PATCH) -> jax.Array:
    """The regression targets (B, L, p·p·C) in float32: pixels, or per-patch normalised pixels.

    ``norm_pix_loss`` follows the official ``forward_loss`` exactly, including torch's *unbiased* variance
    (``Tensor.var`` divides by n - 1): (x - mean) / sqrt(var_unbiased + 1e-6).
    """
    target = patchify(images.astype(jnp.float32), patch)
    if norm_pix_loss:
        mean = jnp.mean(target, axis=-1, keepdims=True)
        var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / jnp.sqrt(var + 1e-6)
    return target


def patch_errors(images: jax.Array, pred: jax.Array, norm_pix_loss: bool = True) -> jax.Array:
    """(B, L) mean squared error of each patch (the official per-patch ``loss.mean(dim=-1)``), float32."""
    b = pred.shape[0]
    p = pred.reshape(b, -1, pred.shape[-1]).astype(jnp.float32)
    return jnp.mean(jnp.square(p - patch_targets(images, norm_pix_loss)), axis=-1)


def fcmae_loss(images: jax.Array, pred: jax.Array, mask: jax.Array, *, norm_pix_loss: bool = True,
               example_mask: jax.Array | None = None) -> jax.Array:
    """The official ``forward_loss``: mean patch error over the hidden patches of the batch (a scalar).

    ``images`` (B, H, W, C), ``pred`` (B, H/32, W/32, 32·32·C) from :class:`FCMAE`, ``mask`` (B, H/32, W/32)
    True = hidden. Visible patches are selected out with ``where``: their predictions cannot change the
    loss, even if not finite. ``example_mask`` (B,) bool drops padded examples (absent in the official code).
    """
    hidden = mask.reshape(mask.shape[0], -1).astype(bool)
    if example_mask is not None:
        hidden = hidden & example_mask.astype(bool)[:, None]
    err = patch_errors(images, pred, norm_pix_loss)
    total = jnp.sum(jnp.where(hidden, err, 0.0))
    return total / jnp.maximum(jnp.sum(hidden), 1).astype(jnp.float32)


def per_image_loss(images: jax.Array, pred: jax.Array, mask: jax.Array, *, norm_pix_loss: bool = True) -> jax.Array:
    """(B,) mean error over each image's hidden patches (for reports; equal counts make their mean the loss)."""
    hidden = mask.reshape(mask.shape[0], -1).astype(bool)
    err = patch_errors(images, pred, norm_pix_loss)
    return jnp.sum(jnp.where(hidden, err, 0.0), axis=1) / jnp.maximum(jnp.sum(hidden, axis=1), 1)


# --------------------------------------------------------------------------- the model


class FCMAE(nnx.Module):
    """Masked autoencoder: ``model(images, mask)`` -> per-patch predictions (B, H/32, W/32, 32·32·C) float32.

    Encoder: the ConvNeXt V2 stem and stages with the mask (``convnext.encode``). Decoder (official
    ``forward_decoder``): a 1×1 projection to ``decoder_embed_dim`` (``proj``), the learned ``mask_token``
    at hidden positions, ``decoder_depth`` dense ConvNeXt V2 blocks (``decoder``) and a 1×1 projection to
    32·32·C pixel values per patch (``pred``). 1×1 convolutions are Linear layers on NHWC features.
    """

    def __init__(self, config: FCMAEConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        enc = config.encoder_config
        self.embeddings = convnext.ConvNeXtEmbeddings(enc, dtype=dtype, rngs=rngs)
        self.encoder = convnext.ConvNeXtEncoder(enc, dtype=dtype, rngs=rngs)
        d = config.decoder_embed_dim
        self.proj = linear(config.hidden_sizes[-1], d, dtype=dtype, rngs=rngs)
        # official init: normal(std 0.02)
        self.mask_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (d,), jnp.float32))
        self.decoder = nnx.List([convnext.ConvNeXtLayer(enc, d, 0.0, dtype=dtype, rngs=rngs)
                                 for _ in range(config.decoder_depth)])
        self.pred = linear(d, config.patch_size ** 2 * config.num_channels, dtype=dtype, rngs=rngs)

    def check_inputs(self, images: jax.Array, mask: jax.Array) -> None:
        """ValueError unless images are NHWC with the configured channels and sizes divisible by 32, and
        the mask has one cell per 32×32 patch."""
        c, p = self.config.num_channels, self.config.patch_size
        if images.ndim != 4 or images.shape[-1] != c:
            raise ValueError(f"FCMAE expects NHWC images with {c} channels, got shape {images.shape}")
        check_mask_geometry(tuple(images.shape[1:3]), self.config.mask_ratio, p)
        want = (images.shape[0], images.shape[1] // p, images.shape[2] // p)
        if tuple(mask.shape) != want:
            raise ValueError(f"FCMAE mask must have shape {want} (one cell per {p}-px patch), got {mask.shape}")

    def __call__(self, images: jax.Array, mask: jax.Array, *, output_hidden_states: bool = False):
        """``mask`` (B, H/32, W/32) bool, True = hidden. With ``output_hidden_states``: (pred, aux), aux =
        {"hidden_states": [stem, stage 1..4] (zero at hidden positions), "decoder_input": the decoder's
        input (mask token at hidden positions)}."""
        self.check_inputs(images, mask)
        mask = mask.astype(bool)
        hidden = convnext.encode(self.embeddings, self.encoder, images, mask)
        x = self.proj(hidden[-1])
        token = self.mask_token[...].astype(x.dtype)
        x = jnp.where(mask[..., None], token, x)
        decoder_input = x
        for block in self.decoder:
            x = block(x)
        pred = self.pred(x).astype(jnp.float32)
        if output_hidden_states:
            return pred, {"hidden_states": hidden, "decoder_input": decoder_input}
        return pred

    def loss(self, images: jax.Array, pred: jax.Array, mask: jax.Array, **kw) -> jax.Array:
        """:func:`fcmae_loss` with this model's ``norm_pix_loss``."""
        return fcmae_loss(images, pred, mask, norm_pix_loss=self.config.norm_pix_loss, **kw)


# --------------------------------------------------------------------------- building and fine-tuning


def config_for(variant: str, *, image_size: int = 224, **overrides) -> FCMAEConfig:
    """The FCMAE config of a ConvNeXt V2 size (``"test"``, ``"atto"`` ... ``"huge"``: the classifier's
    table) for ``image_size``; ``overrides`` are FCMAEConfig fields (``mask_ratio``, ``decoder_embed_dim``...)."""
    table = convnext.VARIANTS["convnextv2"]
    if variant not in table:
        raise ValueError(f"model.variant: unknown convnextv2 variant {variant!r}; expected one of {', '.join(table)}")
    enc = table[variant]
    values = dict(hidden_sizes=enc.hidden_sizes, depths=enc.depths, image_size=image_size)
    values.update(overrides)
    return common.config_from_dict(FCMAEConfig, values)


def create(variant: str, *, image_size: int = 224, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs | None = None,
           **overrides) -> FCMAE:
    """A freshly initialised FCMAE for a ConvNeXt V2 size, e.g. ``create("atto", image_size=128)``
    (float32 params; ``dtype`` is the compute dtype, e.g. ``jnp.bfloat16``; params seeded 0 unless ``rngs``)."""
    rngs = nnx.Rngs(params=0, dropout=1) if rngs is None else rngs
    return FCMAE(config_for(variant, image_size=image_size, **overrides), dtype=dtype, rngs=rngs)


def is_encoder_path(path: str) -> bool:
    """Whether a dotted variable path of :class:`FCMAE` belongs to the encoder (kept for fine-tuning)."""
    return path.split(".", 1)[0] in ENCODER_PATHS


def encoder_arrays(model: FCMAE) -> dict[str, jax.Array]:
    """The encoder's Params by dotted path, exactly the ConvNeXt V2 classifier's paths (``embeddings.*``,
    ``encoder.*``); the classifier's ``layernorm`` and ``classifier`` are not among them (start them fresh)."""
    out = {}
    for path, node in nnx.iter_graph(model):
        name = ".".join(str(p) for p in path)
        if isinstance(node, nnx.Param) and is_encoder_path(name):
            out[name] = node.get_value()
    return out
