"""One wrapper for every command's `main`: the exit conventions and the clean-up, written once.

    def main(argv: Sequence[str] | None = None) -> int:
        return run_command(lambda: run(parse_args(argv)))

- success: the body's return value (None counts as 0);
- a user error (imas.errors.UserError): "error: <one sentence>" on stderr, exit 2, never a traceback;
- Ctrl-C: "interrupted" on stderr, exit 130; SIGTERM (a scheduler's preemption, torchrun stopping its
  workers, `kill`), where the command asks for it with `terminate=True`: "terminated", exit 143;
- whatever the outcome, the temporaries the body registered with `on_exit` are removed, and the callbacks
  registered with it are run (the last registered first; every one runs even where one before it fails, and
  a path that cannot be removed is left without a word); those registered with `failed=True` only where the
  body ends by an exception (a user error, Ctrl-C, a bug): e.g. `discard_new_folders`, so that a command that
  creates its output folder before its checks leaves no empty folder when they refuse.

argparse's own errors keep argparse's convention (usage and exit 2).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from imas.errors import UserError, user_message

_cleanups: list[tuple[Callable[[], None], bool]] = []  # (action, only where the body failed)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised so that a command stops like one interrupted by Ctrl-C: locks released, temporaries
    removed, the last checkpoint kept."""


def on_exit(action: Callable[[], None] | str | os.PathLike[str], failed: bool = False) -> None:
    """Run `action` when the command ends, however it ends (failed: only where it ends by an exception); a
    path is removed (a file or a folder)."""
    _cleanups.append((action if callable(action) else partial(_remove, Path(action)), failed))


def discard_new_folders(folder: str | os.PathLike[str]) -> None:
    """Where the command fails, remove `folder` and those of its parents that do not exist yet (call it before
    creating them), innermost first, each only while empty: what a failed command made is gone, what was
    there before or holds files stays."""
    missing = []
    for path in (Path(folder), *Path(folder).parents):
        if os.path.lexists(path):
            break
        missing.append(path)
    on_exit(partial(_remove_empty, missing), failed=True)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or never made): it and the folders above it stay


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # e.g. a folder made read-only meanwhile: a leftover, not a reason to fail the command


def _run_cleanups(start: int, failed: bool) -> None:
    """Run the callbacks registered since `start`, last first (those for a failure only where `failed`); all
    of them run, then the first failure is raised."""
    failure: BaseException | None = None
    while len(_cleanups) > start:
        action, only_failed = _cleanups.pop()
        if only_failed and not failed:
            continue
        try:
            action()
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


_default_unraisablehook = sys.unraisablehook


def _quiet_after_stop(unraisable: Any) -> None:
    """After a stop, an object the stop cut short in its constructor fails in its __del__ when it is
    collected (a DataLoader iterator interrupted while starting its workers: AttributeError '_shutdown');
    that traceback would only bury the one line a stop prints."""
    in_del = getattr(unraisable.object, "__name__", "") == "__del__"
    if not (in_del and isinstance(unraisable.exc_value, AttributeError)):
        _default_unraisablehook(unraisable)


def run_command(
    body: Callable[[], int | None],
    *,
    terminate: bool = False,
    interrupted: str = "",
    quiet_error: Callable[[UserError], bool] | None = None,
) -> int:
    """Run a command's body under the conventions above and return its exit status.

    interrupted: what to add after "interrupted"/"terminated" (e.g. how to resume); quiet_error: whether a
    user error is not printed by this process (another process of the same run prints it)."""
    # Signal handlers can be set in the main thread only: elsewhere SIGTERM keeps its default.
    installed = terminate and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if installed else None
    start = len(_cleanups)
    failed = True
    try:
        status = body() or 0
        failed = False
        return status
    except UserError as exc:
        if quiet_error is None or not quiet_error(exc):
            print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        sys.unraisablehook = _quiet_after_stop
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(how + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if installed:  # None: a handler set outside Python, which cannot be put back; the default then
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        _run_cleanups(start, failed)
