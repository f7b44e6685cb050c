"""Input pipeline throughput: host CPU per image up to the device transfer, and the host cores a GPU needs.

    python benchmarks/bench_loader.py [--figshare 96] [--kaggle 96] [--sizes 224,512] [--workers 0,2] [--json F]
    python benchmarks/bench_loader.py --tiny      # seconds: proves the script runs (CI), not a timing

Writes synthetic source files at the real datasets' native sizes and encodings into a temporary
folder, builds them with the project's own builders, and reads them through
``input_pipeline.make_loader``:

- Figshare: MATLAB v7.3 (HDF5) ``N.mat`` files in the ``cjdata`` layout (int16 512x512 slices, about
  one in twenty 256x256, with a tumour mask) and ``cvind.mat``, written by ``input_pipeline.synthetic``
  as MATLAB writes them (HDF5 behind a 512-byte header);
- Kaggle: 8-bit JPEGs (grayscale and RGB-encoded) of varying sizes around 512x512 in
  ``Training|Testing/<class>/`` folders.

The JPEG / .mat decoding happens once, at build time (timed and printed as build images/s); the
prepared cache (``input_pipeline.cache``: intensity window, resize, 8 bits) is written once per size on
the loader's first use (timed and printed as prepare images/s); then each batch is one gather of uint8
images and masks from memory-mapped arrays, and ``jax.device_put`` of the batch, which is what the host
does per step. Augmentation and the mean / std run on the device inside the step: ``--device-augment``
times that function (jitted, CPU backend) per batch, separately.

A benchmark of the former per-record host pipeline (decode, percentile, resize, scipy affine, float
3-channel stacking) is this file at the commit before the cache (930a61d); BENCHMARKS.md gives both.

Per dataset, image size and train/eval: with ``workers=0`` the whole pipeline runs in this process,
so images per CPU-second of this process is the rate of one core; with N > 0 grain worker
processes the wall-clock rate shows how it scales (on a shared machine, only indicatively). The
host cores needed to feed a GPU step rate = that rate / the per-core rate with augmentation on
(GPU rates: ``benchmarks/results/h200_2026-11-27.md``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

# Training step rates measured on one H200 (benchmarks/results/h200_2026-11-27.md, bf16): image size -> rate.
GPU_RATES = {224: ("ConvNeXt V2-T", 3066.0), 512: ("SegFormer-B0", 1129.0)}
FIGSHARE_LABELS = (1.0, 2.0, 3.0)  # meningioma, glioma, pituitary
KAGGLE_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


def mri_like(rng: np.random.Generator, h: int, w: int, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """A slice with MRI-like statistics (smooth anatomy inside a head ellipse, speckle noise, a bright
    lesion), so that compression and resampling cost what they cost on real scans; and its lesion mask."""
    from scipy import ndimage

    yy, xx = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
    head = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.36) ** 2 < 1
    anatomy = ndimage.gaussian_filter(rng.normal(size=(h, w)), max(h, w) / 64)
    anatomy = 0.45 + 0.25 * anatomy / (np.abs(anatomy).max() + 1e-9)
    cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.04, 0.12)
    lesion = np.hypot(yy - cy, xx - cx) < r
    img = head * (anatomy + 0.35 * lesion) + rng.normal(0.0, 0.03, (h, w))
    return np.clip(img, 0, None) * peak, lesion & head


def write_figshare(folder: Path, count: int, seed: int = 0) -> tuple[Path, str]:
    """``count`` slices (every 20th at 256x256, 4 a patient, patients spread over the 5 folds) zipped as
    shipped, and ``cvind.mat``; returns the folder and the split holding every fold written."""
    from input_pipeline.synthetic import write_cvind, write_figshare_mat

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    folds = []
    with zipfile.ZipFile(folder / "brainTumorDataPublic_1-766.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for n in range(1, count + 1):
            size = 256 if n % 20 == 0 else 512
            image, mask = mri_like(rng, size, size, peak=rng.uniform(600, 1400))
            patient = (n - 1) // 4
            path = folder / f"{n}.mat"
            write_figshare_mat(path, image.astype(np.int16), mask, FIGSHARE_LABELS[patient % 3], f"{100000 + patient}")
            zf.write(path, f"{n}.mat")
            path.unlink()
            folds.append(patient % 5 + 1)
    write_cvind(folder / "cvind.mat", folds)
    return folder, "+".join(f"fold{k}" for k in sorted(set(folds)))


def write_kaggle(folder: Path, count: int, seed: int = 1) -> tuple[Path, str]:
    """``count`` JPEGs, sizes around 512x512 (most exactly), grayscale or RGB-encoded, in class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for n in range(count):
        split = "Testing" if n % 5 == 4 else "Training"
        cls = KAGGLE_CLASSES[n % len(KAGGLE_CLASSES)]
        h, w = (512, 512) if rng.random() < 0.7 else tuple(int(v) for v in rng.integers(400, 640, 2))
        image, _ = mri_like(rng, h, w, peak=255.0)
        pic = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        if n % 2:
            pic = pic.convert("RGB")
        (folder / split / cls).mkdir(parents=True, exist_ok=True)
        pic.save(folder / split / cls / f"{cls}_{n:04d}.jpg", quality=90)
    return folder, "train"


