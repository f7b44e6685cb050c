"""``brain-jax demo``: synthetic phantoms -> ConvNeXt V2 classifier + SegFormer -> metrics and report."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

PHANTOMS = "brain_phantoms"
PHANTOM_CONFIG = "small"
TARGETS = {"classification.accuracy": 0.95, "segmentation.dice": 0.85}


def _ensure_data(data_dir: Path) -> None:
    if (data_dir / PHANTOMS / PHANTOM_CONFIG).is_dir():
        return
    import input_pipeline

    print(f"building {PHANTOMS}/{PHANTOM_CONFIG} into {data_dir} ...", flush=True)
    input_pipeline.build_dataset(PHANTOMS, data_dir, builder_config=PHANTOM_CONFIG)


def _merge_logs(workdir: Path, runs: dict[str, Path]) -> None:
    """One metrics.jsonl for the report's curves, keys prefixed by task."""
    rows = []
    for task, run_dir in runs.items():
        log = run_dir / "metrics.jsonl"
        if not log.is_file():
            continue
        for line in log.read_text().splitlines():
            row = json.loads(line)
            prefix = f"{task}_{row.pop('split', 'train')}"
            rows.append({"step": row.pop("step"),
                         **{f"{prefix}/{k}": v for k, v in row.items() if k not in ("images_per_s", "grad_norm")}})
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_demo(workdir: str | Path, *, progress_bar: bool = True) -> dict[str, Any]:
    """Build the data if needed, train and evaluate both models, write metrics.json + report.md."""
    import shutil

    from brain_jax.train import report
    from brain_jax.train.commands import update_metrics_json
    from brain_jax.train.config import load_config
    from brain_jax.train.evaluate import evaluate_workdir
    from brain_jax.train.trainer import train_and_evaluate

    t0 = time.perf_counter()
    workdir = Path(workdir).absolute()
    data_dir = workdir / "data"
    _ensure_data(data_dir)
    runs, results, timings = {}, {}, {}
    for task in ("classification", "segmentation"):
        t = time.perf_counter()
        overrides = [f"--config.data.data_dir={data_dir}", f"--config.progress_bar={progress_bar}"]
        config = load_config(f"demo.py:task={task}", overrides)
        run_dir = workdir / task
        print(f"demo: training {config.model.name}-{config.model.variant} ({task}) in {run_dir}", flush=True)
        train_and_evaluate(config, run_dir)
        out = evaluate_workdir(config, run_dir, split=config.data.test_split)
        runs[task], results[task] = run_dir, out["summary"]
        fig_dir = workdir / report.FIGURES_DIR
        fig_dir.mkdir(parents=True, exist_ok=True)
        for fig in out["figures"]:
            shutil.copy(fig, fig_dir / Path(fig).name)
        timings[f"{task}_seconds"] = round(time.perf_counter() - t, 1)
    _merge_logs(workdir, runs)
    meta = {"model": "demo: convnextv2-test classifier + segformer-test", "dataset": f"{PHANTOMS}/{PHANTOM_CONFIG}",
            "split_by": "patient (builder splits)", "evaluated_on": "test (held-out synthetic patients)", **timings}
    update_metrics_json(workdir, "classification", results["classification"], meta)
    path = update_metrics_json(workdir, "segmentation", results["segmentation"], {})
    report_path = report.write_report(workdir)
    seconds = time.perf_counter() - t0
    metrics = json.loads(path.read_text())
    metrics["meta"]["total_seconds"] = round(seconds, 1)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return {"metrics": metrics, "report": report_path, "seconds": seconds}
