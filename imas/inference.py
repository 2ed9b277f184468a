"""Whole-image, sliding-window and multi-scale + flip prediction and evaluation (eval.py and training).

Images enter the model normalised with the ImageNet mean/std (see `normalize`). Every predictor returns
class probabilities [B, K, H, W] at the input size; the predicted label map is their argmax.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imas.metrics import ConfusionMatrix

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("whole", "sliding")


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


def _probs(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> torch.Tensor:
    """Softmax of model(x) in float32: x [N, 3, h, w] → [N, K, h, w]."""
    logits = model(x)
    if isinstance(logits, (tuple, list)):
        raise TypeError("the model returned a tuple (train mode with an aux head?); call model.eval() first")
    if logits.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"model logits {tuple(logits.shape)} are not at the input size {tuple(x.shape[-2:])}"
        )
    return logits.float().softmax(dim=1)


def predict_whole(model: Callable[[torch.Tensor], Any], image: torch.Tensor) -> torch.Tensor:
    """One forward pass on the whole image: image [B, 3, H, W] (normalised) → probabilities [B, K, H, W]."""
    return _probs(model, image)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` pixels every `stride`, the last one aligned to the end.

    size ≤ window gives one window at 0 (the caller pads up to the window).
    """
    if size <= window:
        return [0]
    return [*range(0, size - window, stride), size - window]


def predict_sliding(
    model: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    window: int,
    stride: int | None = None,
    batch_size: int = 4,
) -> torch.Tensor:
    """Sliding-window prediction: image [B, 3, H, W] (normalised) → probabilities [B, K, H, W].

    Square windows of `window` pixels every `stride` (None or 0: ⌊2·window/3⌋) cover the image, the last
    one in each direction aligned to the border. A side shorter than the window is padded at the bottom /
    right with 0, which after normalisation is the mean colour, and the padding is cropped off the result.
    The windows of all images go through the model `batch_size` at a time. Each pixel's result is the sum
    of the softmax of every window covering it divided by the number of such windows; the division is by
    the same count for every class, so the argmax is that of the summed softmax (the released evaluation).
    """
    stride = stride or (2 * window) // 3
    if window <= 0 or not 0 < stride <= window or batch_size <= 0:
        raise ValueError(
            f"need window > 0, 0 < stride <= window and batch_size > 0, got {window}, {stride}, {batch_size}"
        )
    b, _, h, w = image.shape
    padded = F.pad(image, (0, max(window - w, 0), 0, max(window - h, 0)))
    ph, pw = padded.shape[-2:]
    boxes = [
        (i, y, x)
        for i in range(b)
        for y in window_starts(ph, window, stride)
        for x in window_starts(pw, window, stride)
    ]
    total: torch.Tensor | None = None  # [B, K, ph, pw], allocated once K is known from the first output
    count = torch.zeros(1, 1, ph, pw, device=image.device)
    for y, x in {(y, x) for _, y, x in boxes}:
        count[..., y : y + window, x : x + window] += 1
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        crops = torch.cat([padded[i : i + 1, :, y : y + window, x : x + window] for i, y, x in chunk])
        probs = _probs(model, crops)
        if total is None:
            total = probs.new_zeros(b, probs.shape[1], ph, pw)
        for (i, y, x), p in zip(chunk, probs):
            total[i, :, y : y + window, x : x + window] += p
    assert total is not None  # there is always at least one window
    return (total / count)[..., :h, :w]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


@torch.inference_mode()
def predict(
    model: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    mode: str = "whole",
    window: int = 769,
    stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    batch_size: int = 4,
) -> torch.Tensor:
    """Whole-image or sliding-window prediction, averaged over scales and (optionally) a horizontal flip.

    image: [B, 3, H, W], normalised, on the model's device. For each scale s the image is resized to
    round(s·H) × round(s·W) (bilinear, align_corners=True), predicted, and the probabilities resized back
    to H × W; with `flip` the mirrored image is predicted too and its result mirrored back. Returns the
    mean probabilities [B, K, H, W] (float32). The model must be in eval mode (the caller's job).
    window / stride / batch_size are used by mode "sliding" only.
    """
    mode = mode.value if isinstance(mode, enum.Enum) else mode
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; valid: {', '.join(MODES)}")
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")

    def run(x: torch.Tensor) -> torch.Tensor:
        if mode == "sliding":
            return predict_sliding(model, x, window, stride, batch_size)
        return predict_whole(model, x)

    h, w = image.shape[-2:]
    total: torch.Tensor | None = None
    views = 0
    for scale in scales:
        scaled = _resize(image, (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))))
        for mirrored in (False, True) if flip else (False,):
            x = scaled.flip(-1) if mirrored else scaled
            probs = run(x)
            probs = _resize(probs.flip(-1) if mirrored else probs, (h, w))
            total = probs if total is None else total + probs
            views += 1
    assert total is not None
    return total / views


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def evaluate(
    model: nn.Module | Callable[[torch.Tensor], Any],
    loader: Iterable[dict[str, Any]],
    num_classes: int,
    device: torch.device,
    mode: str = "whole",
    window: int = 769,
    stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    ignore_index: int = 255,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    batch_size: int = 4,
) -> ConfusionMatrix:
    """Confusion matrix of `model` over `loader`, summed over all processes.

    loader yields dicts with "image" uint8 [B, 3, H, W] and "mask" long [B, H, W] (other keys ignored).
    The caller puts the model in eval mode (nothing is restored here) and gives each process a disjoint
    share of the images so that each is counted exactly once. Under DDP pass the plain module rather than
    the DDP wrapper: DDP's forward may broadcast buffers, a collective that hangs when the ranks hold
    different numbers of batches. autocast_dtype (bf16/fp16) runs the model under torch.autocast; the
    probabilities are float32 either way. batch_size is the number of sliding windows per forward pass.
    """
    confusion = ConfusionMatrix(num_classes, device, ignore_index)
    total = len(loader) if hasattr(loader, "__len__") else 0
    every = max(1, total // 10)
    with torch.inference_mode():
        for step, batch in enumerate(loader, start=1):
            image = normalize(batch["image"].to(device, non_blocking=True))
            mask = batch["mask"].to(device, non_blocking=True)
            with _autocast(device, autocast_dtype):
                probs = predict(model, image, mode, window, stride, scales, flip, batch_size)
            confusion.update(probs.argmax(1), mask)
            if progress and (step % every == 0 or step == total):
                log.info("eval %d/%s batches", step, total or "?")
    confusion.all_reduce()
    return confusion
