"""Atomic, self-describing checkpoints that `torch.load(weights_only=True)` accepts, and the training state
they hold: what is saved, the finiteness check before a save, resume, and the best.pth repair."""

from __future__ import annotations

import logging
import os
import random
import subprocess
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import imas
from imas.config import Config, to_dict
from imas.dist import DistInfo
from imas.errors import CheckpointError, failure_reason

log = logging.getLogger("imas")


def code_version() -> str:
    """Package version plus the git commit when run from a checkout (for the checkpoint's provenance)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{imas.__version__}+{commit}" if commit else imas.__version__


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA) and Python RNG states, in types that weights_only loading accepts."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def rng_untouched() -> Iterator[None]:
    """Whatever runs inside draws from the RNG streams without moving them: evaluation (its loader's base
    seed, a panel) leaves training's random stream, and so the trained weights, as they were."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint.

    A failed write (a full disk, a quota, a read-only folder) removes the temporary file, keeps the previous
    checkpoint and is one CheckpointError naming the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        kept = "the previous one is kept" if path.is_file() else "no earlier one exists"
        raise CheckpointError(
            f"checkpoint {path} could not be written ({failure_reason(exc, path.parent)}); {kept}; "
            "free space or fix the folder, then start the same command again to resume"
        ) from None


def floating_tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every floating-point tensor in a nested dict/list state (a checkpoint payload), by dotted name."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point():
            found[prefix.rstrip(".")] = tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            found |= floating_tensors(value, f"{prefix}{key}.")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            found |= floating_tensors(value, f"{prefix}{index}.")
    return found


