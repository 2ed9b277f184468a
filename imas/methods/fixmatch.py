"""FixMatch (Sohn et al., NeurIPS 2020) for segmentation, as UniMatch's authors run it (docs/methods.md).

One network, no teacher. Its prediction on the weak view (no gradient) is the pseudo-label; a strong view
of the same image (colour jitter, grayscale, blur, and with p = 0.5 a CutMix box from another image of the
batch, whose pseudo-label comes along) is trained on the pixels whose confidence is >= tau:

    L = (L_x + lambda_u * L_s) / 2,   L_s = sum of confident, non-padding CE / non-padding pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imas import augment, cutmix
from imas.losses import confident_pixel_loss
from imas.methods.base import Method, StepOutput, labeled_part, main_logits
from imas.normalization import normalize
from imas.precision import autocast_context


def pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, label) [B, H, W] of the weak view's logits [B, K, H, W], without gradient."""
    return F.softmax(logits.detach().float(), dim=1).max(dim=1)


def cutmix_strong_view(
    weak: torch.Tensor, cutmix_p: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A strong view of uint8 images [B, 3, H, W]: the colour ops, then with p = cutmix_p per image a box of
    another image's strong view. Returns (strong view, partner indices [B], boxes bool [B, H, W])."""
    b, _, h, w = weak.shape
    source = cutmix.other_image(b, device=device)
    boxes = cutmix.single_boxes(b, h, w, cutmix_p, device=device)
    strong = cutmix.paste(augment.colour_strong_view(weak), boxes, source)
    return strong, source, boxes


class FixMatch(Method):
    section = "fixmatch"

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        keep_views: bool = False,
    ) -> StepOutput:
        assert unlabeled is not None
        s, net = self.settings, nets["model"]
        weak, valid = unlabeled["image"], unlabeled["valid"]
        n = labeled["image"].shape[0]
        strong, source, boxes = cutmix_strong_view(weak, s.cutmix_p, self.device)

        # The labeled and weak images in one forward (train mode); the weak prediction is only a target.
        with autocast_context(self.cfg, self.device):
            outputs = net(torch.cat([normalize(labeled["image"]), normalize(weak)]))
            strong_logits = main_logits(net(normalize(strong)))
        # The targets travel with the pasted pixels: the partner's label, confidence and padding.
        confidence, label = pseudo_labels(main_logits(outputs)[n:])
        cm_confidence, cm_label, cm_valid = (
            cutmix.paste(t, boxes, source) for t in (confidence, label, valid)
        )
        loss_x = self.criterion(labeled_part(outputs, n), labeled["mask"])
        loss_s = confident_pixel_loss(strong_logits, cm_label, cm_confidence, s.threshold, cm_valid)
        loss = (loss_x + s.lambda_u * loss_s) / 2
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_s.detach(),
            "confident": (confidence >= s.threshold).float().mean(),
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
