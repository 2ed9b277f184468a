"""The command lines of every command, without torch: `--help` and a usage error answer at once, before the
command's module (and torch) is imported (imas.entry). Each help fits one 80 x 24 terminal and shows one
example; the manual is the repository's README.md and docs/.

A command's module parses with the same function (imas.train.parse_args -> parse_train, ...), so there is one
definition of each command line."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path

from imas.config import EvalMode

MANUAL = "Manual: README.md and docs/ of the repository."
PREDICTIONS = Path("runs", "predictions")  # imas-predict's default output folders go below it
OVERLAY_ALPHA = 0.5  # imas-predict's default --alpha: the weight of the class colours in the overlay


def _parser(description: str, example: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser whose help is `description`, the options, then `example` and where the manual is."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"{example}\n{MANUAL}",
        formatter_class=_formatter,
    )


class _Wrapping(argparse.HelpFormatter):
    """Each line of the description and epilog is a paragraph wrapped to the terminal; a line that starts with
    whitespace (an example command) is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if not line or line[0].isspace():
                lines.append(indent + line if line else "")
                continue
            wrap = textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False)
            lines.extend(indent + part for part in wrap)
        return "\n".join(lines)


def _formatter(prog: str) -> argparse.HelpFormatter:
    """Text wrapped to the terminal; an option's help on its line where the option fits in 34 columns."""
    return _Wrapping(prog, max_help_position=34)


def _opt(parser: argparse.ArgumentParser, help: str = "config overrides, e.g. eval.flip=true") -> None:
    parser.add_argument("--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help=help)


def _model_mode(parser: argparse.ArgumentParser) -> None:
    modes = [m.value for m in EvalMode]
    help = "teacher, student, ... (default: eval.model)"
    parser.add_argument("--model", default=None, metavar="NAME", help=help)
    parser.add_argument("--mode", choices=modes, default=None, help="default: eval.mode")


def _device(parser: argparse.ArgumentParser, default: str = "auto", help: str | None = None) -> None:
    parser.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"], help=help)


def _force(parser: argparse.ArgumentParser, what: str, command: str) -> None:
    parser.add_argument("--force", action="store_true", help=f"replace {what} {command} did not write")


# ------------------------------------------------------------------------------------------ training


def train_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Train a segmentation model with the method its config names (train.method). A run directory "
        "that holds a checkpoint resumes from it; a start that stops before training leaves no files.",
        "example, in a checkout of the repository (its exps/; sh single_run.sh makes the toy data):\n"
        "  imas-train --config exps/toy/imas.yaml --opt train.epochs=2",
    )
    p.add_argument("--config", required=True, help="experiment YAML, e.g. from the repository's exps/")
    _opt(p, "config overrides, e.g. optim.lr=0.01")
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="output folder (default: train.run_dir, else runs/<config below exps/>)",
    )
    p.add_argument("--seed", type=int, metavar="N", help="the same as --opt train.seed=N")
    _device(p)
    p.add_argument(
        "--resume-anyway",
        action="store_true",
        help="resume even where the checkpoint's result-changing settings differ",
    )
    return p


def parse_train(argv: Sequence[str] | None) -> argparse.Namespace:
    args = train_parser().parse_args(argv)
    if args.seed is not None:  # an override like any other: the config is never changed after loading
        args.opt.append(f"train.seed={args.seed}")
    return args


def st_plus_plus_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Run or resume a self-training chain (ST++ or ST): SupOnly, the selection, pseudo-labels and "
        "re-trainings, each training an ordinary run directory in the chain's folder. A finished step is "
        "not redone; a changed setting is refused.",
        "example, in a checkout of the repository (its exps/; sh single_run.sh makes the toy data):\n"
        "  imas-st-plus-plus --config exps/toy/st_plus_plus.yaml --seed 0",
        prog="imas-st-plus-plus",
    )
    p.add_argument("--config", required=True, help="experiment YAML of train.method self_training")
    _opt(p, "config overrides, e.g. optim.lr=0.01")
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        help="the chain's folder (default: train.run_dir, else runs/<config below exps/>)",
    )
    p.add_argument("--seed", type=int, metavar="N", help="the same as --opt train.seed=N")
    _device(p)
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="train each stage with torchrun on N GPUs of this machine (default 1: in this process)",
    )
    return p


def parse_st_plus_plus(argv: Sequence[str] | None) -> argparse.Namespace:
    args = st_plus_plus_parser().parse_args(argv)
    if args.seed is not None:  # as imas-train: an override like any other
        args.opt.append(f"train.seed={args.seed}")
    if args.nproc_per_node < 1:
        st_plus_plus_parser().error(f"--nproc-per-node must be at least 1, got {args.nproc_per_node}")
    return args


