"""Atomic, self-describing checkpoints that `torch.load(weights_only=True)` accepts."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

import imas
from imas.errors import CheckpointError


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
            f"checkpoint {path} could not be written ({_write_failure(exc, path.parent)}); {kept}; "
            "free space or fix the folder, then start the same command again to resume"
        ) from None


def _write_failure(exc: BaseException, folder: Path) -> str:
    """A short reason for a failed write, e.g. 'no space left on device', rather than a C++ message (torch's
    zip writer reports a full disk as a RuntimeError that names no errno)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    try:
        if shutil.disk_usage(folder).free < 64 * 2**20:
            return os.strerror(errno.ENOSPC).lower()
    except OSError:
        pass
    return "the write failed"


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
            f"unexpected tensors, e.g. {example}); check model.backbone, model.aux_head and model.stem"
        )
    model.load_state_dict(state_dict)
