"""Measure training-step and evaluation throughput and peak memory for a config's model; write JSON.

    python tools/benchmark.py --config exps/toy/suponly.yaml --backbone resnet50 --output-stride 16 \
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
            PNG + label PNG, full decode) and unlabeled (header only), with --threads reader threads.
Every speed claim in this project is measured with this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from imas.checkpoint import nonfinite_state, saved_state_tensors
from imas.config import Precision, load_config
from imas.dist import DistInfo
from imas.ema import EMATeacher
from imas.errors import UserError, user_message
from imas.hardness import instance_hardness
from imas.inference import normalize, predict
from imas.losses import build_supervised_loss
from imas.methods import METHODS
from imas.models import build_model
from imas.precision import (
    AUTOCAST_DTYPES,
    autocast_context,
    cpu_description,
    make_grad_scaler,
    optimizer_step,
)
from imas.schedule import make_optimizer


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
    modes = ["train", "eval", "both", "imas", "hardness", "state", "preflight"]
    p.add_argument("--mode", choices=modes, default="both")
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
    cfg = load_config(args.config, overrides + args.opt)
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
    model = build_model(cfg, info, pretrained=False)
    images = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, device=device)
    labels = torch.randint(0, k, (b, s, s), device=device)
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    base_rss = rss_mib()
    result: dict = {
        "config": args.config,
        "backbone": cfg.model.backbone,
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
        optimizer = make_optimizer(cfg, [model])
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

    if args.mode == "imas":
        result |= benchmark_imas_step(cfg, model, images, labels, device, args)
    if args.mode == "state":
        result |= benchmark_state_check(cfg, model, info, args)

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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or 'x86'}, {cpu_description()}, {os.cpu_count()} cores)"


def benchmark_imas_step(cfg, model, images, labels, device, args) -> dict:
    """Seconds per iMAS step and per supervised step on the same labeled batch, and their ratio."""
    cfg.train.method = "imas"
    cfg.imas.group_size = min(cfg.imas.group_size, images.shape[0])
    optimizer = make_optimizer(cfg, [model])
    scaler = make_grad_scaler(cfg, device)
    criterion = build_supervised_loss(
        cfg.loss.kind.value, cfg.loss.ohem_thresh, cfg.loss.ohem_min_kept, cfg.loss.aux_weight
    )
    imas = METHODS["imas"](cfg, {"model": model}, criterion, device)
    suponly = METHODS["supervised"](cfg, {"model": model}, criterion, device)
    nets = {"model": model}
    b = images.shape[0]
    labeled = {"image": images, "mask": labels}
    unlabeled = {
        "image": torch.randint(0, 256, images.shape, dtype=torch.uint8, device=device),
        "valid": torch.ones_like(labels, dtype=torch.bool),
        "index": torch.arange(b, device=device),
    }
    model.train()
    iteration = [0]

    def semi_step() -> None:
        optimizer_step(imas.step(nets, labeled, unlabeled).loss, optimizer, scaler)
        imas.teacher.update(model, iteration[0], epoch=1)  # past epoch 0: the EMA branch
        iteration[0] += 1

    def sup_step() -> None:
        optimizer_step(suponly.step(nets, labeled, None).loss, optimizer, scaler)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    semi = timed(semi_step, args.steps, args.warmup, device)
    out = {
        "imas_step_s": round(semi, 4),
        "imas_labeled_plus_unlabeled_images_per_s": round(2 * b / semi, 2),
    }
    if device.type == "cuda":
        out["imas_peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    sup = timed(sup_step, args.steps, args.warmup, device)
    out |= {"supervised_step_s": round(sup, 4), "imas_over_supervised": round(semi / sup, 2)}
    if device.type == "cuda":
        # The hardness alone on this step's shapes, as a share of the iMAS step.
        logits = torch.randn(b, cfg.data.num_classes, *images.shape[-2:], device=device)
        other = logits + torch.randn_like(logits)
        t = timed(
            lambda: instance_hardness(logits, other, cfg.imas.threshold), args.steps, args.warmup, device
        )
        out |= {"hardness_s": round(t, 5), "hardness_share_of_imas_step": round(t / semi, 4)}
    return out


def benchmark_state_check(cfg, model, info: DistInfo, args) -> dict:
    """Seconds for the pre-checkpoint finiteness check of student, teacher and optimiser state."""
    optimizer = make_optimizer(cfg, [model])
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()  # creates the momentum buffers that a checkpoint saves
    models = {"model": model, "teacher": EMATeacher(model, cfg.imas.ema_decay).module}
    tensors = list(saved_state_tensors(models, optimizer).values())
    seconds = timed(lambda: nonfinite_state(models, optimizer, info), args.steps, args.warmup, info.device)
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
    import tempfile

    from PIL import Image

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
    tau = cfg.imas.threshold
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
