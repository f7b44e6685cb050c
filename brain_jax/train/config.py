"""Experiment configs: load ``configs/FILE.py[:ARG]``, apply ``--config.key=value`` overrides, validate.

Configs are locked ``ml_collections.ConfigDict`` objects; a misspelt key is an error that names the
field and lists the valid keys at that level, never a silently ignored setting.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import math
from pathlib import Path
from typing import Any, Iterable

import ml_collections

_PACKAGE_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _resolve_config_file(spec: str) -> tuple[Path, str | None]:
    path_str, _, arg = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        # ``convnextv2_cls``, ``configs/convnextv2_cls.py`` or ``paper/classifier`` from anywhere: fall back
        # to the package's copy.
        rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
        candidate = _PACKAGE_CONFIGS / (rel if rel.suffix == ".py" else rel.with_name(rel.name + ".py"))
        if not candidate.is_file():
            known = sorted(str(p.relative_to(_PACKAGE_CONFIGS).with_suffix("")) for p in _PACKAGE_CONFIGS.rglob("*.py")
                           if not p.stem.startswith("_") and p.stem != "common")
            raise FileNotFoundError(
                f"config file {path_str!r} not found (nor {candidate}); known configs: {', '.join(known)}"
            )
        path = candidate
    return path, (arg or None)


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """``configs/x.py:variant=tiny,runlocal`` + ``["--config.optimizer.lr=1e-3"]`` -> locked ConfigDict."""
    path, arg = _resolve_config_file(spec)
    module_spec = importlib.util.spec_from_file_location(f"_brain_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: defines no get_config(arg)")
    config = module.get_config(arg) if arg is not None else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"{path}: get_config must return an ml_collections.ConfigDict")
    config.lock()
    apply_overrides(config, overrides)
    return config


def _valid_keys(node: ml_collections.ConfigDict) -> str:
    return ", ".join(sorted(node.keys()))


_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


def _parse_value(raw: str, current: Any, field: str) -> Any:
    """Parse ``raw`` with the type of the field's current value; ValueError naming the field otherwise."""
    if isinstance(current, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise _bad_value(field, raw, "a boolean (true/false)")
    if isinstance(current, (int, float)):
        try:
            return _as_int(raw) if isinstance(current, int) else _as_float(raw)
        except ValueError:
            raise _bad_value(field, raw, "an integer" if isinstance(current, int) else "a finite number") from None
    if isinstance(current, (tuple, list)):
        value = _parse_sequence(raw, current, field)
        return tuple(value) if isinstance(current, tuple) else value
    if isinstance(current, ml_collections.ConfigDict):
        raise ValueError(f"--config.{field}: is a group of settings ({_valid_keys(current)}), set one of them")
    if current is None:
        try:
            return ast.literal_eval(raw)
        except _LITERAL_ERRORS:
            return raw
    return raw


def _bad_value(field: str, raw: str, what: str) -> ValueError:
    # repr: a value with newlines or control characters still makes a one-line message
    return ValueError(f"--config.{field}={raw!r}: expected {what}")


def _as_int(x: Any) -> int:
    """An int from an int, a whole float or their text (``"3"``, ``"3.0"``, ``"1e3"``); ValueError otherwise."""
    if isinstance(x, bool):
        raise ValueError(x)
    if isinstance(x, int):
        return x
    try:
        return int(x)
    except (ValueError, TypeError):
        f = float(x)  # ValueError / TypeError for anything else
        if not f.is_integer():
            raise ValueError(x) from None
        return int(f)


def _as_float(x: Any) -> float:
    """A finite float from a number or its text; ValueError otherwise (NaN and infinities included)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise ValueError(x)
    f = float(x)
    if not math.isfinite(f):
        raise ValueError(x)
    return f


def _parse_sequence(raw: str, current: tuple | list, field: str) -> list:
    """``a,b,c`` or a Python literal ``(a, b)`` / ``[a, b]``, its items parsed like the current items
    (ints, numbers or text; items of an empty sequence as numbers where they parse, else text)."""
    text = raw.strip()
    if text[:1] in "([":
        try:
            value = ast.literal_eval(text)
        except _LITERAL_ERRORS:
            value = None
        if not isinstance(value, (list, tuple)):
            raise _bad_value(field, raw, "a list such as 1,2 or (1, 2)")
        items = list(value)
    else:
        items = [t.strip() for t in text.split(",") if t.strip()]
    kinds = {type(x) for x in current}
    if current and kinds <= {int}:
        parse, what = _as_int, "integers"
    elif current and kinds <= {int, float}:
        parse, what = _as_float, "finite numbers"
    elif current and kinds <= {str}:
        parse, what = _as_text, "text"
    else:
        parse, what = _as_scalar, "numbers or text"
    try:
        return [parse(x) for x in items]
    except (ValueError, TypeError):
        raise _bad_value(field, raw, f"a list of {what}") from None


def _as_text(x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(x)
    return x


def _as_scalar(x: Any) -> int | float | str:
    """A number where ``x`` is one (or its text), else the text itself."""
    if isinstance(x, str):
        for parse in (int, _as_float):
            try:
                return parse(x)
            except ValueError:
                pass
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(x)
    return _as_float(x) if isinstance(x, float) else x


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Apply ``--config.a.b=value`` strings in place; unknown fields raise ValueError naming them."""
    for item in overrides:
        if not item.startswith("--config."):
            raise ValueError(f"override {item!r}: expected --config.FIELD=VALUE")
        key, sep, raw = item[len("--config."):].partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected --config.FIELD=VALUE")
        set_field(config, key, raw, parse=True)


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any, *, parse: bool = False) -> None:
    """Set ``config.<dotted>``; the field must exist (ValueError listing the valid keys otherwise)."""
    parts = dotted.split(".")
    node = config
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            parent = ".".join(parts[:i]) or "<top level>"
            valid = _valid_keys(node) if isinstance(node, ml_collections.ConfigDict) else "(not a group)"
            raise ValueError(f"unknown config field {where!r}; valid keys under {parent}: {valid}")
        if i < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    if parse:
        value = _parse_value(str(value), current, dotted)
    try:
        with node.ignore_type() if current is None else contextlib.nullcontext():
            node[parts[-1]] = value
    except TypeError as e:
        raise ValueError(f"config field {dotted!r}: {e}") from None
