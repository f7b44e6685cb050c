"""Property-based fuzzing of the readers of weights and settings: safetensors files and sharded
indexes, Hugging Face ``config.json``, a workdir's config.json / model.json / metrics.json, and
``--config.FIELD=VALUE`` overrides.

The property: the declared contents (tensors of their declared dtype and shape, all finite; a JSON
object; a field set to a value of its type), or one ValueError on one line naming the file or the
config field; never a crash, a hang or another exception. Each call runs in a worker process under a
deadline (tests/fuzz_helpers.py).
"""
from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save_file

from tests.fuzz_helpers import FUZZ, Worker, assert_clean_error, mutations

READ_ST = "brain_jax.convert.core:read_safetensors"
LOAD_HF = "brain_jax.convert.core:load_hf_checkpoint"
CONFIG = "configs/demo.py"


@pytest.fixture(scope="module")
def worker():
    with Worker("brain_jax.convert.core", "brain_jax.workdir", "brain_jax.train.config") as w:
        yield w


TENSORS = {"embeddings.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
           "head.bias": np.linspace(-1, 1, 5).astype(np.float16), "steps": np.array([7], np.int64)}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


# ------------------------------------------------------------------------------------ safetensors


def _check_tensors(outcome: tuple, path) -> dict | None:
    if outcome[0] != "ok":
        assert_clean_error(outcome, path)
        return None
    for k, a in outcome[1].items():
        assert isinstance(a, np.ndarray) and (a.dtype.kind != "f" or np.isfinite(a).all()), k
    return outcome[1]


def test_safetensors_mutated(worker, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(TENSORS, str(path))
    seed = path.read_bytes()

    @FUZZ
    @given(data=mutations(seed, head=200))
    def check(data):
        path.write_bytes(data)
        _check_tensors(worker.call(READ_ST, str(path)), path)

    check()


DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "I64": (np.int64, 8), "U8": (np.uint8, 1)}
entry_values = st.fixed_dictionaries({
    "dtype": st.sampled_from([*DTYPES, "BF16", "F99", 7, None]),
    "shape": st.one_of(st.lists(st.integers(0, 4), max_size=3), st.lists(st.integers(-3, 1 << 40), max_size=2),
                       json_values),
    "data_offsets": st.one_of(st.tuples(st.integers(0, 64), st.integers(0, 64)).map(list), json_values),
})


@FUZZ
@given(entries=st.dictionaries(st.text(max_size=6), st.one_of(entry_values, json_values), max_size=3),
       payload=st.binary(max_size=64), nan=st.booleans())
def test_safetensors_headers_of_every_kind(entries, payload, nan, worker, tmp_path):
    """Header entries with any dtype, shape and offsets (consistent or not) over any payload."""
    if nan:
        payload = np.full(16, np.nan, np.float32).tobytes()
    header = json.dumps(entries).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
    tensors = _check_tensors(worker.call(READ_ST, str(path)), path)
    if tensors is None:
        return
    for key, e in entries.items():  # everything read is exactly what the header declares
        if key == "__metadata__":
            continue
        want_dtype, itemsize = DTYPES[e["dtype"]]
        a = tensors[key]
        assert a.dtype == want_dtype and list(a.shape) == e["shape"]
        assert e["data_offsets"][1] - e["data_offsets"][0] == math.prod(e["shape"]) * itemsize
        assert a.tobytes() == payload[e["data_offsets"][0]:e["data_offsets"][1]]


