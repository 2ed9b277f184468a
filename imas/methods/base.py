"""The contract between the training loop and a method (docs/extending.md walks through it).

A method declares, as class attributes, what the loop must provide and keep:

- `section`: the name of its config section (None: no settings), a field of imas.config.Config;
- `uses_unlabeled`: whether its step reads unlabeled batches (the loop then checks and loads that split);
- `trained`: the checkpoint keys of the models the optimiser trains; the loop builds them, in this order,
  from one seed each (the first from train.seed itself), wraps them in DDP and hands both forms to `step`;
- `evaluated`: the models evaluated at each evaluation, the reported one first (its mIoU is eval/miou, picks
  best.pth and is what metrics.jsonl records): the teacher where the method keeps one, else "model", the
  rule by which imas.networks.reported_key reads a checkpoint;
- `per_image`: names of the per-unlabeled-image values its steps return; every name gets its history
  `<name>.csv` in the run directory, a `train/<name>` TensorBoard histogram and its sections of imas-report;
- `min_batch_size`: the smallest train.batch_size its forwards work with (imas.methods.check_method checks
  it when a command loads a config).

and implements `step` (one iteration's loss and what to log) and, when it keeps models outside the optimiser
(an EMA teacher), `after_step`. Everything else (checkpoints, resume, DDP, SyncBN, AMP, logging, panels, the
divergence guard) is the loop's and works the same for every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from imas.config import Config
from imas.losses import SupervisedLoss


@dataclass
class StepOutput:
    """What one training step gives the loop.

    loss: the scalar to back-propagate. scalars: detached 0-d tensors to log (averaged over the logging
    window; no host synchronisation here). per_image: [B] tensors, one value per unlabeled image of this
    rank's batch (e.g. "hardness"). views: named image views for the TensorBoard panel, only when the loop
    asked for them (uint8 images [B, 3, H, W] and label maps [B, H, W], 255 = none). notes: per-image
    values shown as text beside the panel's rows, with the views only (e.g. "e": easiness [B] as a float,
    "cutmix": whether its CutMix fired [B] as a bool).
    """

    loss: torch.Tensor
    scalars: dict[str, torch.Tensor]
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)
    views: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: dict[str, torch.Tensor] = field(default_factory=dict)


def main_logits(outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The segmentation logits of a forward's output (train mode with an aux head returns (logits, aux))."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def labeled_part(
    outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor], n: int
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The first n images of a forward's output, in the form the supervised criterion takes."""
    if isinstance(outputs, tuple):
        return outputs[0][:n], outputs[1][:n]
    return outputs[:n]


class Method:
    """Base class of the methods in imas.methods.METHODS; see the module docstring for the contract."""

    section: ClassVar[str | None] = None
    uses_unlabeled: ClassVar[bool] = True
    trained: ClassVar[tuple[str, ...]] = ("model",)
    evaluated: ClassVar[tuple[str, ...]] = ("model",)
    per_image: ClassVar[tuple[str, ...]] = ()
    # Images per device per step: a forward of a single image in train mode cannot normalise the ASPP's
    # pooled features (iMAS's forwards always concatenate several views, so one image is enough there).
    min_batch_size: ClassVar[int] = 2

    def __init__(
        self, cfg: Config, trained: dict[str, nn.Module], criterion: SupervisedLoss, device: torch.device
    ) -> None:
        """trained: the plain (unwrapped) models named in `trained`, freshly built or about to be resumed."""
        self.cfg = cfg
        self.criterion = criterion
        self.device = device
        self.settings: Any = getattr(cfg, self.section) if self.section else None
        # Every model a checkpoint keeps, by checkpoint key; a subclass adds the ones it keeps itself.
        self.models: dict[str, nn.Module] = dict(trained)

    @property
    def reported(self) -> str:
        return self.evaluated[0]

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        keep_views: bool = False,
    ) -> StepOutput:
        """One iteration: nets are the trained models as the loop runs them (DDP-wrapped when distributed;
        the plain modules are self.models). labeled: "image" uint8 [B, 3, H, W], "mask" [B, H, W];
        unlabeled: "image" uint8 [B, 3, H, W], "valid" bool [B, H, W] (False on crop padding), "index" [B]
        (None when the method does not use unlabeled data). Called under the loop's train mode."""
        raise NotImplementedError

    def after_step(self, iteration: int, epoch: int) -> None:
        """Called after each optimiser step of global iteration `iteration` (e.g. an EMA update)."""
