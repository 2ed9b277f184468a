"""A tiny dataset in the custom layout, for docs/data.md's walk-through without images of your own.

    python -m imas.data.example [FOLDER]    (default: the current folder)

writes FOLDER/data/mine/images/img01.jpg ... img16.jpg, FOLDER/data/mine/masks/img01.png ... img12.png (single
channel: 0 background, 1 crop, 2 weed; images 13-16 have no mask) and FOLDER/new_photos/photo1.jpg,
photo2.jpg, all 64 x 64 px: a soil-brown field with a green disk (crop) and a red square (weed). An existing
data/mine or new_photos is refused in one sentence (exit status 2), never overwritten.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from imas.cli import run_command
from imas.errors import UserError

LABELED, UNLABELED, NEW = 12, 4, 2  # images with masks (labeled + val), images without, photos to predict
SIDE = 64
COLOURS = np.array([[120, 90, 60], [40, 170, 60], [200, 50, 40]], np.int16)  # soil, crop, weed


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One field: image [SIDE, SIDE, 3] uint8 and its mask [SIDE, SIDE] uint8 (a disk of class 1 and a
    square of class 2 on class 0, the square drawn last)."""
    label = np.zeros((SIDE, SIDE), np.uint8)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    cy, cx, r = (int(v) for v in rng.integers((14, 14, 6), (50, 50, 12)))
    label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    top, left, side = (int(v) for v in rng.integers((4, 4, 8), (44, 44, 16)))
    label[top : top + side, left : left + side] = 2
    image = COLOURS[label] + rng.integers(-20, 21, size=(SIDE, SIDE, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_example(folder: str | Path, seed: int = 0) -> None:
    """Write the walk-through's images, masks and new photos below `folder` (see the module docstring)."""
    folder = Path(folder)
    for taken in (folder / "data/mine", folder / "new_photos"):
        if taken.exists():
            raise UserError(f"{taken} exists already; move it or give another folder")
    rng = np.random.default_rng(seed)
    images, masks, photos = folder / "data/mine/images", folder / "data/mine/masks", folder / "new_photos"
    for path in (images, masks, photos):
        path.mkdir(parents=True)
    for n in range(1, LABELED + UNLABELED + 1):
        image, label = scene(rng)
        Image.fromarray(image).save(images / f"img{n:02d}.jpg", quality=95)
        if n <= LABELED:
            Image.fromarray(label, mode="L").save(masks / f"img{n:02d}.png")
    for n in range(1, NEW + 1):
        Image.fromarray(scene(rng)[0]).save(photos / f"photo{n}.jpg", quality=95)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imas.data.example",
        description="Write the tiny custom dataset of docs/data.md's walk-through (data/mine, new_photos).",
    )
    parser.add_argument("folder", nargs="?", default=".", help="where to write (default: here)")
    args = parser.parse_args(argv)

    def body() -> None:
        make_example(args.folder)
        print(f"wrote {Path(args.folder) / 'data/mine'} and {Path(args.folder) / 'new_photos'}")

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
