"""PS-MT (Liu et al., CVPR 2022), as its released code trains it (docs/methods.md).

Two teachers and a student. Warm-up: for ps_mt.warm_up_epochs passes over the labeled split, each network
learns the labeled images alone (the teachers the weak view, the student the strong one); the teachers start
from a backbone trained from scratch, as released. Then, each iteration: both teachers (train mode, no
gradient) predict the weak view; the teacher whose turn it is (teacher 1 in the even semi-supervised epochs,
teacher 2 in the odd ones) is the core, the other keeps its logits only at its top-k classes of each pixel
(the core's elsewhere), and the target is their mean. The strong view (colour ops) takes a CutMix box
(area ~ Beta(4, 4), one per batch) from a random partner, target along. The student learns the labeled
strong view and the mixed view, its decoder's input perturbed by T-VAT (the direction that most changes the
teachers' ensemble prediction through the teachers' decoders):

    L = L_x + lambda_u * ramp(t) * mean over {p : c_p >= tau} of c_p * CE(student_p, argmax target_p)

with c_p the target's softmax maximum and ramp the cosine ramp-up over ramp_up_epochs. After each step the
teacher whose turn it is follows the student (EMA); the teachers' ensemble is evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imas import augment, cutmix
from imas.config import Config, check_at_least, check_interval
from imas.ema import follow
from imas.errors import ConfigError
from imas.methods.base import Method, Network, Progress, StepOutput
from imas.normalization import normalize
from imas.precision import autocast_context

TEACHERS = ("teacher1", "teacher2")  # checkpoint keys, in turn order


def cosine_ramp_up(current: float, length: float) -> float:
    """The released cosine ramp-up: 1 - (cos(pi * t / T) + 1) / 2 for t clipped to [0, T]; 1 when T = 0."""
    if length <= 0:
        return 1.0
    t = min(max(current, 0.0), length)
    return 1.0 - 0.5 * (math.cos(math.pi * t / length) + 1.0)


def assisted(core: torch.Tensor, assist: torch.Tensor, k: int) -> torch.Tensor:
    """The assisting teacher's logits [B, K, H, W] at its top-k classes of each pixel and the core's logits
    [B, K, H, W] elsewhere. As released, an entry is replaced wherever the masked logit is 0, which also
    catches a top-k logit that is exactly 0."""
    top = assist.topk(min(k, assist.shape[1]), dim=1).indices
    keep = torch.zeros_like(assist).scatter_(1, top, 1.0)
    masked = assist * keep
    return torch.where(masked == 0, core, masked)


def ensemble_target(logits: Sequence[torch.Tensor], turn: int, k: int) -> torch.Tensor:
    """The teachers' target logits [B, K, H, W]: the mean of the teachers' logits, every teacher but the one
    whose turn it is (index `turn`) assisted at its top-k classes by that one (gamma = 0.5 as released)."""
    core = logits[turn]
    parts = [t if i == turn else assisted(core, t, k) for i, t in enumerate(logits)]
    return torch.stack(parts).mean(dim=0)


def _per_image_unit(d: torch.Tensor) -> torch.Tensor:
    """d [B, ...] divided by each image's L2 norm (+ 1e-8, as released)."""
    norm = d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
    return d / (norm + 1e-8)


# Eager under torch.compile: a gradient taken inside the segmentor's forward is not a graph dynamo captures
# (the compiled forward is cut around this call and runs as before and after it).
@torch.compiler.disable
def t_vat_noise(
    features: torch.Tensor,
    decoders: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    xi: float,
    eps: float,
) -> torch.Tensor:
    """PS-MT's T-VAT: the adversarial perturbation [B, C, h, w] of decoder input features [B, C, h, w].

    decoders: functions of features to logits [B, K, H, W] (the teachers' decoders, in eval mode). With
    p = softmax of the decoders' mean logits on the features, d ~ U[-0.5, 0.5) per element scaled to unit
    norm per image, one power iteration: g = grad_d KL(p || softmax(mean logits on features + xi d)) (batch
    mean), and the noise is eps * g / |g| per image. No gradient reaches the features or the decoders'
    weights. In fp32 whatever the autocast: a step of xi = 1e-6 vanishes in bf16.
    """
    device_type = features.device.type
    f = features.detach().float()
    with torch.autocast(device_type, enabled=False), torch.enable_grad():
        with torch.no_grad():
            target = F.softmax(torch.stack([dec(f) for dec in decoders]).mean(0), dim=1)
        d = _per_image_unit(torch.rand_like(f) - 0.5).requires_grad_()
        logits = torch.stack([dec(f + xi * d) for dec in decoders]).mean(0)
        distance = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
        (grad,) = torch.autograd.grad(distance, d)
    return (eps * _per_image_unit(grad)).to(features.dtype)


