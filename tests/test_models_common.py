"""The CPU fast paths of models/common.py give the numbers (and gradients) of the plain XLA forms."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from brain_jax.models import common


@pytest.mark.parametrize("k,pad", [(7, 3), (3, 1), (3, 0), (5, 2)])
def test_shift_add_gradients_match_grouped_conv(k, pad):
    """The hand-written backward of the shift-and-add depthwise conv (input and kernel gradients) equals
    autodiff of the grouped convolution, on an odd-sized map with padding below k // 2 too."""
    rng = np.random.default_rng(k + pad)
    x = jnp.asarray(rng.standard_normal((2, 11, 9, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 1, 5)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal(common.depthwise_conv2d(x, w, pad, "grouped").shape), jnp.float32)

    def grads(impl):
        return jax.grad(lambda x, w: jnp.sum(common.depthwise_conv2d(x, w, pad, impl) * ct), argnums=(0, 1))(x, w)

    for got, want in zip(grads("shift"), grads("grouped")):
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-5)


def test_shift_add_backward_refuses_unsupported_padding():
    x = jnp.ones((1, 6, 6, 2), jnp.float32)
    w = jnp.ones((3, 3, 1, 2), jnp.float32)
    with pytest.raises(ValueError, match="padding <= k-1"):
        jax.grad(lambda x: jnp.sum(common.depthwise_conv2d(x, w, 3, "shift")))(x)


@pytest.mark.parametrize("k,size", [(4, 17), (2, 8), (1, 5)])
def test_patch_conv_matches_conv(k, size):
    """PatchConv (one dot over k×k patches) = nnx.Conv with the same parameters, forward and gradients,
    including a size that k does not divide (floored like VALID)."""
    init = nnx.initializers.normal(0.5)
    ours = common.patch_conv(3, 6, k, dtype=jnp.float32, kernel_init=init, rngs=nnx.Rngs(0))
    ref = nnx.Conv(3, 6, (k, k), strides=(k, k), padding="VALID", kernel_init=init, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ours.kernel[...], ref.kernel[...])
    x = jnp.asarray(np.random.default_rng(k).standard_normal((2, size, size, 3)), jnp.float32)
    np.testing.assert_allclose(ours(x), ref(x), atol=1e-5, rtol=1e-5)

    def grad(m):
        return nnx.grad(lambda m: jnp.sum(m(x) ** 2))(m)

    g_ours, g_ref = grad(ours), grad(ref)
    np.testing.assert_allclose(g_ours.kernel[...], g_ref.kernel[...], atol=1e-3, rtol=1e-5)
    np.testing.assert_allclose(g_ours.bias[...], g_ref.bias[...], atol=1e-3, rtol=1e-5)
