"""Training throughput of a brain-jax model against its Hugging Face PyTorch peer, in one run.

    python benchmarks/bench_models.py --model convnextv2 --variant tiny --batch 128 --image-size 224 --bf16
    python benchmarks/bench_models.py --model convnextv2 --variant test --batch 8 --image-size 64 --steps 5  # CPU

Both sides train the same architecture (the PyTorch model is transformers' class built from the
config.json that ``brain_jax.convert.to_hf`` would write) on the same random batch: forward, softmax
cross-entropy, backward, AdamW update. JAX: one jitted step with donated state, optionally bfloat16
compute (float32 params), with the depthwise-conv implementation of your choice. PyTorch: eager and
``torch.compile`` (when it works here), bf16 autocast on GPU. Prints images/s for every mode and the
ratio JAX / best PyTorch mode; ``--json FILE`` also writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Callable

import numpy as np

# JAX would otherwise take 75 % of the GPU at start-up and leave PyTorch, in the same process, too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")


def _timed(step: Callable[[], None], sync: Callable[[], None], warmup: int, steps: int) -> float:
    """Seconds per step after ``warmup`` untimed steps (compilation, autotuning)."""
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


# --------------------------------------------------------------------------- JAX


def make_jax_step(args: argparse.Namespace, depthwise: str, x: np.ndarray, y_seed: int):
    """(step, sync, info): one training step on device-resident data, and a wait for its result."""
    os.environ["BRAIN_JAX_DEPTHWISE"] = depthwise  # read when the step is traced (impl="auto")
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import brain_jax.models as models

    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    model = models.create(args.model, args.variant, args.num_classes, dtype=dtype,
                          rngs=nnx.Rngs(params=0, dropout=1), **_overrides(args))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(1e-4, weight_decay=0.05)
    opt_state = tx.init(params)

    def loss_fn(params, rest, xb, yb):
        # copy: fresh Variables at this trace level, so BatchNorm stats / RNG counters may be updated
        m = nnx.merge(graphdef, params, rest, copy=True)
        logits = m(xb)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), yb).mean()
        return loss, nnx.state(m, nnx.Not(nnx.Param))  # updated RNG counters etc.

    def train_step(params, rest, opt_state, xb, yb):
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    step_fn = jax.jit(train_step, donate_argnums=(0, 1, 2))
    xb = jax.device_put(jnp.asarray(x))
    out_shape = jax.eval_shape(lambda p, r, a: nnx.merge(graphdef, p, r)(a), params, rest, xb).shape
    yb = jax.device_put(jnp.asarray(_labels(out_shape[:-1], args.num_classes, y_seed)))
    state = {"p": params, "r": rest, "o": opt_state, "loss": None}

    def step():
        state["p"], state["r"], state["o"], state["loss"] = step_fn(state["p"], state["r"], state["o"], xb, yb)

    def info() -> dict:
        return {"loss": float(state["loss"]), "backend": jax.default_backend(),
                "device": str(jax.devices()[0].device_kind)}

    return step, lambda: jax.block_until_ready(state["loss"]), info


def bench_jax(args: argparse.Namespace, depthwise: str, x: np.ndarray, y_seed: int) -> tuple[float, dict]:
    return _bench(*make_jax_step(args, depthwise, x, y_seed), args)


def _bench(step: Callable[[], None], sync: Callable[[], None], info: Callable[[], dict],
           args: argparse.Namespace) -> tuple[float, dict]:
    """Seconds per step, and the first (compiling) step's time with the step's own info."""
    t_compile = time.perf_counter()
    step()
    sync()
    t_compile = time.perf_counter() - t_compile
    sec = _timed(step, sync, args.warmup, args.steps)
    return sec, {"first_step_s": round(t_compile, 2), **info()}


def _overrides(args: argparse.Namespace) -> dict:
    o: dict = {"drop_path_rate": args.drop_path}
    if args.model in ("swin", "vit"):
        o["image_size"] = args.image_size
    return o


def _labels(shape: tuple[int, ...], num_classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, shape).astype(np.int32)


# --------------------------------------------------------------------------- PyTorch


def hf_peer(args: argparse.Namespace):
    """The transformers model matching ``--model/--variant`` (random init), from our exported config."""
    import jax.numpy as jnp
    import transformers
    from flax import nnx

    import brain_jax.models as models
    from brain_jax.convert import arch_module

    ours = nnx.eval_shape(lambda: models.create(args.model, args.variant, args.num_classes, dtype=jnp.float32,
                                                **_overrides(args)))
    cfg_dict = dict(arch_module(ours.config.model_type).hf_config(ours))
    arch = cfg_dict["architectures"][0]
    config = transformers.AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    return getattr(transformers, arch)(config)


def make_torch_step(args: argparse.Namespace, x: np.ndarray, y_seed: int, compiled: bool):
    """(step, sync, info) for the transformers peer, eager or under torch.compile."""
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = hf_peer(args).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=dev.type == "cuda")
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)
    with torch.no_grad():
        out_shape = model(pixel_values=xb[:1]).logits.shape  # (1, C) or (1, C, h, w)
    yb = torch.from_numpy(_labels((x.shape[0], *out_shape[2:]), args.num_classes, y_seed)).long().to(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16 and dev.type == "cuda")

    def fwd_bwd():
        with autocast:
            logits = model(pixel_values=xb).logits
        loss = F.cross_entropy(logits.float(), yb)
        loss.backward()
        return loss

    fn = torch.compile(fwd_bwd) if compiled else fwd_bwd
    holder = {}

    def step():
        holder["loss"] = fn()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or "cpu"

    def info() -> dict:
        return {"loss": float(holder["loss"].detach()), "device": name,
                "autocast_bf16": bool(args.bf16 and dev.type == "cuda")}

    return step, sync, info


def bench_torch(args: argparse.Namespace, x: np.ndarray, y_seed: int, compiled: bool) -> tuple[float, dict]:
    return _bench(*make_torch_step(args, x, y_seed, compiled), args)


# --------------------------------------------------------------------------- main


def parse_parser() -> argparse.ArgumentParser:
    """The options shared with ``profile_step.py``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="convnextv2", help="convnextv2 | convnext | swin | vit | segformer")
    p.add_argument("--variant", default="tiny")
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (compile) step")
    p.add_argument("--bf16", action="store_true", help="JAX bfloat16 compute; torch bf16 autocast on GPU")
    p.add_argument("--drop-path", type=float, default=0.0)
    p.add_argument("--depthwise", default="auto", choices=["auto", "shift", "grouped", "both"],
                   help="JAX depthwise-conv implementation ('both' times each)")
    p.add_argument("--torch-modes", default="eager,compile", help="comma list of eager, compile; empty to skip")
    p.add_argument("--skip-jax", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    x = np.random.default_rng(0).standard_normal((args.batch, args.image_size, args.image_size, 3)).astype(np.float32)
    results: dict[str, dict] = {}

    def record(name: str, fn: Callable[[], tuple[float, dict]]) -> None:
        try:
            sec, info = fn()
            results[name] = {"images_per_s": round(args.batch / sec, 2), "step_ms": round(sec * 1e3, 2), **info}
        except Exception as e:  # e.g. torch.compile without a C++ toolchain: report, keep going
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
        print(f"{name:>22}: {_fmt(results[name])}", flush=True)

    print(f"{args.model}/{args.variant} batch {args.batch} @ {args.image_size}px, "
          f"{'bf16' if args.bf16 else 'fp32'}, {args.steps} timed steps", flush=True)
    if not args.skip_jax:
        impls = ["shift", "grouped"] if args.depthwise == "both" else [args.depthwise]
        for impl in impls:
            record(f"jax[{impl}]", lambda impl=impl: bench_jax(args, impl, x, 1))
    modes = [m for m in args.torch_modes.split(",") if m]
    if modes:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        for mode in modes:
            if mode not in ("eager", "compile"):
                raise SystemExit(f"--torch-modes: unknown mode {mode!r} (expected eager, compile)")
            record(f"torch[{mode}]", lambda mode=mode: bench_torch(args, x, 1, mode == "compile"))

    def best(prefix: str) -> tuple[str, float] | None:
        ok = [(k, v["images_per_s"]) for k, v in results.items() if k.startswith(prefix) and "images_per_s" in v]
        return max(ok, key=lambda kv: kv[1]) if ok else None

    bj, bt = best("jax"), best("torch")
    if bj and bt:
        ratio = bj[1] / bt[1]
        results["summary"] = {"best_jax": bj[0], "best_torch": bt[0], "ratio_jax_over_best_torch": round(ratio, 3)}
        print(f"ratio {bj[0]} / {bt[0]} = {ratio:.3f}  (target on GPU: >= 1.25)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


def _fmt(r: dict) -> str:
    if "error" in r:
        return f"unavailable ({r['error']})"
    extra = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("images_per_s", "step_ms"))
    return f"{r['images_per_s']:>9.1f} img/s  ({r['step_ms']:.1f} ms/step; {extra})"


if __name__ == "__main__":
    sys.exit(main())
