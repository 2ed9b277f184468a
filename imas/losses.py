"""Losses (method.md §3, §7): supervised CE / OHEM with an optional aux head, and the masked,
instance-weighted unsupervised loss of iMAS.

Every loss here computes in float32 (so it can sit inside or after torch.autocast), never modifies its
inputs, and never synchronises with the host: the OHEM threshold is found on the device.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255


# ----------------------------------------------------------------------------------------- supervised


def _pixel_nll(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-pixel −log p(ground truth) in float32, 0 at ignored pixels: logits [B, K, H, W] → [B, H, W]."""
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits [B, K, H, W] and target [B, H, W], got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    return F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index, reduction="none")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` holds; 0 (still attached to the graph) when the mask is empty.

    An all-ignored batch is rare but legal (e.g. a crop of pure border); a NaN there would stop training.
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Plain cross-entropy averaged over the pixels whose label is not `ignore_index`.

    logits: [B, K, H, W] (any float dtype), target: [B, H, W] integer labels. Returns a float32 scalar;
    0 when every pixel is ignored (torch's own mean would be NaN there).
    """
    nll = _pixel_nll(logits, target, ignore_index)
    return _masked_mean(nll, target != ignore_index)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept: int = 100000,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Online hard example mining cross-entropy (method.md §7, the Cityscapes supervised loss).

    logits: [B, K, H, W], target: [B, H, W]. Let N be the number of valid (≠ ignore_index) pixels over the
    whole batch and p the softmax probability of each valid pixel's ground-truth class.
    - N < min_kept: plain cross-entropy over the valid pixels.
    - N ≥ min_kept: threshold = max(thresh, the min_kept-th smallest p); cross-entropy averaged over the
      valid pixels with p ≤ threshold (ties at the threshold are all kept, so at least min_kept pixels are).
      At N = min_kept the min_kept-th smallest p is the largest one, so every valid pixel is kept: both
      branches agree there, and the choice of < or ≤ makes no difference.
    - min_kept ≤ 0: threshold = thresh.
    The threshold is found on the device; ignored pixels count as p = +inf, which makes the
    first branch fall out of the same computation (the k-th smallest is then +inf) without a host sync.
    The selection itself carries no gradient. Returns a float32 scalar (0 if every pixel is ignored).
    """
    nll = _pixel_nll(logits, target, ignore_index)
    valid = target != ignore_index
    kept = valid
    if 0 < min_kept <= nll.numel():
        prob = torch.exp(-nll.detach()).masked_fill(~valid, float("inf"))
        # The largest of the min_kept smallest: topk has a multi-block CUDA kernel for one long row,
        # where kthvalue would run a single thread block over the whole batch.
        kth = prob.flatten().topk(min_kept, largest=False, sorted=False).values.max()
        threshold = kth.clamp(min=thresh)
        kept = valid & (prob <= threshold)
    elif min_kept <= 0:
        kept = valid & (torch.exp(-nll.detach()) <= thresh)
    # min_kept > number of pixels: fewer valid pixels than min_kept for sure, so plain CE.
    return _masked_mean(nll, kept)


SUPERVISED_LOSSES = ("ce", "ohem")


class SupervisedLoss(nn.Module):
    """L_x of method.md §7: a per-pixel loss on the main logits, plus aux_weight × it on the aux logits.

    forward(logits, target, aux_logits=None): the main (and aux) head's logits [B, K, H, W], target [B, H, W].
    Returns a float32 scalar.
    """

    def __init__(
        self,
        kind: str = "ce",
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100000,
        aux_weight: float = 0.4,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        kind = kind.value if isinstance(kind, enum.Enum) else kind
        if kind not in SUPERVISED_LOSSES:
            raise ValueError(f"unknown supervised loss {kind!r}; valid: {', '.join(SUPERVISED_LOSSES)}")
        self.kind = kind
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss on one head: logits [B, K, H, W], target [B, H, W] → scalar."""
        if self.kind == "ohem":
            return ohem_cross_entropy(logits, target, self.ohem_thresh, self.ohem_min_kept, self.ignore_index)
        return cross_entropy(logits, target, self.ignore_index)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, aux_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """logits (and aux_logits, where the model has an aux head) [B, K, H, W], target [B, H, W]."""
        loss = self.pixel_loss(logits, target)
        if aux_logits is not None:
            loss = loss + self.aux_weight * self.pixel_loss(aux_logits, target)
        return loss

    def extra_repr(self) -> str:
        return f"kind={self.kind}, aux_weight={self.aux_weight}"


def build_supervised_loss(
    kind: str, ohem_thresh: float, ohem_min_kept: int, aux_weight: float
) -> SupervisedLoss:
    """The supervised loss from the config's loss section (kind "ce" or "ohem"); labels 255 are ignored."""
    return SupervisedLoss(kind, ohem_thresh, ohem_min_kept, aux_weight, IGNORE_INDEX)


# --------------------------------------------------------------------------------------- unsupervised


def unsupervised_loss(
    logits: torch.Tensor,
    pseudo_label: torch.Tensor,
    confidence: torch.Tensor,
    threshold: float,
    weight: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Model-adaptive unsupervised loss of one student view (method.md §3).

    logits: [B, K, H, W] student logits on the view; pseudo_label: [B, H, W] integer targets (255 = none,
    e.g. padding); confidence: [B, H, W] teacher max-probability; threshold: τ.
    weight: [B] per-image weight e_i (None → 1; no gradient flows into it).
    valid: [B, H, W] bool, False on crop padding (None → every pixel counts, as in the released runs).

    m_i(p) = 1[c_i(p) ≥ τ] ∧ valid_i(p) ∧ ŷ_i(p) ≠ 255;  ℓ_i = Σ_p m_i(p)·CE_i(p) / (H·W), the mean over
    *all* H·W pixels rather than the confident ones (the released scaling, which λ_u was tuned with);
    L = (1/B) Σ_i weight_i·ℓ_i. Float32 scalar; none of the inputs is modified.
    """
    expected = (logits.shape[0], *logits.shape[2:])
    if logits.dim() != 4 or pseudo_label.shape != expected or confidence.shape != expected:
        raise ValueError(
            f"expected logits [B, K, H, W] with pseudo_label and confidence [B, H, W], got "
            f"{tuple(logits.shape)}, {tuple(pseudo_label.shape)} and {tuple(confidence.shape)}"
        )
    b, _, h, w = logits.shape
    # 255 gives CE 0 through ignore_index, so the pseudo-label never needs an in-place edit.
    nll = _pixel_nll(logits, pseudo_label, IGNORE_INDEX)
    mask = (confidence.detach() >= threshold) & (pseudo_label != IGNORE_INDEX)
    if valid is not None:
        if valid.shape != (b, h, w):
            raise ValueError(f"expected valid [B, H, W] = {(b, h, w)}, got {tuple(valid.shape)}")
        mask = mask & valid.bool()
    per_image = (nll * mask.float()).flatten(1).sum(1) / (h * w)  # ℓ_i: [B]
    if weight is not None:
        if weight.shape != (b,):
            raise ValueError(f"expected weight [B] = ({b},), got {tuple(weight.shape)}")
        per_image = per_image * weight.detach().float()
    return per_image.mean()


def confident_pixel_loss(
    logits: torch.Tensor,
    pseudo_label: torch.Tensor,
    confidence: torch.Tensor,
    threshold: float,
    valid: torch.Tensor,
) -> torch.Tensor:
    """FixMatch's and UniMatch's unsupervised loss, normalised as UniMatch's code does.

    logits: [B, K, H, W]; pseudo_label, confidence: [B, H, W] (from the weak view, no gradient); valid: bool
    [B, H, W], False on crop padding. L = sum over pixels with c >= tau that are not padding of CE, divided
    by the number of non-padding pixels of the batch (not by the confident ones: unconfident pixels count
    as zero loss). Float32 scalar.
    """
    nll = _pixel_nll(logits, pseudo_label, IGNORE_INDEX)
    mask = (confidence.detach() >= threshold) & valid
    return (nll * mask.float()).sum() / valid.sum().clamp(min=1)


def confident_share(confidence: torch.Tensor, threshold: float, valid: torch.Tensor) -> torch.Tensor:
    """The share of non-padding pixels whose confidence [B, H, W] is >= threshold (what the released codes
    log as the confident ratio), a 0-d tensor; valid [B, H, W] is False on crop padding."""
    return ((confidence >= threshold) & valid).sum() / valid.sum().clamp(min=1)
