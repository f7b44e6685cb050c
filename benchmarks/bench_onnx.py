"""fp32 CPU inference on 2 threads: our XLA forward, ONNX Runtime on our ONNX export, and the Hugging Face
PyTorch peer (eager, channels-last, ``torch.compile``), interleaved; plus ``predict`` start-up per route.

    python benchmarks/bench_onnx.py --json benchmarks/results/cpu2_DATE_onnx.json   # five models, b1 and b32
    python benchmarks/bench_onnx.py --models convnextv2 --batches 1 --repeats 21
    python benchmarks/bench_onnx.py --smoke                                          # tiny sizes: proves it runs
    python benchmarks/bench_onnx.py --profile --models convnextv2,convnext --batches 1  # ONNX Runtime per operator

Same random weights everywhere: ours from ``brain_jax.models.create``; the peer is transformers' model
loaded from our HF export; the ONNX graph is what ``brain-jax export --format onnx`` writes from that same
model (``brain_jax.app.export``). Threads: torch ``set_num_threads(2)``; ONNX Runtime intra-op 2, inter-op 1,
thread spinning off (a spinning pool slows the next implementation's call); XLA:CPU's own pool. Timing,
warm-up and the per-repeat ratios are those of ``bench_cpu_inference.py`` (which this imports); each table
row names the route. Start-up: a fresh ``brain-jax predict`` process on one 512² PNG, from process start to
exit, for the XLA route (empty compilation cache = cold, then warm) and the ONNX route (first run after the
export = cold, then warm; ONNX Runtime has no compilation cache).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cpu_inference as base  # noqa: E402
import bench_predict_startup as startup  # noqa: E402

NAMES = {"convnextv2": "ConvNeXt V2-T", "convnext": "ConvNeXt V1-T", "swin": "Swin-T", "vit": "ViT-B/16",
         "segformer": "SegFormer-B0"}
THREADS = 2


def ort_session(path: Path, threads: int = THREADS, profile_prefix: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_graph(ours, size: int, work: Path, opset: int) -> Path:
    """Our model -> ONNX exactly as ``brain-jax export`` writes it (without the companion file)."""
    from brain_jax.app import export as export_app

    path = work / f"{ours.config.model_type}.onnx"
    wrapped = export_app._torch_model(ours, work / f"{ours.config.model_type}_hf_export", size)
    export_app._write_graph(wrapped, size, opset, path, uuid.uuid4().hex)
    return path


def run_model(name: str, variant: str, size: int, overrides: dict, batches: list[int], modes: list[str],
              repeats: int, warmup: int, work: Path, opset: int) -> list[dict]:
    import jax
    import torch

    ours, peer = base.build_pair(name, variant, overrides, str(work))
    forward, state = base.jax_forward(ours)
    t0 = time.perf_counter()
    sess = ort_session(export_graph(ours, size, work, opset))
    export_s = time.perf_counter() - t0
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, size, size, 3)).astype(np.float32)
        xj = jax.device_put(x)
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        xt = torch.from_numpy(x_nchw)
        ref = np.asarray(jax.block_until_ready(forward(state, xj)))
        fns = {"xla": lambda: jax.block_until_ready(forward(state, xj)),
               "onnxruntime": lambda: sess.run(["logits"], {"pixel_values": x_nchw})}
        got = sess.run(["logits"], {"pixel_values": x_nchw})[0]
        diffs = {"onnxruntime": float(np.max(np.abs((got.transpose(0, 2, 3, 1) if got.ndim == 4 else got) - ref)))}
        errors = {}
        for mode in modes:
            call = base.peer_forward(peer, mode)
            try:
                out = call(xt).numpy()
            except Exception as e:  # noqa: BLE001 (torch.compile without a toolchain: report, go on)
                errors[mode] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                continue
            diffs[f"torch_{mode}"] = float(np.max(np.abs((out.transpose(0, 2, 3, 1) if out.ndim == 4 else out) - ref)))
            fns[f"torch_{mode}"] = lambda call=call: call(xt)
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        load_before = os.getloadavg()[0]
        times = base.interleaved(fns, repeats)
        row = {"model": name, "variant": variant, "size": size, "batch": batch, "repeats": repeats,
               "times_s": times, "max_abs_diff_vs_xla": diffs, "errors": errors, "export_s": export_s,
               "loadavg_1min": (load_before, os.getloadavg()[0])}
        for a in ("xla", "onnxruntime"):
            for b in fns:
                if b.startswith("torch_"):
                    r = np.asarray(times[a]) / np.asarray(times[b])
                    row[f"ratio_{a}_vs_{b}"] = dict(zip(("median", "q1", "q3"), base.quartiles(r)))
        print(f"[{name} {size}px b{batch}] " + ", ".join(
            f"{k} {base.quartiles(np.asarray(v) * 1e3)[0]:.1f} ms" for k, v in times.items()), flush=True)
        rows.append(row)
    return rows


def ort_profile(name: str, batch: int, calls: int, work: Path, opset: int) -> dict:
    """Where ONNX Runtime's time goes: ``calls`` profiled calls after 2 warm-up calls, node time summed per operator
    type (ONNX Runtime's own profiler, which names each kernel's op type), per call."""
    variant, size, overrides = base.MODELS[name]
    ours, _ = base.build_pair(name, variant, overrides, str(work))
    prof = ort_session(export_graph(ours, size, work, opset), profile_prefix=str(work / f"ort_{name}"))
    x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(2):  # warm-up calls (arena growth): not counted
        prof.run(["logits"], {"pixel_values": x})
    t0 = time.perf_counter()
    for _ in range(calls):
        prof.run(["logits"], {"pixel_values": x})
    wall = (time.perf_counter() - t0) / calls
    events = json.loads(Path(prof.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs[1]["ts"] + runs[1]["dur"]  # the end of the warm-up calls
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_end:
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3 / calls
    total = sum(per_op.values())
    ordered = dict(sorted(per_op.items(), key=lambda kv: -kv[1]))
    print(f"[{name} {size}px b{batch}] ONNX Runtime {wall * 1e3:.1f} ms per profiled call; kernels {total:.1f} ms:")
    for op, ms in ordered.items():
        print(f"  {op:24s} {ms:8.2f} ms  {ms / total:6.1%}")
    return {"model": name, "variant": variant, "size": size, "batch": batch, "calls": calls,
            "wall_ms_per_call": wall * 1e3, "kernel_ms_per_call_by_op": ordered}


def table(rows: list[dict], date: str) -> str:
    """Markdown rows in BENCHMARKS.md's inference-table format, one per (model, batch, route, peer)."""
    out = ["| model / measure | ours (route) | peer | ours / peer | date |", "|---|---|---|---|---|"]

    def fmt(ts):
        med, q1, q3 = base.quartiles(np.asarray(ts) * 1e3)
        return f"{med:.1f} ({q1:.1f}–{q3:.1f})"

    for row in rows:
        label = NAMES.get(row["model"], row["model"]) if row["variant"] != "test" else f"{row['model']}-test"
        what = f"{label} {row['size']}², " + (
            "latency ms, batch 1" if row["batch"] == 1 else f"ms per batch of {row['batch']}")
        for route in ("xla", "onnxruntime"):
            for peer in (k for k in row["times_s"] if k.startswith("torch_")):
                r = row[f"ratio_{route}_vs_{peer}"]
                out.append(f"| {what} | {fmt(row['times_s'][route])} ({'XLA' if route == 'xla' else 'ONNX Runtime'}) "
                           f"| {peer.removeprefix('torch_').replace('_', '-')} {fmt(row['times_s'][peer])} "
                           f"| {r['median']:.2f} ({r['q1']:.2f}–{r['q3']:.2f}) | {date} |")
    return "\n".join(out)


