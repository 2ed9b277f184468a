"""Check any ResNet checkpoint against our backbones; write it in the layout model.pretrained reads.

    python tools/convert_pretrained.py FILE                       # report only
    python tools/convert_pretrained.py FILE --out pretrained/resnet50_torchvision.pth

FILE may be a torchvision or timm ResNet state_dict (standard 7x7 stem), a released deep-stem checkpoint, a
training checkpoint of a segmentation model (a "state_dict" / "model" entry, "module." / "model." /
"encoder." / "backbone." prefixes are unwrapped) or this project's own. The depth (ResNet-18/50/101) and stem
(deep/standard) are read from the keys unless --backbone / --stem say otherwise. The report lists, for that
backbone, how many of its tensors the file fills, which are missing or have another shape, and which keys of
the file it does not use (the ImageNet classifier fc.* is dropped). With --out, a file that fills every
backbone tensor is written (backbone keys only, and "written_by": "tools/convert_pretrained.py", which
model.pretrained ignores; atomically: a full disk leaves no half file); otherwise the exit status is 2 and
nothing is written. --out replaces only a file this tool wrote: the input, a run's own file and any other
existing file are refused, and so is an --out that cannot be written, before FILE is read (imas.outputs).
Bad input (a missing or unreadable file, a depth that cannot be told) is one sentence and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from imas.cli import run_command
from imas.data.io import check_writable_file
from imas.errors import UserError
from imas.models import BACKBONES, STEMS
from imas.models.pretrained import mismatch_hint, read_state_dict
from imas.outputs import MARK_KEY, check_output, write_atomic

COMMAND = "tools/convert_pretrained.py"  # the mark of the files it writes (imas.outputs)
BLOCKS_IN_LAYER3 = {2: "resnet18", 6: "resnet50", 23: "resnet101"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="write the backbone tensors here")
    p.add_argument("--backbone", choices=list(BACKBONES), default=None, help="default: read from the keys")
    p.add_argument("--stem", choices=list(STEMS), default=None, help="default: read from the keys")
    return p.parse_args(argv)


def guess(tensors: dict[str, torch.Tensor]) -> tuple[str | None, str]:
    """(backbone name or None, stem) from the keys of a ResNet state_dict."""
    stem = "deep" if "conv1.0.weight" in tensors else "standard"
    blocks = {int(k.split(".")[1]) for k in tensors if k.startswith("layer3.")}
    return BLOCKS_IN_LAYER3.get(len(blocks)), stem


def compare(tensors: dict[str, torch.Tensor], backbone: str, stem: str) -> dict[str, list[str]]:
    """Which tensors of the backbone the file fills, lacks or has in another shape; which keys it leaves."""
    expected = BACKBONES[backbone](output_stride=16, stem=stem).state_dict()
    required = [k for k in expected if not k.endswith("num_batches_tracked")]
    return {
        "filled": [k for k in required if k in tensors and tensors[k].shape == expected[k].shape],
        "missing": [k for k in required if k not in tensors],
        "wrong_shape": [k for k in required if k in tensors and tensors[k].shape != expected[k].shape],
        "unused": [k for k in tensors if k not in expected and not k.startswith("fc.")],
        "hint": [mismatch_hint(expected, tensors)],
    }


def check_out(out: Path, checkpoint: str) -> None:
    """Refuse, before FILE is read, an --out this tool may not replace or cannot write."""
    subject = f"--out {out}"
    check_output(out, COMMAND, subject, inputs={"checkpoint": checkpoint}, forceable=False)
    check_writable_file(out, "--out")


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_out(Path(args.out), args.checkpoint)
    tensors = read_state_dict(args.checkpoint)
    guessed, guessed_stem = guess(tensors)
    backbone, stem = args.backbone or guessed, args.stem or guessed_stem
    if backbone is None:
        raise UserError(
            f"cannot tell the ResNet depth of {args.checkpoint} from its keys (no layer3 blocks of "
            "ResNet-18/50/101); pass --backbone"
        )
    result = compare(tensors, backbone, stem)
    total = len(result["filled"]) + len(result["missing"]) + len(result["wrong_shape"])
    print(f"{args.checkpoint}: {len(tensors)} tensors; as {backbone} with the {stem} stem:")
    print(f"  fills {len(result['filled'])} of {total} backbone tensors")
    for name in ("missing", "wrong_shape", "unused"):
        keys = result[name]
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            print(f"  {name.replace('_', ' ')}: {len(keys)}, e.g. {', '.join(keys[:3])}{more}")
    complete = not result["missing"] and not result["wrong_shape"]
    if not complete:
        print(f"  does not fill this backbone: {result['hint'][0]}")
    if args.out is None:
        return 0 if complete else 2
    if not complete:
        raise UserError(f"nothing written to {args.out}: the file does not fill {backbone} ({stem})")
    out = Path(args.out)
    state = {k: tensors[k] for k in result["filled"]} | {MARK_KEY: COMMAND}
    write_atomic(out, lambda f: torch.save(state, f))
    print(f"wrote {out}: use model.backbone: {backbone}, model.stem: {stem}, model.pretrained: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
