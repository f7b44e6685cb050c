"""``RunSpec``: the facts of one run, resolved once from its config and validated once.

Every verb that trains or reads a run (train, eval, predict, explain, suite, the benchmarks) builds one
``RunSpec`` from the config (``RunSpec.from_config``) and reads the run's task, head classes, compute dtype,
model and input preprocessing from it; nothing else derives them. The module imports no JAX and starts no
backend: the dtype is held as its name (``DTYPES`` names the ones a config may use) and the depthwise-conv
choice stays in ``model.kwargs`` for the model to resolve.

``lookup`` is the one rule for reading a dotted field (``"data.image_size"``) of a config or of the plain
dict a workdir's ``config.json`` holds. ``check_workdir`` compares a config with the run a workdir already
holds through ``RunSpec.identity``.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

import ml_collections

from brain_jax import models, workdir
from brain_jax.io.guards import MAX_PIXELS
from input_pipeline.builders import UNLABELLED
from input_pipeline.labels import class_names as dataset_class_names

TASKS = ("classification", "segmentation")
# Self-supervised pretraining tasks: no head, no labels read (``data.task="fcmae"``: ConvNeXt V2's masked
# autoencoder, brain_jax.models.fcmae, on the train split only).
PRETRAIN_TASKS = ("fcmae",)
# FCMAE's settings a config may give (``config.fcmae``), passed to brain_jax.models.fcmae.config_for.
FCMAE_FIELDS = ("mask_ratio", "patch_size", "decoder_embed_dim", "decoder_depth", "norm_pix_loss")
SEG_CLASS_NAMES = ("background", "tumour")
# The dtype names a config or a command line may use (resolved to jnp dtypes by the model factory).
DTYPES = ("float32", "bfloat16", "float16")
# The fields whose equality makes a workdir "the same run" (plus the head's classes): a resume or an eval of
# another model is refused. Other fields (steps, learning rate, data paths) may change between runs.
IDENTITY_FIELDS = ("model.name", "model.variant", "data.task")

_REQUIRED = object()


def lookup(config: Any, dotted: str, default: Any = _REQUIRED, *, where: str = "config") -> Any:
    """``config.<dotted>`` of a ConfigDict or a plain dict; groups come back as plain dicts.

    A missing field returns ``default`` when one is given, else raises ValueError naming ``where`` and the
    field.
    """
    node = config
    for part in dotted.split("."):
        if not isinstance(node, (Mapping, ml_collections.ConfigDict)) or part not in node:
            if default is not _REQUIRED:
                return default
            raise ValueError(f"{where}: missing field {dotted!r}")
        node = node[part]
    return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def model_label(name: str, variant: str) -> str:
    """The model's name in tables, ``name-variant`` (``RunSpec.label``; ``compare`` labels a workdir whose
    config.json it only reads the model fields of)."""
    return f"{name}-{variant}"


def check_dtype(name: Any, field: str = "config field model.dtype") -> str:
    """``name`` when it is one of ``DTYPES``; ValueError naming ``field`` otherwise."""
    if name not in DTYPES:
        raise ValueError(f"{field}: {name!r}; expected one of {', '.join(DTYPES)}")
    return str(name)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How a grayscale slice becomes the model's input: intensity window, square size, mean/std."""

    image_size: int
    upper_percentile: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run's facts. ``label`` names the model in tables; ``identity`` is what ``check_workdir`` compares."""

    task: str
    class_names: tuple[str, ...]
    dtype: str
    model_name: str
    variant: str
    model_kwargs: Mapping[str, Any]
    init_from: str
    seed: int
    input: InputSpec
    pretrain: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # fcmae: FCMAE_FIELDS given

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label(self) -> str:
        return model_label(self.model_name, self.variant)

    @property
    def identity(self) -> dict[str, Any]:
        return {"model.name": self.model_name, "model.variant": self.variant, "data.task": self.task,
                "classes": list(self.class_names)}

    @classmethod
    def from_config(cls, config: Any, *, where: str = "config") -> RunSpec:
        """Resolve and validate; every error names ``where`` (or ``config field ...``) and what was expected."""
        def get(dotted: str, default: Any = _REQUIRED) -> Any:
            return lookup(config, dotted, default, where=where)

        task = get("data.task")
        if task not in TASKS + PRETRAIN_TASKS:
            raise ValueError(f"{_field(where, 'data.task')}: {task!r}; expected 'classification', 'segmentation' "
                             "or 'fcmae' (pretraining)")
        if task not in PRETRAIN_TASKS:
            _check_labelled(get, task, where)
        name, variant = get("model.name"), get("model.variant")
        if task == "fcmae" and name != "convnextv2":
            raise ValueError(f"{_field(where, 'model.name')}: {name!r}; FCMAE pretraining (data.task='fcmae') "
                             "needs the ConvNeXt V2 encoder, model.name='convnextv2'")
        if name not in models.NAMES:
            raise ValueError(f"{_field(where, 'model.name')}: unknown model {name!r}; expected one of "
                             f"{', '.join(models.NAMES)}")
        if (name == "segformer") != (task == "segmentation"):
            raise ValueError(f"{_field(where, 'data.task')}={task!r} does not fit model.name={name!r} "
                             "(segformer does segmentation, the others classification)")
        known = models.variants(name)
        if variant not in known:
            raise ValueError(f"{_field(where, 'model.variant')}: unknown {name} variant {variant!r}; "
                             f"expected one of {', '.join(known)}")
        dtype = check_dtype(get("model.dtype", "float32"), _field(where, "model.dtype"))
        batch = get("batch_size", 1)
        if not isinstance(batch, int) or batch <= 0:
            raise ValueError(f"{_field(where, 'batch_size')} must be a positive integer, got {batch!r}")
        if task == "classification":
            get("data.name")  # the head's classes are its datasets': a config without them names the field
        if task == "fcmae":
            names: Any = ()  # no head: labels are never read
            _check_no_test_split(get)
        else:
            names = SEG_CLASS_NAMES if task == "segmentation" else dataset_class_names(_as_configdict(get("data")))
        kwargs = get("model.kwargs", {}) or {}
        pretrain = {k: v for k, v in (get("fcmae", {}) or {}).items() if k in FCMAE_FIELDS} if task == "fcmae" else {}
        return cls(task=task, class_names=tuple(names), dtype=dtype, model_name=name, variant=variant,
                   model_kwargs=dict(kwargs), init_from=str(get("init_from", "") or ""),
                   seed=int(get("seed", 0)), input=_input_spec(get, where), pretrain=pretrain)


