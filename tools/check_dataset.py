"""Check every file a config will read, and report all problems at once (training stops at the first).

    python tools/check_dataset.py exps/toy/imas.yaml [--opt data.root=...] [--max-listed 5]

For the labeled, unlabeled and val splits of the config: the split file reads; every image exists and
decodes; every label (labeled and val) exists, decodes, is a class-index image with values in
[0, data.num_classes) or 255, and has its image's size; the labels of a split are not all 255 (ignore); no id
is listed twice in a split, and none of the val ids is also in the labeled or unlabeled split. Warns (without
failing) when some of the data.num_classes classes appear in no labeled or val label. Prints a summary per
split and the first problems of each kind; exit status 0 when clean, 1 when there are problems, 2 when the
config itself is bad. The checks are training's preflight (imas.data.preflight), made exhaustive.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from imas.config import load_config
from imas.data.preflight import ABSENT_CLASSES, scan_data
from imas.errors import UserError, user_message


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-listed", type=int, default=5, help="problems printed per kind (default 5)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.opt)
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


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
