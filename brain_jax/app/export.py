"""``brain-jax export --format onnx``: a training workdir or a converted folder -> ``NAME.onnx`` + its companion
``NAME.onnx.json`` (schema: docs/serving.md), for serving with ONNX Runtime without JAX.

Route (why: docs/serving.md): our weights -> our own Hugging Face export (``brain_jax.convert.to_hf``, tested
against transformers for all five architectures) -> the transformers PyTorch model -> ``torch.onnx.export``
(the TorchScript exporter: the torch.export one fails on Swin with a dynamic batch and is ~10x slower).
The graph: float32 compute whatever the run trained in, ``pixel_values`` (batch, 3, S, S) NCHW in, ``logits``
out ((batch, classes); SegFormer (batch, classes, S/4, S/4)), dynamic batch, opset ``DEFAULT_OPSET`` unless
asked. HF's depthwise convolutions are grouped ``Conv`` nodes with their bias, its per-token linear layers
``MatMul`` and its LayerNorms ``LayerNormalization``. One rewrite of ours: ConvNeXt V2's GRN as
x·(1 + γ·N(x)) + β (two passes over the activation instead of four), its sum of squares as one ``MatMul``;
ONNX Runtime's own fusions (GELU, LayerNorm, MatMul + bias) do the rest when it loads the graph.

Every export is checked before it is kept: ONNX Runtime's logits against our JAX forward on random inputs;
the largest difference goes into the companion file and is printed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from brain_jax import __version__, workdir
from brain_jax.app import onnx_predict
from brain_jax.convert import to_hf
from brain_jax.convert.native import is_native_dir, load_native
from brain_jax.io.guards import one_line
from brain_jax.train import forward
from brain_jax.train.model_factory import load_model_from_workdir
from brain_jax.train.spec import SEG_CLASS_NAMES, InputSpec, RunSpec
from input_pipeline.loader import default_data_config

FORMATS = ("onnx",)
DEFAULT_OPSET = 17  # LayerNormalization is an ONNX op from 17 on
OPSETS = range(17, 21)  # what torch's TorchScript exporter writes
PARITY_TOL = 1e-4  # max |logit difference| to our JAX forward, fp32
TORCH_HINT = "pip install torch==2.13.0 transformers (the CPU wheel) and 'brain-jax[onnx]'"


@dataclasses.dataclass(frozen=True)
class Source:
    """What an export is made from: the float32 model and the facts the companion file records."""

    model: Any
    kind: str  # "workdir" | "converted"
    task: str
    class_names: tuple[str, ...]
    input: InputSpec
    name: str
    variant: str
    trained_dtype: str


def check_options(fmt: str, opset: int) -> None:
    """One error naming the option that cannot export."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: cannot export to it; supported: {', '.join(FORMATS)}")
    if opset not in OPSETS:
        raise ValueError(f"--opset {opset}: cannot export at it; supported: {OPSETS.start}..{OPSETS.stop - 1} "
                         f"(default {DEFAULT_OPSET})")


def load_source(src: str | Path, image_size: int | None = None) -> Source:
    """The float32 model and facts of a training workdir (its best, else latest checkpoint) or a converted
    folder (input size ``image_size``, else its config's, else the data default); one error naming the file
    at fault when it is neither or is damaged."""
    import jax.numpy as jnp

    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"--from {src}: no such folder")
    if is_native_dir(src):
        model = _loaded(lambda: load_native(src, dtype=jnp.float32), src)
        return _converted_source(model, image_size)
    if not workdir.has_run(src):
        raise FileNotFoundError(f"--from {src}: neither a converted folder (no brain_jax_model.json) nor a "
                                f"training workdir (no {workdir.CONFIG})")
    if image_size is not None:
        raise ValueError(f"--image-size: a training workdir ({src}) exports at the size it was trained at")
    spec = RunSpec.from_config(workdir.read_config(src), where=str(src / workdir.CONFIG))
    if not workdir.has_checkpoint(src):
        raise FileNotFoundError(f"--from {src}: no checkpoint found (nothing saved yet?); train first")
    model = _loaded(lambda: load_model_from_workdir(src, jnp.float32, spec=spec), src)
    return Source(model, "workdir", spec.task, spec.class_names, spec.input, spec.model_name, spec.variant,
                  spec.dtype)


