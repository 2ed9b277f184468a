"""Pretrain the toy's backbone (a ResNet-18, or the small ViT vit_toy) on a classification task of its own:
the toy stand-in for ImageNet.

    python tools/toy_pretrain.py [--config exps/toy/imas.yaml] [--ensure]
    python tools/toy_pretrain.py --out data/toy/pretrained/resnet18_standard.pth --width 64 [--ensure]
    python tools/toy_pretrain.py --out data/toy/pretrained/vit_toy.pth --encoder vit_toy [--ensure]

`--config` (the default: exps/toy/imas.yaml) makes the backbone that config starts from: its
`model.pretrained` file, a ViT when its `model.encoder` is one (exps/toy/vit_*.yaml), else a ResNet-18 at its
`model.backbone_width`; `--out` with `--width` or `--encoder` name them instead.

Real semi-supervised segmentation always starts from ImageNet weights; the toy configs do the same with a
backbone pretrained here to classify six *other* shapes (star, hexagon, ellipse, L, chevron, crescent) drawn
like the toy objects (random colours and fills, gradient backgrounds): it learns edges, corners and curvature
but never sees a segmentation class or a toy label. ResNet-18 with the standard stem, global average pooling
and a linear head; AdamW with the poly schedule, fp32 (bf16 is emulated, and many times slower, on a CPU
without native bf16: see imas.precision.precision_warning); the images are generated in memory
(deterministic, ``imas.data.toy.make_pretrain_sample``). The backbone's state_dict (the standard-stem key
layout of ``model.pretrained``; the head is dropped) is written atomically, and the accuracy on held-out
images is printed and stored in a JSON file beside it. Its run time is in docs/performance.md.

A ViT (``--encoder vit_toy``, or a config whose model.encoder is a ViT) learns the same task from the same
images, classified by a linear head on the mean of its last block's normalised patch tokens, with AdamW and
the poly schedule like the ResNet, and its own defaults (--steps, --lr, weight decay: VIT_RECIPE). Its
state_dict is written in Meta's DINOv2 key layout (imas.models.vit, mask_token included), which
``imas.models.build_dpt(encoder, K, pretrained=path)`` loads with strict key checks.
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
from imas.models import ENCODERS
from imas.models.resnet import resnet18
from imas.models.vit import VIT_SIZES, VisionTransformer, vit
from imas.normalization import normalize
from imas.progress import ImageProgress
from imas.schedule import poly_lr

VERSION = "2"  # bump when the ResNet recipe below changes, so --ensure retrains
RESNET = "resnet18"  # the ResNet every ResNet config's file is made with
RESNET_RECIPE = {"steps": 400, "lr": 2e-3, "weight_decay": 1e-4}
# The ViT's recipe and its version (its own: changing it retrains ViT files only). Measured: docs/results.md,
# "A ViT on the toy".
VIT_VERSION = "vit-1"
VIT_RECIPE = {"steps": 1200, "lr": 1e-3, "weight_decay": 0.05}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", help="make the backbone this experiment starts from (default exps/toy/imas.yaml)"
    )
    p.add_argument("--out", help="where to write the backbone (instead of --config's model.pretrained)")
    p.add_argument("--images", type=int, default=6000, help="training images (default 6000)")
    p.add_argument("--val-images", type=int, default=600)
    p.add_argument("--size", type=int, default=48, help="image side in pixels (default 48)")
    p.add_argument(
        "--steps",
        type=int,
        help=f"iterations (default {RESNET_RECIPE['steps']}; a ViT: {VIT_RECIPE['steps']}) of --batch images",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, help=f"default {RESNET_RECIPE['lr']} ({VIT_RECIPE['lr']} for a ViT)")
    p.add_argument(
        "--width", type=int, help="ResNet-18 layer1 channels (instead of --config's model.backbone_width)"
    )
    p.add_argument(
        "--encoder",
        choices=[RESNET, *VIT_SIZES],
        help=f"with --out: the backbone to make (default {RESNET}; a ViT instead of --width)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensure", action="store_true", help="do nothing if --out was made with these settings")
    return resolve_target(p.parse_args(argv))


DEFAULT_CONFIG = "exps/toy/imas.yaml"


def resolve_target(args: argparse.Namespace) -> argparse.Namespace:
    """--out and --width (a ResNet) or --encoder (a ViT) from the config's model section unless given, then
    the recipe's defaults for what is not set; one sentence when the config cannot be read or names no
    backbone file. A ViT's args.width is None."""
    if args.config is not None and (args.out is not None or args.width is not None):
        raise UserError("give --config, or --out and --width, not both")
    if args.config is not None and args.encoder is not None:
        raise UserError("give --config, or --out and --encoder, not both")
    if args.width is not None and args.out is None:
        raise UserError("--width needs --out (without them both come from --config)")
    if args.encoder is not None and args.out is None:
        raise UserError("--encoder needs --out (without them both come from --config)")
    if args.out is not None:
        args.encoder = args.encoder or RESNET
        if is_vit(args) and args.width is not None:
            raise UserError(f"--width is the ResNet's layer1 width; {args.encoder} has none: leave it out")
        if not is_vit(args):
            args.width = 64 if args.width is None else args.width  # the toy's width before it was narrowed
    else:
        config = args.config or DEFAULT_CONFIG
        model = load_config(config).model
        if not model.pretrained:
            raise UserError(f"{config} sets no model.pretrained file for the backbone to be written to")
        # Any ResNet config starts from the ResNet-18 made here (as before ViTs existed).
        args.encoder = model.encoder if ENCODERS.get(model.encoder) == "vit" else RESNET
        args.out, args.width = model.pretrained, None if is_vit(args) else model.backbone_width
    recipe = VIT_RECIPE if is_vit(args) else RESNET_RECIPE
    args.steps = recipe["steps"] if args.steps is None else args.steps
    args.lr = recipe["lr"] if args.lr is None else args.lr
    return args


