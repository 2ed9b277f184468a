"""AugSeg's adaptive label-aided CutMix (Zhao et al., CVPR 2023), batched on the device.

The released step (train_semi.py, `train`; augseg/dataset/augs_ALIA.py, `cut_mix_label_adaptive`):

1. per unlabeled image a confidence ρ_i from the teacher's softmax on its weak view: the pixel mean of
   (1 − H(p)/log K)·max_k p (`image_confidence`);
2. one random permutation π of the batch (it may map an image to itself);
3. label injection: with probability 1 − ρ_i (`label_mix_probability`) image i gets, inside a box whose area
   fraction is 1 − λ, λ ~ Beta(8, 2) (small boxes, mean 0.2), labeled image π(i) with its ground truth as
   the label and confidence 1;
4. unlabeled CutMix: inside a second box (λ ~ Beta(4, 4)), image i takes the *injected* image π(i), with
   its labels and confidences. Outside that box image i keeps its own pixels, so a labeled patch reaches
   the student only where the partner's labeled box overlaps the CutMix box.

Both box sizes are drawn once per batch (per GPU in the released runs; a `group_size` of consecutive images
plays one GPU's batch here) and the box centres per image. The labeled batch must be as large as the
unlabeled one, as in the released loaders. Everything stays on the device: no host synchronisation.

Random draws come from the passed `torch.Generator` (None = the default generator of the target device),
made on the generator's device and then moved, so a CPU generator serves CUDA tensors and seeded tests are
deterministic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# Beta(a, b) of λ, the area fraction *kept*; a box covers 1 − λ of the image (augs_ALIA.rand_bbox).
LABELED_BETA = (8, 2)
UNLABELED_BETA = (4, 4)
# Box centres are drawn from [⌊H/8⌋, H) × [⌊W/8⌋, W), not the whole image.
CENTRE_MARGIN = 8
ENTROPY_EPS = 1e-10  # inside the log of the released entropy, so p = 0 gives 0·log(1e-10) = 0


class LabelAidedMix(NamedTuple):
    """Result of `label_aided_cutmix`: the student's view and its targets, plus what was drawn."""

    image: Tensor  # [B, C, H, W], dtype of the unlabeled images
    label: Tensor  # [B, H, W], dtype of the pseudo-labels; ground truth (255 kept) on injected pixels
    confidence: Tensor  # [B, H, W]; 1 on injected pixels
    valid: Tensor  # bool [B, H, W]; False on padding (unlabeled `valid`, labeled mask == ignore_index)
    source: Tensor  # int64 [B], π: image i's labeled source and CutMix partner
    injected: Tensor  # bool [B], whether image i received a labeled patch (step 3)
    labeled_boxes: Tensor  # bool [B, H, W], step 3's boxes, already False where `injected` is
    unlabeled_boxes: Tensor  # bool [B, H, W], step 4's boxes


# ------------------------------------------------------------------------------------------ random draws


