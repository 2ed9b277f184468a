"""torch.compile of the networks a training step runs through (train.compile), and how many graphs it made."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def compile_nets(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """torch.compile the modules the step trains through.

    The DDP wrapper, where there is one, is compiled rather than wrapped around a compiled module: dynamo
    then splits the graph at DDP's bucket boundaries, so gradient communication still overlaps the backward.
    The plain modules in method.models stay as they are: checkpoints keep their key names (no `_orig_mod.`
    prefix), so compiled and eager runs resume each other, and the forwards without gradient (an EMA
    teacher, the student's eval-mode pass, evaluation) run eagerly. Methods call their networks with
    batches of several sizes (iMAS's CutMix view holds only the groups that fired; FixMatch runs labeled +
    weak, then strong): dynamo's automatic dynamic shapes recompile at the first other size with a symbolic
    batch, so the graphs stay few, and `compiled_graphs` counts them, recompilations included.
    """
    # A fresh start, so that the count is this run's and no earlier compile in the process (tests train many
    # runs in one) fills dynamo's per-function cache of compiled variants.
    torch._dynamo.reset()
    _dynamo_counters().clear()
    return {name: torch.compile(net) for name, net in nets.items()}


def _dynamo_counters() -> Any:
    from torch._dynamo.utils import counters  # only touched when compiling

    return counters


def compiled_graphs() -> int:
    """How many graphs torch.compile has built since `compile_nets` (its recompilations included)."""
    return int(_dynamo_counters()["stats"]["unique_graphs"])
