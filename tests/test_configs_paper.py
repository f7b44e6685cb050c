"""configs/paper/: the paper's stated settings, and one recipe shared by the four classifiers."""
from __future__ import annotations

import importlib

import pytest

from brain_jax.train.config import load_config
from brain_jax.train.spec import RunSpec

MODELS = ("convnextv2", "convnext", "swin", "vit")


def class_names(config):
    return RunSpec.from_config(config).class_names

# What a comparison must not vary between models (the recipe), as dotted config fields.
RECIPE = ("batch_size", "num_epochs", "num_train_steps", "optimizer", "loss", "data.image_size", "data.augment",
          "data.name", "data.split_by", "data.dedup", "data.group_split_fractions", "data.seed", "seed",
          "model.dtype", "model.kwargs.drop_path_rate", "best_metric")


def _get(c, dotted):
    for part in dotted.split("."):
        c = c[part]
    return c.to_dict() if hasattr(c, "to_dict") else c


@pytest.mark.parametrize("arg", ["", ",split=group", ",dataset=figshare", ",runlocal"])
def test_four_classifiers_share_one_recipe(arg):
    configs = {m: load_config(f"configs/paper/classifier.py:model={m}{arg}") for m in MODELS}
    for field in RECIPE:
        values = {m: _get(c, field) for m, c in configs.items()}
        assert len({repr(v) for v in values.values()}) == 1, (field, values)
    c = configs["convnextv2"]
    assert c.optimizer.name == "adam" and c.data.task == "classification"
    if not arg:  # the paper's protocol: the merged pool, every copy kept, split at random
        assert c.data.name == "figshare_brain_tumor+brain_tumor_mri"
        assert (c.data.split_by, c.data.dedup) == ("random", "none")
        assert {m: c.model.name for m, c in configs.items()} == {m: m for m in MODELS}
        assert class_names(c) == ("glioma", "meningioma", "notumor", "pituitary")
    if arg == ",dataset=figshare":
        assert class_names(c) == ("glioma", "meningioma", "pituitary")  # Figshare alone is 3-class
    # only the checkpoint's own input normalisation differs (ViT was pre-trained with 0.5 / 0.5)
    assert tuple(configs["vit"].data.mean) == (0.5, 0.5, 0.5) and tuple(c.data.mean) != (0.5, 0.5, 0.5)


def test_segformer_has_the_papers_stated_settings():
    c = load_config("configs/paper/segformer.py")
    assert (c.optimizer.name, c.optimizer.lr, c.batch_size, c.num_epochs) == ("adam", 6e-4, 10, 15.0)
    assert class_names(c) == ("background", "tumour") and c.data.name == "figshare_brain_tumor"
    assert c.best_metric == "miou"


@pytest.mark.parametrize("name", ["classifier", "segformer"])
def test_docstrings_separate_the_papers_settings_from_ours(name):
    doc = importlib.import_module(f"configs.paper.{name}").__doc__
    assert "Stated by the paper" in doc and "Ours, because the paper does not state them" in doc
