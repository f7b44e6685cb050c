"""Every ``brain-jax`` verb's handler: ``argparse.Namespace`` in, exit code out.

User errors (bad config key, unknown model, missing dataset, foreign workdir, unreadable file) raise
ValueError / FileNotFoundError / KeyError, which ``brain_jax.cli`` prints as one line with exit code 2.

Each handler imports its verb's modules inside it (``# start-up``), so a verb loads only what it runs:
``report`` no JAX, ``eval`` no training loop, ``data`` no model code.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from brain_jax import workdir

PREEMPTED_EXIT = 143  # 128 + SIGTERM: schedulers requeue the job; the workdir resumes


def train(args: argparse.Namespace) -> int:
    from brain_jax.train.config import load_config  # start-up
    from brain_jax.train.trainer import train_and_evaluate  # start-up

    config = load_config(args.config, args.overrides)
    result = train_and_evaluate(config, args.workdir)
    if result["status"] == "preempted":
        return PREEMPTED_EXIT
    ev = result.get("eval") or {}
    shown = {k: ev[k] for k in ("accuracy", "macro_f1", "dice", "miou", "hd95_mm", "loss") if k in ev}
    print(f"trained {result['step']} steps; workdir {args.workdir}" + (f"; eval {shown}" if shown else ""))
    if config.data.task == "fcmae" and config.data.eval_split:
        # the pretraining run's end eval draws its reconstruction panel (the engine draws nothing)
        from brain_jax.app.evaluate import evaluate_workdir  # start-up

        out = evaluate_workdir(config, args.workdir, split=str(config.data.eval_split), composition=False)
        print(f"held-out masked-patch loss {out['summary']['loss']:.4f}; wrote " + ", ".join(map(str, out["figures"])))
    return 0


def _eval_config(args: argparse.Namespace):
    """--config with its overrides, else the workdir's own config.json (overrides applied, e.g. data_dir)."""
    from brain_jax.train.config import apply_overrides, load_config  # start-up

    if args.config:
        return load_config(args.config, args.overrides)
    if not workdir.has_run(args.workdir):
        raise FileNotFoundError(f"{args.workdir}: no {workdir.CONFIG} to evaluate with; pass --config "
                                "configs/FILE.py[:ARG] or a workdir written by `brain-jax train`")
    config = workdir.read_config(args.workdir)
    config.lock()
    apply_overrides(config, args.overrides)
    return config


