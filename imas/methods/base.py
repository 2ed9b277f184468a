"""The contract between the training loop and a method (docs/extending.md walks through it).

A method declares, as class attributes, what the loop must provide and keep:

- `networks`: every network it keeps, once, with its role (`Network`): trained by the optimiser, or an EMA
  of another; evaluated or not; the first evaluated one is the reported one (its mIoU is eval/miou, picks
  best.pth and is what metrics.jsonl records). This one declaration names the networks in logs and
  metrics, keys them in checkpoints, and lists what `imas-eval --model` and `imas-predict --model` accept;
- `Settings`: the dataclass of its settings (None: it has none), written beside it in its module; a config
  gives them in the section named after the method, which imas.config builds from this class and checks
  with its `check(cfg)` where it has one;
- `uses_unlabeled`: whether its step reads unlabeled batches (the loop then checks and loads that split);
- `per_image`: names of the per-unlabeled-image values its steps return; every name gets its history
  `<name>.csv` in the run directory, a `train/<name>` TensorBoard histogram and its sections of imas-report;
- `min_batch_size`: the smallest train.batch_size its forwards work with (imas.methods.check_method checks
  it when a command loads a config);
- `uses_features`: whether its step asks the segmentor for features (a model with model.representation);
- `heads`: the model.head values its step works with (PS-MT's T-VAT and U2PL's representation head are
  parts of DeepLabv3+ only).

An EMA network's decay is its settings' `ema_decay`.

and implements `step` (one iteration's loss and what to log, given both batches and the training
`Progress`), and, where it needs them, `after_step` (e.g. an EMA update) and `state_dict` /
`load_state_dict` for state that is not a network (memory queues, thresholds), which the loop saves in
latest.pth and restores on resume. The loop builds the trained networks in declaration order from one seed
each (the first from train.seed itself), wraps them in DDP and hands both forms to `step`; an EMA network
starts as a copy of its source. Everything else (checkpoints, resume, DDP, SyncBN, AMP, logging, panels,
the divergence guard) is the loop's and works the same for every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from imas.config import Config
from imas.ema import EMATeacher
from imas.losses import SupervisedLoss
from imas.models import Ensemble, SegOutput
from imas.normalization import normalize


@dataclass(frozen=True)
class Network:
    """One network a method keeps.

    key: its checkpoint key ("model", "teacher", "model2"); label: what logs, metrics.jsonl and TensorBoard
    call it ("student", "teacher", "second network"); its command-line name (`--model`) is the label with
    "_" for spaces. noun: what a sentence about a checkpoint calls it ("the network of runs/x/best.pth").
    ema_of: the key of the network it is an exponential moving average of (None: the optimiser trains it).
    members: the keys of the networks whose mean logits it is (an ensemble, e.g. PS-MT's teachers): it holds
    no weights of its own, so checkpoints keep only its members. pretrained: whether the loop builds it
    with model.pretrained's backbone (PS-MT's teachers start from scratch, as released).
    """

    key: str
    label: str
    noun: str = ""
    ema_of: str | None = None
    evaluated: bool = True
    members: tuple[str, ...] = ()
    pretrained: bool = True

    @property
    def name(self) -> str:
        return self.label.replace(" ", "_")

    @property
    def trained(self) -> bool:
        return self.ema_of is None and not self.members


# The declarations today's methods share.
STUDENT = Network("model", "student", noun="network")
TEACHER_STUDENT = (Network("teacher", "teacher", ema_of="model"), Network("model", "student", noun="student"))


@dataclass(frozen=True)
class Progress:
    """Where training is: the global iteration (0-based, of this step), the epoch (0-based), and the
    totals, for schedules that depend on them (U2PL's entropy percentiles, ramp-ups, warm-ups)."""

    iteration: int
    epoch: int
    iters_per_epoch: int
    epochs: int
    labeled_iters: int = 0  # the iterations of one pass over the labeled split (PS-MT's warm-up epochs)

    @property
    def total_iters(self) -> int:
        return self.iters_per_epoch * self.epochs


@dataclass
class StepOutput:
    """What one training step gives the loop.

    loss: the scalar to back-propagate. scalars: detached 0-d tensors to log (averaged over the logging
    window; no host synchronisation here). per_image: [B] tensors, one value per unlabeled image of this
    rank's batch (e.g. "hardness"). views: named image views for the TensorBoard panel, only when the loop
    asked for them (uint8 images [B, 3, H, W] and label maps [B, H, W], 255 = none). notes: per-image
    values shown as text beside the panel's rows, with the views only (e.g. "e": easiness [B] as a float,
    "cutmix": whether its CutMix fired [B] as a bool).
    """

    loss: torch.Tensor
    scalars: dict[str, torch.Tensor]
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)
    views: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: dict[str, torch.Tensor] = field(default_factory=dict)


