"""What the trainer needs from the input pipeline, and the pipeline's loaders behind it."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol

import jax
import ml_collections
import numpy as np

import input_pipeline
from brain_jax.train.spec import RunSpec


class ResumableIterator(Protocol):
    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> Any: ...
    def set_state(self, state: Any) -> None: ...


class DataSource(Protocol):
    """The trainer's view of a dataset (tests pass a fake)."""

    task: str
    def steps_per_epoch(self) -> int: ...
    def train_iterator(self) -> ResumableIterator: ...
    def eval_batches(self, split: str) -> Iterable[dict[str, np.ndarray]]: ...


class PipelineData:
    """``input_pipeline`` loaders for a config (datasets must be built; FileNotFoundError says how).

    Labels map to the head's classes of ``spec`` (the run's; resolved from ``config`` when not given).
    """

    def __init__(self, config: ml_collections.ConfigDict, spec: RunSpec | None = None):
        self.config = config
        self.data = config.data
        spec = spec if spec is not None else RunSpec.from_config(config)
        self.task = spec.task
        self._classes = spec.class_names if spec.task == "classification" else None
        self._train_loader = None

    def _train(self):
        if self._train_loader is None:
            self._train_loader = input_pipeline.make_loader(
                self.data, self.data.train_split, global_batch_size=int(self.config.batch_size), train=True,
                seed=int(self.config.seed), class_names=self._classes,
            )
        return self._train_loader

    def steps_per_epoch(self) -> int:
        return int(self._train().steps_per_epoch)

    def train_iterator(self) -> Iterator:
        # state = the step: resumes exactly with another process or loader-worker count
        return self._train().resumable()

    def eval_batches(self, split: str) -> Iterable[dict[str, np.ndarray]]:
        bs = int(self.config.eval_batch_size)
        bs = max(bs - bs % jax.process_count(), jax.process_count())
        return input_pipeline.make_loader(self.data, split, global_batch_size=bs, train=False,
                                          seed=int(self.config.seed), class_names=self._classes)
