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
from imas.inference import normalize
from imas.losses import confident_pixel_loss
from imas.methods.base import Method, StepOutput, labeled_part, main_logits
from imas.precision import autocast_context


def weak_pseudo_labels(
    logits: torch.Tensor, valid: torch.Tensor, source: torch.Tensor, boxes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pseudo-labels of the weak view and of its CutMix counterpart.

    logits: [B, K, H, W] on the weak view (detached here); valid: bool [B, H, W]; source: [B] partner indices;
    boxes: bool [B, H, W]. Returns (confidence, label, then the same two and valid with each box's pixels
    taken from the partner), all [B, H, W].
    """
    confidence, label = F.softmax(logits.detach().float(), dim=1).max(dim=1)
    mixed_label = torch.where(boxes, label[source], label)
    mixed_confidence = torch.where(boxes, confidence[source], confidence)
    mixed_valid = torch.where(boxes, valid[source], valid)
    return confidence, label, mixed_confidence, mixed_label, mixed_valid


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
        b, _, h, w = weak.shape
        n = labeled["image"].shape[0]

        # Strong view with a CutMix box (p per image) from another image of the batch.
        source = cutmix.other_image(b, device=self.device)
        boxes = cutmix.single_boxes(b, h, w, s.cutmix_p, device=self.device)
        strong = augment.colour_strong_view(weak)
        strong = torch.where(boxes[:, None], strong[source], strong)

        # The labeled and weak images in one forward (train mode); the weak prediction is only a target.
        with autocast_context(self.cfg, self.device):
            outputs = net(torch.cat([normalize(labeled["image"]), normalize(weak)]))
            strong_logits = main_logits(net(normalize(strong)))
        confidence, label, cm_confidence, cm_label, cm_valid = weak_pseudo_labels(
            main_logits(outputs)[n:], valid, source, boxes
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
