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
check: everything a run of the config reads before its first iteration, all problems at once (training
  stops at the first): model.pretrained, when set, exists, is read by torch.load and fills every tensor of
  model.encoder; a class_names.txt under data.root fits data.num_classes; the split files read; every image
  exists and decodes; every label (labeled and val) exists, decodes, is a class-index image with values in
  [0, data.num_classes) or 255 and has its image's size; no split's labels are all 255; no id is listed
  twice in a split, and no val id is in the labeled or unlabeled split; an epoch holds one batch of
  train.batch_size (on one device). Classes of data.num_classes that appear in no labeled or val label are a
  warning. The checks are training's preflight (imas.data.preflight), made exhaustive.

Exit status: 0; 1 when check finds problems (in the data or the pretrained file); 2 with one sentence on
stderr for bad input (a missing folder, a bad config, a split that cannot be drawn).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from imas.arguments import parse_data
from imas.cli import discard_new_folders, on_exit, run_command
from imas.data import split_lists
from imas.data.cityscapes import convert_cityscapes
from imas.data.io import check_writable_dir
from imas.data.sbd import convert_sbd
from imas.errors import DataError
from imas.experiment import load_experiment
from imas.progress import ImageProgress


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (imas.arguments: parsed there without torch for `imas-data --help`)."""
    return parse_data(argv)


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
    discard_new_folders(Path(args.voc) / "SegmentationClassAug")  # e.g. scipy missing: no empty folder
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
    discard_new_folders(out)  # a refusal below leaves no empty folder
    check_writable_dir(out, "--out")  # before the pools are read, not after the first list
    if args.dataset == "pascal":
        if args.voc is None:
            raise DataError("pascal splits need --voc, the VOC2012 folder")
        pascal = split_lists.PASCAL_SIZES
        sizes = {"classic": args.classic or pascal["classic"], "blended": args.blended or pascal["blended"]}
    else:
        if args.root is None:
            raise DataError("cityscapes splits need --root, the folder holding leftImg8bit/")
        sizes = {"": args.sizes or split_lists.CITYSCAPES_SIZES}
    # Before anything is read or drawn: the files this run would replace must be its own (or --force).
    earlier = split_lists.check_out(out, split_lists.list_names(sizes), args.force)
    if args.dataset == "pascal":
        manifest, lists = split_lists.make_pascal(args.voc, args.sbd, args.seed, sizes)
    else:
        manifest, lists = split_lists.make_cityscapes(args.root, args.seed, sizes[""])
    split_lists.write_lists(out, lists, manifest)
    if earlier:
        manifest["earlier_lists"] = earlier
    split_lists.write_manifest(out, manifest)
    pools = ", ".join(f"{k} {v}" for k, v in manifest["pools"].items())
    print(f"wrote {len(manifest['lists'])} lists to {out} (seed {args.seed}; pools: {pools})")
    return 0


def check(args: argparse.Namespace) -> int:
    from imas.data.preflight import ABSENT_CLASSES, PRETRAINED, scan_run

    cfg = load_experiment(args.config, args.opt)
    # Training's preflight (imas.data.preflight.check_run), but every image decoded, every finding kept,
    # and duplicates and val overlap counted as problems rather than warnings.
    with_unlabeled = bool(cfg.data.unlabeled_split)
    scan = scan_run(cfg, with_unlabeled, decode_unlabeled=True, progress=print, progress_every_s=10)
    if not cfg.model.pretrained:
        print("model.pretrained: none set, the encoder starts from random weights")
    elif not any(finding.kind == PRETRAINED for finding in scan.findings):
        print(f"model.pretrained: {cfg.model.pretrained}: fills every tensor of {cfg.model.encoder}")
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
