"""Loop pieces shared by every method: model and optimiser set-up, mixed precision, the optimiser step,
evaluation during training, checkpoint state and resume."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from imas.checkpoint import (
    code_version,
    floating_tensors,
    load_checkpoint,
    load_model_state,
    nonfinite_count,
    rng_state,
    save_checkpoint,
)
from imas.checkpoint import set_rng_state as restore_rng_state
from imas.config import Config, Precision, to_dict
from imas.dist import DistInfo
from imas.errors import CheckpointError
from imas.inference import evaluate
from imas.models import build_deeplabv3plus
from imas.schedule import build_optimizer

log = logging.getLogger("imas")

AUTOCAST_DTYPES = {Precision.fp32: None, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def build_model(cfg: Config, info: DistInfo, pretrained: bool = True) -> nn.Module:
    """The DeepLabv3+ of cfg.model on info.device; SyncBN when training on several CUDA devices."""
    m = cfg.model
    model = build_deeplabv3plus(
        m.backbone,
        cfg.data.num_classes,
        output_stride=m.output_stride,
        aux_head=m.aux_head,
        multi_grid=m.multi_grid,
        pretrained=(m.pretrained or None) if pretrained else None,
        stem=m.stem.value,
        decoder_channels=m.decoder_channels,
        backbone_width=m.backbone_width,
        # SyncBatchNorm has CUDA kernels only; on CPU (gloo) each process keeps its own statistics.
        sync_bn=m.sync_bn and info.distributed and info.device.type == "cuda",
    )
    model.to(info.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    backbone_params, decoder_params = model.param_groups()
    o = cfg.optim
    return build_optimizer(
        backbone_params, decoder_params, o.lr, o.momentum, o.weight_decay, o.decoder_lr_mult, o.kind.value
    )


def autocast_context(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16/fp16, disabled for fp32 (one code path for all precisions)."""
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def cpu_has_native(precision: Precision) -> bool:
    """True if this CPU has oneDNN kernels for `precision` (bf16: AVX512-BF16 or AMX; fp16: AVX512-FP16/AMX).

    Without them torch.autocast on the CPU emulates the low precision, which is far slower than fp32."""
    if precision is Precision.bf16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision is Precision.fp16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def cpu_description() -> str:
    """The CPU's vector ISA and whether it has native bf16, e.g. "AVX2, no native bf16": what decides how fast
    a CPU trains, and so what every benchmark record names."""
    native = "" if cpu_has_native(Precision.bf16) else "no "
    return f"{torch.backends.cpu.get_cpu_capability()}, {native}native bf16"


def precision_warning(precision: Precision, device: torch.device) -> str | None:
    """One sentence for the log when `precision` will be slow on `device`, else None.

    On a 2-core AVX2 CPU (no native bf16) the toy's training step took 4.32 s under bf16 autocast against
    0.239 s in fp32 (18x, tools/benchmark.py; README, Measured); on a CPU with native bf16 the toy's bf16 iMAS
    step was 13% faster than fp32."""
    if device.type != "cpu" or cpu_has_native(precision):
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        f"train.precision {precision.value} on this CPU ({capability}, no native {precision.value} kernels) "
        "is emulated and far slower than fp32 (18x for the toy's training step); "
        "use --opt train.precision=fp32"
    )


def make_grad_scaler(cfg: Config, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only; for fp32/bf16 the scaler is a pass-through."""
    return torch.amp.GradScaler(device.type, enabled=cfg.train.precision is Precision.fp16)


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Move the tensors of a collated batch to the device (images stay uint8 until normalised there)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def inference_options(cfg: Config) -> dict[str, Any]:
    """cfg.eval as the keyword arguments of imas.inference.predict / evaluate."""
    e = cfg.eval
    return {
        "mode": e.mode.value,
        "window": e.window,
        "stride": e.stride or None,
        "scales": e.scales,
        "flip": e.flip,
        "batch_size": e.batch_size,
    }


def evaluate_model(
    cfg: Config, model: nn.Module, loader: Any, device: torch.device, progress: bool = False
) -> Any:
    """Confusion matrix of `model` on the val loader with cfg.eval's mode, scales and flip (all ranks)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate(
            model,
            loader,
            num_classes=cfg.data.num_classes,
            device=device,
            **inference_options(cfg),
            autocast_dtype=AUTOCAST_DTYPES[cfg.train.precision],
            progress=progress,
        )
    finally:
        model.train(was_training)


def load_trained_model(
    cfg: Config, ckpt: dict[str, Any], checkpoint: str | Path, which: str, info: DistInfo
) -> tuple[nn.Module, str]:
    """The model of a training checkpoint `ckpt` (read from `checkpoint` by load_checkpoint), ready for
    inference (eval mode, on info.device).

    which: "teacher" or "student"; a supervised run's checkpoint has no teacher, so its "model" is used.
    Returns (model, the checkpoint key that was loaded). A checkpoint without those weights or with another
    class count than the config is a CheckpointError naming the file.
    """
    key = {"teacher": "teacher", "student": "model"}[which]
    if key not in ckpt and which == "teacher" and "model" in ckpt:
        key = "model"  # a supervised run: its only model
    if key not in ckpt:
        raise CheckpointError(f"checkpoint {checkpoint} holds no {which!r} weights")
    stored_classes = ckpt.get("config", {}).get("data", {}).get("num_classes")
    if stored_classes is not None and stored_classes != cfg.data.num_classes:
        raise CheckpointError(
            f"checkpoint {checkpoint} predicts {stored_classes} classes but the config has "
            f"data.num_classes {cfg.data.num_classes}"
        )
    model = build_model(cfg, info, pretrained=False)
    load_model_state(model, ckpt[key], checkpoint)
    model.eval()
    return model, key


