"""Cityscapes labelIds -> trainIds conversion (the *_gtFine_labelTrainIds.png files the readers expect)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from imas.data.classes import cityscapes_label_to_train_id
from imas.data.io import write_label
from imas.errors import DataError

LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelIds array uint8 [H, W] to trainIds uint8 [H, W] (0..18, 255 = ignore)."""
    return cityscapes_label_to_train_id()[label_ids]


def convert_label_file(source: Path, target: Path) -> None:
    """Read one *_gtFine_labelIds.png and write its trainIds as a single-channel PNG."""
    try:
        with Image.open(source) as image:
            if image.mode not in ("L", "P"):
                raise DataError(
                    f"{source} is a {image.mode} image; expected an 8-bit single-channel labelIds PNG"
                )
            label_ids = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{source} cannot be read; it is corrupt or not an image ({exc})") from None
    write_label(label_ids_to_train_ids(label_ids), target)


def convert_cityscapes(
    root: str | Path, overwrite: bool = False, progress: Callable[[int, int, Path], None] | None = None
) -> tuple[int, int]:
    """Convert every <root>/gtFine/*/*/*_gtFine_labelIds.png; returns (converted, skipped as existing)."""
    gt_fine = Path(root) / "gtFine"
    if not gt_fine.is_dir():
        raise DataError(
            f"{gt_fine} does not exist; pass the Cityscapes root that holds gtFine/ and leftImg8bit/"
        )
    sources = sorted(gt_fine.glob(f"*/*/*{LABEL_IDS_SUFFIX}"))
    if not sources:
        raise DataError(f"no *{LABEL_IDS_SUFFIX} files found under {gt_fine}/<split>/<city>/")
    converted = skipped = 0
    for number, source in enumerate(sources, start=1):
        target = source.with_name(source.name[: -len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX)
        if target.is_file() and not overwrite:
            skipped += 1
        else:
            convert_label_file(source, target)
            converted += 1
        if progress is not None:
            progress(number, len(sources), source)
    return converted, skipped
