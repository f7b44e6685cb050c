"""config.json fields read the way transformers reads them: an absent field takes transformers' default.

transformers 5.24's ``save_pretrained`` leaves out the ``PreTrainedConfig``-level values equal to their
defaults (``id2label``/``label2id`` of a 2-label model); configs written by other tools or trimmed by hand
may lack any field equal to the config class's default, and transformers loads both the same way.
"""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import brain_jax.models as models
from brain_jax.convert import ConversionError, arch_module, config_json, from_hf
from tests.model_helpers import call_jit

# fields a converter may read that are not transformers defaults: identity, labels, optional consistency checks
NOT_DEFAULTS = {"model_type", "architectures", "id2label", "num_labels", "num_stages", "num_encoder_blocks",
                "head_dim"}


def test_converters_read_exactly_the_fields_of_the_table(monkeypatch):
    """Every field a converter reads is in DEFAULTS (or identity/labels), and every DEFAULTS entry is read."""
    read: set[str] = set()

    class Recorder(dict):
        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

        def __contains__(self, key):
            read.add(key)
            return super().__contains__(key)

    complete = config_json.complete
    monkeypatch.setattr(config_json, "complete", lambda hf: Recorder(complete(hf)))
    for model_type, table in config_json.DEFAULTS.items():
        read.clear()
        arch_module(model_type).config_from_hf({"model_type": model_type})
        own = {"drop_path_rate"} if model_type == "vit" else set()  # brain-jax's own ViT field, default 0
        assert read - set(table) <= NOT_DEFAULTS | own, model_type
        assert set(table) <= read, (model_type, set(table) - read)


@pytest.mark.parametrize("model_type,variant", [("convnextv2", "tiny"), ("convnext", "tiny"), ("swin", "tiny_w7"),
                                                ("vit", "base_16"), ("segformer", "b0")])
def test_a_config_with_only_model_type_is_transformers_default_model(model_type, variant):
    """transformers' default config of each architecture is the tiny/base/b0 size with 2 labels."""
    cfg = arch_module(model_type).config_from_hf({"model_type": model_type}, "x/config.json")
    assert cfg == models.module_for(model_type).config_for(model_type, variant, 2)


def test_labels_without_id2label_and_bad_labels():
    read = config_json.read_labels
    assert read(config_json.complete({"model_type": "vit"}), "c") == (2, ())
    assert read(config_json.complete({"model_type": "vit", "num_labels": 3}), "c") == (3, ())
    assert read(config_json.complete({"model_type": "vit", "num_labels": 0}), "c") == (0, ())
    assert read({"id2label": {"1": "b", "0": "a"}}, "c") == (2, ("a", "b"))
    assert read({"id2label": {"0": "background", "1": "tumour"}}, "c", ("background", "tumour")) == (2, ())
    with pytest.raises(ConversionError, match="c: id2label keys must be 0..1"):
        read({"id2label": {"0": "a", "2": "b"}}, "c")
    with pytest.raises(ConversionError, match="c: num_labels 3 != 2 id2label entries"):
        read({"id2label": {"0": "a", "1": "b"}, "num_labels": 3}, "c")
    with pytest.raises(ConversionError, match="c: needs id2label or a non-negative num_labels"):
        read(config_json.complete({"model_type": "vit", "num_labels": -1}), "c")


# --------------------------------------------------------------------------- against transformers (torch)


def _config_class(model_type: str):
    import transformers

    return transformers.AutoConfig.for_model(model_type).__class__


@pytest.mark.torch
@pytest.mark.parametrize("model_type", list(config_json.DEFAULTS))
def test_table_equals_transformers_defaults(model_type):
    import transformers

    defaults = _config_class(model_type)().to_dict()
    for field, value in config_json.DEFAULTS[model_type].items():
        assert defaults[field] == value, (model_type, field)
    base = transformers.PretrainedConfig()
    assert base.num_labels == config_json.DEFAULT_NUM_LABELS
    assert tuple(base.id2label.values()) == config_json.placeholder_names(config_json.DEFAULT_NUM_LABELS)


def _hf_model(model_type: str):
    """A randomised tiny HF model: sizes set, every other field (labels included) at transformers' default."""
    from tests.fixtures import make_golden as g

    if model_type in ("convnextv2", "convnext"):
        return g.hf_model(model_type, seed=1, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1]), (2, 3, 32, 32)
    if model_type == "swin":  # window 7, 224 px, patch 4 by default
        return g.hf_swin(seed=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2], drop_path_rate=0.1), (1, 3, 56, 56)
    if model_type == "vit":  # 224 px, patch 16 by default
        return g.hf_vit(seed=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64), (1, 3, 224, 224)
    return g.hf_segformer("seg", seed=4, drop_path_rate=0.1, classifier_dropout_prob=0.1), (1, 3, 64, 96)


@pytest.mark.torch
@pytest.mark.parametrize("model_type", list(config_json.DEFAULTS))
def test_configs_written_by_transformers_load_with_parity(tmp_path, model_type):
    import torch
    from transformers import AutoConfig

    hf, shape = _hf_model(model_type)
    hf.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert not {"id2label", "label2id", "num_labels"} & set(saved)  # 2 labels: transformers writes none

    # the same config with every field equal to the class default left out, as a hand-written config may be
    defaults = _config_class(model_type)().to_dict()
    trimmed = {k: v for k, v in saved.items() if k == "model_type" or k not in defaults or defaults[k] != v}
    absent = set(config_json.DEFAULTS[model_type]) - set(trimmed)
    assert {"num_channels", "hidden_act"} <= absent and len(absent) >= 4, absent
    (tmp_path / "trimmed").mkdir()
    (tmp_path / "trimmed" / "config.json").write_text(json.dumps(trimmed))
    (tmp_path / "trimmed" / "model.safetensors").symlink_to(tmp_path / "saved" / "model.safetensors")
    full, short = (AutoConfig.from_pretrained(tmp_path / d).to_dict() for d in ("saved", "trimmed"))
    for field in (*config_json.DEFAULTS[model_type], "id2label"):
        assert short[field] == full[field], field  # transformers reads both the same

    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        want = hf(torch.from_numpy(x)).logits.numpy()
    if want.ndim == 4:
        want = want.transpose(0, 2, 3, 1)
    loaded = [from_hf(tmp_path / d) for d in ("saved", "trimmed")]
    assert loaded[0].config == loaded[1].config
    assert loaded[0].config.num_labels == 2 and loaded[0].config.label_names == ()
    for model in loaded:
        np.testing.assert_allclose(np.asarray(call_jit(model, jnp.asarray(x.transpose(0, 2, 3, 1)))), want,
                                   atol=1e-4, rtol=0)
