"""Joint weak transforms on an image and its label (method.md §6): random resize, horizontal flip, pad, crop.

Image and label go through the same geometric steps so they stay pixel-aligned; the label is resized with
nearest neighbour so no new class values appear. Random numbers come from torch's RNG: in DataLoader workers
that RNG is seeded per worker by the loader, and with num_workers=0 it is the main process RNG, which the
training loop checkpoints. Normalisation happens later, on the device.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from imas.config import DataConfig, ResizeRule
from imas.data.classes import IGNORE_INDEX
from imas.normalization import MEAN_RGB_UINT8


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high], both inclusive."""
    return int(torch.randint(low, high + 1, (1,)).item())


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()).item())


def resized_shape(height: int, width: int, cfg: DataConfig) -> tuple[int, int]:
    """Draw the (height, width) of the random resize rule in ``cfg.resize``."""
    if cfg.resize == ResizeRule.long_side:
        long = _randint(cfg.long_side[0], cfg.long_side[1])
        if height >= width:
            return long, max(1, int(long * width / height + 0.5))
        return max(1, int(long * height / width + 0.5)), long
    if cfg.resize == ResizeRule.scale:
        s = _uniform(cfg.scale_range[0], cfg.scale_range[1])
        return max(1, int(cfg.base_size[0] * s)), max(1, int(cfg.base_size[1] * s))
    return height, width


def weak_transform(image: Image.Image, label: Image.Image, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Resize, flip, pad and crop an RGB image and its "L" label together.

    Returns image uint8 [S, S, 3] and label uint8 [S, S] with S = cfg.crop_size; padding is MEAN_RGB_UINT8 in
    the image and 255 in the label.
    """
    height, width = resized_shape(image.height, image.width, cfg)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), Image.BILINEAR)
        label = label.resize((width, height), Image.NEAREST)
    image_arr, label_arr = np.asarray(image), np.asarray(label)
    if cfg.flip and torch.rand(()).item() < 0.5:
        image_arr, label_arr = image_arr[:, ::-1], label_arr[:, ::-1]
    image_arr, label_arr = pad_to(image_arr, label_arr, cfg.crop_size)
    return random_crop(image_arr, label_arr, cfg.crop_size)


def pad_to(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right so both sides are at least `size`: image [H, W, 3] with the mean colour, label 255."""
    height, width = label.shape
    if height >= size and width >= size:
        return image, label
    out_h, out_w = max(height, size), max(width, size)
    padded_image = np.empty((out_h, out_w, 3), dtype=np.uint8)
    padded_image[:] = MEAN_RGB_UINT8
    padded_image[:height, :width] = image
    padded_label = np.full((out_h, out_w), IGNORE_INDEX, dtype=np.uint8)
    padded_label[:height, :width] = label
    return padded_image, padded_label


def random_crop(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A random size x size window of image [H, W, 3] and label [H, W] (both sides already >= size)."""
    height, width = label.shape
    top, left = _randint(0, height - size), _randint(0, width - size)
    return (
        np.ascontiguousarray(image[top : top + size, left : left + size]),
        np.ascontiguousarray(label[top : top + size, left : left + size]),
    )
