"""``brain-jax demo``: synthetic phantoms -> ConvNeXt V2 classifier + SegFormer -> metrics and report."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import jax

import input_pipeline
from brain_jax import workdir
from brain_jax.app import report, saliency_panel
from brain_jax.app.evaluate import evaluate_workdir
from brain_jax.train.config import load_config
from brain_jax.train.spec import RunSpec
from brain_jax.train.trainer import train_and_evaluate

PHANTOMS = "brain_phantoms"
PHANTOM_CONFIG = "small"
TARGETS = {"classification.accuracy": 0.95, "segmentation.dice": 0.85}


def _ensure_data(data_dir: Path) -> None:
    if (data_dir / PHANTOMS / PHANTOM_CONFIG).is_dir():
        return
    print(f"building {PHANTOMS}/{PHANTOM_CONFIG} into {data_dir} ...", flush=True)
    input_pipeline.build_dataset(PHANTOMS, data_dir, builder_config=PHANTOM_CONFIG)


def _merge_logs(wd: Path, runs: dict[str, Path]) -> None:
    """One metrics.jsonl for the report's curves, keys prefixed by task."""
    rows = []
    for task, run_dir in runs.items():
        if not (run_dir / workdir.METRICS_LOG).is_file():
            continue
        for row in workdir.read_log(run_dir):
            prefix = f"{task}_{row.pop('split', 'train')}"
            rows.append({"step": row.pop("step"),
                         **{f"{prefix}/{k}": v for k, v in row.items()
                            if k not in ("images_per_s", "grad_norm", "data_wait_frac")}})
    (wd / workdir.METRICS_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _saliency(config, run_dir: Path, wd: Path) -> float:
    """The report's saliency panel (2 held-out cases per class) and localisation numbers (scored on 12 per
    class): Grad-CAM at stage 1, whose 8x8 map is the last one of at least 8x8 at 64 px (the last stage's is
    2x2), and integrated gradients with 16 Gauss-Legendre points from two baselines: the mean-grey image
    (zeros of the normalised input) and a blurred copy of each image (sigma 4 px). From the mean-grey one
    this classifier's maps peak on the darkest pixels, the ones farthest from that baseline (background,
    ventricles; docs/saliency.md). Returns the seconds it took."""
    t = time.perf_counter()
    saliency_panel.explain_split(config, run_dir, split=config.data.test_split, n_per_class=2,
                                 scored_per_class=12, methods=("gradcam", "ig", "ig@blur"), layer=1, ig_steps=16,
                                 out=wd)
    return round(time.perf_counter() - t, 1)


def _phase(record: dict[str, dict[str, float]], name: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, its wall and CPU seconds (all threads of this process) recorded under ``name``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    record["seconds"][name] = round(time.perf_counter() - t, 1)
    record["cpu_seconds"][name] = round(time.process_time() - c, 1)
    return out


def _train_task(task: str, wd: str, jax_settings: dict[str, Any]) -> dict[str, Any]:
    """One model of the demo, in a process of its own: train, evaluate on the held-out patients and, for
    the classifier, write its metrics.json section and the saliency panel. Returns the evaluation and
    the wall and CPU seconds of each phase."""
    for key, value in jax_settings.items():  # the parent's compilation cache and matmul precision
        jax.config.update(key, value)
    wd_path = Path(wd)
    config = load_config(f"demo.py:task={task}", [f"--config.data.data_dir={wd_path / 'data'}",
                                                   "--config.progress_bar=False"])
    run_dir = wd_path / task
    rec: dict[str, dict[str, float]] = {"seconds": {}, "cpu_seconds": {}}
    result = _phase(rec, "train", lambda: train_and_evaluate(config, run_dir))
    print(f"demo: {task}: trained {RunSpec.from_config(config).label} for {result['step']} steps in "
          f"{rec['seconds']['train']:.0f} s, compilation included ({rec['cpu_seconds']['train']:.0f} s of CPU)",
          flush=True)
    out = _phase(rec, "eval", lambda: evaluate_workdir(config, run_dir, split=config.data.test_split))
    print(f"demo: {task}: evaluated on {out['split']} in {rec['seconds']['eval']:.0f} s", flush=True)
    if task == "classification":  # only this process writes the demo's metrics.json while both run
        workdir.update_metrics(wd_path, task, out["split"], out["summary"], _META)
        _phase(rec, "saliency", lambda: _saliency(config, run_dir, wd_path))
        print(f"demo: {task}: saliency panel in {rec['seconds']['saliency']:.0f} s", flush=True)
    return {"split": out["split"], "summary": out["summary"], "figures": [str(f) for f in out["figures"]], **rec}


_META = {"model": "demo: convnextv2-test classifier + segformer-test", "dataset": f"{PHANTOMS}/{PHANTOM_CONFIG}",
         "split_by": "patient (builder splits)", "evaluated_on": "test (held-out synthetic patients)"}
# jax settings the training processes take over from this one (the CLI's compilation cache, tests' precision)
_INHERITED = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
              "jax_persistent_cache_min_compile_time_secs", "jax_default_matmul_precision")
# glibc malloc settings of the training processes (unless GLIBC_TUNABLES is set already): keep freed memory
# in one heap, on huge pages where the kernel allows. With glibc's defaults XLA:CPU's per-step buffers go
# back to the kernel after every step and are faulted in again, ~145 000 page faults per SegFormer step,
# which took ~40 % of its CPU time.
_MALLOC_TUNABLES = ("glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                    "glibc.malloc.trim_threshold=68719476736")


def run_demo(wd: str | Path) -> dict[str, Any]:
    """Build the data if needed, train and evaluate both models, write metrics.json + report.md.

    The two models train at once, each in a process of its own: on a small CPU machine neither keeps
    more than about one core busy (their tensors are too small to split), so two processes use two
    cores. Prints and records (metrics.json ``meta``) the seconds of every phase.
    """
    t0 = time.perf_counter()
    wd = Path(wd).absolute()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _ensure_data(wd / "data")
    timings["data_seconds"] = round(time.perf_counter() - t, 1)
    print(f"demo: data ready in {timings['data_seconds']:.0f} s", flush=True)
    fig_dir = wd / workdir.FIGURES
    fig_dir.mkdir(parents=True, exist_ok=True)
    settings = {key: getattr(jax.config, key) for key in _INHERITED}
    tasks = ("classification", "segmentation")
    print(f"demo: training {' and '.join(tasks)} in parallel processes in {wd}", flush=True)
    t = time.perf_counter()
    env_before = os.environ.get("GLIBC_TUNABLES")
    os.environ["GLIBC_TUNABLES"] = env_before or _MALLOC_TUNABLES  # read by the processes at their start
    try:
        with ProcessPoolExecutor(len(tasks), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {task: pool.submit(_train_task, task, str(wd), settings) for task in tasks}
            results = {task: f.result() for task, f in futures.items()}
    finally:
        if env_before is None:
            os.environ.pop("GLIBC_TUNABLES", None)
    timings["models_seconds"] = round(time.perf_counter() - t, 1)
    for task, res in results.items():
        for phase in res["seconds"]:
            timings[f"{task}_{phase}_seconds"] = res["seconds"][phase]
            timings[f"{task}_{phase}_cpu_seconds"] = res["cpu_seconds"][phase]
        for fig in res["figures"]:
            shutil.copy(fig, fig_dir / Path(fig).name)
    workdir.update_metrics(wd, "segmentation", results["segmentation"]["split"], results["segmentation"]["summary"],
                           _META)
    t = time.perf_counter()
    _merge_logs(wd, {task: wd / task for task in tasks})
    workdir.update_meta(wd, {**timings, "total_seconds": round(time.perf_counter() - t0, 1)})
    report_path = report.write_report(wd)
    timings["report_seconds"] = round(time.perf_counter() - t, 1)
    seconds = time.perf_counter() - t0
    workdir.update_meta(wd, {**timings, "total_seconds": round(seconds, 1)})
    print(f"demo: report in {timings['report_seconds']:.0f} s; phases (s): data {timings['data_seconds']:.0f}, "
          + ", ".join(f"{task} {' + '.join(f'{k} {v:.0f}' for k, v in results[task]['seconds'].items())}"
                      for task in tasks)
          + f" (both together {timings['models_seconds']:.0f}), report {timings['report_seconds']:.0f}; "
          f"total {seconds:.0f}", flush=True)
    return {"metrics": workdir.read_metrics(wd), "report": report_path, "seconds": seconds, "timings": timings}
