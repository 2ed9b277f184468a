"""Confusion matrix accumulated on the device, summed over processes with one all_reduce, and IoU reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """K×K int64 pixel counts, rows = ground truth, columns = prediction; labels `ignore_index` are skipped.

    Labels other than ignore_index must lie in [0, K): checking them is the dataset's job, not this hot path.
    """

    def __init__(self, num_classes: int, device: torch.device | str, ignore_index: int = 255) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch. pred, target: [B, H, W] or [H, W] integer class maps of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        k = self.num_classes
        pred = pred.to(self.matrix.device, torch.int64).flatten()
        target = target.to(self.matrix.device, torch.int64).flatten()
        # Ignored pixels go to an extra bin that is dropped: no boolean indexing, so no data-dependent shape.
        index = torch.where(target == self.ignore_index, k * k, target * k + pred)
        counts = torch.bincount(index, minlength=k * k + 1)[: k * k]
        self.matrix += counts.view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (one collective); a no-op without a process group of size > 1."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    # ------------------------------------------------------------------------------------------ results

    def _counts(self) -> torch.Tensor:
        return self.matrix.detach().to("cpu", torch.float64)

    def iou(self) -> torch.Tensor:
        """Per-class IoU, float64 [K] on the CPU; NaN for a class in neither ground truth nor prediction."""
        m = self._counts()
        tp = m.diagonal()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def miou(self) -> float:
        """Mean IoU over the classes that have one (NaN-mean); NaN if no pixel was counted."""
        return float(torch.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        """Share of counted pixels predicted right; NaN if no pixel was counted."""
        m = self._counts()
        total = float(m.sum())
        return float(m.diagonal().sum()) / total if total > 0 else math.nan

    def class_share(self) -> torch.Tensor:
        """Share of the counted ground-truth pixels per class, float64 [K] (zeros if nothing was counted)."""
        gt = self._counts().sum(1)
        return gt / gt.sum().clamp(min=1)

    def _check_names(self, class_names: Sequence[str]) -> None:
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names given for {self.num_classes} classes")
        if len(set(class_names)) != len(class_names):
            raise ValueError("class names must be unique")

    def table(self, class_names: Sequence[str]) -> str:
        """Plain-text table: a row per class (IoU %, share of ground-truth pixels %), accuracy, mIoU."""
        self._check_names(class_names)
        width = max(12, *(len(name) for name in class_names))
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'GT px %':>7}"]
        for name, iou, share in zip(class_names, self.iou().tolist(), self.class_share().tolist()):
            lines.append(f"{name:<{width}}  {_percent(iou):>7}  {100 * share:>7.2f}")
        lines.append(f"{'pixel acc':<{width}}  {_percent(self.pixel_accuracy()):>7}")
        lines.append(f"{'mIoU':<{width}}  {_percent(self.miou()):>7}")
        return "\n".join(lines)

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-able results as fractions in [0, 1]; None where a value is undefined (NaN)."""
        self._check_names(class_names)
        return {
            "miou": _or_none(self.miou()),
            "pixel_accuracy": _or_none(self.pixel_accuracy()),
            "num_classes": self.num_classes,
            "iou": {name: _or_none(v) for name, v in zip(class_names, self.iou().tolist())},
        }


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value
