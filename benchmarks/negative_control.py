"""The negative control of ``compare`` over many seed pairs: how often one config under two seeds reads
"no difference shown".

    python benchmarks/negative_control.py --pairs 20 \
        --out benchmarks/results/cpu2_$(date +%F)_negative_control.json

Pair i trains ``configs/controls.py:budget=long`` under seeds 2i and 2i+1 on the ``rank`` phantoms (built
in ``--work`` when missing), evaluates both on the test patients and compares them: the primary test is the
exact cluster swap test of the accuracy difference (one pair, so Holm changes nothing). The JSON holds
every pair's p-value, statistic, discordant patients, verdict and accuracies, and the share of pairs
reading "no difference shown" with its exact 95 % interval; it is rewritten after every pair, so an
interrupted run keeps what it measured, and a rerun with the same ``--work`` reuses the evaluated runs.
Two seeds are two different models, so the share measures the test and the training's seed-to-seed
spread together: at α = 0.05 a calibrated test on equal models reads "no difference" at least 95 % of
the time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import input_pipeline as ip  # noqa: E402
from brain_jax import workdir  # noqa: E402
from brain_jax.app import compare, compile_cache  # noqa: E402
from brain_jax.app.evaluate import evaluate_workdir  # noqa: E402
from brain_jax.metrics import stats  # noqa: E402
from brain_jax.train.config import load_config  # noqa: E402
from brain_jax.train.trainer import train_and_evaluate  # noqa: E402

CONFIG = "configs/controls.py"
NO_DIFFERENCE = "no difference shown"


def ensure_data(data_dir: Path) -> None:
    """The ``rank`` phantoms in ``data_dir`` (built once)."""
    if not (data_dir / "brain_phantoms" / "rank").is_dir():
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
        ip.build_dataset("brain_phantoms", data_dir, builder_config="rank")


def trained_run(work: Path, budget: str, seed: int, resamples: int) -> tuple[Path, float]:
    """The workdir of (budget, seed), trained and evaluated on test unless it was already; its seconds."""
    wd = work / "runs" / f"{budget}_seed{seed}"
    if workdir.predictions_csv(wd, "test").is_file():
        return wd, 0.0
    config = load_config(f"{CONFIG}:budget={budget},seed={seed}",
                         [f"--config.data.data_dir={work / 'data'}", "--config.progress_bar=false"])
    started = time.perf_counter()
    status = train_and_evaluate(config, wd)["status"]
    if status != "done":  # SIGTERM: the run stopped early and resumes on the next invocation
        raise SystemExit(f"{wd}: training {status}; rerun with the same --work to finish it")
    evaluate_workdir(config, wd, split="test", n_resamples=resamples)
    return wd, time.perf_counter() - started


def compare_pair(work: Path, i: int, wds: tuple[Path, Path], resamples: int) -> dict:
    """Pair i's primary test and both models' test accuracies."""
    names = [wd.name for wd in wds]
    c = compare.compare(list(wds), work / "compare" / f"pair{i:02d}", names=names, n_resamples=resamples)["comparison"]
    (pair,) = c["pairs"]
    p = pair["primary"]
    return {"pair": i, "seeds": [2 * i, 2 * i + 1],
            "accuracy": [c["metrics"][n]["accuracy"]["estimate"] for n in names],
            "statistic": p["statistic"], "p_value": p["p_value"], "p_holm": p["p_holm"],
            "n_clusters": p["n_clusters"], "n_discordant_clusters": p["n_discordant_clusters"],
            "verdict": p["verdict"], "no_difference": p["verdict"].startswith(NO_DIFFERENCE)}


def summary(rows: list[dict]) -> dict:
    """The share of pairs reading "no difference shown", with its Clopper-Pearson 95 % interval."""
    n, k = len(rows), sum(r["no_difference"] for r in rows)
    low, high = stats.clopper_pearson(k, n, 0.95) if n else (float("nan"), float("nan"))
    p = np.array([r["p_value"] for r in rows]) if rows else np.full(1, np.nan)
    gap = np.array([abs(r["accuracy"][0] - r["accuracy"][1]) for r in rows]) if rows else np.full(1, np.nan)
    return {"pairs": n, "no_difference": k, "share_no_difference": k / n if n else float("nan"),
            "share_interval_95": [low, high], "p_value_min": float(p.min()), "p_value_median": float(np.median(p)),
            "accuracy_gap_max": float(gap.max()), "accuracy_gap_median": float(np.median(gap))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20, help="seed pairs (2i, 2i+1), i < PAIRS (default 20)")
    ap.add_argument("--budget", default="long", help="the controls config's budget (default long)")
    ap.add_argument("--work", type=Path, default=Path("workdirs/negative_control"),
                    help="data, runs and comparisons; reused by a rerun (default workdirs/negative_control)")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples of the intervals (the test "
                    "is exact and does not use them; default 200)")
    ap.add_argument("--compile-cache", default=None, help="XLA compilation cache folder (default: the CLI's)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON to write")
    a = ap.parse_args()
    compile_cache.configure(compile_cache.resolve(a.compile_cache))
    ensure_data(a.work / "data")
    started, rows = time.time(), []
    for i in range(a.pairs):
        runs = [trained_run(a.work, a.budget, seed, a.resamples) for seed in (2 * i, 2 * i + 1)]
        row = compare_pair(a.work, i, (runs[0][0], runs[1][0]), a.resamples)
        row["train_eval_seconds"] = [round(s, 1) for _, s in runs]
        row["loadavg_1min"] = os.getloadavg()[0]
        rows.append(row)
        print(f"pair {i}: accuracy {row['accuracy'][0]:.3f} vs {row['accuracy'][1]:.3f}, p = {row['p_value']:.3g}, "
              f"{row['n_discordant_clusters']} discordant patients: {row['verdict']}", flush=True)
        result = {"benchmark": "negative control", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                  "cpus": os.cpu_count(), "config": f"{CONFIG}:budget={a.budget}", "seeds": "2i and 2i+1 in pair i",
                  "dataset": "brain_phantoms/rank", "split": "test", "test": "exact cluster swap test of accuracy",
                  "alpha": 0.05, "seconds": round(time.time() - started, 1), "summary": summary(rows), "rows": rows}
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(result, indent=2) + "\n")
    s = summary(rows)
    print(f"no difference shown in {s['no_difference']} of {s['pairs']} pairs ({s['share_no_difference']:.2f}, 95% "
          f"interval {s['share_interval_95'][0]:.2f}-{s['share_interval_95'][1]:.2f})")
    if a.out:
        print("wrote", a.out)


if __name__ == "__main__":
    main()
