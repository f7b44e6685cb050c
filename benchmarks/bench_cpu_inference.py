"""fp32 inference of brain-jax models against their Hugging Face PyTorch peers on the CPU, interleaved.

    python benchmarks/bench_cpu_inference.py --json cpu_inference.json      # the five models, batch 1 and 32
    python benchmarks/bench_cpu_inference.py --models segformer --batches 1 --repeats 21
    python benchmarks/bench_cpu_inference.py --one-core --json cpu1.json    # both sides on one core
    python benchmarks/bench_cpu_inference.py --tiny                          # seconds: proves the script runs (CI)

Both sides run the same random weights: ours is built with ``brain_jax.models.create`` and exported
with ``brain_jax.convert.to_hf``; the peer is transformers' class loaded from that folder, in eval mode
under ``torch.no_grad`` with ``torch.set_num_threads`` = all cores. Ours is one ``jax.jit`` of the whole
forward pass (the engine's eval forward: params as arguments, logits out). Peer modes: ``eager``
(NCHW), ``channels_last`` (the model and input in channels-last memory format) and ``compile``
(``torch.compile`` of the eager model; reported as unavailable where it fails here).

Every repeat calls each implementation once, in an order that rotates from repeat to repeat, so a
shared machine's load falls on all alike; after ``--warmup`` untimed calls. Printed per model and
batch size: the median wall time per call and its inter-quartile range, the ratio ours / peer as the
median (IQR) of the per-repeat ratios (below 1: ours is faster; for throughput, images/s is batch /
time), and the largest absolute difference of the logits between ours and the eager peer.

``--one-core`` pins the process to one CPU with both sides single-threaded (torch: 1 thread; XLA: no
Eigen thread pool): on a machine shared with other work a busy core slows the all-cores peer's spinning
OpenMP threads many times over, and XLA far less, so the all-cores ratios are only fair on a quiet
machine; one pinned core is fair while one other process runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from typing import Callable

import numpy as np

# name -> (variant, image size, extra create() overrides): the sizes the goals refer to
MODELS: dict[str, tuple[str, int, dict]] = {
    "convnextv2": ("tiny", 224, {}),
    "convnext": ("tiny", 224, {}),
    "segformer": ("b0", 512, {}),
    "swin": ("tiny_w7", 224, {"image_size": 224}),
    "vit": ("base_16", 224, {"image_size": 224}),
}
TINY_SIZES = {"convnextv2": 64, "convnext": 64, "segformer": 64, "swin": 64, "vit": 32}
PEER_MODES = ("eager", "channels_last", "compile")
NUM_CLASSES = {"segformer": 2}  # the project's tasks: tumour / background; 4 classes for classifiers


def quartiles(x) -> tuple[float, float, float]:
    """(median, first quartile, third quartile)."""
    q1, med, q3 = np.percentile(np.asarray(x, float), [25, 50, 75])
    return float(med), float(q1), float(q3)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each function over ``repeats`` rounds; the order rotates every round."""
    names = list(fns)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            wall[name].append(time.perf_counter() - t0)
    return wall


def pin_one_core() -> None:
    """Pin this process to one CPU and keep XLA:CPU single-threaded (call before jax starts its CPU client;
    the affinity holds torch's threads too: set ``torch.set_num_threads(1)`` as well)."""
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    out.update({n: version(n) for n in ("jax", "jaxlib", "flax", "numpy", "torch", "transformers")})
    return out


def build_pair(name: str, variant: str, overrides: dict, work: str):
    """(our model in eval mode, the transformers model loaded from our export, in eval mode)."""
    import transformers
    from flax import nnx

    import brain_jax.models as models
    from brain_jax.convert import to_hf

    ours = models.create(name, variant, NUM_CLASSES.get(name, 4), rngs=nnx.Rngs(params=0, dropout=1), **overrides)
    ours.eval()
    out = to_hf(ours, os.path.join(work, f"{name}_{variant}"))
    auto = "AutoModelForSemanticSegmentation" if name == "segformer" else "AutoModelForImageClassification"
    peer = getattr(transformers, auto).from_pretrained(out).eval()
    return ours, peer


