"""Figshare (.mat v7.3 / v5, zips, cvind.mat) and Kaggle-folder builders from fixtures written in the
real formats, bad-input handling, and merged / de-duplicated / group-split loading."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import input_pipeline as ip
from input_pipeline.synthetic import write_cvind, write_figshare_mat


def slice_data(num: int, shape=(32, 32)):
    rng = np.random.default_rng(num)
    image = rng.integers(0, 900, size=shape).astype(np.int16)
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 10:shape[1] - 2] = 1  # asymmetric: a transposed read would not match
    return image, mask


# 10 slices, 5 patients x 2 slices; patient k lives in fold k+1; labels cycle 1, 2, 3.
PATIENTS = {n: (f"PT{(n - 1) // 2:03d}", (n - 1) // 2 + 1, float(1 + ((n - 1) // 2) % 3)) for n in range(1, 11)}
SHAPES = {3: (16, 16), 4: (24, 40)}


@pytest.fixture(scope="session")
def figshare_manual(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("figshare_manual")
    tmp = tmp_path_factory.mktemp("figshare_zip")
    with zipfile.ZipFile(d / "brainTumorDataPublic_1-5.zip", "w") as zf:
        for n in range(1, 6):  # 1..5 inside a zip, as shipped
            pid, _, label = PATIENTS[n]
            write_figshare_mat(tmp / f"{n}.mat", *slice_data(n, SHAPES.get(n, (32, 32))), label, pid)
            zf.write(tmp / f"{n}.mat", f"{n}.mat")
    (d / "extracted").mkdir()
    for n in range(6, 11):  # 6..10 extracted; 10 is a MATLAB v5 file
        pid, _, label = PATIENTS[n]
        image, mask = slice_data(n)
        if n == 10:
            write_figshare_mat(d / "extracted" / f"{n}.mat", image, mask, label, pid, version="5")
        else:
            write_figshare_mat(d / "extracted" / f"{n}.mat", image, mask, label, pid)
    write_cvind(d / "cvind.mat", [PATIENTS[n][1] for n in range(1, 11)])
    return d


@pytest.fixture(scope="session")
def built(tmp_path_factory, figshare_manual):
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    data_dir = tmp_path_factory.mktemp("tfds_real")
    ip.build_dataset("figshare_brain_tumor", data_dir, manual_dir=figshare_manual)
    kaggle = kaggle_tree(tmp_path_factory.mktemp("kaggle_manual"))
    ip.build_dataset("brain_tumor_mri", data_dir, manual_dir=kaggle)
    return data_dir, kaggle


def kaggle_tree(d: Path) -> Path:
    rng = np.random.default_rng(0)
    for root, split, per_class in (("rootA", "Training", 2), ("rootA", "Testing", 1), ("rootB", "Training", 1)):
        for c in ("glioma", "meningioma", "notumor", "pituitary"):
            if root == "rootB" and c != "glioma":
                continue
            (d / root / split / c).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                a = rng.integers(0, 255, (20 + k, 30), dtype=np.uint8)
                img = Image.fromarray(a).convert("RGB") if root == "rootB" else Image.fromarray(a)
                img.save(d / root / split / c / f"{c}_{k}.jpg", quality=95)
    # A JPEG copy of Figshare slice 7: the same picture in another source (near duplicate).
    from input_pipeline.features import to_uint8

    Image.fromarray(to_uint8(slice_data(7)[0])).save(d / "rootB" / "Training" / "glioma" / "copy7.jpg", quality=90)
    # The same file shipped in Training and Testing (exact duplicate across splits).
    (d / "rootA" / "Testing" / "notumor" / "dup.jpg").write_bytes(
        (d / "rootA" / "Training" / "notumor" / "notumor_0.jpg").read_bytes())
    return d


def _all(data_dir, name, split):
    import tensorflow_datasets as tfds

    ds = tfds.data_source(name, split=split, data_dir=str(data_dir))
    return [ds[i] for i in range(len(ds))]


def test_figshare_contents(built):
    data_dir, _ = built
    recs = {k: _all(data_dir, "figshare_brain_tumor", f"fold{k}") for k in range(1, 6)}
    assert {k: len(v) for k, v in recs.items()} == {k: 2 for k in range(1, 6)}
    by_num = {}
    for k, rs in recs.items():
        for r in rs:
            num = int(Path(r["file_name"].decode().split(":")[-1]).stem)
            pid, fold, label = PATIENTS[num]
            assert r["patient_id"].decode() == pid and fold == k
            # 1 meningioma, 2 glioma, 3 pituitary -> CLASS_NAMES indices
            assert ip.CLASS_NAMES[r["label"]] == {1.0: "meningioma", 2.0: "glioma", 3.0: "pituitary"}[label]
            by_num[num] = r
    assert sorted(by_num) == list(range(1, 11))
    for num, r in by_num.items():
        image, mask = slice_data(num, SHAPES.get(num, (32, 32)))
        np.testing.assert_array_equal(r["image"], image.astype(np.uint16))
        np.testing.assert_array_equal(r["mask"], mask)
        assert r["has_mask"] and r["source"] == b"figshare_brain_tumor"
    h, w = SHAPES[4]
    np.testing.assert_allclose(by_num[4]["pixel_spacing_mm"], [0.49 * 512 / h, 0.49 * 512 / w], rtol=1e-6)
    np.testing.assert_allclose(by_num[3]["pixel_spacing_mm"], [0.49 * 32, 0.49 * 32], rtol=1e-6)
    np.testing.assert_allclose(by_num[1]["pixel_spacing_mm"], [0.49 * 16, 0.49 * 16], rtol=1e-6)
    four = _all(data_dir, "figshare_brain_tumor", "fold1+fold2+fold3+fold4")
    assert len(four) == 8 and {r["patient_id"] for r in four}.isdisjoint({b"PT004"})


def test_kaggle_contents(built):
    data_dir, manual = built
    train, test = _all(data_dir, "brain_tumor_mri", "train"), _all(data_dir, "brain_tumor_mri", "test")
    assert len(train) == 8 + 1 + 1 and len(test) == 5
    labels = np.bincount([r["label"] for r in train], minlength=4)
    assert labels.tolist() == [4, 2, 2, 2]
    for r in train + test:
        assert not r["has_mask"] and not r["mask"].any() and r["patient_id"] == b""
        assert r["pixel_spacing_mm"].tolist() == [0.0, 0.0]
        expect = np.asarray(Image.open(manual / r["file_name"].decode()).convert("L"))
        np.testing.assert_array_equal(r["image"], expect)
        folder = Path(r["file_name"].decode()).parent.name
        assert ip.CLASS_NAMES[r["label"]] == folder
    assert {r["source"] for r in train} == {b"brain_tumor_mri:rootA", b"brain_tumor_mri:rootB"}


def _bad_figshare(d: Path, with_cvind: bool) -> Path:
    img, mask = slice_data(1)
    write_figshare_mat(d / "1.mat", img, mask, 1.0, "A")
    write_figshare_mat(d / "2.mat", img, mask, 4.0, "B")  # label outside 1-3
    write_figshare_mat(d / "3.mat", img, mask[:, :20], 2.0, "C")  # mask shape differs
    write_figshare_mat(d / "4.mat", img, mask, 3.0, "D")
    (d / "5.mat").write_bytes((d / "4.mat").read_bytes()[:1500])  # truncated
    if with_cvind:
        write_cvind(d / "cvind.mat", [1, 2, 3, 4, 5])
    return d


def test_figshare_bad_inputs_all_listed_then_skipped(tmp_path):
    (tmp_path / "m").mkdir()
    manual = _bad_figshare(tmp_path / "m", with_cvind=False)
    with pytest.raises(ValueError) as e:
        ip.build_dataset("figshare_brain_tumor", tmp_path / "d", manual_dir=manual)
    msg = str(e.value)
    for offender in ("2.mat", "3.mat", "5.mat", "cvind.mat"):
        assert offender in msg, offender
    assert "1.mat" not in msg and "label 4" in msg and "shape" in msg and "4 bad input" in msg
    b = ip.build_dataset("figshare_brain_tumor", tmp_path / "d", manual_dir=manual, skip_bad=True)
    assert len(b.bad_inputs.problems) == 4
    assert (Path(b.data_dir) / "skipped_inputs.json").exists()
    import tensorflow_datasets as tfds

    splits = tfds.data_source("figshare_brain_tumor", data_dir=str(tmp_path / "d"))
    assert sum(len(s) for s in splits.values()) == 2  # 1.mat and 4.mat
    assert {r["patient_id"] for s in splits.values() for r in (s[i] for i in range(len(s)))} == {b"A", b"D"}


def test_figshare_patient_in_two_folds_fails(tmp_path):
    img, mask = slice_data(1)
    write_figshare_mat(tmp_path / "1.mat", img, mask, 1.0, "SAME")
    write_figshare_mat(tmp_path / "2.mat", img, mask, 1.0, "SAME")
    write_cvind(tmp_path / "cvind.mat", [1, 2])
    with pytest.raises(ValueError, match="SAME"):
        ip.build_dataset("figshare_brain_tumor", tmp_path / "d", manual_dir=tmp_path)


def test_kaggle_bad_inputs(tmp_path):
    m = tmp_path / "m"
    (m / "Training" / "glioma").mkdir(parents=True)
    (m / "Training" / "astrocytoma").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(m / "Training" / "glioma" / "ok.jpg")
    (m / "Training" / "glioma" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(m / "Training" / "astrocytoma" / "x.jpg")
    with pytest.raises(ValueError) as e:
        ip.build_dataset("brain_tumor_mri", tmp_path / "d", manual_dir=m)
    assert "broken.jpg" in str(e.value) and "astrocytoma" in str(e.value) and "ok.jpg" not in str(e.value)
    b = ip.build_dataset("brain_tumor_mri", tmp_path / "d", manual_dir=m, skip_bad=True)
    assert len(b.bad_inputs.problems) == 2


def test_merged_dedup_and_group_split(built):
    data_dir, _ = built
    cfg = ip.default_data_config()
    cfg.data_dir, cfg.name, cfg.image_size = str(data_dir), "figshare_brain_tumor+brain_tumor_mri", 16
    cfg.split_by = "group"
    cfg.group_split_fractions.train, cfg.group_split_fractions.validation = 0.5, 0.25
    sizes = {s: ip.num_examples(cfg, s) for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 10 + 15  # every record in exactly one split
    from input_pipeline.sources import split_metadata as _metadata
    from input_pipeline.splits import resolve

    def split_of(file_suffix):
        for split in ("train", "validation", "test"):
            idx = resolve(cfg, split)
            for p, r in zip(idx.part, idx.record):
                n, c, s = idx.parts[p]
                if _metadata(n, c, str(data_dir), s)["file_name"][r].endswith(file_suffix):
                    return split
        raise AssertionError(file_suffix)

    # Without dedup the copies are kept, but in the same split (duplicate group).
    assert split_of("copy7.jpg") == split_of("7.mat")
    assert split_of("Testing/notumor/dup.jpg") == split_of("Training/notumor/notumor_0.jpg")
    cfg.dedup = "near"
    dd = {s: ip.num_examples(cfg, s) for s in ("train", "validation", "test")}
    assert sum(dd.values()) == 23  # the JPEG copy of slice 7 and the Training/Testing copy dropped
    cfg.dedup = "exact"
    assert sum(ip.num_examples(cfg, s) for s in ("train", "validation", "test")) == 24

    for split in ("train", "validation", "test"):
        idx = resolve(cfg, split)
        pids = set()
        for p, r in zip(idx.part, idx.record):
            n, c, s = idx.parts[p]
            pid = _metadata(n, c, str(data_dir), s)["patient_id"][r]
            if pid:
                pids.add(pid)
        for other in ("train", "validation", "test"):
            if other != split:
                oidx = resolve(cfg, other)
                opids = {_metadata(*oidx.parts[p][:2], str(data_dir), oidx.parts[p][2])["patient_id"][r]
                         for p, r in zip(oidx.part, oidx.record)}
                assert pids.isdisjoint(opids - {""})
    seg = ip.default_data_config()
    seg.data_dir, seg.name = str(data_dir), "figshare_brain_tumor+brain_tumor_mri"
    seg.task, seg.train_split = "segmentation", "train"
    with pytest.raises(ValueError, match="bad split"):
        ip.num_examples(seg, "train")  # figshare has folds, not train
    seg.name = "brain_tumor_mri"
    with pytest.raises(ValueError, match="empty"):
        ip.make_loader(seg, "train", global_batch_size=2, train=True, seed=0, process_index=0, process_count=1)


def test_cli_build_and_audit(built, tmp_path, capsys):
    import json

    from brain_jax.cli import main

    data_dir, _ = built
    assert main(["data", "build", "brain_phantoms", "--config", "tiny", "--data-dir", str(tmp_path)]) == 0
    assert "train=16" in capsys.readouterr().out
    out = tmp_path / "audit"
    assert main(["data", "audit", "figshare_brain_tumor", "brain_tumor_mri", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["num_records"] == 25
    assert report["exact_duplicate_pairs"] == 1 and report["near_duplicate_pairs"] == 1
    assert report["pairs_by_kind"] == {"exact/across_splits": 1, "near/across_datasets": 1}
    assert report["records_after_dedup"] == 23 and report["patients_in_several_splits"] == {}
    assert report["largest_group"] == report["largest_group_if_chained"] == 2
    near = [p for p in report["example_pairs"] if p["kind"] == "near"][0]
    assert {Path(near["a"]["file_name"]).name, Path(near["b"]["file_name"]).name} == {"7.mat", "copy7.jpg"}
    assert (out / "duplicates.png").stat().st_size > 1000
    # Only the test split of Kaggle: the Training/Testing copy is no longer a pair.
    assert "no split common to every dataset" in capsys.readouterr().out  # fold1..5 vs train/test
    main(["data", "audit", "brain_tumor_mri:test", "--data-dir", str(data_dir), "--out", str(out)])
    assert json.loads((out / "audit.json").read_text())["exact_duplicate_pairs"] == 0
    comp = json.loads((out / "composition.json").read_text())
    assert comp["splits"] == ["test", "train"] and (out / "composition.csv").is_file()
    assert "| brain_tumor_mri" in (out / "composition.md").read_text()
    # Missing dataset: one line naming the build command, exit 2.
    assert main(["data", "audit", "brain_phantoms/large", "--data-dir", str(tmp_path), "--out", str(out)]) == 2
    assert "brain-jax data build brain_phantoms" in capsys.readouterr().err


def test_plain_tfds_build_gives_the_same_dataset(built, figshare_manual, tmp_path):
    """`tfds build` (the TFDS command line, with the `tfds-cli` extra) writes what `brain-jax data build` writes."""
    import subprocess
    import sys

    tfds_cli = Path(sys.executable).with_name("tfds")
    assert tfds_cli.exists(), f"{tfds_cli} missing: install the project's tfds-cli extra"
    cmd = [str(tfds_cli), "build", "figshare_brain_tumor", "--imports", "input_pipeline.figshare",
           "--manual_dir", str(figshare_manual), "--data_dir", str(tmp_path), "--file_format", "array_record"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    data_dir, _ = built
    for fold in ("fold1", "fold2", "fold3", "fold4", "fold5"):
        ours = _all(data_dir, "figshare_brain_tumor", fold)
        theirs = _all(tmp_path, "figshare_brain_tumor", fold)
        assert len(theirs) == len(ours) > 0
        key = lambda r: r["sha256"]  # noqa: E731
        for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key), strict=True):
            assert a["sha256"] == b["sha256"] and a["label"] == b["label"] and a["patient_id"] == b["patient_id"]
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["mask"], b["mask"])


def test_figshare_folds_three_classes_and_patient_clusters(built):
    data_dir, _ = built
    cfg = ip.default_data_config()
    cfg.data_dir, cfg.name, cfg.image_size, cfg.num_classes = str(data_dir), "figshare_brain_tumor", 16, 0
    specs = ip.fold_splits(cfg, 5)
    assert specs[0] == {"num_folds": 0, "fold": 0, "train_split": "fold3+fold4+fold5", "eval_split": "fold2",
                        "test_split": "fold1"}
    assert specs[4] == {"num_folds": 0, "fold": 0, "train_split": "fold2+fold3+fold4", "eval_split": "fold1",
                        "test_split": "fold5"}
    with pytest.raises(ValueError, match="has folds fold1, fold2, fold3, fold4, fold5, not the 3 asked for"):
        ip.fold_splits(cfg, 3)
    merged = cfg.copy_and_resolve_references()
    merged.name = "figshare_brain_tumor+brain_tumor_mri"
    with pytest.raises(ValueError, match=r"brain_tumor_mri has no folds \(its splits: test, train\)"):
        ip.fold_splits(merged, 5)
    # Figshare alone is 3-class: labels arrive as indices into (glioma, meningioma, pituitary).
    assert ip.class_names(cfg) == ("glioma", "meningioma", "pituitary")
    cfg.update(specs[0])
    batch = next(iter(ip.make_loader(cfg, "fold1+fold2+fold3+fold4+fold5", global_batch_size=10, train=False,
                                     seed=0, process_index=0, process_count=1)))
    head = {1.0: 1, 2.0: 0, 3.0: 2}  # Figshare 1 meningioma, 2 glioma, 3 pituitary
    seen = set()
    for eid, label, cluster, kind in zip(batch["example_id"], batch["label"], batch["cluster_id"],
                                         batch["cluster_kind"], strict=True):
        num = int(Path(eid.split("#")[0].split(":")[-1]).stem)
        pid, _, fig_label = PATIENTS[num]
        assert label == head[fig_label] and cluster == f"patient:figshare_brain_tumor:{pid}" and kind == "patient"
        seen.add(num)
    assert seen == set(range(1, 11))
    assert ip.describe_clusters(cfg, "fold1+fold2")["cluster_kind"] == "patient"


def test_default_builder_config_is_the_declared_one(tmp_path):
    """`data build brain_phantoms` without --config builds the config every runlocal config reads."""
    from input_pipeline.builders import get_builder

    assert get_builder("brain_phantoms", tmp_path).builder_config.name == "small"


def test_static_dataset_tables_match_the_builders():
    """The tables that resolve a config's classes without importing TFDS agree with the builder classes."""
    from input_pipeline import builders

    for name in builders.BUILDER_MODULES:
        cls = builders.builder_class(name)
        assert tuple(cls.CLASSES) == tuple(builders.DATASET_CLASSES[name]), name
        assert bool(cls.BUILDER_CONFIGS) == (name in builders.HAS_BUILDER_CONFIGS), name
