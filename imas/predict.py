"""Segment arbitrary images with a trained checkpoint: an index PNG and a colour overlay per image.

    imas-predict --checkpoint runs/toy/imas/best.pth --input photos/ --output predictions/
    imas-predict --checkpoint ... --input "shots/*.jpg" --mode sliding --opt eval.flip=true
    imas-predict --checkpoint ... --config exps/toy/imas.yaml --model student --input one.png

(`python predict.py` in a checkout runs the same.)

--input is a folder (its images, not recursive), a glob pattern or one file. The config defaults to the one
stored in the checkpoint; --opt overrides it (eval.mode, eval.window, eval.scales, eval.flip ...). For every
image <name>: <output>/<name>.png, the class indices as a palette PNG (pixel value = class, shown in the
dataset's colours), and <output>/<name>_overlay.jpg, the image blended with those colours.

Names: <name> is the input's stem (photo.jpg -> photo.png); inputs that share a stem, ignoring case, keep
their suffix (a.jpg -> a_jpg.png, a.png -> a_png.png) and a name still taken gets _2, _3 ..., so every
prediction has its own files and the count printed at the end is the number of files written.

Before any work: an --output folder that cannot be created or written, or where a prediction would replace
one of the inputs (e.g. --output equal to an --input folder holding photo.png), is refused in one sentence.

Images: read as a viewer shows them (EXIF orientation applied, so a phone photo's mask lies on the photo as
it is displayed); 16-bit images are scaled to 8 bits. An image whose long side is above
max(LARGE_SIDE = 2560, 2 x eval.window) px is predicted with sliding windows (eval.window) in tiles whose
float buffers stay within TILE_BYTES (1 GiB) plus the model's activations for eval.batch_size windows, with
the same labels as one sliding pass (windows across tile borders are run once per tile: up to ~2x the
windows); the log names each such image and shows progress per tile. Outside the tiles memory grows by
about 10 bytes a pixel (the decoded image, its labels and its overlay); docs/reliability.md gives the peak
measured for a 12000 x 12000 photo.

Images that cannot be read (corrupt, a float image, above Pillow's decompression-bomb limit, ...) are
skipped and listed with the reason at the end. Exit status: 0 when at least one prediction was written,
2 when none was or the command line, checkpoint or --output is wrong.
"""

from __future__ import annotations

import argparse
import glob
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from imas.checkpoint import load_checkpoint
from imas.config import Config, EvalMode, EvalModel, apply_override, from_dict, load_config, validate
from imas.data import palette
from imas.data.io import check_writable_dir, read_image
from imas.dist import DistInfo
from imas.errors import ConfigError, DataError, UserError, user_message
from imas.inference import inference_options, load_trained_model, normalize, predict, predict_labels_tiled
from imas.logging import Progress, setup_logging
from imas.precision import AUTOCAST_DTYPES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
OVERLAY_ALPHA = 0.5  # weight of the class colours in the overlay
# An image whose long side is above max(LARGE_SIDE, 2 x eval.window) is predicted with sliding windows,
# tile by tile, whatever eval.mode says: a whole-image pass of a 12000 x 12000 photo holds 21 x 12000 x 12000
# float probabilities (12 GB) besides the model's activations. 2560 keeps Cityscapes (2048 x 1024) and common
# photos on eval's path.
LARGE_SIDE = 2560
TILE_BYTES = 1 << 30  # float buffers of one tile of a large image (see tile_side)
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
    """Each input's output name (<output>/<name>.png and <name>_overlay.jpg), unique even where the file
    system ignores case.

    A stem that no other input shares (ignoring case) is the name: photo.jpg -> photo. Inputs that share a
    stem keep their suffix: a.jpg -> a_jpg, a.png -> a_png, A.bmp -> A_bmp. A name that is still taken (the
    same file name from two folders of a glob, or an input whose own stem is a_jpg) gets _2, _3 ...
    """
    stems = Counter(file.stem.lower() for file in files)
    used = {file.stem.lower() for file in files if stems[file.stem.lower()] == 1}
    names = []
    for file in files:
        if stems[file.stem.lower()] == 1:
            names.append(file.stem)
            continue
        wanted = f"{file.stem}_{file.suffix.lstrip('.')}" if file.suffix else file.stem
        name, n = wanted, 2
        while name.lower() in used:
            name, n = f"{wanted}_{n}", n + 1
        used.add(name.lower())
        names.append(name)
    return names


def output_paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    """The index PNG and the overlay JPEG written for one input."""
    return out_dir / f"{name}.png", out_dir / f"{name}_overlay.jpg"


def check_outputs(files: list[Path], names: list[str], out_dir: Path) -> None:
    """Refuse, before any work, an --output that cannot be written or where a prediction would replace an
    input (e.g. --output equal to --input holding photo.png): a UserError naming the folder or the file."""
    inputs = {}
    for file in files:
        stat = file.stat()
        inputs[(stat.st_dev, stat.st_ino)] = file  # the same file whatever its spelling, link or case
    for name in names:
        for path in output_paths(out_dir, name):
            if not path.exists():
                continue
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) in inputs:
                raise UserError(
                    f"--output {out_dir} would overwrite the input {inputs[(stat.st_dev, stat.st_ino)]} "
                    f"with its prediction; choose another --output folder"
                )
    check_writable_dir(out_dir, "--output")


