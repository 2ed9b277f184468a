"""Pretrain the toy's ResNet-18 backbone on a classification task of its own: the toy stand-in for ImageNet.

    python tools/toy_pretrain.py [--config exps/toy/imas.yaml] [--ensure]
    python tools/toy_pretrain.py --out data/toy/pretrained/resnet18_standard.pth --width 64 [--ensure]

`--config` (the default: exps/toy/imas.yaml) makes the backbone that config starts from: its
`model.pretrained` file at its `model.backbone_width`; `--out` and `--width` name them instead.

Real semi-supervised segmentation always starts from ImageNet weights; the toy configs do the same with a
backbone pretrained here to classify six *other* shapes (star, hexagon, ellipse, L, chevron, crescent) drawn
like the toy objects (random colours and fills, gradient backgrounds): it learns edges, corners and curvature
but never sees a segmentation class or a toy label. ResNet-18 with the standard stem, global average pooling
and a linear head; AdamW with the poly schedule, fp32 (bf16 is emulated, and many times slower, on a CPU
without native bf16: see imas.precision.precision_warning); the images are generated in memory
(deterministic, ``imas.data.toy.make_pretrain_sample``). The backbone's state_dict (the standard-stem key
layout of ``model.pretrained``; the head is dropped) is written atomically, and the accuracy on held-out
images is printed and stored in a JSON file beside it. Its run time is in docs/performance.md.
Exit status 0, or 2 with one sentence on stderr for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imas.cli import on_exit, run_command
from imas.config import load_config
from imas.data.io import check_writable_file
from imas.data.toy import PRETRAIN_CLASSES, make_pretrain_sample
from imas.errors import UserError
from imas.models.resnet import resnet18
from imas.normalization import normalize
from imas.progress import ImageProgress
from imas.schedule import poly_lr

VERSION = "2"  # bump when the recipe below changes, so --ensure retrains


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", help="make the backbone this experiment starts from (default exps/toy/imas.yaml)"
    )
    p.add_argument("--out", help="where to write the backbone (instead of --config's model.pretrained)")
    p.add_argument("--images", type=int, default=6000, help="training images (default 6000)")
    p.add_argument("--val-images", type=int, default=600)
    p.add_argument("--size", type=int, default=48, help="image side in pixels (default 48)")
    p.add_argument("--steps", type=int, default=400, help="iterations of batch --batch (default 400)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--width", type=int, help="ResNet-18 layer1 channels (instead of --config's model.backbone_width)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensure", action="store_true", help="do nothing if --out was made with these settings")
    return resolve_target(p.parse_args(argv))


DEFAULT_CONFIG = "exps/toy/imas.yaml"


def resolve_target(args: argparse.Namespace) -> argparse.Namespace:
    """--out and --width from the config's model section unless both are given; one sentence when the config
    cannot be read or names no backbone file."""
    if args.config is not None and (args.out is not None or args.width is not None):
        raise UserError("give --config, or --out and --width, not both")
    if args.width is not None and args.out is None:
        raise UserError("--width needs --out (without them both come from --config)")
    if args.out is not None:
        args.width = 64 if args.width is None else args.width  # the width of the toy before it was narrowed
        return args
    config = args.config or DEFAULT_CONFIG
    model = load_config(config).model
    if not model.pretrained:
        raise UserError(f"{config} sets no model.pretrained file for the backbone to be written to")
    args.out, args.width = model.pretrained, model.backbone_width
    return args


class Classifier(nn.Module):
    """Backbone + global average pooling + linear head: x [B, 3, H, W] -> logits [B, num_classes]."""

    def __init__(self, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.backbone = resnet18(output_stride=16, stem="standard", width=width)
        self.head = nn.Linear(self.backbone.channels[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[2].mean(dim=(2, 3)))


def make_images(seed: int, start: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 3, size, size] and labels [N] for sample indices start .. start + count - 1."""
    samples = [make_pretrain_sample(seed, i, size) for i in range(start, start + count)]
    images = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([s[1] for s in samples])


def settings(args: argparse.Namespace) -> dict:
    keys = ("images", "val_images", "size", "steps", "batch", "lr", "seed", "width")
    return {"version": VERSION} | {k: getattr(args, k) for k in keys}


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(normalize(x)).argmax(1) == y).sum())
            for x, y in zip(images.split(256), labels.split(256))
        )
    model.train()
    return correct / len(labels)


def pretrain(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    print(
        f"toy backbone: pretraining ResNet-18 width {args.width} on {args.images} generated images "
        f"({args.steps} steps of {args.batch}) for {args.out}",
        flush=True,
    )
    train_x, train_y = make_images(args.seed, 0, args.images, args.size)
    val_x, val_y = make_images(args.seed, args.images, args.val_images, args.size)
    print(
        f"generated {args.images} + {args.val_images} images in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    model = Classifier(len(PRETRAIN_CLASSES), args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    progress = ImageProgress("pretraining", args.steps, units=("steps", "steps/s"))
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(args.lr, step, args.steps)
        index = torch.randint(0, args.images, (args.batch,), generator=generator)
        x, y = train_x[index], train_y[index]
        flip = torch.rand(args.batch, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = F.cross_entropy(model(normalize(x)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.update(step + 1)
    result = settings(args) | {
        "train_accuracy": accuracy(model, train_x[:1000], train_y[:1000]),
        "val_accuracy": accuracy(model, val_x, val_y),
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(out.name + ".tmp")
    on_exit(temp)  # a stop while writing leaves no half file
    torch.save(model.backbone.state_dict(), temp)
    os.replace(temp, out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def check_args(args: argparse.Namespace) -> None:
    """Sizes that cannot train are one sentence, and so is an --out that cannot be written, before the
    work."""
    for name in ("images", "val_images", "size", "steps", "batch", "width"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    check_writable_file(Path(args.out), "--out")


def up_to_date(args: argparse.Namespace) -> bool:
    """Whether --out was made with these settings (its JSON record beside it says so)."""
    record = Path(args.out).with_suffix(".json")
    if not (Path(args.out).is_file() and record.is_file()):
        return False
    try:
        done = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(done, dict):
        return False
    done.setdefault("width", 64)  # records from before --width existed were all made at width 64
    return {k: done.get(k) for k in settings(args)} == settings(args)


def run(args: argparse.Namespace) -> None:
    check_args(args)
    if args.ensure and up_to_date(args):
        return
    result = pretrain(args)
    print(
        f"wrote {args.out}: held-out accuracy {100 * result['val_accuracy']:.1f}% on "
        f"{len(PRETRAIN_CLASSES)} shapes ({100 / len(PRETRAIN_CLASSES):.1f}% is chance) "
        f"in {result['seconds']} s"
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
