"""The model registry: every architecture module exports the same functions, and random init is pinned.

The checksums below were computed before the registry and shared layers were unified (same seeds):
a refactor that changes any initial parameter, its dtype, shape or dotted path fails here. The backbone
sizes that ``brain_jax.models.provenance`` pins are rebuilt here too, and its pre-training descriptions
cover every checkpoint the configs start from.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import brain_jax.models as models
from brain_jax.models import provenance
from brain_jax.models.weights import model_variables

REGISTRY_FUNCTIONS = ("variants", "config_for", "config_from_dict", "from_config", "create")


def test_every_architecture_module_exports_the_same_registry():
    modules = {models.module_for(name) for name in models.NAMES}
    assert len(modules) == 4
    signatures = {}
    for mod in modules:
        for fn in REGISTRY_FUNCTIONS:
            signatures.setdefault(fn, set()).add(str(inspect.signature(getattr(mod, fn))))
        assert isinstance(mod.VARIANTS, dict), mod.__name__
    assert all(len(s) == 1 for s in signatures.values()), signatures
    create = inspect.signature(models.module_for("vit").create).parameters
    assert list(create) == ["name", "variant", "num_classes", "dtype", "rngs", "overrides"]
    assert create["rngs"].kind is inspect.Parameter.KEYWORD_ONLY and create["rngs"].default is inspect.Parameter.empty
    for name in models.NAMES:
        mod = models.module_for(name)
        assert "test" in models.variants(name) and models.variants(name) == mod.variants(name)
        table = mod.VARIANTS[name] if name.startswith("convnext") else mod.VARIANTS
        assert tuple(table) == models.variants(name)
        with pytest.raises(ValueError, match=f"unknown {name} variant 'nope'; expected one of .*test"):
            mod.config_for(name, "nope", 3)


@pytest.mark.parametrize("name", models.NAMES)
def test_unknown_override_names_it_and_lists_the_valid_ones(name):
    mod = models.module_for(name)
    with pytest.raises(ValueError) as err:
        mod.config_for(name, "test", 3, drop_path_rat=0.1)
    msg = str(err.value)
    assert f"unknown {name} override 'drop_path_rat'" in msg and "drop_path_rate" in msg and "dropout" in msg
    # every architecture takes the shared alias "dropout", JSON-style lists, and rebuilds from asdict
    cfg = mod.config_for(name, "test", 3, dropout=0.25, drop_path_rate=0)
    assert cfg.num_labels == 3 and cfg.drop_path_rate == 0.0 and isinstance(cfg.drop_path_rate, float)
    assert 0.25 in json.loads(json.dumps(cfg.__dict__)).values()
    assert mod.config_from_dict(json.loads(json.dumps(cfg.__dict__))) == cfg


def test_config_values_of_the_wrong_kind_are_refused_by_field():
    mod = models.module_for("swin")
    with pytest.raises(ValueError, match="SwinConfig.depths: expected a list"):
        mod.config_for("swin", "test", 3, depths=2)
    with pytest.raises(ValueError, match="SwinConfig.embed_dim: expected an integer, got 16.5"):
        mod.config_for("swin", "test", 3, embed_dim=16.5)
    with pytest.raises(ValueError, match="SwinConfig.qkv_bias: expected true/false"):
        mod.config_for("swin", "test", 3, qkv_bias="yes")


# model, variant, classes, overrides -> sha256 (first 16 hex digits) of every Param/BatchStat
# (path, type, dtype, shape, bytes) and of all variables including the RNG streams' keys and counts.
PINNED = {
    ("convnextv2", 4, ()): ("61797231daa3c669", "be6eb8eed096d8fe"),
    ("convnext", 4, ()): ("8f63107df0a65966", "ccede9a3d9962216"),
    ("swin", 4, ()): ("bdd05cee3063e59c", "4c92868409a349cb"),
    ("vit", 4, ()): ("6a53f427e3a8025f", "e874be382b93a73f"),
    ("segformer", 4, ()): ("3713abdc6f70b250", "164a65852226f20f"),
    ("segformer", 2, ()): ("39ec0ce5bb6dc89d", "ac956f7b73274bb5"),
    ("segformer", 2, (("strides", (2, 2, 2, 2)),)): ("39ec0ce5bb6dc89d", "ac956f7b73274bb5"),
    ("segformer", 4, (("task", "classification"),)): ("e8b21cf1376c3272", "2ed7da0e2f007dd6"),
    ("convnextv2", 4, (("drop_path_rate", 0.1), ("dropout", 0.1))): ("61797231daa3c669", "685bb13a8140a8f1"),
    ("convnext", 4, (("drop_path_rate", 0.1),)): ("8f63107df0a65966", "90c50dd0317285f7"),
    ("swin", 4, (("attention_dropout", 0.1), ("drop_path_rate", 0.1), ("dropout", 0.1))):
        ("bdd05cee3063e59c", "a616c620e2cec65c"),
    ("vit", 4, (("attention_dropout", 0.1), ("drop_path_rate", 0.1), ("dropout", 0.1))):
        ("6a53f427e3a8025f", "64cf7e83664f1cb8"),
    ("segformer", 2, (("drop_path_rate", 0.1), ("dropout", 0.1))): ("39ec0ce5bb6dc89d", "3cd90796f03d50fa"),
}


def _digests(model: nnx.Module) -> tuple[str, str]:
    import jax

    params, everything = hashlib.sha256(), hashlib.sha256()
    leaves = [(".".join(map(str, p)), v) for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)]
    for path, var in sorted(leaves, key=lambda t: t[0]):
        value = var.get_value()
        arr = np.asarray(jax.random.key_data(value) if isinstance(var, nnx.RngKey) else value)
        record = f"{path}|{type(var).__name__}|{arr.dtype}|{arr.shape}".encode() + arr.tobytes()
        everything.update(record)
        if isinstance(var, (nnx.Param, nnx.BatchStat)):
            params.update(record)
    return params.hexdigest()[:16], everything.hexdigest()[:16]


@pytest.mark.parametrize("name,classes,overrides", list(PINNED), ids=lambda v: str(v))
def test_random_init_is_pinned(name, classes, overrides):
    model = models.create(name, "test", classes, rngs=nnx.Rngs(params=0, dropout=1), **dict(overrides))
    assert _digests(model) == PINNED[(name, classes, overrides)]


# --------------------------------------------------------------------------- provenance


def _backbone_parameters(name: str, variant: str, classes: int = 4) -> int:
    """Params outside the head of an abstract build (no weights allocated); SegFormer in its classifier form,
    whose only head is the classifier, so that the count is the MiT encoder's."""
    kw = {"task": "classification"} if name == "segformer" else {}
    model = nnx.eval_shape(lambda: models.create(name, variant, classes, **kw))
    head = tuple(model.head_paths)
    return sum(math.prod(v.get_value().shape) for p, v in model_variables(model).items()
               if isinstance(v, nnx.Param) and not any(p == h or p.startswith(h + ".") for h in head))


