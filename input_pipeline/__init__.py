"""Input pipeline: TFDS builders (Figshare .mat, Kaggle folders, synthetic phantoms), de-duplication
and honest splits, and resumable grain loaders.

Public contract (used by brain_jax.train): ``CLASS_NAMES``, ``build_dataset``, ``default_data_config``,
``make_loader``, ``num_examples``.

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
``loader`` (config, split resolution, grain loader), ``transforms``, ``dedup``, ``audit``, ``commands``.
"""
from input_pipeline.builders import build_dataset
from input_pipeline.features import CLASS_NAMES
from input_pipeline.loader import default_data_config, make_loader, num_examples

__all__ = ["CLASS_NAMES", "build_dataset", "default_data_config", "make_loader", "num_examples"]
