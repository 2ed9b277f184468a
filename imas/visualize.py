"""Colour label maps with a dataset palette and lay images out in grids (TensorBoard panels, overlays)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IGNORE_COLOUR = (255, 255, 255)  # label 255 (ignored / unconfident) is drawn white


def colorize(labels: Tensor, palette: Sequence[tuple[int, int, int]]) -> Tensor:
    """Index maps [N, H, W] (values < len(palette), or 255) -> uint8 RGB [N, 3, H, W] on the same device.

    Any value outside the palette (255 included) is drawn in IGNORE_COLOUR.
    """
    table = torch.tensor([*palette, IGNORE_COLOUR], dtype=torch.uint8, device=labels.device)
    index = labels.long().clamp(0, len(palette))
    index = torch.where(labels.long() >= len(palette), len(palette), index)
    return table[index].permute(0, 3, 1, 2).contiguous()


def grid(columns: Sequence[Tensor], pad: int = 2) -> Tensor:
    """Columns (C of them) of uint8 images [N, 3, H, W] -> uint8 [3, N*(H+pad)-pad, C*(W+pad)-pad].

    Row n shows image n of every column, left to right; the gaps are black.
    """
    n, _, h, w = columns[0].shape
    out = torch.zeros(3, n * (h + pad) - pad, len(columns) * (w + pad) - pad, dtype=torch.uint8)
    for c, images in enumerate(columns):
        if images.shape != (n, 3, h, w):
            raise ValueError(f"grid column {c} has shape {tuple(images.shape)}, expected {(n, 3, h, w)}")
        for r in range(n):
            top, left = r * (h + pad), c * (w + pad)
            out[:, top : top + h, left : left + w] = images[r].to("cpu", torch.uint8)
    return out
