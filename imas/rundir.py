"""The run directory: its integrity while training writes it, and the one reader of what it holds.

Integrity: one process per directory (a lock file), a resume only under the settings that produced the
checkpoint, and no leftovers of a crash (temporary files, metrics and training scalars of iterations re-run).
See docs/reliability.md for what a user gets in each case.

Reading: `read_run` is the machine interface to a finished or running run for every tool that reads one
(imas-report, imas-compare, tools/toy_benchmark.py). It reads the files docs/run-directory.md describes:
config.yaml, metrics.jsonl, train_scalars.jsonl and the per-image histories (<name>.csv). For a run written
before train_scalars.jsonl existed, `legacy_train_log` parses train.log instead: the only code that reads
its training records (imas.report.reading.recorded_hardware reads the banners' hardware rows).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import yaml

from imas.checkpoint import load_checkpoint
from imas.config import Config, to_dict, upgrade_stored
from imas.errors import ConfigError, RunDirError, UserError, failure_reason
from imas.experiment import experiment_from_dict
from imas.logging import METRICS_NAME, PER_IMAGE_COLUMNS, SCALARS_NAME, write_failure

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
    "train.keep_epochs",  # which epochs also keep a checkpoint file (ST++'s snapshots)
    "eval.",  # every evaluation option: evaluation never feeds back into training
)


def check_run_dir(run_dir: Path) -> None:
    """A run directory must be a folder (or not exist yet, under folders): one sentence for a file in the
    way."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == run_dir else f"lies under the file {path}"
                raise ConfigError(
                    f"run directory {run_dir} {where}; give --run-dir (or train.run_dir) a folder"
                )
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
                raise RunDirError(f"cannot create {path} ({failure_reason(exc)})") from None
            lock = cls(path, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(fd)
                os.close(fd)
                raise RunDirError(
                    f"run directory {run_dir} is in use by {owner}; wait for it to finish or stop it, "
                    "or use another run directory (--run-dir or train.run_dir)"
                ) from None
            except OSError as exc:  # e.g. ENOLCK: a network file system mounted without locks
                lock.warning = (
                    f"{path} cannot be locked on this file system ({failure_reason(exc)}): a second run "
                )
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
                raise RunDirError(f"cannot write {path} ({failure_reason(exc)})") from None
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


@dataclass
class StartUndo:
    """What one start of imas-train creates before training begins, removed where the start stops before it
    (a bad value, missing data or pretrained weights, a refused resume, Ctrl-C): the folders it made (the run
    directory, runs/ ...) and the files it added to the run directory while holding its lock. Nothing that
    was there before is touched, nothing in a run directory that holds a checkpoint (a run to resume), and
    nothing at all once training began (`began`).

    The claim calls make_folders, then (with the lock held) locked; the command removes at its end, whatever
    ended it, the files (remove_files, the lock still held) and then the folders (remove_folders)."""

    run_dir: Path
    made: list[Path] = field(default_factory=list)  # the folders this process created, outermost first
    found: frozenset[str] | None = None  # the run directory's entries once locked; None: remove no file
    armed: bool = True

    def make_folders(self) -> None:
        """Create the run directory and its missing parents one by one, noting those this process made (not
        one another process made meanwhile). An OSError is the caller's to word."""
        missing = []
        for folder in (self.run_dir, *self.run_dir.parents):
            if folder.is_dir():
                break
            missing.append(folder)
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except FileNotFoundError:  # a parent another failed start removed meanwhile: made again
                folder.mkdir(parents=True, exist_ok=True)
                continue
            self.made.append(folder)

    def locked(self, exclusive: bool) -> None:
        """Note what the run directory holds now that this start holds its lock: what appears after it is this
        start's. Without an exclusive lock (a file system without locks) another run may write there too, and
        a run to resume keeps everything: no file is removed then."""
        names = {path.name for path in self.run_dir.iterdir()}
        if exclusive and "latest.pth" not in names:
            self.found = frozenset(names | {LOCK_NAME})

    def began(self) -> None:
        """Training begins: from here on what the start wrote is the run's."""
        self.armed = False

    def remove_files(self) -> None:
        """The run's own files added to the run directory since `locked` (the lock is still held): only
        names training writes (start_file), never a folder, so that what another program put there during
        the start stays."""
        if not self.armed or self.found is None:
            return
        for path in self.run_dir.iterdir():
            if path.name not in self.found and start_file(path):
                # A file that cannot go is a leftover, not a reason to hide the error that stopped the start.
                with contextlib.suppress(OSError):
                    path.unlink()

    def remove_folders(self) -> None:
        """The folders this start made, innermost first, each only while empty (after the lock's release)."""
        if not self.armed:
            return
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (another run's files, a user's) or gone: it and those above it stay


# The files a start writes in its run directory before training begins (with the TensorBoard events and the
# per-image histories, recognised by name and header below).
START_FILES = frozenset({"config.yaml", "train.log", LOCK_NAME, "metrics.jsonl", "train_scalars.jsonl"})


def start_file(path: Path) -> bool:
    """Whether `path` is a plain file of a name a start of training writes: one of START_FILES, a TensorBoard
    event file, or a per-image history (<name>.csv under its header)."""
    if path.is_symlink() or not path.is_file():
        return False
    if path.name in START_FILES or path.name.startswith("events.out.tfevents."):
        return True
    if path.suffix != ".csv":
        return False
    try:
        with path.open("rb") as f:
            head = f.readline(200).decode("utf-8", errors="replace").rstrip("\r\n")
    except OSError:
        return False
    return head == ",".join([*PER_IMAGE_COLUMNS, path.stem])


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
    settings = cfg.method_settings
    default = to_dict(Config()) | ({cfg.train.method: to_dict(type(settings)())} if settings else {})
    default = _flatten(default)
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
TEMPORARIES = (
    ".latest.pth.tmp",
    ".best.pth.tmp",
    "config.yaml.tmp",
    "metrics.jsonl.tmp",
    "train_scalars.jsonl.tmp",
)


def remove_stale_temporaries(run_dir: Path, per_image: Sequence[str] = ()) -> list[str]:
    """Delete the temporary files an interrupted write left (TEMPORARIES, and <name>.csv.tmp of the method's
    per-image histories; no other file); return their names."""
    removed = []
    for name in (*TEMPORARIES, *(f"{quantity}.csv.tmp" for quantity in per_image)):
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
            removed.append(name)
    return removed


# ----------------------------------------------------------------------- the appended files, line by line
#
# metrics.jsonl, train_scalars.jsonl and the per-image histories are appended to, a line per write. A kill or
# a full disk can cut the LAST line only (no newline after it): such a line is dropped, by readers and by the
# cut-back on resume. Any other line that is not a record (bytes that are not UTF-8, not JSON, not a record
# of the file's form) means the file was damaged otherwise: one sentence naming the file and the line.


@dataclass(slots=True)
class Line:
    """One line of an appended run file, as `_lines` reads it."""

    number: int  # 1-based, as an editor counts
    text: str  # without its newline
    value: Any  # the record; None where the line is not one
    problem: str  # why it is not one, e.g. "is not JSON"
    cut: bool  # no newline after it: the last line, as a kill or a full disk leaves it


def _lines(
    f: BinaryIO, parse: Callable[[str], Any], start: int = 1, newline_needed: bool = False
) -> Iterator[Line]:
    """The lines of the binary file `f` from line number `start`, each parsed by `parse` (which raises
    ValueError saying why a line is not a record). Blank lines hold nothing and are left out.
    newline_needed: a last line without its newline is cut short even where it parses (a per-image row
    "0.1" may be the start of "0.12500")."""
    for number, raw in enumerate(f, start):
        cut = not raw.endswith(b"\n")
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            yield Line(number, "", None, "is not UTF-8 text", cut)
            continue
        if not text.strip():
            continue
        if cut and newline_needed:
            yield Line(number, text, None, "is cut short", cut)
            continue
        try:
            yield Line(number, text, parse(text), "", cut)
        except ValueError as exc:
            yield Line(number, text, None, str(exc), cut)


def damaged(path: Path, line: Line) -> RunDirError:
    """The sentence for a line that is not a record and not a cut last line."""
    return RunDirError(
        f"{path} line {line.number} {line.problem}; a crash can only cut the last line, so the file was "
        "damaged otherwise: repair or delete that line, then run the command again"
    )


def _whole(path: Path, lines: Iterable[Line]) -> Iterator[Any]:
    """The records of `lines`, read from `path`: a cut last line is left out, a damaged line is one
    RunDirError naming it."""
    for line in lines:
        if not line.problem:
            yield line.value
        elif not line.cut:
            raise damaged(path, line)


def _json_record(text: str, what: str, check: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """A JSON object that check() accepts (it raises KeyError, TypeError or ValueError otherwise)."""
    try:
        record = json.loads(text)
    except ValueError:
        raise ValueError("is not JSON") from None
    try:
        if not isinstance(record, dict):
            raise TypeError
        check(record)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"is not {what}") from None
    return record


def evaluation_record(text: str) -> dict[str, Any]:
    """One metrics.jsonl line as its record: at least an integer epoch and iteration and an iou mapping."""

    def check(record: dict[str, Any]) -> None:
        int(record["epoch"]), int(record["iteration"]), dict(record["iou"])

    return _json_record(text, "an evaluation record (epoch, iteration, iou)", check)


def window_record(text: str) -> dict[str, Any]:
    """One train_scalars.jsonl line as its record: at least an integer epoch and iteration and a scalars
    mapping."""

    def check(record: dict[str, Any]) -> None:
        int(record["epoch"]), int(record["iteration"]), dict(record["scalars"])

    return _json_record(text, "a training-window record (epoch, iteration, scalars)", check)


def _cut_back(
    path: Path, lines: Iterable[Line], keep: Callable[[Any], bool], head: str = "", rewrite: bool = False
) -> int:
    """Rewrite `path` as `head` and the record lines for which keep(record) is true, atomically, where that
    changes it (or `rewrite` asks); return the number of lines dropped. The lines after the last kept one
    are what an interrupted attempt wrote past the checkpoint and go whatever they hold; a damaged line
    before it is one RunDirError."""
    kept: list[str] = []
    count, problem, cut = 0, None, False
    for line in lines:
        count, cut = count + 1, line.cut
        if line.problem:
            problem = problem or line
        elif keep(line.value):
            if problem is not None:
                raise damaged(path, problem)
            kept.append(line.text)
    # A whole last record without its newline gets it back, for the next append.
    if rewrite or count > len(kept) or cut:
        replace_text(path, head + "".join(f"{text}\n" for text in kept))
    return count - len(kept)


def replace_text(path: Path, text: str) -> None:
    """Write `path` whole: a temporary beside it (<name>.tmp), then a rename, so a kill leaves the old file
    or the new one. A failed write (a full disk) removes the temporary, leaves the file as it was and is one
    sentence (imas.logging.write_failure)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failure(path, exc) from None


def _keep_records(path: Path, parse: Callable[[str], Any], keep: Callable[[dict[str, Any]], bool]) -> int:
    """Cut a JSON-lines file back to its records for which keep(record) is true (_cut_back); a missing file
    is left missing."""
    if not path.is_file():
        return 0
    with path.open("rb") as f:
        return _cut_back(path, _lines(f, parse), keep)


def truncate_metrics(path: Path, epochs_done: int) -> int:
    """Keep the metrics.jsonl lines of epochs the checkpoint covers (epoch <= epochs_done), so an epoch that
    is re-run after a crash is recorded once. Returns the number of lines dropped; a damaged line among
    those kept is one RunDirError naming it."""
    return _keep_records(path, evaluation_record, lambda record: int(record["epoch"]) <= epochs_done)


def truncate_train_scalars(run_dir: Path, iterations_done: int) -> int:
    """Keep the train_scalars.jsonl lines of iterations the checkpoint covers (iteration <=
    iterations_done), so the windows re-run after a crash are recorded once; a line cut short by a crash is
    dropped too. Atomic (train_scalars.jsonl.tmp, then a rename). Returns the number of lines dropped."""
    return _keep_records(
        run_dir / SCALARS_NAME, window_record, lambda record: int(record["iteration"]) <= iterations_done
    )


def truncate_per_image(run_dir: Path, name: str, iterations_done: int) -> int:
    """Keep the rows of run_dir/<name>.csv of iterations the checkpoint covers (iteration <
    iterations_done: a row carries the index of the iteration that measured it), so the rows re-run after a
    crash are written once; a last row cut short is dropped too, and a damaged row among those kept is one
    RunDirError naming its line. Atomic (<name>.csv.tmp, then a rename); a missing file becomes one with the
    header alone, which training then appends to. Returns the number of rows dropped."""
    path = run_dir / f"{name}.csv"
    header = ",".join([*PER_IMAGE_COLUMNS, name]) + "\n"
    if not path.is_file():
        replace_text(path, header)
        return 0
    with path.open("rb") as f:
        same_header = f.readline() == header.encode()
        rows = _lines(f, per_image_row, start=2, newline_needed=True)
        first = next(rows, None)
        from_zero = first is not None and not first.problem and first.value[1] == 0
        rows = itertools.chain([first] if first is not None else [], rows)
        if from_zero:  # epochs counted from 0: renumbered once, so that the rows appended next agree
            rows = map(_epoch_from_one, rows)
        keep = lambda row: row[2] < iterations_done  # noqa: E731
        return _cut_back(path, rows, keep, header, rewrite=not same_header or from_zero)


def _epoch_from_one(line: Line) -> Line:
    """A per-image row of a file that counts epochs from 0, counting from 1."""
    if line.problem:
        return line
    image_id, epoch, iteration, value = line.value
    text = line.text.rsplit(",", 3)
    text[1] = str(epoch + 1)
    return replace(line, text=",".join(text), value=(image_id, epoch + 1, iteration, value))


def per_image_row(text: str) -> tuple[str, int, int, float]:
    """(image_id, epoch, iteration, value) of one per-image row without its newline; ValueError where it is
    not one. An id may hold a comma."""
    fields = text.rsplit(",", 3)
    try:
        return fields[0], int(fields[1]), int(fields[2]), float(fields[3])
    except (IndexError, ValueError):
        raise ValueError("is not a per-image row (image_id,epoch,iteration,value)") from None


# ------------------------------------------------------------------------------------ reading a finished run


def check_existing_run(run_dir: Path) -> None:
    """A folder that a training run wrote (it holds config.yaml, written first), or one sentence saying what
    it is instead: for the tools that read runs (imas-report, imas-compare)."""
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
    after a resume); a last line cut short by a crash is skipped, any other line that is not a record is one
    RunDirError naming it. [] without any."""
    path = run_dir / METRICS_NAME
    by_epoch: dict[int, dict[str, Any]] = {}
    if path.is_file():
        with path.open("rb") as f:
            for record in _whole(path, _lines(f, evaluation_record)):
                if int(record["epoch"]) > 0:
                    by_epoch[int(record["epoch"])] = record
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


# ------------------------------------------------------------------------------------ the run's records

Series = list[tuple[int, float]]  # (iteration, value) pairs in iteration order, one per iteration


@dataclass
class PerImageHistory:
    """One per-image quantity over training, as run_dir/<name>.csv holds it (header
    image_id,epoch,iteration,<name>; one row per image and iteration, every rank's images): row i is the
    image ids[image[i]] in epoch[i] (counted from 1, as the console and metrics.jsonl count) at iteration[i],
    with the value value[i]."""

    name: str
    path: Path
    ids: list[str]
    image: np.ndarray  # int64 [rows], indices into ids
    epoch: np.ndarray  # int64 [rows], from 1
    iteration: np.ndarray  # int64 [rows]
    value: np.ndarray  # float64 [rows]

    @property
    def last_epoch(self) -> int:
        return int(self.epoch.max())

    def by_epoch(self) -> dict[int, np.ndarray]:
        """Every value of each epoch, by epoch in order."""
        return {int(e): self.value[self.epoch == e] for e in np.unique(self.epoch)}

    def image_values(self, epoch: int) -> dict[str, list[float]]:
        """The values of each image in one epoch (an image drawn more than once there has several)."""
        values: dict[str, list[float]] = {}
        rows = self.epoch == epoch
        for index, value in zip(self.image[rows].tolist(), self.value[rows].tolist()):
            values.setdefault(self.ids[index], []).append(value)
        return values


def read_per_image_histories(run_dir: Path) -> dict[str, PerImageHistory]:
    """Every per-image history of a run (each <name>.csv that read_per_image reads as one), by name."""
    histories = {}
    for path in sorted(run_dir.glob("*.csv")):
        history = read_per_image(path)
        if history is not None:
            histories[history.name] = history
    return histories


def read_per_image(path: Path) -> PerImageHistory | None:
    """The per-image history in `path`, or None where its header is not image_id,epoch,iteration,<its name
    without .csv> or it has no row. A last line without its newline is skipped (training writes whole rows,
    so a crash cut it short); any other line that is not a row is one RunDirError naming it."""
    name = path.stem
    index: dict[str, int] = {}
    image, epoch, iteration, value = [], [], [], []
    with path.open("rb") as f:
        header = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        if header.split(",") != [*PER_IMAGE_COLUMNS, name]:
            return None
        for row in _whole(path, _lines(f, per_image_row, start=2, newline_needed=True)):
            image.append(index.setdefault(row[0], len(index)))
            epoch.append(row[1])
            iteration.append(row[2])
            value.append(row[3])
    if not value:
        return None
    as_int = {"dtype": np.int64}
    return PerImageHistory(
        name,
        path,
        list(index),
        np.asarray(image, **as_int),
        np.asarray(epoch, **as_int) + (1 if epoch[0] == 0 else 0),  # a file that counts epochs from 0
        np.asarray(iteration, **as_int),
        np.asarray(value, dtype=np.float64),
    )


def _scalar_records(
    path: Path, key: str, strict: bool = True
) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(record[key] as an int, its scalars, the record) of each train_scalars.jsonl record. A last line cut
    short by a crash is skipped; any other line that is not a record is one RunDirError naming it, or with
    strict=False skipped too."""
    with path.open("rb") as f:
        lines = _lines(f, window_record)
        records = _whole(path, lines) if strict else (line.value for line in lines if not line.problem)
        for record in records:
            yield int(record[key]), dict(record["scalars"]), record


def read_train_scalars(path: Path) -> tuple[dict[str, Series], float | None] | None:
    """train_scalars.jsonl as series by TensorBoard tag (train/<name> for each scalar, train/lr), and the
    largest wall_s it records; None where the file does not exist. A last line cut short by a crash is
    skipped, any other line that is not a record is one RunDirError; an iteration recorded twice keeps its
    last line."""
    if not path.is_file():
        return None
    by_tag: dict[str, dict[int, float]] = {}
    wall: float | None = None
    for step, scalars, record in _scalar_records(path, "iteration"):
        for name, value in (scalars | {"lr": record.get("lr")}).items():
            if isinstance(value, (int, float)):
                by_tag.setdefault(f"train/{name}", {})[step] = float(value)
        seconds = record.get("wall_s")
        if isinstance(seconds, (int, float)):
            wall = float(seconds) if wall is None else max(wall, float(seconds))
    return {tag: sorted(points.items()) for tag, points in by_tag.items()}, wall


def epoch_means(path: Path) -> dict[int, dict[str, float]]:
    """train_scalars.jsonl's training scalars averaged over each epoch's logging windows: {epoch: {name:
    mean}} in epoch order; {} where the file does not exist. Lines that are not a record are skipped: the
    quick start reads the runs it has just made, for a summary only."""
    if not path.is_file():
        return {}
    sums: dict[int, dict[str, list[float]]] = {}
    for epoch, scalars, _ in _scalar_records(path, "epoch", strict=False):
        for name, value in scalars.items():
            if isinstance(value, (int, float)):
                sums.setdefault(epoch, {}).setdefault(name, []).append(float(value))
    return {e: {n: sum(v) / len(v) for n, v in sums[e].items()} for e in sorted(sums)}


@dataclass
class LegacyLog:
    """What a train.log of a run written before train_scalars.jsonl holds for the tools: the console's
    training scalars (4 significant digits), the mIoU of the models evaluated beside the reported one (2
    decimals), and the seconds its timestamps span."""

    scalars: dict[str, Series]
    others: dict[str, list[tuple[int, float]]]
    wall_s: float | None


# "2026-11-25 00:26:03 INFO epoch 3/8 it 425/1200 3.36 it/s eta 0:03:50 lr 0.000675 loss_x 0.4831 ..."
_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) [A-Z]+ (.*)$")
_TRAIN_LINE = re.compile(r"^epoch \d+/\d+ it (\d+)/\d+ .*? lr (\S+)((?: [A-Za-z_]\w* \S+)*)\s*$")
# "... INFO epoch 8 student mIoU 40.05" (the reported model's line continues with "(best ...)")
_EVAL_LINE = re.compile(r"^epoch (\d+) (.+?) mIoU (-?[\d.]+|nan)\s*$")
_RUN_START = re.compile(r"^run .+ on \S+ x \d+")  # the first line of each attempt


def legacy_train_log(run_dir: Path) -> LegacyLog | None:
    """The records of a run written before train_scalars.jsonl existed, parsed from its train.log (None
    without one): the only reader of train.log, for run directories of that age (training-imas-logs/).

    Training scalars by tag (train/<name>, train/lr; an iteration re-run after a resume keeps its last
    line); the other evaluated models' mIoU by label as (epoch, fraction); and the wall time: each attempt
    from its "run ... on ..." line to its last stamped line, summed, so the time a resumed run spent stopped
    does not count (to the second)."""
    path = run_dir / "train.log"
    if not path.is_file():
        return None
    by_tag: dict[str, dict[int, float]] = {}
    others: dict[str, dict[int, float]] = {}
    total, start, last = 0.0, None, None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stamped = _STAMPED.match(line)
        if not stamped:
            continue  # an evaluation table's rows, say
        try:
            stamp = datetime.strptime(stamped.group(1), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
        message = stamped.group(2)
        if _RUN_START.match(message) and start is not None and last is not None:
            total += (last - start).total_seconds()
            start = None
        start, last = start or stamp, stamp
        train = _TRAIN_LINE.match(message)
        if train:
            tokens = ["lr", train.group(2), *train.group(3).split()]
            for name, value in zip(tokens[::2], tokens[1::2]):
                try:
                    by_tag.setdefault(f"train/{name}", {})[int(train.group(1))] = float(value)
                except ValueError:
                    continue
        evaluation = _EVAL_LINE.match(message)
        if evaluation and evaluation.group(2) != "eval":
            miou = float(evaluation.group(3)) / 100
            others.setdefault(evaluation.group(2), {})[int(evaluation.group(1))] = miou
    wall = None if start is None or last is None else total + (last - start).total_seconds()
    return LegacyLog(
        {tag: sorted(points.items()) for tag, points in by_tag.items()},
        {label: sorted(points.items()) for label, points in others.items()},
        wall,
    )


# How the tools mark an evaluation that no checkpoint holds (RunRecord.unsaved).
UNSAVED = "no checkpoint holds it: the run stopped before saving"


def method_of(config: Any) -> str:
    """train.method of a stored config (config.yaml, a checkpoint's "config"); the default where absent."""
    train = config.get("train") if isinstance(config, dict) else None
    method = train.get("method") if isinstance(train, dict) else None
    return str(method or "supervised")  # the default of imas.config.TrainConfig


def _method_switched(ckpt: dict[str, Any], old: str, new: str) -> bool:
    """Whether the checkpoint records a resume that changed train.method from `old` to `new`
    (--resume-anyway): config.yaml follows such a checkpoint only once it is written."""
    try:
        changes = [change for entry in ckpt.get("resumed_with_changes", []) for change in entry["changes"]]
        return any(list(change) == ["train.method", old, new] for change in changes)
    except (KeyError, TypeError, ValueError):
        return False


def check_checkpoint_method(path: Path, ckpt: dict[str, Any], config: dict[str, Any]) -> None:
    """A checkpoint in a run directory must be of the run's method (config.yaml's train.method): one
    sentence for one of another run put into the folder."""
    held, said = method_of(ckpt.get("config")), method_of(config)
    if held != said and not _method_switched(ckpt, said, held):
        raise RunDirError(
            f"{path} holds a {held} checkpoint but {path.parent / 'config.yaml'} says {said}; a run "
            "directory holds one run's files: move that checkpoint to its own run's folder"
        )


def check_latest_method(run_dir: Path, ckpt: dict[str, Any]) -> None:
    """check_checkpoint_method for run_dir/latest.pth (`ckpt`) against run_dir/config.yaml, where there is
    one."""
    config = run_dir / "config.yaml"
    if config.is_file():
        check_checkpoint_method(run_dir / "latest.pth", ckpt, _read_config_mapping(config))


def read_latest(run_dir: Path, config: dict[str, Any]) -> int | None:
    """The epochs latest.pth covers, once it is known to be of the run's method (check_checkpoint_method);
    None without a readable one. The tensors are mapped, not read."""
    path = run_dir / "latest.pth"
    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path, mmap=True)
    except UserError:
        return None  # the galleries say why they cannot use it
    check_checkpoint_method(path, ckpt, config)
    try:
        return int(ckpt["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class RunRecord:
    """Everything a run directory records, as `read_run` finds it."""

    run_dir: Path
    config: dict[str, Any]  # config.yaml as stored (a newer or older version's keys included)
    evaluations: list[dict[str, Any]]  # read_evaluations: metrics.jsonl, one record per epoch
    scalars: dict[str, Series]  # the training scalars by tag: train/<name>, train/lr
    scalars_source: str  # "train_scalars.jsonl", "train.log" (a run written before it) or "none"
    others: dict[str, list[tuple[int, float]]]  # models evaluated beside the reported one: (epoch, mIoU)
    per_image: dict[str, PerImageHistory] = field(default_factory=dict)  # by quantity name
    wall_s: float | None = None  # seconds of training, resumed attempts summed
    wall_source: str = "n/a"  # the file wall_s comes from
    result: dict[str, Any] | None = None  # result.json, which tools/toy_benchmark.py writes
    others_source: str = "none"  # where `others` comes from: "metrics.jsonl", "train.log" or "none"
    latest_epoch: int | None = None  # the epochs latest.pth covers; None without a readable latest.pth

    @property
    def method(self) -> str:
        return method_of(self.config)

    def unsaved(self, record: dict[str, Any]) -> bool:
        """Whether no checkpoint holds the models of this evaluation: the run stopped after it and before
        its checkpoint (its epoch lies beyond latest.pth's). Unknown without a latest.pth: False."""
        return self.latest_epoch is not None and int(record["epoch"]) > self.latest_epoch

    @property
    def iters_per_epoch(self) -> int:
        """Iterations per epoch, from the first evaluation (1 without any)."""
        if not self.evaluations:
            return 1
        first = self.evaluations[0]
        return max(1, round(int(first["iteration"]) / int(first["epoch"])))

    def resolved_config(self, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """config.yaml as a Config (a run of an older version upgraded), with "key=value" overrides."""
        return experiment_from_dict(self.config, overrides)


def _read_config_mapping(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read as a config ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a config (a mapping of sections)")
    return raw


def _read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _wall_time(
    evaluations: list[dict[str, Any]], scalars_wall: float | None, result: dict[str, Any] | None
) -> tuple[float | None, str]:
    """The run's own record of its training time (the later of metrics.jsonl's and train_scalars.jsonl's
    wall_s), else result.json's wall_s; (None, "n/a") without either."""
    candidates = [(scalars_wall, SCALARS_NAME)]
    if evaluations:
        candidates.append((evaluations[-1].get("wall_s"), METRICS_NAME))
    own = [(float(s), source) for s, source in candidates if isinstance(s, (int, float))]
    if own:
        return max(own)
    if result is not None and isinstance(result.get("wall_s"), (int, float)):
        return float(result["wall_s"]), "result.json"
    return None, "n/a"


def read_run(run_dir: str | Path, per_image: bool = True) -> RunRecord:
    """Read a run directory: one sentence (RunDirError, ConfigError) where it is none or its config.yaml
    cannot be read; otherwise whatever it holds, each record it lacks left empty (no evaluation yet, no
    training scalars, no per-image history). per_image=False skips the per-image histories (large files)."""
    run_dir = Path(run_dir)
    check_existing_run(run_dir)
    config = _read_config_mapping(run_dir / "config.yaml")
    evaluations = read_evaluations(run_dir)
    result = _read_result(run_dir)
    others: dict[str, list[tuple[int, float]]] = {}  # from metrics.jsonl's "others" where it has them
    for record in evaluations:
        for label, other in (record.get("others") or {}).items():
            others.setdefault(label, []).append((int(record["epoch"]), miou_of(other)))
    others_source = METRICS_NAME if others else "none"
    found = read_train_scalars(run_dir / SCALARS_NAME)
    legacy = None if found is not None else legacy_train_log(run_dir)
    if found is not None:
        scalars, source = found[0], SCALARS_NAME
        wall_s, wall_source = _wall_time(evaluations, found[1], result)
    else:
        scalars, source = (legacy.scalars, "train.log") if legacy and legacy.scalars else ({}, "none")
        wall_s, wall_source = _wall_time(evaluations, None, result)
        if wall_s is None and legacy is not None and legacy.wall_s is not None:
            wall_s, wall_source = legacy.wall_s, "train.log"
        if not others and legacy is not None and legacy.others:
            others, others_source = legacy.others, "train.log"
    histories = read_per_image_histories(run_dir) if per_image else {}
    return RunRecord(
        run_dir,
        config,
        evaluations,
        scalars,
        source,
        others,
        histories,
        wall_s,
        wall_source,
        result,
        others_source,
        read_latest(run_dir, config),
    )
