"""Measure training-step and evaluation throughput and peak memory for a config's model; write JSON.

    python tools/benchmark.py --config exps/toy_w64/suponly.yaml --backbone resnet50 --output-stride 16 \
        --crop 321 --batch 2 --precision bf16 --output bench.json

Inputs are random images and labels of the given crop (the data pipeline is not part of the measurement).
Modes:
  train     one supervised step (forward, CE loss, backward, SGD step) per iteration;
  eval      whole-image inference at batch 1 on a crop-sized image;
  both      train then eval (default);
  imas      one iMAS step (IMAS.step: teacher and student forwards, hardness, intensity view,
            CutMix, student forward/backward, EMA update) and, for the ratio, one supervised step on the
            same labeled batch;
  hardness  imas.hardness.instance_hardness on [batch, classes, crop, crop] logits vs a per-image NumPy
            reference on the host (what the released code did), e.g. --batch 16 --classes 21 --crop 513;
  state     the finiteness check run before every checkpoint write (imas.checkpoint.nonfinite_state) on the
            config's student, an EMA teacher and the optimiser's state after one step;
  preflight the data check training runs before its first iteration (imas.data.preflight), per entry, on
            generated files: VOC-size (500 x 375 JPEG + label PNG, full decode), Cityscapes-size (2048 x 1024
            PNG + label PNG, full decode) and unlabeled (header only), with --threads reader threads;
  data      samples per second of one loader worker (one process, one thread) with the project's own dataset
            class and weak transform, for a VOC-like sample (500 x 375 JPEG + label PNG, long side
            randint[250, 1000], 513 crop) and a Cityscapes-like one (2048 x 1024 PNG + label PNG, scale
            U[0.5, 2], 769 crop) on generated photo-like files, labeled and unlabeled, against what a GPU
            consumes (--target-step-s, --target-batch, --target-workers); --data-scale shrinks every size.
Every speed claim in this project is measured with this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from imas.checkpoint import nonfinite_state, saved_state_tensors
from imas.cli import run_command
from imas.config import Precision, to_dict
from imas.dist import DistInfo
from imas.experiment import experiment_from_dict, load_experiment
from imas.hardness import instance_hardness
from imas.inference import predict
from imas.methods import Progress
from imas.methods.imas import ImasSettings
from imas.models import build_model
from imas.normalization import normalize
from imas.precision import (
    AUTOCAST_DTYPES,
    cpu_description,
)
from imas.train import Trainer, build_trainer, train_step


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # full width: --backbone resnet50 then measures a real ResNet-50 (exps/toy narrows layer1 to 32)
    p.add_argument("--config", default="exps/toy_w64/suponly.yaml")
    p.add_argument("--backbone", default=None, help="overrides model.backbone")
    p.add_argument("--output-stride", type=int, default=None, help="overrides model.output_stride")
    p.add_argument("--crop", type=int, default=None, help="overrides data.crop_size")
    p.add_argument("--batch", type=int, default=None, help="overrides train.batch_size")
    p.add_argument("--precision", choices=[p.value for p in Precision], default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=10, help="timed iterations")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    modes = ["train", "eval", "both", "imas", "hardness", "state", "preflight", "data"]
    p.add_argument("--mode", choices=modes, default="both")
    p.add_argument(
        "--data-scale", type=float, default=1.0, help="data mode: every image size, crop and resize range x F"
    )
    p.add_argument("--target-step-s", type=float, default=0.27, help="data mode: the GPU step to feed")
    p.add_argument("--target-batch", type=int, default=16, help="data mode: labeled (= unlabeled) per step")
    p.add_argument("--target-workers", type=int, default=16, help="data mode: loader workers per GPU")
    p.add_argument("--classes", type=int, default=None, help="overrides data.num_classes")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--output", default=None, help="JSON file (also printed)")
    p.add_argument("--opt", nargs="*", action="extend", default=[], help="more config overrides, key=value")
    return p.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def step_times(
    fn: Callable[[], object], steps: int, warmup: int, device: torch.device
) -> tuple[list[float], float]:
    """Seconds of each of `steps` calls of fn (the device synchronised before and after each), after `warmup`
    untimed calls; and the seconds the warm-up took.

    Per-call times rather than one mean: a step whose shapes are new (an iMAS step's CutMix views vary the
    student's batch) pays cuDNN's autotuning or a recompilation once, and a median over the calls is not
    moved by it. The warm-up's seconds are kept because they hold that one-off cost (compilation above all).
    """
    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    warm = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, warm


def cuda_peak_mib(device: torch.device) -> float | None:
    """CUDA's peak allocated memory since the last reset (None on a CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def random_batches(
    batch: int, crop: int, num_classes: int, device: torch.device, channels_last: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A labeled and an unlabeled batch in the form the loaders deliver them (imas.data.loaders.to_device),
    random: uint8 images [B, 3, S, S], masks [B, S, S], the unlabeled images' valid maps and indices."""
    images = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (batch, crop, crop), device=device)
    weak = torch.randint(0, 256, images.shape, dtype=torch.uint8, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
        weak = weak.contiguous(memory_format=torch.channels_last)
    labeled = {"image": images, "mask": labels}
    unlabeled = {
        "image": weak,
        "valid": torch.ones_like(labels, dtype=torch.bool),
        "index": torch.arange(batch, device=device),
    }
    return labeled, unlabeled


def past_epoch_0(iteration: int) -> Progress:
    """The progress of a timed iteration: past epoch 0, so an EMA update takes its averaging branch."""
    return Progress(iteration, epoch=1, iters_per_epoch=1_000_000, epochs=2)


def method_step(
    cfg,
    labeled: dict[str, torch.Tensor],
    unlabeled: dict[str, torch.Tensor],
    device: torch.device,
) -> tuple[Callable[[], None], Trainer]:
    """One training iteration of cfg.train.method as imas.train runs it, on fixed batches: the trainer
    imas.train builds (networks without pretrained weights, optimiser, scaler, method) and its train_step
    (the method's step, the optimiser step under the gradient scaler, after_step: for iMAS the EMA update in
    its past-epoch-0 branch). Returns the step and the trainer."""
    torch.manual_seed(cfg.train.seed)  # the first network's weights, as the loop seeds them
    trainer = build_trainer(
        cfg, DistInfo(rank=0, world_size=1, local_rank=0, device=device), pretrained=False
    )
    batch_u = unlabeled if trainer.method.uses_unlabeled else None
    iteration = [0]

    def step() -> None:
        train_step(trainer, labeled, batch_u, past_epoch_0(iteration[0]))
        iteration[0] += 1

    return step, trainer


def run(args: argparse.Namespace) -> dict:
    overrides = []
    for key, value in (
        ("model.backbone", args.backbone),
        ("model.output_stride", args.output_stride),
        ("data.crop_size", args.crop),
        ("train.batch_size", args.batch),
        ("train.precision", args.precision),
        ("data.num_classes", args.classes),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.classes is not None:
        overrides.append("data.class_names=[]")  # the config's names belong to its own class count
    if args.channels_last:
        overrides.append("train.channels_last=true")
    cfg = load_experiment(args.config, overrides + args.opt)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if use_cuda else "cpu")
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    torch.manual_seed(0)
    b, s, k = cfg.train.batch_size, cfg.data.crop_size, cfg.data.num_classes
    if args.mode == "hardness":
        return benchmark_hardness(cfg, device, args) | {"device": device_name(device)}
    if args.mode == "preflight":
        return benchmark_preflight(args) | {"device": device_name(torch.device("cpu"))}
    if args.mode == "data":
        return benchmark_data(args) | {"device": device_name(torch.device("cpu"))}
    images = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, device=device)
    labels = torch.randint(0, k, (b, s, s), device=device)
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    base_rss = rss_mib()
    result: dict = {
        "config": args.config,
        "backbone": cfg.model.encoder,
        "stem": cfg.model.stem.value,
        "decoder_channels": cfg.model.decoder_channels,
        "backbone_width": cfg.model.backbone_width,
        "output_stride": cfg.model.output_stride,
        "crop": s,
        "batch": b,
        "num_classes": k,
        "precision": cfg.train.precision.value,
        "channels_last": cfg.train.channels_last,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
    }

    if args.mode in ("train", "both"):
        labeled = {"image": images, "mask": labels}
        train_step, _ = method_step(as_method(cfg, "supervised"), labeled, labeled, device)
        if use_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(train_step, args.steps, args.warmup, device)
        result["train_step_s"] = round(seconds, 4)
        result["train_images_per_s"] = round(b / seconds, 2)
        if use_cuda:
            result["train_peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["train_peak_rss_mib"] = round(rss_mib(), 1)
        del train_step

    if args.mode == "imas":
        result |= benchmark_imas_step(cfg, images, labels, device, args)
    if args.mode == "state":
        result |= benchmark_state_check(cfg, device, args)

    if args.mode in ("eval", "both"):
        model = build_model(cfg, info, pretrained=False).eval()
        one = images[:1]
        dtype = AUTOCAST_DTYPES[cfg.train.precision]

        def eval_step() -> None:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                predict(model, normalize(one)).argmax(1)

        if use_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(eval_step, args.steps, args.warmup, device)
        result["eval_image_s"] = round(seconds, 4)
        result["eval_images_per_s"] = round(1 / seconds, 2)
        if use_cuda:
            result["eval_peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["eval_peak_rss_mib"] = round(rss_mib(), 1)
    result["rss_before_mib"] = round(base_rss, 1)
    return result


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or 'x86'}, {cpu_description()}, {os.cpu_count()} cores)"


