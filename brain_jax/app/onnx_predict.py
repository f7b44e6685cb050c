"""The ONNX Runtime route of ``predict``: an exported model (``brain-jax export --format onnx``) and its
companion file, run without JAX.

An export is two files: ``NAME.onnx`` (the graph: float32 ``pixel_values`` (batch, 3, S, S) NCHW in,
float32 ``logits`` out, (batch, classes) or (batch, classes, S/4, S/4)) and ``NAME.onnx.json`` beside it,
the companion: how a scan becomes ``pixel_values``, the class names, the task and the architecture (schema
in docs/serving.md). The export writes one random ``export_id`` into both (the ONNX file's metadata
property ``brain_jax_export_id``); ``predict`` refuses a pair whose ids differ.

Images are prepared by ``brain_jax.train.preprocess`` (the function today's ``predict`` uses) and the logits
become predictions through ``brain_jax.app.predict.predictions_from_logits``, so both routes give the same
outputs. Nothing here imports JAX or touches the XLA compilation cache.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from brain_jax.app import inputs, predict as predict_app
from brain_jax.io import Slice
from brain_jax.io.guards import one_line
from brain_jax.train.spec import TASKS, InputSpec

SCHEMA = "brain-jax-onnx"
SCHEMA_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
EXPORT_ID_KEY = "brain_jax_export_id"  # ONNX metadata property that pairs a model with its companion
INSTALL_HINT = "pip install 'brain-jax[onnx]'"


def companion_path(model_path: str | Path) -> Path:
    """``NAME.onnx`` -> ``NAME.onnx.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


@dataclasses.dataclass(frozen=True)
class Companion:
    """The facts of an export that ``predict`` needs, read from its companion file."""

    path: Path
    export_id: str
    task: str
    class_names: tuple[str, ...]
    input: InputSpec
    label: str  # model name-variant, for tables and predictions.json


def read_companion(model_path: str | Path) -> Companion:
    """The companion of ``model_path``, checked; one error naming the companion file otherwise."""
    path = companion_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (the companion file of {Path(model_path).name}, written beside it "
                                "by `brain-jax export --format onnx`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable companion file ({one_line(e)})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: not a {SCHEMA} companion file of schema_version {SCHEMA_VERSION}")
    try:
        pre, model = doc["preprocessing"], doc["model"]
        names = tuple(str(n) for n in doc["class_names"])
        spec = InputSpec(image_size=int(pre["image_size"]), upper_percentile=float(pre["upper_percentile"]),
                         mean=tuple(float(v) for v in pre["mean"]), std=tuple(float(v) for v in pre["std"]))
        comp = Companion(path, str(doc["export_id"]), str(doc["task"]), names, spec,
                         f"{model['name']}-{model['variant']}")
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad or missing field ({one_line(e)})") from None
    if comp.task not in TASKS or not names or len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0 \
            or spec.image_size <= 0:
        raise ValueError(f"{path}: task must be one of {', '.join(TASKS)}, class_names non-empty, "
                         "preprocessing.mean/std three numbers each (std > 0), image_size > 0")
    return comp


class OnnxModel:
    """An exported model in an ONNX Runtime session, checked against its companion file."""

    def __init__(self, model_path: str | Path, *, intra_threads: int = 0, spinning: bool = True):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"--model {path}: no such file")
        self.path = path
        self.companion = read_companion(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError(f"--model {path}: predicting with an ONNX file needs onnxruntime "
                             f"({INSTALL_HINT})") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own error types for damaged or foreign files
            raise ValueError(f"--model {path}: ONNX Runtime cannot load it ({one_line(e)})") from None
        self._check_pair()

    def _check_pair(self) -> None:
        c = self.companion
        got = self.session.get_modelmeta().custom_metadata_map.get(EXPORT_ID_KEY)
        if got != c.export_id:
            raise ValueError(f"{c.path}: describes another export (export_id {c.export_id!r}, the model file "
                             f"{self.path.name} has {got!r}); export again or pair the files that were written "
                             "together")
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        want = [3, c.input.image_size, c.input.image_size]
        if [i.name for i in ins] != [INPUT_NAME] or list(ins[0].shape[1:]) != want or outs[0].name != OUTPUT_NAME:
            raise ValueError(f"{c.path}: {self.path.name} takes {[(i.name, i.shape) for i in ins]}, expected "
                             f"{INPUT_NAME} of shape (batch, {', '.join(map(str, want))})")

    def logits(self, inputs_nhwc: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """float32 logits of (N, S, S, 3) model inputs: (N, classes), or (N, h, w, classes) for segmentation
        (NHWC, as the JAX models return them)."""
        outs = []
        for i in range(0, len(inputs_nhwc), max(1, batch_size)):
            x = np.ascontiguousarray(inputs_nhwc[i:i + batch_size].transpose(0, 3, 1, 2), np.float32)
            outs.append(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
        out = np.concatenate(outs).astype(np.float32)
        return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


@dataclasses.dataclass(frozen=True)
class OnnxJob:
    """What ``predict`` through ONNX Runtime needs, read and checked before anything is computed."""

    model: OnnxModel
    slices: list[Slice]
    out_dir: Path


def read_job(images: Sequence[str], model_path: str | Path, *, out: str | Path | None,
             slice_index: int | None = None) -> OnnxJob:
    """Read ``images``, check ``out`` (default: ``predictions/`` beside the model file), load the export."""
    slices = inputs.read_slices(images, slice_index)
    out_dir = inputs.check_out(out, Path(model_path).parent / "predictions")
    return OnnxJob(OnnxModel(model_path), slices, out_dir)


def predict(job: OnnxJob, batch_size: int = 8) -> list[predict_app.Prediction]:
    """``Prediction`` per slice, as ``brain_jax.app.predict.predict_arrays`` makes them on the JAX route."""
    c = job.model.companion
    x = predict_app.model_inputs(job.slices, c.input)
    return predict_app.predictions_from_logits(job.model.logits(x, batch_size), c.task, c.class_names, job.slices)
