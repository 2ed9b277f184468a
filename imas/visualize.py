"""Colour label maps with a dataset palette and lay images out in annotated panels (TensorBoard, overlays).

A panel (`panel`) is a grid with a row per image and a column per view, a header naming the columns, an
optional text column naming or describing each row, and a legend strip (class colour + name). Small cells
are enlarged by an integer factor with nearest-neighbour sampling, so every pixel the network saw stays one
visible block and no label colour is blended into a colour that is no class.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

IGNORE_COLOUR = (255, 255, 255)  # label 255 (ignored / unconfident) is drawn white
# The panel's gaps, header and legend: a neutral grey that stands out against black (VOC's background) and
# white (ignored pixels), and is none of the colours of VOC's 21 classes or Cityscapes' 19.
GAP_COLOUR = (100, 100, 100)
TEXT_COLOUR = (255, 255, 255)
MIN_CELL = 128  # px: cells smaller than this are enlarged (integer factor, nearest neighbour)
GAP = 4  # px between cells and around the panel
FONT_SIZE = 14


def colorize(labels: Tensor, palette: Sequence[tuple[int, int, int]]) -> Tensor:
    """Index maps [N, H, W] (values < len(palette), or 255) -> uint8 RGB [N, 3, H, W] on the same device.

    Any value outside the palette (255 included) is drawn in IGNORE_COLOUR.
    """
    table = torch.tensor([*palette, IGNORE_COLOUR], dtype=torch.uint8, device=labels.device)
    index = labels.long().clamp(0, len(palette))
    index = torch.where(labels.long() >= len(palette), len(palette), index)
    return table[index].permute(0, 3, 1, 2).contiguous()


def grid(columns: Sequence[Tensor], pad: int = 2, fill: tuple[int, int, int] = GAP_COLOUR) -> Tensor:
    """Columns (C of them) of uint8 images [N, 3, H, W] -> uint8 [3, N*(H+pad)-pad, C*(W+pad)-pad].

    Row n shows image n of every column, left to right; the gaps are `fill` (grey).
    """
    n, _, h, w = columns[0].shape
    out = torch.tensor(fill, dtype=torch.uint8).view(3, 1, 1)
    out = out.expand(3, n * (h + pad) - pad, len(columns) * (w + pad) - pad).clone()
    for c, images in enumerate(columns):
        if images.shape != (n, 3, h, w):
            raise ValueError(f"grid column {c} has shape {tuple(images.shape)}, expected {(n, 3, h, w)}")
        for r in range(n):
            top, left = r * (h + pad), c * (w + pad)
            out[:, top : top + h, left : left + w] = images[r].to("cpu", torch.uint8)
    return out


def upscale(images: Tensor, min_side: int = MIN_CELL) -> Tensor:
    """Images [..., H, W] enlarged by the smallest integer factor f >= 1 with f * min(H, W) >= min_side,
    nearest neighbour (each pixel becomes an f x f block); unchanged when already large enough."""
    factor = max(1, math.ceil(min_side / max(1, min(images.shape[-2:]))))
    if factor == 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def fit(image: Tensor, height: int, width: int, smooth: bool) -> Tensor:
    """uint8 [3, H, W] -> uint8 [3, height, width]: scaled (aspect kept) to fit, centred on GAP_COLOUR.

    smooth: bilinear (antialiased when shrinking) for photos; otherwise nearest neighbour, for colourised
    label maps, whose colours must stay class colours.
    """
    h, w = image.shape[-2:]
    scale = min(height / h, width / w)
    size = (max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale))))
    x = image[None].float()
    if smooth:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    else:
        x = F.interpolate(x, size=size, mode="nearest-exact")
    out = torch.tensor(GAP_COLOUR, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width).clone()
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    out[:, top : top + size[0], left : left + size[1]] = x[0].round().clamp(0, 255).to(torch.uint8)
    return out


@functools.lru_cache(maxsize=4)
def font(size: int = FONT_SIZE) -> Any:
    """PIL's default font at `size` px (scalable where Pillow has FreeType, else its small bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the fixed 11 px bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font())
    return int(math.ceil(right - left))


