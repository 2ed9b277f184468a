"""Typed experiment configuration: the schema with every default, strict YAML loading, dotted overrides.

A config file is YAML with the sections of ``Config``; every key is optional (the default is used) but an
unknown key or a value of the wrong type is an error that names the key. ``--opt section.key=value``
overrides are parsed to the field's type. The resolved config is written to the run directory as
``config.yaml``.

The package reads configs without torch: ``schema`` holds the dataclasses and enums, ``strict_yaml`` the
YAML reader (duplicate keys, unknown tags and alias bombs are refused), ``convert`` the type checks and
``checks`` the cross-field checks. Names that the code defines (``train.method``, ``model.encoder``) are
checked above it, where they are defined: commands load a config through ``imas.experiment``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from imas.config.checks import check_at_least, check_interval, validate
from imas.config.convert import build, convert, field_types, parse_text
from imas.config.schema import (
    CORE_SECTIONS,
    Config,
    DataConfig,
    DatasetKind,
    EvalConfig,
    EvalMode,
    Head,
    LossConfig,
    LossKind,
    ModelConfig,
    OptimConfig,
    OptimizerKind,
    Precision,
    ResizeRule,
    Stem,
    TrainConfig,
)
from imas.config.strict_yaml import MAX_YAML_VALUES, load_yaml, short_repr
from imas.errors import ConfigError, RunDirError, failure_reason

__all__ = [
    "CORE_SECTIONS",
    "MAX_YAML_VALUES",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetKind",
    "EvalConfig",
    "EvalMode",
    "Head",
    "LossConfig",
    "LossKind",
    "ModelConfig",
    "OptimConfig",
    "OptimizerKind",
    "Precision",
    "ResizeRule",
    "Stem",
    "TrainConfig",
    "apply_override",
    "check_at_least",
    "check_interval",
    "from_dict",
    "load_config",
    "save_config",
    "short_repr",
    "to_dict",
    "upgrade_stored",
    "validate",
]

# Method name -> the class of its settings (None: a method without settings); imas.methods.SETTINGS.
Settings = Mapping[str, "type | None"]


def load_config(
    path: str | os.PathLike[str], overrides: Sequence[str] = (), settings: Settings | None = None
) -> Config:
    """Read a YAML config, check every key and type against the schema, then apply "a.b=c" overrides.

    settings: the settings class of each method by name (imas.methods.SETTINGS), from which train.method's
    section is built and checked; without it (this package alone knows no method) the section is kept as
    the mapping the file gives. imas.experiment.load_experiment passes it and checks the names the code
    defines (methods, backbones)."""
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
    model = raw.get("model")
    if isinstance(model, dict) and "backbone" in model:
        raise ConfigError(
            f"config file {path} sets model.backbone, which is now named model.encoder: rename it (its "
            "values are unchanged)"
        )
    return assemble(raw, overrides, settings)


def assemble(
    raw: dict[str, Any], overrides: Sequence[str], settings: Settings | None, stored: bool = False
) -> Config:
    """A checked Config from a mapping of sections and "a.b=c" overrides. The section named after
    train.method (once the overrides set it) is built from its settings class; a section of another method
    is refused, except a `stored` config's own one when an override changes train.method (a report or a
    prediction may read a run's weights as another method's)."""
    config = build(Config, {k: v for k, v in raw.items() if k in CORE_SECTIONS}, prefix="")
    method_overrides = []
    for override in overrides:
        first = override.partition("=")[0].strip().split(".")[0]
        if first in CORE_SECTIONS or not first:
            apply_override(config, override)
        else:
            method_overrides.append(override)
    method = config.train.method
    sections = {key: value for key, value in raw.items() if key not in CORE_SECTIONS}
    if stored and raw_method(raw) != method:
        sections.pop(raw_method(raw), None)
    given = [key for key, value in sections.items() if value not in (None, {})]  # an empty one sets nothing
    given += [o.partition("=")[0].strip().split(".")[0] for o in method_overrides]
    for name in given:
        if name != method:
            raise _foreign_section(name, method, settings)
    if settings is None:  # no method known here: the section as written
        config.method_settings = sections.get(method)
        for override in method_overrides:
            _set_raw(config, override)
    elif method not in settings:
        pass  # imas.experiment.check_experiment names the valid methods (after the backbone)
    elif settings[method] is not None:
        section = sections.get(method)
        config.method_settings = build(settings[method], section if section is not None else {}, f"{method}.")
        for override in method_overrides:
            apply_override(config, override)
    elif given:
        raise ConfigError(f"train.method {method} has no settings: remove its section {method!r}")
    validate(config)
    return config


def raw_method(raw: dict[str, Any]) -> Any:
    """The train.method a mapping of sections names (the default where it names none)."""
    train = raw.get("train")
    return train.get("method", TrainConfig.method) if isinstance(train, dict) else TrainConfig.method


def _foreign_section(name: str, method: str, settings: Settings | None) -> ConfigError:
    """The sentence for a top-level section that is neither a core one nor train.method's."""
    if settings is None or name not in settings:
        valid = ", ".join(CORE_SECTIONS)
        return ConfigError(
            f"unknown key {short_repr(name)} in the config; valid keys: {valid} and the section named after "
            f"train.method ({method})"
        )
    return ConfigError(
        f"section {name!r} holds the settings of train.method {name}, but this config trains "
        f"{method}; remove the section or set train.method {name}"
    )


