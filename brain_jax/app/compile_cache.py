"""The persistent XLA compilation cache every ``brain-jax`` verb uses: a second ``eval`` or ``predict`` of a
workdir loads its compiled programs from disk instead of compiling them again.

Where it lives, first match wins: ``--no-compile-cache`` (off), ``--compile-cache DIR``, the
``BRAIN_JAX_COMPILATION_CACHE`` environment variable (a folder, or ``off``), JAX's own
``JAX_COMPILATION_CACHE_DIR``, else the user's cache folder: ``$XDG_CACHE_HOME/brain-jax/xla``
(``~/.cache/brain-jax/xla`` when XDG_CACHE_HOME is unset). JAX treats the cache as trusted code: keep
it in a folder only you can write to.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "BRAIN_JAX_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false")


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/brain-jax/xla``, or ``~/.cache/brain-jax/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "brain-jax" / "xla"


def resolve(option: str | None = None, disabled: bool = False) -> Path | None:
    """The cache folder for ``--compile-cache option`` / ``--no-compile-cache``, or None when it is off."""
    if disabled:
        return None
    if option:
        return Path(option).expanduser()
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in OFF or not env.strip() else Path(env).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    return default_dir()


def configure(path: Path | None) -> None:
    """Point JAX's persistent cache at ``path`` (created if missing) and cache every program, or turn it off.

    Every program is kept, not only those compiling for over a second (JAX's default): a CPU run
    compiles many sub-second programs, and together they are most of ``predict``'s start-up.
    """
    import jax

    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if path == default_dir():  # e.g. a read-only home: run uncached rather than not at all
            print(f"brain-jax: no compilation cache ({path}: {e.strerror})", file=sys.stderr)
            jax.config.update("jax_enable_compilation_cache", False)
            return
        raise ValueError(f"compilation cache folder {path}: cannot create it ({e.strerror}); pass --compile-cache "
                         f"DIR, set {ENV}, or --no-compile-cache") from None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
