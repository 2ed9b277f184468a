"""The command lines of every command, without torch: `--help` and a usage error answer at once, before the
command's module (and torch) is imported (imas.entry). Each help fits one screen and shows one example; the
manual is the repository's README.md and docs/.

A command's module parses with the same function (imas.train.parse_args -> parse_train, ...), so there is one
definition of each command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from imas.config import EvalMode, EvalModel

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


def _formatter(prog: str) -> argparse.HelpFormatter:
    """The description as written; an option's help on its line where the option fits in 34 columns."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34)


def _opt(parser: argparse.ArgumentParser, help: str = "config overrides, e.g. eval.flip=true") -> None:
    parser.add_argument("--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help=help)


def _model_mode(parser: argparse.ArgumentParser) -> None:
    models, modes = [m.value for m in EvalModel], [m.value for m in EvalMode]
    parser.add_argument("--model", choices=models, default=None, help="default: eval.model")
    parser.add_argument("--mode", choices=modes, default=None, help="default: eval.mode")


def _device(parser: argparse.ArgumentParser, default: str = "auto", help: str | None = None) -> None:
    parser.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"], help=help)


def _force(parser: argparse.ArgumentParser, what: str, command: str) -> None:
    parser.add_argument("--force", action="store_true", help=f"replace {what} {command} did not write")


# ------------------------------------------------------------------------------------------ training


def train_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Train a segmentation model with the method its config names (train.method). A run directory that\n"
        "holds a checkpoint resumes from it; a start that stops before training leaves no files.",
        "example, in a checkout of the repository (its exps/; sh single_run.sh makes the toy data):\n"
        "  imas-train --config exps/toy/imas.yaml --opt train.epochs=2",
    )
    p.add_argument(
        "--config", required=True, help="experiment YAML, e.g. the repository's exps/toy/imas.yaml"
    )
    _opt(p, "config overrides, e.g. optim.lr=0.01 train.epochs=2")
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
        help="resume a run directory whose checkpoint has other result-changing settings",
    )
    return p


def parse_train(argv: Sequence[str] | None) -> argparse.Namespace:
    args = train_parser().parse_args(argv)
    if args.seed is not None:  # an override like any other: the config is never changed after loading
        args.opt.append(f"train.seed={args.seed}")
    return args


# --------------------------------------------------------------------------- evaluation and prediction


def eval_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Evaluate a checkpoint on its config's val split: the per-class IoU table, the mIoU and a JSON file\n"
        "(also under torchrun, each val image counted once).",
        "example, with a config from the repository's exps/ and the run it trained:\n"
        "  imas-eval --config exps/toy/imas.yaml --checkpoint runs/toy/imas/best.pth --mode sliding",
    )
    p.add_argument("--config", required=True, help="experiment YAML of the checkpoint's run")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="latest.pth or best.pth of a run")
    _model_mode(p)
    _opt(p)
    p.add_argument("--output", metavar="JSON", help="result file (default: <checkpoint>.<model>.eval.json)")
    _force(p, "an --output", "imas-eval")
    _device(p)
    return p


def parse_eval(argv: Sequence[str] | None) -> argparse.Namespace:
    return eval_parser().parse_args(argv)


def default_predictions(checkpoint: str) -> Path:
    """imas-predict's output folder when --output is not given: runs/predictions/<run>_<checkpoint name>,
    e.g. runs/toy/imas/best.pth -> runs/predictions/imas_best."""
    path = Path(checkpoint)
    run = path.absolute().parent.name
    return PREDICTIONS / (f"{run}_{path.stem}" if run else path.stem)


def predict_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Segment images with a trained checkpoint: per image <name>.png (class indices), <name>_overlay.jpg\n"
        "(the classes blended into the photo), and legend.png (index, colour and name of each class).",
        "example, with a checkpoint of your training (writes runs/predictions/imas_best):\n"
        "  imas-predict --checkpoint runs/toy/imas/best.pth --input photos/",
    )
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="latest.pth or best.pth of a run")
    p.add_argument(
        "--input",
        required=True,
        metavar="IMAGES",
        help="a folder (not recursive), a quoted glob or one image",
    )
    p.add_argument("--output", metavar="DIR", help="default: runs/predictions/<run folder>_<checkpoint name>")
    p.add_argument("--config", help="default: the config stored in the checkpoint")
    _model_mode(p)
    _opt(p)
    p.add_argument(
        "--alpha",
        default=str(OVERLAY_ALPHA),
        metavar="A",
        help=f"overlay: 0 the photo .. 1 the colours ({OVERLAY_ALPHA})",
    )
    _force(p, "files in --output", "imas-predict")
    _device(p)
    return p


def parse_predict(argv: Sequence[str] | None) -> argparse.Namespace:
    args = predict_parser().parse_args(argv)
    if args.output is None:
        args.output = str(default_predictions(args.checkpoint))
    return args


