"""AugSeg (Zhao et al., CVPR 2023): a mean teacher whose student sees one strong view of each unlabeled
image, made by two augmentations (docs/methods.md):

- random intensity-based augmentation: per image, k ~ U{1, ..., num_ops} ops drawn from a pool of eleven,
  each at its own random strength (imas.augment.augseg_strong_view);
- adaptive label-aided CutMix: with probability 1 - rho_i, rho_i the teacher's entropy-weighted confidence
  on image i, a box of a labeled image (with its ground truth, confidence 1) is pasted into it; then a
  CutMix box of a partner's result (imas.label_mix).

The EMA teacher's prediction on the weak view is the pseudo-label; the student learns from the mixed view
on the pixels whose confidence is >= tau, averaged over every pixel, as released:

    L = L_x + lambda_u * L_u.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imas import augment, label_mix
from imas.config import Config, check_at_least, check_interval
from imas.losses import confident_share, unsupervised_loss
from imas.methods.base import TEACHER_STUDENT, Method, Progress, StepOutput, forward_views
from imas.normalization import normalize
from imas.precision import autocast_context


@dataclass
class AugSegSettings:
    """AugSeg (train.method augseg); the released VOC defaults (Cityscapes: threshold 0, ema_decay 0.996)."""

    threshold: float = 0.95  # tau on the teacher's confidence (released Cityscapes configs: none, i.e. 0)
    lambda_u: float = 1.0  # loss_weight of the released configs
    ema_decay: float = 0.999  # released: 0.999 VOC, 0.996 Cityscapes
    num_ops: int = 3  # at most this many intensity ops per image (num_augs)
    random_num_ops: bool = True  # k ~ U{1, ..., num_ops} per image, else k = num_ops
    label_injection: bool = True  # the adaptive label-aided part of the CutMix (off: plain CutMix)

    def check(self, cfg: Config) -> None:
        check_interval("augseg.threshold", self.threshold, 0, 1, "[)")
        check_at_least("augseg.lambda_u", self.lambda_u, 0)
        check_interval("augseg.ema_decay", self.ema_decay, 0, 1)
        check_interval("augseg.num_ops", self.num_ops, 1, 11)  # at least one op of the eleven


class AugSeg(Method):
    networks = TEACHER_STUDENT  # the EMA teacher is reported, as released
    Settings = AugSegSettings

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        assert unlabeled is not None
        s, net, teacher = self.settings, nets["model"], self.models["teacher"]
        weak = unlabeled["image"]

        # 1. The teacher's pseudo-label and confidence on the weak view, and each image's confidence rho.
        with torch.no_grad(), autocast_context(self.cfg, self.device):
            probs = F.softmax(teacher(normalize(weak)).logits.float(), dim=1)
        confidence, pseudo_label = probs.max(dim=1)
        rho = label_mix.image_confidence(probs)

        # 2. The random intensity view, then the adaptive label-aided CutMix of it (the whole batch mixes:
        # the released configs trigger it with probability 1).
        intensity = augment.augseg_strong_view(weak, s.num_ops, s.random_num_ops)
        probability = label_mix.label_mix_probability(rho) if s.label_injection else torch.zeros_like(rho)
        mix = label_mix.label_aided_cutmix(
            intensity, pseudo_label, confidence, labeled["image"], labeled["mask"], probability
        )

        # 3. One student forward on the labeled and the mixed images.
        with autocast_context(self.cfg, self.device):
            out = forward_views(net, {"labeled": labeled["image"], "mixed": mix.image})
        loss_x = self.supervised_loss(out["labeled"], labeled["mask"])
        # As released: every pixel counts in the mean (crop padding included); injected void pixels do not.
        loss_u = unsupervised_loss(out["mixed"].logits, mix.label, mix.confidence, s.threshold)
        loss = loss_x + s.lambda_u * loss_u
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "confident": confident_share(confidence, s.threshold, unlabeled["valid"]),
            "image_confidence": rho.mean(),
            "injected": mix.injected.float().mean(),
        }
        views, notes = {}, {}
        if keep_views:
            notes = {"rho": rho, "injected": mix.injected}
            views = {
                "weak": weak,
                "intensity": intensity,
                "mixed": mix.image,
                "pseudo_label": torch.where(mix.confidence >= s.threshold, mix.label, 255),
                "prediction": out["mixed"].logits.detach().argmax(1),
            }
        return StepOutput(loss, scalars, {}, views, notes)
