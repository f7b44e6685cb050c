"""The ``brain-jax`` command line: argument parsing only; every verb's work is in ``brain_jax.app.commands``."""
from __future__ import annotations

import argparse
import os
import sys

from brain_jax import __version__

# verb -> (handler name in brain_jax.app.commands, one-line help)
VERBS = {
    "demo": ("demo", "synthetic phantoms -> train a ConvNeXt V2 and a SegFormer -> report (CPU, minutes)"),
    "train": ("train", "train (or resume) a model from a config file into a workdir"),
    "eval": ("evaluate", "evaluate a workdir's best (else latest) checkpoint on a dataset split"),
    "predict": ("predict", "classify or segment image files or folders with a trained workdir"),
    "report": ("report", "write report.md and figures from a workdir's evaluation results"),
    "convert": ("convert", "Hugging Face <-> brain-jax weights"),
    "data": (None, "build and audit datasets (data build / data audit)"),
}
CONFIG_VERBS = ("train", "eval")  # verbs that take --config.FIELD=VALUE overrides


def _handler(name: str):
    def run(args: argparse.Namespace) -> int:
        # start-up: `brain-jax --help` must not pay for importing jax, orbax and TensorFlow
        from brain_jax.app import commands

        return int(getattr(commands, name)(args) or 0)

    return run


def _verb(sub, verb: str, **kwargs) -> argparse.ArgumentParser:
    handler, text = VERBS[verb]
    p = sub.add_parser(verb, help=text, description=text, **kwargs)
    if handler:
        p.set_defaults(func=_handler(handler))
    return p


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True,
                   help="experiment config: configs/FILE.py[:ARG], e.g. configs/convnextv2_cls.py:variant=tiny")
    p.add_argument("--workdir", required=True, help="run folder (created by train; read by eval)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brain-jax", description="JAX/Flax brain-tumour MRI classification and segmentation.",
        epilog="Config-driven verbs (train, eval) also take --config.FIELD=VALUE overrides. "
               "BRAIN_JAX_DEBUG=1 shows stack traces of errors.")
    p.add_argument("--version", action="version", version=f"brain-jax {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    de = _verb(sub, "demo")
    de.add_argument("--workdir", default="workdirs/demo", help="output folder (default: workdirs/demo)")

    tr = _verb(sub, "train")
    _config_options(tr)

    ev = _verb(sub, "eval")
    _config_options(ev)
    ev.add_argument("--split", default=None, help="dataset split (default: the config's data.eval_split)")

    pr = _verb(sub, "predict")
    pr.add_argument("--workdir", required=True, help="a training workdir")
    pr.add_argument("--out", default=None, help="folder for predictions.json, masks and overlays "
                                                "(default: WORKDIR/predictions)")
    pr.add_argument("--slice", type=int, default=None,
                    help="axial slice of a NIfTI volume (default: middle) or frame of a multi-frame DICOM")
    pr.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    pr.add_argument("images", nargs="+", help="PNG/JPG/TIFF, Figshare .mat, DICOM or NIfTI files, or folders of them")

    re_ = _verb(sub, "report")
    re_.add_argument("--workdir", required=True, help="a workdir with metrics.json (run eval first)")

    co = _verb(sub, "convert")
    co.add_argument("--hf", help="HF Hub id or save_pretrained folder to import")
    co.add_argument("--to-hf", action="store_true", help="export a brain-jax checkpoint to HF format")
    co.add_argument("--from", dest="src", help="converted folder or training workdir to export (with --to-hf)")
    co.add_argument("--out", required=True, help="output folder")
    co.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="compute dtype of the loaded model (weights are stored as float32)")

    da = _verb(sub, "data")
    dsub = da.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    db = dsub.add_parser("build", help="build a TFDS dataset (figshare_brain_tumor, brain_tumor_mri, brain_phantoms)")
    db.add_argument("name", help="dataset name")
    db.add_argument("--manual-dir", default=None, help="folder with the files you downloaded (Figshare, Kaggle)")
    db.add_argument("--data-dir", required=True, help="TFDS data folder to build into")
    db.add_argument("--config", dest="builder_config", default=None,
                    help="builder config (brain_phantoms: tiny, small, large; default: the builder's own)")
    db.add_argument("--skip-bad", action="store_true", help="skip unreadable files and report the count")
    db.set_defaults(func=_handler("data_build"))
    dau = dsub.add_parser("audit", help="report exact / near duplicates within and across sources and splits")
    dau.add_argument("names", nargs="*", help="dataset names, optionally NAME:SPLIT (default: the --config's pool)")
    dau.add_argument("--data-dir", required=True, help="TFDS data folder the datasets were built into")
    dau.add_argument("--out", required=True, help="folder for audit.json, the contact-sheet PNG and composition.*")
    dau.add_argument("--config", default=None,
                     help="experiment config whose splits to tabulate (class x source x split, duplicates "
                          "dropped, largest duplicate groups), e.g. configs/convnextv2_cls.py:dataset=merged")
    dau.set_defaults(func=_handler("data_audit"))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (args.verb not in CONFIG_VERBS or any(not e.startswith("--config.") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Expected user errors: one clear line, no stack trace.
        if os.environ.get("BRAIN_JAX_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"brain-jax {args.verb}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
