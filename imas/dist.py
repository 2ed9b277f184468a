"""Process-group set-up: one code path for CPU, one GPU, and torchrun over many GPUs or nodes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from imas.errors import ConfigError, UserError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun, else run as a single process.

    device: "auto" (CUDA when available), "cpu" or "cuda". Under torchrun each process takes the GPU
    LOCAL_RANK with NCCL; on CPU the gloo backend is used, so the distributed code runs in tests too.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over all processes (a copy; the input is left as is)."""
    out = value.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def all_gather_cat(value: torch.Tensor) -> torch.Tensor:
    """Concatenate a [N, ...] tensor of equal N from every process along dim 0 (for logging only)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value.detach()
    parts = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, value.detach().contiguous())
    return torch.cat(parts)


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every process if `flag` is true on any (e.g. a non-finite loss seen by one rank)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank.

    Without SyncBN (CPU/gloo) each rank's last forward leaves slightly different running statistics; syncing
    them before evaluation makes every rank evaluate, and rank 0 save, the same model.
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def run_on_main(fn: Callable[[], T], info: DistInfo) -> T:
    """Run `fn` on rank 0 only and hand its result to every rank.

    An exception raised by `fn` is raised on every rank (rank 0 re-raises the original; the others a copy
    of a UserError marked `shared`, or a RuntimeError naming any other), so a refusal on rank 0 (a locked
    run directory, changed settings) stops all processes instead of leaving the others waiting at the next
    collective."""
    result: Any = None
    error: BaseException | None = None
    if info.is_main:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    if dist.is_initialized() and dist.get_world_size() > 1:
        shared = None
        if isinstance(error, UserError):
            shared = (type(error), str(error))
        elif error is not None:  # its class may not pickle: its name and message do
            shared = (RuntimeError, f"rank 0 failed: {type(error).__name__}: {error}")
        box = [(result, shared)]
        dist.broadcast_object_list(box, src=0)
        result, shared = box[0]
        if shared is not None and not info.is_main:
            copy = shared[0](shared[1])
            copy.shared = True
            raise copy
    if error is not None:
        raise error
    return result
