"""imas-data: preparing and checking datasets, one command with a subcommand per task.

    imas-data sbd --sbd data/benchmark_RELEASE/dataset --voc data/VOC2012 [--overwrite]
    imas-data cityscapes data/cityscapes [--overwrite]
    imas-data splits pascal --voc data/VOC2012 [--sbd data/benchmark_RELEASE/dataset] [--seed 0] [--force]
    imas-data splits cityscapes --root data/cityscapes [--seed 0] [--force]
    imas-data check CONFIG [--opt key=value ...] [--max-listed 5]

sbd: builds VOC2012/SegmentationClassAug (the 10582-image augmented labels):
  <voc>/SegmentationClassAug/<id>.png (single-channel class-index PNGs) for every VOC
  SegmentationClass/<id>.png and every SBD cls/<id>.mat that VOC does not label (VOC's fine labels win where
  both exist). Needs scipy for the .mat files.
cityscapes: writes <name>_gtFine_labelTrainIds.png (19 classes 0..18, 255 = ignore) next to every
  ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png.
  Both keep existing files unless --overwrite is given, so an interrupted run can simply be started again,
  and show progress on stderr (files done / total, files/s, ETA: one line redrawn in place on a terminal, a
  plain line every 10 s otherwise).
splits: labeled / unlabeled / val lists of the published protocols and a manifest (imas.data.split_lists).
  It replaces only lists its manifest records as written by it and unchanged since; --force replaces others.
check: every file a config will read, all problems at once (training stops at the first): the split files
  read; every image exists and decodes; every label (labeled and val) exists, decodes, is a class-index image
  with values in [0, data.num_classes) or 255 and has its image's size; no split's labels are all 255; no id
  is listed twice in a split, and no val id is in the labeled or unlabeled split. Classes of
  data.num_classes that appear in no labeled or val label are a warning. The checks are training's preflight
  (imas.data.preflight), made exhaustive.

Exit status: 0; 1 when check finds problems in the data; 2 with one sentence on stderr for bad input (a
missing folder, a bad config, a split that cannot be drawn).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from imas.cli import on_exit, run_command
from imas.data import split_lists
from imas.data.cityscapes import convert_cityscapes
from imas.data.io import check_writable_dir
from imas.data.preflight import ABSENT_CLASSES, scan_data
from imas.data.sbd import convert_sbd
from imas.errors import DataError
from imas.experiment import load_experiment
from imas.progress import ImageProgress


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="imas-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="{sbd,cityscapes,splits,check}")
    sbd = commands.add_parser("sbd", help="SBD + VOC labels -> VOC2012/SegmentationClassAug")
    sbd.add_argument("--sbd", required=True, help="SBD's dataset folder (holding cls/, train.txt, val.txt)")
    sbd.add_argument("--voc", required=True, help="the VOC2012 folder (holding SegmentationClass/)")
    sbd.add_argument("--overwrite", action="store_true", help="rewrite existing SegmentationClassAug files")
    city = commands.add_parser("cityscapes", help="Cityscapes gtFine labelIds -> labelTrainIds PNGs")
    city.add_argument("root", help="Cityscapes root holding gtFine/ and leftImg8bit/")
    city.add_argument("--overwrite", action="store_true", help="rewrite existing labelTrainIds files")
    splits = commands.add_parser(
        "splits",
        help="split lists of the published protocols",
        description=split_lists.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    splits.add_argument("dataset", choices=["pascal", "cityscapes"])
    splits.add_argument("--voc", type=Path, help="pascal: the VOC2012 folder (JPEGImages/, ImageSets/, ...)")
    splits.add_argument("--sbd", type=Path, help="pascal: SBD's dataset folder (train.txt, val.txt, cls/)")
    splits.add_argument("--root", type=Path, help="cityscapes: the folder holding leftImg8bit/ and gtFine/")
    splits.add_argument("--out", type=Path, help="output folder (default: splits/<dataset>)")
    splits.add_argument("--seed", type=int, default=0)
    sizes = split_lists.PASCAL_SIZES
    splits.add_argument("--classic", type=int, nargs="+", default=sizes["classic"], metavar="N")
    splits.add_argument("--blended", type=int, nargs="+", default=sizes["blended"], metavar="N")
    splits.add_argument(
        "--sizes", type=int, nargs="+", default=split_lists.CITYSCAPES_SIZES, metavar="N", help="cityscapes"
    )
    splits.add_argument(
        "--force",
        action="store_true",
        help="replace lists and a manifest in --out that imas-data splits did not write (or edited since)",
    )
    check = commands.add_parser("check", help="check every file a config reads, all problems at once")
    check.add_argument("config")
    check.add_argument("--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    check.add_argument("--max-listed", type=int, default=5, help="problems printed per kind (default 5)")
    return p.parse_args(argv)


def progress_printer(label: str) -> Callable[[int, int, Path], None]:
    """A progress callback for convert_sbd / convert_cityscapes: files done / total, files/s and time left on
    stderr (imas.progress.ImageProgress), its terminal line ended however the command ends."""
    shown = ImageProgress(label, 0, units=("label files", "files/s"))
    on_exit(shown.close)

    def progress(done: int, total: int, path: Path) -> None:
        shown.total = total  # known once the sources are listed
        shown.update(done)

    return progress


def sbd(args: argparse.Namespace) -> int:
    written, skipped = convert_sbd(
        args.sbd, args.voc, overwrite=args.overwrite, progress=progress_printer("sbd")
    )
    print(
        f"wrote {written} label files, skipped {skipped} that already existed (use --overwrite to redo them)"
    )
    return 0


def cityscapes(args: argparse.Namespace) -> int:
    converted, skipped = convert_cityscapes(
        args.root, overwrite=args.overwrite, progress=progress_printer("cityscapes")
    )
    print(
        f"converted {converted} files, skipped {skipped} that already existed (use --overwrite to redo them)"
    )
    return 0


def splits(args: argparse.Namespace) -> int:
    out = args.out or Path("splits") / args.dataset
    check_writable_dir(out, "--out")  # before the pools are read, not after the first list
    if args.dataset == "pascal":
        if args.voc is None:
            raise DataError("pascal splits need --voc, the VOC2012 folder")
        sizes = {"classic": args.classic, "blended": args.blended}
    else:
        if args.root is None:
            raise DataError("cityscapes splits need --root, the folder holding leftImg8bit/")
        sizes = {"": args.sizes}
    # Before anything is read or drawn: the files this run would replace must be its own (or --force).
    earlier = split_lists.check_out(out, split_lists.list_names(sizes), args.force)
    if args.dataset == "pascal":
        manifest, lists = split_lists.make_pascal(args.voc, args.sbd, args.seed, sizes)
    else:
        manifest, lists = split_lists.make_cityscapes(args.root, args.seed, args.sizes)
    split_lists.write_lists(out, lists, manifest)
    if earlier:
        manifest["earlier_lists"] = earlier
    split_lists.write_manifest(out, manifest)
    pools = ", ".join(f"{k} {v}" for k, v in manifest["pools"].items())
    print(f"wrote {len(manifest['lists'])} lists to {out} (seed {args.seed}; pools: {pools})")
    return 0


def check(args: argparse.Namespace) -> int:
    cfg = load_experiment(args.config, args.opt)
    # The same checks as training's preflight (imas.data.preflight), but every image decoded, every finding
    # kept, and duplicates and val overlap counted as problems rather than warnings.
    with_unlabeled = bool(cfg.data.unlabeled_split)
    scan = scan_data(cfg.data, with_unlabeled, decode_unlabeled=True, progress=print, progress_every_s=10)
    for split in scan.splits:
        print(f"{split.name}: {split.path}: {split.entries} entries, {split.findings} problem(s)")
    if not with_unlabeled:
        print("unlabeled: no split configured")
    problems: dict[str, list[str]] = defaultdict(list)
    for finding in scan.findings:
        if finding.kind == ABSENT_CLASSES:
            print(f"warning: {finding.message}")
        else:
            problems[finding.kind].append(finding.message)
    total = sum(len(v) for v in problems.values())
    if not total:
        print(f"{args.config}: every file checked, no problems")
        return 0
    print(f"{args.config}: {total} problem(s)")
    for kind, messages in problems.items():
        print(f"- {kind}: {len(messages)}")
        for message in messages[: args.max_listed]:
            print(f"    {message}")
        if len(messages) > args.max_listed:
            print(f"    ... and {len(messages) - args.max_listed} more")
    return 1


COMMANDS = {"sbd": sbd, "cityscapes": cityscapes, "splits": splits, "check": check}


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = parse_args(argv)
        return COMMANDS[args.command](args)

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
