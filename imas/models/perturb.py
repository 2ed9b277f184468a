"""Feature perturbations a segmentor applies when a method asks for them."""

from __future__ import annotations

import torch


def complementary_masks(batch: int, channels: int, device: torch.device) -> torch.Tensor:
    """UniMatch V2's complementary dropout masks [batch, channels] for a batch of two views of batch / 2
    images (every image's first view, then every second view, in the same order).

    Each channel of an image's first view is kept (x 2) or dropped (x 0) with probability 1/2 and its second
    view gets the complement (2 - mask), so the two views together see every channel once; a random half
    of the images (floor(batch / 4) of them) keep every channel in both views (mask 1), as released.
    """
    if batch % 2:
        raise ValueError(f"complementary dropout needs two views of each image (an even batch), got {batch}")
    half = batch // 2
    first = torch.randint(0, 2, (half, channels), device=device).float() * 2.0
    untouched = torch.randperm(half, device=device)[: int(half * 0.5)]
    first[untouched] = 1.0
    return torch.cat([first, 2.0 - first])
