"""Measure training-step and evaluation throughput and peak memory for a config's model; write JSON.

    python tools/benchmark.py --config exps/toy/suponly.yaml --backbone resnet50 --output-stride 16 \
        --crop 321 --batch 2 --precision bf16 --output bench.json

Inputs are random images and labels of the given crop (the data pipeline is not part of the measurement).
Train: one supervised step (forward, CE loss, backward, SGD step) per iteration. Eval: whole-image inference
at batch 1 on a crop-sized image. Every speed claim in this project is measured with this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imas.config import Precision, load_config  # noqa: E402
from imas.dist import DistInfo  # noqa: E402
from imas.engine import (  # noqa: E402
    AUTOCAST_DTYPES,
    autocast_context,
    build_model,
    build_sgd,
    make_grad_scaler,
    optimizer_step,
)
from imas.errors import UserError, user_message  # noqa: E402
from imas.inference import normalize, predict  # noqa: E402
from imas.losses import build_supervised_loss  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="exps/toy/suponly.yaml")
    p.add_argument("--backbone", default=None, help="overrides model.backbone")
    p.add_argument("--output-stride", type=int, default=None, help="overrides model.output_stride")
    p.add_argument("--crop", type=int, default=None, help="overrides data.crop_size")
    p.add_argument("--batch", type=int, default=None, help="overrides train.batch_size")
    p.add_argument("--precision", choices=[p.value for p in Precision], default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=10, help="timed iterations")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--mode", choices=["train", "eval", "both"], default="both")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--output", default=None, help="JSON file (also printed)")
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


def run(args: argparse.Namespace) -> dict:
    overrides = []
    for key, value in (
        ("model.backbone", args.backbone),
        ("model.output_stride", args.output_stride),
        ("data.crop_size", args.crop),
        ("train.batch_size", args.batch),
        ("train.precision", args.precision),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.channels_last:
        overrides.append("train.channels_last=true")
    cfg = load_config(args.config, overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if use_cuda else "cpu")
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    torch.manual_seed(0)
    model = build_model(cfg, info, pretrained=False)
    b, s, k = cfg.train.batch_size, cfg.data.crop_size, cfg.data.num_classes
    images = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, device=device)
    labels = torch.randint(0, k, (b, s, s), device=device)
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    base_rss = rss_mib()
    result: dict = {
        "config": args.config,
        "backbone": cfg.model.backbone,
        "output_stride": cfg.model.output_stride,
        "crop": s,
        "batch": b,
        "num_classes": k,
        "precision": cfg.train.precision.value,
        "channels_last": cfg.train.channels_last,
        "device": torch.cuda.get_device_name(device)
        if use_cuda
        else f"cpu ({platform.processor() or 'x86'})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
    }

    if args.mode in ("train", "both"):
        optimizer = build_sgd(cfg, model)
        scaler = make_grad_scaler(cfg, device)
        criterion = build_supervised_loss(
            cfg.loss.kind.value, cfg.loss.ohem_thresh, cfg.loss.ohem_min_kept, cfg.loss.aux_weight
        )
        model.train()

        def train_step() -> None:
            with autocast_context(cfg, device):
                outputs = model(normalize(images))
            optimizer_step(criterion(outputs, labels), optimizer, scaler)

        if use_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(train_step, args.steps, args.warmup, device)
        result["train_step_s"] = round(seconds, 4)
        result["train_images_per_s"] = round(b / seconds, 2)
        if use_cuda:
            result["train_peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["train_peak_rss_mib"] = round(rss_mib(), 1)
        del optimizer, scaler

    if args.mode in ("eval", "both"):
        model.eval()
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