def jax_forward(model):
    """``(forward, state)``: the whole eval forward as one jitted function of (state, images), as the
    engine runs it, and the model's state to call it with."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    return forward, state


def peer_forward(peer, mode: str):
    """A no-grad call of the peer for ``mode`` (eager | channels_last | compile) taking an NCHW tensor."""
    import copy

    import torch

    model = peer
    if mode == "channels_last":
        model = copy.deepcopy(peer).to(memory_format=torch.channels_last)
    elif mode == "compile":
        model = torch.compile(peer)

    def call(x):
        if mode == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return model(pixel_values=x).logits

    return call


def run_model(name: str, variant: str, size: int, overrides: dict, batches: list[int], modes: list[str],
              repeats: int, warmup: int, work: str) -> list[dict]:
    import jax
    import torch

    ours, peer = build_pair(name, variant, overrides, work)
    forward, state = jax_forward(ours)
    ours_fn = lambda x: forward(state, x)  # noqa: E731
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, size, size, 3)).astype(np.float32)
        xj = jax.device_put(x)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        t0 = time.perf_counter()
        ref_ours = np.asarray(jax.block_until_ready(ours_fn(xj)))
        first_call_s = time.perf_counter() - t0
        fns: dict[str, Callable[[], object]] = {"brain_jax": lambda: jax.block_until_ready(ours_fn(xj))}
        diffs, errors = {}, {}
        for mode in modes:
            call = peer_forward(peer, mode)
            try:
                t0 = time.perf_counter()
                ref = call(xt).numpy()
                errors[mode] = None
            except Exception as e:  # noqa: BLE001 (torch.compile without a working toolchain: report, go on)
                errors[mode] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                print(f"[{name} b{batch}] peer {mode}: unavailable ({errors[mode]})", flush=True)
                continue
            if ref.ndim == 4:
                ref = ref.transpose(0, 2, 3, 1)
            diffs[mode] = float(np.max(np.abs(ref - ref_ours)))
            fns[f"torch_{mode}"] = lambda call=call: call(xt)
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        load_before = os.getloadavg()[0]
        times = interleaved(fns, repeats)
        # the 1-minute load average around the timed calls: on a shared machine, other work (load above the
        # benchmark's own ~2) slows torch's spinning OpenMP threads far more than XLA's, flattering ours
        load = (load_before, os.getloadavg()[0])
        row = {"model": name, "variant": variant, "size": size, "batch": batch, "repeats": repeats,
               "first_call_s": first_call_s, "times_s": times, "max_abs_diff": diffs, "errors": errors,
               "loadavg_1min": load}
        for peer_name in fns:
            if peer_name != "brain_jax":
                ratios = np.asarray(times["brain_jax"]) / np.asarray(times[peer_name])
                row[f"ratio_vs_{peer_name}"] = dict(zip(("median", "q1", "q3"), quartiles(ratios)))
        report(row)
        rows.append(row)
    return rows


def report(row: dict) -> None:
    tag = f"[{row['model']}-{row['variant']} {row['size']}px b{row['batch']}]"
    print(f"{tag} first call of ours (compile + run) {row['first_call_s']:.2f} s; 1-min load average "
          f"{row['loadavg_1min'][0]:.1f} -> {row['loadavg_1min'][1]:.1f}", flush=True)
    for impl, ts in row["times_s"].items():
        med, q1, q3 = quartiles(np.asarray(ts) * 1e3)
        rate = row["batch"] / (med / 1e3)
        print(f"{tag} {impl:20s} {med:9.1f} ms  IQR {q1:8.1f}-{q3:8.1f}  ({rate:7.1f} images/s)", flush=True)
    for impl in row["times_s"]:
        if impl != "brain_jax":
            r = row[f"ratio_vs_{impl}"]
            diff = row["max_abs_diff"][impl.removeprefix("torch_")]
            print(f"{tag} ours / {impl:20s} {r['median']:5.2f} (IQR {r['q1']:.2f}-{r['q3']:.2f})  "
                  f"max |logit diff| {diff:.1e}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {tuple(MODELS)}")
    ap.add_argument("--batches", default="1,32", help="batch sizes: 1 (latency) and 32 (throughput)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls of each implementation first")
    ap.add_argument("--peer-modes", default="eager,channels_last,compile", help=f"comma-separated, from {PEER_MODES}")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--one-core", action="store_true",
                    help="pin to one CPU, torch and XLA single-threaded (fair while other work runs)")
    ap.add_argument("--tiny", action="store_true",
                    help="test-size models at 32-64 px, batches 1 and 2, 2 repeats, eager peer: checks the script runs")
    ap.add_argument("--json", default=None, help="write all timings to this file")
    args = ap.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.peer_modes.split(",") if m.strip()]
    if bad := [m for m in names if m not in MODELS]:
        ap.error(f"--models: unknown {bad}; choose from {tuple(MODELS)}")
    if bad := [m for m in modes if m not in PEER_MODES]:
        ap.error(f"--peer-modes: unknown {bad}; choose from {PEER_MODES}")
    batches = [int(b) for b in args.batches.split(",")]
    if args.tiny:
        batches, args.repeats, args.warmup = [1, 2], 2, 0
        modes = ["eager"] if args.peer_modes == ap.get_default("peer_modes") else modes

    if args.one_core:
        pin_one_core()
        args.threads = 1

    import jax
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    print(f"backend={jax.default_backend()} cpus={os.cpu_count()} pinned to {len(os.sched_getaffinity(0))} "
          f"torch_threads={torch.get_num_threads()} batches={batches} repeats={args.repeats} peer modes={modes}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            variant, size, overrides = MODELS[name]
            if args.tiny:
                variant, size = "test", TINY_SIZES[name]
                overrides = {**overrides, "image_size": size} if "image_size" in overrides else overrides
            rows += run_model(name, variant, size, overrides, batches, modes, args.repeats, args.warmup, work)
    if args.json:
        doc = {"benchmark": "cpu_inference", "date": datetime.date.today().isoformat(),
               "backend": jax.default_backend(), "cpus": os.cpu_count(),
               "cpus_used": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
               "processor": platform.processor(), "versions": versions(), "args": vars(args), "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
