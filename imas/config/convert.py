"""A YAML value checked against the type a schema field declares, and a section built from a mapping."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from imas.config.strict_yaml import load_yaml, short_repr
from imas.errors import ConfigError

# YAML 1.1's other boolean words: the config reader leaves them strings (imas.config.strict_yaml, so that an
# enum value such as "off" can be written plainly); a boolean key still reads them as YAML 1.1 did.
_BOOL_WORDS = {"yes": True, "on": True, "no": False, "off": False}


def field_types(cls: type) -> dict[str, Any]:
    """Each field's type of a schema dataclass (the annotations are strings under postponed evaluation)."""
    return typing.get_type_hints(cls)


def build(cls: type, raw: Any, prefix: str) -> Any:
    """The dataclass `cls` from a mapping of its keys (sections recursively); `prefix` names where it is."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {short_repr(raw)}")
    hints = field_types(cls)
    unknown = [key for key in raw if key not in hints]
    if unknown:
        section = f"section {where!r}" if prefix else where
        raise ConfigError(
            f"unknown key {short_repr(prefix + str(unknown[0]))} in {section}; valid keys: {', '.join(hints)}"
        )
    kwargs = {}
    for name, hint in hints.items():
        if name not in raw:
            continue
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, raw[name] if raw[name] is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = convert(raw[name], hint, f"{prefix}{name}")
    return cls(**kwargs)


def parse_text(text: str, key: str) -> Any:
    """An override's value text read as YAML (so "3" is an integer and "[1, 2]" a list)."""
    return load_yaml(text, f"value {short_repr(text)} for {key}")


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + " | ".join(m.value for m in hint)
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def convert(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type `hint`; return it converted (int -> float, str -> enum)."""

    def bad() -> ConfigError:
        return ConfigError(f"{key} = {short_repr(value)} is invalid: expected {_type_name(hint)}")

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in the schema ({key})")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        (item,) = typing.get_args(hint)
        return [convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise bad() from None
    if hint is bool:
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string; accept every spelling Python accepts.
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported type {hint!r} in the schema ({key})")
