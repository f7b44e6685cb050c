"""``brain-jax demo``: synthetic phantoms -> ConvNeXt V2 classifier + SegFormer -> metrics and report."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import input_pipeline
from brain_jax import workdir
from brain_jax.app import report
from brain_jax.app.evaluate import evaluate_workdir
from brain_jax.train.config import load_config
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


def run_demo(wd: str | Path, *, progress_bar: bool = True) -> dict[str, Any]:
    """Build the data if needed, train and evaluate both models, write metrics.json + report.md."""
    t0 = time.perf_counter()
    wd = Path(wd).absolute()
    data_dir = wd / "data"
    _ensure_data(data_dir)
    runs, timings = {}, {}
    meta = {"model": "demo: convnextv2-test classifier + segformer-test", "dataset": f"{PHANTOMS}/{PHANTOM_CONFIG}",
            "split_by": "patient (builder splits)", "evaluated_on": "test (held-out synthetic patients)"}
    fig_dir = wd / workdir.FIGURES
    fig_dir.mkdir(parents=True, exist_ok=True)
    for task in ("classification", "segmentation"):
        t = time.perf_counter()
        overrides = [f"--config.data.data_dir={data_dir}", f"--config.progress_bar={progress_bar}"]
        config = load_config(f"demo.py:task={task}", overrides)
        run_dir = wd / task
        print(f"demo: training {config.model.name}-{config.model.variant} ({task}) in {run_dir}", flush=True)
        train_and_evaluate(config, run_dir)
        out = evaluate_workdir(config, run_dir, split=config.data.test_split)
        runs[task] = run_dir
        for fig in out["figures"]:
            shutil.copy(fig, fig_dir / Path(fig).name)
        timings[f"{task}_seconds"] = round(time.perf_counter() - t, 1)
        workdir.update_metrics(wd, task, out["split"], out["summary"], meta)
    _merge_logs(wd, runs)
    seconds = time.perf_counter() - t0
    workdir.update_meta(wd, {**timings, "total_seconds": round(seconds, 1)})
    report_path = report.write_report(wd)
    return {"metrics": workdir.read_metrics(wd), "report": report_path, "seconds": seconds}