# --------------------------------------------------------------------------------------------- state


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimiser steps taken
    best_miou: float = -1.0
    best_epoch: int = 0  # the epoch whose models best.pth holds; 0 = none yet
    # Result-changing settings accepted on a resume (--resume-anyway): [{"epoch", "iteration", "changes"}]
    resumed_with_changes: list[dict[str, Any]] = field(default_factory=list)


def gather_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state, so a resumed run continues each rank's random stream exactly."""
    state = rng_state()
    if not info.distributed:
        return [state]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


def save_training_state(
    path: Path,
    cfg: Config,
    state: TrainState,
    models: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None,
    rng_states: list[dict[str, Any]] | None,
) -> None:
    """Write a checkpoint (rank 0 only calls this). best.pth omits optimiser and RNG state."""
    payload: dict[str, Any] = {
        "epoch": state.epoch,
        "iteration": state.iteration,
        "best_miou": state.best_miou,
        "best_epoch": state.best_epoch,
        "resumed_with_changes": state.resumed_with_changes,
        "config": to_dict(cfg),
        "version": code_version(),
    }
    for name, model in models.items():
        payload[name] = model.state_dict()
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    if rng_states is not None:
        payload["rng"] = rng_states
    save_checkpoint(payload, path)


def nonfinite_state(
    models: dict[str, nn.Module], optimizer: torch.optim.Optimizer, info: DistInfo
) -> list[str]:
    """The names of the floating tensors of the state a checkpoint would save (every model's parameters
    and buffers, the optimiser's state) that hold NaN or infinity; [] when all are finite.

    Every rank checks its own copy and the verdict is all-reduced, so all ranks stop together: one host
    synchronisation per call. The names are only looked up on the rare failure."""
    state = {name: model.state_dict() for name, model in models.items()} | {
        "optimizer": optimizer.state_dict()["state"]
    }
    tensors = floating_tensors(state)
    count = nonfinite_count(list(tensors.values())).to(info.device, torch.float32)
    if info.distributed:
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
    if count.item() == 0:
        return []
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    return bad or ["a tensor on another process"]


def repair_best(best: Path, latest: Path, ckpt: dict[str, Any], state: TrainState) -> None:
    """Make best.pth hold the epoch that latest.pth (`ckpt`) names as best (rank 0, on resume).

    latest.pth is written before best.pth, and records the best epoch; a crash between the two writes
    leaves best.pth behind. The models of that epoch are then latest.pth's own, so best.pth is rebuilt
    from them exactly."""
    if state.best_epoch == 0:
        return  # nothing evaluated yet, or a checkpoint from before best epochs were recorded
    try:
        held = int(load_checkpoint(best, mmap=True)["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        held = None
    if held == state.best_epoch:
        return
    if state.best_epoch == state.epoch:
        save_checkpoint({k: v for k, v in ckpt.items() if k not in ("optimizer", "scaler", "rng")}, best)
        log.warning(
            "%s did not hold the best epoch %d (a stop between two checkpoint writes): rewritten from %s",
            best,
            state.best_epoch,
            latest,
        )
    else:
        log.warning(
            "%s does not hold the best epoch %d (mIoU %.2f), whose weights are no longer available",
            best,
            state.best_epoch,
            100 * state.best_miou,
        )


def resume_training_state(
    path: Path,
    ckpt: dict[str, Any],
    cfg: Config,
    info: DistInfo,
    models: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> TrainState:
    """Load latest.pth (`ckpt`, read from `path`) into the models, optimiser and scaler; restore this rank's
    RNG stream. The optimiser keeps the config's hyper-parameters (momentum, weight decay): a resume
    accepted with changed settings trains under the new ones."""
    stored_classes = ckpt.get("config", {}).get("data", {}).get("num_classes")
    if stored_classes is not None and stored_classes != cfg.data.num_classes:
        raise CheckpointError(
            f"checkpoint {path} was trained with {stored_classes} classes but the config has "
            f"data.num_classes {cfg.data.num_classes}; use another train.run_dir"
        )
    for name, model in models.items():
        key = name
        if name == "teacher" and name not in ckpt and "model" in ckpt:
            # A run without a teacher continued with one (--resume-anyway): the teacher starts as a copy of
            # the student, as it does at the start of training.
            log.warning("checkpoint %s has no teacher: the EMA teacher starts as a copy of the student", path)
            key = "model"
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} holds no {key!r} weights")
        load_model_state(model, ckpt[key], path)
    stored_kind = ckpt.get("config", {}).get("optim", {}).get("kind", cfg.optim.kind.value)
    hyper = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        if stored_kind == cfg.optim.kind.value:
            optimizer.load_state_dict(ckpt["optimizer"])
            for group, own in zip(optimizer.param_groups, hyper):
                group.update(own)
        else:
            log.warning("optim.kind changed from %s: the optimiser state starts afresh", stored_kind)
        scaler.load_state_dict(ckpt["scaler"])
        state = TrainState(
            int(ckpt["epoch"]),
            int(ckpt["iteration"]),
            float(ckpt["best_miou"]),
            int(ckpt.get("best_epoch", 0)),
            list(ckpt.get("resumed_with_changes", [])),
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a resumable training checkpoint ({exc})") from None
    rng = ckpt.get("rng", [])
    if len(rng) == info.world_size:
        restore_rng_state(rng[info.rank])
    else:
        log.warning(
            "checkpoint was written by %d processes, this run has %d: random streams restart from the seed",
            len(rng),
            info.world_size,
        )
    return state
