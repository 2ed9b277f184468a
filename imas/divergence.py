"""The divergence guard: a NaN or infinite loss, or a training state that holds one, stops the run before a
checkpoint can store it, and says which checkpoint is kept and what to change (docs/reliability.md).

The loss flag is kept on the device and read once per logging window, so the guard costs no host
synchronisation per step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imas.checkpoint import nonfinite_state
from imas.config import Config, Precision
from imas.dist import DistInfo, broadcast_flag
from imas.errors import TrainingDiverged


class DivergenceGuard:
    """Watches the losses of every step and the state before each checkpoint of one run directory."""

    def __init__(self, cfg: Config, info: DistInfo, latest: Path, saved_epoch: int | None) -> None:
        """saved_epoch: the epoch latest.pth holds (None: no checkpoint yet)."""
        self.cfg, self.info, self.latest = cfg, info, latest
        self.saved_epoch = saved_epoch
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=info.device)

    def watch(self, loss: torch.Tensor) -> None:
        """Remember whether a step's loss was NaN or infinite (no host synchronisation)."""
        self._nonfinite |= ~torch.isfinite(loss.detach())

    def check_losses(self, iteration: int, epoch: int) -> None:
        """Stop if a loss since the start was not finite (one host sync; every rank agrees)."""
        if broadcast_flag(bool(self._nonfinite.item()), self.info.device):
            raise TrainingDiverged(
                f"the loss became NaN or infinite before iteration {iteration} in epoch {epoch + 1}; "
                f"{self.kept()}; {self.advice()}"
            )

    def check_state(
        self, models: dict[str, nn.Module], optimizer: torch.optim.Optimizer, epochs_done: int
    ) -> None:
        """Stop if what the checkpoint of `epochs_done` would save holds NaN or infinity.

        A finite loss does not make a finite state (BN statistics overflow first): this runs before the
        epoch is evaluated or written, so no broken epoch reaches metrics or checkpoints."""
        bad = nonfinite_state(models, optimizer, self.info)
        if bad:
            raise TrainingDiverged(
                f"after epoch {epochs_done} the model or optimiser state holds NaN or infinite values "
                f"({len(bad)} tensors, e.g. {bad[0]}); nothing of this epoch was saved and "
                f"{self.kept()}; {self.advice()}"
            )

    def kept(self) -> str:
        """What a stopped run leaves: 'runs/x/latest.pth (epoch 3, checked finite when written) is kept', or
        'no checkpoint was written'."""
        if self.saved_epoch is None:
            return "no checkpoint was written"
        return f"{self.latest} (epoch {self.saved_epoch}, checked finite when written) is kept"

    def advice(self) -> str:
        fp32 = "" if self.cfg.train.precision is Precision.fp32 else " or use train.precision fp32"
        return f"lower optim.lr (now {self.cfg.optim.lr:g}){fp32}"
