"""Self-training re-training (ST / ST++, Yang et al., CVPR 2022): one network trained on labeled images and
pseudo-labeled ones together, the pseudo-labeled ones strongly augmented. docs/methods.md, "ST++".

A re-training stage is one ordinary run of this method, made by the chain that `imas-st-plus-plus` runs
(imas.st_plus_plus): its labeled split lists the labeled images (image, ground truth), repeated, followed
by the pseudo-labeled ones (image, pseudo-label), the released mix of one shuffled union; the entries from
`pseudo_from` on are the pseudo-labeled ones. After the weak transform every image gets, a pseudo-labeled
image also gets the released strong augmentation: the colour ops of imas.augment.colour_strong_view
(jitter with p = 0.8, grayscale with p = 0.2, blur with p = 0.5), then with p = 0.5 a cutout box of random
noise whose pixels the loss ignores (label 255). The loss is the supervised loss of the whole batch.

The section also holds the chain's own settings (the selection, the pseudo-labelling checkpoint and its
test-time augmentation), so that one config describes the whole recipe and a changed one is refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import nn

from imas.augment import colour_strong_view
from imas.config import Config, check_interval
from imas.errors import ConfigError
from imas.losses import SupervisedLoss
from imas.methods.base import Method, Progress, StepOutput
from imas.normalization import normalize
from imas.precision import autocast_context

# The released cutout (ST++ dataset/transform.py, cutout): with p = 0.5, area U[0.02, 0.4]·H·W and aspect
# ratio U[0.3, 1/0.3] redrawn together with the corner until the box fits; the box gets uniform noise.
CUTOUT_P = 0.5
CUTOUT_AREA = (0.02, 0.4)
CUTOUT_RATIO = (0.3, 1 / 0.3)
# Candidate boxes drawn at once per image; the first that fits is kept. A candidate fits with probability
# about 0.27 (measured by sampling at crops of 48 to 769 px), so none of 256 fits with probability < 1e-35
# (the image then gets no box).
CUTOUT_CANDIDATES = 256


class LabelWith(str, enum.Enum):
    best = "best"  # best.pth: the epoch with the best val mIoU, as released
    latest = "latest"  # latest.pth: the last epoch, which never consults the val labels


@dataclass
class SelfTrainingSettings:
    """ST++ (selective: true) or ST (false) as `imas-st-plus-plus` runs it (train.method self_training)."""

    selective: bool = True  # ST++: rank by stability, re-train on the reliable share first; false: ST
    reliable: float = 0.5  # share of the unlabeled images (the most stable) in the first re-training
    label_with: LabelWith = LabelWith.best  # the checkpoint of a stage that pseudo-labels for the next
    tta_scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.5, 2.0])  # pseudo-labelling
    tta_flip: bool = True  # pseudo-labelling also predicts the mirrored image
    strong: bool = True  # strong augmentation of the pseudo-labeled images (colour, blur, cutout)
    # Set by the chain in each re-training stage's config: the index of the first pseudo-labeled entry of
    # its labeled split. -1 (a chain's own config): this config is run by imas-st-plus-plus, not imas-train.
    pseudo_from: int = -1

    def check(self, cfg: Config) -> None:
        check_interval("self_training.reliable", self.reliable, 0, 1, "()")
        if not self.tta_scales or min(self.tta_scales) <= 0:
            raise ConfigError(
                f"self_training.tta_scales must be a non-empty list of positive scales, got {self.tta_scales}"
            )
        if self.pseudo_from < -1:
            raise ConfigError(f"self_training.pseudo_from must be >= -1, got {self.pseudo_from}")


def cutout_boxes(
    batch: int, height: int, width: int, p: float = CUTOUT_P, device: torch.device | str | None = None
) -> torch.Tensor:
    """The released cutout box per image, with probability p: BoolTensor [B, H, W].

    Released, per image: area A ~ U[0.02, 0.4]·H·W and ratio r ~ U[0.3, 1/0.3], w = ⌊sqrt(A / r)⌋,
    h = ⌊sqrt(A·r)⌋, corner x ~ U{0..W-1}, y ~ U{0..H-1}, all redrawn until x + w <= W and y + h <= H.
    Here each image draws CUTOUT_CANDIDATES such tuples at once (on the CPU, from the global generator, so
    the boxes do not depend on the device) and keeps the first that fits: the loop's distribution, without
    a loop."""
    k = CUTOUT_CANDIDATES
    u = torch.rand(5, batch, k)
    fire = torch.rand(batch) < p  # [B]
    area = (CUTOUT_AREA[0] + (CUTOUT_AREA[1] - CUTOUT_AREA[0]) * u[0]) * (height * width)  # [B, K]
    ratio = CUTOUT_RATIO[0] + (CUTOUT_RATIO[1] - CUTOUT_RATIO[0]) * u[1]
    box_w, box_h = torch.sqrt(area / ratio).long(), torch.sqrt(area * ratio).long()
    left, top = (u[2] * width).long(), (u[3] * height).long()
    fits = (left + box_w <= width) & (top + box_h <= height)  # [B, K]
    first = fits.int().argmax(1, keepdim=True)  # the first fitting candidate (0 where none fits)
    keep = fire & fits.any(1)

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(1, first)[:, 0].to(device)  # [B]

    top, left, box_h, box_w = pick(top), pick(left), pick(box_h), pick(box_w * keep[:, None])
    rows = torch.arange(height, device=device)[None, :, None]  # [1, H, 1]
    cols = torch.arange(width, device=device)[None, None, :]  # [1, 1, W]
    inside_rows = (rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
    inside_cols = (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
    return inside_rows & inside_cols


def strong_view(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The released strong augmentation of a batch: image uint8 [B, 3, H, W], mask [B, H, W] -> the strong
    image, the mask with 255 in the cutout box, and the boxes bool [B, H, W]. The box is filled with noise
    uniform in {0..254} per pixel and channel (the released float noise cast to uint8)."""
    b, _, h, w = image.shape
    strong = colour_strong_view(image)
    boxes = cutout_boxes(b, h, w, CUTOUT_P, image.device)
    noise = torch.randint(0, 255, image.shape, dtype=torch.uint8, device=image.device)
    strong = torch.where(boxes[:, None], noise, strong)
    return strong, torch.where(boxes, torch.full_like(mask, 255), mask), boxes


