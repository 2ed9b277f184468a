"""How images enter a network: uint8 RGB scaled to [0, 1], minus the ImageNet mean, over its std.

The one definition for training steps, evaluation, prediction and the tools; the backbones' pretrained
weights were trained on images normalised this way.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The mean as uint8 pixels, rounded: crop padding of this colour is 0 (to within rounding) once normalised.
MEAN_RGB_UINT8 = tuple(round(255 * mean) for mean in IMAGENET_MEAN)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [B, 3, H, W] or [3, H, W] → float32 (x/255 − mean) / std, on the input's device.

    Refuses non-uint8 input so an image cannot be normalised twice by mistake.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(shape)
    return (images.float() / 255.0 - mean) / std
