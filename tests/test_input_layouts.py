"""The folder builder (``brain_tumor_mri``) on the layouts of the paper's other sources: class folders
with other names, and YOLO detection sets (data YAML + images/ + labels/), good and bad."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import input_pipeline as ip

RNG = np.random.default_rng(7)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (12, 14), dtype=np.uint8)).save(path)


def _yolo(root: Path, names, items: dict[str, list[tuple[str, str | None]]], *, ultralytics: bool = False) -> None:
    """A YOLO set: data.yaml naming the classes; items: split -> [(stem, label file text or None)]."""
    root.mkdir(parents=True)
    (root / "data.yaml").write_text(yaml.safe_dump({"nc": len(names), "names": names, "train": "../train/images"}))
    for split, files in items.items():
        for stem, text in files:
            img_dir = root / "images" / split if ultralytics else root / split / "images"
            lab_dir = root / "labels" / split if ultralytics else root / split / "labels"
            _image(img_dir / f"{stem}.jpg")
            if text is not None:
                lab_dir.mkdir(parents=True, exist_ok=True)
                (lab_dir / f"{stem}.txt").write_text(text)


def _records(data_dir: Path) -> dict[str, dict]:
    import tensorflow_datasets as tfds

    out = {}
    for split, ds in tfds.data_source("brain_tumor_mri", data_dir=str(data_dir)).items():
        for i in range(len(ds)):
            r = ds[i]
            out[r["file_name"].decode()] = {"split": split, "class": ip.CLASS_NAMES[r["label"]],
                                            "source": r["source"].decode()}
    return out


def test_class_folder_names_and_yolo_sets(tmp_path):
    m = tmp_path / "manual"
    # SARTAJ-style and capitalised class folders.
    for folder, split in (("glioma_tumor", "Training"), ("Meningioma", "Training"), ("No Tumor", "Training"),
                          ("pituitary-tumor", "Testing"), ("no_tumor", "Testing"), ("notumor", "Testing")):
        _image(m / "sartaj" / split / folder / "a.jpg")
    # Roboflow-style YOLO export, names as a list (capitalised, with a space).
    box = "{} 0.5 0.5 0.2 0.3\n"
    _yolo(m / "pkdarabi", ["Glioma", "Meningioma", "No Tumor", "Pituitary"], {
        "train": [("g1", box.format(0) + box.format(0)), ("n1", box.format(2))],
        "valid": [("p1", box.format(3))],
        "test": [("m1", "\n" + box.format(1))]})
    # Ultralytics layout (images/<split>, labels/<split>), names as a dict with other ids.
    _yolo(m / "other", {0: "pituitary_tumor", 5: "glioma"}, {"train": [("x", box.format(5))],
                                                               "val": [("y", box.format(0))]}, ultralytics=True)
    data_dir = tmp_path / "d"
    ip.build_dataset("brain_tumor_mri", data_dir, manual_dir=m)
    got = _records(data_dir)
    want = {
        "sartaj/Training/glioma_tumor/a.jpg": ("train", "glioma", "sartaj"),
        "sartaj/Training/Meningioma/a.jpg": ("train", "meningioma", "sartaj"),
        "sartaj/Training/No Tumor/a.jpg": ("train", "notumor", "sartaj"),
        "sartaj/Testing/pituitary-tumor/a.jpg": ("test", "pituitary", "sartaj"),
        "sartaj/Testing/no_tumor/a.jpg": ("test", "notumor", "sartaj"),
        "sartaj/Testing/notumor/a.jpg": ("test", "notumor", "sartaj"),
        "pkdarabi/train/images/g1.jpg": ("train", "glioma", "pkdarabi"),
        "pkdarabi/train/images/n1.jpg": ("train", "notumor", "pkdarabi"),
        "pkdarabi/valid/images/p1.jpg": ("validation", "pituitary", "pkdarabi"),
        "pkdarabi/test/images/m1.jpg": ("test", "meningioma", "pkdarabi"),
        "other/images/train/x.jpg": ("train", "glioma", "other"),
        "other/images/val/y.jpg": ("validation", "pituitary", "other"),
    }
    assert {k: (v["split"], v["class"], v["source"].removeprefix("brain_tumor_mri:")) for k, v in got.items()} == want


def test_yolo_bad_inputs_are_listed_with_the_file(tmp_path):
    m = tmp_path / "manual"
    box = "{} 0.5 0.5 0.2 0.3\n"
    _yolo(m / "yolo", ["Glioma", "Meningioma", "astrocytoma"], {"train": [
        ("ok", box.format(0)),
        ("disagree", box.format(0) + box.format(1)),
        ("unknown_id", box.format(7)),
        ("unknown_name", box.format(2)),
        ("no_label", None),
        ("empty", "\n"),
        ("malformed", "0 0.5 0.5\n"),
    ]})
    _image(m / "yolo" / "train" / "stray.jpg")  # an image outside images/
    (m / "broken").mkdir()
    (m / "broken" / "data.yaml").write_text("names: [a, b\n")
    with pytest.raises(ValueError) as e:
        ip.build_dataset("brain_tumor_mri", tmp_path / "d", manual_dir=m)
    lines = {ln.strip().split(":")[0]: ln for ln in str(e.value).splitlines()[1:]}
    expect = {"disagree.jpg": "disagree", "unknown_id.jpg": "[7]", "unknown_name.jpg": "astrocytoma",
              "no_label.jpg": "no label file", "empty.jpg": "no label lines", "malformed.jpg": "class cx cy w h",
              "stray.jpg": "outside an images/ folder", "data.yaml": "unreadable YAML"}
    assert sorted(Path(k).name for k in lines) == sorted(expect)
    for path, line in lines.items():
        assert expect[Path(path).name] in line, line
    b = ip.build_dataset("brain_tumor_mri", tmp_path / "d", manual_dir=m, skip_bad=True)
    assert len(b.bad_inputs.problems) == len(expect)
    assert list(_records(tmp_path / "d")) == ["yolo/train/images/ok.jpg"]