def imas_settings(cfg) -> ImasSettings:
    """The config's iMAS settings where it trains iMAS, else iMAS's defaults."""
    return cfg.method_settings if cfg.train.method == "imas" else ImasSettings()


def as_method(cfg, method: str, *overrides: str):
    """The same config trained by another method: that method's section is the config's own where it has
    it, else the defaults, then `overrides`."""
    return experiment_from_dict(to_dict(cfg), [f"train.method={method}", *overrides])


def benchmark_imas_step(cfg, images, labels, device, args) -> dict:
    """Seconds per iMAS step and per supervised step on the same labeled batch, and their ratio."""
    b = images.shape[0]
    labeled = {"image": images, "mask": labels}
    unlabeled = {
        "image": torch.randint(0, 256, images.shape, dtype=torch.uint8, device=device),
        "valid": torch.ones_like(labels, dtype=torch.bool),
        "index": torch.arange(b, device=device),
    }
    # CutMix groups no larger than the batch (the config's own iMAS section, or the defaults)
    imas_cfg = as_method(cfg, "imas", f"imas.group_size={min(imas_settings(cfg).group_size, b)}")
    semi_step, _ = method_step(imas_cfg, labeled, unlabeled, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    semi = timed(semi_step, args.steps, args.warmup, device)
    out = {
        "imas_step_s": round(semi, 4),
        "imas_labeled_plus_unlabeled_images_per_s": round(2 * b / semi, 2),
    }
    if device.type == "cuda":
        out["imas_peak_cuda_mib"] = cuda_peak_mib(device)
    del semi_step  # the supervised trainer is built once the iMAS one is gone: one resident model at a time
    sup_step, _ = method_step(as_method(cfg, "supervised"), labeled, unlabeled, device)
    sup = timed(sup_step, args.steps, args.warmup, device)
    out |= {"supervised_step_s": round(sup, 4), "imas_over_supervised": round(semi / sup, 2)}
    if device.type == "cuda":
        # The hardness alone on this step's shapes, as a share of the iMAS step.
        logits = torch.randn(b, cfg.data.num_classes, *images.shape[-2:], device=device)
        other = logits + torch.randn_like(logits)
        t = timed(
            lambda: instance_hardness(logits, other, imas_cfg.imas.threshold),
            args.steps,
            args.warmup,
            device,
        )
        out |= {"hardness_s": round(t, 5), "hardness_share_of_imas_step": round(t / semi, 4)}
    return out


def benchmark_state_check(cfg, device: torch.device, args) -> dict:
    """Seconds for the pre-checkpoint finiteness check of the iMAS student, teacher and optimiser state
    (after one step, which creates the momentum buffers a checkpoint saves)."""
    b, s = cfg.train.batch_size, cfg.data.crop_size
    labeled, unlabeled = random_batches(b, s, cfg.data.num_classes, device, cfg.train.channels_last)
    imas_cfg = as_method(cfg, "imas", f"imas.group_size={min(imas_settings(cfg).group_size, b)}")
    step, trainer = method_step(imas_cfg, labeled, unlabeled, device)
    step()
    models, optimizer = trainer.method.models, trainer.optimizer
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    tensors = list(saved_state_tensors(models, optimizer).values())
    seconds = timed(lambda: nonfinite_state(models, optimizer, info), args.steps, args.warmup, device)
    return {
        "mode": "state",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "checked_tensors": len(tensors),
        "checked_mib": round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 1),
        "state_check_s": round(seconds, 4),
    }


