"""User-facing errors: one plain sentence naming the bad key, path or value, never a traceback."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class UserError(Exception):
    """Base class of every error caused by the user's input (config, data, checkpoint, command line)."""


class ConfigError(UserError):
    """A config file, key, value or override is invalid."""


class DataError(UserError):
    """A data root, split file, image or label is missing or invalid."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def user_message(exc: BaseException) -> str:
    """The one-sentence message of a user error, also when a DataLoader worker re-raised it.

    DataLoader workers re-raise with the worker's whole traceback in the message; its last line is
    ``module.ClassName: message``, and only the message is for the user.
    """
    text = str(exc).strip()
    if "Traceback (most recent call last)" not in text:
        return text
    last = text.splitlines()[-1]
    name, sep, message = last.partition(": ")
    return message if sep and name.endswith(type(exc).__name__) else last


class TrainingDiverged(UserError):
    """The loss or the state to save became NaN or infinite; the run stops before a checkpoint could store
    poisoned weights, and the previous checkpoints are kept."""


class RunDirError(UserError):
    """The run directory is in use by another process, holds a run made under other settings, or is not a
    run directory at all."""


def failure_reason(exc: BaseException, folder: Path | None = None) -> str:
    """Why a file operation failed, in words ('no space left on device'): the errno of `exc` or of an
    exception it wraps (torch's zip writer reports a full disk as a RuntimeError around the OSError, or with
    no errno at all: then a nearly full `folder` is the likely reason)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno).lower()
        seen = seen.__cause__ or seen.__context__
    try:
        if folder is not None and shutil.disk_usage(folder).free < 64 * 2**20:
            return os.strerror(errno.ENOSPC).lower()
    except OSError:
        pass
    return str(exc) if isinstance(exc, OSError) and str(exc) else "the write failed"
