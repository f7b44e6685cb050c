"""launch/tpu_pod.sh against a stand-in ``gcloud`` that records its arguments: the command it sends to every
TPU VM, run by a shell as the VM would, gives ``brain-jax`` exactly the config, workdir and overrides typed,
commas, spaces and quotes included."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "tpu_pod.sh"

# Records its arguments, NUL-separated, in $RECORD (and, for brain-jax, the compilation cache variable).
STAND_IN = """#!/usr/bin/env bash
printf '%s\\0' "$@" > "$RECORD"
[ "$(basename "$0")" = brain-jax ] && printf '%s\\0' "$PWD" "$JAX_COMPILATION_CACHE_DIR" > "$RECORD.env"
exit 0
"""


@pytest.fixture
def pod(tmp_path) -> dict:
    """A bin folder with stand-in gcloud and brain-jax, and a home holding the repository folder."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    (home / "brain-jax").mkdir(parents=True)
    bin_dir.mkdir()
    for name in ("gcloud", "brain-jax"):
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("BRAIN_JAX_REPO", "JAX_COMPILATION_CACHE_DIR")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", HOME=str(home))
    return {"env": env, "home": home, "tmp": tmp_path}


def recorded(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


def launch(pod: dict, *args: str) -> subprocess.CompletedProcess:
    env = dict(pod["env"], RECORD=str(pod["tmp"] / "gcloud.args"))
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def run_on_vm(pod: dict, command: str) -> list[str]:
    """Run the --command string as the VM's login shell would; the brain-jax argv it produced."""
    record = pod["tmp"] / "brain-jax.args"
    env = dict(pod["env"], RECORD=str(record))
    p = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return recorded(record)


CASES = {
    "no overrides": ("configs/convnextv2_cls.py:variant=base", "gs://bucket/workdirs/cnv2b", []),
    "commas spaces quotes": (
        "configs/convnextv2_cls.py:variant=base,dataset=figshare",
        "/mnt/shared/work dir/it's \"here\"",
        ["--config.optimizer.lr=2e-4", "--config.data.name=figshare_brain_tumor+brain_tumor_mri",
         "--config.loss.class_weights=(1.0, 2.0, 1.5, 1.0)", "--config.data.eval_split=fold4,fold5",
         "--config.init_from=/models/it's a \"model\"", "--config.data.data_dir=$HOME/not expanded; `echo no`"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_argument_reaches_brain_jax_unchanged(pod, case):
    config, wd, overrides = CASES[case]
    p = launch(pod, "my-tpu", "us-central2-b", config, wd, *overrides)
    assert p.returncode == 0, p.stderr
    args = recorded(pod["tmp"] / "gcloud.args")
    assert args[:-1] == ["compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone", "us-central2-b", "--worker=all",
                         "--command"]
    argv = run_on_vm(pod, args[-1])
    assert argv == ["train", "--config", config, "--workdir", wd, "--config.distributed.auto=true", *overrides]
    cwd, cache = recorded(pod["tmp"] / "brain-jax.args.env")
    assert cwd == str(pod["home"] / "brain-jax")  # ~/brain-jax, expanded on the VM
    assert cache == str(pod["home"] / ".cache" / "brain_jax" / "xla")


def test_repository_folder_and_compilation_cache_can_be_chosen(pod):
    repo = pod["tmp"] / "checkout"
    repo.mkdir()
    pod["env"]["BRAIN_JAX_REPO"] = str(repo)
    p = launch(pod, "t", "z", "configs/vit_cls.py", "gs://b/w")
    assert p.returncode == 0, p.stderr
    command = recorded(pod["tmp"] / "gcloud.args")[-1]
    pod["env"]["JAX_COMPILATION_CACHE_DIR"] = "/cache on the vm"  # set on the VM: kept
    run_on_vm(pod, command)
    assert recorded(pod["tmp"] / "brain-jax.args.env") == [str(repo), "/cache on the vm"]


def test_missing_arguments_print_the_usage(pod):
    p = launch(pod, "my-tpu", "us-central2-b", "configs/vit_cls.py")
    assert p.returncode == 2 and "usage:" in p.stderr
    assert not (pod["tmp"] / "gcloud.args").exists()  # gcloud never ran