def _loaded(load, src: Path):
    try:
        return load()
    except (ValueError, FileNotFoundError, KeyError):
        raise
    except Exception as e:  # orbax / tensorstore / safetensors errors of a damaged checkpoint
        raise ValueError(f"--from {src}: cannot load its weights ({one_line(e)})") from None


def _converted_source(model, image_size: int | None) -> Source:
    """Facts of a converted folder: its model's config, the default data settings for preprocessing."""
    cfg = model.config
    data = default_data_config()
    task = "segmentation" if cfg.model_type == "segformer" else "classification"
    n = int(getattr(cfg, "num_labels", 0) or 0)
    names = tuple(getattr(cfg, "label_names", ()) or ())
    if task == "segmentation":
        names = names or (SEG_CLASS_NAMES if n == 2 else tuple(f"LABEL_{i}" for i in range(n)))
    else:
        names = names or tuple(f"LABEL_{i}" for i in range(n))
    size = int(image_size or getattr(cfg, "image_size", 0) or data.image_size)
    if size <= 0:
        raise ValueError(f"--image-size {image_size}: expected a positive number of pixels")
    spec = InputSpec(size, float(data.upper_percentile), tuple(data.mean), tuple(data.std))
    return Source(model, "converted", task, names, spec, cfg.model_type, "converted", "float32")


def _torch_model(model, out_dir: Path, size: int):
    """The transformers PyTorch model of our export of ``model``, wrapped to return its logits only."""
    try:
        import torch
        import transformers
    except ImportError:
        raise ValueError(f"export --format onnx needs torch and transformers ({TORCH_HINT})") from None

    transformers.logging.disable_progress_bar()
    to_hf(model, out_dir)
    seg = model.config.model_type == "segformer"
    auto = transformers.AutoModelForSemanticSegmentation if seg else transformers.AutoModelForImageClassification
    hf = auto.from_pretrained(out_dir).eval()
    kwargs = {}
    if model.config.model_type == "vit" and size != model.config.image_size:
        kwargs["interpolate_pos_encoding"] = True
    if model.config.model_type == "convnextv2":
        _fuse_grn(hf)

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values, **kwargs).logits

    return Logits(hf).eval()


def _fuse_grn(hf) -> None:
    """Replace every ConvNeXt V2 GRN by x·(1 + γ·N(x)) + β, the same function in two passes over x."""
    import torch

    class FusedGRN(torch.nn.Module):
        def __init__(self, grn):
            super().__init__()
            self.weight, self.bias = grn.weight, grn.bias

        def forward(self, x):  # x: (B, H, W, C)
            b, h, w, c = x.shape
            # Σ_hw x² as one MatMul, ones (1, H·W) @ x² (B, H·W, C): ONNX Runtime's GEMM beats its strided
            # ReduceL2 over two inner axes of a channels-last tensor (BENCHMARKS.md, "ONNX Runtime").
            ss = torch.matmul(torch.ones(1, h * w, dtype=x.dtype), (x * x).reshape(b, h * w, c))
            gx = torch.sqrt(ss).reshape(b, 1, 1, c)
            nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
            return x * (1.0 + self.weight * nx) + self.bias

    for name, mod in list(hf.named_modules()):
        if type(mod).__name__ == "ConvNextV2GRN":
            parent, _, attr = name.rpartition(".")
            setattr(hf.get_submodule(parent) if parent else hf, attr, FusedGRN(mod))