# --------------------------------------------------------------------------- evaluation and prediction


def eval_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Evaluate a checkpoint on its config's val split: the per-class IoU table, the mIoU and a JSON "
        "file (also under torchrun, each val image counted once).",
        "example, with a config from the repository's exps/ and the run it trained:\n"
        "  imas-eval --config exps/toy/imas.yaml --checkpoint runs/toy/imas/best.pth",
    )
    p.add_argument("--config", required=True, help="experiment YAML of the checkpoint's run")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="latest.pth or best.pth of a run")
    _model_mode(p)
    _opt(p)
    p.add_argument("--output", metavar="JSON", help="default: <checkpoint>.<model>.eval.json")
    _force(p, "an --output", "imas-eval")
    _device(p)
    return p


def parse_eval(argv: Sequence[str] | None) -> argparse.Namespace:
    return eval_parser().parse_args(argv)


def default_predictions(checkpoint: str) -> Path:
    """imas-predict's output folder when --output is not given, below runs/predictions: a checkpoint under
    runs/ keeps its path there (runs/toy/imas/best.pth -> runs/predictions/toy/imas/best), so two runs'
    predictions never share a folder; any other gets <its folder>_<its name> (x/imas/best.pth ->
    runs/predictions/imas_best)."""
    path = Path(checkpoint).absolute()
    runs = PREDICTIONS.parent.absolute()
    if path.is_relative_to(runs) and not path.is_relative_to(PREDICTIONS.absolute()):
        return PREDICTIONS / path.relative_to(runs).with_suffix("")
    run = path.parent.name
    return PREDICTIONS / (f"{run}_{path.stem}" if run else path.stem)


def predict_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Segment images with a checkpoint: per image <name>.png (class indices) and <name>_overlay.jpg "
        "(classes over the photo); legend.png names the colours.",
        "example, for a run you trained (writes runs/predictions/toy/imas/best):\n"
        "  imas-predict --checkpoint runs/toy/imas/best.pth --input photos/",
    )
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="latest.pth or best.pth of a run")
    p.add_argument(
        "--input",
        required=True,
        metavar="IMAGES",
        help="folder (not recursive), quoted glob or one image",
    )
    p.add_argument("--output", metavar="DIR", help="default: a folder below runs/predictions/")
    p.add_argument("--config", help="default: the config stored in the checkpoint")
    _model_mode(p)
    _opt(p)
    p.add_argument(
        "--alpha",
        default=str(OVERLAY_ALPHA),
        metavar="A",
        help=f"overlay: 0 the photo .. 1 the colours ({OVERLAY_ALPHA})",
    )
    _force(p, "output files", "imas-predict")
    _device(p)
    return p


def parse_predict(argv: Sequence[str] | None) -> argparse.Namespace:
    args = predict_parser().parse_args(argv)
    if args.output is None:
        args.output = str(default_predictions(args.checkpoint))
    return args


def pseudo_labels_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Pseudo-label quality per class: coverage (confident pixels) and correct share.",
        "example, with a config from the repository's exps/ and the run it trained:\n"
        "  imas-pseudo-labels --config exps/toy/imas.yaml --checkpoint runs/toy/imas/best.pth",
        prog="imas-pseudo-labels",
    )
    p.add_argument("--config", required=True, help="experiment YAML of the checkpoint's run")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="latest.pth or best.pth of a run")
    p.add_argument(
        "--model",
        default="teacher",
        metavar="NAME",
        help="teacher (default), student, ...",
    )
    p.add_argument(
        "--split",
        choices=["val", "unlabeled", "labeled"],
        default="val",
        metavar="SPLIT",
        help="val (default), unlabeled or labeled",
    )
    p.add_argument(
        "--threshold", type=float, metavar="TAU", help="confidence threshold (default: the method's)"
    )
    p.add_argument(
        "--limit", type=int, default=0, metavar="N", help="the first N images of the split (0: all)"
    )
    _opt(p)
    p.add_argument("--output", metavar="JSON", help="also write the numbers as JSON here")
    _force(p, "an --output", "this command")
    _device(p)
    return p


def parse_pseudo_labels(argv: Sequence[str] | None) -> argparse.Namespace:
    return pseudo_labels_parser().parse_args(argv)


# --------------------------------------------------------------------------------- reading run folders