def _set_raw(config: Config, override: str) -> None:
    """An override of a method section kept as written (load_config without settings)."""
    dotted, _, text = override.partition("=")
    names = dotted.strip().split(".")
    node = config.method_settings = dict(config.method_settings or {})
    for name in names[1:-1]:
        node = node.setdefault(name, {})
    node[names[-1]] = parse_text(text, dotted)


def apply_override(config: Config, override: str) -> None:
    """Apply one "section.key=value" override in place; the value is parsed to the field's type. The
    section named after train.method is the method's settings (where they are built)."""
    dotted, sep, text = override.partition("=")
    if not sep or not dotted.strip():
        raise ConfigError(f"override {short_repr(override)} must look like section.key=value")
    names = dotted.strip().split(".")
    node: Any = config
    for depth, name in enumerate(names):
        children = _children(node)
        if name not in children:
            key, where = short_repr(".".join(names[: depth + 1])), ".".join(names[:depth]) or "the config"
            raise ConfigError(
                f"unknown key {key} in {short_repr(where, quote=False)}; valid keys: {', '.join(children)}"
            )
        child, hint = children[name]
        if depth == len(names) - 1:
            if dataclasses.is_dataclass(hint):
                raise ConfigError(
                    f"override {short_repr(dotted)} names a whole section; give one of its keys"
                )
            value = text if hint is str else parse_text(text, dotted)
            setattr(node, name, convert(value, hint, dotted))
        else:
            node = child
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{short_repr('.'.join(names[: depth + 1]))} is a value, not a section")


def _children(node: Any) -> dict[str, tuple[Any, Any]]:
    """A section's keys: name -> (value, type). A Config's are its core sections and train.method's."""
    if isinstance(node, Config):
        out = {name: (getattr(node, name), field_types(Config)[name]) for name in CORE_SECTIONS}
        if dataclasses.is_dataclass(node.method_settings):
            out[node.train.method] = (node.method_settings, type(node.method_settings))
        return out
    hints = field_types(type(node))
    return {f.name: (getattr(node, f.name), hints[f.name]) for f in dataclasses.fields(node)}


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML/JSON-able data (enums as their values), train.method's settings as the
    section named after it: what config.yaml and checkpoints hold."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.name == "method_settings":
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, list):
            value = [list(v) if isinstance(v, list) else v for v in value]
        out[f.name] = value
    settings = config.method_settings if isinstance(config, Config) else None
    if dataclasses.is_dataclass(settings):
        out[config.train.method] = to_dict(settings)
    elif settings is not None:
        out[config.train.method] = copy.deepcopy(settings)
    return out


def upgrade_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config (a checkpoint's) in today's layout, meaning what it trained: older versions kept the
    iMAS settings in a section 'semi' (written for every method), which is now the method's own section; a
    CPS section without `labeled_term` trained with the labeled CPS term, which is now off by default;
    model.backbone is now model.encoder."""
    data = dict(data)
    if isinstance(data.get("model"), dict) and "backbone" in data["model"]:
        model = dict(data["model"])
        model["encoder"] = model.pop("backbone")
        data["model"] = model
    method = data.get("train", {}).get("method") if isinstance(data.get("train"), dict) else None
    if "semi" in data:
        semi = data.pop("semi")
        if method in ("imas", "mean_teacher") and method not in data:
            data[method] = semi
    if method == "cps" and isinstance(data.get("cps"), dict) and "labeled_term" not in data["cps"]:
        data["cps"] = data["cps"] | {"labeled_term": True}
    return data


def from_dict(
    data: dict[str, Any], overrides: Sequence[str] = (), settings: Settings | None = None
) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. the copy stored in a checkpoint or a run's config.yaml),
    then apply "a.b=c" overrides; `settings` as for load_config. The stored config is checked as stored;
    with overrides it is checked again as a whole, where its stored method section is not held against an
    override of train.method (a report or a prediction may read a run's weights as another method's)."""
    data = upgrade_stored(data)
    config = assemble(data, (), settings)
    if overrides:
        config = assemble(data, overrides, settings, stored=True)
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