def _clip(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """`text`, shortened with '..' at the end until it fits `width` px."""
    if _text_width(draw, text) <= width:
        return text
    while text and _text_width(draw, text + "..") > width:
        text = text[:-1]
    return text + ".."


def panel(
    columns: Mapping[str, Tensor],
    palette: Sequence[tuple[int, int, int]],
    class_names: Sequence[str] | None = None,
    notes: Sequence[Sequence[str]] | None = None,
    legend: bool | None = None,
    max_rows: int = 4,
    min_cell: int = MIN_CELL,
) -> Tensor:
    """An annotated grid as uint8 RGB [3, H, W] (what SummaryWriter.add_image takes).

    columns: view name -> uint8 images [N, 3, h, w] (shown as they are) or label maps [N, h, w] (coloured
    with `palette`, 255 and other values outside it white); all of the same N, h, w. The first `max_rows`
    images make the rows. notes: per row, lines of text shown left of it (an id, a per-image value).
    class_names: the legend's names, one per palette entry (default: the class indices). legend: whether to
    draw the legend (the palette's colours and white for ignored pixels); None: when some column is a label
    map (pass True for label maps already coloured, as the validation panel's are).

    Layout: a header row with each column's name, the cells (enlarged to at least `min_cell` px, GAP px of
    GAP_COLOUR between them), then the legend, wrapped to the panel's width.
    """
    shown = [v[:max_rows] if v.dim() == 4 else colorize(v[:max_rows], palette) for v in columns.values()]
    shown = [upscale(v.to("cpu", torch.uint8), min_cell) for v in shown]
    n, _, cell_h, cell_w = shown[0].shape
    cells = grid(shown, pad=GAP)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = FONT_SIZE + 4
    row_notes = [list(notes[r]) if notes is not None and r < len(notes) else [] for r in range(n)]
    note_lines = [line for lines in row_notes for line in lines]
    note_w = max((_text_width(measure, line) for line in note_lines), default=0)
    note_w = min(note_w, 2 * cell_w)  # a long id is clipped rather than widening the panel without bound
    left = GAP + (note_w + GAP if note_lines else 0)
    top = GAP + line_h + GAP
    width = left + cells.shape[2] + GAP

    if legend is None:
        legend = any(v.dim() == 3 for v in columns.values())
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(palette))]
    keys = [(name, tuple(colour)) for name, colour in zip(names, palette)] + [("ignored", IGNORE_COLOUR)]
    swatch = FONT_SIZE
    entries, x, y = [], GAP, 0
    for name, colour in keys if legend else []:
        entry_w = swatch + 4 + _text_width(measure, name) + 3 * GAP
        if x > GAP and x + entry_w > width:
            x, y = GAP, y + line_h
        entries.append((x, y, name, colour))
        x += entry_w
    legend_h = (y + line_h + GAP) if entries else 0
    height = top + cells.shape[1] + GAP + legend_h

    canvas = Image.new("RGB", (width, height), GAP_COLOUR)
    canvas.paste(Image.fromarray(cells.permute(1, 2, 0).numpy()), (left, top))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        label = _clip(draw, name.replace("_", " "), cell_w)
        x0 = left + c * (cell_w + GAP) + (cell_w - _text_width(draw, label)) // 2
        draw.text((x0, GAP), label, fill=TEXT_COLOUR, font=font())
    for r, lines in enumerate(row_notes):
        for i, line in enumerate(lines):
            y0 = top + r * (cell_h + GAP) + i * line_h
            if y0 + line_h <= top + r * (cell_h + GAP) + cell_h:  # lines past the row's height are dropped
                draw.text((GAP, y0), _clip(draw, line, note_w), fill=TEXT_COLOUR, font=font())
    legend_top = top + cells.shape[1] + GAP
    for x0, y0, name, colour in entries:
        y0 += legend_top
        box = (x0, y0 + 1, x0 + swatch - 1, y0 + swatch)
        draw.rectangle(box, fill=colour)
        draw.text((x0 + swatch + 4, y0), name, fill=TEXT_COLOUR, font=font())
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def format_notes(values: Mapping[str, Tensor], rows: int) -> list[list[str]]:
    """Per-row text lines from per-image values ({"e": easiness [B], "cutmix": fired [B]}): floats with two
    decimals ("e 0.73"), booleans as yes / no ("cutmix yes"). One host transfer per value."""
    lines: list[list[str]] = [[] for _ in range(rows)]
    for key, value in values.items():
        items = value[:rows].detach().cpu().tolist()
        for r, item in enumerate(items):
            text = ("yes" if item else "no") if value.dtype == torch.bool else f"{float(item):.2f}"
            lines[r].append(f"{key} {text}")
    return lines
