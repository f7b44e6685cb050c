"""The benchmark scripts run end to end at their --tiny size and write sound results (not timings)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, out: Path, *args: str) -> dict:
    """Runs ``benchmarks/<script> --tiny --json out`` in a fresh interpreter; returns the JSON it wrote."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny", "--json", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert f"wrote {out}" in proc.stdout
    return json.loads(out.read_text())


@pytest.mark.torch
def test_bench_hd95_tiny(tmp_path):
    doc = run_script("bench_hd95.py", tmp_path / "hd95.json")
    assert doc["benchmark"] == "hd95" and doc["versions"]["monai"] and doc["versions"]["medpy"]
    (res,) = doc["results"]
    assert res["scene"] == "near" and res["batch"] == 2 and res["size"] == 64
    # the numbers agree with both peers (medpy's union convention; MONAI's max with symmetric="max")
    assert res["max_rel_diff_vs_medpy"] < 1e-5 and res["max_rel_diff_vs_monai_max"] < 1e-5
    hd95 = np.asarray(res["hd95_ours"])
    assert hd95.shape == (2,) and np.all(np.isfinite(hd95)) and np.all(hd95 > 0)
    for name in ("brain_jax", "medpy", "monai"):
        assert len(res["times_s"][name]) == res["repeats"] == 2
    for peer in ("medpy", "monai"):
        r = res[f"ratio_vs_{peer}"]
        assert 0 < r["q1"] <= r["median"] <= r["q3"]


def test_bench_loader_tiny(tmp_path):
    doc = run_script("bench_loader.py", tmp_path / "loader.json", "--device-augment")
    assert doc["benchmark"] == "loader"
    (aug,) = doc["device_augment"]
    assert aug["size"] == 64 and aug["batch"] == 4 and 0 < aug["eval"]["median"] and 0 < aug["train"]["median"]
    assert {name: b["files"] for name, b in doc["build"].items()} == {"figshare_brain_tumor": 8, "brain_tumor_mri": 8}
    rows = doc["rows"]
    assert {(r["dataset"], r["train"]) for r in rows} == {
        (d, t) for d in ("figshare_brain_tumor", "brain_tumor_mri") for t in (True, False)}
    for r in rows:
        assert r["size"] == 64 and r["workers"] == 0 and r["repeats"] == len(r["images"]) == 2
        assert all(0 < n <= r["batch"] * r["steps"] for n in r["images"])
        for rate in (r["images_per_s"], r["images_per_cpu_s"]):
            assert 0 < rate["q1"] <= rate["median"] <= rate["q3"]
        assert r["cpu_s_per_1000"] == pytest.approx(1000 * sum(r["main_process_cpu_s"]) / sum(r["images"]))
    assert doc["feeding_cores"] == []  # no GPU rate is recorded for 64 px


@pytest.mark.torch
def test_bench_cpu_inference_tiny(tmp_path):
    doc = run_script("bench_cpu_inference.py", tmp_path / "cpu.json", "--models", "convnextv2,segformer")
    assert doc["benchmark"] == "cpu_inference" and doc["versions"]["torch"] and doc["versions"]["jax"]
    rows = doc["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [(m, b) for m in ("convnextv2", "segformer") for b in (1, 2)]
    for r in rows:
        assert r["variant"] == "test" and r["repeats"] == 2 and set(r["times_s"]) == {"brain_jax", "torch_eager"}
        assert len(r["loadavg_1min"]) == 2 and min(r["loadavg_1min"]) >= 0
        assert all(len(ts) == 2 and min(ts) > 0 for ts in r["times_s"].values())
        # the same weights on both sides: the logits agree (SegFormer's at H/4, transposed to NHWC)
        assert r["max_abs_diff"]["eager"] < 1e-4, r["max_abs_diff"]
        ratio = r["ratio_vs_torch_eager"]
        assert 0 < ratio["q1"] <= ratio["median"] <= ratio["q3"]
