"""brain_jax.models.weights: the one all-or-nothing assignment and the one build without random init."""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brain_jax.convert import ConversionError
from brain_jax.models.weights import WeightsMismatch, abstract, assign, model_variables


class _Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.head(self.drop(self.norm(self.body(x))))


def _arrays(model: nnx.Module, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.get_value().shape) for k, v in model_variables(model).items()}


def _snapshot(model: nnx.Module) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.get_value()).copy() for k, v in model_variables(model).items()}


def test_model_variables_are_params_and_batch_stats_by_dotted_path():
    assert sorted(model_variables(_Net(nnx.Rngs(0)))) == [
        "body.bias", "body.kernel", "head.bias", "head.kernel", "norm.bias", "norm.mean", "norm.scale", "norm.var"]


def test_assign_fills_every_variable_cast_to_its_dtype():
    model = _Net(nnx.Rngs(0))
    arrays = _arrays(model)  # float64 on purpose
    assign(model, arrays, source="src")
    for k, v in model_variables(model).items():
        assert v.get_value().dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(v.get_value()), arrays[k].astype(np.float32), err_msg=k)


def test_assign_lists_every_offender_once_and_writes_nothing():
    model = _Net(nnx.Rngs(0))
    before = _snapshot(model)
    arrays = _arrays(model)
    del arrays["body.bias"], arrays["norm.var"]
    arrays["head.kernel"] = np.zeros((5, 2))
    arrays["extra.weight"] = np.zeros((2, 3))
    arrays["buffer.count"] = np.zeros(())
    with pytest.raises(WeightsMismatch) as err:
        assign(model, arrays, source="ckpt.safetensors", ignore=lambda k: k.startswith("buffer."),
               problems=["config: something the caller found"])
    assert str(err.value).splitlines() == [
        "ckpt.safetensors does not match the model (5 problem(s)):",
        "  config: something the caller found",
        "  missing body.bias",
        "  head.kernel: ckpt.safetensors has (5, 2), model expects (4, 2)",
        "  missing norm.var",
        "  unused extra.weight (2, 3)",
    ]
    after = _snapshot(model)
    for k in before:  # all or nothing: the arrays that did fit were not written either
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_caller_problems_alone_refuse_and_reported_paths_are_not_listed_again():
    model = _Net(nnx.Rngs(0))
    arrays = _arrays(model)
    del arrays["head.bias"]
    with pytest.raises(ConversionError) as err:  # the caller's own subclass
        assign(model, arrays, source="s", problems=["missing classifier.bias"], reported=["head.bias"],
               error=ConversionError)
    assert str(err.value).splitlines()[1:] == ["  missing classifier.bias"]
    before = _snapshot(model)
    with pytest.raises(WeightsMismatch):
        assign(model, _arrays(model), source="s", problems=["a hook failed"])
    assert all(np.array_equal(_snapshot(model)[k], before[k]) for k in before)


def test_fresh_paths_keep_their_values_and_are_not_unused():
    model = _Net(nnx.Rngs(0))
    before = _snapshot(model)
    arrays = _arrays(model, seed=1)
    arrays["head.kernel"] = np.zeros((4, 7))  # a pretrained head of another size: not used, not an error
    del arrays["head.bias"]
    assign(model, arrays, source="pretrained", fresh=["head.kernel", "head.bias"])
    after = _snapshot(model)
    np.testing.assert_array_equal(after["head.kernel"], before["head.kernel"])
    np.testing.assert_array_equal(after["head.bias"], before["head.bias"])
    np.testing.assert_array_equal(after["body.kernel"], arrays["body.kernel"].astype(np.float32))
    with pytest.raises(WeightsMismatch, match="fresh head.weight is not a variable of the model"):
        assign(model, arrays, source="pretrained", fresh=["head.kernel", "head.bias", "head.weight"])


def test_assign_takes_device_arrays():
    src, dst = _Net(nnx.Rngs(1)), _Net(nnx.Rngs(2))
    assign(dst, {k: v.get_value() for k, v in model_variables(src).items()}, source="model")
    for k, v in model_variables(dst).items():
        np.testing.assert_array_equal(np.asarray(v.get_value()), np.asarray(model_variables(src)[k].get_value()))


def test_abstract_builds_placeholders_and_working_rng_streams():
    model = abstract(lambda: _Net(nnx.Rngs(params=0, dropout=jax.random.key(5, impl="rbg"))))
    for k, v in model_variables(model).items():
        assert isinstance(v.get_value(), jax.Array) and not np.asarray(v.get_value()).any(), k  # zeros
    assert jax.random.key_impl(model.drop.rngs.key.get_value()) == "rbg"  # the factory's RNG implementation
    assign(model, _arrays(model), source="s")
    model.train()
    x = jnp.ones((8, 3))
    assert not np.array_equal(np.asarray(model(x)), np.asarray(model(x)))  # dropout draws differ per call


def test_abstract_refuses_an_absurd_model_before_allocating():
    from brain_jax.models import create

    with pytest.raises(ValueError, match=r"cfg\.json: the model it describes would hold \d+ GiB"):
        abstract(lambda: create("convnextv2", "test", 4, hidden_sizes=(8, 16, 32, 10**6), rngs=nnx.Rngs(0)),
                 where="cfg.json")


def test_weights_module_needs_neither_train_nor_convert():
    code = ("import sys, brain_jax.models.weights as w; "
            "assert w.assign and w.abstract and w.model_variables and issubclass(w.WeightsMismatch, ValueError); "
            "bad = sorted(m for m in sys.modules if m.startswith(('brain_jax.train', 'brain_jax.convert'))); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
