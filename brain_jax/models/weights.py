"""Every way weights reach a model goes through here: building a model without random init (``abstract``)
and filling all of its variables at once or not at all (``assign``), with one error listing every offender.

Used by HF conversion, converted folders, grafting a pretrained backbone under a new head and workdir
checkpoints. Variables are named by dotted path, e.g. ``encoder.stages.0.layers.1.dwconv.kernel``.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


# No published architecture here comes near this (ConvNeXt V2-H: 2.6 GB in float32).
MAX_MODEL_BYTES = 64 * 2**30


class WeightsMismatch(ValueError):
    """Weights do not fit a model: raised with every missing, unused and mis-shaped key at once."""


def model_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
    """Every Param and BatchStat of ``model`` by dotted path (``encoder.stages.0.dwconv.kernel``)."""
    return {
        ".".join(str(p) for p in path): node
        for path, node in nnx.iter_graph(model)
        if isinstance(node, (nnx.Param, nnx.BatchStat))
    }


def _message(source: str, problems: Sequence[str]) -> str:
    """The one format of a mismatch: a head line counting the problems, then one line per problem."""
    return f"{source} does not match the model ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)


def _as_value(array: Any, dtype: Any) -> jax.Array:
    if isinstance(array, jax.Array):
        return array if array.dtype == dtype else array.astype(dtype)
    return jnp.asarray(np.asarray(array, dtype=dtype))  # cast on the host: no XLA compile per shape


def assign(
    model: nnx.Module,
    arrays: Mapping[str, Any],
    *,
    source: str,
    fresh: Collection[str] = (),
    ignore: Callable[[str], bool] | None = None,
    problems: Sequence[str] = (),
    reported: Collection[str] = (),
    error: type[WeightsMismatch] = WeightsMismatch,
) -> None:
    """Fill every variable of ``model`` from ``arrays`` (keyed by dotted path), cast to the variable's dtype.

    ``fresh``: variable paths that keep their current values (a new head grafted under a pretrained
    backbone); an array at a fresh path is not reported as unused. ``ignore(key)``: array keys that are
    not weights of the model (not reported as unused). ``problems``: what the caller found wrong before
    (e.g. in the checkpoint's own key names), listed first; ``reported``: variable paths those problems
    already cover, so they are not listed again as missing.

    All or nothing: unless every non-fresh variable gets an array of its shape and every array is used,
    nothing is written and ``error`` is raised listing every problem.
    """
    variables = model_variables(model)
    fresh = set(fresh)
    skip = fresh | set(reported)
    found = list(problems)
    found += [f"fresh {p} is not a variable of the model" for p in sorted(fresh - set(variables))]
    staged: list[tuple[nnx.Variable, Any]] = []
    for path, var in variables.items():
        if path in skip:
            continue
        if path not in arrays:
            found.append(f"missing {path}")
            continue
        want, got = tuple(var.get_value().shape), tuple(np.shape(arrays[path]))
        if got != want:
            found.append(f"{path}: {source} has {got}, model expects {want}")
            continue
        staged.append((var, arrays[path]))
    found += [
        f"unused {k} {tuple(np.shape(arrays[k]))}"
        for k in sorted(arrays)
        if k not in variables and k not in fresh and not (ignore is not None and ignore(k))
    ]
    if found:
        raise error(_message(source, found))
    for var, array in staged:
        var.set_value(_as_value(array, var.get_value().dtype))


@functools.cache
def _key_impl(dtype: Any) -> Any:
    return jax.random.key_impl(jnp.zeros((), dtype))


def abstract(factory: Callable[[], nnx.Module], *, where: str = "model config") -> nnx.Module:
    """``factory()`` without its random initialisation, for a model whose weights are assigned next.

    Random init compiles one XLA program per parameter shape (seconds for a tiny model on a busy CPU,
    minutes of work for ConvNeXt-H) only to be overwritten. The model is traced abstractly instead; its
    Params/BatchStats become zeros (placeholders: fill every one, e.g. with ``assign``) and its RNG streams
    get fresh concrete keys (of the implementation the factory chose) so that training mode still works.
    Falls back to ``factory()`` if the model holds any other array state (e.g. a constant buffer).
    A model larger than ``MAX_MODEL_BYTES`` is refused before anything is allocated (``where`` names the
    configuration it came from, e.g. a config.json with a mistyped size).
    """
    model = nnx.eval_shape(factory)
    total = sum(math.prod(v.get_value().shape) * np.dtype(v.get_value().dtype).itemsize
                for v in model_variables(model).values())
    if total > MAX_MODEL_BYTES:
        raise ValueError(f"{where}: the model it describes would hold {total / 2**30:.0f} GiB of weights "
                         f"(more than {MAX_MODEL_BYTES // 2**30} GiB): check its sizes")
    seeds = itertools.count(1)
    fills: list[tuple[nnx.Variable, Callable[[], Any]]] = []
    for _, node in nnx.iter_graph(model):
        if isinstance(node, jax.ShapeDtypeStruct):
            return factory()  # a plain array attribute: cannot be rebuilt without running the init
        if not isinstance(node, nnx.Variable) or not isinstance(node.get_value(), jax.ShapeDtypeStruct):
            continue
        v = node.get_value()
        if isinstance(node, (nnx.Param, nnx.BatchStat, nnx.RngCount)):
            fills.append((node, lambda v=v: jnp.asarray(np.zeros(v.shape, v.dtype))))  # device_put: no compile
        elif isinstance(node, nnx.RngKey) and v.shape == ():
            fills.append((node, lambda v=v: jax.random.key(next(seeds), impl=_key_impl(v.dtype))))
        else:
            return factory()
    for var, make in fills:
        var.set_value(make())
    return model
