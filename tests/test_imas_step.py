"""The iMAS step (imas.methods.imas.IMAS.step): its loss is method.md §1/§3's composition, vs a reference.

L = L_x + λ_u · [(1/B) Σ_i e_i ℓ^int_i · (½ if i's group fired CutMix else 1)
                + (1/B) Σ_{i fired} ½ e_i ℓ^cm_i],
ℓ_i = Σ_p 1[c_i(p) ≥ τ] · CE_i(p) / (H·W). The trigger is fixed by monkeypatching so that one group fires.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imas import cutmix
from imas.experiment import load_experiment
from imas.losses import build_supervised_loss
from imas.methods import Progress
from imas.methods import imas as imas_method
from imas.methods.imas import IMAS
from imas.models import SegOutput

K, B, H, W = 6, 4, 12, 12  # K as in exps/toy/imas.yaml


class PixelNet(nn.Module):
    """A per-pixel linear segmenter with BN: enough for the iMAS step's forwards, fast."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Conv2d(3, K, 1)

    def forward(self, x: torch.Tensor) -> SegOutput:
        return SegOutput(self.head(self.bn(x)))


def run_step(cfg):
    """One iMAS step on random uint8 batches with a PixelNet student and a teacher whose head differs from
    the student's (so that the hardness is not trivial). Returns the loss, scalars, hardness and views."""
    model = PixelNet()
    criterion = build_supervised_loss("ce", 0.7, 100000, 0.4)
    method = IMAS(cfg, {"model": model}, criterion, torch.device("cpu"))
    teacher = method.models["teacher"]
    with torch.no_grad():
        teacher.head.weight.add_(0.5 * torch.randn_like(teacher.head.weight))
    labeled = {
        "image": torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8),
        "mask": torch.randint(0, K, (B, H, W)),
    }
    unlabeled = {
        "image": torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8),
        "valid": torch.ones(B, H, W, dtype=torch.bool),
    }
    model.train()
    out = method.step({"model": model}, labeled, unlabeled, Progress(0, 1, 10, 2))
    return out.loss, out.scalars, out.per_image["hardness"], out.views


def pixel_losses(logits, pseudo_label, confidence, threshold) -> torch.Tensor:
    """ℓ_i [B] written out from method.md §3."""
    ce = F.cross_entropy(logits.float(), pseudo_label.long(), reduction="none")
    return (ce * (confidence >= threshold).float()).sum((1, 2)) / (logits.shape[2] * logits.shape[3])


@pytest.mark.parametrize("weighting", ["easiness", "none"])
def test_loss_is_the_spec_composition(monkeypatch, weighting):
    torch.manual_seed(0)
    cfg = load_experiment(
        "exps/toy/imas.yaml",
        ["imas.group_size=2", "imas.threshold=0.3", f"imas.weighting={weighting}", f"train.batch_size={B}"],
    )
    fired_groups = torch.tensor([False, True])  # the second group of 2 images fires
    monkeypatch.setattr(imas_method.cutmix, "trigger", lambda *args, **kwargs: fired_groups.clone())
    calls = []
    real_loss = imas_method.unsupervised_loss

    def recording_loss(logits, pseudo_label, confidence, threshold, weight=None, valid=None):
        calls.append((logits.detach(), pseudo_label, confidence, weight))
        return real_loss(logits, pseudo_label, confidence, threshold, weight, valid)

    monkeypatch.setattr(imas_method, "unsupervised_loss", recording_loss)
    loss, values, hardness, _ = run_step(cfg)

    assert len(calls) == 2  # the intensity view and the CutMix view
    (int_logits, int_label, int_conf, _), (cm_logits, cm_label, cm_conf, _) = calls
    assert int_logits.shape[0] == B and cm_logits.shape[0] == 2  # only the fired group's images
    e = 1.0 - hardness if weighting == "easiness" else torch.ones(B)
    fired = cutmix.per_image(fired_groups, 2).float()
    tau = cfg.imas.threshold
    l_int = pixel_losses(int_logits, int_label, int_conf, tau)
    l_cm = pixel_losses(cm_logits, cm_label, cm_conf, tau)
    reference_u = (e * l_int * (1 - 0.5 * fired)).sum() / B + (0.5 * e[2:] * l_cm).sum() / B
    assert l_int.sum() > 0 and l_cm.sum() > 0  # a vacuous zero loss would prove nothing
    assert values["loss_u"].item() == pytest.approx(cfg.imas.lambda_u * reference_u.item(), rel=1e-5)
    parts = values["loss_int"] + values["loss_cm"]
    assert values["loss_u"].item() == pytest.approx(cfg.imas.lambda_u * parts.item(), rel=1e-6)
    assert loss.item() == pytest.approx(values["loss_x"].item() + values["loss_u"].item(), rel=1e-6)
    assert values["cutmix_rate"].item() == pytest.approx(0.5)


def test_cutmix_scale_passes_the_group_mean_easiness(monkeypatch):
    """imas.cutmix_scale (method.md §5's option): the box side ratio scales with the group's mean easiness."""
    cfg = load_experiment(
        "exps/toy/imas.yaml", ["imas.group_size=2", "imas.cutmix_scale=true", f"train.batch_size={B}"]
    )
    scales = []
    real_boxes = cutmix.cutmix_boxes

    def recording_boxes(*args, scale=None, **kwargs):
        scales.append(scale)
        return real_boxes(*args, scale=scale, **kwargs)

    monkeypatch.setattr(imas_method.cutmix, "cutmix_boxes", recording_boxes)
    _, _, hardness, _ = run_step(cfg)
    torch.testing.assert_close(scales[0], (1 - hardness).view(2, 2).mean(1))