def is_vit(args: argparse.Namespace) -> bool:
    return args.encoder in VIT_SIZES


class Classifier(nn.Module):
    """Backbone + global average pooling + linear head: x [B, 3, H, W] -> logits [B, num_classes]."""

    def __init__(self, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.backbone = resnet18(output_stride=16, stem="standard", width=width)
        self.head = nn.Linear(self.backbone.channels[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[2].mean(dim=(2, 3)))


class ViTClassifier(nn.Module):
    """A ViT (a key of VIT_SIZES) + the mean of its last block's patch tokens after the final LayerNorm + a
    linear head: x [B, 3, H, W] (H, W multiples of the patch) -> logits [B, num_classes].

    Why the patch tokens' mean and not the class token: segmentation reads the normalised patch tokens (the
    DPT head, through imas.models.vit's forward), never the class token, so the classification gradient
    reaches exactly the features the head will be given, each place in the image alike; the class token is
    still trained, through attention, and saved."""

    def __init__(self, num_classes: int, encoder: str) -> None:
        super().__init__()
        self.backbone = vit(encoder)
        # The backbone's last output is its last block's (layers ends with depth - 1 in every size).
        assert self.backbone.size.layers[-1] == self.backbone.size.depth - 1
        self.head = nn.Linear(self.backbone.size.width, num_classes)
        local_attention_init(self.backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1].mean(dim=(2, 3)))


def sincos_positions(grid: int, width: int) -> torch.Tensor:
    """2-D sine-cosine position codes [grid * grid, width], row-major like the patch tokens: a quarter of the
    channels each for the sine and the cosine of the row and of the column, at frequencies
    10000^(-i / (width / 4)), i = 0 .. width / 4 - 1. Neighbouring patches get similar codes."""
    quarter = width // 4
    frequencies = 10000.0 ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # [width / 4]
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    angles_r = rows.reshape(-1, 1).float() * frequencies  # [grid * grid, width / 4]
    angles_c = cols.reshape(-1, 1).float() * frequencies
    return torch.cat([angles_r.sin(), angles_r.cos(), angles_c.sin(), angles_c.cos()], dim=1)


def local_attention_init(net: VisionTransformer, qk: float = 0.7, vo: float = 0.4) -> None:
    """Start `net` with attention that looks at similar, and through the position codes nearby, tokens:
    without it the toy's ViT did not learn the pretraining task (held-out accuracy at chance, 13-21 %,
    after 400-1500 steps at lr 3e-4 to 3e-3, with or without warmup, weight decay, sine-cosine positions
    or the class token as the feature; measured), as transformers on small data often do not.

    Mimetic initialisation (Trockman and Kolter, ICML 2023): per head, W_q^T W_k is the rank-(D / heads) part
    of qk * (Z + I) and, over all heads, W_proj W_v = vo * (Z' - I), Z and Z' with N(0, 1 / D) entries; the
    patch tokens' position embeddings are sincos_positions and the class token's zero. Everything stays
    trainable; only the starting point changes, and the file holds the trained weights as usual."""
    width, heads = net.size.width, net.size.heads
    if width % 4:
        raise ValueError(f"sine-cosine positions need a width divisible by 4, got {width}")
    head = width // heads
    eye = torch.eye(width)
    with torch.no_grad():
        net.pos_embed[0, 0].zero_()
        net.pos_embed[0, 1:] = sincos_positions(net.size.grid, width)
        for block in net.blocks:
            qkv = block.attn.qkv.weight  # [3 D, D]: the rows of q, then k, then v
            for h in range(heads):
                u, sigma, vh = torch.linalg.svd(qk * (torch.randn(width, width) / width**0.5 + eye))
                root = sigma[:head].sqrt()
                rows = slice(h * head, (h + 1) * head)
                qkv[:width][rows] = root[:, None] * u[:, :head].T  # q = root * U^T x
                qkv[width : 2 * width][rows] = root[:, None] * vh[:head]  # k = root * V^T x: q.k = x^T M y
            u, sigma, vh = torch.linalg.svd(vo * (torch.randn(width, width) / width**0.5 - eye))
            qkv[2 * width :] = sigma.sqrt()[:, None] * vh
            block.attn.proj.weight.copy_(u * sigma.sqrt())  # W_proj W_v = U S V^T


def make_images(seed: int, start: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 3, size, size] and labels [N] for sample indices start .. start + count - 1."""
    samples = [make_pretrain_sample(seed, i, size) for i in range(start, start + count)]
    images = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([s[1] for s in samples])


def settings(args: argparse.Namespace) -> dict:
    """What the file is made from, recorded in its JSON so that --ensure keeps it only when they agree (a ViT
    has its own version and names its encoder; a ResNet's record is as before ViTs existed)."""
    keys = ("images", "val_images", "size", "steps", "batch", "lr", "seed")
    if is_vit(args):
        return {"version": VIT_VERSION, "encoder": args.encoder} | {k: getattr(args, k) for k in keys}
    return {"version": VERSION} | {k: getattr(args, k) for k in (*keys, "width")}


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
    if is_vit(args):
        size = VIT_SIZES[args.encoder]
        name = f"ViT {args.encoder} (width {size.width}, {size.depth} blocks, patch {size.patch})"
    else:
        name = f"ResNet-18 width {args.width}"
    print(
        f"toy backbone: pretraining {name} on {args.images} generated images "
        f"({args.steps} steps of {args.batch}) for {args.out}",
        flush=True,
    )
    train_x, train_y = make_images(args.seed, 0, args.images, args.size)
    val_x, val_y = make_images(args.seed, args.images, args.val_images, args.size)
    print(
        f"generated {args.images} + {args.val_images} images in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    if is_vit(args):
        model: nn.Module = ViTClassifier(len(PRETRAIN_CLASSES), args.encoder)
        weight_decay = VIT_RECIPE["weight_decay"]
    else:
        model, weight_decay = Classifier(len(PRETRAIN_CLASSES), args.width), RESNET_RECIPE["weight_decay"]
    # Parameters that take no gradient (the ViT's mask_token) are left out: AdamW would still decay them.
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=weight_decay)
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
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    if is_vit(args) and args.size % VIT_SIZES[args.encoder].patch:
        patch = VIT_SIZES[args.encoder].patch
        raise UserError(f"--size {args.size} is not a multiple of {args.encoder}'s patch size {patch}")
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
