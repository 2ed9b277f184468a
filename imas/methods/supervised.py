"""SupOnly: the labeled images alone, L = L_x; the baseline every semi-supervised method must beat."""

from __future__ import annotations

import torch
from torch import nn

from imas.methods.base import Method, Progress, StepOutput
from imas.normalization import normalize
from imas.precision import autocast_context


class SupOnly(Method):
    uses_unlabeled = False

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        with autocast_context(self.cfg, self.device):
            outputs = nets["model"](normalize(labeled["image"]))
        loss_x = self.supervised_loss(outputs, labeled["mask"])
        return StepOutput(loss_x, {"loss_x": loss_x.detach()})