def _write_graph(wrapped, size: int, opset: int, path: Path, export_id: str) -> None:
    """torch.onnx (TorchScript exporter) with a dynamic batch, then our metadata; checked by onnx."""
    import onnx
    import torch

    dummy = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and HF's tracer warnings
        torch.onnx.export(wrapped, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[onnx_predict.INPUT_NAME], output_names=[onnx_predict.OUTPUT_NAME],
                          dynamic_axes={onnx_predict.INPUT_NAME: {0: "batch"}, onnx_predict.OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {onnx_predict.EXPORT_ID_KEY: export_id, "brain_jax_version": __version__})
    proto.producer_name, proto.doc_string = "brain-jax", "brain-jax export --format onnx (see the companion .json)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def parity(model, onnx_path: Path, size: int, batch: int = 2, seed: int = 0) -> float:
    """max |ONNX Runtime logits - JAX logits| on random normal inputs of ``batch`` rows (fp32)."""
    x = np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype(np.float32)
    ref = forward.logits(model, x, batch)
    got = onnx_predict.OnnxModel(onnx_path).logits(x, batch)
    return float(np.max(np.abs(got - ref)))


def companion(src: Source, source_path: Path, opset: int, export_id: str, onnx_name: str,
              max_diff: float | None) -> dict[str, Any]:
    """The companion file's content (schema: docs/serving.md)."""
    import onnxruntime
    import torch
    import transformers

    s = src.input.image_size
    seg = src.task == "segmentation"
    return {
        "schema": onnx_predict.SCHEMA, "schema_version": onnx_predict.SCHEMA_VERSION, "export_id": export_id,
        "model_file": onnx_name, "task": src.task, "class_names": list(src.class_names),
        "model": {"name": src.name, "variant": src.variant, "model_type": src.model.config.model_type,
                  "config": dataclasses.asdict(src.model.config), "trained_dtype": src.trained_dtype},
        "input": {"name": onnx_predict.INPUT_NAME, "layout": "NCHW", "dtype": "float32",
                  "shape": ["batch", 3, s, s]},
        "output": {"name": onnx_predict.OUTPUT_NAME, "dtype": "float32", "meaning": "logits (before softmax)",
                   "shape": ["batch", len(src.class_names)] + (["h", "w"] if seg else [])},
        "preprocessing": {
            "steps": ["gray", "intensity_window", "resize", "quantise_uint8", "to_3_channels", "mean_std"],
            "image_size": s, "upper_percentile": src.input.upper_percentile, "resize": "bilinear",
            "mean": list(src.input.mean), "std": list(src.input.std)},
        "postprocessing": ("logits resized bilinearly to the scan's size; tumour = argmax != 0 (one channel: > 0)"
                           if seg else "softmax over classes; predicted class = argmax"),
        "opset": opset,
        "source": {"path": str(source_path), "kind": src.kind},
        "parity": {"max_abs_logit_diff": max_diff, "tolerance": PARITY_TOL, "inputs": "random normal, batch 2",
                   "reference": "brain-jax JAX forward (fp32)"},
        "exported_with": {"brain_jax": __version__, "torch": torch.__version__,
                          "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__},
    }


def export_onnx(src: str | Path, out: str | Path | None = None, *, opset: int = DEFAULT_OPSET,
                fmt: str = "onnx", image_size: int | None = None, check: bool = True) -> dict[str, Any]:
    """Export ``src`` (a workdir or converted folder) to ``out`` (default ``SRC/onnx/model.onnx``) and its
    companion; returns {"model": path, "companion": path, "max_abs_logit_diff": float or None, "ok", "label"}.
    ``check=False`` skips the parity check (callers that check it themselves, at their own batch sizes)."""
    check_options(fmt, opset)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError(f"export --format onnx needs onnx and onnxruntime ({TORCH_HINT})") from None
    src_path = Path(src)
    source = load_source(src_path, image_size)
    out_path = Path(out) if out else src_path / workdir.ONNX_EXPORT
    if out_path.suffix != ".onnx" or out_path.is_dir():
        raise ValueError(f"--out {out_path}: expected a file name ending in .onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    export_id = uuid.uuid4().hex
    size = source.input.image_size
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as tmp:
        tmp_model = Path(tmp) / out_path.name
        _write_graph(_torch_model(source.model, Path(tmp) / "hf", size), size, opset, tmp_model, export_id)
        tmp_comp = onnx_predict.companion_path(tmp_model)
        doc = companion(source, src_path, opset, export_id, out_path.name, None)
        tmp_comp.write_text(json.dumps(doc, indent=2) + "\n")
        diff = parity(source.model, tmp_model, size) if check else None  # read as predict reads the pair
        doc["parity"]["max_abs_logit_diff"] = diff
        tmp_comp.write_text(json.dumps(doc, indent=2) + "\n")
        comp = onnx_predict.companion_path(out_path)
        os.replace(tmp_model, out_path)
        os.replace(tmp_comp, comp)
    return {"model": out_path, "companion": comp, "max_abs_logit_diff": diff, "ok": diff is None or diff <= PARITY_TOL,
            "label": f"{source.name}-{source.variant}"}
