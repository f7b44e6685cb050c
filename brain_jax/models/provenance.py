"""Where a starting point's weights come from, and how big its backbone is: facts a comparison must print.

Two classifiers fine-tuned on the same images are not a like-for-like comparison when one started from
ImageNet-22k and the other from ImageNet-1k, or when one has three times the parameters. ``describe``
gives both facts for a run (``pretraining`` of its ``init_from``, ``backbone_parameters`` of its model), so
that outputs can say them next to the scores.

Pre-training descriptions cover the Hugging Face checkpoints that ``configs/`` names; each states only what
the original release (paper, repository, conversion script) documents. Parameter counts are pinned from
the models built here and checked against a fresh abstract build by ``tests/test_models_registry.py``.

No JAX: this module is read by verbs that only print.
"""
from __future__ import annotations

_IN1K = "ImageNet-1k (supervised)"
_CONVNEXTV2_1K = "FCMAE self-supervised pre-training on ImageNet-1k, then fine-tuned on ImageNet-1k"
_CONVNEXTV2_22K = "FCMAE self-supervised pre-training, then fine-tuned on ImageNet-22k and then on ImageNet-1k"
_IN22K_1K = "ImageNet-22k (supervised), then fine-tuned on ImageNet-1k"
_VIT_21K_1K = "ImageNet-21k (supervised), then fine-tuned on ImageNet-1k"
_VIT_21K = "ImageNet-21k (supervised), no ImageNet-1k fine-tuning"

# Hugging Face id -> pre-training data. ConvNeXt V2's "22k" checkpoints carry ImageNet-1k heads (the
# original release fine-tunes on 22k, then on 1k); Swin-B/L window-7 224 were converted from timm's default
# weights, which are the 22k-to-1k ones. ConvNeXt-XL was released only with ImageNet-22k pre-training, so
# ``facebook/convnext-xlarge-224`` is left unknown.
PRETRAINING: dict[str, str] = {
    **{f"facebook/convnextv2-{s}-1k-224": _CONVNEXTV2_1K
       for s in ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge")},
    **{f"facebook/convnextv2-{s}-22k-224": _CONVNEXTV2_22K for s in ("nano", "tiny", "base", "large")},
    **{f"facebook/convnext-{s}-224": _IN1K for s in ("tiny", "small", "base", "large")},
    **{f"microsoft/swin-{s}-patch4-window7-224": _IN1K for s in ("tiny", "small")},
    **{f"microsoft/swin-{s}-patch4-window7-224": _IN22K_1K for s in ("base", "large")},
    "google/vit-base-patch16-224": _VIT_21K_1K,
    "google/vit-large-patch16-224": _VIT_21K_1K,
    **{f"google/vit-{s}-224-in21k": _VIT_21K
       for s in ("base-patch16", "base-patch32", "large-patch16", "large-patch32", "huge-patch14")},
    "facebook/deit-small-patch16-224": "ImageNet-1k (supervised, DeiT recipe, no distillation token)",
    **{f"nvidia/mit-b{i}": "ImageNet-1k (supervised; the MiT encoder trained as a classifier)" for i in range(6)},
}

# (model name, variant) -> trainable parameters without the classification head, at the variant's own
# image size (ViT's position table grows with it). SegFormer: the MiT encoder, i.e. without any head.
# Measured by building each model abstractly; equal to transformers' counts for the same configs.
BACKBONE_PARAMETERS: dict[tuple[str, str], int] = {
    ("convnextv2", "tiny"): 27_866_496,
    ("convnext", "tiny"): 27_820_128,
    ("swin", "tiny_w7"): 27_519_354,
    ("vit", "base_16"): 85_798_656,
    ("vit", "small_16"): 21_665_664,
    ("segformer", "b0"): 3_319_392,
}


def pretraining(init_from: str | None) -> str:
    """A short description of the data ``init_from`` (a Hugging Face id) was pre-trained on.

    ``"random initialisation"`` for no checkpoint; ``"unknown (<init_from>)"`` for an id not listed here,
    a local folder or a workdir.
    """
    if not init_from:
        return "random initialisation"
    return PRETRAINING.get(init_from, f"unknown ({init_from})")


def backbone_parameters(name: str, variant: str) -> int | None:
    """Parameters of model ``name``/``variant`` without its classification head; None if not pinned."""
    return BACKBONE_PARAMETERS.get((name, variant))


def describe(name: str, variant: str, init_from: str | None) -> dict:
    """``{"pretraining": ..., "backbone_parameters": ...}`` of a run, for outputs to print."""
    return {"pretraining": pretraining(init_from), "backbone_parameters": backbone_parameters(name, variant)}
