"""Build VOC2012/SegmentationClassAug (the 10582-image augmented labels) from SBD and VOC's own labels.

    python tools/sbd_to_png.py --sbd data/benchmark_RELEASE/dataset --voc data/VOCdevkit/VOC2012 [--overwrite]

Writes <voc>/SegmentationClassAug/<id>.png (single-channel class-index PNGs) for every VOC
SegmentationClass/<id>.png and every SBD cls/<id>.mat that VOC does not label (VOC's fine labels win where
both exist). Needs scipy for the .mat files (`pip install scipy`). Existing files are kept unless
--overwrite is given, so an interrupted run can simply be started again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imas.data.sbd import convert_sbd
from imas.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sbd", required=True, help="SBD's dataset folder (holding cls/, train.txt, val.txt)"
    )
    parser.add_argument("--voc", required=True, help="the VOC2012 folder (holding SegmentationClass/)")
    parser.add_argument(
        "--overwrite", action="store_true", help="rewrite existing SegmentationClassAug files"
    )
    args = parser.parse_args(argv)

    def progress(done: int, total: int, path: Path) -> None:
        if done == total or done % 200 == 0:
            print(f"\r{done}/{total} label files", end="\n" if done == total else "", flush=True)

    try:
        written, skipped = convert_sbd(args.sbd, args.voc, overwrite=args.overwrite, progress=progress)
    except UserError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {written} label files, skipped {skipped} that already existed (use --overwrite to redo them)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
