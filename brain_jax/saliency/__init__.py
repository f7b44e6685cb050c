"""Where a model looks: Grad-CAM, integrated gradients and attention rollout for brain_jax models, and
localisation scores against known tumour masks.

Methods (``methods.py``; jitted, batched, on an eval-mode copy of the model, NHWC inputs):

- ``grad_cam(model, images, targets, layer=None)``: raw map Σ_c α_c A_c at the target layer's
  resolution (before ReLU), α_c the spatial mean of ∂y/∂A_c. Default layers, and the HF module the
  PyTorch twin hooks for the same activation (``taps.gradcam_layer``):

  ============  ===================================================  ==========================================
  model         our activation                                       HF transformers module
  ============  ===================================================  ==========================================
  ConvNeXt V2   ``encoder.stages.-1`` output (before pooling)         ``convnextv2.encoder.stages[-1]`` output
  ConvNeXt V1   ``encoder.stages.-1`` output (before pooling)         ``convnext.encoder.stages[-1]`` output
  Swin          ``layernorm`` output (last stage's grid)              ``swin.layernorm`` output, to the grid
  ViT           ``encoder.layer.-1`` input (patch tokens)             ``vit.layers[-1].layernorm_before``
                                                                      input, class token dropped
  SegFormer     ``segformer.encoder.layer_norm.-1`` output            ``segformer.stages[-1].layer_norm`` output
  ============  ===================================================  ==========================================

  ``layer=k`` picks stage/block k instead (for small inputs whose last map is only a few pixels wide).
- ``integrated_gradients(model, images, targets, baseline=0, steps=50, method="gausslegendre")``:
  (B, H, W, C) attributions; quadratures as Captum names them. ``baseline=saliency.blurred`` uses a
  Gaussian-blurred copy of each image (sigma = the shorter side / 16) instead of a constant image.
- ``attention_rollout(model, images, head_fusion="mean")``: ViT only, class-agnostic, on the patch grid.

Targets: a class logit; for a segmentation model the target class's logits summed over the pixels
predicted as that class. ``localisation.py`` turns raw outputs into heat maps and scores them against
masks (pointing game with a dilated mask, share of the map's mass inside the mask).
"""
from brain_jax.saliency.localisation import (
    chance_levels,
    default_tolerance,
    heatmap,
    mass_inside,
    normalise,
    pointing_game,
    summarise,
    upsample,
)
from brain_jax.saliency.methods import (
    BLUR_FRACTION,
    IG_QUADRATURES,
    IG_STEPS,
    METHODS,
    GradCam,
    attention_rollout,
    blur_sigma,
    blurred,
    check_method,
    grad_cam,
    integrated_gradients,
    logits,
    quadrature,
    supported_methods,
    target_score,
)
from brain_jax.saliency.taps import Layer, architecture, gradcam_layer, task

__all__ = [
    "BLUR_FRACTION", "IG_QUADRATURES", "IG_STEPS", "METHODS", "GradCam", "Layer", "architecture",
    "attention_rollout", "blur_sigma", "blurred", "chance_levels", "check_method", "default_tolerance", "grad_cam",
    "gradcam_layer", "heatmap", "integrated_gradients", "logits", "mass_inside", "normalise", "pointing_game",
    "quadrature", "summarise", "supported_methods", "target_score", "task", "upsample",
]
