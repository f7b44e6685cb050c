"""``train_and_evaluate(config, workdir)``: the training loop shared by classification and segmentation."""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from brain_jax.train import engine, faults, optim
from brain_jax.train.checkpoints import Checkpointer, abstract_like
from brain_jax.train.data import DataSource, DevicePrefetch, PipelineData
from brain_jax.train.evaluate import run_split, scalars
from brain_jax.train.metric_log import MetricWriter
from brain_jax.train.model_factory import create_model, fcmae_config
from brain_jax.train.spec import RunSpec, check_workdir
from brain_jax.workdir import write_config, write_model_json
from input_pipeline.augment import StepInputs

# A hook is called after every step as hook(step, state, metrics) (tests use it to inject signals).
Hook = Callable[[int, Any, Any], None]
# After a SIGTERM stop whose checkpoint every process has saved, process 0 writes the step to the file
# this variable names: a launcher's proof of a clean stop, where exit statuses cannot tell one (a process
# killed by SIGTERM and one that saved and exited 143 look alike).
STOPPED_FILE_ENV = "BRAIN_JAX_STOPPED_FILE"


class TrainingDiverged(ValueError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- distributed set-up


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """``jax.distributed.initialize`` when more than one process is configured (config or env)."""
    dist = config.get("distributed")
    num = int(dist.num_processes) if dist is not None else 1
    env_num = int(os.environ.get("BRAIN_JAX_NUM_PROCESSES", "0") or 0)
    num = max(num, env_num)
    auto = dist is not None and bool(dist.get("auto", False))
    if num <= 1 and not auto:
        return
    if jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    addr = (dist.coordinator_address if dist is not None else "") or os.environ.get("BRAIN_JAX_COORDINATOR", "")
    pid = int(dist.process_id) if dist is not None else -1
    if pid < 0 and os.environ.get("BRAIN_JAX_PROCESS_ID"):
        pid = int(os.environ["BRAIN_JAX_PROCESS_ID"])
    if num > 1:
        kwargs["num_processes"] = num
    if addr:
        kwargs["coordinator_address"] = addr
    if pid >= 0:
        kwargs["process_id"] = pid
    if dist is not None and dist.get("local_device_ids", ""):
        kwargs["local_device_ids"] = [int(x) for x in str(dist.local_device_ids).split(",")]
    # With nothing given (TPU pods, SLURM), jax detects the cluster itself.
    jax.distributed.initialize(**kwargs)


# --------------------------------------------------------------------------- helpers


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return max(1, int(math.ceil(float(config.num_epochs) * steps_per_epoch)))


def _every(value: int, steps_per_epoch: int) -> int:
    """Interval in steps: ``value`` > 0, else once per epoch; 0 stays 0 (never)."""
    if value < 0:
        return max(1, steps_per_epoch)
    return int(value)


def lr_scales_for(parts: engine.ModelParts, layer_decay: float) -> Any | None:
    if layer_decay >= 1.0 or layer_decay <= 0.0:
        return None
    paths = engine.tree_paths(parts.params)
    scales = optim.layer_decay_scales(paths, parts.head_paths, layer_decay)
    return engine.tree_from_paths(parts.params, scales)


class _SignalFlag:
    """Remembers SIGTERM (preemption) so the loop can checkpoint and exit between steps.

    The flag is this process's only: ``_StopVote`` turns the flags of all processes into one decision.
    """

    def __init__(self, enabled: bool):
        self.received = False
        self._old = None
        if enabled:
            try:
                self._old = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not in the main thread
                self._old = None

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class _StopVote:
    """All processes agree on the step at which they stop, whichever of them got the signal, and when.

    Every step each process contributes its flag to a max-reduction over the mesh (a tiny collective
    jitted beside the train step) and reads the reduction dispatched at the previous step, which every
    process reads at the same step: the stop lands one step after the first signal, on every process.
    Reading one step late never waits for the step just dispatched, so the host keeps its lead over the
    devices. A process stopping on its own would leave the others waiting at the next collective.
    """

    def __init__(self, mesh: jax.sharding.Mesh):
        self._sharding = engine.batch_sharding(mesh)
        self._local = engine.local_batch_multiple(mesh)  # this process's devices in the mesh
        self._reduce = jax.jit(jnp.max, out_shardings=engine.replicated(mesh))
        self._pending: jax.Array | None = None

    def vote(self, flag: bool) -> bool:
        """Cast this step's flag; True when the vote cast at the previous step says stop."""
        mine = np.full((self._local,), int(flag), np.int32)
        now = self._reduce(jax.make_array_from_process_local_data(self._sharding, mine))
        previous, self._pending = self._pending, now
        # replicated: the local copy is the global value, on every process
        return previous is not None and bool(np.asarray(previous.addressable_data(0)))


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, leave=True)


