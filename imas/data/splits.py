"""Split files: one id per line, or "image mask" relative path pairs per line (UniMatch style).

Blank lines and lines starting with # are skipped; anything after a # is a comment. Paths are relative to
the data root (an absolute path is kept as it is). Fields are separated by spaces (a tab may separate an
image path from its mask path). Files saved on Windows read the same: a UTF-8 byte order mark is dropped and
CRLF (or CR) line ends are line ends. Any other invisible character (a zero-width space, a no-break space, a
control character) would silently become part of an id or split one in two, so it is an error that names it.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from imas.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# Format and control characters, and every space and line or paragraph separator but the plain space.
_INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")


def read_split(path: str | Path) -> list[tuple[str, ...]]:
    """The entries of a split file, each one token (an id or an image path) or two (image path, mask path)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"split file {path} is a folder, not a file; give the path of a .txt split list")
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    try:
        # utf-8-sig: Notepad and Excel start UTF-8 files with a byte order mark, which is no part of an id
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"split file {path} cannot be read as text ({exc.__class__.__name__})") from None
    entries = []
    # Not str.splitlines: it also breaks lines at form feeds, U+2028 and other characters no editor shows.
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        tokens = _fields(line.split("#", 1)[0], number, path)
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


def _fields(text: str, number: int, path: Path) -> tuple[str, ...]:
    """The space-separated fields of one line (its comment removed); an invisible character is an error."""
    stripped = text.strip(" \t")
    tokens = tuple(token for token in stripped.split(" ") if token)
    if "\t" in stripped:
        tokens = tuple(stripped.split())
        # A tab between an image path and its mask path is a separator; anywhere else it is inside an id.
        if not (len(tokens) == 2 and all(is_path(token) for token in tokens)):
            raise DataError(_invisible_message("\t", number, path))
    for char in stripped:
        if char not in " \t" and unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            raise DataError(_invisible_message(char, number, path))
    return tokens


def _invisible_message(char: str, number: int, path: Path) -> str:
    name = "CHARACTER TABULATION" if char == "\t" else unicodedata.name(char, "CONTROL CHARACTER")
    spacing = char == "\t" or unicodedata.category(char) == "Zs"
    fix = "remove it" + (", or put a plain space between an image path and its mask path" if spacing else "")
    return f"line {number} of split file {path} has an invisible U+{ord(char):04X} {name}; {fix}"


def is_path(token: str) -> bool:
    """Whether a split token is an image/mask path (it has an image extension) rather than a bare id."""
    return token.lower().endswith(IMAGE_EXTENSIONS)
