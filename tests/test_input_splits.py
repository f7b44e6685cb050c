"""Split protocols (builder / group / random, K-fold), per-example identities of evaluation batches,
label sets and the split-composition table, on a merged pool of phantoms and a Kaggle-style folder."""
from __future__ import annotations

import collections

import numpy as np
import pytest
from PIL import Image

import input_pipeline as ip
from input_pipeline.features import to_uint8
from input_pipeline.splits import index_metadata, resolve

MERGED = "brain_phantoms/tiny+brain_tumor_mri"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """brain_phantoms/tiny (16 patients x 2 slices) and a Kaggle tree of 2 + 8 + 2 images holding an
    8-bit copy of a phantom slice and one file shipped in both Training and Testing."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    d = tmp_path_factory.mktemp("pool")
    ip.build_dataset("brain_phantoms", d, builder_config="tiny")
    m = tmp_path_factory.mktemp("kaggle")
    rng = np.random.default_rng(0)
    for split in ("Training", "Testing"):
        for c in ip.CLASS_NAMES:
            (m / split / c).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(m / split / c / "a.png")
    phantom = tfds.data_source("brain_phantoms/tiny", split="test", data_dir=str(d))[0]
    Image.fromarray(to_uint8(phantom["image"])).save(m / "Training" / "glioma" / "copy.png")
    (m / "Testing" / "notumor" / "dup.png").write_bytes((m / "Training" / "notumor" / "a.png").read_bytes())
    ip.build_dataset("brain_tumor_mri", d, manual_dir=m)
    return d, phantom, m.name


def _cfg(data_dir, name=MERGED, **kw):
    c = ip.default_data_config()
    c.data_dir, c.name, c.image_size = str(data_dir), name, 32
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _ids(cfg, split) -> list[str]:
    return index_metadata(cfg, resolve(cfg, split))["example_id"]


SPLITS = ("train", "validation", "test")
POOL_SIZE = 32 + 8 + 2  # phantoms + Kaggle Training (incl. copy.png) + Testing (incl. dup.png)


def test_random_protocol_splits_slices_and_leaks_patients(pool):
    d, _, _ = pool
    cfg = _cfg(d, split_by="random")
    parts = {s: _ids(cfg, s) for s in SPLITS}
    everything = sum(parts.values(), [])
    assert len(everything) == len(set(everything)) == POOL_SIZE
    assert parts == {s: _ids(cfg, s) for s in SPLITS}  # deterministic
    cfg.seed = 1
    assert parts != {s: _ids(cfg, s) for s in SPLITS}
    # The paper's protocol splits a patient's slices apart.
    patient_splits = collections.defaultdict(set)
    for s, ids in parts.items():
        for i in ids:
            if i.startswith("brain_phantoms/tiny:"):
                patient_splits[i.split(":")[1][:6]].add(s)
    assert max(len(v) for v in patient_splits.values()) > 1
    assert ip.split_protocol(cfg) == "random slice-level split (the paper's protocol; leaks copies and patients)"
    # dedup applies first: the exact copy (dup.png) goes; with "near" also the 8-bit copy of a phantom
    # (copy.png; phantom slices of different patients can be near too).
    cfg.dedup = "exact"
    assert sum(ip.num_examples(cfg, s) for s in SPLITS) == POOL_SIZE - 1
    assert "leaks near copies and patients" in ip.split_protocol(cfg)
    cfg.dedup = "near"
    kept = sum((_ids(cfg, s) for s in SPLITS), [])
    assert len(kept) <= POOL_SIZE - 2 and "brain_tumor_mri:Training/glioma/copy.png#0" not in kept
    assert ip.split_protocol(cfg).endswith("leaks patients)")


def test_protocol_names():
    c = ip.default_data_config()
    assert ip.split_protocol(c).startswith("the datasets' own splits (train train, validation validation")
    c.split_by, c.dedup, c.num_folds, c.fold = "group", "exact", 5, 2
    assert ip.split_protocol(c) == ("split by patient and duplicate group (no patient or copy crosses splits), "
                                    "5-fold, test fold 3, exact duplicates dropped")
    c.split_by = "random"
    assert ip.split_protocol(c).startswith("random slice-level split after dropping exact duplicates")
    c.split_by = "patients"
    with pytest.raises(ValueError, match="data.split_by must be one of"):
        ip.split_protocol(c)


def test_group_k_fold(pool):
    d, phantom, _ = pool
    cfg = _cfg(d, split_by="group", num_folds=3)
    tests = []
    for fold in range(3):
        cfg.fold = fold
        parts = {s: _ids(cfg, s) for s in SPLITS}
        assert all(parts.values())
        assert sum(len(v) for v in parts.values()) == len(set(sum(parts.values(), []))) == POOL_SIZE
        meta = {s: index_metadata(cfg, resolve(cfg, s)) for s in SPLITS}
        pats = {s: {p for p in m["patient_id"] if p} for s, m in meta.items()}
        assert not (pats["test"] & (pats["train"] | pats["validation"]) or pats["train"] & pats["validation"])
        # The 8-bit copy of a phantom test slice stays with its patient; the Training/Testing copy together.
        where = {f: s for s, m in meta.items() for f in m["file_name"]}
        assert where["Training/glioma/copy.png"] == where[phantom["file_name"].decode()]
        assert where["Testing/notumor/dup.png"] == where["Training/notumor/a.png"]
        tests += parts["test"]
    assert len(tests) == len(set(tests)) == POOL_SIZE  # the test folds partition the pool
    assert ip.fold_splits(cfg, 3)[1] == {"num_folds": 3, "fold": 1, "train_split": "train",
                                         "eval_split": "validation", "test_split": "test"}
    with pytest.raises(ValueError, match="one of"):
        resolve(cfg, "fold1")
    cfg.fold = 3
    with pytest.raises(ValueError, match="num_folds=3, data.fold=3"):
        resolve(cfg, "test")
    builder = _cfg(d, name="brain_phantoms/tiny")
    with pytest.raises(ValueError, match=r"brain_phantoms/tiny has no folds \(its splits: test, train, validation\)"):
        ip.fold_splits(builder, 3)
    builder.num_folds = 3
    with pytest.raises(ValueError, match="num_folds applies to split_by='group' or 'random'"):
        resolve(builder, "train")


def test_eval_batches_carry_identities(pool):
    d, phantom, kaggle_root = pool
    cfg = _cfg(d, split_by="group")

    def batches(split):
        return list(ip.make_loader(cfg, split, global_batch_size=8, train=False, seed=0, process_index=0,
                                   process_count=1))

    keys = ("example_id", "cluster_id", "cluster_kind", "source", "dataset")
    rows = []
    for split in SPLITS:
        bs = batches(split)
        for b in bs:
            assert all(b[k].dtype.kind == "U" and b[k].shape == (8,) for k in keys)
            assert (b["example_id"][~b["valid"]] == "").all() and (b["cluster_id"][~b["valid"]] == "").all()
            rows += [{k: b[k][i] for k in keys} | {"split": split} for i in np.flatnonzero(b["valid"])]
        again = batches(split)  # a second loader: the same ids in the same order
        for a, b in zip(bs, again, strict=True):
            for k in keys:
                np.testing.assert_array_equal(a[k], b[k])
    ids = [r["example_id"] for r in rows]
    assert len(ids) == len(set(ids)) == POOL_SIZE and all(ids)
    by_id = {r["example_id"]: r for r in rows}
    first = by_id[f"brain_phantoms/tiny:{phantom['file_name'].decode()}#0"]
    assert first["source"] == "brain_phantoms" and first["dataset"] == "brain_phantoms/tiny"
    # Slices of one patient share a cluster; the Kaggle copy of one of them joins it.
    pid = phantom["patient_id"].decode()
    mates = [r for r in rows if r["example_id"].startswith("brain_phantoms/tiny:P") and
             r["example_id"].split(":")[1][1:6] == pid[-5:]]
    assert len(mates) == 2 and mates[0]["cluster_id"] == mates[1]["cluster_id"] == f"patient:brain_phantoms/tiny:{pid}"
    copy = by_id["brain_tumor_mri:Training/glioma/copy.png#0"]
    assert copy["cluster_id"] == first["cluster_id"] and copy["cluster_kind"] == "patient"
    assert copy["source"] == f"brain_tumor_mri:{kaggle_root}" and copy["dataset"] == "brain_tumor_mri"
    dup = by_id["brain_tumor_mri:Testing/notumor/dup.png#0"]
    orig = by_id["brain_tumor_mri:Training/notumor/a.png#0"]
    assert dup["cluster_id"] == orig["cluster_id"] and dup["cluster_kind"] == "duplicate_group"
    lone = by_id["brain_tumor_mri:Training/meningioma/a.png#0"]
    assert lone["cluster_kind"] == "slice" and lone["cluster_id"] == "slice:brain_tumor_mri:Training/meningioma/a.png#0"
    # Clusters do not depend on the protocol's record order: the test split's clusters as a split alone.
    test_rows = [r for r in rows if r["split"] == "test"]
    summary = ip.describe_clusters(cfg, "test")
    assert summary["num_examples"] == len(test_rows)
    assert summary["num_clusters"] == len({r["cluster_id"] for r in test_rows})
    kinds = {r["cluster_kind"] for r in test_rows}
    assert summary["cluster_kind"] == (kinds.pop() if len(kinds) == 1 else "mixed")
    assert sum(sum(v.values()) for v in summary["by_dataset"].values()) == len(test_rows)
    # Training batches stay numeric: no string keys to move around.
    train = next(iter(ip.make_loader(cfg, "train", global_batch_size=4, train=True, seed=0, process_index=0,
                                     process_count=1)))
    assert set(train) == {"image", "label", "mask", "has_mask", "spacing_mm", "valid", "index"}


def test_class_names():
    c = ip.default_data_config()
    c.num_classes = 0
    c.name = "figshare_brain_tumor"
    assert ip.class_names(c) == ("glioma", "meningioma", "pituitary")
    c.name = "figshare_brain_tumor+brain_tumor_mri"
    assert ip.class_names(c) == ip.CLASS_NAMES
    c.classes = "pituitary, glioma,meningioma,notumor"
    assert ip.class_names(c) == ("pituitary", "glioma", "meningioma", "notumor")
    c.classes = "glioma,meningioma,pituitary"
    with pytest.raises(ValueError, match=r"leaves label\(s\) \['notumor'\] of dataset brain_tumor_mri unmapped"):
        ip.class_names(c)
    c.name = "figshare_brain_tumor"
    assert ip.class_names(c) == ("glioma", "meningioma", "pituitary")
    c.classes = "glioma,astrocytoma"
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['astrocytoma'\]"):
        ip.class_names(c)
    c.classes = "glioma,glioma,meningioma,pituitary"
    with pytest.raises(ValueError, match="twice"):
        ip.class_names(c)
    c.classes = ""
    c.num_classes = 4  # a config written before label sets: the old 4-class head
    assert ip.class_names(c) == ip.CLASS_NAMES
    c.num_classes = 2
    with pytest.raises(ValueError, match="data.num_classes=2"):
        ip.class_names(c)


def test_loader_labels_are_head_indices(pool):
    d, _, _ = pool
    cfg = _cfg(d, name="brain_phantoms/tiny", num_classes=0)
    plain = next(iter(ip.make_loader(cfg, "test", global_batch_size=8, train=False, seed=0, process_index=0,
                                     process_count=1)))
    cfg.classes = "pituitary,notumor,meningioma,glioma"  # reversed head order
    flipped = next(iter(ip.make_loader(cfg, "test", global_batch_size=8, train=False, seed=0, process_index=0,
                                       process_count=1)))
    np.testing.assert_array_equal(flipped["label"], 3 - plain["label"])
    assert sorted(set(plain["label"].tolist())) == [0, 1, 2, 3]


def test_split_composition(pool, tmp_path):
    d, _, _ = pool
    cfg = _cfg(d, split_by="group", dedup="exact")
    comp = ip.split_composition(cfg)
    assert comp["splits"] == list(SPLITS) and comp["protocol"] == ip.split_protocol(cfg)
    assert comp["totals"] == {s: ip.num_examples(cfg, s) for s in SPLITS}
    assert sum(r["count"] for r in comp["counts"]) == POOL_SIZE - 1  # dup.png dropped
    assert sum(sum(v.values()) for v in comp["duplicates_dropped"].values()) == 1
    phantom_counts = collections.Counter()
    for r in comp["counts"]:
        if r["source"] == "brain_phantoms":
            phantom_counts[r["class"]] += r["count"]
    assert phantom_counts == dict.fromkeys(ip.CLASS_NAMES, 8)
    assert all(c["exact"] == c["near"] == 0 for c in comp["copies_in_first_split"].values())
    sizes = [g["size"] for g in comp["largest_duplicate_groups"]]
    assert sizes == sorted(sizes, reverse=True) and 2 in sizes
    copy_group = [g for g in comp["largest_duplicate_groups"]
                  if {m["source"].split(":")[0] for m in g["members"]} == {"brain_phantoms", "brain_tumor_mri"}]
    assert copy_group and len({m["split"] for m in copy_group[0]["members"]}) == 1
    paths = ip.write_composition(comp, tmp_path)
    csv_lines = paths["csv"].read_text().splitlines()
    assert csv_lines[0] == "source,class,train,validation,test,total"
    assert len(csv_lines) == 1 + len({(r["source"], r["class"]) for r in comp["counts"]})
    md = paths["md"].read_text()
    assert comp["protocol"] in md and "| source | class | train | validation | test | total |" in md
    cfg.eval_split = ""  # no periodic evaluation: not a split of the table
    assert ip.split_composition(cfg)["splits"] == [SPLITS[0], SPLITS[2]]
