"""Where commands write their results: one rule for what they may replace, one way to write a file.

What a command may replace (check_output): an existing file only when the same command wrote it, which the
file itself says through a mark the format can carry without troubling its readers:

    JSON and PyTorch files   a top-level key  "written_by": "<command>"
    PNG                      a text chunk     written_by = <command>
    JPEG                     a comment        written_by: <command>
    HTML, markdown           a comment        <!-- written by <command> -->  (in the first 4 KiB)
    CSV                      its header: the first cells of the writer's table (CSV_HEADERS)

A copied or moved result keeps its mark; a user's file put in its place has none. --force lets a command
replace a file without its mark, but never an input of the command (the config, the checkpoint, an image)
nor a run's own file (RUN_FILES, a per-image history <name>.csv): those are refused even then.

How a file is written (write_atomic): into ".<name>.tmp" in the same folder, then renamed over the file; on
any failure the temporary is removed and the previous file is left as it was, and a failed write (a full
disk, a quota, a folder made read-only) is one sentence naming the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from imas.errors import UserError, failure_reason
from imas.logging import METRICS_NAME, PER_IMAGE_COLUMNS, SCALARS_NAME

MARK_KEY = "written_by"
# A run's own files, by name, and what they are: never replaced, whatever the command and --force say.
RUN_FILES = {
    "config.yaml": "a run's config",
    METRICS_NAME: "a run's metrics",
    SCALARS_NAME: "a run's training scalars",
    "train.log": "a run's log",
    "latest.pth": "a run's checkpoint",
    "best.pth": "a run's checkpoint",
    "run.lock": "a run's lock",
    "result.json": "a run's benchmark result",
}
# The header cells a CSV result starts with, by the command that writes it: a CSV's mark is its header, as
# a comment line would break readers (pandas, spreadsheets) that do not expect one.
CSV_HEADERS = {"imas-compare": ("run", "method", "config", "model", "best mIoU")}
# What results written before the marks carry instead: an imas-eval JSON's keys; imas-predict's legend chunk
# (its value: what the legend shows), which every legend has.
LEGACY_EVAL_KEYS = {"miou", "checkpoint", "model"}
LEGEND_KEY = "imas-predict legend"
TEXT_HEAD = 4096  # bytes of an HTML or markdown file searched for the mark
TEXT_MARK = re.compile(r"<!-- written by ([\w./-]+) -->")


# ------------------------------------------------------------------------------------------- the marks


def text_mark(command: str) -> str:
    """The mark of an HTML or markdown file: a comment no viewer shows."""
    return f"<!-- written by {command} -->"


def jpeg_mark(command: str) -> bytes:
    """The JPEG comment (Pillow's `comment=`) marking an image as written by `command`."""
    return f"{MARK_KEY}: {command}".encode()


def png_mark(command: str) -> PngInfo:
    """A PngInfo carrying the text chunk that marks a PNG as written by `command` (pass as `pnginfo=`)."""
    info = PngInfo()
    info.add_text(MARK_KEY, command)
    return info


def mark_of(path: Path) -> str | None:
    """The command whose mark `path` carries, or None (no mark, an unreadable file, a folder)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size < 2**24 else None
            value = data.get(MARK_KEY) if isinstance(data, dict) else None
            if value is None and isinstance(data, dict) and data.keys() >= LEGACY_EVAL_KEYS:
                value = "imas-eval"
        elif suffix in (".pth", ".pt"):
            value = _torch_mark(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            value = _image_mark(path)
        elif suffix in (".html", ".htm", ".md"):
            with path.open("rb") as f:
                head = f.read(TEXT_HEAD).decode("utf-8", errors="replace")
            found = TEXT_MARK.search(head)
            value = found.group(1) if found else None
        elif suffix == ".csv":
            value = _csv_mark(path)
        else:
            value = None
    except Exception:  # unreadable, corrupt, a folder: not ours, whatever the reason
        return None
    return value if isinstance(value, str) else None


def _torch_mark(path: Path) -> Any:
    # mmap: only the pickled dict is read, not the tensors' bytes
    data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return data.get(MARK_KEY) if isinstance(data, dict) else None


def _image_mark(path: Path) -> Any:
    with Image.open(path) as image:
        if image.format == "PNG":
            legacy = "imas-predict" if LEGEND_KEY in image.info else None
            return image.info.get(MARK_KEY, legacy)
        comment = image.info.get("comment", b"")
    prefix = f"{MARK_KEY}: ".encode()
    return comment[len(prefix) :].decode() if comment.startswith(prefix) else None


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        return f.readline(TEXT_HEAD).decode("utf-8", errors="replace").rstrip("\r\n")


def _csv_mark(path: Path) -> str | None:
    cells = tuple(_first_line(path).split(","))
    return next((c for c, head in CSV_HEADERS.items() if cells[: len(head)] == head), None)


# ------------------------------------------------------------------------------------------- the rule


def protected(path: Path) -> str | None:
    """What a run's own file is ("a run's metrics"), None for any other file."""
    if path.name in RUN_FILES:
        return RUN_FILES[path.name]
    if path.suffix.lower() == ".csv":
        try:
            if _first_line(path).split(",") == [*PER_IMAGE_COLUMNS, path.stem]:
                return "a run's per-image history"
        except OSError:
            pass
    return None


def check_output(
    path: Path,
    command: str,
    subject: str,
    *,
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    force: bool = False,
    forceable: bool = True,
    elsewhere: str = "choose another path",
) -> None:
    """Refuse, in one sentence starting with `subject` (e.g. "--out runs/x/report.html"), to let `command`
    replace `path`: a folder, an input (inputs: {"checkpoint": path, ...}), a run's own file, or an existing
    file without `command`'s mark unless `force`. An absent path is always fine.

    forceable: whether the command has --force (said in the sentence)."""
    if not path.exists():
        return  # also a dangling symlink: the rename replaces the link, not what it named
    if path.is_dir():
        raise UserError(f"{subject} is a folder; name a file")
    for what, source in (inputs or {}).items():
        if source is not None and Path(source).exists() and Path(source).samefile(path):
            raise UserError(f"{subject} is the {what} this command reads; {elsewhere}")
    kind = protected(path)
    if kind is not None:
        raise UserError(f"{subject} is a file {command} did not write ({kind}); {elsewhere}")
    if force or mark_of(path) == command:
        return
    how = ", or add --force to replace it" if forceable else " or delete it first"
    raise UserError(f"{subject} is a file {command} did not write; {elsewhere}{how}")


# ------------------------------------------------------------------------------------------ the writing


def temporary(path: Path) -> Path:
    """Where `path` is written before the rename: a hidden name in its folder (the same file system)."""
    return path.with_name(f".{path.name}.tmp")


def _open(tmp: Path) -> IO[bytes]:
    return open(tmp, "wb")


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through `write(file)` into its temporary, then rename it into place: a reader sees the
    previous file or the whole new one, never a part. Any failure removes the temporary; a failed write is
    a UserError naming the path and saying the previous file is kept."""
    path = Path(path)
    tmp = temporary(path)
    try:
        with _open(tmp) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # e.g. a folder made read-only: say the write failure
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, (OSError, RuntimeError)):  # torch.save reports a failed write as RuntimeError
            raise
        kept = f"the previous {path.name} is kept" if path.is_file() else "nothing was written"
        raise UserError(f"{path} could not be written ({failure_reason(exc, path.parent)}); {kept}") from None


def write_text_atomic(path: Path, text: str) -> None:
    """write_atomic for a UTF-8 text."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))
