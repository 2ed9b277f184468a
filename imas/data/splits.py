"""Split files: one id per line, or "image mask" relative path pairs per line (UniMatch style).

Blank lines and lines starting with # are skipped; anything after a # is a comment. Paths are relative to
the data root (an absolute path is kept as it is).
"""

from __future__ import annotations

from pathlib import Path

from imas.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_split(path: str | Path) -> list[tuple[str, ...]]:
    """The entries of a split file, each one token (an id or an image path) or two (image path, mask path)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"split file {path} cannot be read as text ({exc.__class__.__name__})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = tuple(line.split("#", 1)[0].split())
        if not tokens:
            continue
        if len(tokens) > 2:
            raise DataError(
                f"line {number} of split file {path} has {len(tokens)} fields; "
                "expected an id, an image path, or 'image mask' (paths must not contain spaces)"
            )
        entries.append(tokens)
    if not entries:
        raise DataError(f"split file {path} lists no images")
    return entries


def is_path(token: str) -> bool:
    """Whether a split token is an image/mask path (it has an image extension) rather than a bare id."""
    return token.lower().endswith(IMAGE_EXTENSIONS)
