"""FCMAE pretraining throughput beside the supervised training step of the same ConvNeXt V2, in one run.

    python benchmarks/bench_fcmae.py --variant atto --batch 32 --image-size 224 --steps 10   # CPU row
    python benchmarks/bench_fcmae.py --variant tiny --batch 128 --image-size 224 --bf16      # accelerator
    python benchmarks/bench_fcmae.py --tiny --json /tmp/fcmae.json                           # smoke, no timing

Both steps are jitted, donate their state and run on the same device-resident random batch with AdamW
(β = (0.9, 0.95), weight decay on kernels only, as configs/fcmae_pretrain.py):

- ``supervised``: the classifier (``models.create("convnextv2", variant, 4)``), softmax cross-entropy;
- ``fcmae``: the masked autoencoder (``brain_jax.models.fcmae``): masks drawn inside the step from
  (seed, step, example index) as the engine does, the masked dense encoder, the decoder, the masked-patch
  loss with ``norm_pix_loss``.

The masked *dense* encoder costs the dense encoder's FLOPs whatever the ratio (hidden positions are computed
and zeroed), so FCMAE's step costs the supervised one plus the decoder. The decoder's share is stated from
XLA's own FLOP count of the compiled steps (``cost_analysis``): 1 - FLOPs(encoder-only masked step) /
FLOPs(FCMAE step), where the encoder-only step takes a loss on the last stage's features. Prints one
markdown row per step (images/s, ms/step, GFLOPs/image) and the share; ``--json FILE`` writes them.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed(step, sync, warmup: int, steps: int) -> tuple[float, float]:
    """(first call's seconds: compilation, seconds per step after ``warmup`` more untimed steps)."""
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return first, (time.perf_counter() - t0) / max(steps, 1)


def _flops(jitted, *args) -> float:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", float("nan")))


def build(args: argparse.Namespace, which: str):
    """(jitted step, its arguments, sync) for ``which`` in supervised / fcmae / encoder."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from brain_jax import models
    from brain_jax.models import convnext, fcmae

    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    rngs = nnx.Rngs(params=0, dropout=1)
    if which == "supervised":
        model = models.create("convnextv2", args.variant, 4, dtype=dtype, rngs=rngs, drop_path_rate=0.0)
    else:
        model = fcmae.create(args.variant, image_size=args.image_size, dtype=dtype, rngs=rngs)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    decay = jax.tree.map(lambda p: p.ndim > 1, params)
    tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05, mask=decay)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.image_size, args.image_size, 3)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 4, args.batch).astype(np.int32))
    index = jnp.arange(args.batch)

    def loss_fn(p, step):
        m = nnx.merge(graphdef, p, rest, copy=True)
        if which == "supervised":
            logits = m(x).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        mask = fcmae.random_mask(fcmae.mask_keys(0, step, index), args.image_size, 0.6)
        if which == "encoder":
            feats = convnext.encode(m.embeddings, m.encoder, x, mask)[-1]
            return jnp.mean(jnp.square(feats.astype(jnp.float32)))
        return m.loss(x, m(x, mask), mask)

    def train_step(p, o, step):
        loss, grads = jax.value_and_grad(loss_fn)(p, step)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, step + 1, loss

    jitted = jax.jit(train_step, donate_argnums=(0, 1))
    state = {"a": (params, tx.init(params), jnp.zeros((), jnp.int32))}
    flops = _flops(jitted, *state["a"])

    def step():
        p, o, s, state["loss"] = jitted(*state["a"])
        state["a"] = (p, o, s)

    return step, lambda: jax.block_until_ready(state["loss"]), flops


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="atto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="smoke size (variant test, 64 px, batch 2, 1 step)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.tiny:
        args.variant, args.batch, args.image_size, args.steps, args.warmup = "test", 2, 64, 1, 0
    import jax

    rows = {}
    for which in ("supervised", "fcmae", "encoder"):
        step, sync, flops = build(args, which)
        first, sec = _timed(step, sync, args.warmup, args.steps) if which != "encoder" else (float("nan"),) * 2
        rows[which] = {"images_per_s": args.batch / sec if sec == sec else None, "ms_per_step": sec * 1e3,
                       "first_step_s": first, "gflops_per_image": flops / args.batch / 1e9}
    share = 1.0 - rows["encoder"]["gflops_per_image"] / rows["fcmae"]["gflops_per_image"]
    device = f"{jax.default_backend()} ({jax.devices()[0].device_kind}, {platform.machine()})"
    print("| step | model | batch | image | images/s | ms/step | GFLOPs/image | device |")
    print("|---|---|---|---|---|---|---|---|")
    for which in ("supervised", "fcmae"):
        r = rows[which]
        print(f"| {which} | convnextv2-{args.variant} | {args.batch} | {args.image_size} | {r['images_per_s']:.1f} | "
              f"{r['ms_per_step']:.1f} | {r['gflops_per_image']:.3f} | {device} |")
    print(f"decoder's share of the FCMAE step's FLOPs: {share:.1%} (ratio 0.6; the masked dense encoder costs "
          "the dense FLOPs)")
    out = {"variant": args.variant, "batch": args.batch, "image_size": args.image_size, "bf16": args.bf16,
           "device": device, "rows": rows, "decoder_flop_share": share, "tiny": args.tiny}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
