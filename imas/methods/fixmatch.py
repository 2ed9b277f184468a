"""FixMatch (Sohn et al., NeurIPS 2020) for segmentation, as UniMatch's authors run it (docs/methods.md).

One network, no teacher. Its prediction on the weak view (no gradient) is the pseudo-label; a strong view
of the same image (colour jitter, grayscale, blur, and with p = 0.5 a CutMix box from another image of the
batch, whose pseudo-label comes along; the box drawn as the released sampler draws it) is trained on the
pixels whose confidence is >= tau:

    L = (L_x + lambda_u * L_s) / 2,   L_s = sum of confident, non-padding CE / non-padding pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imas import augment, cutmix
from imas.config import Config, check_at_least, check_interval
from imas.losses import confident_pixel_loss, confident_share
from imas.methods.base import Method, Progress, StepOutput, forward_views
from imas.precision import autocast_context


def pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, label) [B, H, W] of the weak view's logits [B, K, H, W], without gradient."""
    return F.softmax(logits.detach().float(), dim=1).max(dim=1)


def cutmix_strong_view(
    weak: torch.Tensor, cutmix_p: float, device: torch.device, source: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A strong view of uint8 images [B, 3, H, W]: the colour ops, then with p = cutmix_p per image a box
    (the released sampler, docs/methods.md) of a partner image's strong view; the partners `source` [B] are
    drawn here unless given. Returns (strong view, partner indices [B], boxes bool [B, H, W])."""
    b, _, h, w = weak.shape
    if source is None:
        source = cutmix.other_image(b, device=device)
    boxes = cutmix.single_boxes(b, h, w, cutmix_p, device=device)
    strong = cutmix.paste(augment.colour_strong_view(weak), boxes, source)
    return strong, source, boxes


@dataclass
class FixMatchSettings:
    """FixMatch (train.method fixmatch), as UniMatch's authors run it for segmentation: one network, the weak
    view's prediction is the pseudo-label of a strong view (colour jitter, grayscale, blur, CutMix)."""

    threshold: float = 0.95  # tau on the weak view's confidence (UniMatch's configs: 0.95 VOC, 0 Cityscapes)
    lambda_u: float = 1.0  # L = (L_x + lambda_u * L_s) / 2
    cutmix_p: float = 0.5  # probability that an image's strong view gets a CutMix box

    def check(self, cfg: Config) -> None:
        # 0 is allowed: every pixel is a target, as in UniMatch's Cityscapes configs.
        check_interval("fixmatch.threshold", self.threshold, 0, 1, "[)")
        check_at_least("fixmatch.lambda_u", self.lambda_u, 0)
        check_interval("fixmatch.cutmix_p", self.cutmix_p, 0, 1)


class FixMatch(Method):
    Settings = FixMatchSettings

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        assert unlabeled is not None
        s, net = self.settings, nets["model"]
        weak, valid = unlabeled["image"], unlabeled["valid"]
        strong, source, boxes = cutmix_strong_view(weak, s.cutmix_p, self.device)

        # The labeled and weak images in one forward (train mode); the weak prediction is only a target.
        with autocast_context(self.cfg, self.device):
            out = forward_views(net, {"labeled": labeled["image"], "weak": weak})
            strong_logits = forward_views(net, {"strong": strong})["strong"].logits
        # The targets travel with the pasted pixels: the partner's label, confidence and padding.
        confidence, label = pseudo_labels(out["weak"].logits)
        cm_confidence, cm_label, cm_valid = (
            cutmix.paste(t, boxes, source) for t in (confidence, label, valid)
        )
        loss_x = self.supervised_loss(out["labeled"], labeled["mask"])
        loss_s = confident_pixel_loss(strong_logits, cm_label, cm_confidence, s.threshold, cm_valid)
        loss = (loss_x + s.lambda_u * loss_s) / 2
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_s.detach(),
            "confident": confident_share(confidence, s.threshold, valid),
            "cutmix_rate": boxes.flatten(1).any(1).float().mean(),
        }
        views = {}
        if keep_views:
            views = {
                "weak": weak,
                "strong": strong,
                "pseudo_label": torch.where(cm_confidence >= s.threshold, cm_label, 255),
                "prediction": strong_logits.detach().argmax(1),
            }
        return StepOutput(loss, scalars, {}, views)
