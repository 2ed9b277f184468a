"""Whole-image, sliding-window and multi-scale + flip prediction and evaluation (imas-eval and training).

Images enter the model normalised by imas.normalization.normalize. Every predictor returns class
probabilities [B, K, H, W] at the input size; the predicted label map is their argmax. Large images are
predicted tile by tile with bounded memory (`predict_labels_tiled`). `evaluate_model` and
`inference_options` apply a config's evaluation settings; imas.networks loads a trained model.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imas.config import Config
from imas.metrics import ConfusionMatrix
from imas.normalization import normalize
from imas.precision import AUTOCAST_DTYPES

MODES = ("whole", "sliding")


def _probs(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> torch.Tensor:
    """Softmax of model(x) in float32: x [N, 3, h, w] → [N, K, h, w]. The model returns a SegOutput (a
    segmentor) or the logits themselves (any callable)."""
    out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out.logits
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


# ------------------------------------------------------------------------- large images, tile by tile


def _source_index(
    lo: int, hi: int, in_size: int, out_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output indices [lo, hi) of a bilinear, align_corners=True resize of one axis from in_size to out_size:
    the two source indices and the weight of the second, computed as F.interpolate computes them."""
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    source = torch.arange(lo, hi, device=device, dtype=torch.float32) * scale
    first = source.floor().long().clamp(0, in_size - 1)
    second = (first + 1).clamp(max=in_size - 1)
    return first, second, (source - first).clamp(0, 1)


def _needed(lo: int, hi: int, in_size: int, out_size: int) -> tuple[int, int]:
    """The source range [lo, hi) that output indices [lo, hi) of `_resize_axis` read."""
    if in_size == out_size:
        return lo, hi
    first, second, _ = _source_index(lo, hi, in_size, out_size, torch.device("cpu"))
    return int(first.min()), int(second.max()) + 1


def _resize_axis(
    x: torch.Tensor, dim: int, lo: int, hi: int, size: tuple[int, int], offset: int
) -> torch.Tensor:
    """Output indices [lo, hi) along `dim` (2: rows, 3: columns) of the bilinear, align_corners=True resize
    of that axis from size[0] to size[1], computed from x, whose index 0 along `dim` is source `offset`."""
    in_size, out_size = size
    if in_size == out_size:  # scale 1: no resize, no copy
        return x.narrow(dim, lo - offset, hi - lo)
    if dim == 3:  # index_select along the last dimension is much slower on the CPU: go through the transpose
        return _resize_axis(x.transpose(2, 3).contiguous(), 2, lo, hi, size, offset).transpose(2, 3)
    first, second, weight = _source_index(lo, hi, in_size, out_size, x.device)
    return torch.lerp(
        x.index_select(2, first - offset), x.index_select(2, second - offset), weight.view(-1, 1)
    )


def _view_pixels(
    image: torch.Tensor,
    size: tuple[int, int],
    mirrored: bool,
    rows: tuple[int, int],
    cols: tuple[int, int],
    device: torch.device,
) -> torch.Tensor:
    """Rows/cols [lo, hi) of `normalize(image)` resized to `size` (then mirrored), on `device`: the view that
    `predict` gives the model, computed from the source pixels it needs only. image: uint8 [B, 3, H, W]."""
    h, w = image.shape[-2:]
    if mirrored:  # column j of the mirrored view is column size[1] - 1 - j of the resized image
        cols = (size[1] - cols[1], size[1] - cols[0])
    (r0, r1), (c0, c1) = _needed(*rows, h, size[0]), _needed(*cols, w, size[1])
    source = normalize(image[:, :, r0:r1, c0:c1].to(device))
    pixels = _resize_axis(_resize_axis(source, 2, *rows, (h, size[0]), r0), 3, *cols, (w, size[1]), c0)
    return pixels.flip(-1) if mirrored else pixels


