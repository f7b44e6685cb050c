"""Start-up of the CLI: the persistent compilation cache (where it lives, that a second ``predict`` compiles
nothing, that ``--no-compile-cache`` keeps nothing) and that ``predict`` imports no TensorFlow."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from brain_jax.app import compile_cache
from brain_jax.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_predict_startup as startup  # noqa: E402


def test_cache_folder_precedence(monkeypatch, tmp_path):
    for var in (compile_cache.ENV, "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.resolve() == tmp_path / "home" / ".cache" / "brain-jax" / "xla"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve() == tmp_path / "xdg" / "brain-jax" / "xla"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compile_cache.resolve() == tmp_path / "jax"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.resolve() == tmp_path / "env"
    assert compile_cache.resolve(str(tmp_path / "opt")) == tmp_path / "opt"
    assert compile_cache.resolve(str(tmp_path / "opt"), disabled=True) is None
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.resolve() is None


def test_every_verb_takes_the_cache_options(tmp_path):
    parser = build_parser()
    for argv in (["demo"], ["predict", "--workdir", "w", "x.png"], ["eval", "--config", "c", "--workdir", "w"],
                 ["train", "--config", "c", "--workdir", "w"], ["report", "--workdir", "w"],
                 ["convert", "--out", "o"], ["data", "build", "x", "--data-dir", "d"]):
        args = parser.parse_args([*argv, "--compile-cache", str(tmp_path)])
        assert args.compile_cache == str(tmp_path) and not args.no_compile_cache
        assert parser.parse_args([*argv, "--no-compile-cache"]).no_compile_cache


def test_an_unusable_cache_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"compilation cache folder .*a_file.*--no-compile-cache"):
        compile_cache.configure(blocker / "xla")


@pytest.mark.slow
def test_second_predict_compiles_nothing_and_imports_no_tensorflow(tmp_path):
    """Three ``brain-jax predict`` processes on one workdir: the first fills an empty cache, the second
    loads every program from it, and one with --no-compile-cache neither reads nor writes it."""
    startup.make_workdir(tmp_path / "wd", "test", 32)
    startup.make_image(tmp_path / "scan.png", 64)
    cache = tmp_path / "cache"

    def run(name: str, **kw) -> dict:
        return startup.run_predict(tmp_path / "wd", tmp_path / "scan.png", tmp_path / name, cache, **kw)

    cold = run("cold")
    entries = sorted(p.name for p in cache.iterdir())
    assert cold["compiled"] > 0 and cold["cache_hits"] == 0
    assert len(entries) >= cold["compiled"] // 2, entries  # (JAX keeps an entry and an access time per program)
    warm = run("warm")
    assert warm["programs"] == cold["programs"] and warm["compiled"] == 0 and warm["cache_hits"] == warm["programs"]
    assert sorted(p.name for p in cache.iterdir()) == entries  # read, nothing new written
    probabilities = lambda name: json.loads((tmp_path / name / "predictions.json").read_text())["predictions"]  # noqa: E731
    assert probabilities("warm") == probabilities("cold")  # the cached programs compute the same numbers
    off = run("off", disabled=True)
    assert off["cache_hits"] == 0 and off["compiled"] == cold["programs"]
    assert sorted(p.name for p in cache.iterdir()) == entries
    for res in (cold, warm, off):
        assert res["rc"] == 0 and res["tensorflow"] == [], res
