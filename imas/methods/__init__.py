"""The training methods, by the name `train.method` takes: one module each, one entry here.

To add a method: a module with a `Method` subclass (imas/methods/base.py states the contract), its settings
section in imas/config.py (a dataclass, a field of Config, its name in METHOD_SECTIONS) and an entry below;
docs/extending.md walks through it.
"""

from __future__ import annotations

from imas.methods.base import LABELS, Method, StepOutput
from imas.methods.cps import CPS
from imas.methods.fixmatch import FixMatch
from imas.methods.imas import IMAS
from imas.methods.mean_teacher import MeanTeacher
from imas.methods.supervised import SupOnly
from imas.methods.unimatch import UniMatch

METHODS: dict[str, type[Method]] = {
    "supervised": SupOnly,
    "mean_teacher": MeanTeacher,
    "imas": IMAS,
    "fixmatch": FixMatch,
    "unimatch": UniMatch,
    "cps": CPS,
}

__all__ = ["LABELS", "METHODS", "Method", "StepOutput"]