@st.composite
def tensor_files(draw) -> tuple[dict, bytes, dict]:
    """A consistent header, its payload and the arrays it holds (NaN and infinities included)."""
    entries, arrays, payload = {}, {}, b""
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(sorted(DTYPES)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        arrays[f"t{i}"] = a = draw(hnp.arrays(DTYPES[dtype][0], tuple(shape)))
        if a.dtype.kind == "f" and a.size and draw(st.booleans()):  # derandomized runs need NaN/Inf on purpose
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        entries[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [len(payload), len(payload) + a.nbytes]}
        payload += a.tobytes()
    return entries, payload, arrays


@FUZZ
@given(file=tensor_files())
def test_safetensors_values_of_every_kind(file, worker, tmp_path):
    """Sound files of any dtype, shape and values: read exactly, unless a float tensor holds NaN or an
    infinity, which is refused naming the file and the tensor."""
    entries, payload, arrays = file
    header = json.dumps(entries).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
    outcome = worker.call(READ_ST, str(path))
    bad = sorted(k for k, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all())
    if bad:
        msg = assert_clean_error(outcome, path)
        assert "NaN or infinite" in msg and bad[0] in msg
        return
    assert outcome[0] == "ok", outcome
    assert set(outcome[1]) == set(arrays)
    for k, a in arrays.items():
        assert outcome[1][k].dtype == a.dtype and outcome[1][k].shape == a.shape
        np.testing.assert_array_equal(outcome[1][k], a)


@FUZZ
@given(config=st.one_of(json_values, st.binary(max_size=40).map(lambda b: b"{" + b)),
       weight_map=st.one_of(st.dictionaries(st.text(max_size=4), st.one_of(
           st.sampled_from(["model-1.safetensors", "../model-1.safetensors", "/etc/hostname", "", ".", "missing"]),
           json_values), max_size=3), json_values))
def test_hf_folder_config_and_index_of_every_kind(config, weight_map, worker, tmp_path):
    """config.json of any JSON value or broken bytes; a sharded index naming any files: the folder loads
    (config an object, shards plain file names beside the index) or one error names the file at fault."""
    folder = tmp_path / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_bytes(config if isinstance(config, bytes) else json.dumps(config).encode())
    save_file(TENSORS, str(folder / "model-1.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    outcome = worker.call(LOAD_HF, str(folder))
    try:
        parsed = json.loads(config) if isinstance(config, bytes) else config
    except ValueError:
        parsed = None
    shards = list(weight_map.values()) if isinstance(weight_map, dict) else None
    if isinstance(parsed, dict) and shards is not None and all(v == "model-1.safetensors" for v in shards):
        assert outcome[0] == "ok", outcome
        cfg, tensors = outcome[1]
        assert json.dumps(cfg) == json.dumps(parsed) and set(tensors) == (set(TENSORS) if shards else set())
    else:
        assert_clean_error(outcome, folder)


# --------------------------------------------------------------------------------- workdir files


VALID_CONFIG = {"data": {"task": "classification", "image_size": 32, "mean": [0.5] * 3}, "model": {"name": "vit"}}


@FUZZ
@given(data=st.data())
def test_workdir_files_of_every_kind(data, worker, tmp_path):
    """config.json / model.json / metrics.json holding any JSON value, broken bytes or deep nesting."""
    wd = tmp_path / "wd"
    wd.mkdir(exist_ok=True)
    contents = st.one_of(json_values.map(lambda v: json.dumps(v).encode()),
                         mutations(json.dumps(VALID_CONFIG).encode()),
                         st.integers(1000, 100_000).map(lambda n: b"[" * n + b"]" * n))
    files = {name: data.draw(contents) for name in ("config.json", "model.json", "metrics.json")}
    for name, raw in files.items():
        (wd / name).write_bytes(raw)
    outcome = worker.call("tests.fuzz_helpers:workdir_readers", str(wd))
    assert outcome[0] == "ok", outcome  # the target catches each reader's errors: nothing else may escape
    for reader, name in (("config", "config.json"), ("model", "model.json"), ("metrics", "metrics.json")):
        result = outcome[1][reader]
        try:
            value = json.loads(files[name])
        except (ValueError, RecursionError):
            value = None
        if result[0] == "ok":
            assert isinstance(value, dict)
            if reader == "config":
                assert set(result[1]) == set(value)
            if reader == "model":
                assert isinstance(result[1]["model_type"], str) and isinstance(result[1]["config"], dict)
            if reader == "metrics":
                assert result[1]["schema_version"] == 2 and isinstance(result[1]["meta"], dict)
        else:
            assert_clean_error(result, wd / name)


def test_workdir_files_valid(worker, tmp_path):
    """The fuzzed readers above do read sound files."""
    (tmp_path / "config.json").write_text(json.dumps(VALID_CONFIG))
    (tmp_path / "model.json").write_text(json.dumps({"model_type": "vit", "config": {"hidden_size": 8}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"classification": {"accuracy": 0.5}, "meta": {}}))
    outcome = worker.call("tests.fuzz_helpers:workdir_readers", str(tmp_path))
    assert outcome[1]["config"] == ("ok", VALID_CONFIG)
    assert outcome[1]["model"][1]["model_type"] == "vit"
    assert outcome[1]["metrics"][1]["classification"] == {"test": {"accuracy": 0.5}}  # schema 1, upgraded


# ------------------------------------------------------------------------------------- overrides


@pytest.fixture(scope="module")
def fields(worker) -> dict:
    outcome = worker.call("tests.fuzz_helpers:override", CONFIG, "--config.seed=0")
    assert outcome[0] == "ok", outcome
    return outcome[1][0]


def _raw_values() -> st.SearchStrategy[str]:
    numbers = st.one_of(st.integers(-10**30, 10**30).map(str), st.floats().map(repr),
                        st.sampled_from(["1e400", "-1e400", "nan", "inf", "1_000", "0x10", "3.0", "9" * 5000]))
    lists = st.lists(st.one_of(numbers, st.text("ab,", max_size=3)), max_size=4).map(",".join)
    literals = st.sampled_from(["(1, 2)", "[1.5]", "('a', 'b')", "[[1]]", "(1)", "[", "(" * 300, "{1: 2}", "()"])
    return st.one_of(numbers, lists, literals, st.sampled_from(["true", "No", "on", ""]), st.text(max_size=12))


@FUZZ
@given(data=st.data())
def test_overrides_of_every_kind(data, fields, worker):
    """``--config.FIELD=RAW`` for every field kind (bool, int, float, str, tuples) and arbitrary RAW:
    the field takes a value of its own type (finite numbers; list items of the current items' kind) and
    nothing else changes, or one ValueError names the field."""
    field = data.draw(st.sampled_from(sorted(fields)))
    raw = data.draw(_raw_values())
    outcome = worker.call("tests.fuzz_helpers:override", CONFIG, f"--config.{field}={raw}")
    if outcome[0] != "ok":
        assert field in assert_clean_error(outcome, None)
        return
    before, after = outcome[1]
    assert {k: v for k, v in after.items() if k != field} == {k: v for k, v in before.items() if k != field}
    old, new = before[field], after[field]
    assert type(new) is type(old), (field, raw, new)
    if isinstance(new, float):
        assert math.isfinite(new)
    if isinstance(new, tuple) and old:
        kinds = {type(x) for x in old}
        want = (int,) if kinds <= {int} else (int, float) if kinds <= {int, float} else (str,)
        assert all(isinstance(x, want) and not isinstance(x, bool) for x in new), (field, raw, new)
        assert all(math.isfinite(x) for x in new if isinstance(x, float))


@FUZZ
@given(key=st.text(st.sampled_from("abdeit._x"), min_size=1, max_size=12), raw=st.text(max_size=5))
def test_unknown_override_fields_are_named(key, raw, fields, worker):
    outcome = worker.call("tests.fuzz_helpers:override", CONFIG, f"--config.{key}={raw}")
    if key in fields:
        return  # a real field: the test above covers it
    msg = assert_clean_error(outcome, None)
    assert ("unknown config field" in msg and key.split(".")[0] in msg) or "is a group" in msg, msg