def _check_no_test_split(get) -> None:
    """Pretraining never sees the test split (a transductive leak): train / eval splits must not hold it."""
    test = {p.strip() for p in str(get("data.test_split", "") or "").split("+") if p.strip()}
    for field in ("data.train_split", "data.eval_split"):
        pieces = {p.strip() for p in str(get(field, "") or "").split("+") if p.strip()}
        if test & pieces:
            raise ValueError(f"config field {field}={get(field)!r} holds the test split "
                             f"{get('data.test_split')!r}: FCMAE pretraining must not see the test split")


def _check_labelled(get, task: str, where: str) -> None:
    """A dataset without labels (``input_pipeline.builders.UNLABELLED``) feeds pretraining only."""
    data_name = str(get("data.name", "") or "")
    for part in data_name.split("+"):
        name = part.strip().partition("/")[0]
        if name in UNLABELLED:
            shown = repr(data_name) if data_name.strip() == name else f"{data_name!r} ({name})"
            raise ValueError(f"{_field(where, 'data.name')}={shown} has no labels; only data.task='fcmae' reads "
                             f"it, not data.task={task!r}")


def _field(where: str, dotted: str) -> str:
    return f"config field {dotted}" if where == "config" else f"{where}: {dotted}"


def _as_configdict(d: Any) -> ml_collections.ConfigDict:
    return d if isinstance(d, ml_collections.ConfigDict) else ml_collections.ConfigDict(dict(d))


def label_names(config: Any, spec: RunSpec) -> tuple[str, ...]:
    """Names of the ``label`` of a run's data batches: the head's classes (classification); for segmentation,
    whose head is background/tumour, the dataset's classes, which give each slice's tumour type."""
    if spec.task == "classification":
        return spec.class_names
    return tuple(dataset_class_names(_as_configdict(lookup(config, "data"))))


def _input_spec(get, where: str) -> InputSpec:
    s = get("data.image_size")
    if isinstance(s, (list, tuple)) and len(s) == 2 and s[0] == s[1]:
        s = s[0]
    if not (isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < int(s) and int(s) ** 2 <= MAX_PIXELS):
        raise ValueError(f"{_field(where, 'data.image_size')} = {s!r}; expected a positive int (square images) "
                         f"of at most {math.isqrt(MAX_PIXELS)}")
    raw = {f: get(f"data.{f}") for f in ("mean", "std", "upper_percentile")}
    try:
        mean, std = (tuple(float(v) for v in raw[f]) for f in ("mean", "std"))
        pct = float(raw["upper_percentile"])
    except (TypeError, ValueError):
        raise ValueError(f"{_field(where, 'data.mean/std/upper_percentile')}: expected numbers, got "
                         f"{raw}") from None
    if len(mean) != 3 or len(std) != 3 or not all(v > 0 for v in std):
        raise ValueError(f"{_field(where, 'data.mean/std')}: expected three numbers each, std > 0")
    return InputSpec(image_size=int(s), upper_percentile=pct, mean=mean, std=std)


# ------------------------------------------------------------------------------------------ workdirs


def check_workdir(spec: RunSpec, wd: Path) -> bool:
    """True when ``wd`` holds a run of the same model to resume; ValueError when it holds another one.

    Compares ``RunSpec.identity``: model name, variant, task and the head's classes. A workdir written before
    RunSpec existed is read the same way: its ``config.json`` is resolved into a spec (the class rule is the
    one that wrote it), so older runs compare equal to today's config of the same model.
    """
    if not (wd / workdir.CONFIG).is_file():
        if workdir.has_checkpoint(wd):
            raise ValueError(f"{wd}: holds checkpoints but no {workdir.CONFIG}; use a fresh --workdir")
        return False
    saved = workdir.read_config_dict(wd)
    theirs = {f: lookup(saved, f, None) for f in IDENTITY_FIELDS}
    ours = spec.identity
    diffs = [f"{f}: workdir has {theirs[f]!r}, config has {ours[f]!r}" for f in IDENTITY_FIELDS if theirs[f] != ours[f]]
    if not diffs:
        saved_names = RunSpec.from_config(saved, where=str(wd / workdir.CONFIG)).class_names
        if list(saved_names) != ours["classes"]:
            diffs.append(f"classes: workdir has {list(saved_names)}, config has {ours['classes']}")
    if diffs:
        raise ValueError(f"{wd} holds a checkpoint of another model ({'; '.join(diffs)}); nothing was changed. "
                         "Use a fresh --workdir.")
    return workdir.has_checkpoint(wd)
