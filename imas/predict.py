"""Segment arbitrary images with a trained checkpoint: an index PNG and a colour overlay per image.

    imas-predict --checkpoint runs/toy/imas/best.pth --input photos/   (-> runs/predictions/toy/imas/best/)
    imas-predict --checkpoint ... --input "shots/*.jpg" --mode sliding --opt eval.flip=true
    imas-predict --checkpoint ... --config exps/toy/imas.yaml --model student --input one.png
    imas-predict --checkpoint ... --input photos/ --alpha 0.7

(`python predict.py` in a checkout runs the same.)

--output defaults to runs/predictions/<the checkpoint's folder>_<its name> (runs/ is where training writes,
and git ignores it). --input is a folder (its images, not recursive), a glob pattern or one file. The config
defaults to the one stored in the checkpoint; --opt overrides it (eval.mode, eval.window, eval.scales,
eval.flip ...). For every image <name>: <output>/<name>.png, the class indices as a palette PNG (pixel value =
class, shown in the dataset's colours), and <output>/<name>_overlay.jpg, the image with its classes blended in
at --alpha (default 0.5; 0 = the photo alone, 1 = the colours alone). The background is not coloured: where
the dataset's class 0 is named "background" (VOC, the toy dataset, a class_names.txt that starts with it) its
pixels stay the photo's exactly; where class 0 is a class like any other (Cityscapes' "road") it is coloured
too. <output>/legend.png shows each class's index, colour and name (both the PNGs and the overlays use these
colours); it is written with the first prediction, and kept when a later run would draw the same legend.

Files already in --output: imas-predict replaces only what it wrote (its PNGs carry a text chunk, its
overlays a JPEG comment: imas.outputs). A user's own a.png or a_overlay.jpg where the input a.jpg's
prediction would go, or a legend.png it did not write, is refused before any work; --force replaces them
(never an input). Every file is written to a hidden temporary and renamed into place, so a full disk or a
stop leaves no half file.

The log names the checkpoint and the network first (e.g. "predicting 37 images with the teacher of
runs/x/best.pth (epoch 12, iteration 3000, val mIoU 47.23 at save time), whole inference on cpu"), and
stderr shows progress (images done / total, img/s, ETA): one line redrawn in place on a terminal, a plain
line every 10 s otherwise.

Names: <name> is the input's stem (photo.jpg -> photo.png); inputs that share a stem, ignoring case, keep
their suffix (a.jpg -> a_jpg.png, a.png -> a_png.png), and so does an input named like the legend
(legend.jpg -> legend_jpg.png); a name still taken gets _2, _3 ..., so every prediction has its own files
and the count printed at the end is the number of files written.

Before any work: an --output folder that cannot be created or written, or where a prediction would replace
one of the inputs (e.g. --output equal to an --input folder holding photo.png) or a file that imas-predict
did not write (without --force), is refused in one sentence; so is an --alpha outside [0, 1].

Images: read as a viewer shows them (EXIF orientation applied, so a phone photo's mask lies on the photo as
it is displayed); 16-bit images are scaled to 8 bits. An image whose long side is above
max(LARGE_SIDE = 2560, 2 x eval.window) px is predicted with sliding windows (eval.window) in tiles whose
float buffers stay within TILE_BYTES (1 GiB) plus the model's activations for eval.batch_size windows, with
the same labels as one sliding pass (windows across tile borders are run once per tile: up to ~2x the
windows); the log names each such image and shows progress per tile. Outside the tiles memory grows by
about 10 bytes a pixel (the decoded image, its labels and its overlay); docs/reliability.md gives the peak
measured for a 12000 x 12000 photo.

Images that cannot be read (corrupt, a float image, above Pillow's decompression-bomb limit, ...) and
broken symlinks among the inputs ("dangling symlink", "symlink loop") are skipped and listed with the reason
at the end. Exit status: 0 when at least one prediction was written,
2 when none was or the command line, checkpoint or --output is wrong.
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from imas.arguments import OVERLAY_ALPHA, parse_predict
from imas.checkpoint import load_checkpoint
from imas.cli import discard_new_folders, run_command
from imas.config import Config
from imas.data import class_names, palette
from imas.data.io import check_writable_dir, read_image
from imas.dist import DistInfo
from imas.errors import ConfigError, DataError, UserError, user_message
from imas.experiment import experiment_from_dict, load_experiment
from imas.inference import inference_options, predict, predict_labels_tiled
from imas.logging import Progress, setup_logging
from imas.networks import describe_model, load_trained_model
from imas.normalization import normalize
from imas.outputs import LEGEND_KEY, check_output, jpeg_mark, png_mark, write_atomic
from imas.precision import AUTOCAST_DTYPES
from imas.progress import ImageProgress

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LEGEND = "legend.png"  # in every --output folder: index, colour and name of each class
COMMAND = "imas-predict"  # the mark of every file it writes (imas.outputs)
LEGEND_ROW, LEGEND_SWATCH, LEGEND_MARGIN = 24, 18, 6  # pixels: a row per class, its swatch, the margins
# An image whose long side is above max(LARGE_SIDE, 2 x eval.window) is predicted with sliding windows,
# tile by tile, whatever eval.mode says: a whole-image pass of a 12000 x 12000 photo holds 21 x 12000 x 12000
# float probabilities (12 GB) besides the model's activations. 2560 keeps Cityscapes (2048 x 1024) and common
# photos on eval's path.
LARGE_SIDE = 2560
TILE_BYTES = 1 << 30  # float buffers of one tile of a large image (see tile_side)
log = logging.getLogger("imas")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (imas.arguments: parsed there without torch for `imas-predict --help`); --output
    defaults to runs/predictions/<run folder>_<checkpoint name>."""
    return parse_predict(argv)


