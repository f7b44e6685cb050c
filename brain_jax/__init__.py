"""brain-jax: JAX/Flax NNX brain-tumour MRI classification and segmentation."""

__version__ = "0.1.0"

# Cluster-bootstrap resamples behind every 95 % interval unless a caller gives another count: the default of
# the metrics functions (brain_jax.metrics.stats), of the app verbs and of the CLI's --resamples. Here, in the
# package root, because it is the one module every layer may import (metrics may import nothing else of ours)
# and it imports nothing, so the CLI's parser reads it without loading JAX.
N_RESAMPLES = 2000
