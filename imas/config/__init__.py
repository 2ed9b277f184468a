"""Typed experiment configuration: the schema with every default, strict YAML loading, dotted overrides.

A config file is YAML with the sections of ``Config``; every key is optional (the default is used) but an
unknown key or a value of the wrong type is an error that names the key. ``--opt section.key=value``
overrides are parsed to the field's type. The resolved config is written to the run directory as
``config.yaml``.

The package reads configs without torch: ``schema`` holds the dataclasses and enums, ``strict_yaml`` the
YAML reader (duplicate keys, unknown tags and alias bombs are refused), ``convert`` the type checks and
``checks`` the cross-field checks. Names that the code defines (``train.method``, ``model.backbone``) are
checked above it, where they are defined: commands load a config through ``imas.experiment``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from imas.config.checks import validate
from imas.config.convert import build, convert, field_types, parse_text
from imas.config.schema import (
    MAX_BOXES,
    METHOD_SECTIONS,
    Adaptation,
    Config,
    CPSConfig,
    CutMixBox,
    CutMixTrigger,
    DataConfig,
    DatasetKind,
    EvalConfig,
    EvalMode,
    EvalModel,
    FixMatchConfig,
    ImasConfig,
    LossConfig,
    LossKind,
    MeanTeacherConfig,
    ModelConfig,
    OptimConfig,
    OptimizerKind,
    Pairing,
    Precision,
    ResizeRule,
    Stem,
    TeacherStudentConfig,
    TrainConfig,
    UniMatchConfig,
    Weighting,
)
from imas.config.strict_yaml import MAX_YAML_VALUES, load_yaml, short_repr
from imas.errors import ConfigError, RunDirError, failure_reason

__all__ = [
    "MAX_BOXES",
    "MAX_YAML_VALUES",
    "METHOD_SECTIONS",
    "Adaptation",
    "CPSConfig",
    "Config",
    "ConfigError",
    "CutMixBox",
    "CutMixTrigger",
    "DataConfig",
    "DatasetKind",
    "EvalConfig",
    "EvalMode",
    "EvalModel",
    "FixMatchConfig",
    "ImasConfig",
    "LossConfig",
    "LossKind",
    "MeanTeacherConfig",
    "ModelConfig",
    "OptimConfig",
    "OptimizerKind",
    "Pairing",
    "Precision",
    "ResizeRule",
    "Stem",
    "TeacherStudentConfig",
    "TrainConfig",
    "UniMatchConfig",
    "Weighting",
    "apply_override",
    "from_dict",
    "load_config",
    "save_config",
    "short_repr",
    "to_dict",
    "upgrade_stored",
    "validate",
]


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, check every key and type against the schema, then apply "a.b=c" overrides.

    Method and backbone names are not checked here: imas.experiment.load_experiment adds those checks."""
    path = Path(path)
    if path.is_dir():  # "does not exist" would send the user looking for a path that is there
        raise ConfigError(f"config {path} is a folder, not a file; give the path of a .yaml file in it")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read as text ({exc.__class__.__name__})") from None
    raw = load_yaml(text, f"config file {path}")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    if "semi" in raw:
        method = raw.get("train", {}).get("method") if isinstance(raw.get("train"), dict) else None
        name = method if method in ("imas", "mean_teacher") else "imas"
        raise ConfigError(
            f"config file {path} has a section 'semi', which is now named after its method: rename it to "
            f"{name!r} (its keys are unchanged)"
        )
    config = build(Config, raw, prefix="")
    given = {key for key in raw if key in METHOD_SECTIONS and raw[key]}  # an empty section sets nothing
    for override in overrides:
        apply_override(config, override)
        first = override.partition("=")[0].strip().split(".")[0]
        if first in METHOD_SECTIONS:
            given.add(first)
    validate(config, sorted(given))
    return config


def apply_override(config: Config, override: str) -> None:
    """Apply one "section.key=value" override in place; the value is parsed to the field's type."""
    dotted, sep, text = override.partition("=")
    if not sep or not dotted.strip():
        raise ConfigError(f"override {short_repr(override)} must look like section.key=value")
    names = dotted.strip().split(".")
    node: Any = config
    for depth, name in enumerate(names):
        valid = [f.name for f in dataclasses.fields(node)]
        if name not in valid:
            key, where = short_repr(".".join(names[: depth + 1])), ".".join(names[:depth]) or "the config"
            raise ConfigError(
                f"unknown key {key} in {short_repr(where, quote=False)}; valid keys: {', '.join(valid)}"
            )
        if depth == len(names) - 1:
            hint = field_types(type(node))[name]
            if dataclasses.is_dataclass(hint):
                raise ConfigError(
                    f"override {short_repr(dotted)} names a whole section; give one of its keys"
                )
            value = text if hint is str else parse_text(text, dotted)
            setattr(node, name, convert(value, hint, dotted))
        else:
            node = getattr(node, name)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{short_repr('.'.join(names[: depth + 1]))} is a value, not a section")


def to_dict(config: Any, all_sections: bool = False) -> dict[str, Any]:
    """The config as plain YAML/JSON-able data (enums as their values). Of the method sections only
    train.method's is included (what config.yaml and checkpoints hold), unless `all_sections`."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        other_method = isinstance(config, Config) and f.name in METHOD_SECTIONS
        if other_method and f.name != config.train.method and not all_sections:
            continue
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, list):
            value = [list(v) if isinstance(v, list) else v for v in value]
        out[f.name] = value
    return out


def upgrade_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config (a checkpoint's) in today's layout: older versions kept the iMAS settings in a section
    'semi' (written for every method), which is now the method's own section."""
    if "semi" not in data:
        return data
    data = dict(data)
    semi = data.pop("semi")
    method = data.get("train", {}).get("method")
    if method in ("imas", "mean_teacher") and method not in data:
        data[method] = semi
    return data


def from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. the copy stored in a checkpoint or a run's config.yaml),
    then apply "a.b=c" overrides. The stored config is checked as stored; with overrides it is checked again
    as a whole, where its stored method section is not held against an override of train.method (a
    report or a prediction may read a run's weights as another method's)."""
    data = upgrade_stored(data)
    config = build(Config, data, prefix="")
    validate(config, [key for key in data if key in METHOD_SECTIONS])
    if overrides:
        for override in overrides:
            apply_override(config, override)
        validate(config)
    return config


def save_config(config: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file); a failed write
    (a full disk, a read-only folder) is one RunDirError naming the path, the previous file kept."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        kept = "the previous one is kept" if path.is_file() else "nothing was written"
        raise RunDirError(f"{path} could not be written ({failure_reason(exc)}); {kept}") from None
