"""Segment arbitrary images with a trained checkpoint: an index PNG and a colour overlay per image.

    python predict.py --checkpoint runs/toy/imas/best.pth --input photos/ --output predictions/
    python predict.py --checkpoint ... --input "shots/*.jpg" --mode sliding --opt eval.flip=true
    python predict.py --checkpoint ... --config exps/toy/imas.yaml --model student --input one.png

--input is a folder (its images, not recursive), a glob pattern or one file. The config defaults to the one
stored in the checkpoint; --opt overrides it (eval.mode, eval.window, eval.scales, eval.flip ...). For every
image <name>: <output>/<name>.png, the class indices as a palette PNG (pixel value = class, shown in the
dataset's colours), and <output>/<name>_overlay.jpg, the image blended with those colours. Images that cannot
be read are reported and skipped; the run ends with a count of both and exits non-zero if nothing was written.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imas.checkpoint import load_checkpoint
from imas.config import Config, EvalMode, EvalModel, apply_override, from_dict, load_config, validate
from imas.data import palette
from imas.dist import DistInfo
from imas.engine import AUTOCAST_DTYPES, inference_options, load_trained_model
from imas.errors import ConfigError, DataError, UserError, user_message
from imas.inference import normalize, predict
from imas.logging import Progress, setup_logging

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
OVERLAY_ALPHA = 0.5  # weight of the class colours in the overlay
log = logging.getLogger("imas")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="latest.pth or best.pth of a run")
    parser.add_argument("--input", required=True, help="folder, glob pattern or image file")
    parser.add_argument("--output", default="predictions", help="folder for the PNGs and overlays")
    parser.add_argument("--config", default=None, help="default: the config stored in the checkpoint")
    parser.add_argument(
        "--model", choices=[m.value for m in EvalModel], default=None, help="default: eval.model"
    )
    parser.add_argument(
        "--mode", choices=[m.value for m in EvalMode], default=None, help="default: eval.mode"
    )
    parser.add_argument(
        "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return parser.parse_args(argv)


def find_images(spec: str) -> list[Path]:
    """The images named by a folder, a glob pattern or a file, sorted; a DataError when there are none."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    if not files:
        raise DataError(f"--input {spec} names no image file (a folder, a glob pattern or a file)")
    return files


def resolve_config(args: argparse.Namespace, ckpt: dict) -> Config:
    overrides = list(args.opt)
    if args.model:
        overrides.append(f"eval.model={args.model}")
    if args.mode:
        overrides.append(f"eval.mode={args.mode}")
    if args.config:
        return load_config(args.config, overrides)
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise ConfigError(f"checkpoint {args.checkpoint} stores no config; pass --config")
    cfg = from_dict(stored)
    for override in overrides:
        apply_override(cfg, override)
    validate(cfg)
    return cfg


def output_names(files: list[Path]) -> list[str]:
    """Each file's stem, made unique with _2, _3 ... when several inputs share one (e.g. from a glob)."""
    seen: dict[str, int] = {}
    names = []
    for file in files:
        seen[file.stem] = seen.get(file.stem, 0) + 1
        names.append(file.stem if seen[file.stem] == 1 else f"{file.stem}_{seen[file.stem]}")
    return names


def run(args: argparse.Namespace) -> tuple[int, list[str]]:
    """Predict every input image; returns (images written, messages about the skipped ones)."""
    setup_logging(None, is_main=True)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = resolve_config(args, ckpt)
    files = find_images(args.input)
    use_cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cuda" if use_cuda else "cpu"))
    model, which = load_trained_model(cfg, ckpt, args.checkpoint, cfg.eval.model.value, info)
    colours = np.array(palette(cfg.data), dtype=np.uint8)
    flat_palette = colours.flatten().tolist()
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    log.info(
        "%d images, %s weights of %s, %s inference", len(files), which, args.checkpoint, cfg.eval.mode.value
    )
    progress = Progress(0, len(files))
    written, skipped = 0, []
    for done, (file, name) in enumerate(zip(files, output_names(files)), start=1):
        try:
            with Image.open(file) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            skipped.append(f"{file}: {type(exc).__name__}: {exc}")
            log.warning("skipped %s: cannot be read as an image (%s)", file, type(exc).__name__)
            continue
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].to(info.device)
        with torch.autocast(info.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            probs = predict(model, normalize(x), **inference_options(cfg))
        labels = probs.argmax(1)[0].to("cpu", torch.uint8).numpy()
        index_png = Image.fromarray(labels, mode="P")
        index_png.putpalette(flat_palette)
        index_png.save(out_dir / f"{name}.png")
        overlay = (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colours[labels]
        Image.fromarray(overlay.round().astype(np.uint8)).save(out_dir / f"{name}_overlay.jpg", quality=90)
        written += 1
        if done % 20 == 0 or done == len(files):
            log.info("predict %s", progress.line(done))
    return written, skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        written, skipped = run(args)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"wrote {written} predictions to {args.output} in {seconds:.1f} s; skipped {len(skipped)} images")
    for message in skipped:
        print(f"  skipped {message}")
    if written == 0:
        print("error: no image could be read, nothing was written", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