def forward_views(net: nn.Module, views: dict[str, torch.Tensor], **asked: Any) -> dict[str, SegOutput]:
    """One forward of `net` on named uint8 views [B_i, 3, H, W], concatenated in the given order (so that BN
    sees them together, as the released codes batch them); the output split back by name. `asked` goes to
    the segmentor (fp_dropout, features)."""
    out = net(torch.cat([normalize(v) for v in views.values()]), **asked)
    parts: dict[str, SegOutput] = {}
    start = 0
    for name, v in views.items():
        part = out.tail(start) if start else out
        parts[name] = part.head(v.shape[0])
        start += v.shape[0]
    return parts


class Method:
    """Base class of the methods in imas.methods.METHODS; see the module docstring for the contract."""

    networks: ClassVar[tuple[Network, ...]] = (STUDENT,)
    Settings: ClassVar[type | None] = None
    uses_unlabeled: ClassVar[bool] = True
    per_image: ClassVar[tuple[str, ...]] = ()
    uses_features: ClassVar[bool] = False  # its step asks the segmentor for features (model.representation)
    heads: ClassVar[tuple[str, ...]] = ("deeplabv3plus", "dpt")
    # Images per device per step: a forward of a single image in train mode cannot normalise the ASPP's
    # pooled features (iMAS's forwards always concatenate several views, so one image is enough there).
    min_batch_size: ClassVar[int] = 2

    def __init__(
        self, cfg: Config, trained: dict[str, nn.Module], criterion: SupervisedLoss, device: torch.device
    ) -> None:
        """trained: the plain (unwrapped) models of the trained networks, freshly built or about to be
        resumed; each EMA network is made here as a copy of its source (made before DDP wrapping and never
        wrapped itself)."""
        self.cfg = cfg
        self.criterion = criterion
        self.device = device
        self.settings: Any = cfg.method_settings
        self.emas: dict[str, EMATeacher] = {
            n.key: EMATeacher(trained[n.ema_of], self.settings.ema_decay) for n in self.networks if n.ema_of
        }
        # Every model a checkpoint keeps, by checkpoint key, in declaration order (an ensemble keeps none).
        self.models: dict[str, nn.Module] = {
            n.key: self.emas[n.key].module if n.ema_of else trained[n.key]
            for n in self.networks
            if not n.members
        }

    @classmethod
    def trained_keys(cls) -> tuple[str, ...]:
        return tuple(n.key for n in cls.networks if n.trained)

    @classmethod
    def evaluated(cls) -> tuple[Network, ...]:
        """The evaluated networks, the reported one first."""
        return tuple(n for n in cls.networks if n.evaluated)

    @classmethod
    def reported(cls) -> Network:
        return cls.evaluated()[0]

    def module_of(self, network: Network) -> nn.Module:
        """What evaluating `network` runs: its model, or an Ensemble of its members' models."""
        if network.members:
            return Ensemble([self.models[key] for key in network.members])
        return self.models[network.key]

    def supervised_loss(self, out: SegOutput, mask: torch.Tensor) -> torch.Tensor:
        """L_x of the labeled images' output (its logits, and aux logits with an aux head); mask [B, H, W]."""
        return self.criterion(out.logits, mask, out.aux)

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        """One iteration: nets are the trained models as the loop runs them (DDP-wrapped when distributed;
        the plain modules are self.models). labeled: "image" uint8 [B, 3, H, W], "mask" [B, H, W];
        unlabeled: "image" uint8 [B, 3, H, W], "valid" bool [B, H, W] (False on crop padding), "index" [B]
        (None when the method does not use unlabeled data). Called under the loop's train mode."""
        raise NotImplementedError

    def after_step(self, progress: Progress) -> None:
        """Called after each optimiser step (`progress` is the step's): every EMA network follows its
        source."""
        for network in self.networks:
            if network.ema_of:
                self.emas[network.key].update(self.models[network.ema_of], progress.iteration, progress.epoch)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State that is not a network and that a resume needs (plain tensors: checkpoints load with
        weights_only); {} for a method that keeps none."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` gave."""
