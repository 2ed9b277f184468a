"""U2PL (Wang et al., CVPR 2022): a mean teacher that uses its unreliable pixels too (docs/methods.md).

After `sup_only_epochs` of supervised training, the EMA teacher's prediction on each unlabeled image is its
pseudo-label; with p = 0.5 the batch is CutMix-ed (half-area boxes), and the student learns from

- L_u: CE on the reliable pixels, those below the `drop_percentile` entropy percentile of the teacher's
  train-mode prediction, a share that grows from 80 % to 100 % over training;
- L_c: a pixel contrastive loss on a representation head: low-entropy pixels of each class are anchors, their
  class's mean teacher feature the positive, and negatives come from per-class queues of unreliable
  pixels' teacher features (the queues live in the method's state, saved in latest.pth);

    L = L_x + unsup_weight * L_u + contrastive_weight * L_c,

with the released code's choices (imas.contrastive): its one-hot, negatives and queue pairing by default,
`contrastive: corrected` for the paper's. The teacher averages the student's parameters only (its BN
statistics come from its own train-mode forwards), as released.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from imas import contrastive, cutmix
from imas.config import Config, ConfigError, check_at_least, check_interval
from imas.losses import SupervisedLoss
from imas.methods.base import TEACHER_STUDENT, Method, Progress, StepOutput, forward_views
from imas.normalization import normalize
from imas.precision import autocast_context


class ContrastiveVariant(str, enum.Enum):
    released = "released"  # the released one-hot (the batch's classes in its first image), negatives, pairing
    corrected = "corrected"  # a per-image one-hot, the paper's negatives, each class's own queue


@dataclass
class U2PLSettings:
    """U2PL (train.method u2pl); the released VOC defaults (Cityscapes: sup_only_epochs 0)."""

    ema_decay: float = 0.99
    sup_only_epochs: int = 1  # epochs of supervised training before the teacher takes part
    cutmix_p: float = 0.5  # probability that a step's unlabeled batch is CutMix-ed
    drop_percent: float = 80.0  # reliable share of pixels at the start (grows linearly to 100 %)
    unsup_weight: float = 1.0
    contrastive_weight: float = 1.0  # released: 1, its gradient divided by the world size (the paper: 0.1)
    low_entropy_threshold: float = 20.0  # alpha_0: percentile of anchors and of negatives, decays to 0
    low_rank: int = 3  # a negative of class c ranks c in [low_rank, high_rank)
    high_rank: int = 20
    anchor_threshold: float = 0.3
    negative_threshold: float = 1.0
    num_queries: int = 256
    num_negatives: int = 50
    temperature: float = 0.5
    queue_size: int = 30000  # negative keys kept per class
    queue_size_class0: int = 50000  # for class 0 (background / road)
    contrastive: ContrastiveVariant = ContrastiveVariant.released

    def check(self, cfg: Config) -> None:
        check_interval("u2pl.ema_decay", self.ema_decay, 0, 1)
        check_interval("u2pl.cutmix_p", self.cutmix_p, 0, 1)
        check_interval("u2pl.drop_percent", self.drop_percent, 0, 100)
        check_interval("u2pl.low_entropy_threshold", self.low_entropy_threshold, 0, 50)
        check_interval("u2pl.anchor_threshold", self.anchor_threshold, 0, 1)
        check_interval("u2pl.negative_threshold", self.negative_threshold, 0, 1)
        for key in ("sup_only_epochs", "unsup_weight", "contrastive_weight", "low_rank"):
            check_at_least(f"u2pl.{key}", getattr(self, key), 0)
        for key in ("num_queries", "num_negatives", "queue_size", "queue_size_class0"):
            check_at_least(f"u2pl.{key}", getattr(self, key), 1)
        if self.temperature <= 0 or self.high_rank <= self.low_rank:
            raise ConfigError("u2pl.temperature must be > 0 and u2pl.high_rank above u2pl.low_rank")
        if cfg.model.representation < 1:
            raise ConfigError("train.method u2pl needs a representation head: set model.representation (256)")
        problem = contrastive.contrastive_problem(
            cfg.data.num_classes, self.low_rank, self.high_rank, self.rule
        )
        if problem is not None:  # e.g. a 2-class dataset, whose contrastive loss would silently stay 0
            raise ConfigError(
                f"u2pl.low_rank {self.low_rank} with data.num_classes {cfg.data.num_classes}: {problem}"
            )

    @property
    def rule(self) -> contrastive.NegativeRule:
        return "released" if self.contrastive is ContrastiveVariant.released else "paper"


class U2PL(Method):
    heads = ("deeplabv3plus",)  # reads a part of DeepLabv3+ the DPT head has not
    networks = TEACHER_STUDENT  # the teacher is reported, as released after the supervised epochs
    Settings = U2PLSettings
    uses_features = True

    def __init__(
        self, cfg: Config, trained: dict[str, nn.Module], criterion: SupervisedLoss, device: torch.device
    ) -> None:
        super().__init__(cfg, trained, criterion, device)
        s = self.settings
        sizes = [s.queue_size_class0] + [s.queue_size] * (cfg.data.num_classes - 1)
        self.bank = contrastive.NegativeBank(sizes, cfg.model.representation, device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.bank.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.bank.load_state_dict(state)

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        assert unlabeled is not None
        if progress.epoch < self.settings.sup_only_epochs:
            return self.supervised_step(nets["model"], labeled)
        s, teacher = self.settings, self.models["teacher"]
        weak, n = unlabeled["image"], labeled["image"].shape[0]
        if progress.epoch == s.sup_only_epochs:  # the first epoch after them: the teacher is the student
            self.copy_student()

        # 1. Pseudo-labels: the teacher in eval mode on the unmixed images; then, with p = cutmix_p for the
        # whole batch, a half-area box of the next image (image, label and confidence alike).
        with torch.no_grad(), autocast_context(self.cfg, self.device):
            probs = F.softmax(teacher(normalize(weak)).logits.float(), dim=1)
        confidence, pseudo_label = probs.max(dim=1)
        b, _, h, w = weak.shape
        fire = torch.rand((), device=self.device) < s.cutmix_p
        boxes = cutmix.half_area_boxes(b, h, w, device=self.device) & fire
        source = (torch.arange(b, device=self.device) + 1) % b
        mixed, pseudo_label, confidence = cutmix.mix(weak, pseudo_label, confidence, boxes, source)

        # 2. The student on labeled and mixed images, with its representations; the teacher on the same,
        # in train mode as released (its BN statistics follow this batch; no gradient).
        views = {"labeled": labeled["image"], "mixed": mixed}
        with autocast_context(self.cfg, self.device):
            out = forward_views(nets["model"], views, features=True)
        with torch.no_grad(), autocast_context(self.cfg, self.device):
            teacher.train()
            out_t = forward_views(teacher, views, features=True)
            teacher.eval()
        loss_x = self.supervised_loss(out["labeled"], labeled["mask"])

        # 3. L_u on the reliable pixels of the teacher's train-mode prediction.
        entropy = contrastive.pixel_entropy(F.softmax(out_t["mixed"].logits.float(), dim=1))
        drop = contrastive.drop_percentile(progress.epoch, progress.epochs, s.drop_percent)
        loss_u = contrastive.reliable_pseudo_label_loss(out["mixed"].logits, pseudo_label, entropy, drop)

        # 4. L_c on the representations, at their stride.
        contrast = self.contrastive_term(out, out_t, labeled["mask"], pseudo_label, entropy, n, progress)
        # The released code all-reduces L_c and divides it by the world size; autograd does not record the
        # all-reduce, so its gradient is contrastive_weight / world size times the local one.
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        loss = loss_x + s.unsup_weight * loss_u + s.contrastive_weight / world * contrast.loss
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_c": contrast.loss.detach(),
            "contrastive_terms": contrast.terms.float(),
            "cutmix_rate": fire.float(),
        }
        shown = {}
        if keep_views:
            shown = {
                "weak": weak,
                "mixed": mixed,
                "pseudo_label": pseudo_label,
                "prediction": out["mixed"].logits.detach().argmax(1),
            }
        return StepOutput(loss, scalars, {}, shown)

    def contrastive_term(
        self,
        out: dict,
        out_t: dict,
        mask: torch.Tensor,
        pseudo_label: torch.Tensor,
        entropy: torch.Tensor,
        n: int,
        progress: Progress,
    ) -> contrastive.ContrastiveOutput:
        """U2PL's contrastive loss of this step (imas.contrastive), its queues updated in place."""
        s = self.settings
        rep = torch.cat([out["labeled"].features, out["mixed"].features])
        rep_t = torch.cat([out_t["labeled"].features, out_t["mixed"].features])
        size = rep.shape[-2:]
        # The teacher's probabilities at the representations' size (the released model predicts there).
        logits_t = torch.cat([out_t["labeled"].logits, out_t["mixed"].logits]).float()
        prob_t = F.softmax(F.interpolate(logits_t, size=size, mode="bilinear", align_corners=True), dim=1)
        alpha = contrastive.unreliable_percent(progress.epoch, progress.epochs, s.low_entropy_threshold)
        low_u, high_u = contrastive.entropy_split(entropy, pseudo_label != 255, alpha)
        corrected = s.contrastive is ContrastiveVariant.corrected
        onehot, low, high = contrastive.contrastive_targets(
            mask, pseudo_label, low_u, high_u, size, self.cfg.data.num_classes,
            "per_image" if corrected else "released",
        )  # fmt: skip
        return contrastive.contrastive_loss(
            rep, rep_t.detach(), prob_t, onehot, low, high, n, self.bank,
            low_rank=s.low_rank, high_rank=s.high_rank, anchor_threshold=s.anchor_threshold,
            negative_threshold=s.negative_threshold, num_queries=s.num_queries,
            num_negatives=s.num_negatives, temperature=s.temperature, rule=s.rule,
            pairing="matched" if corrected else "released",
        )  # fmt: skip

    def supervised_step(self, net: nn.Module, labeled: dict[str, torch.Tensor]) -> StepOutput:
        """The first sup_only_epochs: L_x alone; the teacher's train-mode forward on the labeled images keeps
        its BN statistics current, as released."""
        with autocast_context(self.cfg, self.device):
            out = forward_views(net, {"labeled": labeled["image"]}, features=True)["labeled"]
        with torch.no_grad(), autocast_context(self.cfg, self.device):
            self.models["teacher"].train()
            self.models["teacher"](normalize(labeled["image"]))
            self.models["teacher"].eval()
        loss_x = self.supervised_loss(out, labeled["mask"])
        zero = 0 * out.features.sum()  # every parameter in the graph, so DDP finds no unused one
        scalars = {"loss_x": loss_x.detach(), "loss_u": zero.detach(), "loss_c": zero.detach()}
        return StepOutput(loss_x + zero, scalars | {"contrastive_terms": zero.detach(), "cutmix_rate": zero})

    @torch.no_grad()
    def after_step(self, progress: Progress) -> None:
        """The released EMA: nothing during the supervised epochs; the teacher is the student throughout the
        first epoch after them; then its parameters (not its buffers) follow the student's with decay
        min(1 - 1 / (t + 1), ema_decay), t the iterations since the supervised epochs."""
        s = self.settings
        if progress.epoch < s.sup_only_epochs:
            return
        if progress.epoch == s.sup_only_epochs:
            self.copy_student()
            return
        t = progress.iteration - progress.iters_per_epoch * s.sup_only_epochs
        decay = min(1.0 - 1.0 / (t + 1), s.ema_decay)
        teacher = list(self.models["teacher"].parameters())
        student = [p.detach() for p in self.models["model"].parameters()]
        torch._foreach_lerp_(teacher, student, 1.0 - decay)

    @torch.no_grad()
    def copy_student(self) -> None:
        """The teacher's parameters become the student's (not its buffers), as released."""
        teacher = list(self.models["teacher"].parameters())
        torch._foreach_copy_(teacher, [p.detach() for p in self.models["model"].parameters()])
