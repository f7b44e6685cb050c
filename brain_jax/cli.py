"""The ``brain-jax`` command line: argument parsing only; every verb's work is in ``brain_jax.app.commands``."""
from __future__ import annotations

import argparse
import os
import sys

from brain_jax import N_RESAMPLES, __version__

# verb -> (handler name in brain_jax.app.commands, one-line help)
VERBS = {
    "demo": ("demo", "synthetic phantoms -> train a ConvNeXt V2 and a SegFormer -> report (CPU, minutes)"),
    "train": ("train", "train (or resume) a model from a config file into a workdir"),
    "eval": ("evaluate", "evaluate a workdir's best (else latest) checkpoint on a dataset split"),
    "predict": ("predict", "classify or segment image files or folders with a trained workdir or an ONNX export"),
    "explain": ("explain", "saliency maps (Grad-CAM, integrated gradients, attention rollout) of a trained workdir "
                           "on image files"),
    "report": ("report", "write report.md and figures from a workdir's evaluation results (or a compare / suite / "
                         "study folder)"),
    "compare": ("compare", "compare models evaluated on the same examples: intervals, patient-aware paired tests"),
    "suite": ("suite", "run configs over K folds or N seeds and tabulate mean ± sd with per-fold rows"),
    "study": (None, "studies over several trainings (study leakage: random vs patient/group split)"),
    "reproduce": ("reproduce", "the paper's experiments from your downloads to paper_report.md (resumable; "
                               "--dry-run, --smoke)"),
    "convert": ("convert", "Hugging Face <-> brain-jax weights"),
    "export": ("export", "export a workdir or converted folder for serving (ONNX + companion .json; predict "
                         "--model runs it with ONNX Runtime, no JAX)"),
    "data": (None, "build, prepare and audit datasets (data build / data prepare / data audit)"),
}
CONFIG_VERBS = ("train", "eval", "suite", "study")  # verbs that take --config.FIELD=VALUE overrides


def _handler(name: str):
    def run(args: argparse.Namespace) -> int:
        # start-up: `brain-jax --help` must not pay for importing jax, orbax and TensorFlow
        from brain_jax.app import commands, compile_cache

        if not _onnx_route(args):  # ONNX Runtime's route imports no JAX and keeps no XLA cache
            compile_cache.configure(compile_cache.resolve(args.compile_cache, args.no_compile_cache))

        return int(getattr(commands, name)(args) or 0)

    return run


def _onnx_route(args: argparse.Namespace) -> bool:
    return args.verb == "predict" and (args.onnx_model is not None or args.onnx)


def _verb(sub, verb: str, **kwargs) -> argparse.ArgumentParser:
    handler, text = VERBS[verb]
    p = sub.add_parser(verb, help=text, description=text, **kwargs)
    if handler:
        p.set_defaults(func=_handler(handler))
        _cache_options(p)
    return p


def _cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile-cache", metavar="DIR", default=None,
                   help="persistent XLA compilation cache (default: $BRAIN_JAX_COMPILATION_CACHE, else "
                        "$XDG_CACHE_HOME/brain-jax/xla or ~/.cache/brain-jax/xla)")
    p.add_argument("--no-compile-cache", action="store_true", help="compile everything afresh, keep nothing")


def _config_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required,
                   help="experiment config: configs/FILE.py[:ARG], e.g. configs/convnextv2_cls.py:variant=tiny"
                        + ("" if required else " (default: the workdir's own config.json)"))
    p.add_argument("--workdir", required=True, help="run folder (created by train; read by eval)")


def _bootstrap_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resamples", type=int, default=N_RESAMPLES,
                   help=f"cluster-bootstrap resamples behind each 95%% interval (default: {N_RESAMPLES})")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap draws (default: 0)")