def benchmark_preflight(args) -> dict:
    """Seconds per entry of imas.data.preflight.scan_data for VOC-size, Cityscapes-size and unlabeled
    entries, on photo-like generated files (smooth colour fields with noise) in a temporary folder."""
    from imas.config import DataConfig
    from imas.data.preflight import scan_data

    rng = np.random.default_rng(0)

    def photo(h: int, w: int) -> Image.Image:
        coarse = rng.integers(0, 256, (h // 25 + 2, w // 25 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
        return Image.fromarray(np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8))

    def label(h: int, w: int) -> Image.Image:
        tiles = rng.integers(0, 21, (h // 32 + 1, w // 32 + 1)).astype(np.uint8)
        return Image.fromarray(np.kron(tiles, np.ones((32, 32), np.uint8))[:h, :w])

    counts = {"voc": args.steps * 20, "cityscapes": args.steps * 2}
    result: dict = {"mode": "preflight", "threads": args.threads or 1, "entries": counts}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "JPEGImages").mkdir()
        (root / "SegmentationClassAug").mkdir()
        lines: dict[str, list[str]] = {"voc": [], "cityscapes": []}
        for kind, (h, w, suffix) in {"voc": (375, 500, ".jpg"), "cityscapes": (1024, 2048, ".png")}.items():
            for i in range(counts[kind]):
                name = f"{kind}_{i:05d}"
                photo(h, w).save(root / "JPEGImages" / f"{name}{suffix}", quality=90)
                label(h, w).save(root / "SegmentationClassAug" / f"{name}.png")
                lines[kind].append(f"JPEGImages/{name}{suffix} SegmentationClassAug/{name}.png")
        for kind, entries in lines.items():
            (root / f"{kind}.txt").write_text("\n".join(entries) + "\n")
        (root / "one.txt").write_text(lines["voc"][0] + "\n")
        images = [line.split()[0] for line in lines["voc"]] * 10  # headers are cheap: read more of them
        (root / "unlabeled.txt").write_text("\n".join(images) + "\n")

        def seconds(labeled: str, unlabeled: str = "") -> float:
            cfg = DataConfig(
                root=str(root),
                labeled_split=str(root / labeled),
                unlabeled_split=str(root / unlabeled) if unlabeled else "",
                val_split=str(root / "one.txt"),
            )
            start = time.perf_counter()
            scan_data(cfg, with_unlabeled=bool(unlabeled), workers=args.threads or 1)
            return time.perf_counter() - start

        seconds("one.txt")  # warm-up: plugin imports, the first decodes
        one = min(seconds("one.txt") for _ in range(3))  # the fixed cost (a labeled and a val entry)
        for kind in ("voc", "cityscapes"):
            result[f"{kind}_ms_per_entry"] = round(1000 * (seconds(f"{kind}.txt") - one) / counts[kind], 2)
        unlabeled = seconds("one.txt", "unlabeled.txt") - one
        result["unlabeled_header_ms_per_entry"] = round(1000 * unlabeled / len(images), 3)
    return result


# ------------------------------------------------------------------------------------------ data loading

REPO = Path(__file__).resolve().parents[1]
VOC_CONFIG = REPO / "exps/pascal/blended/r101_1323/imas.yaml"
CITYSCAPES_CONFIG = REPO / "exps/cityscapes/r50_372/imas_os8.yaml"
CITYSCAPES_CITY = "aachen"


def synthetic_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_classes: int,
    border: int = 0,
    bands: bool = False,
    noise: float = 3.0,
) -> tuple[Image.Image, Image.Image]:
    """A photo-like RGB image and its class-index label ("L").

    Uniform noise compresses (and so decodes) far worse than a photo, and flat colour far better; what decides
    a loader's speed is the decoder's work per file, so the image is built like a photo: a smooth colour
    gradient, a dozen filled ellipses, boxes and polygons (each one class, softened by a blur), a
    low-frequency texture and sensor-like noise of standard deviation `noise`, which sets the file size
    (write_voc and write_cityscapes pick it so that the files are about as large as the datasets' own). The
    label holds each shape's class, with a `border`-pixel outline of 255 around each shape as VOC's labels
    have (0: none), on class 0, or with `bands` on horizontal bands of classes (sky, buildings, road: dense
    like Cityscapes' labels).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    start, slope_x, slope_y = (rng.uniform(-1, 1, (1, 1, 3)).astype(np.float32) for _ in range(3))
    base = 128 + 60 * start + 50 * slope_x * (xx / width)[..., None] + 50 * slope_y * (yy / height)[..., None]
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    label = Image.new("L", (width, height), 0)
    draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
    if bands:
        cuts = np.sort(rng.uniform(0.2, 0.8, 2)) * height
        for top, bottom, cls in ((0, cuts[0], 10), (cuts[0], cuts[1], 2), (cuts[1], height, 0)):
            colour = tuple(int(c) for c in rng.integers(40, 220, 3))
            draw_image.rectangle((0, int(top), width, int(bottom)), fill=colour)
            draw_label.rectangle((0, int(top), width, int(bottom)), fill=cls)
    for _ in range(12):
        w, h = (int(v) for v in rng.uniform(0.05, 0.5, 2) * (width, height))
        x, y = int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h)))
        box = (x, y, x + max(w, 1), y + max(h, 1))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cls = int(rng.integers(1, num_classes))
        kind = rng.integers(0, 3)
        if kind == 2:  # a polygon with 3-6 corners inside the box
            corners = [(int(rng.integers(box[0], box[2] + 1)), int(rng.integers(box[1], box[3] + 1)))]
            corners += [
                (int(rng.integers(box[0], box[2] + 1)), int(rng.integers(box[1], box[3] + 1)))
                for _ in range(rng.integers(2, 6))
            ]
            shape_image, shape_label = draw_image.polygon, draw_label.polygon
            where = corners
        else:
            shape_image = draw_image.ellipse if kind == 0 else draw_image.rectangle
            shape_label = draw_label.ellipse if kind == 0 else draw_label.rectangle
            where = box
        shape_image(where, fill=colour)
        shape_label(where, fill=cls, outline=255 if border else None, width=border or 1)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    coarse = rng.normal(0, 12, (height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    texture = np.stack(
        [
            np.asarray(Image.fromarray(coarse[..., c]).resize((width, height), Image.BICUBIC))
            for c in range(3)
        ],
        -1,
    )
    pixels = np.asarray(image, dtype=np.float32) + texture + rng.normal(0, noise, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), label


def write_voc(
    root: Path, ids: list[str], size: tuple[int, int], rng: np.random.Generator, num_classes: int = 21
) -> None:
    """VOC layout under `root`: JPEGImages/<id>.jpg (quality 90, as VOC's own JPEGs) and
    SegmentationClassAug/<id>.png of `size` (width, height), photo-like (synthetic_scene)."""
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        image, label = synthetic_scene(
            rng, size[1], size[0], num_classes, border=max(1, size[0] // 100), noise=16
        )
        image.save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        label.save(root / "SegmentationClassAug" / f"{image_id}.png")


def write_cityscapes(root: Path, ids: list[str], size: tuple[int, int], rng: np.random.Generator) -> None:
    """Cityscapes layout under `root`: leftImg8bit/train/<city>/<id>_leftImg8bit.png and
    gtFine/train/<city>/<id>_gtFine_labelTrainIds.png of `size` (width, height), photo-like."""
    images = root / "leftImg8bit" / "train" / CITYSCAPES_CITY
    labels = root / "gtFine" / "train" / CITYSCAPES_CITY
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        image, label = synthetic_scene(rng, size[1], size[0], 19, bands=True, noise=1.5)
        image.save(images / f"{image_id}_leftImg8bit.png")
        label.save(labels / f"{image_id}_gtFine_labelTrainIds.png")


def data_config(kind: str, root: Path, ids: list[str], scale: float):
    """The data section of the project's own VOC / Cityscapes config, reading `ids` under `root` (as labeled,
    unlabeled and val split), with every size and resize range times `scale`."""
    for name in ("labeled", "unlabeled", "val"):
        (root / f"{name}.txt").write_text("\n".join(ids) + "\n")
    cfg = load_experiment(
        VOC_CONFIG if kind == "voc" else CITYSCAPES_CONFIG,
        [f"data.root={root}", "model.pretrained="]
        + [f"data.{name}_split={root / f'{name}.txt'}" for name in ("labeled", "unlabeled", "val")],
    ).data
    cfg.crop_size = max(1, round(cfg.crop_size * scale))
    cfg.long_side = [max(1, round(v * scale)) for v in cfg.long_side]
    cfg.base_size = [max(1, round(v * scale)) for v in cfg.base_size]
    return cfg


def dataset_rates(cfg, samples: int) -> dict:
    """One worker's samples per second over the split files of `cfg` (imas.data.build_datasets): labeled
    (image, label, joint transform) and unlabeled (image, transform), each over `samples` draws after one
    untimed; and the milliseconds of each part of a labeled sample (image decode, label read and check,
    transform), which say where the time goes."""
    from imas.data import build_datasets
    from imas.data.io import read_image, read_label
    from imas.data.transforms import weak_transform

    datasets = build_datasets(cfg, with_unlabeled=True)
    assert datasets.unlabeled is not None
    rates = {}
    for name, dataset in (("labeled", datasets.labeled), ("unlabeled", datasets.unlabeled)):
        dataset[0]  # warm-up: plugin imports, first allocations
        torch.manual_seed(0)  # the same resize, flip and crop draws for both streams
        start = time.perf_counter()
        for i in range(samples):
            dataset[i % len(dataset)]
        rates[name] = samples / (time.perf_counter() - start)
    image_path, label_path = datasets.labeled.images[0], datasets.labeled.labels[0]
    image, label = read_image(image_path), read_label(label_path, cfg.num_classes)
    parts = {
        "read_image": lambda: read_image(image_path),
        "read_label": lambda: read_label(label_path, cfg.num_classes),
        "weak_transform": lambda: weak_transform(image, label, cfg),
    }
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    ms = {name: round(1000 * timed(fn, max(3, samples // 3), 1, cpu), 2) for name, fn in parts.items()}
    return {
        "image_kib": round(image_path.stat().st_size / 1024, 1),
        "label_kib": round(label_path.stat().st_size / 1024, 1),
        "labeled_samples_per_s": round(rates["labeled"], 2),
        "unlabeled_samples_per_s": round(rates["unlabeled"], 2),
        "ms_per_call": ms,
    }


def benchmark_data(args) -> dict:
    """Samples per second of one loader worker (one process, one thread) with the project's dataset class
    and weak transform (imas.data.SegmentationDataset) on generated files with a warm page cache, for
    VOC-like and Cityscapes-like samples; and whether `--target-workers` such workers feed a GPU step of
    `--target-step-s` seconds of `--target-batch` labeled + as many unlabeled images twice over (a loader
    that only just keeps up stalls the GPU whenever a slow sample comes, so twice the need is the target)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or 1)
    try:
        return data_rates_report(args)
    finally:
        torch.set_num_threads(threads)


