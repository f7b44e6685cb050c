"""Where a CPU inference call's time goes, per operation kind, for brain-jax and its PyTorch peer.

    python benchmarks/profile_inference.py --model convnextv2 --batch 1
    python benchmarks/profile_inference.py --model segformer --batch 1 --top 30 --json seg_profile.json

The models and inputs of ``bench_cpu_inference.py`` (same random weights on both sides). After
warm-up, ``--calls`` calls of each run under a profiler: ``jax.profiler.trace`` for ours (XLA:CPU
records one event per executed thunk, named after the HLO instruction it runs; the compiled HLO
tells what each one is: a matrix multiply, a convolution, a reduction fusion, an elementwise fusion,
a copy) and ``torch.profiler`` for the peer (aten operators, self time). Printed per side: time per
call by operation kind, then the most expensive operations with their shapes (ours) or names (the
peer), and the wall time per call (profiled, so slower than in the benchmark).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cpu_inference as bench  # noqa: E402
from profile_step import perfetto_kernel_totals  # noqa: E402

# torch operators -> the kinds used for ours
TORCH_KINDS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product",
               "aten::_flash_attention", "aten::linear"),
    "convolution": ("aten::mkldnn_convolution", "aten::_convolution", "aten::conv", "aten::_slow_conv",
                    "aten::thnn_conv"),
    "copy / layout": ("aten::copy_", "aten::contiguous", "aten::clone", "aten::cat", "aten::_cat",
                      "aten::permute", "aten::transpose", "aten::reshape", "aten::view", "aten::pad",
                      "aten::constant_pad_nd"),
    "normalisation": ("aten::native_layer_norm", "aten::layer_norm", "aten::batch_norm",
                      "aten::native_batch_norm", "aten::_batch_norm", "aten::linalg_vector_norm"),
    "resize": ("aten::upsample", "aten::_upsample"),
}

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")


def hlo_instructions(hlo_text: str) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """``{instruction: {opcode, shape, calls}}`` and ``{computation: [opcodes]}`` of compiled HLO text."""
    instrs, comps, current = {}, collections.defaultdict(list), None
    for line in hlo_text.splitlines():
        m = _COMP.match(line)
        if m:
            current = m.group(1)
            continue
        m = _INSTR.match(line)
        if m and current:
            name, shape, opcode, rest = m.groups()
            calls = re.search(r"calls=%([\w.\-]+)", rest)
            instrs[name] = {"opcode": opcode, "shape": shape, "calls": calls.group(1) if calls else None}
            comps[current].append(opcode)
    return instrs, comps


def hlo_kind(name: str, instrs: dict[str, dict], comps: dict[str, list[str]]) -> str | None:
    """The operation kind of an executed HLO instruction (thunk), or None for events that are not one."""
    ins = instrs.get(name)
    if ins is None:
        return None
    ops = set(comps.get(ins["calls"], [])) if ins["calls"] else set()
    ops.add(ins["opcode"])
    if "convolution" in ops:
        return "convolution"
    if "dot" in ops:
        return "matmul"
    if ops & {"copy", "transpose", "concatenate", "pad", "slice", "dynamic-slice", "bitcast"} == ops - {"fusion"}:
        return "copy / layout"
    if "reduce" in ops or "reduce-window" in ops:
        return "reduction fusion (norms, softmax, pooling)"
    if ops & {"erf", "exponential", "tanh", "logistic"}:
        return "elementwise fusion (with GELU / exp)"
    return "elementwise fusion"


def _print_kinds(title: str, kinds: dict[str, float], wall_ms: float) -> None:
    total = sum(kinds.values())
    print(f"\n== {title}: {total:.1f} ms of operations per call, {wall_ms:.1f} ms wall per call (profiled)")
    for k, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"{ms:9.2f} ms {ms / total if total else 0:6.1%}  {k}")


def profile_ours(model, x, calls: int, top: int) -> dict:
    import jax

    forward, state = bench.jax_forward(model)
    for _ in range(3):
        jax.block_until_ready(forward(state, x))
    instrs, comps = hlo_instructions(forward.lower(state, x).compile().as_text())
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            t0 = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(forward(state, x))
            wall_ms = (time.perf_counter() - t0) * 1e3 / calls
        totals, _ = perfetto_kernel_totals(Path(d))
    kinds: dict[str, float] = collections.defaultdict(float)
    ops = []
    for name, (us, n) in totals.items():
        kind = hlo_kind(name, instrs, comps)
        if kind is None:
            continue
        ms = us / 1e3 / calls
        kinds[kind] += ms
        ops.append((ms, n / calls, kind, name, instrs[name]["shape"]))
    _print_kinds("brain_jax (XLA:CPU thunks)", kinds, wall_ms)
    ops.sort(key=lambda o: -o[0])
    for ms, n, kind, name, shape in ops[:top]:
        print(f"{ms:9.3f} ms {n:5.1f}x  {kind:42s} {name} -> {shape}")
    return {"wall_ms": wall_ms, "kinds_ms": dict(kinds),
            "top": [{"ms": ms, "calls": n, "kind": k, "name": nm, "shape": s} for ms, n, k, nm, s in ops[:top]]}


def torch_kind(key: str) -> str:
    for kind, prefixes in TORCH_KINDS.items():
        if key.startswith(prefixes):
            return kind
    if key.startswith(("aten::softmax", "aten::_softmax", "aten::sum", "aten::mean", "aten::adaptive_avg")):
        return "reduction (softmax, pooling)"
    if key.startswith(("aten::gelu", "aten::exp")):
        return "elementwise (GELU / exp)"
    return "elementwise / other"


def profile_peer(peer, x, calls: int, top: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    call = bench.peer_forward(peer, "eager")
    for _ in range(3):
        call(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            call(x)
        wall_ms = (time.perf_counter() - t0) * 1e3 / calls
    kinds: dict[str, float] = collections.defaultdict(float)
    ops = []
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1e3 / calls
        if ms <= 0 or not ev.key.startswith("aten::"):
            continue
        kinds[torch_kind(ev.key)] += ms
        ops.append((ms, ev.count / calls, torch_kind(ev.key), ev.key))
    _print_kinds(f"PyTorch eager (aten self time, {torch.get_num_threads()} threads)", kinds, wall_ms)
    ops.sort(key=lambda o: -o[0])
    for ms, n, kind, name in ops[:top]:
        print(f"{ms:9.3f} ms {n:5.1f}x  {kind:42s} {name}")
    return {"wall_ms": wall_ms, "kinds_ms": dict(kinds),
            "top": [{"ms": ms, "calls": n, "kind": k, "name": nm} for ms, n, k, nm in ops[:top]]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="convnextv2", choices=tuple(bench.MODELS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calls", type=int, default=5, help="profiled calls per side")
    ap.add_argument("--top", type=int, default=20, help="operations listed per side")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--one-core", action="store_true", help="as bench_cpu_inference.py --one-core")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import os

    if args.one_core:
        bench.pin_one_core()

    import jax
    import torch

    torch.set_num_threads(1 if args.one_core else os.cpu_count() or 1)
    variant, size, overrides = bench.MODELS[args.model]
    x = np.random.default_rng(0).standard_normal((args.batch, size, size, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as work:
        ours, peer = bench.build_pair(args.model, variant, overrides, work)
    print(f"{args.model}-{variant} {size}px batch {args.batch}, {args.calls} profiled calls per side")
    doc = {"model": args.model, "variant": variant, "size": size, "batch": args.batch,
           "ours": profile_ours(ours, jax.device_put(x), args.calls, args.top)}
    if not args.skip_peer:
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        doc["peer"] = profile_peer(peer, xt, args.calls, args.top)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
