"""UniMatch V2 (Yang et al., TPAMI 2025): an EMA teacher's confident pseudo-labels supervise two strong views
of each unlabeled image, decoded from complementary halves of the encoder's channels.

The teacher (an EMA of the student, decay min(1 - 1/(t + 1), 0.996) from the first iteration, eval mode)
predicts the weak view. Each of two strong views gets its own colour augmentation and, with p = 0.5, its
own CutMix box from the mirrored image of the batch (image B - 1 - i, as released); both views go through
the student in one forward with complementary dropout (imas.models.perturb.complementary_masks: for half
of the images, the two views see complementary random halves of the channels, x 2). Each unsupervised term
is the CE on confident (>= tau), non-padding pixels over the non-padding pixels:

    L = (L_x + (L_s1 + L_s2) / 2) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from imas.config import Config, check_interval
from imas.ema import follow
from imas.losses import confident_pixel_loss, confident_share
from imas.methods.base import Method, Network, Progress, StepOutput, forward_views
from imas.methods.fixmatch import cutmix_strong_view, pseudo_labels
from imas.precision import autocast_context


@dataclass
class UniMatchV2Settings:
    """UniMatch V2 (train.method unimatch_v2): an EMA teacher's pseudo-labels for two strong views with
    complementary feature dropout."""

    threshold: float = 0.95  # tau on the teacher's confidence (the released configs: 0.95 for every dataset)
    cutmix_p: float = 0.5  # per strong view and image
    ema_decay: float = 0.996  # the teacher's decay is min(1 - 1/(t + 1), ema_decay) from iteration 0
    # The two strong views' complementary dropout (as released); false decodes both unperturbed (an ablation).
    comp_drop: bool = True

    def check(self, cfg: Config) -> None:
        check_interval("unimatch_v2.threshold", self.threshold, 0, 1, "[)")
        check_interval("unimatch_v2.cutmix_p", self.cutmix_p, 0, 1)
        check_interval("unimatch_v2.ema_decay", self.ema_decay, 0, 1)


class UniMatchV2(Method):
    Settings = UniMatchV2Settings
    # The released code keeps best.pth by the student's mIoU and logs the EMA model's beside it; the EMA
    # model is kept as released, under "model_ema" (which also tells a checkpoint of this method, whose
    # student is reported, from a mean teacher's, whose teacher is).
    networks = (
        Network("model", "student", noun="student"),
        Network("model_ema", "teacher", ema_of="model"),
    )

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
        # Each view's box takes the mirrored image's pixels (img.flip(0) in the released step).
        mirror = torch.arange(weak.shape[0] - 1, -1, -1, device=self.device)
        strong, boxes = [], []
        for _ in range(2):
            view, _, box = cutmix_strong_view(weak, s.cutmix_p, self.device, mirror)
            strong.append(view)
            boxes.append(box)

        with autocast_context(self.cfg, self.device):
            with torch.no_grad():
                teacher_logits = forward_views(self.models["model_ema"], {"weak": weak})["weak"].logits
            out_x = forward_views(net, {"labeled": labeled["image"]})["labeled"]
            strong_views = {"strong_1": strong[0], "strong_2": strong[1]}
            out_s = forward_views(net, strong_views, comp_drop=s.comp_drop)
        confidence, label = pseudo_labels(teacher_logits)
        loss_x = self.supervised_loss(out_x, labeled["mask"])
        losses_s = []
        for name, box in zip(("strong_1", "strong_2"), boxes):
            cm_confidence, cm_label, cm_valid = (
                torch.where(box, t[mirror], t) for t in (confidence, label, valid)
            )
            losses_s.append(
                confident_pixel_loss(out_s[name].logits, cm_label, cm_confidence, s.threshold, cm_valid)
            )
        loss_s = (losses_s[0] + losses_s[1]) / 2
        loss = (loss_x + loss_s) / 2
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_s": loss_s.detach(),
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
                "prediction": out_s["strong_1"].logits.detach().argmax(1),
            }
        return StepOutput(loss, scalars, {}, views)

    def after_step(self, progress: Progress) -> None:
        """The teacher follows the student with min(1 - 1/(t + 1), ema_decay): a copy at t = 0, as released
        (no first epoch of plain copies, unlike imas.ema.EMATeacher.decay_at)."""
        decay = min(1.0 - 1.0 / (progress.iteration + 1), self.settings.ema_decay)
        follow(self.models["model_ema"], self.models["model"], decay)
