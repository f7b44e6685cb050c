"""Example ids on several processes: two CPU processes joined by jax.distributed evaluate a split with per-host
loaders, and the ids they gather name the accumulators' rows (batch by batch, process 0's rows first), in
the order one process sees."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import input_pipeline as ip
from input_pipeline.splits import index_metadata, resolve

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, os, sys
pid, port, data_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
import jax
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
import input_pipeline as ip
from brain_jax import metrics
from brain_jax.train import engine
from brain_jax.train.evaluate import run_split

cfg = ip.default_data_config()
cfg.data_dir, cfg.builder_config, cfg.image_size = data_dir, "tiny", 32
# 8 test examples, 3 per host and batch: host 1 holds rows 3-5 of batch 1, host 0 rows 6-7 of batch 2
loader = ip.make_loader(cfg, "test", global_batch_size=6, train=False, seed=0)

def step(params, bs, rest, batch):  # predicts each example's label: the kept labels show the row order
    logits = jax.nn.one_hot(batch["label"], 4) * 5.0
    return {"stats": metrics.classification_batch_stats(logits, batch["label"], batch["valid"], 4),
            "pred": batch["label"]}

res = run_split(step, None, None, None, loader, mesh=engine.make_mesh(), task="classification",
                class_names=ip.CLASS_NAMES, keep_examples=True)
json.dump({"ids": res.ids["example_id"].tolist(), "source": res.ids["source"].tolist(),
           "label": res.examples["label"].tolist()}, open(f"{out}.{pid}.json", "w"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_gather_ids_in_the_accumulators_order(tmp_path, tiny_phantoms):
    script = tmp_path / "ids.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=str(ROOT))
    port, out = str(_free_port()), str(tmp_path / "out")
    procs = [subprocess.Popen([sys.executable, str(script), str(i), port, str(tiny_phantoms), out], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    cfg = ip.default_data_config()
    cfg.data_dir, cfg.builder_config = str(tiny_phantoms), "tiny"
    meta = index_metadata(cfg, resolve(cfg, "test"))
    label_of = dict(zip(meta["example_id"], meta["label"]))
    for pid in (0, 1):  # every process ends with the same, complete list
        got = json.loads(Path(f"{out}.{pid}.json").read_text())
        assert got["ids"] == meta["example_id"]
        assert got["label"] == [label_of[i] for i in got["ids"]]
        assert got["source"] == meta["source"]
