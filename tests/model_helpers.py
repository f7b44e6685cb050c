"""Helpers shared by the model parity tests."""
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