def data_rates_report(args) -> dict:
    """benchmark_data's work, under the thread count it set."""
    scale = args.data_scale
    consumed = 2 * args.target_batch / args.target_step_s  # labeled + unlabeled samples per second
    margin = 2.0
    result: dict = {
        "mode": "data",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pillow": Image.__version__,
        "data_scale": scale,
        "page_cache": "warm (the files were just written); a cold disk or a network file system adds reads",
        "target": {
            "step_s": args.target_step_s,
            "batch": args.target_batch,
            "workers": args.target_workers,
            "margin": margin,
            "consumed_samples_per_s": round(consumed, 1),
            "needed_per_worker_samples_per_s": round(margin * consumed / args.target_workers, 1),
        },
    }
    kinds = {
        # kind: (image size (w, h), files, samples timed per stream, writer, file format)
        "voc": ((500, 375), 10, 10 * args.steps, write_voc, "JPEG quality 90"),
        "cityscapes": ((2048, 1024), 3, 3 * args.steps, write_cityscapes, "PNG"),
    }
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for kind, (full_size, files, samples, write, file_format) in kinds.items():
            root = Path(folder) / kind
            size = (max(8, round(full_size[0] * scale)), max(8, round(full_size[1] * scale)))
            prefix = f"{CITYSCAPES_CITY}_000000_" if kind == "cityscapes" else "2007_"
            ids = [f"{prefix}{i:06d}" for i in range(files)]
            write(root, ids, size, rng)
            cfg = data_config(kind, root, ids, scale)
            rates = dataset_rates(cfg, samples)
            labeled, unlabeled = rates["labeled_samples_per_s"], rates["unlabeled_samples_per_s"]
            mixed = 2 / (1 / labeled + 1 / unlabeled)  # a worker serving labeled and unlabeled samples alike
            delivered = args.target_workers * mixed
            if cfg.resize.value == "long_side":
                resize = f"long side randint{cfg.long_side}"
            else:
                resize = f"{cfg.base_size} x U{cfg.scale_range}"
            result[kind] = {
                "image": f"{size[0]} x {size[1]} {file_format}",
                "resize": resize,
                "crop": cfg.crop_size,
                "samples_per_stream": samples,
                **rates,
                "mixed_samples_per_s": round(mixed, 2),
                "workers_deliver_samples_per_s": round(delivered, 1),
                "meets_target_with_margin": delivered >= margin * consumed,
                # The shortest step of target_batch + target_batch images these workers feed twice over.
                "shortest_step_fed_with_margin_s": round(margin * 2 * args.target_batch / delivered, 3),
            }
    return result


