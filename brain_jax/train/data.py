"""What the trainer needs from the input pipeline, and the pipeline's loaders behind it."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Protocol

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


class DevicePrefetch:
    """Training batches put on the devices ahead of the step by one host thread (``depth`` batches ahead),
    so that gathering and transfer overlap the step.

    ``get_state`` is the data position after the last batch handed to the caller (the batches the step
    consumed), never the prefetched ones, so a checkpoint resumes exactly. ``close`` stops and joins the
    thread (after a SIGTERM stop, an error, or the end). An error in the thread is raised by ``next``.
    """

    _END = object()

    def __init__(self, iterator: ResumableIterator, put: Callable[[dict[str, np.ndarray]], Any], depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._it, self._put, self._depth = iterator, put, depth
        self._state = iterator.get_state()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def set_state(self, state: Any) -> None:
        if self._thread is not None:
            raise RuntimeError("DevicePrefetch.set_state after batches were fetched")
        self._it.set_state(state)
        self._state = self._it.get_state()

    def get_state(self) -> Any:
        return self._state

    def _offer(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    host = next(self._it)
                except StopIteration:
                    self._offer(self._END)
                    return
                if not self._offer((self._put(host), self._it.get_state())):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._offer(e)

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self._depth)
            self._thread = threading.Thread(target=self._run, name="brain-jax-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.1)
