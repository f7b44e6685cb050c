"""``brain_tumor_mri``: the paper's JPEG sources, in either of two layouts under the manual dir.

- Class folders ``ROOT/{Training,Testing}/{class}/*.jpg`` (Kaggle Nickparvar, SARTAJ). Class folder
  names are read loosely: case, spaces, hyphens and a ``_tumor`` suffix do not matter (``glioma``,
  ``glioma_tumor``, ``Glioma``, ``No Tumor``, ``no_tumor``, ``notumor``, ``no``).
- YOLO detection sets (e.g. the Roboflow export on Kaggle): a data YAML with ``names`` (a list, or a
  dict id -> name) beside ``{train,valid,test}/images`` (or ``images/{train,val,test}``), each image
  with a ``labels/<stem>.txt`` of ``class cx cy w h`` lines. The image's class is its boxes' class;
  an image without a label file, with no or malformed lines, with lines that disagree, or naming a
  class outside ours is a bad input, listed with the file.

Several roots may sit under the manual dir (class-folder roots found by their Training/ or Testing/
folder up to three levels deep, YOLO roots by their YAML) and are merged; ``source`` records which
root an image came from. Splits ``train`` / ``validation`` / ``test`` (Training / Testing folders;
YOLO train / valid / test). Images are converted to 8-bit grayscale (PIL "L"), stored in the common
uint16 container; no masks (YOLO boxes are not masks), no patient ids, no spacing.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml

from brain_jax.io.guards import one_line, open_image
from input_pipeline.features import CLASS_NAMES, BadInputs, make_example
from input_pipeline.manual import ManualBuilder

SPLIT_DIRS = {"training": "train", "testing": "test"}
YOLO_SPLITS = {"train": "train", "valid": "validation", "val": "validation", "validation": "validation",
               "test": "test"}
# Normalised name (see class_of) -> class.
CLASS_ALIASES = {
    **{c: c for c in CLASS_NAMES},
    **{f"{c}_tumor": c for c in ("glioma", "meningioma", "pituitary")},
    "no_tumor": "notumor", "no": "notumor",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
YAML_SUFFIXES = {".yaml", ".yml"}

_INSTRUCTIONS = """\
Download the Kaggle "Brain Tumor MRI Dataset" (Nickparvar) by hand and unzip it so that the manual
dir holds Training/ and Testing/ (or several such roots in sub-folders, which are merged), each with
one folder per class: glioma, meningioma, notumor, pituitary (SARTAJ-style names such as glioma_tumor
or "No Tumor" are read too). YOLO detection sets (a data YAML naming the classes, images/ and labels/
per split) may sit beside them. Pass that folder as --manual-dir.
"""


def class_of(name: str) -> str | None:
    """Class for a folder or YAML class name (case, spaces, hyphens, "tumour" spelling ignored)."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower()).replace("tumour", "tumor")
    return CLASS_ALIASES.get(key)


# ----------------------------------------------------------------------------- class folders


def find_split_dirs(manual: Path, skip: set[Path], max_depth: int = 3) -> list[tuple[Path, str]]:
    """(folder, split) for every Training/Testing folder up to max_depth below manual, outside `skip`."""
    out = []
    frontier = [manual]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            if d in skip:  # YOLO roots are read by list_yolo_images
                continue
            for child in sorted(p for p in d.iterdir() if p.is_dir()):
                if child.name.lower() in SPLIT_DIRS:
                    out.append((child, SPLIT_DIRS[child.name.lower()]))
                else:
                    nxt.append(child)
        frontier = nxt
    return out


def _root_name(root: Path, manual: Path) -> str:
    return str(root.relative_to(manual)) if root != manual else manual.name


def list_folder_images(manual: Path, skip: set[Path], bad: BadInputs, out: dict[str, list]) -> None:
    """Add (path, label, root name) of class-folder roots to `out[split]`, flagging strays."""
    for split_dir, split in find_split_dirs(manual, skip):
        root_name = _root_name(split_dir.parent, manual)
        for p in sorted(split_dir.rglob("*")):
            if p.is_dir() or p.name.startswith("."):
                continue
            rel = p.relative_to(split_dir)
            if len(rel.parts) != 2:
                bad.add(p, f"not inside a class folder of {split_dir} (expected {split_dir}/CLASS/FILE)")
                continue
            cls = class_of(rel.parts[0])
            if cls is None:
                bad.add(p, f"unknown class folder {rel.parts[0]!r} (expected one of {list(CLASS_NAMES)})")
                continue
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                bad.add(p, f"not an image file (suffix {p.suffix!r})")
                continue
            out[split].append((p, CLASS_NAMES.index(cls), root_name))


# ----------------------------------------------------------------------------- YOLO


