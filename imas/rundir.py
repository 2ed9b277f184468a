"""The run directory's integrity: one process per directory (a lock file), a resume only under the settings
that produced the checkpoint, and no leftovers of a crash (temporary files, metrics of epochs re-run).

See docs/reliability.md for what a user gets in each case.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imas.config import Config, to_dict, upgrade_stored
from imas.errors import ConfigError, RunDirError

LOCK_NAME = "run.lock"

# Settings that do not change the trained weights: they may differ between a checkpoint and the run that
# resumes it. Everything else (data, model, loss, optimiser, schedule, method, seed, precision) does, and a
# resume under other values is refused unless the user opts in with --resume-anyway.
RESULT_NEUTRAL_KEYS = (
    "train.log_every",
    "train.image_every",
    "train.eval_every",
    "train.run_dir",
    "train.compile",  # other kernels for the same computation: round-off only, like another thread count
    "eval.",  # every evaluation option: evaluation never feeds back into training
)


def check_run_dir(run_dir: Path) -> None:
    """A run directory must be a folder (or not exist yet, under folders): one sentence for a file in the
    way."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == run_dir else f"lies under the file {path}"
                raise ConfigError(f"run directory {run_dir} {where}; give --run-dir a folder")
            return


# --------------------------------------------------------------------------------------------- the lock


def _owner(fd: int) -> str:
    """Who a lock file's record names: 'process 4242 on host gpu07 (since 2026-12-02 10:00:00)'."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {int(record['pid'])} on host {record['host']} (since {record.get('started', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its record is not written yet)"


@dataclass
class RunLock:
    """An exclusive claim on a run directory: an flock on `run.lock`, whose text names the owner (PID, host,
    start time) for the message a second run gets.

    The kernel releases an flock when its process ends, however it ends (kill -9, a lost node's lease on a
    network file system), so a lock is never stale: a record left by a dead owner is simply taken over
    (`took_over` names it). Taken by rank 0 before anything is written; released (the file removed) at exit.
    Where the file system has no locks, the run goes on unprotected and `warning` says so.
    """

    path: Path
    fd: int | None = None
    took_over: str = ""
    warning: str = ""

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        path = run_dir / LOCK_NAME
        record = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        ).encode()
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunDirError(f"cannot create {path} ({_reason(exc)})") from None
            lock = cls(path, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(fd)
                os.close(fd)
                raise RunDirError(
                    f"run directory {run_dir} is in use by {owner}; wait for it to finish or stop it, "
                    "or use another --run-dir"
                ) from None
            except OSError as exc:  # e.g. ENOLCK: a network file system mounted without locks
                lock.warning = f"{path} cannot be locked on this file system ({_reason(exc)}): a second run "
                lock.warning += "started on this folder would not be refused"
            # The previous owner unlinks the file as it releases: a lock won on that unlinked file is no lock.
            try:
                same = os.path.samestat(os.stat(path), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if os.fstat(fd).st_size:
                lock.took_over = _owner(fd)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, record, 0)
            except OSError as exc:
                lock.release()
                raise RunDirError(f"cannot write {path} ({_reason(exc)})") from None
            return lock

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self.fd)):
                self.path.unlink()  # while still locked: a waiting run then finds no file or a new one
        except FileNotFoundError:
            pass
        os.close(self.fd)  # releases the flock
        self.fd = None


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


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
    old = _flatten(upgrade_stored(stored))
    new = _flatten(to_dict(cfg))
    default = _flatten(to_dict(Config(), all_sections=True))
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


# The temporary files this code writes in a run directory before renaming them into place.
TEMPORARIES = (".latest.pth.tmp", ".best.pth.tmp", "config.yaml.tmp", "metrics.jsonl.tmp")


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Delete the temporary files an interrupted write left (TEMPORARIES, no other file); return their
    names."""
    removed = []
    for name in TEMPORARIES:
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
            removed.append(name)
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


# ------------------------------------------------------------------------------------ reading a finished run


def check_existing_run(run_dir: Path) -> None:
    """A folder that a training run wrote (it holds config.yaml, written first), or one sentence saying what
    it is instead: for the tools that read runs (tools/report.py, tools/compare.py)."""
    if not run_dir.exists():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory: it holds no config.yaml (training writes one first)"
        )


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's evaluation records in epoch order, one per epoch (the last line of an epoch wins, as
    after a resume); a line cut short by a crash, or one that is not a record, is skipped. [] without any."""
    path = run_dir / "metrics.jsonl"
    by_epoch: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                epoch = int(record["epoch"])
                int(record["iteration"])
                dict(record["iou"])
            except (ValueError, KeyError, TypeError):
                continue
            if epoch > 0:
                by_epoch[epoch] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def miou_of(record: dict[str, Any]) -> float:
    """A record's mIoU as a float (NaN where metrics.jsonl holds null: no pixel counted)."""
    value = record.get("miou")
    return math.nan if value is None else float(value)


def best_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation that best.pth holds: the first of the highest mIoU (training replaces it on a gain
    only)."""
    best = records[0]
    for record in records[1:]:
        if miou_of(record) > miou_of(best) or math.isnan(miou_of(best)):
            best = record
    return best
