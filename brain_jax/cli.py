"""The ``brain-jax`` command: a thin entry that parses arguments and calls library functions.

Verbs and the modules that implement them (each handler takes the parsed ``argparse.Namespace`` and
returns an exit code):

- ``train`` / ``eval`` / ``predict`` / ``demo`` / ``report`` -> ``brain_jax.train.commands``
- ``convert``                                            -> ``brain_jax.convert.commands``
- ``data build`` / ``data audit``                        -> ``input_pipeline.commands``
"""
from __future__ import annotations

import argparse
import importlib
import sys


def _handler(module: str, func: str):
    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="brain-jax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)

    tr = sub.add_parser("train", help="train from a config file")
    tr.add_argument("--config", required=True, help="configs/FILE.py[:ARG]")
    tr.add_argument("--workdir", required=True)
    tr.set_defaults(func=_handler("brain_jax.train.commands", "train"))

    ev = sub.add_parser("eval", help="evaluate the best/latest checkpoint of a workdir")
    ev.add_argument("--config", required=True)
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--split", default=None, help="dataset split (default: the config's eval split)")
    ev.set_defaults(func=_handler("brain_jax.train.commands", "evaluate"))

    pr = sub.add_parser("predict", help="classify or segment image files with a trained workdir")
    pr.add_argument("--workdir", required=True)
    pr.add_argument("--out", default=None, help="folder for masks/overlays (default WORKDIR/predictions)")
    pr.add_argument("--slice", type=int, default=None,
                    help="axial slice of a NIfTI volume (default: middle) or frame of a multi-frame DICOM")
    pr.add_argument("images", nargs="+", help="PNG/JPG/.mat/DICOM/NIfTI slices")
    pr.set_defaults(func=_handler("brain_jax.train.commands", "predict"))

    de = sub.add_parser("demo", help="synthetic phantoms -> train ConvNeXt V2 + SegFormer -> report")
    de.add_argument("--workdir", default="workdirs/demo")
    de.set_defaults(func=_handler("brain_jax.train.commands", "demo"))

    re_ = sub.add_parser("report", help="write report.md and figures from a workdir's metrics")
    re_.add_argument("--workdir", required=True)
    re_.set_defaults(func=_handler("brain_jax.train.commands", "report"))

    co = sub.add_parser("convert", help="Hugging Face <-> brain-jax weights")
    co.add_argument("--hf", help="HF Hub id or save_pretrained folder to import")
    co.add_argument("--to-hf", action="store_true", help="export a brain-jax checkpoint to HF format")
    co.add_argument("--from", dest="src", help="brain-jax checkpoint folder to export (with --to-hf)")
    co.add_argument("--out", required=True, help="output folder")
    co.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    co.set_defaults(func=_handler("brain_jax.convert.commands", "convert"))

    da = sub.add_parser("data", help="build and audit datasets")
    dsub = da.add_subparsers(dest="data_verb", required=True)
    db = dsub.add_parser("build", help="build a TFDS dataset (figshare_brain_tumor, brain_tumor_mri, brain_phantoms)")
    db.add_argument("name")
    db.add_argument("--manual-dir", default=None)
    db.add_argument("--data-dir", required=True)
    db.add_argument("--config", dest="builder_config", default=None, help="builder config name")
    db.add_argument("--skip-bad", action="store_true", help="skip unreadable files and report the count")
    db.set_defaults(func=_handler("input_pipeline.commands", "build"))
    dau = dsub.add_parser("audit", help="report exact / near duplicates within and across sources and splits")
    dau.add_argument("names", nargs="+", help="dataset names, optionally NAME:SPLIT")
    dau.add_argument("--data-dir", required=True)
    dau.add_argument("--out", required=True, help="folder for audit.json and the contact-sheet PNG")
    dau.set_defaults(func=_handler("input_pipeline.commands", "audit"))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # ``--config.key=value`` overrides are for config-driven verbs only.
    if extra and (args.verb not in ("train", "eval") or any(not e.startswith("--config.") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Expected user errors: one clear line, no stack trace (set BRAIN_JAX_DEBUG=1 for it).
        import os

        if os.environ.get("BRAIN_JAX_DEBUG"):
            raise
        print(f"brain-jax {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
