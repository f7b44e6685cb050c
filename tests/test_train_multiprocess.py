"""Multi-process data parallelism: two CPU processes joined by jax.distributed (launch/local_multiprocess.sh)
train exactly like one process holding the same number of devices, and their run resumes in one process.
(The launch scripts under faults: tests/test_launch_cluster.py.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from brain_jax import cli

ROOT = Path(__file__).resolve().parents[1]


def _train_rows(wd: Path) -> list[dict]:
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "data_wait_frac")} for r in rows]  # timings


def test_two_processes_match_one_process_with_two_devices(tmp_path, tiny_phantoms):
    from brain_jax.models.weights import model_variables
    from brain_jax.train.model_factory import load_model_from_workdir

    data = tiny_phantoms
    common = [f"--config.data.data_dir={data}", "--config.data.builder_config=tiny", "--config.data.image_size=32",
              "--config.model.kwargs.image_size=32", "--config.num_train_steps=3", "--config.batch_size=8",
              "--config.eval_batch_size=8", "--config.log_every_steps=1", "--config.progress_bar=false",
              "--config.checkpoint_every_steps=1", "--config.keep_checkpoints=3"]
    # ViT's test size: the same multi-process paths as ConvNeXt, a quarter of its compile time on CPU
    config = "configs/vit_cls.py:runlocal"

    two = tmp_path / "two_processes"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DEVICES_PER_PROCESS="1", XLA_FLAGS="")
    run = subprocess.run(["bash", str(ROOT / "launch" / "local_multiprocess.sh"), "2", config, str(two), *common],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("two_processes.proc*.log")))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:] + logs
    for rank in (0, 1):  # both processes joined the same job and finished it
        log = (tmp_path / f"two_processes.proc{rank}.log").read_text()
        assert f"Rank {rank} is connected to 1 peer" in log and "trained 3 steps" in log, log[-2000:]

    one = tmp_path / "one_process"
    assert cli.main(["train", "--config", config, "--workdir", str(one), *common, "--config.mesh.num_devices=2"]) == 0

    # Same global batches and reductions: the same losses, gradient norms, eval metrics and weights, bit for
    # bit (the reference runs in this pytest process, 2 of its 8 fake devices).
    rows_two, rows_one = _train_rows(two), _train_rows(one)
    assert [(r["step"], r["split"]) for r in rows_two] == [(1, "train"), (2, "train"), (3, "train"), (3, "eval")]
    assert [sorted(r) for r in rows_two] == [sorted(r) for r in rows_one]
    for a, b in zip(rows_two, rows_one):
        for k in a:
            if isinstance(a[k], float):
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"step {a['step']} {k}")
            else:
                assert a[k] == b[k], (a, b)
    ours, theirs = (model_variables(load_model_from_workdir(w)) for w in (two, one))
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(np.asarray(ours[k].get_value()), np.asarray(theirs[k].get_value()), err_msg=k)

    # Take the 2-process run back to its step-2 checkpoint and finish it in this (1-process) run: the
    # restored data position must give step 3 the batch it had, so the weights end where they ended.
    shutil.rmtree(two / "checkpoints" / "3")
    shutil.rmtree(two / "best")
    assert cli.main(["train", "--config", config, "--workdir", str(two), *common, "--config.mesh.num_devices=2"]) == 0
    resumed = model_variables(load_model_from_workdir(two, which="latest"))
    for k in ours:
        np.testing.assert_array_equal(np.asarray(resumed[k].get_value()), np.asarray(theirs[k].get_value()),
                                      err_msg=k)
