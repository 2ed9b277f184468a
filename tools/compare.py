"""One table comparing training runs: method, config, best and final mIoU, per-class IoU and wall time.

    python tools/compare.py RUN_DIR [RUN_DIR ...] [--csv out.csv]

Prints a markdown table, one row per run in the order given:

- run: the run directory; method: train.method of its config.yaml;
- config: the experiment config the run was trained from where the run records it (result.json, which
  tools/toy_benchmark.py writes), else the run's own resolved copy, RUN_DIR/config.yaml;
- model: the reported model, as metrics.jsonl names it (the teacher of iMAS and mean teacher, else the
  student);
- best mIoU and its epoch, final mIoU (the last evaluation), in percent, from metrics.jsonl;
- one column per class, named by the class names metrics.jsonl records: the reported model's IoU at its best
  evaluation (the models best.pth holds), in percent;
- wall time and its source. Training records no duration of its own, so: result.json's wall_s where present
  (tools/toy_benchmark.py times the whole training process); else train.log's timestamps, from each start
  of the run (its "run ... on ..." line) to the last line before the next start, summed over the attempts of
  a resumed run so that the time it spent stopped does not count (to the second); else n/a.

--csv writes the same table as CSV: the numbers at full precision (still percent), the wall time in seconds.
Runs evaluated on different class lists (other datasets) have no common per-class columns: that, a missing
folder, a folder that is not a run directory or one with no evaluation yet is one sentence on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from imas.errors import UserError, user_message
from imas.logging import format_duration
from imas.rundir import best_record, check_existing_run, miou_of, read_evaluations

# "2026-12-02 03:23:18 INFO run training-imas-logs/toy/imas/seed0 on cpu x 1 (fp32)"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) [A-Z]+ (.*)$")
RUN_START = re.compile(r"^run .+ on \S+ x \d+")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV here")
    return p.parse_args(argv)


@dataclass
class Row:
    """One run's line of the table."""

    run: str
    method: str
    config: str
    model: str
    best_miou: float
    best_epoch: int
    final_miou: float
    final_epoch: int
    iou: dict[str, float]  # at the best evaluation, by class name, in metrics.jsonl's order
    wall_s: float | None
    wall_source: str


def read_method(run_dir: Path) -> str:
    """train.method of the run's config.yaml. Read as plain YAML, not validated: a run made by another
    version of the code (other keys) still compares."""
    path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path} cannot be read as a config ({type(exc).__name__})") from None
    train = raw.get("train") if isinstance(raw, dict) else None
    if not isinstance(train, dict):
        raise UserError(f"{path} has no train section")
    return str(train.get("method", "supervised"))  # the default of imas.config.TrainConfig


def train_log_seconds(text: str) -> float | None:
    """Seconds of training that train.log's timestamps span: each attempt from its "run ... on ..." line to
    its last stamped line, summed (a resumed run's stop does not count). None when nothing is stamped."""
    total, start, last = 0.0, None, None
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue  # an evaluation table's rows, say
        try:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
        if RUN_START.match(match.group(2)) and start is not None and last is not None:
            total += (last - start).total_seconds()
            start = None
        if start is None:
            start = stamp
        last = stamp
    if start is None or last is None:
        return None
    return total + (last - start).total_seconds()


def wall_time(run_dir: Path) -> tuple[float | None, str]:
    """(seconds, source): result.json's wall_s, else train.log's timestamps, else (None, "n/a")."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            return float(json.loads(result.read_text(encoding="utf-8"))["wall_s"]), "result.json"
        except (ValueError, KeyError, TypeError):
            pass
    log = run_dir / "train.log"
    if log.is_file():
        seconds = train_log_seconds(log.read_text(encoding="utf-8", errors="replace"))
        if seconds is not None:
            return seconds, "train.log"
    return None, "n/a"


def experiment_config(run_dir: Path) -> str:
    """The experiment YAML named in result.json (tools/toy_benchmark.py), else RUN_DIR/config.yaml."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            config = json.loads(result.read_text(encoding="utf-8"))["config"]
            if isinstance(config, str) and config:
                return config
        except (ValueError, KeyError, TypeError):
            pass
    return str(run_dir / "config.yaml")


def read_row(run_dir: Path) -> Row:
    check_existing_run(run_dir)
    method = read_method(run_dir)
    records = read_evaluations(run_dir)
    if not records:
        raise UserError(f"{run_dir} has no evaluation in metrics.jsonl yet")
    best, last = best_record(records), records[-1]
    seconds, source = wall_time(run_dir)
    return Row(
        run=str(run_dir),
        method=method,
        config=experiment_config(run_dir),
        model=str(best.get("model", "student")),
        best_miou=100 * miou_of(best),
        best_epoch=int(best["epoch"]),
        final_miou=100 * miou_of(last),
        final_epoch=int(last["epoch"]),
        iou={
            name: 100 * (math.nan if value is None else float(value)) for name, value in best["iou"].items()
        },
        wall_s=seconds,
        wall_source=source,
    )


def check_same_classes(rows: list[Row]) -> list[str]:
    """The class names every run shares, in order; runs of other class lists are one sentence."""
    names = list(rows[0].iou)
    for row in rows[1:]:
        other = list(row.iou)
        if other == names:
            continue
        if len(other) != len(names):
            detail = f"{len(names)} classes against {len(other)}"
        else:
            k = next(i for i, (a, b) in enumerate(zip(names, other)) if a != b)
            detail = f"class {k} is {names[k]!r} in one and {other[k]!r} in the other"
        raise UserError(
            f"runs {rows[0].run} and {row.run} were evaluated on different class lists ({detail}); "
            "compare runs of one dataset"
        )
    return names


HEAD = ["run", "method", "config", "model", "best mIoU", "best epoch", "final mIoU"]
TAIL = ["wall time", "wall time source"]


def markdown(rows: list[Row], names: list[str]) -> str:
    def pct(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.2f}"

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    header = HEAD + names + TAIL
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    align = ["---"] * 4 + ["---:"] * (3 + len(names)) + ["---:", "---"]  # numbers to the right
    lines.append("|" + "|".join(align) + "|")
    for r in rows:
        wall = "n/a" if r.wall_s is None else format_duration(r.wall_s)
        cells = [cell(r.run), cell(r.method), cell(r.config), cell(r.model)]
        cells += [pct(r.best_miou), str(r.best_epoch), pct(r.final_miou)]
        cells += [pct(r.iou[name]) for name in names] + [wall, r.wall_source]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[Row], names: list[str]) -> None:
    """The table with full-precision numbers (percent; empty where undefined) and wall_s in seconds."""

    def num(value: float | None) -> str:
        return "" if value is None or math.isnan(value) else repr(value)

    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([*HEAD, *names, "wall_s", "wall_s_source"])
            for r in rows:
                writer.writerow(
                    [r.run, r.method, r.config, r.model, num(r.best_miou), r.best_epoch, num(r.final_miou)]
                    + [num(r.iou[name]) for name in names]
                    + [num(r.wall_s), r.wall_source]
                )
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> str:
    rows = [read_row(Path(run_dir)) for run_dir in args.run_dirs]
    names = check_same_classes(rows)
    if args.csv:
        write_csv(Path(args.csv), rows, names)
    return markdown(rows, names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        table = run(args)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
