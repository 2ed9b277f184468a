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

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imas import augment, cutmix
from imas.config import Config, ConfigError, check_at_least, check_interval
from imas.hardness import instance_hardness
from imas.losses import confident_share, unsupervised_loss
from imas.methods.base import TEACHER_STUDENT, Method, Progress, StepOutput, forward_views
from imas.normalization import normalize
from imas.precision import autocast_context


class Adaptation(str, enum.Enum):
    mix = "mix"  # released code: e * strong + (1 - e) * weak
    select = "select"  # strong with probability e, else weak
    magnitude = "magnitude"  # the paper's wording: op strength U * e (method.md §4), no blend
    none = "none"  # plain strong view


class Weighting(str, enum.Enum):
    easiness = "easiness"  # per-image weight e_i on the unsupervised loss
    none = "none"


class CutMixTrigger(str, enum.Enum):
    easiness = "easiness"  # fire with p = mean easiness of the group
    fixed = "fixed"  # fire with p = cutmix_p
    off = "off"  # no CutMix view


class Pairing(str, enum.Enum):
    easy_hard = "easy_hard"
    random = "random"


class CutMixBox(str, enum.Enum):
    imas = "imas"  # side ratio v ~ U[0.1, 0.9] per group
    beta = "beta"  # classic CutMix, area ~ Beta(4, 4)


@dataclass
class TeacherStudentSettings:
    """An EMA teacher's pseudo-labels supervise the student on strong views (train.method mean_teacher and
    imas). The instance-specific switches (weighting, adaptive, cutmix, pairing) are iMAS's parts; a mean
    teacher has them off and may turn any of them on. docs/methods.md compares the methods."""

    threshold: float = 0.95  # tau: pseudo-label confidence and confident-ratio threshold
    lambda_u: float = 3.0
    ema_decay: float = 0.996
    weighting: Weighting = Weighting.easiness
    adaptive: Adaptation = Adaptation.mix
    magnitude: float = 0.999  # m: op strength s = U * m (adaptive: magnitude uses s = U * m * e_i)
    num_ops: int = 2
    cutmix: CutMixTrigger = CutMixTrigger.easiness
    cutmix_p: float = 0.5  # for cutmix: fixed
    pairing: Pairing = Pairing.easy_hard
    cutmix_box: CutMixBox = CutMixBox.imas
    cutmix_scale: bool = False  # method.md §5 option: the box side v times the group's mean easiness
    group_size: int = 4  # images per trigger/pairing decision (the released runs: 4 per GPU)
    class_weighted: bool = True
    ignore_class0: bool = True
    weak_in_batch: bool = True  # the weak view joins the student's train forward (BN statistics only)
    mask_padding: bool = False  # exclude crop padding from the unsupervised loss

    def check(self, cfg: Config) -> None:
        """Refuse a value out of range, or a batch the CutMix groups do not divide: one ConfigError."""
        name = cfg.train.method
        # A threshold must leave some pixels confident and some not.
        check_interval(f"{name}.threshold", self.threshold, 0, 1, "()")
        for key in ("cutmix_p", "magnitude", "ema_decay"):
            check_interval(f"{name}.{key}", getattr(self, key), 0, 1)
        check_at_least(f"{name}.lambda_u", self.lambda_u, 0)
        check_at_least(f"{name}.num_ops", self.num_ops, 0)
        check_at_least(f"{name}.group_size", self.group_size, 1)
        if self.cutmix is not CutMixTrigger.off and cfg.train.batch_size % self.group_size:
            raise ConfigError(
                f"train.batch_size {cfg.train.batch_size} must be a multiple of {name}.group_size "
                f"{self.group_size}"
            )


@dataclass
class ImasSettings(TeacherStudentSettings):
    """iMAS (train.method imas): every instance-specific part on; released defaults (method.md §12)."""


class IMAS(Method):
    networks = TEACHER_STUDENT  # the EMA teacher is the reported model (method.md §9)
    Settings = ImasSettings
    per_image = ("hardness",)
    min_batch_size = 1  # the student's forward concatenates labeled, weak and strong views

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        """One iteration of method.md §1; per_image["hardness"] is gamma [B]."""
        assert unlabeled is not None
        sm: TeacherStudentSettings = self.settings
        cfg, device = self.cfg, self.device
        net, student, teacher = nets["model"], self.models["model"], self.models["teacher"]
        weak = unlabeled["image"]  # uint8 [B, 3, H, W]
        b = weak.shape[0]

        # 2. Teacher and student (in eval mode: running BN statistics) on the weak view, without gradients.
        with torch.no_grad(), autocast_context(cfg, device):
            u_w = normalize(weak)
            teacher_logits = teacher(u_w).logits.float()
            student.eval()
            student_logits = student(u_w).logits.float()
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
        views = {"labeled": labeled["image"]} | ({"weak": weak} if sm.weak_in_batch else {})
        views["intensity"] = intensity
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
            views["cutmix"] = cm_image[keep]

        # 6. One student forward in train mode on [labeled, weak, intensity, (CutMix)].
        with autocast_context(cfg, device):
            out = forward_views(net, views)

        # 7. L = L_x + lambda_u * (1/2 (L_int + L_cm) where CutMix fired, else L_int), per-image weights e_i.
        loss_x = self.supervised_loss(out["labeled"], labeled["mask"])
        weight = easiness if sm.weighting is Weighting.easiness else torch.ones_like(easiness)
        valid = unlabeled["valid"] if sm.mask_padding else None
        half = fired.float() * 0.5
        intensity_logits = out["intensity"].logits
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
                out["cutmix"].logits,
                cm_label[keep],
                cm_confidence[keep],
                sm.threshold,
                (weight * half)[keep],
                cm_valid,
            ) * (keep.numel() / b)
        loss_u = sm.lambda_u * (loss_int + loss_cm)
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_int": loss_int.detach(),
            "loss_cm": loss_cm.detach(),
            "easiness": easiness.mean(),
            "cutmix_rate": fired.float().mean(),
            "confident": confident_share(confidence, sm.threshold, unlabeled["valid"]),
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
