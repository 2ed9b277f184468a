"""Instance hardness (method.md §2): class-weighted symmetric IoU between the student's and the teacher's hard
maps, scaled by the confident-pixel ratios.

e_i = ½ (ρ^t_i · wIoU^t_i + ρ^s_i · wIoU^s_i) is the easiness, γ_i = 1 − e_i the hardness. The released code
did this per image on the host with NumPy; here the whole batch is a handful of device ops (one scatter_add
builds every image's confusion matrix) with no host synchronisation, so it can run every iteration without
stalling the GPU queue.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class HardnessTerms(NamedTuple):
    """The per-image parts of the easiness, each float32 [B]; exposed for logging."""

    rho_teacher: torch.Tensor
    rho_student: torch.Tensor
    wiou_teacher: torch.Tensor
    wiou_student: torch.Tensor

    @property
    def easiness(self) -> torch.Tensor:
        """e = ½ (ρ^t · wIoU^t + ρ^s · wIoU^s): [B] in [0, 1]."""
        return 0.5 * (self.rho_teacher * self.wiou_teacher + self.rho_student * self.wiou_student)


def _max_and_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax in float32 (also under autocast, whose half precision would move pixels across τ):
    logits [B, K, H, W] → (max probability [B, H, W], hard map [B, H, W] long)."""
    return logits.float().softmax(dim=1).max(dim=1)


def _confusion(student_map: torch.Tensor, teacher_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image confusion counts: maps [B, H, W] → [B, K (student class), K (teacher class)] float32.

    scatter_add_ into a buffer of known size rather than bincount: bincount on CUDA reads the input's max
    back to the host to size its output, which is exactly the synchronisation this module avoids.
    Counts stay exact in float32 up to 2^24 pixels per image (a 769 × 769 crop has 591k).
    """
    b = student_map.shape[0]
    k = num_classes
    image = torch.arange(b, device=student_map.device).view(b, 1, 1)
    index = ((image * k + student_map) * k + teacher_map).flatten()
    counts = torch.zeros(b * k * k, dtype=torch.float32, device=student_map.device)
    counts.scatter_add_(0, index, torch.ones_like(index, dtype=torch.float32))
    return counts.view(b, k, k)


def hardness_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    threshold: float,
    class_weighted: bool = True,
    ignore_class0: bool = True,
) -> HardnessTerms:
    """ρ^t, ρ^s, wIoU^t, wIoU^s of method.md §2 per image.

    student_logits, teacher_logits: [B, K, H, W] (any float dtype; computed in float32).
    threshold: τ, the same confidence threshold as the pseudo-labels.
    class_weighted: weight IoU_c by each side's class frequencies (default); otherwise both wIoU are the
        plain mean of IoU_c over the classes present in either map, class 0 included.
    ignore_class0: drop class 0 from the class weights (n_0 := 0 before normalising). The released code
        applies it to the weighted IoU only, and so does this function: the plain mean keeps class 0
        whatever this flag says (method.md §2).
    A map that holds no counted class gives wIoU = 0 (all weights zero), never NaN.
    """
    if student_logits.dim() != 4 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"expected student and teacher logits of the same shape [B, K, H, W], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    k = student_logits.shape[1]
    with torch.no_grad():  # a statistic of the models, never a path for gradients
        conf_s, map_s = _max_and_argmax(student_logits)
        conf_t, map_t = _max_and_argmax(teacher_logits)
        rho_s = (conf_s >= threshold).float().flatten(1).mean(1)
        rho_t = (conf_t >= threshold).float().flatten(1).mean(1)

        confusion = _confusion(map_s, map_t, k)  # [B, K_s, K_t]
        inter = confusion.diagonal(dim1=1, dim2=2)  # I_c: [B, K]
        n_s = confusion.sum(2)  # student class counts: [B, K]
        n_t = confusion.sum(1)  # teacher class counts: [B, K]
        union = n_s + n_t - inter
        # A class absent from both maps has union 0: its IoU is set to 0 here, and every rule below gives
        # it zero weight, so it contributes nothing (and no 0/0 NaN appears).
        iou = inter / union.clamp(min=1.0)

        if class_weighted:
            counted = torch.ones(k, dtype=torch.float32, device=iou.device)
            if ignore_class0:
                counted[0] = 0.0
            w_t = n_t * counted
            w_s = n_s * counted
            wiou_t = (w_t * iou).sum(1) / w_t.sum(1).clamp(min=1.0)
            wiou_s = (w_s * iou).sum(1) / w_s.sum(1).clamp(min=1.0)
        else:
            # The released unweighted variant averages over every class present, class 0 included: the
            # class-0 exclusion was written for the weighted variant only, and the published ablation ran
            # this code, so following it keeps that row reproducible.
            present = (union > 0).float()
            wiou_t = (present * iou).sum(1) / present.sum(1).clamp(min=1.0)
            wiou_s = wiou_t
    return HardnessTerms(rho_t, rho_s, wiou_t, wiou_s)


def easiness(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    threshold: float,
    class_weighted: bool = True,
    ignore_class0: bool = True,
) -> torch.Tensor:
    """e = 1 − γ per image: logits [B, K, H, W] → float32 [B] in [0, 1]. See `hardness_terms`."""
    return hardness_terms(student_logits, teacher_logits, threshold, class_weighted, ignore_class0).easiness


def instance_hardness(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    threshold: float,
    class_weighted: bool = True,
    ignore_class0: bool = True,
) -> torch.Tensor:
    """γ = 1 − e per image (1 = hardest): logits [B, K, H, W] → float32 [B] in [0, 1].

    student_logits come from the student in eval mode on the weak view, teacher_logits from the teacher on
    the same view (method.md §1 step 2); no gradient flows through the result.
    """
    return 1.0 - easiness(student_logits, teacher_logits, threshold, class_weighted, ignore_class0)
