"""A config checked against the code: what every command that runs a config loads.

imas.config checks keys, types and ranges without importing torch or the code a config names. The section
of train.method is built here from the method's own settings class (imas.methods.SETTINGS); the names of
methods and backbones, and what a method needs of a config (a batch its forwards work with, an unlabeled
split), are checked here, by functions that sit beside the one list of each (imas.methods.METHODS,
imas.models.BACKBONES).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from imas.config import Config, from_dict, load_config
from imas.methods import SETTINGS, check_method
from imas.models import check_model


def check_experiment(cfg: Config) -> None:
    """Refuse an unknown encoder or method, or a config the method cannot train: one ConfigError."""
    check_model(cfg)
    check_method(cfg)


def load_experiment(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """imas.config.load_config, then check_experiment: a config file (and "a.b=c" overrides) to run."""
    cfg = load_config(path, overrides, SETTINGS)
    check_experiment(cfg)
    return cfg


def experiment_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> Config:
    """imas.config.from_dict, then check_experiment: a stored config (a checkpoint's, a run's config.yaml),
    with overrides, to run."""
    cfg = from_dict(data, overrides, SETTINGS)
    check_experiment(cfg)
    return cfg
