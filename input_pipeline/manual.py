"""What the builders of hand-downloaded datasets (Figshare, Kaggle) share: the ``skip_bad`` option, the
common features and the DatasetInfo. Not a dataset itself (not registered with TFDS)."""
from __future__ import annotations

import sys

import tensorflow_datasets as tfds

from input_pipeline.features import features


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Subclasses set ``HOMEPAGE`` and ``MANUAL_DOWNLOAD_INSTRUCTIONS`` (their module's docstring is the
    description); bad files found while building are collected in ``self.bad_inputs`` (listed, or
    skipped when ``skip_bad``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    HOMEPAGE = ""

    def __init__(self, *, skip_bad: bool = False, **kwargs):
        self._skip_bad = skip_bad
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        description = sys.modules[type(self).__module__].__doc__ or ""
        return tfds.core.DatasetInfo(builder=self, description=description, features=features(),
                                     supervised_keys=("image", "label"), homepage=self.HOMEPAGE)
