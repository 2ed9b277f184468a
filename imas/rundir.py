"""The run directory: its integrity while training writes it, and the one reader of what it holds.

Integrity: one process per directory (a lock file), a resume only under the settings that produced the
checkpoint, and no leftovers of a crash (temporary files, metrics and training scalars of iterations re-run).
See docs/reliability.md for what a user gets in each case.

Reading: `read_run` is the machine interface to a finished or running run for every tool that reads one
(imas-report, imas-compare, tools/toy_benchmark.py). It reads the files docs/run-directory.md describes:
config.yaml, metrics.jsonl, train_scalars.jsonl and the per-image histories (<name>.csv). For a run written
before train_scalars.jsonl existed, `legacy_train_log` parses train.log instead: the only code that reads it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from imas.config import Config, to_dict, upgrade_stored
from imas.errors import ConfigError, RunDirError
from imas.experiment import experiment_from_dict
from imas.logging import METRICS_NAME, PER_IMAGE_COLUMNS, SCALARS_NAME

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


def _keep_records(path: Path, keep: Any) -> int:
    """Rewrite a JSON-lines file with the records for which keep(record) is true, atomically (a temporary
    beside it, then a rename), and without the lines that are not a record (one cut short by a crash).
    Returns the number of lines dropped; a missing file is left missing."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            wanted = keep(record)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
        if wanted:
            kept.append(line)
    if len(kept) != len(lines) or (lines and not path.read_bytes().endswith(b"\n")):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return len(lines) - len(kept)


def truncate_metrics(path: Path, epochs_done: int) -> int:
    """Keep the metrics.jsonl lines of epochs the checkpoint covers (epoch <= epochs_done), so an epoch that
    is re-run after a crash is recorded once. Returns the number of lines dropped."""
    return _keep_records(path, lambda record: int(record["epoch"]) <= epochs_done)


def truncate_train_scalars(run_dir: Path, iterations_done: int) -> int:
    """Keep the train_scalars.jsonl lines of iterations the checkpoint covers (iteration <=
    iterations_done), so the windows re-run after a crash are recorded once; a line cut short by a crash is
    dropped too. Atomic (train_scalars.jsonl.tmp, then a rename). Returns the number of lines dropped."""
    return _keep_records(run_dir / SCALARS_NAME, lambda record: int(record["iteration"]) <= iterations_done)


def truncate_per_image(run_dir: Path, name: str, iterations_done: int) -> int:
    """Keep the rows of run_dir/<name>.csv of iterations the checkpoint covers (iteration <
    iterations_done: a row carries the index of the iteration that measured it), so the rows re-run after a
    crash are written once; a row cut short or not in the file's form is dropped too. Atomic
    (<name>.csv.tmp, then a rename); a missing file becomes one with the header alone, which training then
    appends to. Returns the number of rows dropped."""
    path = run_dir / f"{name}.csv"
    lines = (
        path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True) if path.is_file() else []
    )
    rows = [(line, per_image_row(line)) for line in lines[1:]]
    kept = [line for line, row in rows if row is not None and row[2] < iterations_done]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(",".join([*PER_IMAGE_COLUMNS, name]) + "\n" + "".join(kept), encoding="utf-8")
    os.replace(tmp, path)
    return max(0, len(lines) - 1 - len(kept))


def per_image_row(line: str) -> tuple[str, int, int, float] | None:
    """(image_id, epoch, iteration, value) of one whole per-image row, or None where the line is not one: cut
    short by a crash (training writes whole rows, newline included) or foreign. An id may hold a comma."""
    if not line.endswith("\n"):
        return None
    fields = line.rstrip("\r\n").rsplit(",", 3)
    try:
        return fields[0], int(fields[1]), int(fields[2]), float(fields[3])
    except (IndexError, ValueError):
        return None


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
    after a resume); a line cut short by a crash, or one that is not a record, is skipped. [] without any."""
    path = run_dir / METRICS_NAME
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


# ------------------------------------------------------------------------------------ the run's records

Series = list[tuple[int, float]]  # (iteration, value) pairs in iteration order, one per iteration


@dataclass
class PerImageHistory:
    """One per-image quantity over training, as run_dir/<name>.csv holds it (header
    image_id,epoch,iteration,<name>; one row per image and iteration, every rank's images): row i is the
    image ids[image[i]] at the 0-based epoch[i] and iteration[i], with the value value[i]."""

    name: str
    path: Path
    ids: list[str]
    image: np.ndarray  # int64 [rows], indices into ids
    epoch: np.ndarray  # int64 [rows], 0-based as the file counts (the console's epoch minus one)
    iteration: np.ndarray  # int64 [rows]
    value: np.ndarray  # float64 [rows]

    @property
    def last_epoch(self) -> int:
        return int(self.epoch.max())

    def by_epoch(self) -> dict[int, np.ndarray]:
        """Every value of each epoch, by 0-based epoch in order."""
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
    without .csv> or it has no row. A row that does not parse is skipped, and so is a last line without its
    newline: training writes whole rows, so it was cut short by a crash."""
    name = path.stem
    index: dict[str, int] = {}
    image, epoch, iteration, value = [], [], [], []
    with path.open(encoding="utf-8", errors="replace") as f:
        if f.readline().rstrip("\r\n").split(",") != [*PER_IMAGE_COLUMNS, name]:
            return None
        for line in f:
            row = per_image_row(line)
            if row is None:
                continue
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
        np.asarray(epoch, **as_int),
        np.asarray(iteration, **as_int),
        np.asarray(value, dtype=np.float64),
    )


def _scalar_records(path: Path, key: str) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(record[key] as an int, its scalars, the record) of each train_scalars.jsonl line that is a record
    with that key; a line that is not (one cut short by a crash, a foreign one) is skipped."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            number, scalars = int(record[key]), dict(record["scalars"])
        except (ValueError, KeyError, TypeError):
            continue
        yield number, scalars, record


def read_train_scalars(path: Path) -> tuple[dict[str, Series], float | None] | None:
    """train_scalars.jsonl as series by TensorBoard tag (train/<name> for each scalar, train/lr), and the
    largest wall_s it records; None where the file does not exist. A line that is not a record (one cut
    short by a crash) is skipped; an iteration recorded twice keeps its last line."""
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
    mean}} in epoch order; {} where the file does not exist. Lines that are not a record are skipped."""
    if not path.is_file():
        return {}
    sums: dict[int, dict[str, list[float]]] = {}
    for epoch, scalars, _ in _scalar_records(path, "epoch"):
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

    @property
    def method(self) -> str:
        train = self.config.get("train")
        method = train.get("method") if isinstance(train, dict) else None
        return str(method or "supervised")  # the default of imas.config.TrainConfig

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
    )
