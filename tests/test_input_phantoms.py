"""The ``hard`` phantom config: faint small tumours, per-patient shading, slices repeated under other
patient ids, so that a slice-level random split leaks copies into training and a group split does not."""
from __future__ import annotations

import collections

import numpy as np
import pytest

import input_pipeline as ip
from input_pipeline import dedup, phantoms


@pytest.fixture(scope="module")
def hard_dir(tmp_path_factory):
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    d = tmp_path_factory.mktemp("hard")
    ip.build_dataset("brain_phantoms", d, builder_config="hard")
    return d


def _records(d):
    import tensorflow_datasets as tfds

    out = []
    for split, ds in tfds.data_source("brain_phantoms/hard", data_dir=str(d)).items():
        out += [ds[i] | {"split": split} for i in range(len(ds))]
    return out


def test_contrast_scale_and_shading_of_the_tumour():
    size = 64
    for pt in range(8):
        full, mask, label = phantoms.render_slice(0, pt, 0, size)
        if label == phantoms.NOTUMOR:
            continue
        faint, small, _ = phantoms.render_slice(0, pt, 0, size, contrast=0.2, scale=0.6)
        gone, _, _ = phantoms.render_slice(0, pt, 0, size, contrast=0.0)
        # contrast weighs the tumour's change of the image: 0 leaves the tumour-free head.
        step_full = np.abs(full.astype(float) - gone).sum()
        step_faint = np.abs(phantoms.render_slice(0, pt, 0, size, contrast=0.2)[0].astype(float) - gone).sum()
        assert 0 < step_faint < 0.35 * step_full
        assert 0 < small.sum() < 0.6 * mask.sum()
    a, _, _ = phantoms.render_slice(0, 1, 0, size, shading=0.6)
    b, _, _ = phantoms.render_slice(0, 1, 0, size)
    assert np.abs(a.astype(float) - b).mean() > 0.1 * b.mean()


def test_hard_pool_repeats_every_slice_under_other_patients(hard_dir):
    recs = _records(hard_dir)
    cfg = phantoms.BrainPhantoms.builder_configs["hard"]
    n_slices = cfg.num_patients * cfg.slices_per_patient
    assert len(recs) == n_slices * (cfg.copies + 1) == 512
    # Exact copies under other patient ids; 8-bit re-uploads without one.
    assert len({r["patient_id"] for r in recs} - {b""}) == cfg.num_patients * (1 + (cfg.copies + 1) // 2)
    by_slice = collections.defaultdict(list)  # file P{owner}_{i}: owner mod num_patients is the original
    for r in recs:
        owner, i = r["file_name"].decode()[1:].split("_")
        by_slice[(int(owner) % cfg.num_patients, int(i))].append(r)
    assert len(by_slice) == n_slices
    for copies in by_slice.values():
        assert len({r["split"] for r in copies}) == 1 and len({r["label"] for r in copies}) == 1
        shas = collections.Counter(r["sha256"] for r in copies)
        assert sorted(shas.values()) == [1, 3]  # original + 2 exact copies, 1 re-quantised (near) copy
        assert sum(r["patient_id"] == b"" for r in copies) == 1
        bits = dedup.phash_bits([r["phash"].decode() for r in copies])
        assert np.bitwise_count(bits ^ bits[0]).max() <= ip.default_data_config().near_dup_bits


def test_random_split_leaks_copies_and_group_split_does_not(hard_dir):
    cfg = ip.default_data_config()
    cfg.data_dir, cfg.builder_config, cfg.image_size = str(hard_dir), "hard", 32
    cfg.split_by = "random"
    leak = ip.copies_in_training(cfg)
    assert leak["num_examples"] > 50
    assert (leak["exact"] + leak["near"]) / leak["num_examples"] > 0.85 and leak["near"] > 0
    cfg.split_by = "group"
    assert ip.copies_in_training(cfg)["exact"] == ip.copies_in_training(cfg)["near"] == 0
    assert ip.describe_clusters(cfg, "test")["cluster_kind"] == "patient"
    cfg.split_by = "builder"  # the builder's own splits keep copies with their original
    assert ip.copies_in_training(cfg)["exact"] == 0