def find_yolo_roots(manual: Path, bad: BadInputs) -> dict[Path, dict[int, str]]:
    """Folder of each data YAML with ``names`` -> {class id: name as written}; unreadable YAMLs flagged."""
    roots: dict[Path, dict[int, str]] = {}
    for y in sorted(p for p in manual.rglob("*") if p.suffix.lower() in YAML_SUFFIXES and p.is_file()):
        try:
            doc = yaml.safe_load(y.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            bad.add(y, "unreadable YAML: " + " ".join(str(e).split()))
            continue
        if not isinstance(doc, dict) or "names" not in doc:
            continue  # not a detection data YAML
        names = doc["names"]
        if isinstance(names, list):
            roots[y.parent] = dict(enumerate(str(n) for n in names))
        elif isinstance(names, dict) and all(str(k).isdigit() for k in names):
            roots[y.parent] = {int(k): str(v) for k, v in names.items()}
        else:
            bad.add(y, f"'names' must be a list or a dict of class id -> name, got {names!r}")
    return roots


def _box_class(fields: list[str]) -> int:
    """Class id of a YOLO box line ``class cx cy w h``; ValueError if it is not one."""
    if len(fields) != 5:
        raise ValueError(fields)
    for f in fields[1:]:
        float(f)
    return int(fields[0])


def yolo_class(label_file: Path, names: dict[int, str]) -> int:
    """The one class (CLASS_NAMES index) named by a YOLO label file; ValueError saying what is wrong."""
    if not label_file.is_file():
        raise ValueError(f"no label file (expected {label_file})")
    ids = set()
    for n, line in enumerate(label_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            ids.add(_box_class(fields))
        except ValueError:
            raise ValueError(f"{label_file.name} line {n}: expected 'class cx cy w h', got {line.strip()!r}") from None
    if not ids:
        raise ValueError(f"{label_file.name} has no label lines, so the image's class is unknown")
    unknown = sorted(i for i in ids if i not in names)
    if unknown:
        raise ValueError(f"{label_file.name} names class id(s) {unknown}, not in the YAML's names {names}")
    classes = {names[i]: class_of(names[i]) for i in sorted(ids)}
    outside = [n for n, c in classes.items() if c is None]
    if outside:
        raise ValueError(f"{label_file.name} names class(es) {outside}, none of {list(CLASS_NAMES)}")
    if len(set(classes.values())) > 1:
        raise ValueError(f"{label_file.name}: its lines disagree on the class ({', '.join(classes)})")
    return CLASS_NAMES.index(next(iter(classes.values())))


def _yolo_split(rel: Path) -> str | None:
    for part in rel.parts[:-1]:
        if part.lower() in YOLO_SPLITS:
            return YOLO_SPLITS[part.lower()]
    return None


def list_yolo_images(manual: Path, roots: dict[Path, dict[int, str]], bad: BadInputs, out: dict[str, list]) -> None:
    """Add (path, label, root name) of every image under the YOLO roots to `out[split]`."""
    for root, names in roots.items():
        root_name = _root_name(root, manual)
        for p in sorted(root.rglob("*")):
            if p.is_dir() or p.name.startswith(".") or p.suffix.lower() in YAML_SUFFIXES:
                continue
            rel = p.relative_to(root)
            parts = [q.lower() for q in rel.parts[:-1]]
            if "images" not in parts:
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    bad.add(p, f"image outside an images/ folder of the YOLO dataset {root}")
                continue  # label files, READMEs
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                bad.add(p, f"not an image file (suffix {p.suffix!r})")
                continue
            split = _yolo_split(rel)
            if split is None:
                bad.add(p, f"no train / valid / test folder in its path below {root}")
                continue
            at = len(parts) - 1 - parts[::-1].index("images")  # the last images/ in the path
            label_file = root.joinpath(*rel.parts[:at], "labels", *rel.parts[at + 1:]).with_suffix(".txt")
            try:
                out[split].append((p, yolo_class(label_file, names), root_name))
            except ValueError as e:
                bad.add(p, str(e))


# ----------------------------------------------------------------------------- builder


def list_images(manual: Path, bad: BadInputs) -> dict[str, list[tuple[Path, int, str]]]:
    """split -> [(path, label, root name)] over every class-folder and YOLO root below manual."""
    out: dict[str, list] = {"train": [], "validation": [], "test": []}
    roots = find_yolo_roots(manual, bad)
    list_folder_images(manual, set(roots), bad, out)
    list_yolo_images(manual, roots, bad, out)
    return out


EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")


def read_image(path: Path) -> np.ndarray:
    """8-bit grayscale pixels; ValueError naming the file and the problem when unreadable. The size in the
    header is checked before decoding (``brain_jax.io.guards.open_image``); 16-bit, float and multi-page
    images are refused (converting them to 8 bits would silently clip or drop data)."""
    try:
        with open_image(path, str(path)) as im:
            if im.mode not in EIGHT_BIT_MODES:
                raise ValueError(f"{path}: image mode {im.mode}; expected an 8-bit picture "
                                 f"({', '.join(EIGHT_BIT_MODES)})")
            if getattr(im, "n_frames", 1) > 1:
                raise ValueError(f"{path}: has {im.n_frames} frames/pages; expected a single image")
            im.load()
            return np.asarray(im.convert("L"))
    except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ...)
        if isinstance(e, ValueError) and str(e).startswith(f"{path}:"):
            raise  # one of the checks above: already says what is wrong
        raise ValueError(f"{path}: unreadable image: {one_line(e)}") from None


class BrainTumorMri(ManualBuilder):
    """Kaggle brain tumour MRI folders and YOLO sets (glioma / meningioma / notumor / pituitary)."""

    HOMEPAGE = "https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    CLASSES = CLASS_NAMES

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        self.bad_inputs = bad = BadInputs("brain_tumor_mri", self._skip_bad)
        files = list_images(manual, bad)
        if not any(files.values()) and not bad.problems:
            raise FileNotFoundError(f"brain_tumor_mri: no Training/ or Testing/ folder and no YOLO data YAML in "
                                    f"{manual}\n" + _INSTRUCTIONS)
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
        # A root may ship only some splits: splits without images are left out.
        return {split: self._generate_examples(items, manual) for split, items in good.items() if items}

    def _generate_examples(self, items, manual: Path):
        for path, label, root in items:
            rel = str(path.relative_to(manual))
            yield rel, make_example(
                read_image(path), None, label, patient_id="", source=f"brain_tumor_mri:{root}",
                spacing_mm=(0.0, 0.0), file_name=rel,
            )
