"""The networks a training checkpoint holds, what each is called, and loading one for inference.

A checkpoint keeps each network under the same key whatever the method, so that imas-eval and imas-predict
read any run's checkpoint: "model" (the student, or the first of two networks), "teacher" (an EMA teacher)
and "model2" (CPS's second network). The methods (imas.methods) declare which keys they train and
evaluate; this module names them in logs and sentences.
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
from imas.models import build_model

# What training logs and metrics call each checkpoint key ("student mIoU"), whatever the method.
LABELS = {"model": "student", "teacher": "teacher", "model2": "second network"}


def model_label(ckpt: dict[str, Any], key: str) -> str:
    """What to call the network under checkpoint key `key` ("teacher", "model", "model2") in a sentence.

    "model" is the student beside a teacher, the first network beside a second (CPS), else the run's only
    network (supervised, FixMatch, UniMatch): "student" would be wrong there, as no teacher exists."""
    if key == "teacher":
        return "teacher"
    if key == "model2":
        return "second network"
    if "teacher" in ckpt:
        return "student"
    return "first network" if "model2" in ckpt else "network"


def reported_key(ckpt: dict[str, Any]) -> str:
    """The checkpoint key of the model whose val mIoU training recorded (best_miou): the teacher where the
    checkpoint holds one, else the first network. Every method reports by this rule (its `evaluated[0]`;
    tests/test_methods.py checks it), so a checkpoint says it without the method's class."""
    return "teacher" if "teacher" in ckpt else "model"


def describe_model(ckpt: dict[str, Any], path: str | Path, key: str, asked: str) -> str:
    """The network a command uses, named with what its checkpoint records, so that a log says which weights
    gave its numbers: 'the teacher of runs/x/best.pth (epoch 12, iteration 3000, val mIoU 47.23 at save
    time)'. latest.pth, saved after a worse epoch than the best, gives 'best val mIoU 47.23 at epoch 12'; a
    mIoU measured on another network of the checkpoint than `key` names that network; `asked` ("teacher" or
    "student", eval.model) that the checkpoint lacks is said (a run without a teacher gives its network)."""
    label = model_label(ckpt, key)
    notes = []
    if asked == "teacher" and key != "teacher":
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

    which: "teacher" or "student"; a supervised run's checkpoint has no teacher, so its "model" is used.
    Returns (model, the checkpoint key that was loaded). A checkpoint without those weights or with another
    class count than the config is a CheckpointError naming the file.
    """
    key = {"teacher": "teacher", "student": "model"}[which]
    if key not in ckpt and which == "teacher" and "model" in ckpt:
        key = "model"  # a supervised run: its only model
    if key not in ckpt:
        raise CheckpointError(f"checkpoint {checkpoint} holds no {which!r} weights")
    stored_classes = ckpt.get("config", {}).get("data", {}).get("num_classes")
    if stored_classes is not None and stored_classes != cfg.data.num_classes:
        raise CheckpointError(
            f"checkpoint {checkpoint} predicts {stored_classes} classes but the config has "
            f"data.num_classes {cfg.data.num_classes}"
        )
    model = build_model(cfg, info, pretrained=False)
    load_model_state(model, ckpt[key], checkpoint)
    model.eval()
    return model, key