def report_parser() -> argparse.ArgumentParser:
    p = _parser(
        "One self-contained HTML page about a training run: mIoU, losses, per-class IoU, the per-image "
        "history and galleries of its hardest and easiest images. Needs matplotlib (pip install matplotlib).",
        "example, for a run of your training:\n  imas-report runs/toy/imas   (-> runs/toy/imas/report.html)",
        prog="imas-report",
    )
    p.add_argument("run_dir", help="a training run's folder (config.yaml, ...)")
    p.add_argument("--out", metavar="HTML", help="the page to write (default: RUN_DIR/report.html)")
    _force(p, "an --out file", "imas-report")
    _device(p, default="cpu", help="where gallery predictions run (default: cpu)")
    p.add_argument("--gallery", type=int, default=8, metavar="N", help="images in each gallery (default 8)")
    _opt(p, "run config overrides, e.g. data.root=/data/voc")
    return p


def parse_report(argv: Sequence[str] | None) -> argparse.Namespace:
    return report_parser().parse_args(argv)


def compare_parser() -> argparse.ArgumentParser:
    p = _parser(
        "One markdown table comparing training runs: method, config, best and final mIoU, seed, precision, "
        "per-class IoU at the best evaluation and wall time, a row per run in the order given.",
        "example, for runs of your training:\n"
        "  imas-compare runs/toy/suponly runs/toy/imas --csv compare.csv",
        prog="imas-compare",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories")
    p.add_argument("--out", metavar="FILE", help="also write the markdown table here")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV here")
    _force(p, "an --out / --csv file", "imas-compare")
    return p


def parse_compare(argv: Sequence[str] | None) -> argparse.Namespace:
    return compare_parser().parse_args(argv)


# ------------------------------------------------------------------------------------------------ data


def data_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Prepare and check datasets; `imas-data COMMAND --help` shows each command's options.",
        "example, with a config from the repository's exps/ (or your own):\n"
        "  imas-data check exps/toy/imas.yaml",
        prog="imas-data",
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="{sbd,cityscapes,splits,check}")

    def command(name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
        """`summary` in imas-data's list; `description` and `example` in the command's own help."""
        epilog = f"example: imas-data {name} {example}\n{MANUAL}"
        return commands.add_parser(
            name, help=summary, description=description, epilog=epilog, formatter_class=_formatter
        )

    sbd = command(
        "sbd",
        "SBD + VOC labels -> SegmentationClassAug",
        "SBD + VOC labels -> VOC2012/SegmentationClassAug (needs scipy). VOC2012 and SBD are downloads "
        "(docs/data.md of the repository).",
        "--sbd data/benchmark_RELEASE/dataset --voc data/VOC2012",
    )
    sbd.add_argument("--sbd", required=True, help="SBD's dataset folder (holding cls/, train.txt, val.txt)")
    sbd.add_argument("--voc", required=True, help="the VOC2012 folder (holding SegmentationClass/)")
    sbd.add_argument("--overwrite", action="store_true", help="rewrite existing SegmentationClassAug files")
    city = command(
        "cityscapes",
        "gtFine labelIds -> labelTrainIds PNGs",
        "Cityscapes gtFine labelIds -> labelTrainIds PNGs, beside them. Cityscapes is a download "
        "(docs/data.md of the repository).",
        "data/cityscapes",
    )
    city.add_argument("root", help="Cityscapes root holding gtFine/ and leftImg8bit/")
    city.add_argument("--overwrite", action="store_true", help="rewrite existing labelTrainIds files")
    splits = command(
        "splits",
        "split lists of the published protocols",
        "The split lists of the published protocols, and a manifest.",
        "pascal --voc data/VOC2012",
    )
    splits.add_argument("dataset", choices=["pascal", "cityscapes"])
    splits.add_argument("--voc", type=Path, help="pascal: the VOC2012 folder (JPEGImages/, ...)")
    splits.add_argument("--sbd", type=Path, help="pascal: SBD's dataset folder (cls/, ...)")
    splits.add_argument("--root", type=Path, help="cityscapes: the folder of leftImg8bit/, gtFine/")
    splits.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: splits/<dataset>)")
    splits.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the draw (default 0)")
    for flag, which in (
        ("--classic", "pascal classic"),
        ("--blended", "pascal blended"),
        ("--sizes", "cityscapes"),
    ):
        splits.add_argument(
            flag, type=int, nargs="+", metavar="N", help=f"{which} sizes (default: the paper's)"
        )
    splits.add_argument("--force", action="store_true", help="replace lists in --out imas-data did not write")
    check = command(
        "check",
        "check every file a config reads",
        "Check every file a config reads, all problems at once.",
        "exps/toy/imas.yaml",
    )
    check.add_argument("config", help="experiment YAML, e.g. from the repository's exps/, or your own")
    _opt(check, "config overrides, e.g. data.root=/data/voc")
    check.add_argument("--max-listed", type=int, default=5, metavar="N", help="problems shown per kind (5)")
    return p


def parse_data(argv: Sequence[str] | None) -> argparse.Namespace:
    return data_parser().parse_args(argv)
