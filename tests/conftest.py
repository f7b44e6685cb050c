"""Test set-up: 8 fake CPU devices and fp32-exact matmuls, configured before JAX is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache(tmp_path_factory):
    """The CLI's persistent compilation cache (and that of the processes tests start) in a temporary
    folder, never the user's own."""
    os.environ["BRAIN_JAX_COMPILATION_CACHE"] = str(tmp_path_factory.mktemp("xla_cache"))
    yield


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session")
def tiny_phantoms(tmp_path_factory):
    """A data dir holding brain_phantoms/tiny (16 patients x 2 slices), built once per test process.
    Shared: tests read it and never write into it."""
    import input_pipeline
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    d = tmp_path_factory.mktemp("tiny_phantoms")
    input_pipeline.build_dataset("brain_phantoms", d, builder_config="tiny")
    return d


@pytest.fixture
def spec_builds(monkeypatch) -> list[str]:
    """Records the ``where`` of every ``RunSpec.from_config`` call while a test runs (a verb builds one)."""
    from brain_jax.train.spec import RunSpec

    calls: list[str] = []
    original = RunSpec.from_config.__func__

    def counting(cls, config, *, where="config"):
        calls.append(where)
        return original(cls, config, where=where)

    monkeypatch.setattr(RunSpec, "from_config", classmethod(counting))
    return calls