def reference_hardness_numpy(student: np.ndarray, teacher: np.ndarray, threshold: float) -> np.ndarray:
    """Per-image, host-side hardness as the released code computed it (class-weighted, class 0 ignored):
    logits [B, K, H, W] float32 arrays -> hardness [B]."""
    out = []
    for s_logits, t_logits in zip(student, teacher):
        rho, maps, counts = [], [], []
        for logits in (s_logits, t_logits):
            e = np.exp(logits - logits.max(0, keepdims=True))
            prob = e / e.sum(0, keepdims=True)
            rho.append(float((prob.max(0) >= threshold).mean()))
            maps.append(prob.argmax(0))
        k = s_logits.shape[0]
        conf = np.bincount((maps[0] * k + maps[1]).ravel(), minlength=k * k).reshape(k, k)
        n_s, n_t, inter = conf.sum(1), conf.sum(0), np.diag(conf)
        union = n_s + n_t - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        for n in (n_s, n_t):
            counts.append(n.astype(np.float64).copy())
            counts[-1][0] = 0
        w = [c / c.sum() if c.sum() > 0 else c for c in counts]
        e_img = 0.5 * (rho[1] * (w[1] * iou).sum() + rho[0] * (w[0] * iou).sum())
        out.append(1.0 - e_img)
    return np.array(out)


