"""Input pipeline: TFDS builders (Figshare .mat, Kaggle folders, synthetic phantoms), de-duplication
and honest splits, and resumable grain loaders.

Public contract (used by brain_jax.train): ``CLASS_NAMES``, ``build_dataset``, ``default_data_config``,
``make_loader``, ``num_examples``.
"""
from input_pipeline.builders import build_dataset
from input_pipeline.features import CLASS_NAMES
from input_pipeline.loader import default_data_config, make_loader, num_examples

__all__ = ["CLASS_NAMES", "build_dataset", "default_data_config", "make_loader", "num_examples"]
