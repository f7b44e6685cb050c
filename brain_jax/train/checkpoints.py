"""Orbax checkpoints of a workdir: periodic (``checkpoints/``) and best-by-validation (``best/``).

Each checkpoint holds the train state (params, batch stats, optimizer state, EMA, step — arrays only)
and the data iterator position (JSON). ``load_weights`` reads a workdir's best (else latest) arrays for
``brain_jax.train.builders.load_model_from_workdir``.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from brain_jax.workdir import BEST, CHECKPOINTS


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


class Checkpointer:
    """Two orbax managers under one workdir: the latest ``keep`` states and the single best one."""

    def __init__(self, workdir: str | Path, *, keep: int = 2, best_metric: str = "", best_mode: str = "max",
                 async_save: bool = True):
        self.workdir = Path(workdir).absolute()
        self.best_metric = best_metric
        opts = dict(enable_async_checkpointing=async_save, create=True)
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

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, iter_state: Any, *, force: bool = False) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(_encode_iter_state(iter_state))
        )
        self.latest.save(step, args=args, force=force)

    def save_best(self, step: int, state: Any, iter_state: Any, metrics: dict[str, float]) -> None:
        if self.best is None or self.best_metric not in metrics:
            return
        value = metrics[self.best_metric]
        if value is None or not np.isfinite(value):
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(_encode_iter_state(iter_state))
        )
        self.best.save(step, args=args, metrics={self.best_metric: float(value)}, force=True)

    def restore_latest(self, abstract_state: Any) -> tuple[Any, Any, int] | None:
        """(state, iterator state, step) of the latest checkpoint, or None when there is none."""
        step = self.latest.latest_step()
        if step is None:
            return None
        r = self.latest.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()),
        )
        return r.state, _decode_iter_state(r.data), step

    def wait(self) -> None:
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        if self.best is not None:
            self.best.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def has_checkpoint(workdir: str | Path) -> bool:
    wd = Path(workdir)
    return any(
        p.is_dir() and p.name.isdigit() for d in (wd / CHECKPOINTS, wd / BEST) if d.is_dir() for p in d.iterdir()
    )


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
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local) if hasattr(m, "shape") else m,
        reader.metadata(directory / str(step)).item_metadata["state"],
    )
    r = reader.restore(directory / str(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
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