def benchmark_hardness(cfg, device: torch.device, args) -> dict:
    """instance_hardness (batched, on `device`) vs the per-image NumPy reference (host), same logits."""
    b, k, s = cfg.train.batch_size, cfg.data.num_classes, cfg.data.crop_size
    gen = torch.Generator().manual_seed(0)
    teacher = 3 * torch.randn(b, k, s, s, generator=gen)
    student = teacher + 2 * torch.randn(b, k, s, s, generator=gen)
    tau = imas_settings(cfg).threshold
    t_dev, s_dev = teacher.to(device), student.to(device)
    batched = timed(lambda: instance_hardness(s_dev, t_dev, tau), args.steps, args.warmup, device)
    s_np, t_np = student.numpy(), teacher.numpy()
    reference = timed(lambda: reference_hardness_numpy(s_np, t_np, tau), max(1, args.steps // 5), 1, device)
    diff = float(
        (
            instance_hardness(s_dev, t_dev, tau).cpu().double()
            - torch.from_numpy(reference_hardness_numpy(s_np, t_np, tau))
        )
        .abs()
        .max()
    )
    return {
        "mode": "hardness",
        "logits_shape": [b, k, s, s],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batched_s": round(batched, 4),
        "per_image_numpy_s": round(reference, 4),
        "speedup": round(reference / batched, 2),
        "max_abs_difference": diff,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: write_result(run(args), args.output))


def write_result(result: dict, output: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
