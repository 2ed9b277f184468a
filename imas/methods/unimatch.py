"""UniMatch V1 (Yang et al., CVPR 2023): FixMatch with two strong views and a feature-perturbed stream.

The weak view's prediction (no gradient) is the pseudo-label of three students' views: two strong views,
each with its own colour augmentation and its own CutMix box (p = 0.5), both from one partner image of the
batch as released (docs/methods.md), and
the weak view decoded from encoder features with channel dropout (0.5). Each unsupervised term is the CE on
confident (>= tau), non-padding pixels divided by the number of non-padding pixels:

    L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from imas import cutmix
from imas.config import Config, check_interval
from imas.losses import confident_pixel_loss, confident_share
from imas.methods.base import Method, Progress, StepOutput, forward_views
from imas.methods.fixmatch import cutmix_strong_view, pseudo_labels
from imas.precision import autocast_context


@dataclass
class UniMatchSettings:
    """UniMatch V1 (train.method unimatch): FixMatch with two strong views and a feature-perturbed stream."""

    threshold: float = 0.95  # tau (UniMatch's configs: 0.95 VOC, 0 Cityscapes)
    cutmix_p: float = 0.5  # per strong view and image
    fp_dropout: float = 0.5  # channel dropout on the encoder features of the feature-perturbed stream

    def check(self, cfg: Config) -> None:
        check_interval("unimatch.threshold", self.threshold, 0, 1, "[)")
        check_interval("unimatch.cutmix_p", self.cutmix_p, 0, 1)
        # 0 would be no perturbed stream at all; 1 drops every channel.
        check_interval("unimatch.fp_dropout", self.fp_dropout, 0, 1, "()")


class UniMatch(Method):
    Settings = UniMatchSettings

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
        # Two strong views, each with its own colour draws and its own CutMix box, from one partner image
        # (the released loader pairs each image with the same image of a second batch for both views).
        partner = cutmix.other_image(weak.shape[0], device=self.device)
        strong, sources, boxes = zip(
            *(cutmix_strong_view(weak, s.cutmix_p, self.device, partner) for _ in range(2))
        )

        with autocast_context(self.cfg, self.device):
            # Labeled and weak images, clean and feature-perturbed, in one forward; then both strong views.
            out = forward_views(net, {"labeled": labeled["image"], "weak": weak}, fp_dropout=s.fp_dropout)
            strong_out = forward_views(net, {"strong_1": strong[0], "strong_2": strong[1]})
        strong_logits = [strong_out[name].logits for name in ("strong_1", "strong_2")]
        perturbed = out["weak"].perturbed
        confidence, label = pseudo_labels(out["weak"].logits)
        # Each strong view's targets: the weak ones with its own box pasted from its own partner.
        targets = [
            [cutmix.paste(t, box, src) for t in (confidence, label, valid)]
            for src, box in zip(sources, boxes)
        ]

        loss_x = self.supervised_loss(out["labeled"], labeled["mask"])
        loss_s1, loss_s2 = (
            confident_pixel_loss(logits, cm_label, cm_conf, s.threshold, cm_valid)
            for logits, (cm_conf, cm_label, cm_valid) in zip(strong_logits, targets)
        )
        loss_fp = confident_pixel_loss(perturbed, label, confidence, s.threshold, valid)
        loss = (loss_x + 0.25 * loss_s1 + 0.25 * loss_s2 + 0.5 * loss_fp) / 2
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_s": ((loss_s1 + loss_s2) / 2).detach(),
            "loss_fp": loss_fp.detach(),
            "confident": confident_share(confidence, s.threshold, valid),
            "cutmix_rate": torch.stack([box.flatten(1).any(1) for box in boxes]).float().mean(),
        }
        views = {}
        if keep_views:
            views = {
                "weak": weak,
                "strong_1": strong[0],
                "strong_2": strong[1],
                "pseudo_label": torch.where(confidence >= s.threshold, label, 255),
                "prediction_fp": perturbed.detach().argmax(1),
            }
        return StepOutput(loss, scalars, {}, views)