class SelfTraining(Method):
    """One re-training stage of ST / ST++ (the loss of a SupOnly step over labeled and pseudo-labeled images,
    the pseudo-labeled ones strongly augmented)."""

    Settings = SelfTrainingSettings
    uses_unlabeled = False  # the pseudo-labeled images come in the labeled batches

    def __init__(
        self, cfg: Config, trained: dict[str, nn.Module], criterion: SupervisedLoss, device: torch.device
    ) -> None:
        super().__init__(cfg, trained, criterion, device)
        if self.settings.pseudo_from < 0:
            raise ConfigError(
                "train.method self_training trains the re-training stages of a self-training chain: run "
                "this config with imas-st-plus-plus, which makes the pseudo-labels and sets "
                "self_training.pseudo_from"
            )

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        image, mask = labeled["image"], labeled["mask"]
        pseudo = labeled["index"] >= self.settings.pseudo_from  # [B]: the entries after the labeled ones
        if self.settings.strong:
            # Every image of the batch is augmented (the draws then depend on the batch size only, and no
            # host synchronisation picks images); the labeled ones keep their weak view.
            strong, strong_mask, _ = strong_view(image, mask)
            image = torch.where(pseudo[:, None, None, None], strong, image)
            mask = torch.where(pseudo[:, None, None], strong_mask, mask)
        with autocast_context(self.cfg, self.device):
            outputs = nets["model"](normalize(image))
        loss = self.supervised_loss(outputs, mask)
        return StepOutput(loss, {"loss_x": loss.detach(), "pseudo_share": pseudo.float().mean()})