def _mean_metrics(rows: list[dict]) -> dict[str, float]:
    if not rows:
        return {}
    host = jax.device_get(rows)
    keys = host[0].keys()
    return {k: float(np.mean([float(r[k]) for r in host])) for k in keys}


# --------------------------------------------------------------------------- the loop


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    data: DataSource | None = None,
    model: nnx.Module | None = None,
    hooks: Sequence[Hook] = (),
    handle_sigterm: bool = True,
) -> dict[str, Any]:
    """Train (resuming from the workdir's latest checkpoint), evaluating and checkpointing as configured.

    SIGTERM on any process (preemption) stops every process at the same step, one step after the first
    signal, with a checkpoint saved there. A resume restores the newest checkpoint that loads (damaged
    ones are skipped with a warning) and drops log rows of later steps, so each step is logged once.

    Returns ``{"status": "done" | "preempted", "step": int, "eval": {...last eval summary...}}``.
    Raises TrainingDiverged on a non-finite loss (the last good checkpoint stays), CheckpointWriteError
    when a checkpoint cannot be written (e.g. a full disk; earlier checkpoints stay loadable), ValueError /
    FileNotFoundError on bad configs, workdirs or missing datasets, before writing anything.
    """
    # ---- set-up and checks (nothing is written until all pass)
    maybe_initialize_distributed(config)
    workdir = Path(workdir).absolute()
    spec = RunSpec.from_config(config)  # the run's facts, validated once: nothing is written before
    resume = check_workdir(spec, workdir)
    if spec.task == "fcmae":
        fcmae_config(spec)  # a bad fcmae.* / data.image_size fails here, before the data is opened
    data = data if data is not None else PipelineData(config, spec)
    steps_per_epoch = data.steps_per_epoch()  # a missing dataset fails here
    total_steps = total_train_steps(config, steps_per_epoch)
    if model is None:
        model = create_model(spec, with_init=not resume)
    parts = engine.split_model(model)
    opt_cfg = config.optimizer
    warmup = opt_cfg.warmup_steps if opt_cfg.warmup_steps >= 0 else int(round(opt_cfg.warmup_epochs * steps_per_epoch))
    opt_view = ml_collections.ConfigDict(dict(opt_cfg.to_dict(), warmup_steps=int(warmup)))
    tx, schedule = optim.make_optimizer(opt_view, total_steps, lr_scales=lr_scales_for(parts, opt_cfg.layer_decay))
    lc = engine.LossConfig.from_config(spec.task, config.loss,
                                       mask_ratio=float(getattr(getattr(model, "config", None), "mask_ratio", 0.0)))

    mesh = engine.make_mesh(int(config.mesh.num_devices))
    ema = float(opt_cfg.ema_decay) > 0
    state = engine.replicate(engine.init_train_state(parts, tx, ema=ema), mesh)
    rest = engine.replicate(parts.rest, mesh)
    is_main = jax.process_index() == 0

    ckpt = Checkpointer(workdir, keep=int(config.keep_checkpoints), best_metric=str(config.best_metric),
                        best_mode=str(config.best_mode), async_save=bool(config.async_checkpoint))
    multiple = engine.local_batch_multiple(mesh)
    # the host gathers uint8 batches; a thread puts the next ones on the devices while the step runs
    train_it = DevicePrefetch(data.train_iterator(),
                              lambda host: engine.to_global(engine.pad_local_batch(host, multiple), mesh),
                              depth=max(1, int(config.get("prefetch_batches", 2))))
    start = 0
    if resume:
        restored = ckpt.restore_latest(abstract_like(state, engine.replicated(mesh)))
        if restored is not None:
            state, it_state, start = restored
            train_it.set_state(it_state)
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        write_config(workdir, config)
        if hasattr(model, "config"):
            write_model_json(workdir, model.config.model_type, dataclasses.asdict(model.config))
    # rows and events logged after the restored step (before a crash) are dropped: they are logged again
    writer = MetricWriter(workdir, enabled=is_main, resumed_from=start if start else None)

    train_inputs = StepInputs.from_data_config(config.data, int(config.seed), train=True)
    train_step = engine.jit_train_step(
        engine.make_train_step(parts, tx, schedule, lc, seed=int(config.seed), inputs=train_inputs,
                               ema_decay=float(opt_cfg.ema_decay)),
        mesh, state,
    )
    eval_step = jax.jit(engine.make_eval_step(parts, spec.task, dataclasses.replace(train_inputs, augment=None),
                                              seed=int(config.seed), mask_ratio=lc.mask_ratio))
    log_every = max(1, int(config.log_every_steps))
    eval_every = _every(int(config.eval_every_steps), steps_per_epoch)
    ckpt_every = _every(int(config.checkpoint_every_steps), steps_per_epoch)
    eval_split = str(config.data.eval_split or "")

    def run_eval(step: int) -> dict[str, Any]:
        params = state["ema"] if "ema" in state else state["params"]
        summary = run_split(eval_step, params, state["batch_stats"], rest, data.eval_batches(eval_split),
                            mesh=mesh, task=spec.task, class_names=spec.class_names).summary
        writer.write(step, "eval", scalars(summary))
        return summary

    def check_finite(step: int) -> None:
        bad = int(jax.device_get(state["bad_step"]))
        if bad >= 0:
            ckpt.wait()
            last = ckpt.latest_step()
            where = f"the last good checkpoint (step {last}) is kept in {workdir}" if last is not None else \
                "no checkpoint had been saved yet"
            raise TrainingDiverged(
                f"loss became NaN/Inf at step {bad + 1}; stopped at step {step}; {where}. Lower "
                "optimizer.lr, enable optimizer.grad_clip_norm, or use model.dtype=float32."
            )

    # ---- loop
    flag = _SignalFlag(handle_sigterm)
    votes = _StopVote(mesh)
    bar = _progress(total_steps, start, bool(config.progress_bar) and is_main)
    status, last_eval, pending, step = "done", {}, [], start
    t_log, n_log, waited = time.perf_counter(), 0, 0.0
    failed = True
    try:
        for step in range(start + 1, total_steps + 1):
            t_data = time.perf_counter()
            batch = next(train_it)
            waited += time.perf_counter() - t_data
            state, metrics = train_step(state, batch, rest)
            pending.append(metrics)
            n_log += int(config.batch_size)
            for hook in hooks:
                hook(step, state, metrics)
            if bar is not None:
                bar.update(1)
            if step % log_every == 0 or step == total_steps:
                row = _mean_metrics(pending)
                pending = []
                dt = time.perf_counter() - t_log
                row["images_per_s"] = n_log / dt if dt > 0 else float("nan")
                # share of the wall time spent in the input pipeline (host-bound when high on an accelerator;
                # on a CPU backend the step runs on the same cores meanwhile, so there it overstates the wait)
                row["data_wait_frac"] = waited / dt if dt > 0 else float("nan")
                t_log, n_log, waited = time.perf_counter(), 0, 0.0
                writer.write(step, "train", row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
                check_finite(step)
            do_eval = bool(eval_split) and ((eval_every > 0 and step % eval_every == 0) or step == total_steps)
            do_ckpt = (ckpt_every > 0 and step % ckpt_every == 0) or step == total_steps
            if do_eval or do_ckpt:
                check_finite(step)
            if do_ckpt:
                ckpt.save(step, state, train_it.get_state())
            if do_eval:
                last_eval = run_eval(step)
                ckpt.save_best(step, state, train_it.get_state(), last_eval)
            faults.after_step(step)
            # After this step's own eval and checkpoint, so that a stop never skips them (a resumed run
            # starts at the next step); on the last step the run simply ends.
            if votes.vote(flag.received) and step < total_steps:
                check_finite(step)
                if not do_ckpt:
                    ckpt.save(step, state, train_it.get_state(), force=True)
                ckpt.wait()
                status = "preempted"
                seen = "received here" if flag.received else "received by another process"
                print(f"SIGTERM ({seen}): process {jax.process_index()} saved checkpoint at step {step} in "
                      f"{workdir}; exiting", flush=True)
                if is_main and os.environ.get(STOPPED_FILE_ENV):
                    Path(os.environ[STOPPED_FILE_ENV]).write_text(f"{step}\n")
                break
        failed = False
    finally:
        train_it.close()  # joins the prefetch thread (after a SIGTERM stop too)
        flag.restore()
        if bar is not None:
            bar.close()
        errors = []
        for close in (ckpt.close, writer.close):
            try:
                close()
            except Exception as e:  # after a failure (a full disk) closing fails too: the first error is raised
                errors.append(e)
        if errors and not failed:
            raise errors[0]
    return {"status": status, "step": step, "total_steps": total_steps, "eval": last_eval, "state": state}

