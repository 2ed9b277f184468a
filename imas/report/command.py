"""imas-report: the command (arguments, exit status) around imas.report.page."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import imas.report
from imas.cli import run_command
from imas.dist import init_distributed
from imas.errors import UserError
from imas.report.page import render
from imas.report.plots import pyplot
from imas.report.reading import load_report, say


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="imas-report",
        description=imas.report.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help="a training run directory (holds config.yaml, metrics.jsonl, ...)")
    p.add_argument("--out", default=None, help="the HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "auto"],
        help="where the gallery's predictions run (default: cpu)",
    )
    p.add_argument("--gallery", type=int, default=8, help="images in each gallery (default 8)")
    p.add_argument(
        "--opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of the run's config, e.g. data.root=/data/voc when the run was made elsewhere",
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    pyplot()  # first: a missing matplotlib is said before any slow reading
    if args.gallery < 0:
        raise UserError(f"--gallery must be >= 0, got {args.gallery}")
    device = init_distributed(args.device).device  # a missing CUDA device too is said before the work
    run_dir = Path(args.run_dir)
    report = load_report(run_dir, args.opt)
    page = render(report, args.gallery, device)
    out = Path(args.out) if args.out else run_dir / "report.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {out} ({exc.strerror or exc})") from None
    say(f"wrote {out} ({len(page.encode()) // 1024} KiB)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> None:
        run(parse_args(argv))

    return run_command(body)