def confidence_weighted_loss(
    logits: torch.Tensor, target: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released unsupervised loss: mean over the pixels whose target confidence c (softmax maximum of
    the target logits [B, K, H, W]) is >= threshold of c * CE(logits, argmax target); 0 when none is.
    Returns (loss, confidence [B, H, W])."""
    confidence, label = F.softmax(target.float(), dim=1).max(dim=1)
    ce = F.cross_entropy(logits.float(), label, reduction="none")
    kept = (confidence >= threshold).float()
    return (ce * confidence * kept).sum() / kept.sum().clamp(min=1.0), confidence


@contextmanager
def eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """The modules in eval mode (BN on running statistics) inside the block, their own modes after it."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@dataclass
class PSMTSettings:
    """PS-MT (train.method ps_mt); the released VOC defaults (Cityscapes: lambda_u 3)."""

    teachers: int = 2  # the released ensemble: two teachers taking turns
    threshold: float = 0.6  # tau on the target's confidence (semi_p_th)
    lambda_u: float = 1.5  # unsup_weight
    ramp_up_epochs: float = 12.0  # the cosine ramp-up of lambda_u, in semi-supervised epochs
    warm_up_epochs: int = 5  # supervised passes over the labeled split before the semi-supervised steps
    ema_decay: float = 0.996  # the keep rate of the teacher whose turn it is
    top_k: int = 7  # classes the assisting teacher keeps per pixel
    vat_xi: float = 1e-6  # T-VAT's finite-difference step
    vat_eps: float = 2.0  # T-VAT's perturbation norm per image

    def check(self, cfg: Config) -> None:
        if self.teachers != 2:
            raise ConfigError(
                f"ps_mt.teachers must be 2 (PS-MT's ensemble and its turn-taking, as released, need two "
                f"teachers), got {self.teachers}"
            )
        check_interval("ps_mt.threshold", self.threshold, 0, 1)
        check_interval("ps_mt.ema_decay", self.ema_decay, 0, 1)
        check_at_least("ps_mt.top_k", self.top_k, 1)  # from data.num_classes on, it keeps every class
        for key in ("lambda_u", "ramp_up_epochs", "warm_up_epochs", "vat_eps"):
            check_at_least(f"ps_mt.{key}", getattr(self, key), 0)
        if self.vat_xi <= 0:
            raise ConfigError(f"ps_mt.vat_xi must be > 0, got {self.vat_xi}")


class PSMT(Method):
    heads = ("deeplabv3plus",)  # reads a part of DeepLabv3+ the DPT head has not
    networks = (
        Network("model", "student", noun="student", evaluated=False),
        Network(TEACHERS[0], "teacher 1", pretrained=False, evaluated=False),
        Network(TEACHERS[1], "teacher 2", pretrained=False, evaluated=False),
        Network("teachers", "teachers", noun="teachers' ensemble", members=TEACHERS),
    )
    Settings = PSMTSettings

    def warm_up_iters(self, progress: Progress) -> int:
        return self.settings.warm_up_epochs * progress.labeled_iters

    def turn(self, progress: Progress) -> int:
        """The index of the teacher whose turn it is: by semi-supervised epoch, teacher 1 first."""
        semi_epoch = (progress.iteration - self.warm_up_iters(progress)) // progress.iters_per_epoch
        return semi_epoch % len(TEACHERS)

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        assert unlabeled is not None
        strong_labeled = augment.colour_strong_view(labeled["image"])
        if progress.iteration < self.warm_up_iters(progress):
            return self.warm_up_step(nets, labeled, strong_labeled)
        s, net = self.settings, nets["model"]
        weak = unlabeled["image"]
        b, _, h, w = weak.shape
        teachers = [self.models[key] for key in TEACHERS]
        turn = self.turn(progress)
        with autocast_context(self.cfg, self.device):
            with torch.no_grad():  # the teachers in train mode, as released: BN on the batch's statistics
                target = ensemble_target([t(normalize(weak)).logits.float() for t in teachers], turn, s.top_k)
            boxes = cutmix.cutmix_boxes(b, h, w, group_size=b, box="beta", device=weak.device)
            partner = torch.randperm(b, device=weak.device)
            strong = cutmix.paste(augment.colour_strong_view(weak), boxes, partner)
            target = cutmix.paste(target, boxes, partner)

            # Two forwards, as released: BN sees the labeled and the mixed batch apart.
            out_labeled = net(normalize(strong_labeled), decoder_noise=self.t_vat(strong_labeled.shape[-2:]))
            out_mixed = net(normalize(strong), decoder_noise=self.t_vat(strong.shape[-2:]))
        loss_x = self.supervised_loss(out_labeled, labeled["mask"])
        loss_u, confidence = confidence_weighted_loss(out_mixed.logits, target, s.threshold)
        semi_iteration = progress.iteration - self.warm_up_iters(progress)
        ramp = cosine_ramp_up(semi_iteration, s.ramp_up_epochs * progress.iters_per_epoch)
        loss = loss_x + s.lambda_u * ramp * loss_u
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "confident": (confidence >= s.threshold).float().mean(),  # every pixel trains, padding too
            "ramp_up": torch.tensor(ramp, device=loss.device),
        }
        views = {}
        if keep_views:
            label = target.argmax(1)
            views = {
                "weak": weak,
                "strong": strong,
                "pseudo_label": torch.where(confidence >= s.threshold, label, 255),
                "prediction": out_mixed.logits.detach().argmax(1),
            }
        return StepOutput(loss, scalars, {}, views)

    def t_vat(self, size: tuple[int, int] | torch.Size) -> Callable[[torch.Tensor], torch.Tensor]:
        """The student's decoder noise for images of `size`: T-VAT through the teachers' decoders, BN on
        their running statistics (eval mode), as released."""
        teachers = [self.models[key] for key in TEACHERS]
        decoders = [lambda f, t=t: t.decode(f, size) for t in teachers]

        def noise(features: torch.Tensor) -> torch.Tensor:
            with eval_mode(teachers):
                return t_vat_noise(features, decoders, self.settings.vat_xi, self.settings.vat_eps)

        return noise

    def warm_up_step(
        self, nets: dict[str, nn.Module], labeled: dict[str, torch.Tensor], strong_labeled: torch.Tensor
    ) -> StepOutput:
        """Each network on the labeled images alone: the teachers on the weak view, the student on the
        strong one. One loss, but no network reads another's output, so each gets the gradient (and, per
        parameter, the optimiser update) its own loss would give it, as the released separate optimisers
        do."""
        mask = labeled["mask"]
        with autocast_context(self.cfg, self.device):
            losses = {
                key: self.supervised_loss(nets[key](normalize(labeled["image"])), mask) for key in TEACHERS
            }
            losses["model"] = self.supervised_loss(nets["model"](normalize(strong_labeled)), mask)
        loss = sum(losses.values())
        scalars = {"loss_x": losses["model"].detach()} | {
            f"loss_{key}": losses[key].detach() for key in TEACHERS
        }
        return StepOutput(loss, scalars)

    def after_step(self, progress: Progress) -> None:
        """The teacher whose turn it is follows the student (not during the warm-up)."""
        if progress.iteration >= self.warm_up_iters(progress):
            follow(self.models[TEACHERS[self.turn(progress)]], self.models["model"], self.settings.ema_decay)