def _sliding_box(
    model: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    size: tuple[int, int],
    mirrored: bool,
    box: tuple[int, int, int, int],
    window: int,
    stride: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Box (top, bottom, left, right) of predict_sliding's probabilities for one view (image resized to
    `size`, maybe mirrored), from the windows that touch the box only: the same windows, the same sums and
    counts as the whole view gives those pixels. Returns [B, K, bottom - top, right - left]."""
    top, bottom, left, right = box
    vh, vw = size
    ph, pw = max(vh, window), max(vw, window)  # predict_sliding pads a short side up to the window
    ys = [y for y in window_starts(ph, window, stride) if y < bottom and y + window > top]
    xs = [x for x in window_starts(pw, window, stride) if x < right and x + window > left]
    u0, u1, v0, v1 = ys[0], ys[-1] + window, xs[0], xs[-1] + window
    b = image.shape[0]
    # The windows' pixels: the view where it exists, 0 (the mean colour after normalisation) in the padding.
    region = torch.zeros(b, 3, u1 - u0, v1 - v0, device=device)
    inside = (u0, min(u1, vh)), (v0, min(v1, vw))
    pixels = _view_pixels(image, size, mirrored, *inside, device)
    region[:, :, : inside[0][1] - u0, : inside[1][1] - v0] = pixels
    total: torch.Tensor | None = None
    boxes = [(i, y, x) for i in range(b) for y in ys for x in xs]
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        crops = torch.cat(
            [region[i : i + 1, :, y - u0 : y - u0 + window, x - v0 : x - v0 + window] for i, y, x in chunk]
        )
        probs = _probs(model, crops)
        if total is None:
            total = probs.new_zeros(b, probs.shape[1], bottom - top, right - left)
        for (i, y, x), p in zip(chunk, probs):
            # The part of window (y, x) inside the box.
            y0, y1, x0, x1 = max(y, top), min(y + window, bottom), max(x, left), min(x + window, right)
            total[i, :, y0 - top : y1 - top, x0 - left : x1 - left] += p[:, y0 - y : y1 - y, x0 - x : x1 - x]
    assert total is not None  # there is always at least one window
    # Every window covering a box pixel touches the box, so these are the whole view's counts there.
    rows = torch.arange(top, bottom, device=device)
    cols = torch.arange(left, right, device=device)
    starts_y, starts_x = torch.tensor(ys, device=device), torch.tensor(xs, device=device)
    row_count = ((rows[:, None] >= starts_y) & (rows[:, None] < starts_y + window)).sum(1)
    col_count = ((cols[:, None] >= starts_x) & (cols[:, None] < starts_x + window)).sum(1)
    return total.div_((row_count[:, None] * col_count[None, :]).to(total.dtype))


@torch.inference_mode()
def predict_box(
    model: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    box: tuple[int, int, int, int],
    window: int,
    stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    batch_size: int = 4,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Probabilities [B, K, bottom - top, right - left] of the box (top, bottom, left, right) of a uint8
    image [B, 3, H, W], equal up to float rounding to
    `predict(model, normalize(image), "sliding", window, stride, scales, flip, batch_size)` cropped to the
    box, but computed from the pixels and windows that the box needs only: memory grows with the box, not
    with the image. The image may stay on the CPU: the pixels the box needs go to `device` (default: the
    image's), where the model must be, and so does the result."""
    device = torch.device(device) if device is not None else image.device
    stride = stride or (2 * window) // 3
    if window <= 0 or not 0 < stride <= window or batch_size <= 0:
        raise ValueError(
            f"need window > 0, 0 < stride <= window and batch_size > 0, got {window}, {stride}, {batch_size}"
        )
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")
    h, w = image.shape[-2:]
    top, bottom, left, right = box
    total: torch.Tensor | None = None
    views = 0
    for scale in scales:
        size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
        # The rows/columns of the view's probabilities that resizing back to the box reads.
        a0, a1 = _needed(top, bottom, size[0], h)
        b0, b1 = _needed(left, right, size[1], w)
        for mirrored in (False, True) if flip else (False,):
            cols = (size[1] - b1, size[1] - b0) if mirrored else (b0, b1)
            view_box = (a0, a1, *cols)
            probs = _sliding_box(model, image, size, mirrored, view_box, window, stride, batch_size, device)
            probs = probs.flip(-1) if mirrored else probs
            probs = _resize_axis(probs, 2, top, bottom, (size[0], h), a0)
            probs = _resize_axis(probs, 3, left, right, (size[1], w), b0)
            total = probs if total is None else total.add_(probs)  # in place: one K x tile x tile buffer
            views += 1
    assert total is not None
    return total.div_(views)


