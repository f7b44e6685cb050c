"""Random init behaves like the PyTorch originals': a fresh model's first loss is about log(num_classes)."""
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import brain_jax.models as models


@pytest.mark.parametrize("arch", ["convnextv2", "convnext", "swin", "vit", "segformer"])
def test_first_training_loss_is_near_log_num_classes(arch):
    """Train mode (SegFormer's BatchNorm on batch statistics), random input and labels, 4 classes.

    HF initialises every head with std 0.02, so logits start near zero and the loss near log(4) = 1.386;
    a head initialised at a larger scale (e.g. SegFormer's fan-out rule on a 1x1 conv to 4 labels) starts
    at 3 or more.
    """
    kw = {"image_size": 64} if arch in ("swin", "vit") else {}
    model = models.create(arch, "test", 4, rngs=nnx.Rngs(params=0, dropout=1), drop_path_rate=0.0, **kw)
    model.train()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 64, 64, 3)), jnp.float32)
    logits = model(x)
    y = jnp.asarray(np.random.default_rng(1).integers(0, 4, logits.shape[:-1]))
    loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
    assert abs(loss - math.log(4)) < 0.1, loss
