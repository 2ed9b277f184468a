"""EMA teacher (method.md §8), in the style of timm's ModelEmaV3.

Build the teacher from the plain student *before* the student is wrapped in DistributedDataParallel, and
pass the unwrapped student (``ddp_model.module``) to `update`: the teacher is never trained, so a DDP
wrapper would only add gradient hooks and a second copy of every bucket. Each rank updates its own teacher
from its own student replica. DDP keeps the replicas' weights identical, so the teachers' weights stay
identical too; without SyncBN the BN running statistics are each rank's own, so imas.train broadcasts
rank 0's buffers of student and teacher before every evaluation.
A SyncBatchNorm student gives a SyncBatchNorm teacher, which is harmless: in eval mode it uses its running
statistics and never communicates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP / DataParallel wrapper (a safety net; callers should pass it plain)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


class EMATeacher:
    """Exponential moving average of the student's weights, used as the teacher.

    - `module`: a deep copy of the student, always in eval mode, requires_grad False, never DDP-wrapped.
    - `update(student, iteration, epoch)`: during the first epoch (epoch 0 here) the teacher becomes an
      exact copy of the student (decay 0); afterwards d = min(1 − 1/(t + 1), decay) with t the global
      iteration, and θ_t ← d·θ_t + (1 − d)·θ_s for parameters and floating buffers (BN running
      statistics); integer buffers (BN's num_batches_tracked) are copied, since an average of counters
      means nothing.
    - `state_dict()` / `load_state_dict()`: the teacher's weights with the student's key names, so a
      checkpoint's teacher loads straight into a freshly built model (e.g. for evaluation).

    A plain object rather than an nn.Module, so it can never be registered as a submodule of something that
    gets trained or wrapped.
    """

    def __init__(self, student: nn.Module, decay: float = 0.996) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.module: nn.Module = copy.deepcopy(_unwrap(student))
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
            p.grad = None  # a deep copy carries the student's gradients along; the teacher has none

    def decay_at(self, iteration: int, epoch: int) -> float:
        """The decay used by `update`: 0 during the first epoch, then min(1 − 1/(t + 1), decay)."""
        if epoch == 0:
            return 0.0
        return min(1.0 - 1.0 / (iteration + 1), self.decay)

    @torch.no_grad()
    def update(self, student: nn.Module, iteration: int, epoch: int) -> None:
        """One EMA step after the optimiser step of global iteration `iteration` in epoch `epoch`.

        student: the plain (unwrapped) student; it is only read.
        """
        follow(self.module, _unwrap(student), self.decay_at(iteration, epoch))
        self.module.eval()  # cheap insurance: nothing may ever put the teacher in train mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Forward through the teacher: e.g. logits [B, K, H, W] for images [B, 3, H, W]."""
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
        result = self.module.load_state_dict(state_dict, strict=strict)
        self.module.eval()
        return result


def _pairs(target: nn.Module, source: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Target and source tensors (parameters then buffers) matched by name, in the same order."""
    target_state = dict(target.named_parameters())
    target_state.update(target.named_buffers())
    source_state = dict(source.named_parameters())
    source_state.update(source.named_buffers())
    if target_state.keys() != source_state.keys():
        missing = sorted(target_state.keys() ^ source_state.keys())
        raise ValueError(f"student and teacher differ in these tensors: {', '.join(missing[:5])}")
    names = list(target_state)
    return [target_state[n] for n in names], [source_state[n] for n in names]


@torch.no_grad()
def follow(target: nn.Module, source: nn.Module, decay: float) -> None:
    """θ_target ← d·θ_target + (1 − d)·θ_source (d = decay) for parameters and floating buffers (BN running
    statistics), matched by name; integer buffers (BN's num_batches_tracked) are copied, since an average
    of counters means nothing; d = 0 copies everything exactly. Both plain modules; source is only read."""
    ema_floats, src_floats = [], []
    for t, s in zip(*_pairs(target, source)):
        if decay == 0.0 or not t.is_floating_point():
            t.copy_(s)  # exact copy (lerp with weight 1 might round); ints are never averaged
        else:
            ema_floats.append(t)
            src_floats.append(s.to(dtype=t.dtype))
    if ema_floats:
        # θ_t + (1 − d)(θ_s − θ_t) = d·θ_t + (1 − d)·θ_s, in one fused multi-tensor kernel.
        torch._foreach_lerp_(ema_floats, src_floats, 1.0 - decay)