def predict_startup(work: Path, variant: str, size: int, repeats: int) -> dict:
    """Wall seconds of a fresh ``brain-jax predict`` of one image, cold and warm, per route."""
    wd, image = work / "startup_wd", work / "scan.png"
    startup.make_workdir(wd, variant, size)
    startup.make_image(image)
    env = {**os.environ, "PYTHONPATH": str(startup.ROOT)}
    subprocess.run([sys.executable, "-m", "brain_jax.cli", "export", "--from", str(wd)], check=True, env=env,
                   cwd=startup.ROOT, capture_output=True)
    cache = work / "xla_cache"
    xla = [startup.run_predict(wd, image, work / f"px{i}", cache)["wall_s"] for i in range(repeats + 1)]

    def onnx_run(i: int) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "brain_jax.cli", "predict", "--model", str(wd / "onnx" / "model.onnx"),
                        "--out", str(work / f"po{i}"), str(image)], check=True, env=env, cwd=startup.ROOT,
                       capture_output=True)
        return time.perf_counter() - t0

    ort = [onnx_run(i) for i in range(repeats + 1)]
    res = {"variant": variant, "size": size, "xla_cold_s": xla[0], "xla_warm_s": base.quartiles(xla[1:])[0],
           "onnx_cold_s": ort[0], "onnx_warm_s": base.quartiles(ort[1:])[0]}
    print(f"[predict start-up convnextv2-{variant} {size}px] XLA cold {res['xla_cold_s']:.2f} s, warm "
          f"{res['xla_warm_s']:.2f} s; ONNX Runtime cold {res['onnx_cold_s']:.2f} s, warm {res['onnx_warm_s']:.2f} s",
          flush=True)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(base.MODELS), help=f"comma-separated, from {tuple(base.MODELS)}")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peer-modes", default="eager,channels_last,compile", help=f"from {base.PEER_MODES}")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--startup-repeats", type=int, default=5, help="warm predict runs per route (0: skip)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats, eager peer: proves it runs")
    ap.add_argument("--json", default=None, help="write all timings here (default: benchmarks/results/)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: ONNX Runtime's per-operator profile of --models at --batches")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(THREADS)
    models = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    modes, repeats, warmup = args.peer_modes.split(","), args.repeats, args.warmup
    startup_variant, startup_size = "tiny", 224
    if args.smoke:
        batches, modes, repeats, warmup = [1, 2], ["eager"], 2, 1
        startup_variant, startup_size = "test", 32
    date = datetime.date.today().isoformat()
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            profiles = [ort_profile(name, b, max(repeats, 3), Path(tmp), args.opset)
                        for name in models for b in batches]
        out = Path(args.json) if args.json else Path(__file__).parent / "results" / f"cpu2_{date}_onnx_profile.json"
        out.write_text(json.dumps({"date": date, "threads": THREADS, "profiles": profiles}, indent=2) + "\n")
        print(f"wrote {out}")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            variant, size, overrides = base.MODELS[name]
            if args.smoke:
                variant, size = "test", base.TINY_SIZES[name]
                overrides = {k: size for k in overrides if k == "image_size"}
            rows += run_model(name, variant, size, overrides, batches, modes, repeats, warmup, Path(tmp), args.opset)
        start = (predict_startup(Path(tmp), startup_variant, startup_size, args.startup_repeats)
                 if args.startup_repeats else None)
    print(table(rows, date))
    out = Path(args.json) if args.json else (Path(__file__).parent / "results" /
                                             f"cpu2_{date}_onnx{'_smoke' if args.smoke else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": date, "machine": platform.machine(), "cpus": os.cpu_count(), "threads": THREADS,
            "versions": {**base.versions(), "onnxruntime": __import__("onnxruntime").__version__}, "smoke": args.smoke}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "predict_startup": start}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
