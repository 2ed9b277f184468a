"""SBD (Hariharan et al.) .mat labels + VOC2012 fine labels -> the SegmentationClassAug index PNGs.

SBD ships its class labels as MATLAB files `cls/<id>.mat` holding a struct `GTcls` whose `Segmentation`
field is the [H, W] class-index map (0 = background, 1..20 the VOC classes, no ignore value). Reading them
needs scipy, an optional dependency of this project (only this conversion uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from imas.data.io import read_label, write_label
from imas.errors import DataError

VOC_NUM_CLASSES = 21


def read_sbd_mat(path: Path) -> np.ndarray:
    """The class-index map of one SBD cls/<id>.mat, uint8 [H, W]."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(
            "reading SBD .mat labels needs scipy, which is not installed; run `pip install scipy`"
        ) from None
    try:
        segmentation = loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    except Exception as exc:  # scipy raises its own MatReadError, ValueError, ... for a bad file
        raise DataError(f"{path} is not an SBD class label file (no GTcls.Segmentation: {exc})") from None
    values = np.asarray(segmentation)
    if values.ndim != 2 or values.size == 0 or values.min() < 0 or values.max() >= VOC_NUM_CLASSES:
        raise DataError(f"{path} holds no [H, W] map of class indices 0..{VOC_NUM_CLASSES - 1}")
    return values.astype(np.uint8)


def convert_sbd(
    sbd: str | Path,
    voc: str | Path,
    overwrite: bool = False,
    progress: Callable[[int, int, Path], None] | None = None,
) -> tuple[int, int]:
    """Fill <voc>/SegmentationClassAug/<id>.png; returns (written, skipped as existing).

    Every <voc>/SegmentationClass/<id>.png (VOC's own palette PNGs: their indices are the classes, 255 on
    object borders) is written as it is; every <sbd>/cls/<id>.mat whose id VOC does not label is converted.
    VOC's fine labels take priority where both exist, so the val ids keep VOC's own annotation.
    """
    sbd, voc = Path(sbd), Path(voc)
    cls, fine = sbd / "cls", voc / "SegmentationClass"
    for folder, what in ((cls, "SBD's dataset folder holding cls/"), (fine, "the VOC2012 folder")):
        if not folder.is_dir():
            raise DataError(f"{folder} does not exist; pass {what}")
    sources = {path.stem: path for path in sorted(cls.glob("*.mat"))}
    sources.update({path.stem: path for path in sorted(fine.glob("*.png"))})
    if not sources:
        raise DataError(f"no label files in {cls} or {fine}")
    out = voc / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    written = skipped = 0
    for number, (image_id, source) in enumerate(sorted(sources.items()), start=1):
        target = out / f"{image_id}.png"
        if target.is_file() and not overwrite:
            skipped += 1
        else:
            if source.suffix == ".mat":
                values = read_sbd_mat(source)
            else:
                values = np.asarray(read_label(source, VOC_NUM_CLASSES))
            write_label(values, target)
            written += 1
        if progress is not None:
            progress(number, len(sources), source)
    return written, skipped