def evaluate(args: argparse.Namespace) -> int:
    """Evaluate the best (else latest) checkpoint of a workdir on a split: metrics.json with intervals, the
    predictions CSV, figures, the split composition."""
    from brain_jax.app.evaluate import evaluate_workdir, print_table  # start-up

    config = _eval_config(args)
    out = evaluate_workdir(config, args.workdir, split=args.split, n_resamples=args.resamples,
                           seed=args.bootstrap_seed)
    print(print_table(out["summary"], config.data.task, out["class_names"]))
    for note in out["notes"]:
        print(note)
    for p in [*out["figures"], *out["composition"], out["predictions_csv"], out["metrics_json"]]:
        if p is not None:
            print(f"wrote {p}")
    if args.explain:
        # start-up: only eval --explain draws saliency maps
        from brain_jax.app import explain as explain_app, saliency_panel

        sal = saliency_panel.explain_split(config, args.workdir, split=out["split"], n_per_class=args.explain,
                                           layer=args.explain_layer, baseline=args.explain_baseline,
                                           spec=out["spec"], model=out["model"])
        print(explain_app.localisation_table(sal["section"]["localisation"]))
        print(f"wrote {sal['figure']} and the saliency section of {out['metrics_json']}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """Compare workdirs evaluated on the same split: compare.md, compare.json, figures."""
    from brain_jax.app import compare as compare_app  # start-up

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    res = compare_app.compare(args.workdirs, args.out, split=args.split, names=names, n_resamples=args.resamples,
                              seed=args.bootstrap_seed, claim_best=args.claim_best, allow_slices=args.allow_slices)
    print(Path(res["paths"][1]).read_text())
    print("wrote " + ", ".join(str(p) for p in res["paths"]))
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """The paper's experiments, resumable, into --out (paper_report.md last)."""
    from brain_jax.app import reproduce as reproduce_app  # start-up

    settings = reproduce_app.Settings(Path(args.manual_dir).expanduser() if args.manual_dir else None,
                                      Path(args.data_dir).expanduser(), Path(args.out), weights=args.weights,
                                      smoke=args.smoke, n_resamples=args.resamples, seed=args.bootstrap_seed)
    res = reproduce_app.reproduce(settings, dry_run=args.dry_run)
    if res["status"] == "done":
        print(Path(res["report"]).read_text())
        print(f"wrote {res['report']}")
    return 0 if res["status"] in ("done", "planned") else PREEMPTED_EXIT


def suite(args: argparse.Namespace) -> int:
    """K folds or N seeds of one or more configs; tables when every run is finished."""
    from brain_jax.app import suite as suite_app  # start-up

    res = suite_app.run_suite([args.config, *args.models], args.out, folds=args.folds, seeds=args.seeds,
                              overrides=args.overrides, index=args.index, n_resamples=args.resamples,
                              seed=args.bootstrap_seed, claim_best=args.claim_best)
    for run, status in res["runs"].items():
        print(f"{run}: {'already finished, kept' if status == 'kept' else status}")
    if res["status"] == "preempted":
        return PREEMPTED_EXIT
    if res["status"] == "partial":
        print(f"fold / seed {args.index} done; run the same command without --index to tabulate")
        return 0
    print(Path(args.out, workdir.SUITE_MD).read_text())
    print("wrote " + ", ".join(str(p) for p in res["paths"]))
    return 0


def study_leakage(args: argparse.Namespace) -> int:
    """Random slice-level vs patient/group split of the same pool: the accuracy difference and the copies."""
    from brain_jax.app import study as study_app  # start-up

    res = study_app.run_leakage(args.config, args.out, overrides=args.overrides, seeds=args.seeds,
                                n_resamples=args.resamples, seed=args.bootstrap_seed)
    if res["status"] == "preempted":
        return PREEMPTED_EXIT
    print(Path(args.out, workdir.LEAKAGE_MD).read_text())
    print("wrote " + ", ".join(str(p) for p in res["paths"]))
    return 0


def predict(args: argparse.Namespace) -> int:
    """``brain-jax predict --workdir DIR [--onnx] | --model FILE.onnx [--out DIR] [--slice K] [--batch-size N]
    IMAGE_OR_FOLDER...``."""
    onnx_model = getattr(args, "onnx_model", None)
    if (args.workdir is None) == (onnx_model is None):
        raise ValueError("give --workdir DIR (a training workdir) or --model FILE.onnx (an ONNX export), not both")
    if getattr(args, "onnx", False) and onnx_model is not None:
        raise ValueError("--onnx picks the ONNX export of --workdir; with --model FILE.onnx leave it out")
    if onnx_model is not None or getattr(args, "onnx", False):
        return _predict_onnx(args, onnx_model or str(Path(args.workdir) / workdir.ONNX_EXPORT))
    from brain_jax.app import inputs, predict as predict_app  # start-up: predict loads no trainer

    job = inputs.read_job(args.images, args.workdir, out=args.out, default_out=workdir.PREDICT_DIR,
                          slice_index=args.slice)
    task = job.spec.task
    results = predict_app.predict_arrays(job.model, job.spec, job.slices, batch_size=int(args.batch_size or 8))
    meta = {"workdir": job.workdir, "model": job.spec.model_name}
    path = predict_app.write_outputs(results, job.slices, job.out_dir, task, meta)
    print(predict_app.format_table(results, task))
    print(f"wrote {path}" + (f" and {len(results)} mask/overlay pairs in {job.out_dir}" if task == "segmentation"
                             else ""))
    return 0


def _predict_onnx(args: argparse.Namespace, model_path: str) -> int:
    """predict through ONNX Runtime: no JAX imported, no compilation cache touched."""
    # start-up: the ONNX route imports no JAX
    from brain_jax.app import onnx_predict, predict as predict_app

    if args.onnx and not Path(model_path).is_file():
        raise FileNotFoundError(f"--workdir {args.workdir} --onnx: no {model_path}; run brain-jax export --format "
                                f"onnx --from {args.workdir} first")
    job = onnx_predict.read_job(args.images, model_path, out=args.out, slice_index=args.slice)
    c = job.model.companion
    results = onnx_predict.predict(job, batch_size=int(args.batch_size or 8))
    meta = {"model_file": str(model_path), "model": c.label, "runtime": "onnxruntime"}
    path = predict_app.write_outputs(results, job.slices, job.out_dir, c.task, meta)
    print(predict_app.format_table(results, c.task))
    print(f"wrote {path}" + (f" and {len(results)} mask/overlay pairs in {job.out_dir}" if c.task == "segmentation"
                             else ""))
    return 0


def explain(args: argparse.Namespace) -> int:
    """``brain-jax explain --workdir W [--method M[,M]] [--class NAME] [--layer K] [--out DIR] IMAGE...``."""
    from brain_jax.app import explain as explain_app, inputs  # start-up: explain loads no trainer

    job = inputs.read_job(args.images, args.workdir, out=args.out, default_out=workdir.EXPLAIN_DIR,
                          slice_index=args.slice)
    target = None
    if args.class_name is not None:
        target = explain_app.class_index(args.class_name, job.spec.class_names, f"workdir {args.workdir}")
    settings = explain_app.Settings.checked(job.model, args.method, layer=args.layer, ig_steps=args.steps,
                                            baseline=args.baseline, batch_size=args.batch_size)
    path, res = explain_app.explain_files(job, settings, target)
    for rec in workdir.read_json(path, "explain's results")["images"]:
        pred = rec.get("predicted_class", "tumour" if rec.get("tumour_predicted") else "no tumour")
        print(f"{Path(rec['file']).name}: predicted {pred}; maps for {rec['target_class']}")
    table = explain_app.localisation_table(res["localisation"])
    if table:
        print(table)
    print(f"wrote {path}, {workdir.EXPLAIN_CSV} and {len(job.slices) * len(settings.methods)} overlay/raw-map "
          f"pairs in {job.out_dir}")
    return 0


def report(args: argparse.Namespace) -> int:
    from brain_jax.app import report as report_app  # start-up

    print(f"wrote {report_app.write_report(args.workdir)}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from brain_jax.app import demo as demo_app  # start-up

    result = demo_app.run_demo(args.workdir)
    cls = workdir.headline(result["metrics"], "classification")[1]
    seg = workdir.headline(result["metrics"], "segmentation")[1]
    print(
        f"demo done in {result['seconds']:.0f} s: accuracy {cls['accuracy']:.3f}, macro F1 {cls['macro_f1']:.3f}, "
        f"Dice {seg['dice']:.3f}, HD95 {seg['hd95_mm']:.2f} mm; report: {result['report']}"
    )
    return 0


# ------------------------------------------------------------------------------------------ convert


def _check_convert_args(args: argparse.Namespace) -> None:
    if args.hf and args.to_hf:
        raise ValueError("--hf (import from HF) and --to-hf (export to HF) are exclusive; pick one")
    if args.to_hf and not args.src:
        raise ValueError("--to-hf needs --from DIR (a converted folder or a training workdir)")
    if args.src and not args.to_hf:
        raise ValueError("--from is only used with --to-hf; to import from HF use --hf SRC")
    if not args.hf and not args.to_hf:
        raise ValueError("nothing to do: use --hf SRC --out DIR, or --to-hf --from DIR --out HF_DIR")


def convert(args: argparse.Namespace) -> int:
    """HF folder / Hub id -> brain-jax converted folder, or a converted folder / workdir -> HF folder."""
    _check_convert_args(args)
    from brain_jax.convert import from_hf, to_hf  # start-up
    from brain_jax.convert.native import is_native_dir, load_native, save_native  # start-up
    from brain_jax.convert.fcmae import encoder_to_hf  # start-up
    from brain_jax.train.model_factory import dtype_of, is_pretraining_workdir, load_model_from_workdir  # start-up

    dtype = dtype_of(args.dtype, "--dtype")
    out = Path(args.out)
    if args.hf:
        model = from_hf(args.hf, dtype=dtype)
        save_native(model, out)
        print(f"converted {args.hf} ({model.config.model_type}) -> {out}")
        return 0
    src = Path(args.src)
    if not src.exists():
        raise FileNotFoundError(f"--from {src}: no such folder")
    if not (is_native_dir(src) or workdir.has_run(src)):
        raise FileNotFoundError(f"--from {src}: neither a converted folder (no brain_jax_model.json) nor a "
                                f"training workdir (no {workdir.CONFIG})")
    if is_native_dir(src):
        model = load_native(src, dtype=dtype)
    else:
        model = load_model_from_workdir(src, dtype, which="latest" if is_pretraining_workdir(src) else "best")
    if model.config.model_type == "fcmae":
        encoder_to_hf(model, out)
        print(f"exported the FCMAE encoder of {args.src} -> {out} as transformers' ConvNextV2Model (config.json, "
              "model.safetensors); its final layernorm, which FCMAE never trains, is written as the identity "
              "(weight 1, bias 0)")
        return 0
    to_hf(model, out)
    print(f"exported {args.src} ({model.config.model_type}) -> {out} (config.json, model.safetensors)")
    return 0


def export(args: argparse.Namespace) -> int:
    """``brain-jax export --format onnx --from SRC [--out FILE.onnx] [--opset N]``."""
    from brain_jax.app import export as export_app  # start-up

    export_app.check_options(args.format, args.opset)
    res = export_app.export_onnx(args.src, args.out, opset=args.opset, fmt=args.format, image_size=args.image_size)
    verdict = "within" if res["ok"] else "OVER"
    print(f"exported {args.src} ({res['label']}) -> {res['model']} and {res['companion']}; ONNX Runtime vs JAX "
          f"max |logit diff| {res['max_abs_logit_diff']:.2e} ({verdict} {export_app.PARITY_TOL:g})")
    return 0


# --------------------------------------------------------------------------------------------- data


def data_build(args: argparse.Namespace) -> int:
    """Build one dataset as array_record files and print its splits."""
    from input_pipeline.builders import build_dataset  # start-up

    b = build_dataset(args.name, args.data_dir, manual_dir=args.manual_dir,
                      builder_config=args.builder_config, skip_bad=args.skip_bad)
    splits = {name: info.num_examples for name, info in b.info.splits.items()}
    print(f"{b.info.full_name} in {b.data_dir}: " + ", ".join(f"{k}={v}" for k, v in sorted(splits.items())))
    shown = f"{args.name}/{b.builder_config.name}" if b.builder_config else args.name
    print(f"load with tfds.data_source({shown!r}, split=..., data_dir={args.data_dir!r})")
    return 0


def data_prepare(args: argparse.Namespace) -> int:
    """The prepared cache of every split of one built dataset (rebuilt where stale or damaged)."""
    import input_pipeline  # start-up
    from input_pipeline import cache  # start-up
    from input_pipeline.sources import sources, split_names  # start-up

    data = input_pipeline.default_data_config()
    data.name = args.name
    data.builder_config = args.builder_config or ""
    data.data_dir, data.cache_dir = args.data_dir, args.cache_dir
    data.image_size, data.upper_percentile = int(args.image_size), float(args.upper_percentile)
    if data.image_size < 8:
        raise ValueError(f"--image-size {args.image_size}: expected at least 8 pixels")
    (name, config), = sources(data)
    for split in split_names(name, config, str(data.data_dir)):
        part = cache.open_part(data, name, config, split)
        mib = cache.disk_bytes(part.folder) / 2**20
        print(f"{args.name}:{split}: {part.n} images at {part.size}px, {mib:.1f} MiB in {part.folder}")
    return 0


def data_audit(args: argparse.Namespace) -> int:
    """Duplicates over NAME[:SPLIT] entries (audit.json, duplicates.png) and the split composition of a
    config's pool, or of the named datasets' common splits (composition.json / .csv / .md)."""
    from brain_jax.train.config import load_config  # start-up
    from input_pipeline import composition_markdown, split_composition, write_composition  # start-up
    from input_pipeline.audit import parse_entry, run_audit  # start-up
    from input_pipeline.loader import default_data_config  # start-up
    from input_pipeline.sources import dataset_name  # start-up

    data = load_config(args.config).data if args.config else default_data_config()
    data.data_dir = args.data_dir
    names = args.names or [n.strip() for n in str(data.name).split("+")]
    if not args.config:
        data.name = "+".join(dataset_name(*parse_entry(n)[:2]) for n in names)
    r = run_audit(names, args.data_dir, args.out, near_bits=int(data.near_dup_bits))
    print(f"{r['num_records']} records: {r['exact_duplicate_pairs']} exact and {r['near_duplicate_pairs']} "
          f"near-duplicate pairs in {r['duplicate_groups']} groups; {r['records_after_dedup']} after dedup")
    for k, n in r["pairs_by_kind"].items():
        print(f"  {k}: {n}")
    if r["patients_in_several_splits"]:
        print(f"  patients in several splits: {len(r['patients_in_several_splits'])}")
    print(f"wrote {args.out}/audit.json" + (f" and {args.out}/duplicates.png" if r["contact_sheet"] else ""))
    splits = None if args.config else _common_splits(data)
    if splits == []:
        print("no split common to every dataset: pass --config to tabulate an experiment's splits")
        return 0
    comp = split_composition(data, splits)
    print(composition_markdown(comp))
    print("wrote " + ", ".join(str(p) for p in write_composition(comp, args.out).values()))
    return 0


def _common_splits(data) -> list[str]:
    """The builder splits every source of ``data.name`` has (for a composition without a config)."""
    from input_pipeline.sources import sources, split_names  # start-up

    common = None
    for name, config in sources(data):
        have = split_names(name, config, str(data.data_dir))
        common = have if common is None else [s for s in common if s in have]
    return common or []
