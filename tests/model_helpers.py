"""Helpers shared by the model tests: inputs, a jitted forward, and checks every architecture must pass."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def randn(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def nhwc(x_nchw: np.ndarray) -> jax.Array:
    return jnp.asarray(x_nchw.transpose(0, 2, 3, 1))


@nnx.jit(static_argnames="hidden")
def call_jit(model, x, hidden=False):
    """Jitted forward: one compile per shape instead of XLA:CPU's slow op-by-op first calls."""
    return model(x, output_hidden_states=hidden)


def perturb(model: nnx.Module, scale: float = 0.3) -> None:
    """Add noise to every variable, so that zero-initialised ones (biases, bias tables) are non-trivial."""
    from brain_jax.models.weights import model_variables

    for path, var in model_variables(model).items():
        var.set_value(var.get_value() + scale * jnp.asarray(randn(var.get_value().shape, seed=len(path))))


def assert_same_variables(a: nnx.Module, b: nnx.Module) -> None:
    """Same variable paths and bit-identical values."""
    from brain_jax.models.weights import model_variables

    va, vb = model_variables(a), model_variables(b)
    assert va.keys() == vb.keys()
    for k in va:
        np.testing.assert_array_equal(np.asarray(va[k].get_value()), np.asarray(vb[k].get_value()), err_msg=k)


def check_hf_export(model: nnx.Module, out_dir, x_nchw: np.ndarray, hf_class: str,
                    auto: str = "AutoModelForImageClassification", **call_kw):
    """``to_hf(model)`` loads in transformers' ``auto`` class as ``hf_class`` with no missing, unexpected or
    mis-shaped key and the same logits, and ``from_hf`` reads it back to the same config and weights.

    Returns the transformers model (eval mode) for further checks.
    """
    import torch
    import transformers

    from brain_jax.convert import from_hf, to_hf

    model.eval()
    out = to_hf(model, out_dir)
    hf, info = getattr(transformers, auto).from_pretrained(out, output_loading_info=True)
    assert type(hf).__name__ == hf_class
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    hf.eval()
    with torch.no_grad():
        ref = hf(torch.from_numpy(x_nchw), **call_kw).logits.numpy()
    if ref.ndim == 4:
        ref = ref.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(call_jit(model, nhwc(x_nchw))), ref, atol=1e-4, rtol=0)
    back = from_hf(out)
    assert back.config == model.config
    assert_same_variables(model, back)
    return hf


def check_dropout_only_in_training(name: str, x: jax.Array, rate_overrides: tuple[dict, ...]) -> None:
    """Drop path and each dropout of ``rate_overrides`` change train-mode outputs (differently per call) and
    leave eval mode alone; with every rate 0, train mode equals eval mode. Same params (seed) throughout."""
    from brain_jax.models import create

    def build(**kw):
        return create(name, "test", 3, rngs=nnx.Rngs(params=0, dropout=1), **kw)

    model = build(drop_path_rate=0.5)
    model.eval()
    ref = np.asarray(call_jit(model, x))
    np.testing.assert_array_equal(np.asarray(call_jit(model, x)), ref)
    model.train()
    a, b = np.asarray(call_jit(model, x)), np.asarray(call_jit(model, x))
    assert not np.allclose(a, ref) and not np.allclose(a, b)  # drop path alone changes the output
    model.eval()
    np.testing.assert_array_equal(np.asarray(call_jit(model, x)), ref)
    for kw in rate_overrides:
        m = build(drop_path_rate=0.0, **kw)
        m.train()
        assert not np.allclose(np.asarray(call_jit(m, x)), ref), kw
    m = build(drop_path_rate=0.0)
    m.train()  # all rates zero: training mode must equal eval mode
    np.testing.assert_allclose(np.asarray(call_jit(m, x)), ref, atol=1e-6, rtol=0)


def check_bfloat16_compute(name: str, x: jax.Array) -> None:
    """bfloat16 compute keeps float32 params and float32 logits close to the float32 model's."""
    from brain_jax.models import create
    from brain_jax.models.weights import model_variables

    f32 = create(name, "test", 3, rngs=nnx.Rngs(params=0, dropout=1))
    bf16 = create(name, "test", 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(params=0, dropout=1))
    f32.eval()
    bf16.eval()
    assert all(v.get_value().dtype == jnp.float32 for v in model_variables(bf16).values())
    ref, out = np.asarray(call_jit(f32, x)), call_jit(bf16, x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), ref, atol=0.1 * np.abs(ref).max() + 0.05)
