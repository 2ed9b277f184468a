"""One self-contained HTML page about a training run: what it learnt, how, and on which images it struggled.

    imas-report RUN_DIR [--out RUN_DIR/report.html] [--force] [--device cpu|cuda|auto] [--gallery 8]
        [--opt data.root=...]

The page (every plot and image embedded as a base64 PNG; no script, no other file) shows:

- the mIoU over epochs of every evaluated model: the reported one (the iMAS / mean-teacher teacher, else the
  student) and the ones evaluated beside it (the student next to a teacher, CPS's second network);
- the training losses, and the easiness, confident-pixel ratio and CutMix rate: each epoch's mean, drawn over
  the means over logging windows that the loop logs;
- the per-class IoU of the reported model at the last and at the best evaluation;
- a summary: method, data, epochs, best and final mIoU, seed and precision (config.yaml), the hardware
  (train.log's banner rows, one per start or resume) and the wall time the run records;
- for each per-image quantity the run records (iMAS and the mean teacher: the hardness), its distribution
  in each epoch, and galleries of the unlabeled images of highest and of lowest value in the last epoch of
  its history (for the hardness: the hardest and the easiest; each image's mean over the random crops of it
  that training scored in that epoch; no image in both, fewer than 2 x --gallery images are split), each
  with the teacher's pseudo-label (pixels below the method's confidence threshold white, as training
  ignores them) and the student's prediction, both computed on the whole image by the models of
  latest.pth with the config's eval settings; for the hardness, the whole image scored from those two
  predictions by training's hardness function and settings, beside the training value.

A section the run has nothing for (SupOnly has no unlabeled data and no per-image history, FixMatch no
teacher, a folder copied without checkpoints no predictions) is replaced by one line saying why.

Everything is read through imas.rundir.read_run, from the files docs/run-directory.md describes:
metrics.jsonl (the evaluations, the other models under "others"), train_scalars.jsonl (the training scalars
at full precision; for a run written before it, its train.log), and each <name>.csv per-image history.

--out replaces only an earlier page of imas-report (marked by an HTML comment near its top); a run's own
file (metrics.jsonl, config.yaml, a checkpoint, a per-image history) is refused, and any other existing file
unless --force, before any work (imas.outputs). The page is written atomically: a full disk or a stop leaves
the previous page as it was.

The plots need matplotlib (pip install -e ".[report]"). Exit status 0, or 2 with one sentence on stderr for
bad input (no such folder, not a run directory, no evaluation yet, a bad --opt).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from imas.arguments import parse_report
from imas.cli import discard_new_folders, run_command
from imas.data.io import check_writable_file
from imas.dist import init_distributed
from imas.errors import UserError
from imas.outputs import check_output, write_text_atomic
from imas.report.page import COMMAND, render
from imas.report.plots import pyplot
from imas.report.reading import load_report, say


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (imas.arguments: parsed there without torch for `imas-report --help`)."""
    return parse_report(argv)


def run(args: argparse.Namespace) -> Path:
    pyplot()  # first: a missing matplotlib is said before any slow reading
    if args.gallery < 0:
        raise UserError(f"--gallery must be >= 0, got {args.gallery}")
    device = init_distributed(args.device).device  # a missing CUDA device too is said before the work
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "report.html"
    subject = f"--out {out}" if args.out else f"the report {out}"  # the user did not name the default
    check_output(out, COMMAND, subject, force=args.force)
    if run_dir.is_dir():  # a missing run directory is said by load_report, not as an unwritable page
        discard_new_folders(out.parent)  # a failure before the page is written leaves no empty folder
        check_writable_file(out, "--out" if args.out else "the report")
    report = load_report(run_dir, args.opt)
    page = render(report, args.gallery, device)
    write_text_atomic(out, page)
    say(f"wrote {out} ({len(page.encode()) // 1024} KiB)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> None:
        run(parse_args(argv))

    return run_command(body)
