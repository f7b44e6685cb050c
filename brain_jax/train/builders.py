"""Build what a config names: the model (fresh or grafted onto pretrained weights) and the data."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

MODEL_FILE = "model.json"  # the built model's architecture config, beside config.json in a workdir
SEG_CLASS_NAMES = ("background", "tumour")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
    name = str(config.model.dtype)
    if name not in _DTYPES:
        raise ValueError(f"config field model.dtype: {name!r}; expected one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


# --------------------------------------------------------------------------- validation


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fail early, naming the field, on an unknown model / variant / task / metric."""
    from brain_jax import models

    name = config.model.name
    if name not in models.NAMES:
        raise ValueError(f"config field model.name: unknown model {name!r}; expected one of {', '.join(models.NAMES)}")
    variants = models.variants(name)
    if config.model.variant not in variants:
        raise ValueError(
            f"config field model.variant: unknown {name} variant {config.model.variant!r}; "
            f"expected one of {', '.join(variants)}"
        )
    task = config.data.task
    if task not in ("classification", "segmentation"):
        raise ValueError(f"config field data.task: {task!r}; expected 'classification' or 'segmentation'")
    if (name == "segformer") != (task == "segmentation"):
        raise ValueError(
            f"config field data.task={task!r} does not fit model.name={name!r} "
            "(segformer does segmentation, the others classification)"
        )
    compute_dtype(config)
    if config.batch_size <= 0:
        raise ValueError(f"config field batch_size must be positive, got {config.batch_size}")


def num_classes(config: ml_collections.ConfigDict) -> int:
    return 2 if config.data.task == "segmentation" else int(config.data.num_classes)


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    if config.data.task == "segmentation":
        return SEG_CLASS_NAMES
    n = num_classes(config)
    try:
        from input_pipeline import CLASS_NAMES
    except ImportError:
        CLASS_NAMES = ()
    return tuple(CLASS_NAMES) if len(CLASS_NAMES) == n else tuple(f"class_{i}" for i in range(n))


# --------------------------------------------------------------------------- models


def load_pretrained(src: str, dtype: Any) -> nnx.Module:
    """``config.init_from``: a training workdir, a native converted folder, or an HF folder / Hub id."""
    from brain_jax.convert import from_hf
    from brain_jax.convert.native import is_native_dir, load_native

    path = Path(src).expanduser()
    if path.is_dir() and (path / "config.json").is_file() and (path / MODEL_FILE).is_file():
        from brain_jax.train.checkpoints import load_model_from_workdir

        return load_model_from_workdir(path, dtype)
    if path.is_dir() and is_native_dir(path):
        return load_native(path, dtype=dtype)
    return from_hf(str(src), dtype=dtype)


def _arch_module(model_type: str):
    from brain_jax.models import module_for

    return module_for(model_type)


def _with_overrides(cfg: Any, kwargs: dict, where: str) -> dict:
    fields = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(kwargs) - fields)
    if bad:
        raise ValueError(f"{where}: unknown field(s) {bad} for {type(cfg).__name__}; valid: {sorted(fields)}")
    return dict(kwargs)


