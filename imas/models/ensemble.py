"""Several segmentors evaluated as one: the mean of their logits (PS-MT's teachers, docs/methods.md)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from imas.models.deeplabv3plus import SegOutput


class Ensemble(nn.Module):
    """members: segmentors that return SegOutput. forward(x [B, 3, H, W]) -> SegOutput whose logits
    [B, K, H, W] are the mean of the members' logits (each member in the ensemble's mode). Holds no weights
    of its own: a checkpoint keeps each member under its own key."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.train(members[0].training)  # the members' mode, so that a caller restoring it restores theirs

    def forward(self, x: Tensor) -> SegOutput:
        logits = torch.stack([member(x).logits for member in self.members]).mean(dim=0)
        return SegOutput(logits)
