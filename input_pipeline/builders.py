"""Builder registry and ``build_dataset``: one entry point for CLI, tests and the demo."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from input_pipeline.features import CLASS_NAMES

# Dataset name -> module defining (and thereby registering with TFDS) its builder class.
BUILDER_MODULES = {
    "brain_phantoms": ("input_pipeline.phantoms", "BrainPhantoms"),
    "figshare_brain_tumor": ("input_pipeline.figshare", "FigshareBrainTumor"),
    "brain_tumor_mri": ("input_pipeline.kaggle", "BrainTumorMri"),
    "unlabelled_mri": ("input_pipeline.unlabelled", "UnlabelledMri"),
}
NEEDS_MANUAL_DIR = {"figshare_brain_tumor", "brain_tumor_mri", "unlabelled_mri"}
# Known without importing the builder modules (they import TFDS, seconds of start-up), so that the
# classes of a config resolve in `predict` too; tests check both tables against the builder classes.
DATASET_CLASSES = {
    "brain_phantoms": CLASS_NAMES,
    "figshare_brain_tumor": ("glioma", "meningioma", "pituitary"),  # no tumour-free slices
    "brain_tumor_mri": CLASS_NAMES,
    "unlabelled_mri": (),  # no labels: its stored label (0) means nothing
}
HAS_BUILDER_CONFIGS = {"brain_phantoms"}
# Datasets with no classes: only pretraining (data.task="fcmae") reads them (brain_jax.train.spec refuses the rest).
UNLABELLED = frozenset(name for name, classes in DATASET_CLASSES.items() if not classes)


def check_name(name: str) -> str:
    if name not in BUILDER_MODULES:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(BUILDER_MODULES)}")
    return name


def builder_class(name: str):
    """The registered builder class for ``name`` (importing its module registers it with TFDS)."""
    module, cls = BUILDER_MODULES[check_name(name)]
    return getattr(importlib.import_module(module), cls)


def build_command(name: str, data_dir: str | os.PathLike, builder_config: str | None = None) -> str:
    """The CLI line that builds ``name`` (quoted in error messages)."""
    cmd = f"brain-jax data build {name} --data-dir {data_dir}"
    if builder_config:
        cmd += f" --config {builder_config}"
    if name in NEEDS_MANUAL_DIR:
        cmd += " --manual-dir DIR_WITH_THE_DOWNLOADED_FILES"
    return cmd


def get_builder(name: str, data_dir: str | os.PathLike, *, builder_config: str | None = None,
                manual_dir: str | os.PathLike | None = None, skip_bad: bool = False):
    """Instantiate the builder (no build)."""
    cls = builder_class(name)
    kwargs = {"data_dir": os.fspath(Path(data_dir).expanduser()), "file_format": "array_record",
              "skip_bad": skip_bad}
    if builder_config:
        names = [c.name for c in cls.BUILDER_CONFIGS]
        if builder_config not in names:
            raise KeyError(f"{name}: unknown builder config {builder_config!r}; expected one of {names}")
        kwargs["config"] = builder_config
    b = cls(**kwargs)
    b._brain_jax_manual_dir = manual_dir  # noqa: SLF001  (kept for error messages)
    return b


def build_dataset(name: str, data_dir: str | os.PathLike, *, manual_dir: str | os.PathLike | None = None,
                  builder_config: str | None = None, skip_bad: bool = False):
    """Build ``name`` as array_record files under ``data_dir``; returns the builder.

    Loads afterwards with ``tfds.data_source(name[/config], split=..., data_dir=data_dir)``.
    """
    import tensorflow_datasets as tfds

    if name in NEEDS_MANUAL_DIR:
        if manual_dir is None:
            raise ValueError(f"{name} needs --manual-dir (the folder holding the files you downloaded):\n"
                             + builder_class(name).MANUAL_DOWNLOAD_INSTRUCTIONS)
        if not Path(manual_dir).expanduser().is_dir():
            raise FileNotFoundError(f"{name}: manual dir {manual_dir} does not exist")
    b = get_builder(name, data_dir, builder_config=builder_config, manual_dir=manual_dir, skip_bad=skip_bad)
    dl = tfds.download.DownloadConfig(
        manual_dir=os.fspath(Path(manual_dir).expanduser()) if manual_dir else None
    )
    b.download_and_prepare(download_config=dl, file_format="array_record")
    bad = getattr(b, "bad_inputs", None)  # set by builders that read user files, during a fresh build
    if bad is not None and bad.problems:
        report = Path(b.data_dir) / "skipped_inputs.json"
        bad.write(report)
        print(f"{name}: built without {len(bad.problems)} bad input(s); list in {report}")
    return b
