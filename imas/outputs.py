"""Where commands write their results: one rule for what they may replace, one way to write a file.

What a command may replace (check_output): an existing file only when the same command wrote it, which the
file itself says through a mark the format can carry without troubling its readers:

    JSON and PyTorch files   a top-level key  "written_by": "<command>"
    PNG                      a text chunk     written_by = <command>
    JPEG                     a comment        written_by: <command>
    HTML, markdown           a comment        <!-- written by <command> -->  (in the first 4 KiB)
    CSV                      its header: the first cells of the writer's table (CSV_HEADERS)

The format is read from the file's first bytes, never from its name: a table written as "table.txt" or a
result as "eval.out" is recognised as well as "table.md" or "e.json". A copied or moved result keeps its
mark; a user's file put in its place has none. --force lets a command replace a file without its mark, but
never an input of the command (the config, the checkpoint, an image) nor a run's own file (RUN_FILES: a
name only training writes, such as metrics.jsonl, anywhere; config.yaml, best.pth or result.json in a run
directory; a per-image history <name>.csv): those are refused even then, unless the file carries the
command's own mark.

How a file is written (write_atomic): into ".<name>.tmp" in the same folder, then renamed over the file; on
any failure the temporary is removed and the previous file is left as it was, and a failed write (a full
disk, a quota, a folder made read-only) is one sentence naming the path. A symlink is written through (the
file it names is replaced, the link kept), and the new file keeps the previous file's permission bits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from imas.errors import UserError, failure_reason

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo

# torch and PIL are imported by the readers and writers that need them, not here: torch-free modules (the
# split lists) write through this one. Hence the run's file names below are written out rather than taken
# from imas.logging (which imports torch); tests/test_outputs.py checks they are METRICS_NAME and
# SCALARS_NAME.

MARK_KEY = "written_by"
# A run's own files, by name, and what they are: never replaced, whatever --force says, unless they carry the
# command's own mark. The names only training writes are a run's wherever they lie (TRAINING_FILES); the
# others are names anybody may give a file (config.yaml, best.pth, result.json), a run's only in a run
# directory (run_directory).
RUN_FILES = {
    "config.yaml": "a run's config",
    "metrics.jsonl": "a run's metrics",
    "train_scalars.jsonl": "a run's training scalars",
    "train.log": "a run's log",
    "latest.pth": "a run's checkpoint",
    "best.pth": "a run's checkpoint",
    "run.lock": "a run's lock",
    "result.json": "a run's benchmark result",
}
TRAINING_FILES = frozenset(RUN_FILES) - {"config.yaml", "best.pth", "result.json"}
# The header cells a CSV result starts with, by the command that writes it: a CSV's mark is its header, as
# a comment line would break readers (pandas, spreadsheets) that do not expect one.
CSV_HEADERS = {"imas-compare": ("run", "method", "config", "model", "best mIoU")}
# What results written before the marks carry instead: an imas-eval JSON's keys; imas-predict's legend chunk
# (its value: what the legend shows), which every legend has; an imas-report page's <title> (imas.report.page
# writes "Run report: <run folder>").
LEGACY_EVAL_KEYS = {"miou", "checkpoint", "model"}
LEGEND_KEY = "imas-predict legend"
LEGACY_REPORT_TITLE = re.compile(r"<title>Run report: [^<]*</title>")
HEAD = 4096  # bytes read to tell a file's format, and searched for an HTML or markdown mark
TEXT_MARK = re.compile(r"<!-- written by ([\w./-]+) -->")
JSON_LIMIT = 2**24  # a JSON larger than this is not read whole: no result of ours is that large
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
ZIP_SIGNATURE = b"PK\x03\x04"  # torch.save's format


# ------------------------------------------------------------------------------------------- the marks


def text_mark(command: str) -> str:
    """The mark of an HTML or markdown file: a comment no viewer shows."""
    return f"<!-- written by {command} -->"


def jpeg_mark(command: str) -> bytes:
    """The JPEG comment (Pillow's `comment=`) marking an image as written by `command`."""
    return f"{MARK_KEY}: {command}".encode()


def png_mark(command: str) -> PngInfo:
    """A PngInfo carrying the text chunk that marks a PNG as written by `command` (pass as `pnginfo=`)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(MARK_KEY, command)
    return info


def mark_of(path: Path) -> str | None:
    """The command whose mark `path` carries, or which wrote it before the marks; None for a file of no
    command (no mark, an unreadable file, a folder)."""
    mark, legacy = _marks(path)
    return mark or legacy


def _marks(path: Path) -> tuple[str | None, str | None]:
    """(the command `path`'s mark names, the command a file without a mark was written by before the
    marks), from the file's content: its first bytes tell its format, whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD)
        if head.startswith((PNG_SIGNATURE, JPEG_SOI)):
            return _image_marks(path)
        if head.startswith(ZIP_SIGNATURE):
            return _str(_torch_mark(path)), None
        if head.lstrip().startswith(b"{") and path.stat().st_size < JSON_LIMIT:
            with contextlib.suppress(ValueError):  # JSON lines, or text that starts with a brace
                return _json_marks(json.loads(path.read_bytes()))
        return _text_marks(head.decode("utf-8", errors="replace"))
    except Exception:  # unreadable, corrupt, a folder: not ours, whatever the reason
        return None, None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json_marks(data: Any) -> tuple[str | None, str | None]:
    if not isinstance(data, dict):
        return None, None
    mark = _str(data.get(MARK_KEY))
    return mark, "imas-eval" if mark is None and data.keys() >= LEGACY_EVAL_KEYS else None


def _torch_mark(path: Path) -> Any:
    import torch

    # mmap: only the pickled dict is read, not the tensors' bytes
    data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return data.get(MARK_KEY) if isinstance(data, dict) else None


def _image_marks(path: Path) -> tuple[str | None, str | None]:
    from PIL import Image

    with Image.open(path) as image:
        if image.format == "PNG":
            legacy = "imas-predict" if LEGEND_KEY in image.info else None
            return _str(image.info.get(MARK_KEY)), legacy
        comment = image.info.get("comment", b"")
    prefix = f"{MARK_KEY}: ".encode()
    return (comment[len(prefix) :].decode() if comment.startswith(prefix) else None), None


def _text_marks(head: str) -> tuple[str | None, str | None]:
    """An HTML or markdown mark, else an old report's title, else a CSV header."""
    found = TEXT_MARK.search(head)
    if found:
        return found.group(1), None
    if LEGACY_REPORT_TITLE.search(head):
        return None, "imas-report"
    cells = tuple(head.split("\n", 1)[0].rstrip("\r").split(","))
    return next((c for c, header in CSV_HEADERS.items() if cells[: len(header)] == header), None), None


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        return f.readline(HEAD).decode("utf-8", errors="replace").rstrip("\r\n")


# ------------------------------------------------------------------------------------------- the rule


def run_directory(folder: Path) -> bool:
    """Whether `folder` is a run directory: it holds a file only training writes (TRAINING_FILES). A run
    holds run.lock while it trains, train.log from its start, metrics.jsonl and latest.pth once it has
    evaluated and saved; a folder holding only a checkpoint and its config (a copy, a download) is no run."""
    return any((folder / name).exists() for name in TRAINING_FILES)


def protected(path: Path) -> str | None:
    """What a run's own file is ("a run's metrics"), None for any other file."""
    if path.name in TRAINING_FILES or (path.name in RUN_FILES and run_directory(path.parent)):
        return RUN_FILES[path.name]
    if path.suffix.lower() == ".csv":
        from imas.logging import PER_IMAGE_COLUMNS  # imports torch: only for a file that may be a history

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
    replace `path`: a folder, an input (inputs: {"checkpoint": path, ...}), a run's own file without
    `command`'s mark, or an existing file without `command`'s mark unless `force`. An absent path is always
    fine; a path under a folder that cannot be searched is one sentence too.

    forceable: whether the command has --force (said in the sentence)."""
    try:
        owned = _owned(Path(path), command, subject, inputs or {}, elsewhere)
    except OSError as exc:  # e.g. a parent folder without search permission
        raise UserError(f"{subject} cannot be checked ({failure_reason(exc)})") from None
    if owned or force:
        return
    how = ", or add --force to replace it" if forceable else " or delete it first"
    raise UserError(f"{subject} is a file {command} did not write; {elsewhere}{how}")


def _owned(
    path: Path,
    command: str,
    subject: str,
    inputs: Mapping[str, str | os.PathLike[str] | None],
    elsewhere: str,
) -> bool:
    """Whether `command` may replace `path` without --force; a UserError where it may not even with it."""
    if not path.exists():
        return True  # also a dangling symlink: nothing is replaced (the write creates the file it names)
    if path.is_dir():
        raise UserError(f"{subject} is a folder; name a file")
    for what, source in inputs.items():
        if source is not None and Path(source).exists() and Path(source).samefile(path):
            raise UserError(f"{subject} is the {what} this command reads; {elsewhere}")
    real = Path(os.path.realpath(path))  # a symlink is written through: the file it names is replaced
    mark, legacy = _marks(real)
    if mark == command:
        return True  # the command's own file, wherever it lies
    kind = protected(real)
    if kind is not None:
        raise UserError(f"{subject} is a file {command} did not write ({kind}); {elsewhere}")
    return mark is None and legacy == command


# ------------------------------------------------------------------------------------------ the writing


def temporary(path: Path) -> Path:
    """Where `path` is written before the rename: a hidden name in its folder (the same file system)."""
    return path.with_name(f".{path.name}.tmp")


def _open(tmp: Path) -> IO[bytes]:
    return open(tmp, "wb")


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through `write(file)` into its temporary, then rename it into place: a reader sees the
    previous file or the whole new one, never a part. A symlink is written through: the temporary lies
    beside the file it names, which is replaced, and the link stays. The new file keeps the previous one's
    permission bits. Any failure removes the temporary; a failed write is a UserError naming the path and
    saying the previous file is kept."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    tmp = temporary(real)
    try:
        try:
            mode = os.stat(real).st_mode & 0o7777
        except FileNotFoundError:
            mode = None  # a new file: the umask's mode, as open() gives it
        with _open(tmp) as f:
            write(f)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # e.g. a folder made read-only: say the write failure
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, (OSError, RuntimeError)):  # torch.save reports a failed write as RuntimeError
            raise
        kept = f"the previous {path.name} is kept" if real.is_file() else "nothing was written"
        raise UserError(f"{path} could not be written ({failure_reason(exc, real.parent)}); {kept}") from None


def write_text_atomic(path: Path, text: str) -> None:
    """write_atomic for a UTF-8 text."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))