def graft(model: nnx.Module, pretrained: nnx.Module, *, fresh_head: bool) -> list[str]:
    """Copy every variable of ``pretrained`` into ``model`` except the head when ``fresh_head``.

    All-or-nothing: a ValueError lists every missing, extra or mis-shaped variable. Returns the paths
    left at their fresh initialisation.
    """
    from brain_jax.convert.core import model_variables

    ours, theirs = model_variables(model), model_variables(pretrained)
    head = tuple(getattr(model, "head_paths", ()))

    def in_head(p: str) -> bool:
        return any(p == h or p.startswith(h + ".") for h in head)

    problems, staged, fresh = [], [], []
    for path, var in ours.items():
        if fresh_head and in_head(path):
            fresh.append(path)
            continue
        if path not in theirs:
            problems.append(f"{path}: not in the pretrained model")
            continue
        src = theirs[path].get_value()
        if tuple(src.shape) != tuple(var.get_value().shape):
            problems.append(f"{path}: pretrained {tuple(src.shape)} vs model {tuple(var.get_value().shape)}")
            continue
        staged.append((var, src))
    extra = sorted(p for p in theirs if p not in ours and not (fresh_head and in_head(p)))
    problems += [f"{p}: in the pretrained model only" for p in extra]
    if problems:
        raise ValueError(f"pretrained weights do not fit the model ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))
    for var, src in staged:
        var.set_value(jnp.asarray(src, var.get_value().dtype))
    return fresh


def create_model(config: ml_collections.ConfigDict, *, dtype: Any | None = None, with_init: bool = True,
                 seed: int | None = None) -> nnx.Module:
    """The model a config describes; with ``with_init`` and ``init_from`` set, on pretrained weights.

    From a pretrained checkpoint the architecture is the checkpoint's own (with ``model.kwargs``, e.g.
    drop-path, applied) and the classification/segmentation head is re-initialised when the label
    count differs.
    """
    from brain_jax import models

    dtype = compute_dtype(config) if dtype is None else dtype
    seed = int(config.seed) if seed is None else seed
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    n = num_classes(config)
    kwargs = dict(config.model.kwargs.to_dict()) if hasattr(config.model.kwargs, "to_dict") else dict(config.model.kwargs)
    init_from = str(config.get("init_from", "") or "")
    if not (with_init and init_from):
        return models.create(config.model.name, config.model.variant, n, dtype=dtype, rngs=rngs, **kwargs)
    pretrained = load_pretrained(init_from, dtype)
    ptype = pretrained.config.model_type
    if ptype != config.model.name:
        raise ValueError(
            f"config field init_from={init_from!r} holds a {ptype} model, but model.name is {config.model.name!r}"
        )
    mod = _arch_module(ptype)
    changes = _with_overrides(pretrained.config, kwargs, "config field model.kwargs")
    fresh_head = pretrained.config.num_labels != n
    if fresh_head:
        changes["num_labels"] = n
        if "label_names" in {f.name for f in dataclasses.fields(pretrained.config)}:
            names = class_names(config)
            changes["label_names"] = tuple(names) if len(names) == n else ()
    cfg = dataclasses.replace(pretrained.config, **changes)
    model = mod.from_config(cfg, dtype=dtype, rngs=rngs)
    graft(model, pretrained, fresh_head=fresh_head)
    return model


def save_model_json(model: nnx.Module, path: str | Path) -> None:
    cfg = model.config
    meta = {"model_type": cfg.model_type, "config": dataclasses.asdict(cfg)}
    Path(path).write_text(json.dumps(meta, indent=2) + "\n")


def model_from_json(path: str | Path, dtype: Any) -> nnx.Module:
    meta = json.loads(Path(path).read_text())
    mod = _arch_module(meta["model_type"])
    return mod.from_config(mod.config_from_dict(dict(meta["config"])), dtype=dtype, rngs=nnx.Rngs(params=0, dropout=1))


# --------------------------------------------------------------------------- data


class ResumableIterator(Protocol):
    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> Any: ...
    def set_state(self, state: Any) -> None: ...


class DataSource(Protocol):
    """What the trainer needs from the input pipeline (tests pass a fake)."""

    task: str
    def steps_per_epoch(self) -> int: ...
    def train_iterator(self) -> ResumableIterator: ...
    def eval_batches(self, split: str) -> Iterable[dict[str, np.ndarray]]: ...


class PipelineData:
    """``input_pipeline`` loaders for a config (datasets must be built; FileNotFoundError says how)."""

    def __init__(self, config: ml_collections.ConfigDict):
        import input_pipeline

        self._ip = input_pipeline
        self.config = config
        self.data = config.data
        self.task = config.data.task
        self._train_loader = None

    def _train(self):
        if self._train_loader is None:
            self._train_loader = self._ip.make_loader(
                self.data, self.data.train_split, global_batch_size=int(self.config.batch_size), train=True,
                seed=int(self.config.seed),
            )
        return self._train_loader

    def steps_per_epoch(self) -> int:
        return int(self._train().steps_per_epoch)

    def train_iterator(self) -> Iterator:
        # state = the step: resumes exactly with another process or loader-worker count
        return self._train().resumable()

    def eval_batches(self, split: str) -> Iterable[dict[str, np.ndarray]]:
        bs = int(self.config.eval_batch_size)
        import jax

        bs = max(bs - bs % jax.process_count(), jax.process_count())
        return self._ip.make_loader(self.data, split, global_batch_size=bs, train=False, seed=int(self.config.seed))
