"""UniMatch V1 (Yang et al., CVPR 2023): FixMatch with two strong views and a feature-perturbed stream.

The weak view's prediction (no gradient) is the pseudo-label of three students' views: two strong views,
each with its own colour augmentation and its own CutMix box (p = 0.5, from another image of the batch), and
the weak view decoded from encoder features with channel dropout (0.5). Each unsupervised term is the CE on
confident (>= tau), non-padding pixels divided by the number of non-padding pixels:

    L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2.
"""

from __future__ import annotations

import torch
from torch import nn

from imas import cutmix
from imas.losses import confident_pixel_loss
from imas.methods.base import Method, StepOutput, labeled_part, main_logits
from imas.methods.fixmatch import cutmix_strong_view, pseudo_labels
from imas.normalization import normalize
from imas.precision import autocast_context


class UniMatch(Method):
    section = "unimatch"

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
        # Two strong views, each with its own colour draws and its own CutMix box and partner.
        strong, sources, boxes = zip(*(cutmix_strong_view(weak, s.cutmix_p, self.device) for _ in range(2)))

        with autocast_context(self.cfg, self.device):
            # Labeled and weak images, clean and feature-perturbed, in one forward; then both strong views.
            outputs, perturbed = net(
                torch.cat([normalize(labeled["image"]), normalize(weak)]), fp_dropout=s.fp_dropout
            )
            strong_logits = main_logits(net(normalize(torch.cat(strong)))).chunk(2)
        confidence, label = pseudo_labels(main_logits(outputs)[n:])
        # Each strong view's targets: the weak ones with its own box pasted from its own partner.
        targets = [
            [cutmix.paste(t, box, src) for t in (confidence, label, valid)]
            for src, box in zip(sources, boxes)
        ]

        loss_x = self.criterion(labeled_part(outputs, n), labeled["mask"])
        loss_s1, loss_s2 = (
            confident_pixel_loss(logits, cm_label, cm_conf, s.threshold, cm_valid)
            for logits, (cm_conf, cm_label, cm_valid) in zip(strong_logits, targets)
        )
        loss_fp = confident_pixel_loss(perturbed[n:], label, confidence, s.threshold, valid)
        loss = (loss_x + 0.25 * loss_s1 + 0.25 * loss_s2 + 0.5 * loss_fp) / 2
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_s": ((loss_s1 + loss_s2) / 2).detach(),
            "loss_fp": loss_fp.detach(),
            "confident": (confidence >= s.threshold).float().mean(),
            "cutmix_rate": torch.stack([box.flatten(1).any(1) for box in boxes]).float().mean(),
        }
        views = {}
        if keep_views:
            views = {
                "weak": weak,
                "strong_1": strong[0],
                "strong_2": strong[1],
                "pseudo_label": torch.where(confidence >= s.threshold, label, 255),
                "prediction_fp": perturbed[n:].detach().argmax(1),
            }
        return StepOutput(loss, scalars, {}, views)
