"""configs/paper/: the paper's stated settings, and one recipe shared by the four classifiers."""
from __future__ import annotations

import importlib

import pytest
from flax import nnx

from brain_jax import models
from brain_jax.train.config import load_config
from brain_jax.train.spec import RunSpec

MODELS = ("convnextv2", "convnext", "swin", "vit")
# model -> (model.name, model.variant, init_from, (mean, std)) for each value of the config argument weights
HALF, IMAGENET = ((0.5,) * 3, (0.5,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
WEIGHTS = {
    "paper": {
        "convnextv2": ("convnextv2", "tiny", "facebook/convnextv2-tiny-22k-224", IMAGENET),
        "convnext": ("convnext", "tiny", "facebook/convnext-tiny-224", IMAGENET),
        "swin": ("swin", "tiny_w7", "microsoft/swin-tiny-patch4-window7-224", IMAGENET),
        "vit": ("vit", "base_16", "google/vit-base-patch16-224", HALF),
    },
    "matched": {
        "convnextv2": ("convnextv2", "tiny", "facebook/convnextv2-tiny-1k-224", IMAGENET),
        "convnext": ("convnext", "tiny", "facebook/convnext-tiny-224", IMAGENET),
        "swin": ("swin", "tiny_w7", "microsoft/swin-tiny-patch4-window7-224", IMAGENET),
        "vit": ("vit", "small_16", "facebook/deit-small-patch16-224", IMAGENET),
    },
}


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


@pytest.mark.parametrize("arg", ["", ",split=group", ",dataset=figshare", ",runlocal", ",weights=matched",
                                 ",weights=matched,runlocal"])
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
    # only the checkpoint's own input normalisation differs (Google's ViT was pre-trained with 0.5 / 0.5)
    vit_mean = (0.5, 0.5, 0.5) if "matched" not in arg else IMAGENET[0]
    assert tuple(configs["vit"].data.mean) == vit_mean and tuple(c.data.mean) != (0.5, 0.5, 0.5)


@pytest.mark.parametrize("weights", list(WEIGHTS))
def test_weights_pick_the_checkpoints(weights):
    for m in MODELS:
        c = load_config(f"configs/paper/classifier.py:model={m},weights={weights}")
        assert (c.model.name, c.model.variant, c.init_from, (tuple(c.data.mean), tuple(c.data.std))) == \
            WEIGHTS[weights][m], m
        if weights == "paper":  # the default: the paper's run, the whole config as before the argument
            assert c.to_dict() == load_config(f"configs/paper/classifier.py:model={m}").to_dict()


def test_a_bad_weights_value_names_the_argument():
    with pytest.raises(ValueError, match="weights='imagenet'; expected paper .* or matched"):
        load_config("configs/paper/classifier.py:model=vit,weights=imagenet")


@pytest.mark.parametrize("model", MODELS)
def test_runlocal_builds_each_matched_model(model):
    spec = RunSpec.from_config(load_config(f"configs/paper/classifier.py:model={model},weights=matched,runlocal"))
    assert (spec.variant, spec.init_from) == ("test", "")  # random init of the tiny size: no download
    net = nnx.eval_shape(lambda: models.create(spec.model_name, spec.variant, spec.num_classes, **spec.model_kwargs))
    assert net.config.num_labels == len(spec.class_names) == 4


def test_segformer_has_the_papers_stated_settings():
    c = load_config("configs/paper/segformer.py")
    assert (c.optimizer.name, c.optimizer.lr, c.batch_size, c.num_epochs) == ("adam", 6e-4, 10, 15.0)
    assert class_names(c) == ("background", "tumour") and c.data.name == "figshare_brain_tumor"
    assert c.best_metric == "miou"


@pytest.mark.parametrize("name", ["classifier", "segformer"])
def test_docstrings_separate_the_papers_settings_from_ours(name):
    doc = importlib.import_module(f"configs.paper.{name}").__doc__
    assert "Stated by the paper" in doc and "Ours, because the paper does not state them" in doc


def test_vit_small_starts_from_deit_with_its_normalisation():
    """configs/vit_cls.py:variant=small_16 names the one ViT-S/16 at 224 on the Hub (DeiT-S), not a made-up
    google/ id, and keeps DeiT's ImageNet mean / std where Google's ViTs use 0.5 / 0.5."""
    small = load_config("configs/vit_cls.py:variant=small_16")
    assert small.init_from == "facebook/deit-small-patch16-224" and tuple(small.data.mean) == IMAGENET[0]
    assert load_config("configs/vit_cls.py").init_from == "google/vit-base-patch16-224"
    assert small.init_from == load_config("configs/paper/classifier.py:model=vit,weights=matched").init_from
