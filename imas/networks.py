"""The networks a training checkpoint holds, what each is called, and loading one for inference.

A checkpoint keeps each network under the key its method declares (imas.methods.base.Network): "model"
(the student, or the first of two networks), "teacher" (an EMA teacher), "model2" (CPS's second network).
This module reads those declarations for a checkpoint: which network it reports, what a sentence calls
each, and which one a `--model` name picks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from imas.checkpoint import load_model_state
from imas.config import Config
from imas.dist import DistInfo
from imas.errors import CheckpointError
from imas.methods import METHODS
from imas.methods.base import STUDENT, Network
from imas.models import Ensemble, build_model


def declared(ckpt: dict[str, Any]) -> tuple[Network, ...]:
    """The networks the checkpoint's method declares; for a checkpoint that names no known method, those of
    the first method whose networks are exactly the ones it holds."""
    method = ckpt.get("config", {}).get("train", {}).get("method")
    if method in METHODS:
        return METHODS[method].networks
    known = {n.key for m in METHODS.values() for n in m.networks if not n.members}
    keys = {key for key in known if key in ckpt}
    for m in METHODS.values():
        if {n.key for n in m.networks if not n.members} == keys:
            return m.networks
    return (STUDENT,)


def model_label(ckpt: dict[str, Any], key: str) -> str:
    """What to call the network under checkpoint key `key` in a sentence ("teacher", "student", "second
    network"; "network" where it is the run's only one, "first network" beside CPS's second)."""
    network = {n.key: n for n in declared(ckpt)}.get(key)
    if network is None:
        return key
    return network.noun or network.label


def reported_key(ckpt: dict[str, Any]) -> str:
    """The checkpoint key of the model whose val mIoU training recorded (best_miou): its method's first
    evaluated network, so a checkpoint says it without the method's class."""
    return next(n.key for n in declared(ckpt) if n.evaluated)


def held(ckpt: dict[str, Any], network: Network) -> bool:
    """Whether the checkpoint holds the weights of `network` (of every member of an ensemble)."""
    return all(key in ckpt for key in network.members) if network.members else network.key in ckpt


def model_names(ckpt: dict[str, Any]) -> list[str]:
    """What `--model` (eval.model) accepts for this checkpoint: its networks' names."""
    return [n.name for n in declared(ckpt) if held(ckpt, n)]


def resolve_model(ckpt: dict[str, Any], checkpoint: str | Path, asked: str) -> str:
    """The checkpoint key of the network named `asked` (eval.model): a network its method declares by name
    ("teacher", "student", "second_network"); "teacher" on a run without one is its reported network, as
    the default eval.model reads every run. A name the checkpoint lacks is one CheckpointError sentence."""
    by_name = {n.name: n.key for n in declared(ckpt) if held(ckpt, n)}
    if asked in by_name:
        return by_name[asked]
    if asked == "teacher" and "teacher" not in ckpt:
        return reported_key(ckpt)
    valid = ", ".join(by_name) or "none"
    raise CheckpointError(f"checkpoint {checkpoint} holds no {asked!r} network; its networks: {valid}")


def describe_model(ckpt: dict[str, Any], path: str | Path, key: str, asked: str) -> str:
    """The network a command uses, named with what its checkpoint records, so that a log says which weights
    gave its numbers: 'the teacher of runs/x/best.pth (epoch 12, iteration 3000, val mIoU 47.23 at save
    time)'. latest.pth, saved after a worse epoch than the best, gives 'best val mIoU 47.23 at epoch 12'; a
    mIoU measured on another network of the checkpoint than `key` names that network; `asked` ("teacher" or
    "student", eval.model) that the checkpoint lacks is said (a run without a teacher gives its network)."""
    label = model_label(ckpt, key)
    notes = []
    if asked == "teacher" and "teacher" not in label:  # PS-MT's "teachers' ensemble" is what it asks for
        notes.append("it holds no teacher")
    facts = [f"{name} {ckpt[name]}" for name in ("epoch", "iteration") if isinstance(ckpt.get(name), int)]
    best = ckpt.get("best_miou")
    if isinstance(best, (int, float)) and math.isfinite(best) and best >= 0:
        reported = reported_key(ckpt)
        of = "" if reported == key else f" of the {model_label(ckpt, reported)}"
        best_epoch = ckpt.get("best_epoch")
        if best_epoch is not None and best_epoch == ckpt.get("epoch"):
            facts.append(f"val mIoU {100 * best:.2f}{of} at save time")
        elif isinstance(best_epoch, int) and best_epoch > 0:
            facts.append(f"best val mIoU {100 * best:.2f}{of} at epoch {best_epoch}")
        else:
            facts.append(f"best val mIoU {100 * best:.2f}{of} so far")
    if not facts:
        facts.append("no epoch or mIoU recorded")
    notes.append(", ".join(facts))
    return f"the {label} of {path} ({'; '.join(notes)})"


def load_trained_model(
    cfg: Config, ckpt: dict[str, Any], checkpoint: str | Path, which: str, info: DistInfo
) -> tuple[nn.Module, str]:
    """The model of a training checkpoint `ckpt` (read from `checkpoint` by load_checkpoint), ready for
    inference (eval mode, on info.device).

    which: a network's name (`resolve_model`). Returns (model, the checkpoint key that was loaded). A
    checkpoint without those weights or with another class count than the config is a CheckpointError
    naming the file.
    """
    key = resolve_model(ckpt, checkpoint, which)
    stored_classes = ckpt.get("config", {}).get("data", {}).get("num_classes")
    if stored_classes is not None and stored_classes != cfg.data.num_classes:
        raise CheckpointError(
            f"checkpoint {checkpoint} predicts {stored_classes} classes but the config has "
            f"data.num_classes {cfg.data.num_classes}"
        )
    network = {n.key: n for n in declared(ckpt)}.get(key)
    members = network.members if network is not None else ()
    models = []
    for member in members or (key,):  # an ensemble's members, or the one network
        models.append(build_model(cfg, info, pretrained=False))
        load_model_state(models[-1], ckpt[member], checkpoint)
    model = Ensemble(models) if members else models[0]
    model.eval()
    return model, key
