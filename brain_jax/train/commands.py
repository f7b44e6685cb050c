"""Handlers of ``brain-jax train / eval / predict / demo / report`` (argparse Namespace -> exit code).

User errors (bad config key, unknown model, missing dataset, foreign workdir) raise ValueError /
FileNotFoundError / KeyError, which ``brain_jax.cli`` prints as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

PREEMPTED_EXIT = 143  # 128 + SIGTERM: schedulers requeue the job; the workdir resumes


def train(args: argparse.Namespace) -> int:
    from brain_jax.train.config import load_config
    from brain_jax.train.trainer import train_and_evaluate

    config = load_config(args.config, getattr(args, "overrides", []) or [])
    result = train_and_evaluate(config, args.workdir)
    if result["status"] == "preempted":
        return PREEMPTED_EXIT
    ev = result.get("eval") or {}
    shown = {k: ev[k] for k in ("accuracy", "macro_f1", "dice", "miou", "hd95_mm") if k in ev}
    print(f"trained {result['step']} steps; workdir {args.workdir}" + (f"; eval {shown}" if shown else ""))
    return 0


def update_metrics_json(workdir: str | Path, section: str, summary: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``summary`` as ``section`` of WORKDIR/metrics.json, keeping the other task's section."""
    path = Path(workdir) / "metrics.json"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data[section] = summary
    data["meta"] = {**data.get("meta", {}), **meta}
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def evaluate(args: argparse.Namespace) -> int:
    """Evaluate the best (else latest) checkpoint of a workdir on a split; metrics.json + figures."""
    from brain_jax.train.config import load_config
    from brain_jax.train.evaluate import evaluate_workdir, print_table

    config = load_config(args.config, getattr(args, "overrides", []) or [])
    out = evaluate_workdir(config, args.workdir, split=args.split)
    print(print_table(out["summary"], config.data.task, out["class_names"]))
    for p in out["figures"]:
        print(f"wrote {p}")
    print(f"wrote {out['metrics_json']}")
    return 0


def predict(args: argparse.Namespace) -> int:
    from brain_jax.train.predict import predict as run_predict

    return int(run_predict(args) or 0)


def report(args: argparse.Namespace) -> int:
    from brain_jax.train.report import write_report

    path = write_report(args.workdir)
    print(f"wrote {path}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from brain_jax.train.demo import run_demo

    result = run_demo(args.workdir)
    m = result["metrics"]
    print(
        f"demo done in {result['seconds']:.0f} s: accuracy {m['classification']['accuracy']:.3f}, "
        f"macro F1 {m['classification']['macro_f1']:.3f}, Dice {m['segmentation']['dice']:.3f}, "
        f"HD95 {m['segmentation']['hd95_mm']:.2f} mm; report: {result['report']}"
    )
    return 0
