"""Dataclass records loaded strictly from plain dicts: YAML configs, JSON files such as a model folder's
manifest or a run's artifacts.json.

from_dict rejects unknown keys and missing required ones, and checks every value against its field's
type hint (nested dataclasses, lists and dicts included), naming the field path in a one-line
ConfigError; callers reading a file re-raise it as their own error kind.

Standard library only: the on-device runtime (export/runtime.py) loads its manifest with it where
neither torch nor PyYAML exists.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from lite.errors import ConfigError


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Coerce/validate one value against a dataclass field type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_check_type(k, args[0], where): _check_type(v, args[1], f"{where}[{k!r}]") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # PyYAML reads 1e-3 (no dot) as a string; accept what a person means by it
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if hint is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    return value


def required_fields(cls: type) -> list[str]:
    """The fields of dataclass `cls` that have no default, in declaration order."""
    missing = dataclasses.MISSING
    return [f.name for f in dataclasses.fields(cls) if f.default is missing and f.default_factory is missing]


def from_dict(cls: type, data: dict, where: str) -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys with the field path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (expected one of: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            # a nested section states only what differs from that field's own default
            fld = next(f for f in dataclasses.fields(cls) if f.name == key)
            base = fld.default_factory() if fld.default_factory is not dataclasses.MISSING else None
            if base is not None and isinstance(value, dict):
                value = {k: v for k, v in dataclasses.asdict(base).items() if k not in value} | value
            kwargs[key] = from_dict(hint, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _check_type(value, hint, f"{where}.{key}")
    missing = [name for name in required_fields(cls) if name not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**kwargs)
