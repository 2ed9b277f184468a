"""The run directory's integrity: one process per directory (a lock file), a resume only under the settings
that produced the checkpoint, and no leftovers of a crash (temporary files, metrics of epochs re-run).

See docs/reliability.md for what a user gets in each case.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imas.config import Config, to_dict
from imas.errors import ConfigError, RunDirError

LOCK_NAME = "run.lock"

# Settings that do not change the trained weights: they may differ between a checkpoint and the run that
# resumes it. Everything else (data, model, loss, optimiser, schedule, method, seed, precision) does, and a
# resume under other values is refused unless the user opts in with --resume-anyway.
RESULT_NEUTRAL_KEYS = (
    "data.num_workers",
    "train.log_every",
    "train.image_every",
    "train.eval_every",
    "train.run_dir",
    "eval.",  # every evaluation option: evaluation never feeds back into training
)


def check_run_dir(run_dir: Path) -> None:
    """A run directory must be a folder (or not exist yet): one sentence for a file in its place."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} is a file; give --run-dir a folder")


# --------------------------------------------------------------------------------------------- the lock


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), to tell a reused PID apart; None
    where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields are counted after its last ")".
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    """True if process `pid` runs and is the process that wrote the lock (same start time, when known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    current = _process_start(pid)
    return start is None or current is None or current == start


@dataclass
class RunLock:
    """An exclusive claim on a run directory: `run.lock` holds the owner's PID, host and start time.

    Taken by rank 0 before anything is written; released (the file removed) at exit. A lock whose process
    is gone (same host, PID not running or reused) is stale and taken over; a lock held by a live process,
    or by another host, refuses the second run with one sentence naming the owner.
    """

    path: Path
    held: bool = False

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        lock = cls(run_dir / LOCK_NAME)
        pid = os.getpid()
        record = {
            "pid": pid,
            "host": socket.gethostname(),
            "start": _process_start(pid),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(lock.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                lock._refuse_or_clear()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            lock.held = True
            return lock
        raise RunDirError(f"run directory {run_dir} is locked by {lock.path}, which could not be taken over")

    def _refuse_or_clear(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            raise RunDirError(
                f"{self.path} exists but cannot be read; if no other run uses {self.path.parent}, delete it"
            ) from None
        since = owner.get("started", "?")
        if host != socket.gethostname():
            raise RunDirError(
                f"run directory {self.path.parent} is in use by process {pid} on host {host} "
                f"(since {since}); use another --run-dir, or delete {self.path} if that process is gone"
            )
        if _alive(pid, owner.get("start")):
            raise RunDirError(
                f"run directory {self.path.parent} is in use by process {pid} on this host (since {since}); "
                "wait for it to finish or stop it, or use another --run-dir"
            )
        self.path.unlink(missing_ok=True)  # stale: its process is gone

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


# ------------------------------------------------------------------------------ settings of a resume


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def result_changes(stored: dict[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
    """The settings of `cfg` that differ from the checkpoint's stored config in a way that changes the
    result, as (key, old, new). A key the checkpoint predates counts as its default value."""
    old = _flatten(stored)
    new = _flatten(to_dict(cfg))
    default = _flatten(to_dict(Config()))
    changes = []
    for key, value in new.items():
        if key.startswith(RESULT_NEUTRAL_KEYS):
            continue
        before = old.get(key, default.get(key))
        if before != value:
            changes.append((key, before, value))
    return changes


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    """'optim.lr 0.01 -> 0.02, train.method imas -> supervised' (at most `limit` keys, then a count)."""
    shown = ", ".join(f"{key} {_short(old)} -> {_short(new)}" for key, old, new in changes[:limit])
    rest = len(changes) - limit
    return shown + (f" and {rest} more" if rest > 0 else "")


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# ------------------------------------------------------------------------------------ crash leftovers


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Delete the temporary files an interrupted write leaves (".latest.pth.tmp", "config.yaml.tmp");
    return their names."""
    removed = []
    for path in sorted(set(run_dir.glob(".*.tmp")) | set(run_dir.glob("*.tmp"))):
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def truncate_metrics(path: Path, epochs_done: int) -> int:
    """Keep the metrics.jsonl lines of epochs the checkpoint covers (epoch <= epochs_done), so an epoch that
    is re-run after a crash is recorded once. Returns the number of lines dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            epoch = int(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
        if epoch <= epochs_done:
            kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
    return len(lines) - len(kept)
