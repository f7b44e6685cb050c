"""Orbax checkpoints of a workdir: periodic (``checkpoints/``) and best-by-validation (``best/``).

Each checkpoint holds the train state (params, batch stats, optimizer state, EMA, step — arrays only)
and the data iterator position (JSON). ``load_model_from_workdir`` rebuilds the model from the saved
resolved config (``config.json``) and fills it with the best (else latest) weights.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
CONFIG_FILE = "config.json"


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
            self.workdir / LATEST_DIR, options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts)
        )
        self.best = None
        if best_metric:
            self.best = ocp.CheckpointManager(
                self.workdir / BEST_DIR,
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
        p.is_dir() and p.name.isdigit() for d in (wd / LATEST_DIR, wd / BEST_DIR) if d.is_dir() for p in d.iterdir()
    )


def _restore_raw(directory: Path) -> tuple[dict, int] | None:
    """The saved train state onto this process's first device, whatever topology wrote it.

    Restoring without a target would ask for the writer's devices (a run of 2 processes cannot be read
    by 1 otherwise); the target is built from the checkpoint's own metadata (shapes, dtypes).
    """
    if not directory.is_dir():
        return None
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    mgr = ocp.CheckpointManager(directory, item_handlers=handlers, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = mgr.best_step() if directory.name == BEST_DIR else mgr.latest_step()
        step = step if step is not None else mgr.latest_step()
        if step is None:
            return None
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local) if hasattr(m, "shape") else m,
            mgr.item_metadata(step)["state"],
        )
        r = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        return r.state, step
    finally:
        mgr.close()


def load_weights(workdir: str | Path, *, which: str = "best") -> tuple[dict[str, np.ndarray], int, str]:
    """Flat ``{"params.<path>" | "batch_stats.<path>" | "ema.<path>": array}`` of a workdir checkpoint.

    ``which``: "best" (falls back to latest) or "latest". Returns (arrays, step, source dir).
    """
    wd = Path(workdir).absolute()  # orbax refuses relative checkpoint paths
    order = [BEST_DIR, LATEST_DIR] if which == "best" else [LATEST_DIR]
    for name in order:
        got = _restore_raw(wd / name)
        if got is not None:
            raw, step = got
            flat = {}
            for key in ("params", "batch_stats", "ema"):
                if key in raw and raw[key] is not None:
                    for path, leaf in jax.tree_util.tree_flatten_with_path(raw[key])[0]:
                        flat[key + "." + ".".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
            return flat, int(step), str(wd / name)
    raise FileNotFoundError(f"{wd}: no checkpoint (expected {wd / BEST_DIR} or {wd / LATEST_DIR}); train first")


def load_model_from_workdir(workdir: str | Path, dtype: Any = jnp.float32, *, which: str = "best"):
    """The trained model of a workdir (best checkpoint, else latest), in eval mode.

    Rebuilt from the workdir's resolved ``config.json``; uses the EMA weights when the run kept them.
    """
    from brain_jax.convert.native import skeleton
    from brain_jax.train import builders
    from brain_jax.train.config import config_from_json

    wd = Path(workdir)
    cfg_path = wd / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{wd}: no {CONFIG_FILE}; not a brain-jax training workdir")
    config = config_from_json(cfg_path)
    model_json = wd / builders.MODEL_FILE
    # Abstract build (no random init: every weight is overwritten below, and a missing one is an error).
    if model_json.is_file():
        model = skeleton(lambda: builders.model_from_json(model_json, dtype))
    else:
        model = skeleton(lambda: builders.create_model(config, dtype=dtype, with_init=False))
    flat, step, src = load_weights(wd, which=which)
    use_ema = any(k.startswith("ema.") for k in flat)
    from flax import nnx

    from brain_jax.convert.core import model_variables

    variables = model_variables(model)
    problems = []
    for path, var in variables.items():
        kind = "batch_stats" if isinstance(var, nnx.BatchStat) else ("ema" if use_ema else "params")
        key = f"{kind}.{path}"
        if key not in flat:
            problems.append(f"missing {key}")
            continue
        arr = flat[key]
        if tuple(arr.shape) != tuple(var.get_value().shape):
            problems.append(f"{key}: checkpoint {tuple(arr.shape)} vs model {tuple(var.get_value().shape)}")
            continue
        var.set_value(jnp.asarray(arr, var.get_value().dtype))
    if problems:
        raise ValueError(f"{src} (step {step}) does not match the model of {cfg_path}:\n  " + "\n  ".join(problems))
    model.eval()
    return model
