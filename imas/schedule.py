"""SGD (or AdamW) with a backbone and a decoder parameter group, and the poly learning-rate schedule (§7).

The schedule is a pure function of the global iteration, so the only schedule state a checkpoint needs is
that iteration; each parameter group keeps its own multiplier under "lr_mult" (saved with the optimizer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from imas.config import Config


def poly_lr(base_lr: float, iteration: int, total_iterations: int, power: float = 0.9) -> float:
    """base_lr · (1 − t/T)^power at iteration t of T; 0 from t = T on (never negative)."""
    if total_iterations <= 0:
        raise ValueError(f"total_iterations must be positive, got {total_iterations}")
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    progress = min(iteration, total_iterations) / total_iterations
    return base_lr * (1.0 - progress) ** power


def build_optimizer(
    backbone_params: Iterable[nn.Parameter],
    decoder_params: Iterable[nn.Parameter],
    lr: float,
    momentum: float,
    weight_decay: float,
    decoder_lr_mult: float,
    kind: str = "sgd",
) -> torch.optim.Optimizer:
    """SGD over two groups: the backbone at lr × 1 and the decoder (ASPP, heads) at lr × decoder_lr_mult.

    Weight decay applies to every parameter, BN included, as in the released runs. kind "adamw" builds
    AdamW over the same groups instead, with betas (momentum, 0.999) and decoupled weight decay.
    """
    groups = [
        {"params": list(backbone_params), "lr": lr, "lr_mult": 1.0, "name": "backbone"},
        {
            "params": list(decoder_params),
            "lr": lr * decoder_lr_mult,
            "lr_mult": decoder_lr_mult,
            "name": "decoder",
        },
    ]
    # The fused kernels (one per step instead of a dozen ops per tensor) exist for CPU and CUDA float tensors;
    # for a small network the per-tensor ops dominate the step (docs/performance.md, training step).
    params = groups[0]["params"] + groups[1]["params"]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if kind == "adamw":
        return torch.optim.AdamW(
            groups, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay, fused=fused
        )
    if kind != "sgd":
        raise ValueError(f"optimizer kind must be 'sgd' or 'adamw', got {kind!r}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to lr × its "lr_mult"."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


def make_optimizer(cfg: Config, models: Sequence[nn.Module]) -> torch.optim.Optimizer:
    """cfg.optim's optimiser over the trained models (CPS trains two): every backbone in the backbone group,
    every decoder in the decoder group."""
    backbone_params: list[nn.Parameter] = []
    decoder_params: list[nn.Parameter] = []
    for model in models:
        backbone, decoder = model.param_groups()
        backbone_params += backbone
        decoder_params += decoder
    o = cfg.optim
    return build_optimizer(
        backbone_params, decoder_params, o.lr, o.momentum, o.weight_decay, o.decoder_lr_mult, o.kind.value
    )
