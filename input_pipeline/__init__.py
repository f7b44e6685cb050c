"""Input pipeline: TFDS builders (Figshare .mat, Kaggle folders, synthetic phantoms), de-duplication
and honest splits, and resumable grain loaders.

Public contract (used by brain_jax): ``CLASS_NAMES``, ``build_dataset``, ``default_data_config``,
``make_loader``, ``num_examples``, ``class_names`` (the head's classes), ``split_protocol`` (the split's
name in outputs), ``fold_splits`` (a fold suite's split settings), ``describe_clusters`` (the bootstrap's
resampling unit), ``split_composition`` / ``composition_markdown`` / ``write_composition`` (class x
source x split table), ``copies_in_training`` (test examples with a copy in training).

Building (array_record files; no code here downloads anything)::

    brain-jax data build brain_phantoms --config small --data-dir DIR
    brain-jax data build figshare_brain_tumor --manual-dir FOLDER_WITH_ZIPS_AND_CVIND --data-dir DIR
    brain-jax data build brain_tumor_mri --manual-dir KAGGLE_FOLDER --data-dir DIR [--skip-bad]
    # or: tfds build brain_phantoms --imports input_pipeline.phantoms --config small \
    #        --data_dir DIR --file_format array_record   (the tfds CLI needs the tfds-cli extra)

then ``tfds.data_source("brain_phantoms/small", split="train", data_dir=DIR)`` or
``tfds.data_source("figshare_brain_tumor", split="fold1+fold2+fold3+fold4", data_dir=DIR)``.
``brain-jax data audit figshare_brain_tumor brain_tumor_mri:test --data-dir DIR --out OUT`` reports
duplicates (``OUT/audit.json``, ``OUT/duplicates.png``). Module map: ``features`` (common record
format), ``phantoms`` / ``figshare`` / ``kaggle`` (builders), ``builders`` (registry),
``sources`` (opening built datasets, metadata, example ids), ``labels`` (class sets, label -> head map),
``splits`` (split protocols, folds, clusters), ``cache`` (the prepared uint8 cache the loader reads;
``brain-jax data prepare NAME --data-dir DIR --image-size S``), ``loader`` (config, grain loader),
``transforms`` (host-side preparation), ``augment`` (augmentation and mean / std inside the jitted step),
``dedup``, ``audit`` (duplicates, split composition).
"""
from input_pipeline.audit import composition_markdown, copies_in_training, split_composition, write_composition
from input_pipeline.builders import build_dataset
from input_pipeline.features import CLASS_NAMES
from input_pipeline.labels import class_names
from input_pipeline.loader import default_data_config, make_loader, num_examples
from input_pipeline.splits import describe_clusters, fold_splits, split_protocol

__all__ = ["CLASS_NAMES", "build_dataset", "class_names", "composition_markdown", "copies_in_training",
           "default_data_config", "describe_clusters", "fold_splits", "make_loader", "num_examples",
           "split_composition", "split_protocol", "write_composition"]
