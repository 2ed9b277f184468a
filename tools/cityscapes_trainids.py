"""Convert Cityscapes gtFine labelIds PNGs to the trainIds PNGs the data readers expect.

    python tools/cityscapes_trainids.py ROOT [--overwrite]

Writes <name>_gtFine_labelTrainIds.png next to every ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png
(19 classes 0..18, 255 = ignore). Existing trainIds files are kept unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imas.data.cityscapes import convert_cityscapes
from imas.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cityscapes gtFine labelIds -> labelTrainIds PNGs.")
    parser.add_argument("root", help="Cityscapes root holding gtFine/ and leftImg8bit/")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing labelTrainIds files")
    args = parser.parse_args(argv)

    def progress(done: int, total: int, path: Path) -> None:
        if done == total or done % 100 == 0:
            print(f"\r{done}/{total} label files", end="\n" if done == total else "", flush=True)

    try:
        converted, skipped = convert_cityscapes(args.root, overwrite=args.overwrite, progress=progress)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"converted {converted} files, skipped {skipped} that already existed (use --overwrite to redo them)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
