"""Handlers for ``brain-jax data build`` and ``brain-jax data audit``."""
from __future__ import annotations

import argparse


def build(args: argparse.Namespace) -> int:
    """Build one dataset as array_record files and print its splits."""
    from input_pipeline.builders import build_dataset

    b = build_dataset(args.name, args.data_dir, manual_dir=args.manual_dir,
                      builder_config=args.builder_config, skip_bad=args.skip_bad)
    splits = {name: info.num_examples for name, info in b.info.splits.items()}
    print(f"{b.info.full_name} in {b.data_dir}: " + ", ".join(f"{k}={v}" for k, v in sorted(splits.items())))
    shown = f"{args.name}/{args.builder_config}" if args.builder_config else args.name
    print(f"load with tfds.data_source({shown!r}, split=..., data_dir={args.data_dir!r})")
    return 0


def audit(args: argparse.Namespace) -> int:
    """Exact / near-duplicate report over NAME[:SPLIT] entries -> OUT/audit.json + duplicates.png."""
    from input_pipeline.audit import run_audit
    from input_pipeline.loader import default_data_config

    r = run_audit(args.names, args.data_dir, args.out, near_bits=int(default_data_config().near_dup_bits))
    print(f"{r['num_records']} records: {r['exact_duplicate_pairs']} exact and {r['near_duplicate_pairs']} "
          f"near-duplicate pairs in {r['duplicate_groups']} groups; {r['records_after_dedup']} after dedup")
    for k, n in r["pairs_by_kind"].items():
        print(f"  {k}: {n}")
    if r["patients_in_several_splits"]:
        print(f"  patients in several splits: {len(r['patients_in_several_splits'])}")
    print(f"wrote {args.out}/audit.json" + (f" and {args.out}/duplicates.png" if r["contact_sheet"] else ""))
    return 0