def _draw_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Where to draw: on the generator's own device (torch requires it), else on the target device."""
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _uniform(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """U[0, 1) of `shape` and `dtype` on `device`, drawn from `generator`."""
    u = torch.rand(shape, generator=generator, device=_draw_device(generator, device), dtype=dtype)
    return u.to(device) if device is not None else u


def _randint(
    low: int,
    high: int,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> Tensor:
    """Integers uniform over [low, high) as int64 of `shape` on `device`, drawn from `generator`."""
    r = torch.randint(low, high, shape, generator=generator, device=_draw_device(generator, device))
    return r.to(device) if device is not None else r


def _num_groups(batch: int, group_size: int | None) -> tuple[int, int]:
    """(number of groups, group size); None = the whole batch is one group."""
    size = batch if group_size is None else group_size
    if size < 1 or batch % size != 0:
        raise ValueError(f"batch size {batch} is not divisible by the label-mix group size {size}")
    return batch // size, size


def beta_draw(
    concentration: tuple[int, int],
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """λ ~ Beta(a, b) for integer a, b ≥ 1, float64 of `shape` on `device`.

    torch.distributions cannot take a generator; Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b),
    and an integer-shape Gamma is a sum of Exp(1) = −log(1 − U) draws, so this is exact and seedable.
    """
    a, b = concentration
    if not (isinstance(a, int) and isinstance(b, int) and a >= 1 and b >= 1):
        raise ValueError(f"Beta concentrations must be integers >= 1, got {concentration}")
    u = _uniform((*shape, a + b), generator, device, torch.float64)
    exponential = -torch.log1p(-u)  # u ∈ [0, 1) never gives log(0)
    x = exponential[..., :a].sum(-1)
    return x / (x + exponential[..., a:].sum(-1))


def group_permutation(
    batch: int,
    group_size: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A uniform random permutation within each group of `group_size` consecutive images (None: the whole
    batch), as global indices: int64 [B]. It may map an image to itself, as torch.randperm does."""
    groups, size = _num_groups(batch, group_size)
    # argsort of i.i.d. uniforms is a uniform random permutation per row, all groups in one call.
    local = torch.argsort(_uniform((groups, size), generator, device), dim=1)
    offset = torch.arange(groups, device=local.device).unsqueeze(1) * size
    return (local + offset).reshape(-1)


def cutmix_boxes(
    batch: int,
    height: int,
    width: int,
    concentration: tuple[int, int],
    group_size: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """AugSeg's CutMix boxes, True inside: bool [B, H, W] on `device`.

    Per group one λ ~ Beta(concentration) and side ratio r = sqrt(1 − λ); box sides h = ⌊H·r⌋, w = ⌊W·r⌋.
    Per image a centre (cy, cx) uniform over [⌊H/8⌋, H) × [⌊W/8⌋, W); the box covers rows
    [cy − ⌊h/2⌋, cy + ⌊h/2⌋) and columns [cx − ⌊w/2⌋, cx + ⌊w/2⌋) clipped to the image (an odd side loses
    a pixel, and boxes near the far edges are cut off, as in the released code).
    """
    groups, size = _num_groups(batch, group_size)
    lam = beta_draw(concentration, (groups,), generator, device)
    ratio = torch.sqrt(1.0 - lam).repeat_interleave(size)  # float64 [B]
    half_h = (height * ratio).long() // 2  # the float → int cast truncates, as int() does
    half_w = (width * ratio).long() // 2
    cy = _randint(height // CENTRE_MARGIN, height, (batch,), generator, device)
    cx = _randint(width // CENTRE_MARGIN, width, (batch,), generator, device)
    rows = torch.arange(height, device=cy.device)
    cols = torch.arange(width, device=cx.device)
    # Comparing against the unclipped edges clips for free: rows outside [0, H) do not exist.
    in_rows = (rows >= (cy - half_h)[:, None]) & (rows < (cy + half_h)[:, None])  # [B, H]
    in_cols = (cols >= (cx - half_w)[:, None]) & (cols < (cx + half_w)[:, None])  # [B, W]
    return in_rows[:, :, None] & in_cols[:, None, :]


# ------------------------------------------------------------------------------------- confidence, mix


def image_confidence(probs: Tensor, valid: Tensor | None = None) -> Tensor:
    """AugSeg's per-image confidence ρ from the teacher's softmax on the weak view.

    probs: [B, K, H, W] probabilities (K ≥ 2); valid: optional bool [B, H, W] (None: every pixel counts,
    as in the released code, padding included). ρ_i = mean over pixels of (1 − H(p)/log K)·max_k p with
    H(p) = −Σ_k p·log(p + 1e-10). Float32 [B] in [0, 1] (up to the 1e-10 of the log).
    """
    if probs.dim() != 4 or probs.shape[1] < 2:
        raise ValueError(f"expected probabilities [B, K, H, W] with K >= 2, got {tuple(probs.shape)}")
    p = probs.detach().float()
    entropy = -(p * torch.log(p + ENTROPY_EPS)).sum(dim=1) / math.log(p.shape[1])
    score = (1.0 - entropy) * p.amax(dim=1)  # [B, H, W]
    if valid is None:
        return score.mean(dim=(1, 2))
    if valid.shape != score.shape:
        raise ValueError(f"expected valid {tuple(score.shape)}, got {tuple(valid.shape)}")
    mask = valid.float()
    return (score * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1.0)


def label_mix_probability(confidence: Tensor) -> Tensor:
    """Probability that an image receives a labeled patch: 1 − ρ_i, clipped to [0, 1]. [B] -> [B].

    (The released test is `random() > ρ_i`, which fires with probability 1 − ρ_i.)
    """
    return (1.0 - confidence.float()).clamp(0.0, 1.0)


def _paste(boxes: Tensor, source: Tensor, destination: Tensor) -> Tensor:
    """where(box, source, destination) for [B, H, W] or [B, C, H, W] values; boxes: bool [B, H, W]."""
    return torch.where(boxes if destination.dim() == 3 else boxes[:, None], source, destination)


def label_aided_cutmix(
    unlabeled_image: Tensor,
    pseudo_label: Tensor,
    confidence: Tensor,
    labeled_image: Tensor,
    labeled_mask: Tensor,
    probability: Tensor,
    valid: Tensor | None = None,
    group_size: int | None = None,
    generator: torch.Generator | None = None,
    ignore_index: int = 255,
) -> LabelAidedMix:
    """AugSeg's adaptive label-aided CutMix of one batch (steps 2-4 of the module docstring).

    unlabeled_image: [B, C, H, W] (the intensity view, any dtype); pseudo_label: integer [B, H, W] and
    confidence: float [B, H, W] (teacher, weak view); labeled_image: [B, C, H, W] of the same dtype;
    labeled_mask: integer [B, H, W] (ignore_index on void and padding); probability: [B] per-image chance
    of a labeled patch (`label_mix_probability(image_confidence(...))`; 0 never, 1 always); valid: optional
    bool [B, H, W], False on the unlabeled crop padding (None: all True). Inputs are never modified.
    """
    b, _, h, w = unlabeled_image.shape
    if labeled_image.shape != unlabeled_image.shape or labeled_image.dtype != unlabeled_image.dtype:
        raise ValueError(
            f"labeled and unlabeled images must match, got {labeled_image.dtype} {tuple(labeled_image.shape)}"
            f" and {unlabeled_image.dtype} {tuple(unlabeled_image.shape)}"
        )
    if valid is None:
        valid = torch.ones(b, h, w, dtype=torch.bool, device=unlabeled_image.device)
    for name, t in (
        ("pseudo_label", pseudo_label),
        ("confidence", confidence),
        ("labeled_mask", labeled_mask),
    ):
        if t.shape != (b, h, w):
            raise ValueError(f"expected {name} [{b}, {h}, {w}], got {tuple(t.shape)}")
    if valid.shape != (b, h, w) or probability.shape != (b,):
        raise ValueError(
            f"expected valid [{b}, {h}, {w}] and probability [{b}], got {tuple(valid.shape)}, "
            f"{tuple(probability.shape)}"
        )
    device = unlabeled_image.device
    source = group_permutation(b, group_size, generator, device)
    # u ∈ [0, 1): probability 1 always fires, 0 never does.
    injected = _uniform((b,), generator, device) < probability.to(device, torch.float32)
    labeled_boxes = (
        cutmix_boxes(b, h, w, LABELED_BETA, group_size, generator, device) & injected[:, None, None]
    )
    unlabeled_boxes = cutmix_boxes(b, h, w, UNLABELED_BETA, group_size, generator, device)

    # Step 3: image i takes labeled image π(i) and its ground truth (confidence 1) inside its labeled box.
    gt = labeled_mask[source]
    injected_views = (
        _paste(labeled_boxes, labeled_image[source], unlabeled_image),
        _paste(labeled_boxes, gt.to(pseudo_label.dtype), pseudo_label),
        _paste(labeled_boxes, torch.ones_like(confidence), confidence),
        _paste(labeled_boxes, gt != ignore_index, valid.bool()),
    )
    # Step 4: inside its CutMix box image i takes injected image π(i); outside, its own original pixels.
    image, label, conf, mask = (
        _paste(unlabeled_boxes, mixed[source], original)
        for mixed, original in zip(injected_views, (unlabeled_image, pseudo_label, confidence, valid.bool()))
    )
    return LabelAidedMix(image, label, conf, mask, source, injected, labeled_boxes, unlabeled_boxes)
