"""Metric sinks of a training run: the workdir's ``metrics.jsonl`` and TensorBoard events."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from tensorboardX import SummaryWriter

from brain_jax import workdir


class MetricWriter:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard; a no-op on processes other than 0."""

    def __init__(self, wd: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.workdir = Path(wd)
        self._tb = SummaryWriter(str(self.workdir / workdir.TENSORBOARD)) if enabled and tensorboard else None

    def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = workdir.log_row(step, split, scalars)
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "split") and not isinstance(v, str):  # NaN/Inf stay out of TensorBoard
                    self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
        workdir.append_log(self.workdir, row)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
