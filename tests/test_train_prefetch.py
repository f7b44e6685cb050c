"""DevicePrefetch: batches ahead of the step on a thread, the data position of the consumed ones, clean close."""
from __future__ import annotations

import threading
import time

import pytest

from brain_jax.train.data import DevicePrefetch


class _Counting:
    """Batches 0, 1, 2, ... with a step-like state; records how far the producer has read."""

    def __init__(self, stop_at=None, fail_at=None):
        self.pos, self.stop_at, self.fail_at = 0, stop_at, fail_at

    def __next__(self):
        if self.pos == self.stop_at:
            raise StopIteration
        if self.pos == self.fail_at:
            raise OSError("disk gone")
        self.pos += 1
        return {"x": self.pos - 1}

    def get_state(self):
        return {"step": self.pos}

    def set_state(self, state):
        self.pos = int(state["step"])


def test_state_is_that_of_the_consumed_batches_not_the_prefetched_ones():
    inner = _Counting()
    put_threads = set()

    def put(b):
        put_threads.add(threading.current_thread().name)
        return b["x"] * 10

    pf = DevicePrefetch(inner, put, depth=2)
    pf.set_state({"step": 5})
    assert pf.get_state() == {"step": 5}
    assert next(pf) == 50 and next(pf) == 60
    deadline = time.time() + 5
    while inner.pos < 9 and time.time() < deadline:  # the thread runs ahead: 2 consumed + 2 queued + 1 in hand
        time.sleep(0.01)
    assert inner.pos >= 8
    assert pf.get_state() == {"step": 7}  # a checkpoint now resumes at the next unconsumed batch
    assert put_threads == {"brain-jax-prefetch"}
    pf.close()
    assert not any(t.name == "brain-jax-prefetch" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="after batches were fetched"):
        pf.set_state({"step": 0})


def test_end_and_errors_reach_the_consumer():
    pf = DevicePrefetch(_Counting(stop_at=2), lambda b: b, depth=1)
    assert [b["x"] for b in pf] == [0, 1]
    pf.close()
    pf = DevicePrefetch(_Counting(fail_at=1), lambda b: b, depth=3)
    assert next(pf)["x"] == 0
    with pytest.raises(OSError, match="disk gone"):
        next(pf)
    pf.close()
    with pytest.raises(ValueError, match="depth"):
        DevicePrefetch(_Counting(), lambda b: b, depth=0)