def build(data_dir: Path, work: Path, figshare: int, kaggle: int) -> dict[str, dict]:
    """Writes and builds both datasets; returns per dataset (name, split, examples, build seconds)."""
    import input_pipeline as ip

    out = {}
    for name, writer, count in (("figshare_brain_tumor", write_figshare, figshare),
                                ("brain_tumor_mri", write_kaggle, kaggle)):
        manual, split = writer(work / name, count)
        t = time.perf_counter()
        ip.build_dataset(name, data_dir, manual_dir=manual)
        out[name] = {"split": split, "files": count, "build_s": time.perf_counter() - t}
    return out


def quartiles(x) -> dict[str, float]:
    q1, med, q3 = np.percentile(np.asarray(x, float), [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def time_loader(data_dir: Path, name: str, split: str, size: int, train: bool, workers: int,
                batch: int, steps: int, repeats: int) -> dict:
    """Images/s (wall) over ``repeats`` runs of ``steps`` batches each, after one warm-up batch, and (in-process
    only, ``workers=0``) images per CPU-second of this process: the rate of one core. Median and IQR."""
    import input_pipeline as ip

    cfg = ip.default_data_config()
    cfg.name, cfg.data_dir, cfg.image_size, cfg.num_workers = name, str(data_dir), size, workers
    t = time.perf_counter()
    loader = ip.make_loader(cfg, split, global_batch_size=batch, train=train, seed=0, num_epochs=10_000,
                            process_index=0, process_count=1)
    setup_s = time.perf_counter() - t  # the first call for a size prepares the cache
    it = iter(loader)
    import jax

    first = next(it)  # start-up (worker spawn, file open) is not throughput
    if first["image"].shape != (batch, size, size) or first["image"].dtype != np.uint8:
        raise RuntimeError(f"{name}: batch image {first['image'].shape} {first['image'].dtype}, expected "
                           f"{(batch, size, size)} uint8")
    keys = [k for k, v in first.items() if v.dtype.kind != "U"]  # ids stay on the host
    images, wall, cpu = [], [], []
    for _ in range(repeats):
        n = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            b = next(it)
            jax.block_until_ready(jax.device_put({k: b[k] for k in keys}))  # up to the device transfer
            n += int(np.sum(b["valid"]))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        images.append(n)
    del it
    rates = np.asarray(images) / np.asarray(wall)
    # With worker processes this process only receives batches: its CPU time says nothing per core.
    per_core = quartiles(np.asarray(images) / np.asarray(cpu)) if workers == 0 and min(cpu) > 0 else None
    return {"dataset": name, "size": size, "train": train, "workers": workers, "batch": batch, "steps": steps,
            "setup_s": setup_s, "cpu_s_per_1000": 1000.0 * float(np.sum(cpu)) / float(np.sum(images)),
            "repeats": repeats, "images": images, "wall_s": wall, "main_process_cpu_s": cpu,
            "images_per_s": quartiles(rates), "images_per_cpu_s": per_core}


def time_device_augment(size: int, batch: int, repeats: int) -> dict:
    """Seconds per batch of the step's input stage (``input_pipeline.augment.prepare``) jitted on this backend:
    with the default augmentation (training) and without (evaluation: 8 bits -> mean / std only)."""
    import jax

    import input_pipeline as ip
    from input_pipeline import augment

    rng = np.random.default_rng(0)
    host = {"image": rng.integers(0, 256, (batch, size, size), dtype=np.uint8),
            "mask": (rng.random((batch, size, size)) > 0.9).astype(np.uint8),
            "spacing_mm": np.ones((batch, 2), np.float32), "index": np.arange(batch, dtype=np.int32)}
    dev = jax.device_put(host)
    out = {"size": size, "batch": batch, "backend": jax.default_backend()}
    for mode, train in (("train", True), ("eval", False)):
        spec = augment.StepInputs.from_data_config(ip.default_data_config(), 0, train=train)
        fn = jax.jit(lambda b, step, spec=spec: augment.prepare(b, spec, step))
        jax.block_until_ready(fn(dev, 0))
        times = []
        for r in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(dev, r + 1))
            times.append(time.perf_counter() - t)
        out[mode] = quartiles(times)
    return out


def feeding_cores(rows: list[dict]) -> list[dict]:
    """Host cores needed for each GPU rate: the GPU's images/s over the per-core rate (workers=0, augmented)."""
    out = []
    for size, (model, gpu_rate) in GPU_RATES.items():
        for r in rows:
            if r["size"] == size and r["train"] and r["workers"] == 0:
                per_core = r["images_per_cpu_s"]["median"]
                out.append({"model": model, "size": size, "gpu_images_per_s": gpu_rate, "dataset": r["dataset"],
                            "per_core_images_per_s": per_core, "cores": math.ceil(gpu_rate / per_core)})
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    out.update({n: version(n) for n in ("numpy", "scipy", "pillow", "grain", "tensorflow-datasets", "h5py")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figshare", type=int, default=96, help="synthetic Figshare .mat files")
    ap.add_argument("--kaggle", type=int, default=96, help="synthetic Kaggle JPEGs (4 in 5 in Training)")
    ap.add_argument("--sizes", default="224,512", help="model input sizes, comma-separated")
    ap.add_argument("--workers", default="0,2", help="grain worker counts, comma-separated (0 = in-process)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed batches per repeat")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of --steps batches per configuration")
    ap.add_argument("--work-dir", default=None, help="where sources and records go (default: a temporary folder)")
    ap.add_argument("--tiny", action="store_true",
                    help="8 files per dataset, 64 px, batch 4, 2 repeats of 1 step, in-process")
    ap.add_argument("--json", default=None, help="write all rates to this file")
    ap.add_argument("--device-augment", action="store_true",
                    help="also time the step's input stage (augmentation, mean / std) per batch on this backend")
    args = ap.parse_args()
    if args.tiny:
        args.figshare, args.kaggle, args.sizes, args.workers = 8, 8, "64", "0"
        args.batch, args.steps, args.repeats = 4, 1, 2
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]

    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="bench_loader_", dir=args.work_dir) as tmp:
        work = Path(tmp)
        built = build(work / "tfds", work / "manual", args.figshare, args.kaggle)
        for name, b in built.items():
            rate = b["files"] / b["build_s"]
            print(f"build {name}: {b['files']} files in {b['build_s']:.1f} s ({rate:.1f} images/s: "
                  "source decoding + hashing + zlib + writing)")
        print(f"{'dataset':22s} {'size':>4s} {'mode':5s} {'workers':>7s} {'images/s (IQR)':>22s} "
              f"{'per core (IQR)':>22s} {'CPU s/1000':>10s}")
        fmt = lambda q: f"{q['median']:7.1f} ({q['q1']:6.1f}-{q['q3']:6.1f})" if q else f"{'-':>22s}"  # noqa: E731
        rows = []
        for name, b in built.items():
            for size in sizes:
                for train in (True, False):
                    for w in workers:
                        r = time_loader(work / "tfds", name, b["split"], size, train, w, args.batch, args.steps,
                                        args.repeats)
                        rows.append(r)
                        print(f"{name:22s} {size:4d} {'train' if train else 'eval':5s} {w:7d} "
                              f"{fmt(r['images_per_s']):>22s} {fmt(r['images_per_cpu_s']):>22s} "
                              f"{r['cpu_s_per_1000'] if w == 0 else float('nan'):10.2f}   (set-up incl. cache "
                              f"{r['setup_s']:.1f} s)", flush=True)
    augment_rows = []
    if args.device_augment:
        for size in sizes:
            a = time_device_augment(size, args.batch, max(3, args.repeats))
            augment_rows.append(a)
            print(f"device input stage ({a['backend']}) at {size} px, batch {args.batch}: train "
                  f"{1e3 * a['train']['median']:.1f} ms, eval {1e3 * a['eval']['median']:.1f} ms per batch")
    cores = feeding_cores(rows)
    for c in cores:
        print(f"{c['model']} at {c['size']} px ({c['gpu_images_per_s']:.0f} images/s on the GPU): {c['cores']} "
              f"host cores like this machine's on {c['dataset']} ({c['per_core_images_per_s']:.1f} images/s a core)")
    if args.json:
        doc = {"benchmark": "loader", "date": datetime.date.today().isoformat(), "host_cores": os.cpu_count(),
               "versions": versions(), "args": vars(args), "build": built, "rows": rows, "feeding_cores": cores,
               "device_augment": augment_rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