def pseudo_labels_parser() -> argparse.ArgumentParser:
    p = _parser(
        "How good would a checkpoint's pseudo-labels be? Per ground-truth class, the share of its pixels\n"
        "where the model is confident (coverage) and the share of those it labels correctly.",
        "example, with a config from the repository's exps/ and the run it trained:\n"
        "  imas-pseudo-labels --config exps/toy/imas.yaml --checkpoint runs/toy/imas/latest.pth",
        prog="imas-pseudo-labels",
    )
    p.add_argument("--config", required=True, help="experiment YAML of the checkpoint's run")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="latest.pth or best.pth of a run")
    p.add_argument(
        "--model", choices=[m.value for m in EvalModel], default="teacher", help="default: teacher"
    )
    p.add_argument("--split", choices=["val", "unlabeled", "labeled"], default="val")
    p.add_argument(
        "--threshold", type=float, metavar="TAU", help="confidence threshold (default: imas.threshold)"
    )
    p.add_argument(
        "--limit", type=int, default=0, metavar="N", help="the first N images of the split (0: all)"
    )
    _opt(p)
    p.add_argument("--output", metavar="JSON", help="also write the numbers as JSON here")
    _force(p, "an --output", "imas-pseudo-labels")
    _device(p)
    return p


def parse_pseudo_labels(argv: Sequence[str] | None) -> argparse.Namespace:
    return pseudo_labels_parser().parse_args(argv)


# --------------------------------------------------------------------------------- reading run folders


def report_parser() -> argparse.ArgumentParser:
    p = _parser(
        "One self-contained HTML page about a training run: mIoU, losses, per-class IoU, the per-image\n"
        "history and galleries of its hardest and easiest images. Needs matplotlib (pip install matplotlib).",
        "example, for a run of your training:\n  imas-report runs/toy/imas   (-> runs/toy/imas/report.html)",
        prog="imas-report",
    )
    p.add_argument("run_dir", help="a training run directory (holds config.yaml, metrics.jsonl, ...)")
    p.add_argument("--out", metavar="HTML", help="the page to write (default: RUN_DIR/report.html)")
    _force(p, "an --out file", "imas-report")
    _device(p, default="cpu", help="where the galleries' predictions run (default: cpu)")
    p.add_argument("--gallery", type=int, default=8, metavar="N", help="images in each gallery (default 8)")
    _opt(p, "overrides of the run's config, e.g. data.root=/data/voc where the data moved")
    return p


def parse_report(argv: Sequence[str] | None) -> argparse.Namespace:
    return report_parser().parse_args(argv)


def compare_parser() -> argparse.ArgumentParser:
    p = _parser(
        "One markdown table comparing training runs: method, config, best and final mIoU, seed, precision,\n"
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

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        epilog = f"example:\n  imas-data {name} {example}\n{MANUAL}"
        description = summary[0].upper() + summary[1:] + "."
        return commands.add_parser(
            name, help=summary, description=description, epilog=epilog, formatter_class=_formatter
        )

    sbd = command(
        "sbd",
        "SBD + VOC labels -> VOC2012/SegmentationClassAug (needs scipy)",
        "--sbd data/benchmark_RELEASE/dataset --voc data/VOC2012",
    )
    sbd.add_argument("--sbd", required=True, help="SBD's dataset folder (holding cls/, train.txt, val.txt)")
    sbd.add_argument("--voc", required=True, help="the VOC2012 folder (holding SegmentationClass/)")
    sbd.add_argument("--overwrite", action="store_true", help="rewrite existing SegmentationClassAug files")
    city = command(
        "cityscapes", "Cityscapes gtFine labelIds -> labelTrainIds PNGs, beside them", "data/cityscapes"
    )
    city.add_argument("root", help="Cityscapes root holding gtFine/ and leftImg8bit/")
    city.add_argument("--overwrite", action="store_true", help="rewrite existing labelTrainIds files")
    splits = command(
        "splits",
        "the split lists of the published protocols, and a manifest",
        "pascal --voc data/VOC2012 --sbd data/benchmark_RELEASE/dataset",
    )
    splits.add_argument("dataset", choices=["pascal", "cityscapes"])
    splits.add_argument("--voc", type=Path, help="pascal: the VOC2012 folder (JPEGImages/, ImageSets/, ...)")
    splits.add_argument("--sbd", type=Path, help="pascal: SBD's dataset folder (train.txt, val.txt, cls/)")
    splits.add_argument("--root", type=Path, help="cityscapes: the folder holding leftImg8bit/ and gtFine/")
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
    splits.add_argument(
        "--force", action="store_true", help="replace lists in --out that imas-data splits did not write"
    )
    check = command(
        "check",
        "check every file a config reads, all problems at once",
        "exps/toy/imas.yaml   (a config from the repository's exps/, or your own)",
    )
    check.add_argument("config", help="experiment YAML")
    _opt(check, "config overrides, e.g. data.root=/data/voc")
    check.add_argument("--max-listed", type=int, default=5, metavar="N", help="problems shown per kind (5)")
    return p


def parse_data(argv: Sequence[str] | None) -> argparse.Namespace:
    return data_parser().parse_args(argv)
