"""Phantom builder and grain loader: contents, determinism, exact resume, sharding, padding."""
from __future__ import annotations

import numpy as np
import pytest

import input_pipeline as ip
from input_pipeline import phantoms, transforms


@pytest.fixture
def phantom_dir(tiny_phantoms):
    return tiny_phantoms


def _cfg(data_dir, **kw):
    c = ip.default_data_config()
    c.data_dir = str(data_dir)
    c.builder_config = "tiny"
    c.image_size = 32
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _records(data_dir, split):
    import tensorflow_datasets as tfds

    ds = tfds.data_source("brain_phantoms/tiny", split=split, data_dir=str(data_dir))
    return [ds[i] for i in range(len(ds))]


def test_phantom_splits_counts_labels(phantom_dir):
    recs = {s: _records(phantom_dir, s) for s in ("train", "validation", "test")}
    # 16 patients, 4 per class: 2 train / 1 validation / 1 test per class, 2 slices each.
    assert {s: len(r) for s, r in recs.items()} == {"train": 16, "validation": 8, "test": 8}
    for r in recs.values():
        labels = np.bincount([e["label"] for e in r], minlength=4)
        assert (labels == labels[0]).all()
    pats = {s: {e["patient_id"] for e in r} for s, r in recs.items()}
    assert not (pats["train"] & pats["validation"] or pats["train"] & pats["test"]
                or pats["validation"] & pats["test"])
    e = recs["train"][0]
    assert e["image"].dtype == np.uint16 and e["image"].shape == (32, 32)
    np.testing.assert_allclose(e["pixel_spacing_mm"], [0.98 * 8, 0.98 * 8], rtol=1e-6)
    assert e["has_mask"] and e["source"] == b"brain_phantoms" and len(e["sha256"]) == 64


def test_phantom_tumours_are_class_specific():
    size = 96
    for pt in range(16):
        img, mask, label = phantoms.render_slice(0, pt, 0, size)
        img2, mask2, _ = phantoms.render_slice(0, pt, 0, size)
        np.testing.assert_array_equal(img, img2)  # deterministic
        if label == phantoms.NOTUMOR:
            assert mask.sum() == 0
            continue
        assert mask.sum() > 20
        yy, xx = np.nonzero(mask)
        cy, cx = (yy.mean() + 0.5) / size * 2 - 1, (xx.mean() + 0.5) / size * 2 - 1
        r = np.hypot(cx, cy)
        if label == phantoms.PITUITARY:
            assert abs(cx) < 0.06 and cy > 0.3  # midline, low (skull base)
        elif label == phantoms.MENINGIOMA:
            rr = np.hypot((xx + 0.5) / size * 2 - 1, (yy + 0.5) / size * 2 - 1)
            assert r > 0.35 and rr.max() > 0.6  # reaches the inner table of the skull
            assert img[mask > 0].mean() > np.percentile(img, 95) * 0.85  # bright
        else:
            assert r < 0.6  # intra-axial
            inner = img[mask > 0]
            assert inner.std() > 0.2 * inner.mean()  # heterogeneous (necrotic core)
    a, _, _ = phantoms.render_slice(1, 0, 0, size)
    assert not np.array_equal(a, phantoms.render_slice(0, 0, 0, size)[0])  # seed matters


