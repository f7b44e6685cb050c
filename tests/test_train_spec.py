"""RunSpec: a run's facts resolved once from its config, with errors that name the field; the one dotted-field
rule; the workdir identity check; and the source rule that nothing else derives those facts."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from brain_jax import workdir
from brain_jax.train.config import load_config
from brain_jax.train.spec import RunSpec, check_workdir, lookup

ROOT = Path(__file__).resolve().parents[1]


def test_spec_of_each_task():
    cls = RunSpec.from_config(load_config("configs/convnextv2_cls.py:runlocal"))
    assert (cls.task, cls.model_name, cls.variant, cls.dtype) == ("classification", "convnextv2", "test", "float32")
    assert cls.class_names == ("glioma", "meningioma", "notumor", "pituitary") and cls.num_classes == 4
    assert cls.label == "convnextv2-test"
    assert cls.identity == {"model.name": "convnextv2", "model.variant": "test", "data.task": "classification",
                            "classes": ["glioma", "meningioma", "notumor", "pituitary"]}
    fig = RunSpec.from_config(load_config("configs/paper/classifier.py:dataset=figshare"))
    assert fig.class_names == ("glioma", "meningioma", "pituitary")  # Figshare alone is 3-class
    seg = RunSpec.from_config(load_config("configs/segformer_seg.py:runlocal", ["--config.model.dtype=bfloat16",
                                                                              "--config.data.image_size=32"]))
    assert seg.class_names == ("background", "tumour") and seg.dtype == "bfloat16"
    assert seg.input.image_size == 32 and seg.input.std == (0.229, 0.224, 0.225)


def test_a_plain_dict_resolves_like_its_config():
    config = load_config("configs/convnextv2_cls.py:runlocal")
    assert RunSpec.from_config(workdir.config_to_dict(config)) == RunSpec.from_config(config)


@pytest.mark.parametrize("override,message", [
    ("--config.model.name=resnet", r"config field model.name: unknown model 'resnet'"),
    ("--config.model.variant=enormous", r"config field model.variant: unknown convnextv2 variant 'enormous'"),
    ("--config.model.dtype=float64", r"config field model.dtype: 'float64'; expected one of float32"),
    ("--config.data.task=segmentation", r"data.task='segmentation' does not fit model.name='convnextv2'"),
    ("--config.batch_size=0", r"config field batch_size must be a positive integer, got 0"),
    ("--config.data.image_size=100000", r"data.image_size = 100000; expected a positive int"),
    ("--config.data.classes=glioma,tumour", r"config field data.classes names unknown class"),
])
def test_bad_fields_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        RunSpec.from_config(load_config("configs/convnextv2_cls.py:runlocal", [override]))


def test_a_workdir_config_names_its_file(tmp_path):
    d = workdir.config_to_dict(load_config("configs/convnextv2_cls.py:runlocal"))
    del d["data"]["mean"]
    where = str(tmp_path / workdir.CONFIG)
    with pytest.raises(ValueError, match=f"{tmp_path}.*missing field 'data.mean'"):
        RunSpec.from_config(d, where=where)


def test_lookup_is_one_rule_for_configs_and_dicts():
    config = load_config("configs/convnextv2_cls.py:runlocal")
    plain = workdir.config_to_dict(config)
    for c in (config, plain):
        assert lookup(c, "data.image_size") == 64
        assert lookup(c, "model.kwargs") == {"drop_path_rate": 0.1}  # a group comes back as a plain dict
        assert lookup(c, "data.nope", None) is None
        with pytest.raises(ValueError, match=r"cfg\.json: missing field 'data\.nope\.x'"):
            lookup(c, "data.nope.x", where="cfg.json")


def test_check_workdir_compares_the_identity(tmp_path):
    config = load_config("configs/convnextv2_cls.py:runlocal")
    spec = RunSpec.from_config(config)
    assert check_workdir(spec, tmp_path / "fresh") is False
    workdir.write_config(tmp_path, config)
    assert check_workdir(spec, tmp_path) is False  # same run, nothing saved yet
    (tmp_path / workdir.CHECKPOINTS / "4").mkdir(parents=True)
    assert check_workdir(spec, tmp_path) is True
    other = RunSpec.from_config(load_config("configs/convnextv2_cls.py:runlocal", ["--config.model.variant=atto"]))
    with pytest.raises(ValueError, match=r"model.variant: workdir has 'test', config has 'atto'"):
        check_workdir(other, tmp_path)
    three = RunSpec.from_config(load_config("configs/convnextv2_cls.py:runlocal",
                                            ["--config.data.classes=glioma,meningioma,pituitary",
                                             "--config.data.name=figshare_brain_tumor"]))
    with pytest.raises(ValueError, match=r"classes: workdir has \['glioma', 'meningioma', 'notumor', 'pituitary'\]"):
        check_workdir(three, tmp_path)


def test_a_workdir_from_before_the_spec_reads_the_same():
    # tests/fixtures/workdir_v0 was written before RunSpec (and before model kwargs were saved as now)
    old = ROOT / "tests" / "fixtures" / "workdir_v0" / "cls"
    saved = json.loads((old / workdir.CONFIG).read_text())
    spec = RunSpec.from_config(saved, where=str(old / workdir.CONFIG))
    assert spec.identity["model.name"] == "convnextv2" and spec.num_classes == 4
    assert check_workdir(spec, old) is True


def test_spec_module_imports_no_jax():
    code = ("import sys, brain_jax.train.spec as s; "
            "from brain_jax.train.config import load_config; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'tensorflow', 'grain'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ------------------------------------------------------------------------ one place for each fact


def _calls(name: str) -> list[str]:
    """``file:line`` of every call of a function named ``name`` in brain_jax/ (attribute or bare name)."""
    found = []
    for path in sorted((ROOT / "brain_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if called == name:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _spec_only(places: list[str]) -> list[str]:
    return [p for p in places if not p.startswith("brain_jax/train/spec.py:")]


def test_class_names_and_dtype_are_derived_only_in_the_spec():
    # the dataset's head rule (input_pipeline.labels.class_names) is called from the spec alone
    assert _calls("dataset_class_names") and not _spec_only(_calls("dataset_class_names"))
    assert not _calls("class_names"), "brain_jax calls a class_names() rule outside the spec"
    assert not _calls("num_classes")
    dtype_files = {p.split(":")[0] for p in _calls("check_dtype")}
    assert dtype_files == {"brain_jax/train/spec.py", "brain_jax/train/model_factory.py"}, dtype_files
    # the dtype names and the segmentation head are written down once in the layers that read runs (the
    # SegFormer module keeps HF's own default label names for a model built without a run)
    text = {p: p.read_text() for d in ("app", "train") for p in (ROOT / "brain_jax" / d).rglob("*.py")}
    text |= {p: p.read_text() for p in (ROOT / "brain_jax").glob("*.py")}
    assert [p.name for p, t in text.items() if '"bfloat16"' in t] == ["spec.py"]
    assert [p.name for p, t in text.items() if '("background", "tumour")' in t] == ["spec.py"]


# Each verb builds the spec once: asserted (``spec_builds``, tests/conftest.py) inside runs other tests make
# anyway: training in tests/test_train_engine.py (a signal in the last step), eval and predict in
# tests/test_workdir_compat.py, explain in tests/test_app_explain.py.