def large_side(cfg: Config) -> int:
    """The long side (pixels) above which an image is predicted with sliding windows, tile by tile."""
    return max(LARGE_SIDE, 2 * cfg.eval.window)


def tile_side(cfg: Config) -> int:
    """The side of the output tiles of a large image: the largest (at least eval.window) whose float
    buffers fit in about TILE_BYTES: the windows' pixels (3 channels), the view's summed probabilities
    (K + 1) over the tile at the largest scale, and the resizes back to the tile plus the tile's total
    (4 K over the larger of the two)."""
    k, window, scale = cfg.data.num_classes, cfg.eval.window, max(cfg.eval.scales)

    def need(tile: int) -> float:
        view = math.ceil(scale * tile) + 2
        return 4 * (3 * (view + 2 * window) ** 2 + (k + 1) * view**2 + 4 * k * max(view, tile) ** 2)

    tile = window
    while need(tile + 32) <= TILE_BYTES:
        tile += 32
    return tile


def overlay(rgb: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The image blended with its class colours, uint8 [H, W, 3], computed in bands of rows: the float
    arithmetic of a whole 12000 x 12000 image at once would take ~10 GB."""
    out = np.empty_like(rgb)
    band = max(1, (1 << 22) // max(1, rgb.shape[1]))  # ~4M pixels per band
    for top in range(0, rgb.shape[0], band):
        rows = slice(top, top + band)
        mixed = (1 - OVERLAY_ALPHA) * rgb[rows] + OVERLAY_ALPHA * colours[labels[rows]]
        out[rows] = mixed.round().astype(np.uint8)
    return out


class Summary(NamedTuple):
    written: int  # predictions written (each to its own pair of files)
    skipped: list[str]  # one sentence per image that was not predicted
    upright: int  # images turned by their EXIF orientation before prediction


def run(args: argparse.Namespace) -> Summary:
    """Predict every input image; returns what was written and skipped."""
    setup_logging(None, is_main=True)
    files = find_images(args.input)
    names = output_names(files)
    out_dir = Path(args.output)
    check_outputs(files, names, out_dir)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = resolve_config(args, ckpt)
    use_cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cuda" if use_cuda else "cpu"))
    model, which = load_trained_model(cfg, ckpt, args.checkpoint, cfg.eval.model.value, info)
    colours = np.array(palette(cfg.data), dtype=np.uint8)
    flat_palette = colours.flatten().tolist()
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    options = inference_options(cfg)
    limit, tile = large_side(cfg), tile_side(cfg)
    log.info(
        "%d images, %s weights of %s, %s inference", len(files), which, args.checkpoint, cfg.eval.mode.value
    )
    progress = Progress(0, len(files))
    written, skipped, upright = 0, [], 0
    for done, (file, name) in enumerate(zip(files, names), start=1):
        try:
            image = read_image(file, exif_transpose=True)
        except DataError as exc:
            skipped.append(user_message(exc))  # the sentence names the file
            log.warning("skipped: %s", user_message(exc))
            continue
        upright += bool(image.info.get("exif_applied"))
        rgb = np.array(image)  # writable, so torch can share it
        del image  # one copy of a large image is enough
        h, w = rgb.shape[:2]
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        with torch.autocast(info.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if max(h, w) > limit:
                why = f"{file} is {w}x{h}, above {limit} px on its long side"
                log.info("%s: sliding windows of %d px in %d px tiles", why, options["window"], tile)
                sliding = {key: value for key, value in options.items() if key != "mode"}
                tiles = Progress(0, 0)

                def tile_done(done: int, total: int, tiles: Progress = tiles, name: str = file.name) -> None:
                    tiles.total = total
                    line = tiles.line(done).replace("it ", "tile ", 1).replace("it/s", "tiles/s")
                    log.info("  %s %s", name, line)

                labels = predict_labels_tiled(
                    model, x, tile, device=info.device, on_tile=tile_done, **sliding
                )[0].numpy()
            else:
                probs = predict(model, normalize(x.to(info.device)), **options)
                labels = probs.argmax(1)[0].to("cpu", torch.uint8).numpy()
                del probs
        index_path, overlay_path = output_paths(out_dir, name)
        index_png = Image.fromarray(labels.astype(np.uint8, copy=False), mode="P")
        index_png.putpalette(flat_palette)
        index_png.save(index_path)
        Image.fromarray(overlay(rgb, labels, colours)).save(overlay_path, quality=90)
        written += 1
        if done % 20 == 0 or done == len(files):
            log.info("predict %s", progress.line(done))
    return Summary(written, skipped, upright)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        written, skipped, upright = run(args)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    turned = f"; {upright} images turned upright by their EXIF orientation" if upright else ""
    print(
        f"wrote {written} predictions to {args.output} in {seconds:.1f} s; skipped {len(skipped)} images"
        + turned
    )
    for message in skipped:
        print(f"  skipped: {message}")
    if written == 0:
        print("error: no image could be read, nothing was written", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