def test_missing_dataset_message(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        ip.make_loader(_cfg(tmp_path), "train", global_batch_size=4, train=True, seed=0,
                       process_index=0, process_count=1)
    msg = str(e.value)
    assert "brain_phantoms" in msg and str(tmp_path) in msg and "brain-jax data build" in msg


def test_eval_padding_and_sharding(phantom_dir):
    cfg = _cfg(phantom_dir)
    assert ip.num_examples(cfg, "validation") == 8
    one = list(ip.make_loader(cfg, "validation", global_batch_size=6, train=False, seed=0,
                              process_index=0, process_count=1))
    assert len(one) == 2 and one[0]["image"].shape == (6, 32, 32) and one[0]["image"].dtype == np.uint8
    valid = np.concatenate([b["valid"] for b in one])
    assert valid.tolist() == [True] * 8 + [False] * 4
    assert one[1]["mask"].dtype == np.uint8 and one[1]["label"].dtype == np.int32
    assert not one[1]["image"][2:].any() and one[1]["has_mask"][:2].all()
    assert one[0]["index"].tolist() == list(range(6))
    # Two simulated hosts: host p holds rows p*3:(p+1)*3 of each global batch, with their global positions.
    hosts = [list(ip.make_loader(cfg, "validation", global_batch_size=6, train=False, seed=0,
                                 process_index=p, process_count=2)) for p in range(2)]
    for step in range(2):
        for key in ("image", "label", "valid", "mask", "index", "example_id"):
            np.testing.assert_array_equal(
                np.concatenate([hosts[0][step][key], hosts[1][step][key]]), one[step][key])
    # Eval images are the stored images normalised (min -> 0, 99.5th percentile -> 255) and rounded.
    rec = _records(phantom_dir, "validation")[0]
    x = transforms.normalise_intensity(rec["image"])
    np.testing.assert_array_equal(one[0]["image"][0], np.round(x * 255).astype(np.uint8))
    np.testing.assert_array_equal(one[0]["mask"][0], rec["mask"])
    with pytest.raises(ValueError, match="multiple of the process count"):
        ip.make_loader(cfg, "validation", global_batch_size=5, train=False, seed=0,
                       process_index=0, process_count=2)


def test_train_epochs_determinism_and_exact_resume(phantom_dir):
    cfg = _cfg(phantom_dir)
    cfg.augment.enabled = False

    def loader(seed=0):
        return ip.make_loader(cfg, "train", global_batch_size=4, train=True, seed=seed,
                              process_index=0, process_count=1)

    it = iter(loader())
    batches = [next(it) for _ in range(8)]  # two epochs of 16 // 4 = 4 steps
    ids = [[b["image"][i].tobytes() for i in range(4)] for b in batches]
    epoch0, epoch1 = sum(ids[:4], []), sum(ids[4:], [])
    assert len(set(epoch0)) == 16 and set(epoch0) == set(epoch1)  # each epoch sees every record once
    assert epoch0 != epoch1  # reshuffled per epoch
    it2 = iter(loader())
    for b in batches:
        np.testing.assert_array_equal(next(it2)["image"], b["image"])
    assert [x.tobytes() for x in next(iter(loader(seed=1)))["image"]] != ids[0]

    # Resume mid-epoch with augmentation on: identical remaining batches.
    cfg.augment.enabled = True
    it = iter(loader())
    for _ in range(3):
        next(it)
    state = it.get_state()
    rest = [next(it) for _ in range(4)]  # crosses the epoch boundary
    it3 = iter(loader())
    it3.set_state(state)
    for b in rest:
        got = next(it3)
        for k in b:
            np.testing.assert_array_equal(got[k], b[k])


def test_resize_updates_spacing():
    img = np.zeros((40, 80), np.float32)
    mask = np.zeros((40, 80), np.uint8)
    mask[:, :40] = 1
    out, m, sp = transforms.resize(img, mask, np.array([0.5, 0.5], np.float32), 20)
    assert out.shape == (20, 20) and m.shape == (20, 20)
    np.testing.assert_allclose(sp, [1.0, 2.0])
    assert m[:, :10].all() and not m[:, 10:].any()


def test_worker_processes_give_the_same_batches_and_resume(phantom_dir):
    cfg = _cfg(phantom_dir)

    def loader(workers):
        cfg.num_workers = workers
        return ip.make_loader(cfg, "train", global_batch_size=4, train=True, seed=3,
                              process_index=0, process_count=1)

    ref = iter(loader(0))
    expect = [next(ref) for _ in range(5)]
    it = iter(loader(1))
    got = [next(it) for _ in range(2)]
    state = it.get_state()
    got += [next(it) for _ in range(3)]
    for a, b in zip(got, expect):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
    it2 = iter(loader(1))
    it2.set_state(state)
    for b in expect[2:]:
        np.testing.assert_array_equal(next(it2)["image"], b["image"])


def test_step_state_resumes_with_other_process_and_worker_counts(phantom_dir):
    """The trainer's iterator (``Loader.resumable``) saves the step: a run stopped on 1 process without
    workers resumes on 2 processes (one with a worker) with exactly the global batches it would have seen."""
    cfg = _cfg(phantom_dir)

    def loader(index, count, workers=0, seed=3, batch=4):
        cfg.num_workers = workers
        return ip.make_loader(cfg, "train", global_batch_size=batch, train=True, seed=seed,
                              process_index=index, process_count=count)

    ref = iter(loader(0, 1))
    expect = [next(ref)["image"] for _ in range(6)]  # crosses an epoch boundary (16 // 4 = 4 steps)
    it = loader(0, 1).resumable()
    for _ in range(2):
        next(it)
    state = it.get_state()
    assert state == {"step": 2, "global_batch_size": 4, "seed": 3}
    hosts = [loader(0, 2, workers=1).resumable(), loader(1, 2).resumable()]
    for h in hosts:
        h.set_state(state)
    for want in expect[2:]:
        got = np.concatenate([next(h)["image"] for h in hosts])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="seed=3, this one 4"):
        loader(0, 1, seed=4).resumable().set_state(state)
    with pytest.raises(ValueError, match="batch_size=4, this one 8"):
        loader(0, 1, batch=8).resumable().set_state(state)
    with pytest.raises(ValueError, match="another loader"):
        loader(0, 1).resumable().set_state(b"grain state bytes")