def overlay_alpha(text: str) -> float:
    """--alpha as a number in [0, 1]; a ConfigError otherwise (checked before any work)."""
    try:
        alpha = float(text)
    except ValueError:
        alpha = float("nan")
    if not 0.0 <= alpha <= 1.0:  # also refuses nan
        raise ConfigError(
            f"--alpha {text} is not a number from 0 (the photo alone) to 1 (the class colours alone)"
        )
    return alpha


def input_candidates(spec: str) -> list[Path]:
    """What a folder (its image names), a file or a glob pattern names, broken symlinks included."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(spec))  # glob lists dangling links too


def broken_link(path: Path) -> str | None:
    """Why `path` is a symlink that leads to no file ("... is a dangling symlink ..."), else None."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symlink loop"
        return f"{path} is a dangling symlink (to {os.readlink(path)}, which does not exist)"
    return None


def find_inputs(spec: str) -> tuple[list[Path], list[str]]:
    """The images named by a folder, a glob pattern or a file, sorted, and one sentence per broken symlink
    among them (skipped: listed at the end of the run, not dropped without a word); a DataError when there
    is no image."""
    files, broken = [], []
    for path in input_candidates(spec):
        why = broken_link(path)
        if why is not None:
            broken.append(why)
        elif path.is_file():
            files.append(path)
    if not files:
        also = f"; {broken[0]}" if broken else ""  # e.g. a photo whose target was moved: say which
        raise DataError(f"--input {spec} names no image file (a folder, a glob pattern or a file){also}")
    return files, broken


def resolve_config(args: argparse.Namespace, ckpt: dict) -> Config:
    """--config, else the config the checkpoint stores, with --opt, --model and --mode applied; checked."""
    overrides = list(args.opt)
    if args.model:
        overrides.append(f"eval.model={args.model}")
    if args.mode:
        overrides.append(f"eval.mode={args.mode}")
    if args.config:
        return load_experiment(args.config, overrides)
    stored = ckpt.get("config")
    if not isinstance(stored, dict):
        raise ConfigError(f"checkpoint {args.checkpoint} stores no config; pass --config")
    return experiment_from_dict(stored, overrides)


