"""``unlabelled_mri``: a folder of unlabelled MRI slices and volumes, for FCMAE pretraining (issue 23).

The manual dir is any folder tree. Every file below it (sub-folders included, in sorted path order; names
starting with "." are skipped, folders too) whose type ``brain_jax.io.detect_format`` recognises is read
with ``brain_jax.io.read_slices``: PNG / JPEG / BMP / TIFF, MATLAB ``.mat``, DICOM (``.dcm``, ``.dicom`` or
no extension with the DICM magic) and NIfTI (``.nii``, ``.nii.gz``). A NIfTI volume gives one record per
axial slice and a multi-frame DICOM one per frame; slices whose pixels all hold the same value (the empty
slices at the ends of a volume) are skipped and counted. Files of another type are not read, and are counted
and named in one printed line; a file of a known type that cannot be read is a bad input (the build fails
listing every one, or skips them with ``--skip-bad``, listed in ``skipped_inputs.json``).

Records, in the common features (``input_pipeline.features``):

- ``patient_id``: the first-level sub-folder of the manual dir that holds the file (``DIR/p07/a/b.png`` ->
  ``p07``); for a file directly in the manual dir, its name without the extension. Group splits
  (``data.split_by="group"``) keep each of these groups in one split, so put one patient per sub-folder.
- ``file_name``: the path relative to the manual dir, with ``#k`` for slice (frame) ``k`` of a file that
  holds several.
- ``image``: whole-number slices within 0..65535 are stored unchanged; any other slice (fractional values,
  negatives, values above 65535) is rescaled linearly to 0..65535 on its own (counted in one printed line;
  the loader normalises each image by its own minimum and percentile anyway).
- ``pixel_spacing_mm``: the file's spacing, else (0, 0) (unknown, as ``brain_tumor_mri`` stores it).
- No labels: ``label`` is 0 and means nothing, ``has_mask`` is False. One split, ``train``.

Only pretraining reads it (``data.task="fcmae"``; a run of another task is refused by
``brain_jax.train.spec.RunSpec``); ``configs/fcmae_pretrain.py:dataset=unlabelled`` splits it by group.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from brain_jax.io import detect_format, read_slices
from brain_jax.io.slices import Slice
from input_pipeline.builders import DATASET_CLASSES
from input_pipeline.features import BadInputs, features, make_example
from input_pipeline.manual import ManualBuilder

NAME = "unlabelled_mri"
UINT16_MAX = 65535
UNKNOWN_LISTED = 20  # names of unknown-type files shown in the printed line; the rest are counted

_INSTRUCTIONS = """\
Pass any folder of MRI slices or volumes as --manual-dir: PNG / JPEG / BMP / TIFF, MATLAB .mat, DICOM
(.dcm, or no extension) and NIfTI (.nii, .nii.gz) files, in sub-folders or not. Put each patient's files in
one first-level sub-folder (its name is the patient id that group splits keep together); files directly in
the folder are a group each. Hidden files and folders are skipped; no labels are read.
"""


def list_files(manual: Path) -> tuple[list[Path], list[Path]]:
    """(files of a readable type, files of an unknown type) below ``manual``, sorted, hidden ones skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(manual):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / f for f in files if not f.startswith(".")]
    known, unknown = [], []
    for p in sorted(found):
        try:
            detect_format(p)
            known.append(p)
        except ValueError:
            unknown.append(p)
    return known, unknown


def group_of(rel: Path) -> str:
    """The patient / group id of a file at ``rel`` (relative to the manual dir): see the module docstring."""
    if len(rel.parts) > 1:
        return rel.parts[0]
    name = rel.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else rel.stem


def is_constant(image: np.ndarray) -> bool:
    return bool(image.min() == image.max())


def to_stored(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(uint16 pixels, whether they were rescaled): whole numbers in 0..65535 as they are, anything else mapped
    linearly from [min, max] to [0, 65535] (a non-constant slice)."""
    a = np.asarray(image, np.float64)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi <= UINT16_MAX and np.array_equal(a, np.round(a)):
        return a.astype(np.uint16), False
    return np.round((a - lo) / (hi - lo) * UINT16_MAX).astype(np.uint16), True


class UnlabelledMri(ManualBuilder):
    """A folder of unlabelled MRI files (images, .mat, DICOM, NIfTI) for self-supervised pretraining."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    CLASSES = DATASET_CLASSES[NAME]

    def _info(self):
        import tensorflow_datasets as tfds

        # as ManualBuilder's, without supervised keys: the stored label means nothing
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features(), homepage=self.HOMEPAGE)

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        self.bad_inputs = bad = BadInputs(NAME, self._skip_bad)
        known, unknown = list_files(manual)
        if unknown:
            shown = ", ".join(str(p.relative_to(manual)) for p in unknown[:UNKNOWN_LISTED])
            more = f" and {len(unknown) - UNKNOWN_LISTED} more" if len(unknown) > UNKNOWN_LISTED else ""
            print(f"{NAME}: {len(unknown)} file(s) of an unknown type not read: {shown}{more}")
        if not known:
            raise FileNotFoundError(f"{NAME}: no image, .mat, DICOM or NIfTI file in {manual}\n" + _INSTRUCTIONS)
        good, counts = [], {"slices": 0, "constant": 0, "rescaled": 0}
        for path in known:
            try:
                n = _count(path, counts)
            except (ValueError, OSError) as e:
                bad.add(path, str(e))
                continue
            if n:
                good.append(path)
        bad.check()
        if counts["constant"]:
            print(f"{NAME}: skipped {counts['constant']} constant slice(s) (every pixel the same value)")
        if counts["rescaled"]:
            print(f"{NAME}: rescaled {counts['rescaled']} of {counts['slices']} slice(s) to 0..{UINT16_MAX} "
                  "(not whole numbers within 0..65535)")
        if not counts["slices"]:
            raise ValueError(f"{NAME}: no slice to store in {manual}: every readable slice is constant")
        return {"train": self._generate_examples(good, manual)}

    def _generate_examples(self, paths: list[Path], manual: Path):
        for path in paths:
            rel = path.relative_to(manual)
            for k, sl in _slices(path):
                if is_constant(sl.image):
                    continue
                name = rel.as_posix() + ("" if k is None else f"#{k}")
                pixels, _ = to_stored(sl.image)
                yield name, make_example(pixels, None, 0, patient_id=group_of(rel), source=NAME,
                                         spacing_mm=sl.pixel_spacing_mm or (0.0, 0.0), file_name=name)


def _slices(path: Path) -> Iterator[tuple[int | None, Slice]]:
    """(k, slice) for every slice of ``path``; k is None when the file holds a single slice."""
    it = read_slices(path)
    first, second = next(it), next(it, None)
    if second is None:
        yield None, first
        return
    yield 0, first
    yield 1, second
    yield from enumerate(it, 2)


def _count(path: Path, counts: dict[str, int]) -> int:
    """Read every slice of ``path`` (raising what the reader raises; ``counts`` is then left as it was) and add
    its slices to ``counts``; returns how many of them are stored."""
    mine = dict.fromkeys(counts, 0)
    for _, sl in _slices(path):
        if is_constant(sl.image):
            mine["constant"] += 1
            continue
        mine["slices"] += 1
        mine["rescaled"] += to_stored(sl.image)[1]
    for k, v in mine.items():
        counts[k] += v
    return mine["slices"]
