"""The training methods, by the name `train.method` takes: one module each, one entry here.

To add a method: a module with a `Method` subclass and the dataclass of its settings (imas/methods/base.py
states the contract), and an entry below; docs/extending.md walks through it.
"""

from __future__ import annotations

from imas.config import Config, short_repr
from imas.errors import ConfigError
from imas.methods.augseg import AugSeg
from imas.methods.base import Method, Network, Progress, StepOutput
from imas.methods.cps import CPS
from imas.methods.fixmatch import FixMatch
from imas.methods.imas import IMAS
from imas.methods.mean_teacher import MeanTeacher
from imas.methods.ps_mt import PSMT
from imas.methods.self_training import SelfTraining
from imas.methods.supervised import SupOnly
from imas.methods.u2pl import U2PL
from imas.methods.unimatch import UniMatch
from imas.methods.unimatch_v2 import UniMatchV2

METHODS: dict[str, type[Method]] = {
    "supervised": SupOnly,
    "mean_teacher": MeanTeacher,
    "imas": IMAS,
    "fixmatch": FixMatch,
    "unimatch": UniMatch,
    "cps": CPS,
    "augseg": AugSeg,
    "u2pl": U2PL,
    "self_training": SelfTraining,
    "ps_mt": PSMT,
    "unimatch_v2": UniMatchV2,
}
# The settings class of every method, by name (what imas.config builds a method's section from).
SETTINGS = {name: method.Settings for name, method in METHODS.items()}

__all__ = ["METHODS", "SETTINGS", "Method", "Network", "Progress", "StepOutput", "check_method"]


def check_method(cfg: Config) -> None:
    """Refuse a train.method that is not in METHODS, or a config it cannot train: a batch smaller than its
    forwards work with, no unlabeled split for a method that reads one. One ConfigError sentence."""
    t = cfg.train
    if t.method not in METHODS:
        raise ConfigError(
            f"train.method {short_repr(t.method)} is unknown; valid methods: {', '.join(METHODS)}"
        )
    method, smallest = METHODS[t.method], METHODS[t.method].min_batch_size
    if t.batch_size < smallest:
        raise ConfigError(
            f"train.method {t.method} needs train.batch_size >= {smallest} (a training forward of one image "
            f"cannot normalise the ASPP's pooled features), got {t.batch_size}"
        )
    if method.uses_unlabeled and not cfg.data.unlabeled_split:
        raise ConfigError(f"train.method {t.method} needs an unlabeled split: set data.unlabeled_split")
    if cfg.model.representation and not method.uses_features:
        raise ConfigError(
            f"model.representation {cfg.model.representation} adds a head that train.method {t.method} never "
            "trains (only u2pl reads it): set it to 0"
        )
    if cfg.model.head.value not in method.heads:
        raise ConfigError(
            f"train.method {t.method} needs model.head {' or '.join(method.heads)} (it reads a part that "
            f"model.head {cfg.model.head.value} has not), so it cannot train model.encoder "
            f"{cfg.model.encoder}"
        )
    names = [n.name for n in method.networks]
    if cfg.eval.model not in ("teacher", *names):
        raise ConfigError(
            f"eval.model {short_repr(cfg.eval.model)} is not a network of train.method {t.method}; "
            f"valid: {', '.join(dict.fromkeys(['teacher', *names]))}"
        )
