"""Config loading / overrides, layer-wise lr decay, and starting from pretrained weights (no training)."""
from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brain_jax.models.weights import model_variables
from brain_jax.train import model_factory, optim
from brain_jax.train.spec import RunSpec
from brain_jax.train.config import apply_overrides, load_config

ALL_CONFIGS = ["convnextv2_cls", "convnext_cls", "swin_cls", "vit_cls", "segformer_seg", "demo"]


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_loads_and_validates(name):
    c = load_config(f"configs/{name}.py")
    RunSpec.from_config(c)
    if name != "demo":
        r = load_config(f"configs/{name}.py:runlocal")
        RunSpec.from_config(r)
        assert r.model.variant == "test" and r.init_from == "" and r.data.name == "brain_phantoms"


CONFIG_FILES = sorted(str(p) for p in Path("configs").glob("*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_every_config_file_loads_with_its_defaults(path):
    RunSpec.from_config(load_config(path))


def test_fcmae_effect_stages_fit_together():
    """The experiment's two stages: the same variant and image size (so the encoder transfers), the fine-tune
    starting from the named pretraining workdir or from scratch, and nothing else different between the arms."""
    pre = load_config("configs/fcmae_effect.py:stage=pretrain")
    scratch = load_config("configs/fcmae_effect.py:label_fraction=0.05")
    tuned = load_config("configs/fcmae_effect.py:label_fraction=0.05,pretrained=/runs/pre")
    assert pre.data.task == "fcmae" and scratch.data.task == tuned.data.task == "classification"
    for c in (scratch, tuned):
        assert (c.model.variant, c.data.image_size, c.data.builder_config) == (
            pre.model.variant, pre.data.image_size, pre.data.builder_config)
    assert scratch.init_from == "" and tuned.init_from == "/runs/pre"
    diff = {k for k, v in tuned.to_dict().items() if scratch.to_dict()[k] != v}
    assert diff == {"init_from"} and tuned.data.label_fraction == 0.05
    assert pre.data.image_size % 32 == 0 and (pre.data.image_size // 32) ** 2 * 0.4 >= 2  # >= 2 visible cells
    with pytest.raises(ValueError, match="stage"):
        load_config("configs/fcmae_effect.py:stage=finetuning")


def test_config_arguments_select_variant_and_pretrained_id():
    c = load_config("configs/convnextv2_cls.py:variant=base,dataset=figshare")
    assert c.model.variant == "base" and c.init_from == "facebook/convnextv2-base-22k-224"
    assert c.data.name == "figshare_brain_tumor" and c.data.test_split == "fold5"
    assert load_config("convnextv2_cls:variant=nano").init_from == "facebook/convnextv2-nano-1k-224"
    s = load_config("configs/segformer_seg.py")
    # the paper's SegFormer recipe
    assert (s.optimizer.name, s.optimizer.lr, s.batch_size, s.num_epochs) == ("adam", 6e-4, 10, 15.0)
    assert s.init_from == "nvidia/mit-b0" and s.data.task == "segmentation"
    with pytest.raises(ValueError, match=r"'varaint' is not known; valid: dataset, .*runlocal, variant"):
        load_config("configs/convnextv2_cls.py:varaint=tiny")


def test_overrides_take_the_field_type_and_reject_unknown_keys():
    c = load_config("configs/convnextv2_cls.py", ["--config.optimizer.lr=3e-4", "--config.num_train_steps=7",
                                                  "--config.progress_bar=false", "--config.loss.class_weights=1,2,3,4",
                                                  "--config.data.mean=(0.5,0.5,0.5)"])
    assert c.optimizer.lr == 3e-4 and c.num_train_steps == 7 and c.progress_bar is False
    assert tuple(c.loss.class_weights) == (1, 2, 3, 4)
    assert tuple(c.data.mean) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"optimizer\.lrr.*valid keys under optimizer:.*\blr\b"):
        apply_overrides(c, ["--config.optimizer.lrr=1"])
    with pytest.raises(ValueError, match="expected an integer"):
        apply_overrides(c, ["--config.batch_size=many"])
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        RunSpec.from_config(load_config("configs/convnextv2_cls.py", ["--config.model.name=resnet"]))
    with pytest.raises(ValueError, match="variant.*'tinyy'"):
        RunSpec.from_config(load_config("configs/convnextv2_cls.py", ["--config.model.variant=tinyy"]))
    with pytest.raises(FileNotFoundError, match="known configs"):
        load_config("configs/nope.py")


def test_layer_ids_follow_depth_and_decay_scales_updates():
    paths = ["convnextv2.embeddings.patch_embeddings.kernel",
             "convnextv2.encoder.stages.0.layers.0.dwconv.kernel",
             "convnextv2.encoder.stages.1.downsampling_layer.1.kernel",
             "convnextv2.encoder.stages.1.layers.0.dwconv.kernel",
             "convnextv2.encoder.stages.1.layers.1.dwconv.kernel",
             "convnextv2.layernorm.scale", "classifier.kernel"]
    ids, top = optim.layer_ids(paths, ("classifier",))
    got = [ids[p] for p in paths]
    assert got[0] == 0 and got[-1] == top and got[-2] == top
    assert got[1] < got[3] < got[4] < top
    scales = optim.layer_decay_scales(paths, ("classifier",), 0.5)
    assert scales["classifier.kernel"] == 1.0 and scales[paths[0]] == 0.5 ** top
    tx = optim.scale_by_tree({"a": 0.5, "b": 2.0})
    upd, _ = tx.update({"a": jnp.ones(2), "b": jnp.ones(2)}, tx.init(None))
    np.testing.assert_allclose(upd["a"], 0.5)
    np.testing.assert_allclose(upd["b"], 2.0)


def test_warmup_cosine_schedule():
    c = load_config("configs/convnextv2_cls.py", ["--config.optimizer.warmup_steps=10"])
    sched = optim.learning_rate_schedule(c.optimizer, 110)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(10)), c.optimizer.lr, rtol=1e-6)
    assert float(sched(60)) == pytest.approx(c.optimizer.lr / 2, rel=1e-3)
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-9)
    _, s2 = optim.make_optimizer(load_config("configs/segformer_seg.py").optimizer, 100)
    assert float(s2(0)) == float(s2(99)) == 6e-4


