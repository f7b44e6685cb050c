"""Orbax checkpoints of a workdir: periodic (``checkpoints/``) and best-by-validation (``best/``).

Each checkpoint holds the train state (params, batch stats, optimizer state, EMA, step — arrays only)
and the data iterator position (JSON). ``load_weights`` reads a workdir's best (else latest) arrays for
``brain_jax.train.builders.load_model_from_workdir``.

Crash safety: orbax writes a step into a temporary folder and renames it into place last, so a process
killed mid-write leaves no step folder (its temporary one is removed by the next run). A committed step
whose files were later cut short or lost fails to restore: a resume then falls back to the newest step
that restores, warns naming the ones it skipped and moves them to ``damaged/`` (kept for inspection);
``load_weights`` (eval, predict, export) refuses it with one line naming the folder. A failed write
(a full disk) raises ``CheckpointWriteError``; the steps already committed stay loadable.
"""
from __future__ import annotations

import base64
import errno
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from brain_jax.train import faults
from brain_jax.workdir import BEST, CHECKPOINTS, DAMAGED, has_checkpoint  # noqa: F401 (re-exported)


class CheckpointWriteError(ValueError):
    """A checkpoint could not be written (e.g. no space left on device); committed steps are untouched."""


class CheckpointSkipped(UserWarning):
    """A resume skipped a damaged checkpoint step and fell back to an older one."""


def _encode_iter_state(state: Any) -> Any:
    """Iterator states are JSON-able dicts or bytes (grain); bytes travel base64-encoded."""
    if isinstance(state, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(state)).decode("ascii")}
    return {"__json__": state}


def _decode_iter_state(obj: Any) -> Any:
    if isinstance(obj, dict) and "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if isinstance(obj, dict) and "__json__" in obj:
        return obj["__json__"]
    return obj


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one short line (tensorstore's messages carry multi-line JSON specs)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _is_disk_full(error: BaseException) -> bool:
    # tensorstore reports ENOSPC as a ValueError whose text carries the OS error
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


class _FaultPointRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
    """orbax's write-then-rename commit with ``brain_jax.train.faults``' checkpoint points before the rename.

    Used only while such a fault is armed (tests): elsewhere orbax picks its own commit protocol (a commit
    file on Cloud Storage, where renames are not atomic).
    """

    async def finalize(self):
        final = self.get_final()
        if final.name.isdigit():  # the step folder, not one of its items
            faults.in_checkpoint(int(final.name), str(self.get()))
        await super().finalize()


class Checkpointer:
    """Two orbax managers under one workdir: the latest ``keep`` states and the single best one."""

    def __init__(self, workdir: str | Path, *, keep: int = 2, best_metric: str = "", best_mode: str = "max",
                 async_save: bool = True):
        self.workdir = Path(workdir).absolute()
        self.best_metric = best_metric
        # cleanup_tmp_directories: a process killed mid-write leaves a temporary step folder behind
        opts: dict[str, Any] = dict(enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
        if faults.any_armed("kill_in_checkpoint", "enospc_in_checkpoint"):
            opts["temporary_path_class"] = _FaultPointRename
        self.latest = ocp.CheckpointManager(
            self.workdir / CHECKPOINTS, options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts)
        )
        self.best = None
        if best_metric:
            self.best = ocp.CheckpointManager(
                self.workdir / BEST,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=lambda m: float(m[best_metric]), best_mode=best_mode, **opts
                ),
            )
        self._writing: int | None = None  # the step whose (asynchronous) write is in flight

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def _write_failed(self, step: int | None, error: BaseException) -> CheckpointWriteError:
        where = self.workdir / CHECKPOINTS
        kept = [s for s in self.latest.all_steps() if s != step]
        keeps = f"step {max(kept)} in {where} is kept and loadable" if kept else "no earlier checkpoint exists"
        cause = "no space left on device" if _is_disk_full(error) else _one_line(error)
        what = f"writing checkpoint step {step}" if step is not None else "writing a checkpoint"
        return CheckpointWriteError(f"{where}: {what} failed ({cause}); {keeps}. "
                                    "Free space (or fix the cause) and run the same command to resume.")

    def _guard(self, fn, step: int | None) -> Any:
        try:
            return fn()
        except (OSError, ValueError) as e:
            if isinstance(e, CheckpointWriteError):
                raise
            raise self._write_failed(step if step is not None else self._writing, e) from e

    def save(self, step: int, state: Any, iter_state: Any, *, force: bool = False) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(_encode_iter_state(iter_state))
        )
        # an earlier asynchronous write's failure surfaces here: it is reported under its own step
        self._guard(self.latest.wait_until_finished, None)
        self._writing = step
        self._guard(lambda: self.latest.save(step, args=args, force=force), step)

    def save_best(self, step: int, state: Any, iter_state: Any, metrics: dict[str, float]) -> None:
        if self.best is None or self.best_metric not in metrics:
            return
        value = metrics[self.best_metric]
        if value is None or not np.isfinite(value):
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(_encode_iter_state(iter_state))
        )
        self._guard(lambda: self.best.save(step, args=args, metrics={self.best_metric: float(value)}, force=True),
                    step)

    def restore_latest(self, abstract_state: Any) -> tuple[Any, Any, int] | None:
        """(state, iterator state, step) of the newest checkpoint that restores, or None when there is none.

        Steps newer than that one failed to restore (files cut short or missing): each is named in a
        ``CheckpointSkipped`` warning and moved to ``damaged/``. When every step fails (a damaged
        workdir, or a config whose shapes differ from the saved ones) nothing is moved and a ValueError
        lists each step's error.
        """
        steps = sorted(self.latest.all_steps(), reverse=True)
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                r = self.latest.restore(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                            data=ocp.args.JsonRestore()),
                )
                restored, reason = (r.state, _decode_iter_state(r.data), step), ""
            except (ValueError, OSError, KeyError, TypeError) as e:
                restored, reason = None, _one_line(e)
            if not _all_processes_agree(restored is not None):
                failed.append((step, reason or "failed to restore on another process"))
                continue
            if failed:
                self._set_aside(failed, step)
            return restored
        if failed:
            listing = "; ".join(f"step {s}: {why}" for s, why in failed)
            raise ValueError(f"{self.workdir / CHECKPOINTS}: no checkpoint could be restored, nothing was changed "
                             f"({listing}). If the config changed since these were written, use a fresh --workdir.")
        return None

    def _set_aside(self, failed: list[tuple[int, str]], restored_step: int) -> None:
        """Move steps that failed to restore out of orbax's way (a later save of the same step would fail)."""
        target = self.workdir / DAMAGED / CHECKPOINTS
        for step, why in failed:
            dest = target / (str(step) if not (target / str(step)).exists() else f"{step}-{time.time_ns()}")
            warnings.warn(f"{self.workdir / CHECKPOINTS / str(step)}: damaged checkpoint skipped ({why}); resuming "
                          f"from step {restored_step}; moved to {dest}", CheckpointSkipped, stacklevel=3)
            if jax.process_index() == 0:
                target.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self.workdir / CHECKPOINTS / str(step)), str(dest))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("brain_jax_damaged_checkpoints_moved")
        self.latest.reload()

    def wait(self) -> None:
        self._guard(self.latest.wait_until_finished, None)
        if self.best is not None:
            self._guard(self.best.wait_until_finished, None)

    def close(self) -> None:
        self.wait()
        self.latest.close()
        if self.best is not None:
            self.best.close()


