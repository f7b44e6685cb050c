"""``brain_tumor_mri``: Kaggle-style folders ``ROOT/{Training,Testing}/{class}/*.jpg``.

Several roots may sit under the manual dir (each found by its Training/ or Testing/ folder, up to
three levels deep) and are merged; ``source`` records which root an image came from. Splits
``train`` / ``test`` are the shipped Training / Testing folders. Images are converted to 8-bit
grayscale (PIL "L"), stored in the common uint16 container; no masks, no patient ids, no spacing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from input_pipeline.features import CLASS_NAMES, BadInputs, make_example
from input_pipeline.manual import ManualBuilder

SPLIT_DIRS = {"training": "train", "testing": "test"}
# Folder name (lower case) -> class; SARTAJ-style names included.
CLASS_ALIASES = {
    **{c: c for c in CLASS_NAMES},
    "glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "pituitary_tumor": "pituitary",
    "no_tumor": "notumor", "no": "notumor",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}

_INSTRUCTIONS = """\
Download the Kaggle "Brain Tumor MRI Dataset" (Nickparvar) by hand and unzip it so that the manual
dir holds Training/ and Testing/ (or several such roots in sub-folders, which are merged), each with
one folder per class: glioma, meningioma, notumor, pituitary. Pass that folder as --manual-dir.
"""


def find_split_dirs(manual: Path, max_depth: int = 3) -> list[tuple[Path, str]]:
    """(folder, split) for every Training/Testing folder up to max_depth below manual."""
    out = []
    frontier = [manual]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            for child in sorted(p for p in d.iterdir() if p.is_dir()):
                if child.name.lower() in SPLIT_DIRS:
                    out.append((child, SPLIT_DIRS[child.name.lower()]))
                else:
                    nxt.append(child)
        frontier = nxt
    return out


def list_images(manual: Path, bad: BadInputs) -> dict[str, list[tuple[Path, int, str]]]:
    """split -> [(path, label, root name)], flagging files outside known class folders."""
    out: dict[str, list] = {"train": [], "test": []}
    for split_dir, split in find_split_dirs(manual):
        root = split_dir.parent
        root_name = str(root.relative_to(manual)) if root != manual else manual.name
        for p in sorted(split_dir.rglob("*")):
            if p.is_dir() or p.name.startswith("."):
                continue
            rel = p.relative_to(split_dir)
            if len(rel.parts) != 2:
                bad.add(p, f"not inside a class folder of {split_dir} (expected {split_dir}/CLASS/FILE)")
                continue
            cls = CLASS_ALIASES.get(rel.parts[0].lower())
            if cls is None:
                bad.add(p, f"unknown class folder {rel.parts[0]!r} (expected one of {list(CLASS_NAMES)})")
                continue
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                bad.add(p, f"not an image file (suffix {p.suffix!r})")
                continue
            out[split].append((p, CLASS_NAMES.index(cls), root_name))
    return out


def read_image(path: Path) -> np.ndarray:
    """8-bit grayscale pixels; ValueError naming the problem when unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("L"))
    except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ...)
        raise ValueError(f"unreadable image: {type(e).__name__}: {e}") from None


class BrainTumorMri(ManualBuilder):
    """Kaggle brain tumour MRI folders (glioma / meningioma / notumor / pituitary)."""

    HOMEPAGE = "https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        self.bad_inputs = bad = BadInputs("brain_tumor_mri", self._skip_bad)
        files = list_images(manual, bad)
        if not files["train"] and not files["test"] and not bad.problems:
            raise FileNotFoundError(f"brain_tumor_mri: no Training/ or Testing/ folder in {manual}\n"
                                    + _INSTRUCTIONS)
        good: dict[str, list] = {}
        for split, items in files.items():
            good[split] = []
            for item in items:
                try:
                    read_image(item[0])
                    good[split].append(item)
                except ValueError as e:
                    bad.add(item[0], str(e))
        bad.check()
        # A root may ship only Training/ or only Testing/: splits without images are left out.
        return {split: self._generate_examples(items, manual) for split, items in good.items() if items}

    def _generate_examples(self, items, manual: Path):
        for path, label, root in items:
            rel = str(path.relative_to(manual))
            yield rel, make_example(
                read_image(path), None, label, patient_id="", source=f"brain_tumor_mri:{root}",
                spacing_mm=(0.0, 0.0), file_name=rel,
            )
