"""The prepared cache: contents equal the host preparation, shared by split strings, and never read when it is
stale, damaged or half-written."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import input_pipeline as ip
from input_pipeline import cache, transforms


@pytest.fixture
def data_dir(tiny_phantoms, tmp_path):
    """A private copy of the tiny phantoms (these tests damage their caches)."""
    d = tmp_path / "data"
    shutil.copytree(tiny_phantoms, d, ignore=shutil.ignore_patterns("brain_jax_cache"))
    cache.forget()
    yield d
    cache.forget()


def _cfg(d, **kw):
    c = ip.default_data_config()
    c.data_dir, c.builder_config, c.image_size = str(d), "tiny", 24
    for k, v in kw.items():
        c[k] = v
    return c


def _records(d, split):
    import tensorflow_datasets as tfds

    ds = tfds.data_source("brain_phantoms/tiny", split=split, data_dir=str(d))
    return [ds[i] for i in range(len(ds))]


def test_cache_holds_the_host_preparation_and_is_shared_by_split_strings(data_dir):
    cfg = _cfg(data_dir)
    part = cache.open_part(cfg, "brain_phantoms", "tiny", "validation")
    recs = _records(data_dir, "validation")
    got = part.gather(np.arange(len(recs)))
    for i, r in enumerate(recs):  # resized 32 -> 24: bilinear image, nearest mask, spacing x 32/24
        img, mask, sp = transforms.prepare(r["image"], r["mask"], r["pixel_spacing_mm"], 24)
        np.testing.assert_array_equal(got["image"][i], img)
        np.testing.assert_array_equal(got["mask"][i], mask > 0)
        np.testing.assert_allclose(got["spacing"][i], r["pixel_spacing_mm"] * 32 / 24, rtol=1e-6)
        assert got["label"][i] == r["label"] and got["has_mask"][i] == r["has_mask"]
    manifest = json.loads((part.folder / "manifest.json").read_text())
    assert manifest["n"] == len(recs) and manifest["size"] == 24 and set(manifest["sha256"]) == set(cache.ARRAYS)
    # "train+validation" reads the two built splits' caches: no third cache, the same batch as the records
    batch = next(iter(ip.make_loader(cfg, "train+validation", global_batch_size=24, train=False, seed=0,
                                     process_index=0, process_count=1)))
    folders = sorted(p.parent.parent.name for p in (data_dir / "brain_jax_cache").rglob("manifest.json"))
    assert folders == ["train", "validation"]
    np.testing.assert_array_equal(batch["image"][16:], got["image"])


def test_stale_damaged_and_half_written_caches_are_rebuilt_never_read(data_dir, capsys):
    cfg = _cfg(data_dir)
    part = cache.open_part(cfg, "brain_phantoms", "tiny", "test")
    good = part.gather(np.arange(part.n))["image"].copy()
    folder = part.folder

    # damaged: one byte of the images flipped
    raw = bytearray((folder / "image.npy").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "image.npy").write_bytes(bytes(raw))
    cache.forget()
    with pytest.raises(cache.CacheError, match=r"image.npy is damaged.*brain-jax data prepare brain_phantoms"):
        cache.open_part(cfg, "brain_phantoms", "tiny", "test", build=False)
    again = cache.open_part(cfg, "brain_phantoms", "tiny", "test")
    assert "rebuilding it" in capsys.readouterr().err
    np.testing.assert_array_equal(again.gather(np.arange(again.n))["image"], good)

    # stale: the dataset's records changed (here: their fingerprint in the manifest no longer matches)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"fingerprint": "0" * 64}))
    cache.forget()
    with pytest.raises(cache.CacheError, match="stale"):
        cache.open_part(cfg, "brain_phantoms", "tiny", "test", build=False)

    # half-written: a killed prepare leaves only a temporary folder, which is never read; no manifest = rebuilt
    shutil.rmtree(folder)
    (folder.parent / f".{folder.name}.tmp-dead").mkdir()
    (folder.parent / f".{folder.name}.tmp-dead" / "image.npy").write_bytes(b"partial")
    cache.forget()
    with pytest.raises(cache.CacheError, match="not prepared"):
        cache.open_part(cfg, "brain_phantoms", "tiny", "test", build=False)
    folder.mkdir()
    (folder / "image.npy").write_bytes(b"partial")
    cache.forget()
    with pytest.raises(cache.CacheError, match="no readable manifest"):
        cache.open_part(cfg, "brain_phantoms", "tiny", "test", build=False)
    rebuilt = cache.open_part(cfg, "brain_phantoms", "tiny", "test")
    np.testing.assert_array_equal(rebuilt.gather(np.arange(rebuilt.n))["image"], good)

    # another size or percentile is another cache, never the 24 px one
    other = cache.open_part(_cfg(data_dir, upper_percentile=90.0), "brain_phantoms", "tiny", "test")
    assert other.folder != folder and not np.array_equal(other.gather(np.arange(other.n))["image"], good)


def test_an_unwritable_cache_dir_is_named(data_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # (a read-only folder would not stop root, who runs CI)
    with pytest.raises(cache.CacheError, match=r"cannot be written.*data.cache_dir"):
        cache.open_part(_cfg(data_dir, cache_dir=str(blocker / "cache")), "brain_phantoms", "tiny", "test")


def test_cache_dir_setting_and_data_prepare_cli(data_dir, tmp_path):
    where = tmp_path / "elsewhere"
    part = cache.open_part(_cfg(data_dir, cache_dir=str(where)), "brain_phantoms", "tiny", "train")
    assert where in part.folder.parents and not (data_dir / "brain_jax_cache").exists()
    cli = [sys.executable, "-m", "brain_jax.cli", "data", "prepare", "brain_phantoms", "--config", "tiny",
           "--data-dir", str(data_dir), "--image-size", "24", "--no-compile-cache"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [line.split(":")[1] for line in out.stdout.splitlines()] == ["test", "train", "validation"]
    assert len(list((data_dir / "brain_jax_cache").rglob("manifest.json"))) == 3
    bad = subprocess.run(cli[:-5] + ["--data-dir", str(tmp_path / "none"), "--image-size", "24"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "brain_phantoms" in bad.stderr and "Traceback" not in bad.stderr