@pytest.mark.parametrize("name,variant", list(provenance.BACKBONE_PARAMETERS))
def test_pinned_backbone_parameters_match_the_model(name, variant):
    assert provenance.backbone_parameters(name, variant) == _backbone_parameters(name, variant)


def test_backbone_parameters_leave_out_the_head_only():
    whole = nnx.eval_shape(lambda: models.create("vit", "test", 7))
    total = sum(math.prod(v.get_value().shape) for v in model_variables(whole).values())
    head = 32 * 7 + 7  # hidden 32 -> 7 classes, with bias
    assert _backbone_parameters("vit", "test", 3) == _backbone_parameters("vit", "test", 7) == total - head
    assert provenance.backbone_parameters("vit", "test") is None


# Every config (file:argument) whose init_from must be described: the paper's configs, and the per-model
# configs at the sizes they list whose Hub id is a known release (see provenance.PRETRAINING).
CONFIG_ARGS = (
    [f"paper/classifier.py:model={m}{w}" for m in ("convnextv2", "convnext", "swin", "vit")
     for w in ("", ",weights=matched")]
    + [f"{f}.py:variant=b{i}" for f in ("paper/segformer", "segformer_seg") for i in range(6)]
    + [f"convnextv2_cls.py:variant={v}" for v in ("atto", "femto", "pico", "nano", "tiny", "base", "large")]
    + [f"convnext_cls.py:variant={v}" for v in ("tiny", "small", "base", "large")]
    + [f"swin_cls.py:variant={v}" for v in ("tiny", "small", "base", "large")]
    + [f"vit_cls.py:variant={v}" for v in ("base_16", "large_16")]
)


def test_every_checkpoint_the_configs_start_from_has_its_pretraining_described():
    from brain_jax.train.config import load_config

    described = {load_config(f"configs/{arg}").init_from: arg for arg in CONFIG_ARGS}
    unknown = {i: arg for i, arg in described.items() if provenance.pretraining(i).startswith("unknown")}
    assert not unknown, unknown
    assert provenance.pretraining(load_config("configs/demo.py").init_from) == "random initialisation"
    assert provenance.pretraining(None) == provenance.pretraining("") == "random initialisation"
    assert provenance.pretraining("workdirs/x") == "unknown (workdirs/x)"
    paper, matched = (provenance.describe("vit", v, i) for v, i in (
        ("base_16", "google/vit-base-patch16-224"), ("small_16", "facebook/deit-small-patch16-224")))
    assert "ImageNet-21k" in paper["pretraining"] and "21k" not in matched["pretraining"]
    assert paper["backbone_parameters"] > 3 * matched["backbone_parameters"]


def test_provenance_loads_no_jax():
    code = "import sys, brain_jax.models.provenance; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