def _image_options(p: argparse.ArgumentParser, *, out: str, batch: str, workdir_required: bool = True) -> None:
    """The options predict and explain share: a workdir, image files, a volume's slice, an out folder."""
    p.add_argument("--workdir", required=workdir_required, help="a training workdir")
    p.add_argument("--out", default=None, help=f"folder for {out}")
    p.add_argument("--slice", type=int, default=None,
                   help="axial slice of a NIfTI volume (default: middle) or frame of a multi-frame DICOM")
    p.add_argument("--batch-size", type=int, default=8, help=f"{batch} (default: 8)")
    p.add_argument("images", nargs="+", help="PNG/JPG/TIFF, Figshare .mat, DICOM or NIfTI files, or folders of them")


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
    _config_options(ev, required=False)
    ev.add_argument("--split", default=None, help="dataset split (default: the config's data.eval_split)")
    ev.add_argument("--explain", type=int, default=0, metavar="N",
                    help="add N cases per class to the report as a saliency panel (every method the model "
                         "supports) with localisation numbers where masks are known")
    ev.add_argument("--explain-layer", type=int, default=None, metavar="K",
                    help="Grad-CAM at stage / block K instead of the model's default layer")
    ev.add_argument("--explain-baseline", default="zeros", choices=["zeros", "black", "blur"],
                    help="integrated-gradient baseline of the panel (as explain --baseline; default: zeros)")
    _bootstrap_options(ev)

    pr = _verb(sub, "predict")
    _image_options(pr, out="predictions.json, masks and overlays (default: WORKDIR/predictions, or predictions/ "
                           "beside --model)", batch="images per forward pass", workdir_required=False)
    pr.add_argument("--model", dest="onnx_model", metavar="FILE.onnx", default=None,
                    help="run this ONNX export (with FILE.onnx.json beside it) in ONNX Runtime instead of a "
                         "workdir: no JAX, no compilation (brain-jax export --format onnx writes it)")
    pr.add_argument("--onnx", action="store_true",
                    help="with --workdir: run the workdir's ONNX export (WORKDIR/onnx/model.onnx) in ONNX Runtime")

    ex = _verb(sub, "explain")
    _image_options(ex, out="overlays, raw maps, explain.json and explain.csv (default: WORKDIR/explain)",
                   batch="images per pass")
    ex.add_argument("--method", default="gradcam",
                    help="comma-separated: gradcam, ig (integrated gradients from --baseline), ig@zeros / "
                         "ig@black / ig@blur (from that baseline, to compare baselines in one run), rollout "
                         "(ViT), or all (default: gradcam)")
    ex.add_argument("--class", dest="class_name", default=None,
                    help="explain this class (default: the predicted class; segmentation: tumour)")
    ex.add_argument("--layer", type=int, default=None,
                    help="Grad-CAM at stage / block K (default: the model's documented layer)")
    ex.add_argument("--steps", type=int, default=50, help="integrated-gradient steps (default: 50)")
    ex.add_argument("--baseline", default="zeros", choices=["zeros", "black", "blur"],
                    help="integrated-gradient baseline: zeros of the normalised input (the mean image), an "
                         "image of intensity 0, or the image Gaussian-blurred (sigma = side/16) (default: zeros)")

    re_ = _verb(sub, "report")
    re_.add_argument("--workdir", required=True,
                     help="a workdir with metrics.json (run eval first), or the --out folder of compare / suite / "
                          "study")

    cm = _verb(sub, "compare")
    cm.add_argument("workdirs", nargs="+", help="two or more workdirs evaluated on the same split")
    cm.add_argument("--out", required=True, help="folder for compare.md, compare.json and figures")
    cm.add_argument("--split", default="test", help="the evaluated split to compare (default: test)")
    cm.add_argument("--names", default=None, help="comma-separated model names, one per workdir (default: "
                                                  "model name and variant from each config)")
    cm.add_argument("--claim-best", default=None, metavar="NAME",
                    help="test the claims that model NAME beats each other model (accuracy) and on precision, "
                         "recall and F1 of every class (intersection-union tests); name it before looking")
    cm.add_argument("--allow-slices", action="store_true",
                    help="compare predictions without patient / group ids, treating slices as independent")
    _bootstrap_options(cm)

    su = _verb(sub, "suite")
    su.add_argument("--config", required=True, help="experiment config: configs/FILE.py[:ARG]")
    su.add_argument("--models", nargs="+", default=[], metavar="CONFIG",
                    help="more configs (one per model) run over the same folds / seeds, e.g. "
                         "configs/paper/classifier.py:model=swin")
    runs = su.add_mutually_exclusive_group(required=True)
    runs.add_argument("--folds", type=int, default=0,
                      help="K folds (Figshare cvind folds, or grouped K-fold); the out-of-fold predictions are also "
                           "pooled (every patient tested once) and compared")
    runs.add_argument("--seeds", type=int, default=0,
                      help="N seeds on one split, with a two-level bootstrap (seeds, then patients; N >= 5)")
    su.add_argument("--out", required=True, help="suite folder (workdirs, tables); rerun to resume")
    su.add_argument("--index", type=int, default=None,
                    help="run only fold / seed I (0-based, e.g. $SLURM_ARRAY_TASK_ID); rerun without it to tabulate")
    su.add_argument("--claim-best", default=None, metavar="NAME",
                    help="with --folds: test that model NAME (its tag in the tables) beats each other model on the "
                         "pooled out-of-fold predictions (compare --claim-best)")
    _bootstrap_options(su)

    st = _verb(sub, "study")
    ssub = st.add_subparsers(dest="study", required=True, metavar="STUDY",
                             help="which study to run (leakage: what a slice-level split adds to the score)")
    lk = ssub.add_parser("leakage", help="train a config under a random slice-level split and a patient/group "
                                         "split of the same pool; report the accuracy difference and the copies")
    lk.add_argument("--config", required=True, help="classification config: configs/FILE.py[:ARG]")
    lk.add_argument("--out", required=True, help="study folder (the arms' workdirs, leakage.md, leakage.json)")
    lk.add_argument("--seeds", type=int, default=1,
                    help="train each arm N times (run seeds config.seed + i; at least 5 for a two-level interval that "
                         "holds training randomness; default: 1, workdirs runs/<arm>)")
    _bootstrap_options(lk)
    lk.set_defaults(func=_handler("study_leakage"))
    _cache_options(lk)

    rp = _verb(sub, "reproduce")
    rp.add_argument("--manual-dir", default=None,
                    help="folder with figshare/ and kaggle/ holding your downloads (docs/experiments.md)")
    rp.add_argument("--data-dir", required=True, help="TFDS data folder to build the datasets into")
    rp.add_argument("--out", required=True, help="folder for every run, comparison and paper_report.md")
    rp.add_argument("--weights", choices=("paper", "matched"), default="paper",
                    help="paper: the paper's checkpoints; matched adds the four classifiers from matched "
                         "pre-training (ImageNet-1k, 22-28M backbones) compared the same way")
    rp.add_argument("--dry-run", action="store_true", help="print the plan, the trainings and a time estimate")
    rp.add_argument("--smoke", action="store_true",
                    help="the whole graph on tiny phantoms with tiny models (minutes on a CPU; numbers mean nothing)")
    _bootstrap_options(rp)

    co = _verb(sub, "convert")
    co.add_argument("--hf", help="HF Hub id or save_pretrained folder to import")
    co.add_argument("--to-hf", action="store_true", help="export a brain-jax checkpoint to HF format")
    co.add_argument("--from", dest="src", help="converted folder or training workdir to export (with --to-hf)")
    co.add_argument("--out", required=True, help="output folder")
    co.add_argument("--dtype", default="float32",
                    help="compute dtype of the loaded model: float32 (default) or bfloat16; weights are stored as "
                         "float32")

    xp = _verb(sub, "export")
    xp.add_argument("--format", default="onnx", help="onnx (the only format; default)")
    xp.add_argument("--from", dest="src", required=True, help="a training workdir or a converted folder")
    xp.add_argument("--out", default=None,
                    help="the .onnx file to write, with FILE.onnx.json (preprocessing, classes, architecture) "
                         "beside it (default: SRC/onnx/model.onnx)")
    xp.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default: 17)")
    xp.add_argument("--image-size", type=int, default=None, metavar="N",
                    help="input size of a converted folder's export (default: its config's image_size, else 128); "
                         "a workdir exports at its trained size")

    da = _verb(sub, "data")
    dsub = da.add_subparsers(dest="data_verb", required=True, metavar="ACTION",
                             help="build: a TFDS dataset from your downloads; prepare: its cache at an image size; "
                                  "audit: duplicates and split composition")
    db = dsub.add_parser("build", help="build a TFDS dataset (figshare_brain_tumor, brain_tumor_mri, brain_phantoms, "
                                       "unlabelled_mri)")
    db.add_argument("name", help="dataset name: figshare_brain_tumor, brain_tumor_mri, brain_phantoms, or "
                                 "unlabelled_mri (any folder of MRI files, for FCMAE pretraining)")
    db.add_argument("--manual-dir", default=None,
                    help="folder with the files you downloaded (Figshare, Kaggle), or your unlabelled_mri folder")
    db.add_argument("--data-dir", required=True, help="TFDS data folder to build into")
    db.add_argument("--config", dest="builder_config", default=None,
                    help="builder config (brain_phantoms: tiny, small, large; default: the builder's own)")
    db.add_argument("--skip-bad", action="store_true", help="skip unreadable files and report the count")
    db.set_defaults(func=_handler("data_build"))
    _cache_options(db)
    dpr = dsub.add_parser("prepare", help="write the prepared cache (uint8 images at one size) of every split of a "
                                          "built dataset; training builds it on first use otherwise")
    dpr.add_argument("name", help="dataset name (figshare_brain_tumor, brain_tumor_mri, brain_phantoms, "
                                  "unlabelled_mri)")
    dpr.add_argument("--data-dir", required=True, help="TFDS data folder the dataset was built into")
    dpr.add_argument("--image-size", type=int, required=True, help="side of the square images (config data.image_size)")
    dpr.add_argument("--config", dest="builder_config", default=None, help="builder config (brain_phantoms)")
    dpr.add_argument("--upper-percentile", type=float, default=99.5,
                     help="intensity window: minimum -> 0, this percentile -> 255 (config data.upper_percentile)")
    dpr.add_argument("--cache-dir", default="", help="where caches live (config data.cache_dir; default: "
                                                     "DATA_DIR/brain_jax_cache)")
    dpr.set_defaults(func=_handler("data_prepare"))
    _cache_options(dpr)
    dau = dsub.add_parser("audit", help="report exact / near duplicates within and across sources and splits")
    dau.add_argument("names", nargs="*", help="dataset names, optionally NAME:SPLIT (default: the --config's pool)")
    dau.add_argument("--data-dir", required=True, help="TFDS data folder the datasets were built into")
    dau.add_argument("--out", required=True, help="folder for audit.json, the contact-sheet PNG and composition.*")
    dau.add_argument("--config", default=None,
                     help="experiment config whose splits to tabulate (class x source x split, duplicates "
                          "dropped, largest duplicate groups), e.g. configs/convnextv2_cls.py:dataset=merged")
    dau.set_defaults(func=_handler("data_audit"))
    _cache_options(dau)
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
