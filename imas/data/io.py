"""Reading one image or label file, with the checks that turn bad user data into a one-sentence DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from imas.data.classes import IGNORE_INDEX
from imas.errors import DataError

# Label modes that hold class indices directly: 8-bit grey, VOC palette PNGs (the pixel values are the
# indices; converting "P" to "L" would turn them into grey levels of the palette colours), 16/32-bit grey.
_INDEX_MODES = {"L", "P", "I", "I;16", "1"}


def read_image(path: Path) -> Image.Image:
    """An RGB PIL image, fully decoded here so that a truncated or corrupt file fails now, naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"image {path} cannot be read; it is corrupt or not an image ({exc})") from None


def read_label(path: Path, num_classes: int) -> Image.Image:
    """A class-index label as an 8-bit "L" PIL image, checked to hold only values in [0, K) and 255."""
    try:
        with Image.open(path) as label:
            label.load()
            mode = label.mode
            if mode not in _INDEX_MODES:
                raise DataError(
                    f"label {path} is a colour image (mode {mode}); labels must be single-channel "
                    "class-index PNGs (or palette PNGs whose indices are the classes)"
                )
            values = np.asarray(label)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"label {path} does not exist") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"label {path} cannot be read; it is corrupt or not an image ({exc})") from None
    check_label_values(values, num_classes, path)
    return Image.fromarray(values.astype(np.uint8, copy=False), mode="L")


def check_label_values(values: np.ndarray, num_classes: int, path: Path | str) -> None:
    """Raise DataError if any value is outside [0, num_classes) and not the ignore label 255."""
    if values.size == 0:
        return
    if values.dtype == bool:
        values = values.astype(np.uint8)
    valid = ((values >= 0) & (values < num_classes)) | (values == IGNORE_INDEX)
    if valid.all():
        return
    bad = np.unique(values[~valid])
    raise DataError(
        f"label {path} contains value {int(bad[0])}"
        + (f" (and {len(bad) - 1} other invalid values)" if len(bad) > 1 else "")
        + f", but labels must be in [0, {num_classes}) or 255 (ignore)"
    )


def check_same_size(image: Image.Image, label: Image.Image, label_path: Path) -> None:
    """Raise DataError if the image and its label differ in size (PIL sizes are (width, height))."""
    if image.size != label.size:
        (iw, ih), (lw, lh) = image.size, label.size
        raise DataError(f"label {label_path} is {lw}x{lh} (WxH) but its image is {iw}x{ih}")


def write_label(values: np.ndarray, target: Path) -> None:
    """Write uint8 [H, W] class indices as a single-channel PNG, atomically: an interrupted conversion never
    leaves half a file that a rerun would skip as done."""
    tmp = target.with_name(target.name + ".tmp.png")
    Image.fromarray(values, mode="L").save(tmp)
    tmp.replace(target)