def _all_processes_agree(ok: bool) -> bool:
    """Whether ``ok`` holds on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def committed_steps(directory: Path) -> list[int]:
    """Steps orbax finished writing under ``directory`` (it renames a step's folder into place last)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _reader() -> ocp.Checkpointer:
    handler = ocp.CompositeCheckpointHandler(
        state=ocp.StandardCheckpointHandler(), data=ocp.JsonCheckpointHandler(), metrics=ocp.JsonCheckpointHandler()
    )
    return ocp.Checkpointer(handler)


def _best_step(directory: Path, steps: list[int], mode: str) -> int:
    """The step whose saved metric is best (``best/`` keeps one, but a crash can leave two)."""
    if len(steps) == 1:
        return steps[0]
    values = {}
    for step in steps:
        metrics_file = directory / str(step) / "metrics" / "metrics"
        try:
            values[step] = float(next(iter(json.loads(metrics_file.read_text()).values())))
        except (OSError, ValueError, StopIteration):
            continue
    if not values:
        return steps[-1]
    pick = max if mode == "max" else min
    return pick(values, key=lambda s: (values[s], s))


def _restore_raw(directory: Path, best_mode: str = "max") -> tuple[dict, int] | None:
    """The saved train state onto this process's first device, whatever topology wrote it.

    Restoring without a target would ask for the writer's devices (a run of 2 processes cannot be read
    by 1 otherwise); the target is built from the checkpoint's own metadata (shapes, dtypes).
    """
    steps = committed_steps(directory)
    if not steps:
        return None
    step = _best_step(directory, steps, best_mode) if directory.name == BEST else steps[-1]
    reader = _reader()
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local) if hasattr(m, "shape") else m,
            reader.metadata(directory / str(step)).item_metadata["state"],
        )
        r = reader.restore(directory / str(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{directory / str(step)}: checkpoint step {step} is damaged or incomplete ({_one_line(e)}); nothing "
            "was loaded. `brain-jax train` on this workdir resumes from its newest complete checkpoint; delete "
            "this folder to use the workdir's other checkpoints."
        ) from e
    return r.state, step


def load_weights(workdir: str | Path, *, which: str = "best",
                 best_mode: str = "max") -> tuple[dict[str, np.ndarray], int, str]:
    """Flat ``{"params.<path>" | "batch_stats.<path>" | "ema.<path>": array}`` of a workdir checkpoint.

    ``which``: "best" (falls back to latest) or "latest". Returns (arrays, step, source dir).
    """
    wd = Path(workdir).absolute()  # orbax refuses relative checkpoint paths
    order = [BEST, CHECKPOINTS] if which == "best" else [CHECKPOINTS]
    for name in order:
        got = _restore_raw(wd / name, best_mode)
        if got is not None:
            raw, step = got
            flat = {}
            for key in ("params", "batch_stats", "ema"):
                if key in raw and raw[key] is not None:
                    for path, leaf in jax.tree_util.tree_flatten_with_path(raw[key])[0]:
                        flat[key + "." + ".".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
            return flat, int(step), str(wd / name)
    raise FileNotFoundError(f"{wd}: no checkpoint (expected {wd / BEST} or {wd / CHECKPOINTS}); train first")
