"""Crash safety of one training process: SIGKILL at fixed fault points (brain_jax.train.faults), damaged
checkpoints, a full disk, torn log lines. Each interrupted run must resume and end bit-identical to an
uninterrupted one, with every step logged once."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optax
import pytest
from PIL import Image

from brain_jax import cli, workdir
from brain_jax.train import checkpoints, engine, faults
from brain_jax.train.model_factory import create_model
from brain_jax.train.spec import RunSpec
from brain_jax.train.config import load_config
from brain_jax.train.metric_log import LogWriteError
from tests.train_helpers import compilation_cache, params_of, run, tiny_config

ROOT = Path(__file__).resolve().parents[1]
# async checkpoints (the default of real runs), a checkpoint every 2 of 8 steps, 3 kept
OVERRIDES = {"num_train_steps": 8, "checkpoint_every_steps": 2, "keep_checkpoints": 3, "async_checkpoint": True,
             "optimizer.ema_decay": 0.9}


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("xla_cache")
    with compilation_cache(path):
        yield path


@pytest.fixture(scope="module")
def reference(xla_cache, tmp_path_factory) -> dict[str, np.ndarray]:
    """Final params of the uninterrupted run."""
    return params_of(run(tiny_config(**OVERRIDES), tmp_path_factory.mktemp("reference")))


def assert_same_params(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def logged_steps(wd: Path, split: str = "train") -> list[int]:
    return [r["step"] for r in workdir.read_log(wd) if r["split"] == split]


def run_process(wd: Path, xla_cache: Path, fault: str = "") -> subprocess.CompletedProcess:
    """The tiny run in a fresh process (tests.train_helpers), with BRAIN_JAX_FAULT=fault."""
    env = dict(os.environ, **{faults.ENV: fault})
    overrides = json.dumps({**OVERRIDES, "_compilation_cache": str(xla_cache)})
    return subprocess.run([sys.executable, "-m", "tests.train_helpers", str(wd), overrides, str(wd.parent / "p.npz")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------- fault points


def test_fault_spec_is_parsed_and_bad_specs_are_named():
    assert faults.parse("kill_in_log=5, step_delay=0.25@1") == {"kill_in_log": (5, None), "step_delay": (0.25, 1)}
    for bad in ("kill_in_log", "explode=3", "kill_after_step=x", "kill_in_log=2@one"):
        with pytest.raises(ValueError, match=f"{faults.ENV}=.*{bad.split('=')[0]}"):
            faults.parse(bad)


@pytest.mark.slow
def test_sigkill_at_each_fault_point_resumes_bit_identical(tmp_path, xla_cache, reference):
    """One workdir, killed three times in a row (mid checkpoint write, mid log write, between steps), then
    finished: the weights equal the uninterrupted run's and metrics.jsonl logs each step once."""
    wd = tmp_path / "run"
    ckpt_dir = wd / workdir.CHECKPOINTS

    # 1. killed inside checkpoint 4's asynchronous write: its files are written, the commit is not
    p = run_process(wd, xla_cache, "kill_in_checkpoint=4")
    assert p.returncode == -9, p.stderr[-3000:]
    assert "in the middle of writing checkpoint 4" in p.stderr
    assert checkpoints.committed_steps(ckpt_dir) == [2]
    assert [d.name for d in ckpt_dir.iterdir() if d.name.startswith("4.")], "no half-written step 4 left"
    # training went on while checkpoint 4 was written in the background (until step 6's save waits for it)
    assert logged_steps(wd)[:4] == [1, 2, 3, 4] and logged_steps(wd)[-1] <= 6

    # 2. resumed from step 2; killed half-way through writing step 6's log row
    p = run_process(wd, xla_cache, "kill_in_log=6")
    assert p.returncode == -9, p.stderr[-3000:]
    text = (wd / workdir.METRICS_LOG).read_text()
    assert not text.endswith("\n")  # the torn line is there
    assert logged_steps(wd) == [1, 2, 3, 4, 5]  # steps 3, 4 once: the rows after step 2 were dropped first
    assert set(checkpoints.committed_steps(ckpt_dir)) <= {2, 4}  # 4 again, unless its write was still going

    # 3. killed between steps 7 and 8 (checkpoint 6 is on its way or done)
    p = run_process(wd, xla_cache, "kill_after_step=7")
    assert p.returncode == -9, p.stderr[-3000:]
    assert logged_steps(wd)[-1] == 7

    # 4. finished without a fault
    p = run_process(wd, xla_cache)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "status done step 8" in p.stdout
    assert_same_params(dict(np.load(wd.parent / "p.npz")), reference)
    assert logged_steps(wd) == list(range(1, 9))
    lines = (wd / workdir.METRICS_LOG).read_text().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 8


