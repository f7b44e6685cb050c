"""Where ``brain-jax demo``'s time goes, per model: initialisation, compilation, the step, the data.

    python benchmarks/profile_demo.py --task classification --steps 20
    python benchmarks/profile_demo.py --task segmentation --steps 5 --ops 25 --data-dir workdirs/demo/data

Builds the demo's training step exactly as the trainer does (``configs/demo.py``, the engine's step,
optimizer and mesh) on a random batch of the demo's shape, and reports: model initialisation, the
step's tracing + lowering and XLA compilation (apart), then wall and CPU seconds per step (CPU above
wall means several cores were busy), and with ``--ops N`` the N most expensive XLA operations of one
step, classified as in ``profile_inference.py``. With ``--data-dir`` (a folder holding
brain_phantoms/small, as the demo builds it) it also times the demo's input pipeline alone.
"""
from __future__ import annotations

import argparse
import collections
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="classification", choices=("classification", "segmentation"))
    ap.add_argument("--steps", type=int, default=10, help="timed steps after the compiling one")
    ap.add_argument("--ops", type=int, default=0, help="list the N most expensive XLA operations of a step")
    ap.add_argument("--data-dir", default=None, help="time the input pipeline on this built data folder")
    ap.add_argument("--hlo", default=None, help="write the compiled step's HLO text to this file")
    ap.add_argument("--override", action="append", default=[], help="--config.FIELD=VALUE for the demo config")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from brain_jax.train import engine, optim
    from brain_jax.train.model_factory import create_model
    from brain_jax.train.spec import RunSpec
    from brain_jax.train.config import load_config

    config = load_config(f"demo.py:task={args.task}", list(args.override))
    seg = args.task == "segmentation"
    spec = RunSpec.from_config(config)
    model, t_init, _ = _timed(lambda: create_model(spec))
    parts = engine.split_model(model)
    tx, schedule = optim.make_optimizer(config.optimizer, int(config.num_train_steps))
    lc = engine.LossConfig.from_config(spec.task, config.loss)
    mesh = engine.make_mesh(int(config.mesh.num_devices))
    ema = float(config.optimizer.ema_decay) > 0
    state = engine.replicate(engine.init_train_state(parts, tx, ema=ema), mesh)
    rest = engine.replicate(parts.rest, mesh)
    step_fn = engine.jit_train_step(engine.make_train_step(parts, tx, schedule, lc, seed=0,
                                                           ema_decay=float(config.optimizer.ema_decay)), mesh, state)
    b, s = int(config.batch_size), int(config.data.image_size)
    rng = np.random.default_rng(0)
    host = {"image": rng.standard_normal((b, s, s, 3)).astype(np.float32), "valid": np.ones((b,), bool)}
    if seg:
        host["mask"] = (rng.random((b, s, s)) < 0.03).astype(np.int32)
        host["has_mask"] = np.ones((b,), bool)
    else:
        host["label"] = rng.integers(0, 4, (b,)).astype(np.int32)
    batch = engine.to_global(engine.pad_local_batch(host, engine.local_batch_multiple(mesh)), mesh)
    lowered, t_lower, _ = _timed(lambda: step_fn.lower(state, batch, rest))
    compiled, t_compile, c_compile = _timed(lowered.compile)
    print(f"{args.task}: {spec.label}, batch {b} at {s} px, "
          f"{len(jax.devices())} device(s), {config.num_train_steps} steps in the demo")
    print(f"  model init {t_init:.1f} s; trace + lower {t_lower:.1f} s; XLA compile {t_compile:.1f} s wall "
          f"({c_compile:.1f} s CPU)")
    if args.hlo:
        Path(args.hlo).write_text(compiled.as_text())
    state, _ = compiled(state, batch, rest)
    jax.block_until_ready(state)
    walls, cpus = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(args.steps):
        (state, metrics), w, c = _timed(lambda: jax.block_until_ready(compiled(state, batch, rest)))
        walls.append(w)
        cpus.append(c)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    w, c = float(np.median(walls)), float(np.median(cpus))
    print(f"  step {w * 1e3:.0f} ms wall, {c * 1e3:.0f} ms CPU (median of {args.steps}), {faults:.0f} page faults "
          f"(minor) per step; the demo's "
          f"{config.num_train_steps} steps: ~{w * int(config.num_train_steps):.0f} s")
    if args.ops:
        from profile_inference import hlo_instructions, hlo_kind
        from profile_step import perfetto_kernel_totals

        instrs, comps = hlo_instructions(compiled.as_text())
        with tempfile.TemporaryDirectory() as d:
            with jax.profiler.trace(d, create_perfetto_trace=True):
                for _ in range(3):
                    state, _ = jax.block_until_ready(compiled(state, batch, rest))
            totals, _ = perfetto_kernel_totals(Path(d))
        kinds: dict[str, float] = collections.defaultdict(float)
        rows = []
        for name, (us, n) in totals.items():
            kind = hlo_kind(name, instrs, comps)
            if kind is not None:
                kinds[kind] += us / 3e3
                rows.append((us / 3e3, n / 3, kind, name, instrs[name]["shape"]))
        for k, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"  {ms:8.1f} ms  {k}")
        for ms, n, kind, name, shape in sorted(rows, key=lambda r: -r[0])[: args.ops]:
            print(f"  {ms:8.2f} ms {n:4.1f}x {kind:42s} {name} -> {shape[:60]}")
    if args.data_dir:
        from brain_jax.train.data import PipelineData

        config.data.data_dir = args.data_dir
        it = PipelineData(config).train_iterator()
        next(it)
        (_, w, c) = _timed(lambda: [next(it) for _ in range(args.steps)])
        print(f"  input pipeline: {w / args.steps * 1e3:.0f} ms wall, {c / args.steps * 1e3:.0f} ms CPU per batch")
    del jnp


if __name__ == "__main__":
    main()
