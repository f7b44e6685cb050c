"""Experiment configs: load ``configs/FILE.py[:ARG]``, apply ``--config.key=value`` overrides, validate.

Configs are locked ``ml_collections.ConfigDict`` objects; a misspelt key is an error that names the
field and lists the valid keys at that level, never a silently ignored setting.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
from pathlib import Path
from typing import Any, Iterable

import ml_collections

_PACKAGE_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _resolve_config_file(spec: str) -> tuple[Path, str | None]:
    path_str, _, arg = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        # ``convnextv2_cls`` or ``configs/convnextv2_cls.py`` from anywhere: fall back to the package's copy.
        name = path.name if path.suffix == ".py" else path.name + ".py"
        candidate = _PACKAGE_CONFIGS / name
        if not candidate.is_file():
            known = sorted(p.stem for p in _PACKAGE_CONFIGS.glob("*.py") if not p.stem.startswith("_"))
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


def _parse_value(raw: str, current: Any, field: str) -> Any:
    """Parse ``raw`` with the type of the field's current value."""
    if isinstance(current, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--config.{field}={raw}: expected a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError:
            try:
                f = float(raw)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
            raise ValueError(f"--config.{field}={raw}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"--config.{field}={raw}: expected a number") from None
    if isinstance(current, (tuple, list)):
        text = raw.strip()
        try:
            value = ast.literal_eval(text) if text[:1] in "([" else None
        except (ValueError, SyntaxError):
            value = None
        if value is None:
            items = [t.strip() for t in text.split(",") if t.strip()]
            kinds = {type(x) for x in current}
            if kinds <= {int}:
                value = [int(x) for x in items]
            elif kinds <= {int, float}:
                value = [float(x) for x in items]
            else:
                value = items
        return type(current)(value) if isinstance(current, tuple) else list(value)
    if isinstance(current, ml_collections.ConfigDict):
        raise ValueError(f"--config.{field}: is a group of settings ({_valid_keys(current)}), set one of them")
    if current is None:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    return raw


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