def output_names(files: list[Path]) -> list[str]:
    """Each input's output name (<output>/<name>.png and <name>_overlay.jpg), unique even where the file
    system ignores case.

    A stem that no other input shares (ignoring case) is the name: photo.jpg -> photo. Inputs that share a
    stem keep their suffix: a.jpg -> a_jpg, a.png -> a_png, A.bmp -> A_bmp; so does an input whose stem is
    the legend's (legend.jpg -> legend_jpg), whose index PNG would otherwise be the legend. A name that is
    still taken (the same file name from two folders of a glob, or an input whose own stem is a_jpg) gets
    _2, _3 ...
    """
    reserved = Path(LEGEND).stem.lower()
    stems = Counter(file.stem.lower() for file in files)
    stems[reserved] += 1
    used = {file.stem.lower() for file in files if stems[file.stem.lower()] == 1} | {reserved}
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


def check_outputs(files: list[Path], names: list[str], out_dir: Path, force: bool = False) -> None:
    """Refuse, before any work, an --output that cannot be written, where a prediction would replace an
    input (e.g. --output equal to --input holding photo.png), or where one of its files would replace a file
    imas-predict did not write (unless `force`): a UserError naming the folder or the file."""
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
    for path in [out_dir / LEGEND, *(p for name in names for p in output_paths(out_dir, name))]:
        subject = f"--output {out_dir} holds {path.name}, which"
        check_output(
            path, COMMAND, subject, force=force, elsewhere="move it or choose another --output folder"
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


def background_classes(names: Sequence[str]) -> frozenset[int]:
    """The classes an overlay leaves as the photo: {0} when the dataset names class 0 "background" (VOC,
    the toy dataset, a custom class_names.txt starting with it), else none.

    Why: the background's palette colour is black, so blending it darkened every photo by --alpha; but a
    class 0 such as Cityscapes' "road" is a class to see, so the decision follows the dataset's names."""
    return frozenset({0}) if names and names[0].strip().lower() == "background" else frozenset()


def overlay(
    rgb: np.ndarray,
    labels: np.ndarray,
    colours: np.ndarray,
    alpha: float = OVERLAY_ALPHA,
    uncoloured: frozenset[int] = frozenset(),
) -> np.ndarray:
    """The image with its class colours blended in at `alpha`, uint8 [H, W, 3].

    Pixels of the `uncoloured` classes (the background, see background_classes) and labels without a colour
    (255, the ignore label of ground truths) keep the image's values exactly. Computed in bands of rows:
    the float arithmetic of a whole 12000 x 12000 image at once would take ~10 GB."""
    size = max(256, len(colours), int(labels.max(initial=0)) + 1)
    weight = np.zeros(size)  # per label: its colour's weight; 0 leaves the photo as it is
    weight[: len(colours)] = alpha
    weight[[c for c in uncoloured if c < size]] = 0.0
    lut = np.zeros((size, 3))
    lut[: len(colours)] = colours
    out = np.empty_like(rgb)
    band = max(1, (1 << 22) // max(1, rgb.shape[1]))  # ~4M pixels per band
    for top in range(0, rgb.shape[0], band):
        rows = slice(top, top + band)
        w = weight[labels[rows]][..., None]
        mixed = (1 - w) * rgb[rows] + w * lut[labels[rows]]
        out[rows] = mixed.round().astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------------ the legend


def legend_swatch_box(index: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of class `index`'s swatch in the legend image, its 1 px frame included."""
    top = LEGEND_MARGIN + index * LEGEND_ROW + (LEGEND_ROW - LEGEND_SWATCH) // 2
    return LEGEND_MARGIN, top, LEGEND_MARGIN + LEGEND_SWATCH, top + LEGEND_SWATCH


def legend_lines(names: Sequence[str], uncoloured: frozenset[int]) -> list[str]:
    """The text beside each swatch: index and name, and for the background that overlays leave it alone."""
    return [
        f"{i}  {name}" + ("  (not coloured in overlays)" if i in uncoloured else "")
        for i, name in enumerate(names)
    ]


def legend_image(names: Sequence[str], colours: np.ndarray, uncoloured: frozenset[int]) -> Image.Image:
    """One row per class: a swatch of its colour (a grey frame, so black and white swatches show on the
    white page) and 'index  name'."""
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    lines = legend_lines(names, uncoloured)
    text_left = LEGEND_MARGIN + LEGEND_SWATCH + 8
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = text_left + max((int(measure.textlength(t, font=font)) for t in lines), default=0) + LEGEND_MARGIN
    image = Image.new("RGB", (width, 2 * LEGEND_MARGIN + LEGEND_ROW * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for index, (colour, text) in enumerate(zip(colours, lines)):
        left, top, right, bottom = legend_swatch_box(index)
        draw.rectangle(
            (left, top, right - 1, bottom - 1), fill=tuple(int(v) for v in colour), outline=(128,) * 3
        )
        draw.text((text_left, top + LEGEND_SWATCH // 2), text, fill="black", font=font, anchor="lm")
    return image


def legend_shows(path: Path) -> str | None:
    """What a legend.png written by imas-predict shows (its text chunk), None for any other file."""
    try:
        with Image.open(path) as image:
            value = image.info.get(LEGEND_KEY)
    except Exception:  # a folder, not an image, a broken file: not ours whatever the reason
        return None
    return value if isinstance(value, str) else None


def write_legend(
    out_dir: Path, names: Sequence[str], colours: np.ndarray, uncoloured: frozenset[int]
) -> bool:
    """Write <out_dir>/legend.png unless it already shows these classes, colours and background; True when
    written. Through a temporary file and a rename, so an interrupted write leaves no half legend that a
    later run would take for a user's file. check_outputs has refused a legend.png that is not ours (unless
    --force)."""
    shows = json.dumps({"lines": legend_lines(names, uncoloured), "colours": colours.tolist()})
    path = out_dir / LEGEND
    if legend_shows(path) == shows:
        return False
    info = png_mark(COMMAND)
    info.add_text(LEGEND_KEY, shows)
    image = legend_image(names, colours, uncoloured)
    write_atomic(path, lambda f: image.save(f, format="PNG", pnginfo=info))
    return True


def write_predictions(
    paths: tuple[Path, Path], labels: np.ndarray, flat_palette: list[int], blended: np.ndarray
) -> None:
    """One input's index PNG (in the dataset's palette) and overlay JPEG, each marked as written by
    imas-predict and written atomically."""
    index_path, overlay_path = paths
    index_png = Image.fromarray(labels.astype(np.uint8, copy=False), mode="P")
    index_png.putpalette(flat_palette)
    write_atomic(index_path, lambda f: index_png.save(f, format="PNG", pnginfo=png_mark(COMMAND)))
    overlay_jpeg = Image.fromarray(blended)
    write_atomic(
        overlay_path, lambda f: overlay_jpeg.save(f, format="JPEG", quality=90, comment=jpeg_mark(COMMAND))
    )


class Summary(NamedTuple):
    written: int  # predictions written (each to its own pair of files)
    skipped: list[str]  # one sentence per image that was not predicted
    upright: int  # images turned by their EXIF orientation before prediction
    legend: Path | None = None  # the legend beside the predictions; None when nothing was written


def predict_image(
    model: torch.nn.Module, rgb: np.ndarray, file: Path, cfg: Config, info: DistInfo, progress: ImageProgress
) -> np.ndarray:
    """The class of every pixel of `rgb` (uint8 [H, W, 3], writable; read from `file`), uint8 [H, W]:
    eval's inference, or sliding windows tile by tile for an image above large_side."""
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    options = inference_options(cfg)
    limit = large_side(cfg)
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    with torch.autocast(info.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        if max(h, w) <= limit:
            probs = predict(model, normalize(x.to(info.device)), **options)
            return probs.argmax(1)[0].to("cpu", torch.uint8).numpy()
        tile = tile_side(cfg)
        progress.clear()
        log.info(
            "%s is %dx%d, above %d px on its long side: sliding windows of %d px in %d px tiles",
            file,
            w,
            h,
            limit,
            options["window"],
            tile,
        )
        sliding = {key: value for key, value in options.items() if key != "mode"}
        tiles = Progress(0, 0)

        def tile_done(done: int, total: int) -> None:
            tiles.total = total
            line = tiles.line(done).replace("it ", "tile ", 1).replace("it/s", "tiles/s")
            progress.clear()
            log.info("  %s %s", file.name, line)

        labels = predict_labels_tiled(model, x, tile, device=info.device, on_tile=tile_done, **sliding)
        return labels[0].numpy()


def run(args: argparse.Namespace) -> Summary:
    """Predict every input image; returns what was written and skipped."""
    setup_logging(None, is_main=True)
    alpha = overlay_alpha(args.alpha)
    files, broken = find_inputs(args.input)
    names = output_names(files)
    out_dir = Path(args.output)
    discard_new_folders(out_dir)  # a failure before the first prediction leaves no empty folder
    check_outputs(files, names, out_dir, args.force)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = resolve_config(args, ckpt)
    use_cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cuda" if use_cuda else "cpu"))
    model, which = load_trained_model(cfg, ckpt, args.checkpoint, cfg.eval.model, info)
    colours = np.array(palette(cfg.data), dtype=np.uint8)
    flat_palette = colours.flatten().tolist()
    classes = class_names(cfg.data)
    uncoloured = background_classes(classes)
    log.info(
        "predicting %d images with %s, %s inference on %s",
        len(files),
        describe_model(ckpt, args.checkpoint, which, cfg.eval.model),
        cfg.eval.mode.value,
        info.device.type,
    )
    log.info(
        "overlays at alpha %g, %s; classes and colours in %s",
        alpha,
        f"{classes[0]} left as the photo" if uncoloured else "every class coloured",
        out_dir / LEGEND,
    )
    progress = ImageProgress("predict", len(files))
    try:
        written, skipped, upright = 0, list(broken), 0
        for message in broken:
            log.warning("skipped: %s", message)
        for done, (file, name) in enumerate(zip(files, names), start=1):
            try:
                image = read_image(file, exif_transpose=True)
            except DataError as exc:
                skipped.append(user_message(exc))  # the sentence names the file
                progress.clear()
                log.warning("skipped: %s", user_message(exc))
                progress.update(done)
                continue
            upright += bool(image.info.get("exif_applied"))
            rgb = np.array(image)  # writable, so torch can share it
            del image  # one copy of a large image is enough
            labels = predict_image(model, rgb, file, cfg, info, progress)
            if written == 0 and write_legend(out_dir, classes, colours, uncoloured):
                progress.clear()
                log.info("wrote %s", out_dir / LEGEND)
            blended = overlay(rgb, labels, colours, alpha, uncoloured)
            write_predictions(output_paths(out_dir, name), labels, flat_palette, blended)
            written += 1
            progress.update(done)
    finally:
        progress.close()
    return Summary(written, skipped, upright, out_dir / LEGEND if written else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        start = time.perf_counter()
        written, skipped, upright, legend = run(args)
        seconds = time.perf_counter() - start
        turned = f"; {upright} images turned upright by their EXIF orientation" if upright else ""
        print(
            f"wrote {written} predictions to {args.output} in {seconds:.1f} s; skipped {len(skipped)} images"
            + turned
        )
        if legend is not None:
            print(f"  classes and colours: {legend}")
        for message in skipped:
            print(f"  skipped: {message}")
        if written == 0:
            raise UserError("no image could be read, nothing was written")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