# ---------------------------------------------------------------------------------- damaged checkpoints


def _truncate_array_data(step_dir: Path) -> str:
    files = sorted((step_dir / "state" / "d").iterdir())
    assert files, f"no array data under {step_dir}"
    for f in files:
        os.truncate(f, f.stat().st_size // 2)
    return "cut short"


def _remove_metadata(step_dir: Path) -> str:
    (step_dir / "state" / "_METADATA").unlink()
    return "_METADATA"


def _remove_iterator_state(step_dir: Path) -> str:
    shutil.rmtree(step_dir / "data")
    return "data"


def _interrupted_at_6(wd: Path) -> None:
    """A run stopped by SIGTERM at step 6 of 8 (checkpoints 2, 4 and 6 kept)."""
    def sigterm_at_5(step, state, metrics):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    first = run(tiny_config(**OVERRIDES), wd, hooks=[sigterm_at_5])
    assert first["status"] == "preempted" and first["step"] == 6
    assert checkpoints.committed_steps(wd / workdir.CHECKPOINTS) == [2, 4, 6]


@pytest.mark.parametrize("damage", [_truncate_array_data, _remove_metadata, _remove_iterator_state])
def test_resume_skips_a_damaged_checkpoint_with_a_warning(tmp_path, xla_cache, reference, damage):
    wd = tmp_path / "run"
    _interrupted_at_6(wd)
    damage(wd / workdir.CHECKPOINTS / "6")
    with pytest.warns(checkpoints.CheckpointSkipped, match=r"checkpoints/6: damaged checkpoint skipped .*"
                                                            r"resuming from step 4; moved to .*damaged/checkpoints/6"):
        second = run(tiny_config(**OVERRIDES), wd)
    assert second["status"] == "done" and second["step"] == 8
    assert_same_params(params_of(second), reference)
    assert (wd / workdir.DAMAGED / workdir.CHECKPOINTS / "6").is_dir()  # kept for inspection
    assert logged_steps(wd) == list(range(1, 9))


def test_resume_refuses_when_no_checkpoint_restores_and_moves_nothing(tmp_path, xla_cache):
    wd = tmp_path / "run"
    _interrupted_at_6(wd)
    for step in (2, 4, 6):
        _remove_metadata(wd / workdir.CHECKPOINTS / str(step))
    with pytest.raises(ValueError, match=r"checkpoints: no checkpoint could be restored, nothing was changed "
                                         r"\(step 6: .+; step 4: .+; step 2: .+\)"):
        run(tiny_config(**OVERRIDES), wd)
    assert checkpoints.committed_steps(wd / workdir.CHECKPOINTS) == [2, 4, 6]
    assert not (wd / workdir.DAMAGED).exists()


@pytest.fixture
def model_workdir(tmp_path, tiny_phantoms) -> tuple[Path, list[str]]:
    """A ConvNeXt V2 (test size) workdir with checkpoints at steps 1 and 2, written without training."""
    args = [f"--config.data.data_dir={tiny_phantoms}", "--config.data.builder_config=tiny",
            "--config.data.image_size=32", "--config.eval_batch_size=8"]
    config = load_config("configs/convnextv2_cls.py:runlocal", args)
    wd = tmp_path / "model"
    model = create_model(RunSpec.from_config(config))
    state = engine.init_train_state(engine.split_model(model), optax.sgd(0.1), ema=False)
    ck = checkpoints.Checkpointer(wd, keep=3, async_save=False)
    for step in (1, 2):
        ck.save(step, state, {"step": step})
    ck.close()
    workdir.write_config(wd, config)
    workdir.write_model_json(wd, model.config.model_type, dataclasses.asdict(model.config))
    return wd, args


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("damage", [_truncate_array_data, _remove_metadata])
def test_eval_and_predict_refuse_a_damaged_checkpoint_in_one_line(model_workdir, tmp_path, capsys, damage):
    wd, args = model_workdir
    image = tmp_path / "slice.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(image)
    damage(wd / workdir.CHECKPOINTS / "2")
    for argv in (["predict", "--workdir", str(wd), str(image)],
                 ["eval", "--config", "configs/convnextv2_cls.py:runlocal", "--workdir", str(wd), *args]):
        assert cli.main(argv) == 2
        line = _one_error_line(capsys)
        assert f"{wd / workdir.CHECKPOINTS / '2'}: checkpoint step 2 is damaged or incomplete" in line, line
        assert "Traceback" not in line
    assert not (wd / workdir.PREDICT_DIR).exists()  # nothing written


# ------------------------------------------------------------------------------------------ full disk


def test_enospc_while_saving_stops_clearly_and_keeps_the_previous_checkpoint(tmp_path, xla_cache, reference,
                                                                            monkeypatch):
    wd = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, "enospc_in_checkpoint=4")
    with pytest.raises(checkpoints.CheckpointWriteError) as info:
        run(tiny_config(**OVERRIDES), wd)
    message = str(info.value)
    assert "writing checkpoint step 4 failed (no space left on device)" in message
    assert f"step 2 in {wd / workdir.CHECKPOINTS} is kept and loadable" in message
    assert "\n" not in message
    flat, step, _ = checkpoints.load_weights(wd, which="latest")
    assert step == 2 and all(np.isfinite(v).all() for v in flat.values())
    # the same command, once there is space again, resumes from step 2 and ends where it should
    monkeypatch.delenv(faults.ENV)
    assert_same_params(params_of(run(tiny_config(**OVERRIDES), wd)), reference)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_real_full_disk_stops_clearly_and_keeps_the_previous_checkpoint(tmp_path, xla_cache):
    """The same on a real 4 MiB filesystem filled up after step 3 (needs root and mount; tmpfs)."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "4m"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        wd = disk / "run"

        def fill_disk_after_3(step, state, metrics):
            if step == 3:  # checkpoints are synchronous here: step 2's is on disk
                stat = os.statvfs(disk)
                free = stat.f_bavail * stat.f_frsize
                (disk / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))  # a few pages left for the log

        with pytest.raises((checkpoints.CheckpointWriteError, LogWriteError)) as info:
            run(tiny_config(**{**OVERRIDES, "async_checkpoint": False}), wd, hooks=[fill_disk_after_3])
        assert "no space left on device" in str(info.value).lower()
        flat, step, _ = checkpoints.load_weights(wd, which="latest")
        assert step == 2 and all(np.isfinite(v).all() for v in flat.values())
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ------------------------------------------------------------------------------------------ metrics log


def test_truncate_log_drops_later_steps_and_a_torn_line(tmp_path):
    for step in (1, 2, 3):
        workdir.append_log(tmp_path, workdir.log_row(step, "train", {"loss": 1.0 / step}))
    workdir.append_log(tmp_path, workdir.log_row(2, "eval", {"accuracy": 0.5}))
    path = tmp_path / workdir.METRICS_LOG
    with open(path, "a") as f:
        f.write('{"step": 4, "split": "tr')  # a crash mid-write
    assert [r["step"] for r in workdir.read_log(tmp_path)] == [1, 2, 3, 2]  # the torn line is not a row
    assert workdir.truncate_log(tmp_path, 2) == 2  # step 3's row and the torn line
    assert [(r["step"], r["split"]) for r in workdir.read_log(tmp_path)] == [(1, "train"), (2, "train"), (2, "eval")]
    assert path.read_text().endswith("}\n")
    assert workdir.truncate_log(tmp_path, 2) == 0
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')  # damage in the middle is an error, not dropped
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON object"):
        workdir.truncate_log(tmp_path, 5)
