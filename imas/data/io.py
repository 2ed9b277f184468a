"""Reading one image or label file, with the checks that turn bad user data into a one-sentence DataError,
and the checks that an output folder or file can be written before any work is done."""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imas.data.classes import IGNORE_INDEX
from imas.errors import DataError, UserError

# Label modes that hold class indices directly: 8-bit grey, VOC palette PNGs (the pixel values are the
# indices; converting "P" to "L" would turn them into grey levels of the palette colours), 16/32-bit grey.
_INDEX_MODES = {"L", "P", "I", "I;16", "1"}
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 upright, 2-8 mirrored and/or turned by 90/180/270 degrees
_TURNED = {5, 6, 7, 8}  # the orientations that swap width and height


@contextmanager
def _open(path: Path, what: str) -> Iterator[Image.Image]:
    """Image.open with Pillow's decompression-bomb guard as one sentence naming the file.

    Pillow refuses an image above 2 x Image.MAX_IMAGE_PIXELS (DecompressionBombError) and only warns above
    1 x. The error becomes a DataError naming the file and its pixel count; the warning is silenced because
    such an image (e.g. 10000 x 10000) is read like any other, and a warning from every DataLoader worker on
    every epoch would only bury the log.

    catch_warnings swaps the process-wide filter list and is not thread-safe: with imas.data.preflight's
    reader threads the worst case is that the "ignore" outlives a read, i.e. the same warning silenced
    a little longer, which is harmless here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                yield image
        except Image.DecompressionBombError as exc:
            raise DataError(_bomb_message(path, what, exc)) from None


def _bomb_message(path: Path, what: str, exc: Exception) -> str:
    found = re.search(r"\((\d+) pixels\).*limit of (\d+) pixels", str(exc))
    if not found:  # another Pillow wording: keep its own words
        return f"{what} {path} is too large to be read safely ({exc}); downscale it or remove it"
    pixels, limit = (int(v) for v in found.groups())
    return (
        f"{what} {path} has {pixels:,} pixels, more than the {limit:,} that Pillow reads "
        "(its guard against decompression bombs); downscale it or remove it"
    )


def exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation of an open image, 1 (upright) when it has none or an unreadable one."""
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block must not make a readable image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """8-bit RGB of any Pillow mode; 16-bit data is scaled, not clipped, and float data is refused.

    convert("RGB") clips 16-bit grey (mode "I;16", or "I" from older Pillow and 32-bit TIFFs) at 255, which
    turns nearly every pixel white. Values 0..65535 are scaled by 255/65535 (rounded), so a 16-bit copy of
    an 8-bit image (v * 257) reads back exactly as the original. 16-bit RGB PNGs already open as 8-bit "RGB".
    Values outside 0..65535 are refused, and so are values all within 0..255: such an image is either 8-bit
    data stored in 16 or 32 bits (a uint8 array cast to uint16 without scaling) or a nearly black 16-bit
    image, and nothing tells which.
    """
    mode = image.mode
    if mode == "F":
        # Float images have no agreed range (0..1? 0..255? HDR?): guessing would silently ruin some of them.
        raise DataError(
            f"image {path} is a floating-point image (mode F) whose value range is unknown; "
            "save it as an 8-bit or 16-bit image"
        )
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(image)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise DataError(
                f"image {path} holds values from {low} to {high}, outside the 16-bit range 0..65535 "
                "that can be scaled to 8 bits; save it as an 8-bit or 16-bit image"
            )
        if 0 < high <= 255:
            # An integer image holding 8-bit values: scaled as 16-bit data it would be black, read as 8-bit
            # data a dark 16-bit image would be 257 times too bright. Neither guess is safe.
            bits = "32" if mode == "I" else "16"
            raise DataError(
                f"image {path} is a {bits}-bit integer image whose values (0..{high}) do not say whether "
                "they are 8-bit or 16-bit data; save it as an 8-bit image, or scale it to the 16-bit range"
            )
        eight = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257)
        return Image.fromarray(eight).convert("RGB")
    return image.convert("RGB")


def read_image(path: Path, exif_transpose: bool = False) -> Image.Image:
    """An 8-bit RGB PIL image, fully decoded here so that a truncated or corrupt file fails now, naming it.

    16-bit images are scaled to 8 bits (see `_to_rgb`); float images and decompression bombs are a
    DataError. exif_transpose=False (training, evaluation, imas-data check) keeps the stored pixel grid, the
    one VOC / Cityscapes labels are drawn on; True (imas-predict) turns the image as a viewer shows it. The
    result's info["exif_orientation"] is the file's EXIF orientation (1 = upright) and
    info["exif_applied"] whether it was applied.
    """
    try:
        with _open(path, "image") as image:
            image.load()
            orientation = exif_orientation(image)
            applied = exif_transpose and orientation != 1
            rgb = _to_rgb(ImageOps.exif_transpose(image) if applied else image, path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"image {path} cannot be read; it is corrupt or not an image ({exc})") from None
    rgb.info["exif_orientation"] = orientation
    rgb.info["exif_applied"] = applied
    return rgb


def read_label(path: Path, num_classes: int) -> Image.Image:
    """A class-index label as an 8-bit "L" PIL image, checked to hold only values in [0, K) and 255."""
    try:
        with _open(path, "label") as label:
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
        orientation = image.info.get("exif_orientation", 1)
        hint = ""
        if orientation in _TURNED and label.size == (ih, iw) and not image.info.get("exif_applied"):
            # The label was most likely drawn on the image as a viewer shows it (turned by its EXIF tag).
            hint = (
                f"; the image's EXIF orientation {orientation} makes viewers show it turned to {ih}x{iw}, "
                "but training reads the stored pixels: save the image upright (PIL.ImageOps.exif_transpose)"
            )
        raise DataError(f"label {label_path} is {lw}x{lh} (WxH) but its image is {iw}x{ih}{hint}")


def write_label(values: np.ndarray, target: Path) -> None:
    """Write uint8 [H, W] class indices as a single-channel PNG, atomically: an interrupted conversion never
    leaves half a file that a rerun would skip as done."""
    tmp = target.with_name(target.name + ".tmp.png")
    Image.fromarray(values, mode="L").save(tmp)
    tmp.replace(target)


def check_writable_dir(folder: Path, what: str) -> None:
    """Create `folder` if needed and write (and delete) a temporary file in it: an output folder that cannot
    be written is one sentence before any work instead of a traceback after all of it."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {folder} cannot be created or written ({exc.strerror or exc})") from None


def check_writable_file(path: Path, what: str) -> None:
    """Like `check_writable_dir` for a file to be written later: its folder is created and written to."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(
            f"{what} {path} cannot be written: its folder cannot be created or written ({reason})"
        ) from None