def _demo_like(num_classes: int, init_from: str = "", variant: str = "test"):
    c = load_config("configs/convnextv2_cls.py:runlocal",
                    [f"--config.init_from={init_from}", f"--config.model.variant={variant}"])
    with c.unlocked():
        c.data.num_classes = num_classes
    return c


def _spec_like(num_classes: int, init_from: str = "", variant: str = "test") -> RunSpec:
    return RunSpec.from_config(_demo_like(num_classes, init_from, variant))


def test_init_from_native_folder_grafts_body_and_refreshes_head(tmp_path):
    from brain_jax import models
    from brain_jax.convert.native import save_native

    pre = models.create("convnextv2", "test", 10)
    save_native(pre, tmp_path / "pre")
    model = model_factory.create_model(_spec_like(4, str(tmp_path / "pre")))
    ours, theirs = model_variables(model), model_variables(pre)
    assert model.config.num_labels == 4
    for path, var in ours.items():
        if path.startswith("classifier"):
            assert var.get_value().shape[-1] == 4
        else:
            np.testing.assert_array_equal(np.asarray(var.get_value()), np.asarray(theirs[path].get_value()))
    # same label count: the head is kept too
    pre4 = models.create("convnextv2", "test", 4, rngs=nnx.Rngs(params=7, dropout=8))
    save_native(pre4, tmp_path / "pre4")
    same = model_factory.create_model(_spec_like(4, str(tmp_path / "pre4")))
    np.testing.assert_array_equal(np.asarray(model_variables(same)["classifier.kernel"].get_value()),
                                  np.asarray(model_variables(pre4)["classifier.kernel"].get_value()))


def test_graft_lists_every_mismatch_and_checks_the_architecture():
    from unittest import mock

    from brain_jax import models

    from flax import nnx

    a = nnx.eval_shape(lambda: models.create("convnextv2", "test", 4))  # shapes are all graft checks
    b = nnx.eval_shape(lambda: models.create("convnextv2", "atto", 4))
    with pytest.raises(ValueError, match=r"problem\(s\)") as e:
        model_factory.graft(a, b, fresh_head=True)
    assert ("embeddings.patch_embeddings.kernel: pretrained model has (4, 4, 3, 40), model expects (4, 4, 3, 8)"
            in str(e.value))
    c = _demo_like(4, "some/checkpoint")
    c.model.name = "convnext"
    with mock.patch.object(model_factory, "load_pretrained", return_value=models.create("convnextv2", "test", 4)):
        with pytest.raises(ValueError, match="holds a convnextv2 model, but model.name is 'convnext'"):
            model_factory.create_model(RunSpec.from_config(c))


@pytest.mark.torch
def test_init_from_hf_save_pretrained_folder(tmp_path):
    import torch
    import transformers

    torch.manual_seed(0)
    hf_cfg = transformers.ConvNextV2Config(depths=[1, 1, 2, 1], hidden_sizes=[8, 16, 32, 64], num_labels=1000)
    transformers.ConvNextV2ForImageClassification(hf_cfg).save_pretrained(tmp_path / "hf")
    model = model_factory.create_model(_spec_like(4, str(tmp_path / "hf")))
    sd = transformers.ConvNextV2ForImageClassification.from_pretrained(tmp_path / "hf").state_dict()
    ours = model_variables(model)
    assert model.config.num_labels == 4 and ours["classifier.kernel"].get_value().shape == (64, 4)
    w = sd["convnextv2.embeddings.patch_embeddings.weight"].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(ours["embeddings.patch_embeddings.kernel"].get_value()), w)


def test_packaged_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("configs/paper/classifier.py").model.name
    assert load_config("paper/segformer").model.name == "segformer"
    assert load_config("convnextv2_cls:runlocal").runlocal
    with pytest.raises(FileNotFoundError, match="known configs: .*paper/classifier"):
        load_config("configs/nope.py")
