"""Deterministic fault points for testing crash safety, armed by the ``BRAIN_JAX_FAULT`` environment variable.

Unset (the normal case) nothing happens. Set, it names the faults a training process injects into itself,
comma-separated, each ``NAME=VALUE`` or ``NAME=VALUE@RANK`` (only on process RANK)::

    kill_after_step=N        SIGKILL once step N's work (log, checkpoint, eval) is done
    term_after_step=N        SIGTERM to itself after step N (a preemption that reaches this process only)
    kill_in_checkpoint=N     SIGKILL inside checkpoint N's write: every file written, the commit not done
    enospc_in_checkpoint=N   checkpoint N's write fails with ENOSPC (no space left on device)
    kill_in_log=N            SIGKILL half-way through writing metrics.jsonl's row for step N
    step_delay=SECONDS       sleep after every step (gives a test time to signal a running job)

e.g. ``BRAIN_JAX_FAULT=kill_in_checkpoint=4,kill_after_step=3@1``. A bad value is a ValueError naming it.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
import time

import jax

ENV = "BRAIN_JAX_FAULT"
STEP_POINTS = ("kill_after_step", "term_after_step", "kill_in_checkpoint", "enospc_in_checkpoint", "kill_in_log")
POINTS = (*STEP_POINTS, "step_delay")


def parse(spec: str) -> dict[str, tuple[float, int | None]]:
    """``"kill_in_log=5,step_delay=0.2@1"`` -> {name: (value, rank or None)}; ValueError on anything else."""
    out: dict[str, tuple[float, int | None]] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, rest = item.partition("=")
        text, _, rank = rest.partition("@")
        try:
            parsed = (float(text) if name == "step_delay" else int(text), int(rank) if rank else None)
        except ValueError:
            parsed = None
        if not sep or name not in POINTS or parsed is None:
            raise ValueError(f"{ENV}={spec!r}: bad item {item!r}; expected NAME=VALUE[@RANK] with NAME one of "
                             f"{', '.join(POINTS)}")
        out[name] = parsed
    return out


def _armed() -> dict[str, tuple[float, int | None]]:
    return parse(os.environ.get(ENV, ""))


def value(name: str) -> float | None:
    """The armed value of fault ``name`` on this process, or None."""
    got = _armed().get(name)
    if got is None or (got[1] is not None and got[1] != jax.process_index()):
        return None
    return got[0]


def at(name: str, step: int) -> bool:
    """Whether step fault ``name`` is armed for ``step`` on this process."""
    return os.environ.get(ENV) is not None and value(name) == step


def any_armed(*names: str) -> bool:
    return bool(os.environ.get(ENV)) and any(n in _armed() for n in names)


def kill(reason: str) -> None:
    """SIGKILL this process (no clean-up, no atexit, no flush beyond this line): a crash, a node loss."""
    print(f"{ENV}: SIGKILL {reason}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(step: int) -> None:
    """The between-steps fault points: called once step ``step``'s work is done."""
    if not os.environ.get(ENV):
        return
    if at("kill_after_step", step):
        kill(f"after step {step}")
    if at("term_after_step", step):
        print(f"{ENV}: SIGTERM after step {step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    delay = value("step_delay")
    if delay:
        time.sleep(delay)


def in_checkpoint(step: int, directory: str) -> None:
    """Called when checkpoint ``step``'s files are all written and its commit is next."""
    if at("kill_in_checkpoint", step):
        kill(f"in the middle of writing checkpoint {step} ({directory}: files written, commit not done)")
    if at("enospc_in_checkpoint", step):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), directory)