def nonfinite_count(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The number of `tensors` holding a NaN or infinity, as a 0-dim tensor left on the device (no sync).

    One max-abs norm per tensor, fused per (device, dtype) by torch._foreach_norm (the kernel that
    clip_grad_norm_ uses): the inf-norm propagates NaN and cannot overflow, unlike a sum of squares, so
    very large but finite weights are not mistaken for infinite ones."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
    for tensor in tensors:
        if tensor.numel():
            groups[(tensor.device, tensor.dtype)].append(tensor.detach())
    counts = []
    for (device, _), group in groups.items():
        norms = torch.stack([n.float() for n in torch._foreach_norm(group, float("inf"))])
        counts.append((~torch.isfinite(norms)).sum().to(device))
    if not counts:
        return torch.zeros((), dtype=torch.long)
    first = counts[0].device
    return torch.stack([c.to(first) for c in counts]).sum()


def load_checkpoint(path: str | os.PathLike[str], mmap: bool = False) -> dict[str, Any]:
    """Load on the CPU with weights_only=True; a missing or unreadable file is a CheckpointError.

    mmap: map the tensors instead of reading them, for a cheap look at the entries that are not weights."""
    path = Path(path)
    if path.is_dir():  # e.g. the run directory: "does not exist" would send the user looking for it
        inside = sorted(path.glob("*.pth"))
        example = f" such as {inside[0]}" if inside else ""
        raise CheckpointError(
            f"checkpoint {path} is a folder, not a file; give the path of a .pth file{example}"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"checkpoint {path} could not be read ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dictionary")
    return state


def load_model_state(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | os.PathLike
) -> None:
    """Load a full model state strictly; a class-count or architecture mismatch is one clear sentence."""
    own = model.state_dict()
    for key, tensor in state_dict.items():
        if key in own and own[key].shape != tensor.shape:
            if key.endswith("classifier.weight") or key.endswith("classifier.bias"):
                raise CheckpointError(
                    f"checkpoint {path} predicts {tensor.shape[0]} classes "
                    f"but the config has {own[key].shape[0]}"
                )
            raise CheckpointError(
                f"checkpoint {path} does not fit the model: {key} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise CheckpointError(
            f"checkpoint {path} does not fit the model ({len(missing)} missing and {len(unexpected)} "
            f"unexpected tensors, e.g. {example}); check model.encoder, model.aux_head, model.stem and "
            "model.representation"
        )
    model.load_state_dict(state_dict)


# ------------------------------------------------------------------------- training state and resume


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimiser steps taken
    best_miou: float = -1.0
    best_epoch: int = 0  # the epoch whose models best.pth holds; 0 = none yet
    # Result-changing settings accepted on a resume (--resume-anyway): [{"epoch", "iteration", "changes"}]
    resumed_with_changes: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0  # seconds of training up to this state, over every attempt that led to it
    # SHA-256 of the split files this state trained on, by key (imas.data.datasets.split_digests)
    split_digests: dict[str, str] = field(default_factory=dict)


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
    method_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint (rank 0 only calls this). best.pth omits optimiser, RNG and method state
    (`method_state`: what the method keeps that is not a network, e.g. memory queues)."""
    payload: dict[str, Any] = {
        "epoch": state.epoch,
        "iteration": state.iteration,
        "best_miou": state.best_miou,
        "best_epoch": state.best_epoch,
        "resumed_with_changes": state.resumed_with_changes,
        "wall_s": state.wall_s,
        "config": to_dict(cfg),
        "split_digests": state.split_digests,
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
    if method_state:
        payload["method_state"] = method_state
    save_checkpoint(payload, path)


def method_state(path: Path, ckpt: dict[str, Any], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The method's own state in latest.pth (`ckpt`, read from `path`), checked against the `fresh` state a
    new method holds: the same names and shapes, or one CheckpointError sentence. A checkpoint without it
    (a method that keeps none, or a run resumed as another method with --resume-anyway) gives `fresh`."""
    stored = ckpt.get("method_state")
    if not fresh:
        return {}
    if stored is None:
        log.warning("checkpoint %s holds no method state: it starts afresh", path)
        return fresh
    shapes = {k: tuple(v.shape) for k, v in stored.items()}
    expected = {k: tuple(v.shape) for k, v in fresh.items()}
    if shapes != expected:
        raise CheckpointError(
            f"checkpoint {path} holds a method state of other names or sizes than this config makes "
            f"({sorted(shapes.items())[:3]} vs {sorted(expected.items())[:3]}); use another train.run_dir"
        )
    return stored


def saved_state_tensors(
    models: dict[str, nn.Module], optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """The floating tensors of the state a checkpoint saves (every model's parameters and buffers, the
    optimiser's state), by dotted name: what `nonfinite_state` checks."""
    state = {name: model.state_dict() for name, model in models.items()}
    return floating_tensors(state | {"optimizer": optimizer.state_dict()["state"]})


def nonfinite_state(
    models: dict[str, nn.Module], optimizer: torch.optim.Optimizer, info: DistInfo
) -> list[str]:
    """The names of the `saved_state_tensors` that hold NaN or infinity; [] when all are finite.

    Every rank checks its own copy and the verdict is all-reduced, so all ranks stop together: one host
    synchronisation per call. The names are only looked up on the rare failure."""
    tensors = saved_state_tensors(models, optimizer)
    count = nonfinite_count(list(tensors.values())).to(info.device, torch.float32)
    if info.distributed:
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
    if count.item() == 0:
        return []
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    return bad or ["a tensor on another process"]


def saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint file holds (None: no file, or one that does not read as a checkpoint)."""
    try:
        return int(load_checkpoint(path, mmap=True)["epoch"]) if path.is_file() else None
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def repair_best(best: Path, latest: Path, ckpt: dict[str, Any], state: TrainState) -> None:
    """Make best.pth hold the epoch that latest.pth (`ckpt`) names as best (rank 0, on resume).

    latest.pth is written before best.pth, and records the best epoch; a crash between the two writes
    leaves best.pth behind. The models of that epoch are then latest.pth's own, so best.pth is rebuilt
    from them exactly."""
    if state.best_epoch == 0:
        return  # nothing evaluated yet, or a checkpoint from before best epochs were recorded
    if saved_epoch(best) == state.best_epoch:
        return
    if state.best_epoch == state.epoch:
        save_checkpoint(
            {k: v for k, v in ckpt.items() if k not in ("optimizer", "scaler", "rng", "method_state")}, best
        )
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
    ema_sources: Mapping[str, str] | None = None,
) -> TrainState:
    """Load latest.pth (`ckpt`, read from `path`) into the models, optimiser and scaler; restore this rank's
    RNG stream. The optimiser keeps the config's hyper-parameters (momentum, weight decay): a resume
    accepted with changed settings trains under the new ones. ema_sources: the key of each EMA network's
    source (default {"teacher": "model"}), which an EMA network the checkpoint lacks starts from."""
    stored_classes = ckpt.get("config", {}).get("data", {}).get("num_classes")
    if stored_classes is not None and stored_classes != cfg.data.num_classes:
        raise CheckpointError(
            f"checkpoint {path} was trained with {stored_classes} classes but the config has "
            f"data.num_classes {cfg.data.num_classes}; use another train.run_dir"
        )
    sources = {"teacher": "model"} if ema_sources is None else ema_sources
    for name, model in models.items():
        key = name
        if name in sources and name not in ckpt and sources[name] in ckpt:
            # A run without a teacher continued with one (--resume-anyway): the teacher starts as a copy of
            # the student, as it does at the start of training.
            log.warning("checkpoint %s has no teacher: the EMA teacher starts as a copy of the student", path)
            key = sources[name]
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
        if ckpt["scaler"] or not scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        else:  # fp32/bf16 save an empty scaler state; a resume in fp16 starts loss scaling afresh
            log.warning("the checkpoint has no loss-scaler state (not fp16): loss scaling starts afresh")
        state = TrainState(
            int(ckpt["epoch"]),
            int(ckpt["iteration"]),
            float(ckpt["best_miou"]),
            int(ckpt.get("best_epoch", 0)),
            list(ckpt.get("resumed_with_changes", [])),
            float(ckpt.get("wall_s", 0.0)),  # absent in checkpoints written before it was recorded
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a resumable training checkpoint ({exc})") from None
    rng = ckpt.get("rng", [])
    if len(rng) == info.world_size:
        set_rng_state(rng[info.rank])
    else:
        log.warning(
            "checkpoint was written by %d processes, this run has %d: random streams restart from the seed",
            len(rng),
            info.world_size,
        )
    return state
