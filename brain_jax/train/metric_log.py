"""Metric sinks of a training run: the workdir's ``metrics.jsonl`` and TensorBoard events."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from brain_jax import workdir
from brain_jax.train import faults


class LogWriteError(ValueError):
    """metrics.jsonl could not be appended to (e.g. no space left on device)."""


class MetricWriter:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard; a no-op on processes other than 0.

    ``resumed_from``: the step a resumed run restored. Rows of later steps (logged before the crash or
    preemption, and about to be logged again) and a torn last line are dropped from metrics.jsonl, and
    TensorBoard hides its events from those steps, so every step is logged once.
    """

    def __init__(self, wd: str | Path, *, enabled: bool = True, tensorboard: bool = True,
                 resumed_from: int | None = None):
        self.enabled = enabled
        self.workdir = Path(wd)
        if enabled:
            workdir.truncate_log(self.workdir, resumed_from or 0)
        purge = None if resumed_from is None else resumed_from + 1
        self._tb = None
        if enabled and tensorboard:
            # start-up: tensorboardX imports torch when installed (~1.4 s); only training writes events
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / workdir.TENSORBOARD), purge_step=purge)

    def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = workdir.log_row(step, split, scalars)
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "split") and not isinstance(v, str):  # NaN/Inf stay out of TensorBoard
                    self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
        try:
            if faults.at("kill_in_log", step):
                line = workdir.log_line(row)
                with open(self.workdir / workdir.METRICS_LOG, "a") as f:
                    f.write(line[: len(line) // 2])
                faults.kill(f"half-way through writing step {step}'s row of {workdir.METRICS_LOG}")
            workdir.append_log(self.workdir, row)
        except OSError as e:
            raise LogWriteError(f"{self.workdir / workdir.METRICS_LOG}: cannot append step {step}'s row "
                                f"({e.strerror or e}); checkpoints already written are kept") from e

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            tb, self._tb = self._tb, None
            try:
                tb.close()
            except OSError as e:
                raise LogWriteError(f"{self.workdir / workdir.TENSORBOARD}: cannot write TensorBoard events "
                                    f"({e.strerror or e})") from e
