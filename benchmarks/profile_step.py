"""Where a training step's device time goes, kernel by kernel, for brain-jax and its PyTorch peer.

    python benchmarks/profile_step.py --model convnextv2 --variant tiny --batch 128 --image-size 224 --bf16
    python benchmarks/profile_step.py --model convnextv2 --variant test --batch 4 --image-size 64   # CPU smoke

The same step as ``bench_models.py`` (forward, cross-entropy, backward, AdamW). After compilation and
warm-up, ``--steps`` steps run under ``jax.profiler.trace`` (its Perfetto JSON is read back here: no
TensorBoard needed) and under ``torch.profiler`` for each ``--torch-modes`` entry. Prints, per
framework, the kernels that take the most device time per step (with calls per step and share), the
device time summed against the wall time of a step (a gap means the device waits on the host), and
writes everything to ``--json``. On a CPU the JAX trace holds host events only (nested, so their sum
exceeds the wall time); the table then shows those. Run on a CPU only so far: on a GPU the device
lines of the trace are expected to be named "/device:GPU:N" with "Stream ..." threads (what the code
keeps); check the first GPU run's table against the wall time.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402


def _table(title: str, totals: dict[str, tuple[float, int]], steps: int, wall_ms: float, top: int) -> dict:
    """Print the ``top`` names by time; ``totals`` maps name -> (microseconds over all steps, calls)."""
    device_ms = sum(us for us, _ in totals.values()) / 1e3 / steps
    rows = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    print(f"\n== {title}: {device_ms:.2f} ms of kernels per step, {wall_ms:.2f} ms wall per step "
          f"({len(totals)} distinct kernels)")
    print(f"{'ms/step':>9} {'share':>6} {'calls':>6}  kernel")
    out = []
    for name, (us, calls) in rows:
        ms = us / 1e3 / steps
        share = ms / device_ms if device_ms else 0.0
        print(f"{ms:9.3f} {share:6.1%} {calls / steps:6.1f}  {name[:110]}")
        out.append({"kernel": name, "ms_per_step": round(ms, 4), "share": round(share, 4),
                    "calls_per_step": calls / steps})
    return {"device_ms_per_step": round(device_ms, 3), "wall_ms_per_step": round(wall_ms, 3), "top": out}


def perfetto_kernel_totals(trace_dir: Path) -> tuple[dict[str, tuple[float, int]], bool]:
    """Sum 'X' events of the newest Perfetto trace under ``trace_dir`` by name.

    Returns (totals, on_device): device (GPU/TPU) processes' events when there are any, else every
    host event (a CPU run)."""
    traces = sorted(trace_dir.rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"jax.profiler wrote no perfetto_trace.json.gz under {trace_dir}")
    data = json.load(gzip.open(traces[-1]))
    events = data["traceEvents"] if isinstance(data, dict) else data
    meta = [e for e in events if e.get("ph") == "M"]
    proc = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
    device_pids = {pid for pid, name in proc.items() if "/device:" in name and "CPU" not in name}
    on_device = bool(device_pids)
    # A device process also carries derived lines ("XLA Modules", "XLA Ops") spanning the same time as
    # the kernels; only the stream lines are counted when there are any.
    threads = {(e["pid"], e.get("tid")): e["args"]["name"] for e in meta if e.get("name") == "thread_name"}
    streams = {k for k, name in threads.items() if k[0] in device_pids and name.startswith("Stream")}
    totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") != "X" or (on_device and e.get("pid") not in device_pids):
            continue
        if streams and (e.get("pid"), e.get("tid")) not in streams:
            continue
        t = totals[e.get("name", "?")]
        t[0] += float(e.get("dur", 0.0))
        t[1] += 1
    return {k: (v[0], v[1]) for k, v in totals.items()}, on_device


def profile_jax(args: argparse.Namespace, depthwise: str, x: np.ndarray) -> dict:
    import jax

    step, sync, _ = bench_models.make_jax_step(args, depthwise, x, 1)
    for _ in range(1 + args.warmup):  # compile, then warm up
        step()
    sync()
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            wall_ms = (time.perf_counter() - t0) * 1e3 / args.steps
        totals, on_device = perfetto_kernel_totals(Path(d))
    title = f"jax[{depthwise}] " + ("device kernels" if on_device else "host events (no device in the trace)")
    return _table(title, totals, args.steps, wall_ms, args.top)


def profile_torch(args: argparse.Namespace, x: np.ndarray, compiled: bool) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    step, sync, _ = bench_models.make_torch_step(args, x, 1, compiled)
    for _ in range(1 + args.warmup):
        step()
    sync()
    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(args.steps):
            step()
        sync()
    wall_ms = (time.perf_counter() - t0) * 1e3 / args.steps
    totals: dict[str, tuple[float, int]] = {}
    for ev in prof.key_averages():
        if cuda:
            us = getattr(ev, "self_device_time_total", None)
            us = getattr(ev, "self_cuda_time_total", 0.0) if us is None else us
        else:
            us = ev.self_cpu_time_total
        if us > 0:
            totals[ev.key] = (float(us), int(ev.count))
    kind = "device kernels" if cuda else "host ops (CPU)"
    return _table(f"torch[{'compile' if compiled else 'eager'}] {kind}", totals, args.steps, wall_ms, args.top)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = bench_models.parse_parser()
    p.description = __doc__.splitlines()[0]
    p.set_defaults(steps=5, torch_modes="eager,compile")
    p.add_argument("--top", type=int, default=25, help="kernels listed per framework")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    x = np.random.default_rng(0).standard_normal((args.batch, args.image_size, args.image_size, 3)).astype(np.float32)
    print(f"{args.model}/{args.variant} batch {args.batch} @ {args.image_size}px, "
          f"{'bf16' if args.bf16 else 'fp32'}, {args.steps} profiled steps", flush=True)
    results: dict[str, dict] = {}
    if not args.skip_jax:
        for impl in (["shift", "grouped"] if args.depthwise == "both" else [args.depthwise]):
            results[f"jax[{impl}]"] = profile_jax(args, impl, x)
    for mode in [m for m in args.torch_modes.split(",") if m]:
        if mode not in ("eager", "compile"):
            raise SystemExit(f"--torch-modes: unknown mode {mode!r} (expected eager, compile)")
        try:
            results[f"torch[{mode}]"] = profile_torch(args, x, mode == "compile")
        except Exception as e:  # e.g. torch.compile without a C++ toolchain: report, keep going
            results[f"torch[{mode}]"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            print(f"\n== torch[{mode}]: unavailable ({results[f'torch[{mode}]']['error']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
