"""The workdir layout module: metrics.json sections per task and split, schema upgrade, log rows."""
from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from brain_jax import workdir


def test_metrics_keep_one_section_per_split(tmp_path):
    workdir.update_metrics(tmp_path, "classification", "validation", {"accuracy": 0.5}, {"model": "m"})
    workdir.update_metrics(tmp_path, "classification", "test", {"accuracy": np.float32(0.75)}, {"dataset": "d"})
    workdir.update_metrics(tmp_path, "segmentation", "test", {"dice": 0.9})
    workdir.update_metrics(tmp_path, "classification", "validation", {"accuracy": 0.6})
    raw = json.loads((tmp_path / workdir.METRICS).read_text())
    assert raw["schema_version"] == workdir.METRICS_SCHEMA
    assert raw["classification"] == {"validation": {"accuracy": 0.6}, "test": {"accuracy": 0.75}}
    assert raw["segmentation"] == {"test": {"dice": 0.9}}
    assert raw["meta"] == {"model": "m", "dataset": "d"}
    assert workdir.headline(raw, "classification") == ("test", {"accuracy": 0.75})
    assert workdir.headline(raw, "segmentation") == ("test", {"dice": 0.9})
    with pytest.raises(ValueError, match="unknown task"):
        workdir.update_metrics(tmp_path, "detection", "test", {})


def test_schema_1_is_upgraded_on_read(tmp_path):
    old = {"classification": {"accuracy": 0.5}, "segmentation": {"dice": 0.7},
           "meta": {"classification_split": "fold5"}, "comparison": {"a": {"accuracy": 1.0}}}
    (tmp_path / workdir.METRICS).write_text(json.dumps(old))
    m = workdir.read_metrics(tmp_path)
    assert m["classification"] == {"fold5": {"accuracy": 0.5}}
    assert m["segmentation"] == {"test": {"dice": 0.7}}  # no split recorded: the test split
    assert m["comparison"] == old["comparison"]
    (tmp_path / workdir.METRICS).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version 99"):
        workdir.read_metrics(tmp_path)
    (tmp_path / workdir.METRICS).write_text("{broken")
    with pytest.raises(ValueError, match="metrics.json: not valid JSON"):
        workdir.read_metrics(tmp_path)


def test_config_round_trip_and_errors(tmp_path):
    c = ml_collections.ConfigDict({"model": {"name": "vit", "shape": (2, 3)}, "lr": 1e-3})
    workdir.write_config(tmp_path, c)
    back = workdir.read_config(tmp_path)
    assert back.model.name == "vit" and list(back.model.shape) == [2, 3] and back.lr == 1e-3
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        workdir.read_config(tmp_path / "nothing")
    (tmp_path / workdir.CONFIG).write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        workdir.read_config(tmp_path)


def test_log_rows(tmp_path):
    row = workdir.log_row(3, "train", {"loss": np.float32(0.5), "n": 4, "bad": float("nan"), "text": "x"})
    assert row == {"step": 3, "split": "train", "loss": 0.5, "n": 4, "bad": "nan"}
    workdir.append_log(tmp_path, row)
    workdir.append_log(tmp_path, workdir.log_row(4, "eval", {"accuracy": 1.0}))
    assert [r["step"] for r in workdir.read_log(tmp_path)] == [3, 4]
    (tmp_path / workdir.METRICS_LOG).write_text('{"step": 1}\n[1]\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: expected a JSON object"):
        workdir.read_log(tmp_path)
    (tmp_path / workdir.METRICS_LOG).write_text('{"step": 1}\n' + "[" * 100_000 + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON object \(nested too deeply\)"):
        workdir.read_log(tmp_path)
    (tmp_path / workdir.METRICS_LOG).write_bytes(b'{"step": 1}\n{"a": "\xff"}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: not UTF-8 text at byte 19"):
        workdir.read_log(tmp_path)


def test_predictions_csv_name_is_safe():
    assert workdir.predictions_csv("/w", "fold1+fold2").name == "predictions_fold1_fold2.csv"
    assert workdir.predictions_csv("/w", "train[:90%]").name == "predictions_train__90__.csv"
