"""brain_jax.train.forward: the one batched forward pass of inference and its preprocessing stage."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from brain_jax.train import forward
from brain_jax.train.spec import InputSpec
from input_pipeline import transforms

SPEC = InputSpec(image_size=24, upper_percentile=99.5, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


TRACES = []  # one entry per run of _Tiny's Python body: once per trace under jit (on merged copies too)


class _Tiny(nnx.Module):
    """Conv + BatchNorm + head."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 5, rngs=rngs)

    def __call__(self, x):
        TRACES.append(x.shape)
        h = jax.nn.relu(self.norm(self.conv(x)))
        return self.head(h.mean(axis=(1, 2)))


def _model() -> _Tiny:
    model = _Tiny(nnx.Rngs(0))
    # batch statistics away from their init, so eval mode (running stats, no batch mixing) matters
    model.norm.mean.set_value(np.linspace(-0.5, 0.5, 4).astype(np.float32))
    model.norm.var.set_value(np.linspace(0.5, 2.0, 4).astype(np.float32))
    return model


def test_batches_give_the_logits_of_one_call_and_compile_once():
    model = _model()
    x = np.random.default_rng(0).normal(size=(7, 16, 16, 3)).astype(np.float32)
    model.eval()
    whole = np.asarray(model(x))
    TRACES.clear()
    got = forward.logits(model, x, batch_size=3)  # chunks of 3, 3 and 1 (padded to 3)
    assert TRACES == [(3, 16, 16, 3)]  # one program for every chunk, the padded last one included
    assert got.shape == (7, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    # fewer rows than a batch: one chunk of that size, no padding
    np.testing.assert_allclose(forward.logits(model, x[:2], batch_size=8), whole[:2], rtol=1e-5, atol=1e-6)


def test_batched_pads_each_chunk_and_joins_tuples():
    seen = []

    def fn(a, b):
        seen.append((a.shape, b.copy()))
        return a.sum(axis=1), (b * 2, b + 1)[0]

    a = np.arange(10, dtype=np.float32).reshape(5, 2)
    b = np.arange(5, dtype=np.int32)
    sums, doubled = forward.batched(fn, [a, b], 2, pad_to=4)
    assert [s for s, _ in seen] == [(4, 2)] * 3  # every chunk padded to pad_to rows
    np.testing.assert_array_equal(seen[-1][1], [4, 0, 0, 0])  # zero padding
    np.testing.assert_array_equal(sums, a.sum(axis=1))
    np.testing.assert_array_equal(doubled, b * 2)
    stub = forward.forward_fn(lambda x: np.asarray(x, np.float64) * 2)  # a plain callable runs as is
    assert stub(np.ones((2, 3))).dtype == np.float32


def test_preprocess_is_the_loaders_and_jnp_normalisation_matches_it():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 900, size=(40, 56)).astype(np.float32)
    ref = transforms.normalise_intensity(image, 99.5)
    ref = transforms.resize(ref, np.zeros(ref.shape, np.uint8), np.ones(2, np.float32), 24)[0]
    ref = np.round(ref * 255).astype(np.uint8)  # the prepared cache's 8 bits, as training and evaluation read it
    np.testing.assert_array_equal(transforms.prepare(image, None, np.ones(2), 24, 99.5)[0], ref)
    ref = transforms.to_model_input(ref.astype(np.float32) / np.float32(255), SPEC.mean, SPEC.std)
    got = forward.preprocess(image, SPEC)
    assert got.shape == (24, 24, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    unit = np.stack([forward.to_unit(image, SPEC), forward.to_unit(image.T.copy(), SPEC)])
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    ref = forward.normalise(unit, SPEC)
    np.testing.assert_array_equal(np.asarray(forward.normalise_jnp(unit, SPEC)), ref)  # op by op: bit for bit
    # compiled, XLA may fuse the multiply and subtract (one rounding instead of two): within an ulp or so
    on_device = jax.jit(lambda u: forward.normalise_jnp(u, SPEC))(unit)
    np.testing.assert_allclose(np.asarray(on_device), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax(dtype):
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]], dtype)
    p = forward.softmax(x)
    assert p.dtype == dtype
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-6)
    np.testing.assert_allclose(p[1], [0.5, 0.5, 0.0], atol=1e-12)
