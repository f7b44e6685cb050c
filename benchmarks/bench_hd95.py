"""HD95 per batch of masks: brain_jax (jit) against medpy.metric.binary.hd95 and MONAI, interleaved.

    python benchmarks/bench_hd95.py [--batch 16] [--size 512] [--repeats 15] [--scenes near,far,scattered]
    python benchmarks/bench_hd95.py --tiny          # seconds: proves the script runs (CI), not a timing

Each repeat runs every implementation once, in an order that rotates from repeat to repeat, so a
shared machine's load falls on all of them alike. Printed per scene and implementation: the median
wall time per batch and its inter-quartile range, then the ratio ours / peer as the median (and IQR)
of the per-repeat ratios (below 1: ours is faster), and the largest relative difference of the
numbers (medpy's union convention for ours and medpy; ``symmetric="max"`` for MONAI's, see
brain_jax.metrics). The first call of ours (compilation) is timed apart.

Scenes: "near" (lesion-sized tumours, predictions close to the ground truth: the scene the goals
refer to), "far" (plus a distant false-positive blob in one case), "scattered" (false-positive
specks all over one image), "noisy" (one prediction is salt-and-pepper noise over the whole image,
as from an untrained model: ours falls back to the whole-image transform; slow, not in the default
list). ``--json FILE`` writes every timing with versions and the date.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
import warnings

import jax
import numpy as np
from scipy import ndimage

from brain_jax.metrics import hausdorff_distance

SCENES = ("near", "far", "scattered", "noisy")


def make_batch(batch: int, size: int, scene: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tumour-like irregular blobs (targets) and perturbed copies (predictions), with (row, col) spacing."""
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}; got {scene!r}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    targets, preds = [], []
    for i in range(batch):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.04, 0.12) * size
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 64) * size / 16
        t = np.hypot((yy - cy) / 1.2, xx - cx) + noise < r
        if i % 2:
            p = ndimage.binary_dilation(t, iterations=int(rng.integers(1, 4)))
        else:
            p = ndimage.binary_erosion(t, iterations=2)
        ring = ndimage.binary_dilation(t, iterations=6) & ~ndimage.binary_erosion(t, iterations=6)
        p = p ^ ((ndimage.gaussian_filter(rng.normal(size=(size, size)), 2) > 0.25) & ring)  # ragged edge
        if scene == "far" and i == 0:
            p |= np.hypot(yy - 0.1 * size, xx - 0.1 * size) < 0.03 * size
        if scene == "scattered" and i == 0:
            p |= rng.random((size, size)) < 2e-3
        if scene == "noisy" and i == 0:
            p = rng.random((size, size)) < 0.5
        targets.append(t)
        preds.append(p)
    spacing = np.tile(np.float32([0.49, 0.49]) * 512 / size, (batch, 1))
    return np.stack(preds), np.stack(targets), spacing


def quartiles(x) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(np.asarray(x, float), [25, 50, 75])
    return float(med), float(q1), float(q3)


