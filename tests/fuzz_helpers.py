"""What the fuzz tests share: a worker process that runs one reader call at a time under a deadline,
byte-level mutation strategies, and the property every reader must meet.

A reader call runs in a separate (spawned) process, so a hang is cut off by the deadline and a
crash in C code (a segfault in a decoder) is reported with the input that caused it instead of
killing pytest.
"""
from __future__ import annotations

import importlib
import io
import multiprocessing as mp
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches in ./.hypothesis by default: keep the working tree clean.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "brain-jax-hypothesis"))

CALL_TIMEOUT_S = 30.0  # generous: the machine is shared; a reader that needs this long has hung

# Derandomized (the same examples on every run), bounded, no example database written to the tree.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _serve(conn) -> None:
    """Worker loop: (``module:function``, args) in, ("ok", result) or ("raised", ...) out."""
    while True:
        try:
            target, args = conn.recv()
        except EOFError:
            return
        module, name = target.split(":")
        try:
            result = getattr(importlib.import_module(module), name)(*args)
        except BaseException as e:  # noqa: BLE001  (the parent judges every outcome)
            conn.send(("raised", type(e).__name__, str(e), isinstance(e, (ValueError, FileNotFoundError))))
        else:
            conn.send(("ok", result))


def load(module: str) -> None:
    """Worker target: import ``module``."""
    importlib.import_module(module)


class Worker:
    """One spawned process running reader calls; restarted after a hang or a crash. ``modules`` are
    imported in it first, outside the deadline."""

    def __init__(self, *modules: str, timeout_s: float = CALL_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._start()
        self.warm(*modules)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        self.conn, child = self._ctx.Pipe()
        env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # inherited by the spawned worker
        try:
            self.proc = self._ctx.Process(target=_serve, args=(child,), daemon=True)
            self.proc.start()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()

    def warm(self, *modules: str, timeout_s: float = 300.0) -> None:
        """Import ``modules`` in the worker (TensorFlow for the builders takes a while) outside the deadline."""
        for m in modules:
            self.conn.send(("tests.fuzz_helpers:load", (m,)))
            assert self.conn.poll(timeout_s) and self.conn.recv()[0] == "ok", f"worker cannot import {m}"

    def call(self, target: str, *args: Any) -> tuple:
        """Run ``module:function(*args)`` in the worker; AssertionError on a hang or a crash."""
        self.conn.send((target, args))
        if not self.conn.poll(self.timeout_s):
            self.proc.kill()
            self.proc.join()
            self._start()
            raise AssertionError(f"hang: {target}{args} ran longer than {self.timeout_s:.0f} s")
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join()
            code = self.proc.exitcode
            self._start()
            raise AssertionError(f"crash: {target}{args} killed the reader process (exit code {code})") from None

    def close(self) -> None:
        self.conn.close()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class Seeds(dict):
    """File name -> bytes of valid files; a short repr, as hypothesis prints a failing example's arguments."""

    def __repr__(self) -> str:
        return f"<seed files {sorted(self)}>"


# --------------------------------------------------------------------------------------- mutations


def mutations(seed: bytes, head: int = 1024) -> st.SearchStrategy[bytes]:
    """Valid file ``seed`` cut short, with bytes overwritten (mostly in the first ``head`` bytes, where
    headers live), with a run of random bytes spliced in, or with a chunk repeated."""
    n = len(seed)
    pos = st.one_of(st.integers(0, min(n, head) - 1), st.integers(0, n - 1))

    def flip(edits):
        b = bytearray(seed)
        for i, v in edits:
            b[i] = v
        return bytes(b)

    def splice(t):
        i, junk = t
        return seed[:i] + junk + seed[i + len(junk):]

    def repeat(t):
        i, k = t
        return seed[:i] + seed[i:i + k] * 2 + seed[i + k:]

    return st.one_of(
        st.integers(0, n - 1).map(lambda k: seed[:k]),
        st.lists(st.tuples(pos, st.integers(0, 255)), min_size=1, max_size=8).map(flip),
        st.tuples(pos, st.binary(min_size=1, max_size=16)).map(splice),
        st.tuples(pos, st.integers(1, 64)).map(repeat),
    )


@st.composite
def poked(draw, arrays: st.SearchStrategy[np.ndarray]) -> np.ndarray:
    """Arrays from ``arrays``, a float one holding a NaN or an infinity about half the time: a
    derandomized run with few examples rarely draws one by chance."""
    a = draw(arrays)
    if a.dtype.kind == "f" and a.size and draw(st.booleans()):
        a = a.copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return a


# ------------------------------------------------------------------------------------ the property


def assert_clean_error(outcome: tuple, path: str | Path | None, *, limit: bool = False) -> str:
    """``outcome`` is one ValueError / FileNotFoundError on one line, naming ``path`` (when given) and,
    with ``limit``, saying a size limit refused the file before decoding. Returns the message."""
    assert outcome[0] == "raised", f"expected an error, got {outcome!r:.300}"
    _, kind, msg, clean = outcome
    assert clean, f"{kind} escaped instead of a ValueError naming the file: {msg}"
    assert "\n" not in msg, f"error spans several lines: {msg!r}"
    if path is not None:
        assert str(path) in msg, f"error does not name {path}: {msg}"
    if limit:
        assert "limit" in msg or "bomb" in msg, f"not refused by a size check before decoding: {msg}"
    return msg


# ---------------------------------------------------------------------------- raster headers of any size

_GRAY8 = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)


