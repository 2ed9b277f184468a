"""Atomic, self-describing checkpoints that `torch.load(weights_only=True)` accepts."""

from __future__ import annotations

import os
import random
import subprocess
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
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load on the CPU with weights_only=True; a missing or unreadable file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
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