def interleaved(fns: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process CPU seconds of each function over ``repeats`` rounds; the order rotates every round."""
    names = list(fns)
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def versions() -> dict[str, str]:
    """Versions of the packages timed here."""
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    out.update({name: version(name) for name in ("jax", "jaxlib", "numpy", "scipy", "torch", "monai", "medpy")})
    return out


def run_scene(scene: str, batch: int, size: int, repeats: int, monai_metric, binary, torch) -> dict:
    """Times ours, medpy and MONAI on one scene; returns the timings and the agreement of the numbers."""
    pred, target, spacing = make_batch(batch, size, scene)
    pj, tj, sj = jax.device_put(pred), jax.device_put(target), jax.device_put(spacing)

    def ours(symmetric: str = "union") -> np.ndarray:
        return np.asarray(jax.block_until_ready(hausdorff_distance(pj, tj, sj, 95, symmetric=symmetric)))

    def medpy() -> np.ndarray:
        return np.array([binary.hd95(p, t, voxelspacing=spacing[i].astype(np.float64))
                         for i, (p, t) in enumerate(zip(pred, target))])

    onehot = lambda m: torch.from_numpy(np.stack([~m, m], axis=1).astype(np.float32))  # noqa: E731
    yp, yt, sp = onehot(pred), onehot(target), [[float(a) for a in s] for s in spacing]

    def monai() -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return monai_metric(yp, yt, spacing=sp).numpy()[:, 0]

    t0 = time.perf_counter()
    v_ours = ours()
    compile_s = time.perf_counter() - t0
    v_max, v_medpy, v_monai = ours("max"), medpy(), monai()  # also warm-up
    times, cpu_times = interleaved({"brain_jax": ours, "medpy": medpy, "monai": monai}, repeats)
    rel = lambda a, b: float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-9)))  # noqa: E731
    out = {"scene": scene, "batch": batch, "size": size, "repeats": repeats, "first_call_s": compile_s,
           "times_s": times, "cpu_times_s": cpu_times, "max_rel_diff_vs_medpy": rel(v_ours, v_medpy),
           "max_rel_diff_vs_monai_max": rel(v_max, v_monai), "hd95_ours": v_ours.tolist()}
    for peer in ("medpy", "monai"):
        ratios = np.asarray(times["brain_jax"]) / np.asarray(times[peer])
        out[f"ratio_vs_{peer}"] = dict(zip(("median", "q1", "q3"), quartiles(ratios)))
    return out


def report(res: dict) -> None:
    s = res["scene"]
    print(f"[{s}] first call of ours (compile + run) {res['first_call_s']:.2f} s")
    for name, ts in res["times_s"].items():
        med, q1, q3 = quartiles(np.asarray(ts) * 1e3)
        cpu = quartiles(np.asarray(res["cpu_times_s"][name]) * 1e3)[0]
        print(f"[{s}] {name:9s} {med:8.1f} ms/batch  IQR {q1:7.1f}-{q3:7.1f}  (CPU time {cpu:7.1f} ms)")
    for peer, key in (("medpy", "max_rel_diff_vs_medpy"), ("monai", "max_rel_diff_vs_monai_max")):
        r = res[f"ratio_vs_{peer}"]
        print(f"[{s}] ours / {peer:5s} {r['median']:5.2f} (IQR {r['q1']:.2f}-{r['q3']:.2f})  "
              f"max rel diff {res[key]:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--scenes", default="near,far,scattered", help=f"comma-separated, from {SCENES}")
    ap.add_argument("--tiny", action="store_true",
                    help="batch 2 at 64 px, 2 repeats, scene near (unless --scenes): checks the script runs")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads for MONAI (its metric loops over cases in Python; with 2 threads on a "
                         "loaded machine its small ops spin and run ~10x slower)")
    ap.add_argument("--json", default=None, help="write all timings to this file")
    args = ap.parse_args()
    if args.tiny:
        args.batch, args.size, args.repeats = 2, 64, 2
        args.scenes = "near" if args.scenes == ap.get_default("scenes") else args.scenes
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
    bad = [s for s in scenes if s not in SCENES]
    if bad:
        ap.error(f"--scenes: unknown {bad}; choose from {SCENES}")

    import torch
    from medpy.metric import binary
    from monai.metrics import HausdorffDistanceMetric

    torch.set_num_threads(args.torch_threads)
    print(f"backend={jax.default_backend()} devices={jax.device_count()} batch={args.batch} size={args.size} "
          f"repeats={args.repeats} torch_threads={args.torch_threads}")
    monai_metric = HausdorffDistanceMetric(include_background=False, percentile=95, directed=False)
    results = []
    for scene in scenes:
        res = run_scene(scene, args.batch, args.size, args.repeats, monai_metric, binary, torch)
        report(res)
        results.append(res)
    if args.json:
        doc = {"benchmark": "hd95", "date": datetime.date.today().isoformat(), "backend": jax.default_backend(),
               "device": str(jax.devices()[0].device_kind), "versions": versions(), "args": vars(args),
               "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
