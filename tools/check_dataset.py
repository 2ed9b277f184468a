"""Check every file a config will read, and report all problems at once (training stops at the first).

    python tools/check_dataset.py exps/toy/imas.yaml [--opt data.root=...] [--max-listed 5]

For the labeled, unlabeled and val splits of the config: the split file reads; every image exists and
decodes; every label (labeled and val) exists, decodes, is a class-index image with values in
[0, data.num_classes) or 255, and has its image's size; no id is listed twice in a split, and none of the
val ids is also in the labeled or unlabeled split. Prints a summary per split and the first problems of each
kind; exit status 0 when clean, 1 when there are problems, 2 when the config itself is bad.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imas.config import load_config  # noqa: E402
from imas.data.io import check_same_size, read_image, read_label  # noqa: E402
from imas.data.layouts import resolve_entries  # noqa: E402
from imas.data.splits import read_split  # noqa: E402
from imas.errors import DataError, UserError, user_message  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-listed", type=int, default=5, help="problems printed per kind (default 5)")
    return p.parse_args(argv)


def problem_kind(message: str) -> str:
    """A short category for a DataError message, to group the report."""
    for needle, kind in (
        ("does not exist", "missing file"),
        ("cannot be read", "corrupt file"),
        ("colour image", "label not an index image"),
        ("contains value", "label value out of range"),
        ("but its image is", "image/label size mismatch"),
    ):
        if needle in message:
            return kind
    return "other"


def check_split(split: str, with_labels: bool, cfg, problems: dict[str, list[str]]) -> list[str]:
    """Check one split's files; append problems by kind; return its ids."""
    entries = resolve_entries(read_split(split), cfg.data, split)
    start = time.perf_counter()
    for done, (_, image_path, label_path) in enumerate(entries, start=1):
        try:
            image = read_image(image_path)
            if with_labels:
                check_same_size(image, read_label(label_path, cfg.data.num_classes), label_path)
        except DataError as exc:
            message = user_message(exc)
            problems[problem_kind(message)].append(message)
        if done % 500 == 0:
            print(
                f"  {split}: {done}/{len(entries)} files in {time.perf_counter() - start:.0f} s", flush=True
            )
    ids = [entry[0] for entry in entries]
    for image_id, count in Counter(ids).items():
        if count > 1:
            problems["id listed twice in a split"].append(f"{image_id} is listed {count} times in {split}")
    return ids


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.opt)
    d = cfg.data
    if not Path(d.root).is_dir():
        raise DataError(f"data root {d.root} does not exist (set data.root)")
    problems: dict[str, list[str]] = defaultdict(list)
    splits = {"labeled": (d.labeled_split, True), "unlabeled": (d.unlabeled_split, False)}
    splits["val"] = (d.val_split, True)
    ids: dict[str, set[str]] = {}
    for name, (split, with_labels) in splits.items():
        if not split:
            print(f"{name}: no split configured")
            continue
        before = sum(len(v) for v in problems.values())
        listed = check_split(split, with_labels, cfg, problems)
        ids[name] = set(listed)
        found = sum(len(v) for v in problems.values()) - before
        print(f"{name}: {split}: {len(listed)} entries, {found} problem(s)")
    for other in ("labeled", "unlabeled"):
        for image_id in sorted(ids.get("val", set()) & ids.get(other, set())):
            problems[f"val id also in {other}"].append(f"{image_id} is in both val and {other}")
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
