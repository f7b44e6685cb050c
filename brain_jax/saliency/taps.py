"""Where the saliency methods attach: each architecture's Grad-CAM layer, and taps that read or perturb a
submodule's input or output inside a traced forward pass.

A tap wraps one submodule of a model copy merged inside the traced function (``nnx.merge``), so the
caller's model and the model code stay untouched: the wrapper calls the original submodule and passes
its input (``where="input"``) or output (``where="output"``) through a function, which records the
value and may add a perturbation ``delta``. The gradient of the logits with respect to ``delta`` at
zero is the gradient with respect to that activation, through every path that reads it (a block's
input feeds both its residual and its first LayerNorm).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping

import jax
from flax import nnx

TapFn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One activation Grad-CAM reads, and the module the PyTorch (HF transformers) twin hooks for it.

    ``path``: our submodule (dotted attribute path from the model); ``where``: its ``"input"`` or
    ``"output"``; ``hf_module``: the same place in the HF model (dotted, from the task model, e.g.
    ``ConvNextV2ForImageClassification``) and ``hf_where`` (HF sequences (B, N, C) are reshaped to the
    grid); ``class_tokens``: leading tokens that are not patches (ViT's class token), dropped from the map;
    ``patch_size``: for token sequences, the patch size that gives their grid.
    """

    path: str
    where: str
    hf_module: str
    hf_where: str
    description: str
    class_tokens: int = 0
    patch_size: int = 0


class _Tap(nnx.Module):
    """Stands in for a submodule: calls it, passing its input or output through ``fn``."""

    def __init__(self, inner: nnx.Module, where: str, fn: TapFn):
        self.inner = inner
        self.where = where
        self.fn = fn

    def __call__(self, x, *args, **kwargs):
        if self.where == "input":
            return self.inner(self.fn(x), *args, **kwargs)
        return self.fn(self.inner(x, *args, **kwargs))


def _parent_and_key(model: nnx.Module, path: str) -> tuple[object, str | int]:
    node: object = model
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    last = parts[-1]
    return node, (int(last) if last.isdigit() else last)


def _get(parent: object, key: str | int):
    return parent[key] if isinstance(key, int) else getattr(parent, key)


def _set(parent: object, key: str | int, value: object) -> None:
    if isinstance(key, int):
        parent[key] = value
    else:
        setattr(parent, key, value)


@contextlib.contextmanager
def tapped(model: nnx.Module, taps: Mapping[str, tuple[str, TapFn]]) -> Iterator[None]:
    """Within the block, submodule ``path`` of ``model`` runs with its ``where`` value passed through ``fn``
    for every ``path: (where, fn)`` of ``taps``. Use on a copy merged inside a traced function."""
    swapped = []
    try:
        for path, (where, fn) in taps.items():
            if where not in ("input", "output"):
                raise ValueError(f"tap {path!r}: where must be 'input' or 'output', got {where!r}")
            try:
                parent, key = _parent_and_key(model, path)
                inner = _get(parent, key)
            except (AttributeError, IndexError) as e:
                raise ValueError(f"{type(model).__name__} has no submodule {path!r} to tap ({e})") from None
            _set(parent, key, _Tap(inner, where, fn))
            swapped.append((parent, key, inner))
        yield
    finally:
        for parent, key, inner in reversed(swapped):
            _set(parent, key, inner)


def recorder(box: dict, name: str, delta: jax.Array | None = None) -> TapFn:
    """A tap function that stores the value in ``box[name]`` and returns it plus ``delta`` (if given)."""
    def fn(value: jax.Array) -> jax.Array:
        box[name] = value
        return value if delta is None else value + delta.astype(value.dtype)

    return fn


# --------------------------------------------------------------------------- each architecture's layer


def architecture(model: nnx.Module) -> str:
    """``"convnext"``, ``"swin"``, ``"vit"`` or ``"segformer"`` (from the model's config)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    arch = {"convnextv2": "convnext", "convnext": "convnext", "swin": "swin", "vit": "vit",
            "segformer": "segformer"}.get(model_type)
    if arch is None:
        raise ValueError(f"saliency: unknown model type {model_type!r} ({type(model).__name__}); expected a "
                         "brain_jax model (convnextv2, convnext, swin, vit, segformer)")
    return arch


def task(model: nnx.Module) -> str:
    """``"segmentation"`` for a SegFormer with a decode head, else ``"classification"``."""
    return str(getattr(model.config, "task", "classification"))


def _index(layer: int, n: int, what: str) -> int:
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range for {n} {what} (use 0..{n - 1} or -{n}..-1)")
    return layer % n


def gradcam_layer(model: nnx.Module, layer: int | None = None) -> Layer:
    """The activation Grad-CAM reads: the documented default (``layer=None``) or stage/block ``layer``.

    - ConvNeXt V1/V2: the output of encoder stage ``layer`` (default: the last stage, before pooling).
    - Swin: default the final LayerNorm's output (the last stage's grid, before pooling); ``layer=k``:
      the output of stage k (after its patch merging, as HF's ``reshaped_hidden_states``).
    - ViT: the input of block ``layer``'s first LayerNorm, i.e. the block's input (default: the last
      block; its output's patch tokens get no gradient, since the head reads only the class token).
    - SegFormer: the output of encoder stage ``layer`` after its LayerNorm (default: the last stage).
    """
    arch, cfg = architecture(model), model.config
    if arch == "convnext":
        k = _index(-1 if layer is None else layer, len(cfg.depths), "ConvNeXt stages")
        base = "convnextv2" if cfg.model_type == "convnextv2" else "convnext"
        return Layer(f"encoder.stages.{k}", "output", f"{base}.encoder.stages.{k}", "output",
                     f"stage {k} output" + (" (last stage, before pooling)" if k == len(cfg.depths) - 1 else ""))
    if arch == "swin":
        if layer is None:
            return Layer("layernorm", "output", "swin.layernorm", "output",
                         "final LayerNorm tokens on the last stage's grid")
        k = _index(layer, len(cfg.depths), "Swin stages")
        return Layer(f"encoder.layers.{k}", "output", f"swin.encoder.layers.{k}", "output",
                     f"stage {k} output (after its patch merging)")
    if arch == "vit":
        k = _index(-1 if layer is None else layer, cfg.num_hidden_layers, "ViT blocks")
        return Layer(f"encoder.layer.{k}", "input", f"vit.layers.{k}.layernorm_before", "input",
                     f"block {k} input (= its first LayerNorm's input)", class_tokens=1, patch_size=cfg.patch_size)
    k = _index(-1 if layer is None else layer, len(cfg.hidden_sizes), "SegFormer encoder stages")
    return Layer(f"segformer.encoder.layer_norm.{k}", "output", f"segformer.stages.{k}.layer_norm", "output",
                 f"encoder stage {k} output (after its LayerNorm)")


def to_grid(value: jax.Array, layer: Layer, image_hw: tuple[int, int]) -> jax.Array:
    """An activation as an NHWC grid: ViT token sequences lose the class token and become the patch grid."""
    if value.ndim == 4:
        return value
    gh, gw = image_hw[0] // layer.patch_size, image_hw[1] // layer.patch_size
    patches = value[:, layer.class_tokens:]
    return patches.reshape(value.shape[0], gh, gw, value.shape[-1])
