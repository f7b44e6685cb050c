"""HD95 on a batch of 512x512 masks: brain_jax (jit) vs medpy.metric.binary.hd95 vs MONAI.

    /work/venv/bin/python benchmarks/bench_hd95.py [--batch 16] [--size 512] [--repeats 5]

Prints the best-of-``repeats`` wall time per batch of each implementation, the ratios to ours, and
the largest relative difference of the numbers (medpy's union convention for ours and medpy;
``symmetric="max"`` for MONAI's, see brain_jax.metrics). Two scenes are timed: "near" (prediction
close to the ground truth), "far" (plus one false-positive blob far away in one case, which makes
that case span more rows) and "scattered" (false-positive specks all over one image: worst case). Ours compacts the rows holding border pixels to a budget (H/8, H/4,
H/2, else all H rows) chosen for the whole batch, so its time depends on the tallest mask in it. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np
from scipy import ndimage

from brain_jax.metrics import hausdorff_distance


def make_batch(batch: int, size: int, scene: str, seed: int = 0):
    """Tumour-like irregular blobs; predictions are perturbed copies.

    ``scene`` "far" adds a distant false-positive blob to one case; "scattered" adds false-positive
    specks all over one image (its border spans most rows: the whole batch takes the full path).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    targets, preds = [], []
    for i in range(batch):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.04, 0.12) * size
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 64) * size / 16
        t = np.hypot((yy - cy) / 1.2, xx - cx) + noise < r
        p = ndimage.binary_dilation(t, iterations=int(rng.integers(1, 4))) if i % 2 else ndimage.binary_erosion(t, iterations=2)
        ring = ndimage.binary_dilation(t, iterations=6) & ~ndimage.binary_erosion(t, iterations=6)
        p = p ^ ((ndimage.gaussian_filter(rng.normal(size=(size, size)), 2) > 0.25) & ring)  # ragged edge
        if scene == "far" and i == 0:
            p |= np.hypot(yy - 0.1 * size, xx - 0.1 * size) < 0.03 * size
        if scene == "scattered" and i == 0:
            p |= rng.random((size, size)) < 2e-3
        targets.append(t)
        preds.append(p)
    spacing = np.tile(np.float32([0.49, 0.49]) * 512 / size, (batch, 1))
    return np.stack(preds), np.stack(targets), spacing


def best_time(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch
    from medpy.metric import binary
    from monai.metrics import HausdorffDistanceMetric

    torch.set_num_threads(max(1, len(jax.devices("cpu"))))
    print(f"backend={jax.default_backend()} devices={jax.device_count()} batch={args.batch} size={args.size}")
    monai_metric = HausdorffDistanceMetric(include_background=False, percentile=95, directed=False)
    for scene in ("near", "far", "scattered"):
        pred, target, spacing = make_batch(args.batch, args.size, scene)
        pj, tj, sj = jax.device_put(pred), jax.device_put(target), jax.device_put(spacing)

        def ours(symmetric="union"):
            return np.asarray(jax.block_until_ready(hausdorff_distance(pj, tj, sj, 95, symmetric=symmetric)))

        t0 = time.perf_counter()
        ours()
        compile_s = time.perf_counter() - t0
        ours("max")
        t_ours, v_ours = best_time(ours, args.repeats)
        v_ours_max = ours("max")

        def medpy():
            return np.array([binary.hd95(p, t, voxelspacing=s.astype(np.float64)) for p, t, s in zip(pred, target, spacing)])

        t_medpy, v_medpy = best_time(medpy, max(1, args.repeats // 2))

        onehot = lambda m: torch.from_numpy(np.stack([~m, m], axis=1).astype(np.float32))  # noqa: E731
        yp, yt, sp = onehot(pred), onehot(target), [[float(a) for a in s] for s in spacing]

        def monai():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return monai_metric(yp, yt, spacing=sp).numpy()[:, 0]

        t_monai, v_monai = best_time(monai, max(1, args.repeats // 2))
        rel = lambda a, b: float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-9)))  # noqa: E731
        print(f"[{scene}] first call (compile+run) {compile_s:.2f} s")
        print(f"[{scene}] brain_jax {t_ours * 1e3:8.1f} ms/batch  ({t_ours / args.batch * 1e3:6.1f} ms/case)")
        print(f"[{scene}] medpy     {t_medpy * 1e3:8.1f} ms/batch  ratio medpy/ours {t_medpy / t_ours:5.2f}  max rel diff {rel(v_ours, v_medpy):.1e}")
        print(f"[{scene}] MONAI     {t_monai * 1e3:8.1f} ms/batch  ratio MONAI/ours {t_monai / t_ours:5.2f}  max rel diff (symmetric=max) {rel(v_ours_max, v_monai):.1e}")


if __name__ == "__main__":
    main()
