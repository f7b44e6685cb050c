"""The launch scripts under faults, on CPU: ``launch/slurm.sbatch`` itself on a real one-node SLURM cluster
(``launch/local_slurm.sh``; only command-line options differ from a GPU job) and ``launch/local_multiprocess.sh``.

- 2 tasks end on the weights of 1 process with 2 devices;
- a job preempted twice (``scancel --signal=TERM``, then the script's own SIGUSR1 path, which a time limit
  triggers through ``--signal=B:USR1@120``) saves, requeues, resumes and ends on the weights of an
  uninterrupted job, with every step logged once;
- a rank killed with SIGKILL ends the job within 60 s with a message naming it, and a resubmission resumes;
- the same two faults through local_multiprocess.sh, where the SIGTERM reaches one process only;
- launch/suite_array.sbatch as a 2-task array whose task 0 is signalled: it requeues and resumes.

Marked ``cluster``: excluded from the main suite, run serially by ``pytest -m cluster`` (README's test
command). SLURM needs root and Debian's slurm-wlm + munge; without them the SLURM tests are skipped, except
under CI (``CI=true``), where a cluster that cannot start is a failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from brain_jax import workdir
from brain_jax.train import checkpoints, faults

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/vit_cls.py:runlocal"  # ViT's test size compiles in a quarter of ConvNeXt's time on CPU
STEPS = 12
SBATCH_CPU = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1"]


def train_args(data_dir: Path) -> list[str]:
    return [f"--config.data.data_dir={data_dir}", "--config.data.builder_config=tiny", "--config.data.image_size=32",
            "--config.model.kwargs.image_size=32", "--config.batch_size=8", f"--config.num_train_steps={STEPS}",
            "--config.checkpoint_every_steps=4", "--config.keep_checkpoints=3", "--config.log_every_steps=1",
            "--config.data.eval_split=", "--config.best_metric=", "--config.progress_bar=false"]


def free_port(pair: bool = False) -> int:
    """A localhost port that is free (and, with ``pair``, the one after it too)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def wait_for(check: Callable[[], object], timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def logged_steps(wd: Path) -> list[int]:
    path = wd / workdir.METRICS_LOG
    return [r["step"] for r in workdir.read_log(wd) if r["split"] == "train"] if path.is_file() else []


def final_weights(wd: Path) -> dict[str, np.ndarray]:
    flat, step, _ = checkpoints.load_weights(wd, which="latest")
    assert step == STEPS
    return flat


def assert_same_weights(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def saved_steps(text: str) -> list[tuple[int, int]]:
    """(process, step) of each "saved checkpoint at step" line of a preemption, in order."""
    return [(int(p), int(s)) for p, s in re.findall(r"SIGTERM \(.*?\): process (\d+) saved checkpoint at step (\d+)",
                                                      text)]


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Environment of every launched process: CPU, one device per process, a shared compilation cache."""
    e = {k: v for k, v in os.environ.items() if k != faults.ENV}
    e.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", JAX_PLATFORMS="cpu",
             XLA_FLAGS="", JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("xla_cache")),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return e


@pytest.fixture(scope="module")
def one_process_two_devices(tmp_path_factory, tiny_phantoms, env) -> dict[str, np.ndarray]:
    """Weights of the uninterrupted run in one process holding 2 devices: every run below must end on them."""
    wd = tmp_path_factory.mktemp("one_process") / "run"
    e = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    p = subprocess.run(["brain-jax", "train", "--config", CONFIG, "--workdir", str(wd), *train_args(tiny_phantoms)],
                       cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return final_weights(wd)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, env) -> dict[str, str]:
    """A one-node SLURM cluster for this module (launch/local_slurm.sh), and the environment to use it."""
    state = tmp_path_factory.mktemp("slurm")
    e = dict(env, BRAIN_JAX_SLURM_DIR=str(state), BRAIN_JAX_SLURM_PORT=str(free_port(pair=True)))
    script = ROOT / "launch" / "local_slurm.sh"
    why = ""
    if os.geteuid() != 0:
        why = "the local SLURM cluster needs root"
    elif not shutil.which("slurmctld") or not shutil.which("munged"):
        why = "slurm-wlm / munge are not installed (apt-get install -y slurm-wlm munge)"
    else:
        up = subprocess.run(["bash", str(script), "up"], env=e, capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            why = f"launch/local_slurm.sh up failed: {up.stdout[-1500:]} {up.stderr[-1500:]}"
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {why}")
        pytest.skip(why)
    e["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield e
    finally:
        subprocess.run(["bash", str(script), "down"], env=e, capture_output=True, timeout=120)


def sbatch(env: dict[str, str], wd: Path, data_dir: Path, *, fault: str = "", wait: bool = False,
           config: str = CONFIG, args: Callable[[Path], list[str]] = train_args) -> tuple[str, Path]:
    """Submit launch/slurm.sbatch for a CPU run of 2 tasks; (job id, its output file)."""
    out = wd.parent / f"{wd.name}.slurm.out"
    e = dict(env, BRAIN_JAX_COORDINATOR_PORT=str(free_port()), **({faults.ENV: fault} if fault else {}))
    cmd = ["sbatch", "--parsable", *SBATCH_CPU, f"--output={out}", f"--chdir={ROOT}", *(["--wait"] if wait else []),
           str(ROOT / "launch" / "slurm.sbatch"), config, str(wd), *args(data_dir)]
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=900)
    job = p.stdout.strip().split(";")[0]
    if wait:
        assert p.returncode == 0, f"job {job} failed ({p.returncode}): {p.stderr[-2000:]}\n{out.read_text()[-4000:]}"
    else:
        assert p.returncode == 0 and job.isdigit(), p.stderr
    return job, out


def job_info(env: dict[str, str], job: str) -> dict[str, str]:
    p = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True, timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", p.stdout))


def wait_requeued(env: dict[str, str], job: str, restarts: int, out: Path) -> None:
    """Wait until the job has been requeued ``restarts`` times (it starts again 10 s later: cred_expire)."""
    wait_for(lambda: job_info(env, job).get("Restarts") == str(restarts), 120,
             f"job {job} requeued ({restarts}); its output:\n{out.read_text()[-3000:] if out.exists() else ''}")


def wait_job_done(env: dict[str, str], job: str, out: Path, timeout: float = 600) -> str:
    state = wait_for(lambda: (s := job_info(env, job).get("JobState")) not in ("PENDING", "RUNNING", "COMPLETING",
                                                                               "REQUEUED", None) and s,
                     timeout, f"job {job} to end")
    return state


# ------------------------------------------------------------------------------------------------ SLURM


@pytest.fixture(scope="module")
def two_tasks(slurm, tiny_phantoms, tmp_path_factory) -> Path:
    """An uninterrupted 2-task job (the weights every interrupted job must end on)."""
    wd = tmp_path_factory.mktemp("two_tasks") / "run"
    sbatch(slurm, wd, tiny_phantoms, wait=True)
    return wd


def test_two_slurm_tasks_end_on_the_weights_of_one_process_with_two_devices(two_tasks, one_process_two_devices):
    out = (two_tasks.parent / "run.slurm.out").read_text()
    assert "2 tasks" in out and f"trained {STEPS} steps" in out
    assert logged_steps(two_tasks) == list(range(1, STEPS + 1))
    assert_same_weights(final_weights(two_tasks), one_process_two_devices)


FCMAE_CONFIG = "configs/fcmae_pretrain.py:runlocal"


def fcmae_args(data_dir: Path) -> list[str]:
    """4 FCMAE steps at 64 px (2 x 2 mask cells), the held-out loss and panel at the end."""
    return [f"--config.data.data_dir={data_dir}", "--config.data.builder_config=tiny", "--config.batch_size=8",
            "--config.eval_batch_size=6", "--config.num_train_steps=4", "--config.eval_every_steps=0",
            "--config.checkpoint_every_steps=2", "--config.log_every_steps=1", "--config.progress_bar=false"]


def test_fcmae_pretraining_over_two_slurm_tasks_matches_one_process_with_two_devices(slurm, env, tiny_phantoms,
                                                                                    tmp_path):
    """FCMAE under the launch script: each task draws the masks of its own rows from their global index, so two
    SLURM tasks end on the weights of one process with two devices, bit for bit, with the same held-out loss."""
    one = tmp_path / "one"
    cmd = ["brain-jax", "train", "--config", FCMAE_CONFIG, "--workdir", str(one), *fcmae_args(tiny_phantoms)]
    p = subprocess.run(cmd, cwd=ROOT, env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2"),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    two = tmp_path / "two"
    _, out = sbatch(slurm, two, tiny_phantoms, wait=True, config=FCMAE_CONFIG, args=fcmae_args)
    assert "2 tasks" in out.read_text()
    for wd in (one, two):
        flat, step, _ = checkpoints.load_weights(wd, which="latest")
        assert step == 4 and "params.mask_token" in flat
    assert_same_weights(checkpoints.load_weights(two, which="latest")[0],
                        checkpoints.load_weights(one, which="latest")[0])
    held = [json.loads((wd / workdir.METRICS).read_text())["fcmae"]["validation"] for wd in (one, two)]
    assert held[0]["num_examples"] == held[1]["num_examples"] == 8
    assert held[1]["loss"] == pytest.approx(held[0]["loss"], rel=1e-6)
    assert (two / "figures" / "reconstruction.png").is_file()


def test_slurm_job_preempted_twice_requeues_and_ends_on_the_same_weights(slurm, tiny_phantoms, tmp_path, two_tasks):
    wd = tmp_path / "run"
    # each step sleeps 0.5 s (BRAIN_JAX_FAULT=step_delay) so that the signals land in the middle of the run
    job, out = sbatch(slurm, wd, tiny_phantoms, fault="step_delay=0.5")

    # 1. a preemption: SIGTERM to every task (as SLURM sends it), not to the batch script
    wait_for(lambda: len(logged_steps(wd)) >= 3, 600, "step 3")
    subprocess.run(["scancel", "--signal=TERM", job], env=slurm, check=True, timeout=30)
    wait_requeued(slurm, job, 1, out)
    text = out.read_text()
    saved = saved_steps(text)
    assert sorted(p for p, _ in saved) == [0, 1] and saved[0][1] == saved[1][1], text[-4000:]  # both, one step
    first = saved[0][1]
    assert 3 < first < STEPS and "requeueing job" in text

    # 2. the time-limit path: SIGUSR1 to the batch script only (what --signal=B:USR1@120 sends), forwarded
    wait_for(lambda: len(logged_steps(wd)) >= first + 2, 600, "two steps after the resume")
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=slurm, check=True, timeout=30)
    wait_requeued(slurm, job, 2, out)
    text = out.read_text()
    assert "slurm.sbatch: SIGUSR1" in text
    saved = saved_steps(text)[2:]
    assert sorted(p for p, _ in saved) == [0, 1] and saved[0][1] == saved[1][1], text[-4000:]
    assert first < saved[0][1] < STEPS

    # 3. the third start finishes
    assert wait_job_done(slurm, job, out) == "COMPLETED", out.read_text()[-4000:]
    assert logged_steps(wd) == list(range(1, STEPS + 1))  # each step once, despite two restarts
    assert_same_weights(final_weights(wd), final_weights(two_tasks))


def test_slurm_task_killed_ends_the_job_within_60s_and_a_resubmission_resumes(slurm, tiny_phantoms, tmp_path,
                                                                              two_tasks):
    wd = tmp_path / "run"
    job, out = sbatch(slurm, wd, tiny_phantoms, fault="kill_after_step=6@1")
    wait_for(lambda: out.exists() and "BRAIN_JAX_FAULT: SIGKILL" in out.read_text(), 600, "the SIGKILL of task 1")
    killed = time.monotonic()
    state = wait_job_done(slurm, job, out, timeout=120)
    print(f"SLURM: the job ended {time.monotonic() - killed:.1f} s after task 1's SIGKILL")
    assert time.monotonic() - killed < 60
    text = out.read_text()
    assert state == "FAILED" and job_info(slurm, job).get("Restarts") == "0", text[-4000:]
    assert re.search(r"task 1: Killed", text), text[-4000:]  # srun names the dead rank
    assert "a task failed" in text and "requeueing" not in text

    job2, out2 = sbatch(slurm, wd, tiny_phantoms, wait=True)  # the same command again
    assert f"job {job2} (restart 0) started" in out2.read_text()
    assert logged_steps(wd) == list(range(1, STEPS + 1))
    assert_same_weights(final_weights(wd), final_weights(two_tasks))


def test_slurm_suite_array_task_preempted_requeues_and_the_suite_tabulates(slurm, tiny_phantoms, tmp_path):
    """launch/suite_array.sbatch as a 2-task array (2 seeds): task 0 gets the script's SIGTERM (what
    --signal=B:TERM@120 sends), saves, requeues and finishes; then the suite command trains nothing and
    writes its tables."""
    out = tmp_path / "suite"
    suite_args = [CONFIG, "--seeds", "2", *train_args(tiny_phantoms)]
    e = dict(slurm, **{faults.ENV: "step_delay=0.5"})
    cmd = ["sbatch", "--parsable", "--array=0-1", "--gpus-per-node=0", "--cpus-per-task=1",
           f"--output={tmp_path}/array-%A_%a.out", f"--chdir={ROOT}",
           str(ROOT / "launch" / "suite_array.sbatch"), str(out), *suite_args]
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=60)
    job = p.stdout.strip().split(";")[0]
    assert p.returncode == 0 and job.isdigit(), p.stderr
    task0, out0 = f"{job}_0", tmp_path / f"array-{job}_0.out"

    def seed0_steps() -> list[int]:
        return [s for wd in out.glob("runs/*/seed0") for s in logged_steps(wd)]

    wait_for(lambda: len(seed0_steps()) >= 3, 600, "seed 0's step 3")
    subprocess.run(["scancel", "--batch", "--signal=TERM", task0], env=slurm, check=True, timeout=30)
    wait_requeued(slurm, task0, 1, out0)
    assert "requeueing the task" in out0.read_text()
    for task in (task0, f"{job}_1"):
        assert wait_job_done(slurm, task, out0) == "COMPLETED", out0.read_text()[-4000:]
    text = out0.read_text()
    assert "(restart 1)" in text, text[-4000:]
    assert seed0_steps() == list(range(1, STEPS + 1))  # resumed from its checkpoint: each step logged once

    tab = subprocess.run(["brain-jax", "suite", "--config", *suite_args, "--out", str(out)], cwd=ROOT, env=slurm,
                         capture_output=True, text=True, timeout=600)
    assert tab.returncode == 0, tab.stderr[-3000:]
    assert tab.stdout.count("already finished, kept") == 2, tab.stdout
    t = json.loads((out / workdir.SUITE_JSON).read_text())
    assert t["runs"] == ["seed0", "seed1"] and (out / workdir.SUITE_MD).is_file()
    (model,) = t["rows"]
    assert len(t["rows"][model]) == 2 and all(0 <= r["accuracy"]["estimate"] <= 1 for r in t["rows"][model])


# ------------------------------------------------------------------------------------ local_multiprocess


def local_run(env: dict[str, str], wd: Path, data_dir: Path, fault: str = "") -> subprocess.Popen:
    e = dict(env, BRAIN_JAX_COORDINATOR_PORT=str(free_port()), **({faults.ENV: fault} if fault else {}))
    return subprocess.Popen(["bash", str(ROOT / "launch" / "local_multiprocess.sh"), "2", CONFIG, str(wd),
                             *train_args(data_dir)], cwd=ROOT, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_local_multiprocess_one_rank_signalled_or_killed(env, tiny_phantoms, tmp_path, one_process_two_devices):
    wd = tmp_path / "run"
    logs = [tmp_path / f"run.proc{i}.log" for i in (0, 1)]

    # 1. SIGTERM reaches process 1 only, after step 3: both agree to stop at step 4 and save there
    p = local_run(env, wd, tiny_phantoms, "term_after_step=3@1")
    _, err = p.communicate(timeout=600)
    assert p.returncode == 143, err + logs[1].read_text()[-3000:]
    assert "SIGTERM (received here): process 1 saved checkpoint at step 4" in logs[1].read_text()
    assert "SIGTERM (received by another process): process 0 saved checkpoint at step 4" in logs[0].read_text()

    # 2. process 1 SIGKILLed after step 7: the script stops process 0 at once and names the dead one
    p = local_run(env, wd, tiny_phantoms, "kill_after_step=7@1")
    wait_for(lambda: logs[1].exists() and "SIGKILL" in logs[1].read_text() or p.poll() is not None, 600,
             "the SIGKILL of process 1")
    killed = time.monotonic()
    _, err = p.communicate(timeout=120)
    print(f"local_multiprocess.sh: ended {time.monotonic() - killed:.1f} s after process 1's SIGKILL")
    assert time.monotonic() - killed < 60
    assert p.returncode == 137, err
    assert re.search(r"process 1 \(pid \d+\) was killed by signal 9", err), err

    # 3. the same command again finishes, from the step-4 checkpoint
    p = local_run(env, wd, tiny_phantoms)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err + logs[0].read_text()[-3000:]
    assert logged_steps(wd) == list(range(1, STEPS + 1))
    assert_same_weights(final_weights(wd), one_process_two_devices)