def predict_labels_tiled(
    model: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    tile: int,
    window: int,
    stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Sliding-window labels (argmax) of a large uint8 image [B, 3, H, W] → [B, H, W] (uint8 when there are
    at most 256 classes, else int64), computed `tile` × `tile` output pixels at a time with `predict_box`.

    The same labels as predict(..., "sliding", ...).argmax(1) up to float rounding, without ever holding
    K × H × W probabilities. The image and labels stay on the image's device (e.g. the CPU); each tile's
    pixels go to `device` (default: the image's), where the model is. Windows that straddle a tile border
    are run once for each tile they touch: the price of the memory bound. `on_tile(done, total)` is called
    after each tile (progress for an image that takes minutes).
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    b, _, h, w = image.shape
    labels: torch.Tensor | None = None
    boxes = [
        (top, min(top + tile, h), left, min(left + tile, w))
        for top in range(0, h, tile)
        for left in range(0, w, tile)
    ]
    for done, box in enumerate(boxes, start=1):
        probs = predict_box(model, image, box, window, stride, scales, flip, batch_size, device)
        if labels is None:
            dtype = torch.uint8 if probs.shape[1] <= 256 else torch.int64
            labels = torch.empty(b, h, w, dtype=dtype, device=image.device)
        labels[:, box[0] : box[1], box[2] : box[3]] = probs.argmax(1).to(image.device, labels.dtype)
        if on_tile is not None:
            on_tile(done, len(boxes))
    assert labels is not None
    return labels


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
    progress: Callable[[int], None] | None = None,
    batch_size: int = 4,
) -> ConfusionMatrix:
    """Confusion matrix of `model` over `loader`, summed over all processes.

    loader yields dicts with "image" uint8 [B, 3, H, W] and "mask" long [B, H, W] (other keys ignored).
    The caller puts the model in eval mode (nothing is restored here) and gives each process a disjoint
    share of the images so that each is counted exactly once. Under DDP pass the plain module rather than
    the DDP wrapper: DDP's forward may broadcast buffers, a collective that hangs when the ranks hold
    different numbers of batches. autocast_dtype (bf16/fp16) runs the model under torch.autocast; the
    probabilities are float32 either way. batch_size is the number of sliding windows per forward pass.
    progress(images) is called after each batch with the number of images this process has evaluated
    (imas-eval shows a rate and an ETA from it; training passes none).
    """
    confusion = ConfusionMatrix(num_classes, device, ignore_index)
    done = 0
    with torch.inference_mode():
        for batch in loader:
            image = normalize(batch["image"].to(device, non_blocking=True))
            mask = batch["mask"].to(device, non_blocking=True)
            with _autocast(device, autocast_dtype):
                probs = predict(model, image, mode, window, stride, scales, flip, batch_size)
            confusion.update(probs.argmax(1), mask)
            done += image.shape[0]
            if progress is not None:
                progress(done)
    confusion.all_reduce()
    return confusion


# ---------------------------------------------------------------- evaluation and trained models


def inference_options(cfg: Config) -> dict[str, Any]:
    """cfg.eval as the keyword arguments of `predict` / `evaluate`."""
    e = cfg.eval
    return {
        "mode": e.mode.value,
        "window": e.window,
        "stride": e.stride or None,
        "scales": e.scales,
        "flip": e.flip,
        "batch_size": e.batch_size,
    }


def evaluate_model(
    cfg: Config,
    model: nn.Module,
    loader: Any,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Confusion matrix of `model` on the val loader with cfg.eval's mode, scales and flip (all ranks)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate(
            model,
            loader,
            num_classes=cfg.data.num_classes,
            device=device,
            **inference_options(cfg),
            autocast_dtype=AUTOCAST_DTYPES[cfg.train.precision],
            progress=progress,
        )
    finally:
        model.train(was_training)
