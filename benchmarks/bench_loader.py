"""Loader throughput (images/s) on this machine: decode + normalise + resize + augment + batch.

    python benchmarks/bench_loader.py                       # brain_phantoms/small, 128 px, in-process
    python benchmarks/bench_loader.py --image-size 224 --workers 0 2
    python benchmarks/bench_loader.py --name figshare_brain_tumor --data-dir ~/tensorflow_datasets \
        --split fold1+fold2+fold3+fold4

Builds brain_phantoms into --data-dir first if it is missing. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="brain_phantoms")
    p.add_argument("--config", default="small", help="builder config (phantoms only)")
    p.add_argument("--data-dir", default=None, help="default: a temporary folder (phantoms are built)")
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workers", type=int, nargs="+", default=[0])
    p.add_argument("--no-augment", action="store_true")
    args = p.parse_args()

    import input_pipeline as ip

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench_loader_")
    if args.name == "brain_phantoms":
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
        t = time.perf_counter()
        ip.build_dataset("brain_phantoms", data_dir, builder_config=args.config)
        print(f"build/check brain_phantoms/{args.config}: {time.perf_counter() - t:.1f} s")
    cfg = ip.default_data_config()
    cfg.name, cfg.builder_config, cfg.data_dir, cfg.image_size = args.name, args.config, data_dir, args.image_size
    cfg.augment.enabled = not args.no_augment
    print(f"{args.name}:{args.split}: {ip.num_examples(cfg, args.split)} examples, {args.image_size} px, "
          f"batch {args.batch}, augment={cfg.augment.enabled}")
    for workers in args.workers:
        cfg.num_workers = workers
        loader = ip.make_loader(cfg, args.split, global_batch_size=args.batch, train=True, seed=0,
                                process_index=0, process_count=1)
        it = iter(loader)
        next(it)  # start-up (worker spawn, file open) is not throughput
        t = time.perf_counter()
        for _ in range(args.steps):
            next(it)
        dt = time.perf_counter() - t
        print(f"workers={workers}: {args.steps * args.batch / dt:8.1f} images/s ({dt / args.steps * 1e3:.1f} ms/batch)")


if __name__ == "__main__":
    main()