def png_with_size(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_GRAY8).save(buf, "png")
    b = bytearray(buf.getvalue())
    struct.pack_into(">II", b, 16, w, h)  # IHDR: width, height, then a CRC over type + data
    struct.pack_into(">I", b, 29, zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def bmp_with_size(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_GRAY8).save(buf, "bmp")
    b = bytearray(buf.getvalue())
    struct.pack_into("<ii", b, 18, w, h)  # BITMAPINFOHEADER width, height (negative: top-down)
    return bytes(b)


def jpeg_with_size(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_GRAY8).save(buf, "jpeg")
    b = bytearray(buf.getvalue())
    sof = b.index(b"\xff\xc0")
    struct.pack_into(">HH", b, sof + 5, h, w)  # SOF0: length (2), precision (1), height, width
    return bytes(b)


# ---------------------------------------------------------------------------------- worker targets


def figshare_zip(folder: str) -> dict:
    """Worker target: what the Figshare builder makes of the zips in ``folder``: the bad inputs it lists,
    and per image number the record's image shape or the error reading it."""
    from input_pipeline.features import BadInputs
    from input_pipeline.figshare import _load_bytes, _where, find_inputs, read_mat

    bad = BadInputs("figshare_brain_tumor")
    found = find_inputs(Path(folder), bad)
    read = {}
    for num, (path, member) in found.items():
        try:
            read[num] = ("ok", read_mat(_load_bytes(path, member), _where(path, member))["image"].shape)
        except ValueError as e:
            read[num] = ("error", str(e))
    return {"bad": bad.problems, "read": read}


def _outcome(fn, *args) -> tuple:
    try:
        return ("ok", fn(*args))
    except BaseException as e:  # noqa: BLE001  (the parent judges every outcome)
        return ("raised", type(e).__name__, str(e), isinstance(e, (ValueError, FileNotFoundError)))


def workdir_readers(wd: str) -> dict:
    """Worker target: each workdir reader on ``wd``: the config as a dict, model.json, metrics.json."""
    from brain_jax import workdir

    return {"config": _outcome(lambda: workdir.read_config(wd).to_dict()),
            "model": _outcome(workdir.read_model_json, wd),
            "metrics": _outcome(workdir.read_metrics, wd)}


def flat(node, prefix: str = "") -> dict:
    """A ConfigDict as {dotted field: value}."""
    out = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_LOADED: dict = {}


def override(spec: str, item: str) -> tuple[dict, dict]:
    """Worker target: the config ``spec`` as {field: value} before and after applying ``item``."""
    import copy

    from brain_jax.train.config import apply_overrides, load_config

    if spec not in _LOADED:
        _LOADED[spec] = load_config(spec)
    config = copy.deepcopy(_LOADED[spec])
    before = flat(config)
    apply_overrides(config, [item])
    return before, flat(config)
