"""brain-jax: JAX/Flax NNX brain-tumour MRI classification and segmentation."""

__version__ = "0.1.0"
