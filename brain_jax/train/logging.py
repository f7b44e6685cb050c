"""Metric sinks of a workdir: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

METRICS_JSONL = "metrics.jsonl"


class MetricWriter:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard; a no-op on processes other than 0."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(workdir) / METRICS_JSONL
        self._tb = None
        if enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
            except ImportError:  # tensorboardX is a dependency; keep training if it is broken
                self._tb = None

    def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": int(step), "split": split}
        for k, v in scalars.items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(f):
                row[k] = str(f)  # "nan" / "inf": visible in the log, skipped in TensorBoard
                continue
            row[k] = int(f) if isinstance(v, int) and not isinstance(v, bool) else f
            if self._tb is not None:
                self._tb.add_scalar(f"{split}/{k}", f, int(step))
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
