"""iMAS: instance-specific and model-adaptive supervision (method.md §1).

An EMA teacher labels each unlabeled image's weak view; the student learns from an intensity view and a
CutMix view of it. For every image, a hardness gamma (class-weighted symmetric IoU between the student's and
the teacher's predictions, times their confident-pixel ratios) is measured first, and its easiness
e = 1 - gamma then drives three parts:

- weighting: each image's unsupervised loss is weighted by e_i;
- adaptive intensity: the strong view is blended towards the weak one (or chosen, or weakened) by e_i;
- adaptive CutMix: a group of images is mixed with probability = its mean easiness, easy with hard images.

`MeanTeacher` is the same step with every part off: a mean teacher with strong augmentation and CutMix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imas import augment, cutmix
from imas.config import Adaptation, Config, CutMixTrigger, TeacherStudentConfig, Weighting
from imas.ema import EMATeacher
from imas.hardness import instance_hardness
from imas.losses import SupervisedLoss, unsupervised_loss
from imas.methods.base import Method, StepOutput
from imas.normalization import normalize
from imas.precision import autocast_context


class IMAS(Method):
    section = "imas"
    evaluated = ("teacher", "model")  # the teacher is the reported model (method.md §9)
    per_image = ("hardness",)
    min_batch_size = 1  # the student's forward concatenates labeled, weak and strong views

    def __init__(
        self, cfg: Config, trained: dict[str, nn.Module], criterion: SupervisedLoss, device: torch.device
    ) -> None:
        super().__init__(cfg, trained, criterion, device)
        # A copy of the plain student, made before DDP wrapping and never wrapped itself.
        self.teacher = EMATeacher(self.models["model"], self.settings.ema_decay)
        self.models["teacher"] = self.teacher.module

    def after_step(self, iteration: int, epoch: int) -> None:
        self.teacher.update(self.models["model"], iteration, epoch)

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        keep_views: bool = False,
    ) -> StepOutput:
        """One iteration of method.md §1; per_image["hardness"] is gamma [B]."""
        assert unlabeled is not None
        sm: TeacherStudentConfig = self.settings
        cfg, device = self.cfg, self.device
        net, student, teacher = nets["model"], self.models["model"], self.teacher
        weak = unlabeled["image"]  # uint8 [B, 3, H, W]
        b = weak.shape[0]

        # 2. Teacher and student (in eval mode: running BN statistics) on the weak view, without gradients.
        with torch.no_grad(), autocast_context(cfg, device):
            u_w = normalize(weak)
            teacher_logits = teacher(u_w).float()
            student.eval()
            student_logits = student(u_w).float()
            student.train()
        confidence, pseudo_label = F.softmax(teacher_logits, dim=1).max(dim=1)

        # 3. Hardness gamma per image; every adaptive rule consumes the easiness e = 1 - gamma.
        hardness = instance_hardness(
            student_logits, teacher_logits, sm.threshold, sm.class_weighted, sm.ignore_class0
        )
        easiness = 1.0 - hardness

        # 4. Intensity view, adapted per image by e (`magnitude`: op strengths s = U·m·e_i; method.md §4 has
        # m = e_i, the same up to the released cap m = 0.999).
        if sm.adaptive is Adaptation.magnitude:
            intensity = augment.random_strong_view(weak, easiness * sm.magnitude, sm.num_ops)
        else:
            strong = augment.random_strong_view(weak, sm.magnitude, sm.num_ops)
            intensity = augment.adapt(weak, strong, easiness, sm.adaptive.value)

        # 5. CutMix view from the weak views, pseudo-labels and confidences, decided per group.
        views = [normalize(labeled["image"])] + ([u_w] if sm.weak_in_batch else []) + [normalize(intensity)]
        fired = torch.zeros(b, dtype=torch.bool, device=device)
        keep = torch.zeros(0, dtype=torch.long, device=device)  # indices of images whose group fired
        if sm.cutmix is not CutMixTrigger.off:
            fixed_p = sm.cutmix_p if sm.cutmix is CutMixTrigger.fixed else None
            fired = cutmix.per_image(cutmix.trigger(easiness, sm.group_size, fixed_p=fixed_p), sm.group_size)
            source = cutmix.group_pairing(hardness, sm.group_size, sm.pairing.value)
            scale = cutmix.group_mean(easiness, sm.group_size) if sm.cutmix_scale else None
            boxes = cutmix.cutmix_boxes(
                b, weak.shape[2], weak.shape[3], sm.group_size, scale=scale, box=sm.cutmix_box.value
            )
            cm_image, cm_label, cm_confidence = cutmix.mix(weak, pseudo_label, confidence, boxes, source)
            # Only the groups that fired enter the forward pass and the loss (one host sync).
            keep = fired.nonzero().squeeze(1)
            views.append(normalize(cm_image[keep]))

        # 6. One student forward in train mode on [labeled, weak, intensity, (CutMix)].
        with autocast_context(cfg, device):
            outputs = net(torch.cat(views))
        logits, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
        sizes = [v.shape[0] for v in views]
        parts = list(torch.split(logits, sizes))
        labeled_out = parts[0] if aux is None else (parts[0], aux[: sizes[0]])

        # 7. L = L_x + lambda_u * (1/2 (L_int + L_cm) where CutMix fired, else L_int), per-image weights e_i.
        loss_x = self.criterion(labeled_out, labeled["mask"])
        weight = easiness if sm.weighting is Weighting.easiness else torch.ones_like(easiness)
        valid = unlabeled["valid"] if sm.mask_padding else None
        half = fired.float() * 0.5
        intensity_logits = parts[2 if sm.weak_in_batch else 1]
        loss_int = unsupervised_loss(
            intensity_logits, pseudo_label, confidence, sm.threshold, weight * (1 - half), valid
        )
        loss_cm = torch.zeros((), device=device)
        if keep.numel() > 0:
            # The CutMix image's weight is its destination's e_i; dividing by the share of fired images turns
            # the mean over fired images into the mean over the whole batch.
            # Pasted pixels bring their source's padding with them.
            cm_valid = cutmix.paste(valid, boxes, source)[keep] if valid is not None else None
            loss_cm = unsupervised_loss(
                parts[-1], cm_label[keep], cm_confidence[keep], sm.threshold, (weight * half)[keep], cm_valid
            ) * (keep.numel() / b)
        loss_u = sm.lambda_u * (loss_int + loss_cm)
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_int": loss_int.detach(),
            "loss_cm": loss_cm.detach(),
            "easiness": easiness.mean(),
            "cutmix_rate": fired.float().mean(),
            "confident": (confidence >= sm.threshold).float().mean(),
        }
        views_out: dict[str, torch.Tensor] = {}
        notes: dict[str, torch.Tensor] = {}
        if keep_views:
            # Each row's easiness and whether its CutMix fired: what decided how that row's views look.
            notes = {"e": easiness}
            if sm.cutmix is not CutMixTrigger.off:
                notes["cutmix"] = fired
            unconfident = torch.full_like(pseudo_label, 255)
            views_out = {
                "weak": weak,
                "intensity": intensity,
                "cutmix": torch.where(fired[:, None, None, None], cm_image, weak) if keep.numel() else weak,
                "pseudo_label": torch.where(confidence >= sm.threshold, pseudo_label, unconfident),
                "prediction": intensity_logits.detach().argmax(1),
            }
        return StepOutput(loss_x + loss_u, scalars, {"hardness": hardness}, views_out, notes)
