"""One table comparing training runs: method, config, best and final mIoU, per-class IoU and wall time.

    imas-compare RUN_DIR [RUN_DIR ...] [--out table.md] [--csv table.csv] [--force]

Prints a markdown table, one row per run in the order given, every number read through
imas.rundir.read_run:

- run: the run directory; method: train.method of its config.yaml;
- config: the experiment config the run was trained from where the run records it (result.json, which
  tools/toy_benchmark.py writes), else the run's own resolved copy, RUN_DIR/config.yaml;
- model: the reported model, as metrics.jsonl names it (the teacher of iMAS and mean teacher, else the
  student);
- best mIoU and its epoch, final mIoU (the last evaluation), in percent, from metrics.jsonl;
- seed and precision: train.seed and train.precision of config.yaml, so that runs of other seeds or of
  fp32 and bf16 are told apart;
- one column per class, named by the class names metrics.jsonl records: the reported model's IoU at its best
  evaluation (the models best.pth holds), in percent;
- wall time and its source: the training time the run records (wall_s of metrics.jsonl and
  train_scalars.jsonl, resumed attempts summed, the time between them not counted); for a run written
  before those records, result.json's wall_s (tools/toy_benchmark.py times the whole training process), else
  the span of train.log's timestamps over its attempts (to the second); else n/a.

--out also writes the markdown table to a file (its first line, an HTML comment no viewer shows, marks it as
written by imas-compare); --csv writes the same table as CSV: the numbers at full precision (still percent),
the wall time in seconds. Both are written atomically (a hidden temporary, then a rename) and replace only
an earlier table of imas-compare: a run's own file (metrics.jsonl, config.yaml, ...) is refused, and any
other existing file unless --force; both are checked before any run is read (imas.outputs).
Runs evaluated on different class lists (other datasets) have no common per-class columns: that, a missing
folder, a folder that is not a run directory or one with no evaluation yet is one sentence on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imas.arguments import parse_compare
from imas.cli import discard_new_folders, run_command
from imas.data.io import check_writable_file
from imas.errors import UserError
from imas.logging import format_duration
from imas.outputs import check_output, text_mark, write_text_atomic
from imas.rundir import UNSAVED, RunRecord, best_record, miou_of, read_run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (imas.arguments: parsed there without torch for `imas-compare --help`)."""
    return parse_compare(argv)


COMMAND = "imas-compare"  # the mark of the files it writes (imas.outputs)


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
    seed: str  # train.seed as config.yaml stores it
    precision: str  # train.precision likewise (fp32, bf16, fp16)
    iou: dict[str, float]  # at the best evaluation, by class name, in metrics.jsonl's order
    wall_s: float | None
    wall_source: str
    best_unsaved: bool = False  # no checkpoint holds the best evaluation: the run stopped before saving it


def experiment_config(run: RunRecord) -> str:
    """The experiment YAML named in result.json (tools/toy_benchmark.py), else RUN_DIR/config.yaml."""
    config = (run.result or {}).get("config")
    return config if isinstance(config, str) and config else str(run.run_dir / "config.yaml")


def read_row(run_dir: Path) -> Row:
    run = read_run(run_dir, per_image=False)
    if not run.evaluations:
        raise UserError(f"{run_dir} has no evaluation in metrics.jsonl yet")
    best, last = best_record(run.evaluations), run.evaluations[-1]
    train = run.config.get("train") or {}
    return Row(
        run=str(run_dir),
        method=run.method,
        config=experiment_config(run),
        model=str(best.get("model", "student")),
        best_miou=100 * miou_of(best),
        best_epoch=int(best["epoch"]),
        final_miou=100 * miou_of(last),
        final_epoch=int(last["epoch"]),
        seed=str(train.get("seed", "n/a")),
        precision=str(train.get("precision", "n/a")),
        iou={
            name: 100 * (math.nan if value is None else float(value)) for name, value in best["iou"].items()
        },
        wall_s=run.wall_s,
        wall_source=run.wall_source,
        best_unsaved=run.unsaved(best),
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


HEAD = ["run", "method", "config", "model", "best mIoU", "best epoch", "final mIoU", "seed", "precision"]
TAIL = ["wall time", "wall time source"]


def markdown(rows: list[Row], names: list[str]) -> str:
    def pct(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.2f}"

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    header = HEAD + names + TAIL
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    align = ["---"] * 4 + ["---:"] * 4 + ["---"] + ["---:"] * len(names) + ["---:", "---"]  # numbers right
    lines.append("|" + "|".join(align) + "|")
    for r in rows:
        wall = "n/a" if r.wall_s is None else format_duration(r.wall_s)
        cells = [cell(r.run), cell(r.method), cell(r.config), cell(r.model)]
        best_epoch = f"{r.best_epoch} ({UNSAVED})" if r.best_unsaved else str(r.best_epoch)
        cells += [pct(r.best_miou), best_epoch, pct(r.final_miou), cell(r.seed), cell(r.precision)]
        cells += [pct(r.iou[name]) for name in names] + [wall, r.wall_source]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[Row], names: list[str]) -> None:
    """The table with full-precision numbers (percent; empty where undefined) and wall_s in seconds,
    written atomically."""

    def num(value: float | None) -> str:
        return "" if value is None or math.isnan(value) else repr(value)

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([*HEAD, *names, "wall_s", "wall_s_source"])
    for r in rows:
        writer.writerow(
            [r.run, r.method, r.config, r.model, num(r.best_miou), r.best_epoch, num(r.final_miou)]
            + [r.seed, r.precision]
            + [num(r.iou[name]) for name in names]
            + [num(r.wall_s), r.wall_source]
        )
    write_text_atomic(path, text.getvalue())


def write_markdown(path: Path, table: str) -> None:
    """The markdown table under the comment that marks it as ours, written atomically."""
    write_text_atomic(path, f"{text_mark(COMMAND)}\n{table}\n")


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: spelled alike after symlinks and ".." are resolved, or, both existing,
    one file under two names (a hard link too)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one absent
        return False


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any run is read, an --out or --csv that imas-compare may not replace."""
    for flag, value in (("--out", args.out), ("--csv", args.csv)):
        if value:
            check_output(Path(value), COMMAND, f"{flag} {value}", force=args.force)
            discard_new_folders(Path(value).parent)  # a refusal below leaves no empty folder
            check_writable_file(Path(value), flag)
    if args.out and args.csv and same_file(args.out, args.csv):
        raise UserError(f"--out and --csv name the same file {args.out}; give each its own")


def run(args: argparse.Namespace) -> str:
    check_outputs(args)
    rows = [read_row(Path(run_dir)) for run_dir in args.run_dirs]
    names = check_same_classes(rows)
    table = markdown(rows, names)
    if args.csv:
        write_csv(Path(args.csv), rows, names)
    if args.out:
        write_markdown(Path(args.out), table)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> None:
        print(run(parse_args(argv)))

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
