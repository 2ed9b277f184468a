"""UniMatch V2's step against a direct computation of the released loss, its teacher's schedule and its
networks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_methods import PROGRESS, B, batches, make

from imas.methods import METHODS, Progress, unimatch_v2
from imas.models import perturb
from imas.normalization import normalize


def fixed_masks(batch: int, channels: int, device: torch.device) -> torch.Tensor:
    """A known complementary mask: channel c of view 1 kept (x 2) for even c + image, view 2 the rest."""
    half = batch // 2
    first = 2.0 * ((torch.arange(half)[:, None] + torch.arange(channels)[None]) % 2 == 0).float()
    return torch.cat([first, 2.0 - first]).to(device)


def released_unsupervised_term(
    logits: torch.Tensor,
    label: torch.Tensor,
    conf: torch.Tensor,
    ignore: torch.Tensor,
    box: torch.Tensor,
    tau,
):
    """The released step's loss_u_s of one view, written out: targets pasted from the flipped batch inside
    the box, CE on confident non-ignored pixels summed over the non-ignored pixels."""
    label, conf, ignore = label.clone(), conf.clone(), ignore.clone()
    label[box] = label.flip(0)[box]
    conf[box] = conf.flip(0)[box]
    ignore[box] = ignore.flip(0)[box]
    ce = F.cross_entropy(logits, label, reduction="none")
    return (ce * ((conf >= tau) & (ignore != 255))).sum() / (ignore != 255).sum()


def no_masks(batch: int, channels: int, device: torch.device) -> torch.Tensor:
    raise AssertionError("complementary dropout drawn with unimatch_v2.comp_drop false")


@pytest.mark.parametrize("comp_drop", [True, False])
def test_the_step_is_the_released_loss(monkeypatch, comp_drop):
    """As released; with unimatch_v2.comp_drop false (the ablation) the strong views are decoded plain."""
    method = make("unimatch_v2", ("unimatch_v2.threshold=0.2", f"unimatch_v2.comp_drop={comp_drop}"))
    drawn = []
    real_view = unimatch_v2.cutmix_strong_view

    def recording_view(weak, p, device, source):
        drawn.append((*real_view(weak, p, device, source), source))
        return drawn[-1][:3]

    monkeypatch.setattr(unimatch_v2, "cutmix_strong_view", recording_view)
    monkeypatch.setattr(perturb, "complementary_masks", fixed_masks if comp_drop else no_masks)
    labeled, unlabeled = batches()
    student, teacher = method.models["model"], method.models["model_ema"]
    with torch.no_grad():  # the teacher perturbed, so that its targets are not the student's
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.manual_seed(3)
    out = method.step({"model": student}, labeled, unlabeled, PROGRESS, keep_views=True)

    assert len(drawn) == 2
    mirror = torch.arange(B - 1, -1, -1)
    assert all(torch.equal(source, mirror) for *_, source in drawn)  # img.flip(0) as released
    assert not teacher.training  # the EMA model predicts in eval mode, as released
    with torch.no_grad():
        probs = teacher(normalize(unlabeled["image"])).logits.softmax(1)
    conf, label = probs.max(1)
    ignore = torch.where(unlabeled["valid"], 0, 255)
    strong = torch.cat([normalize(view) for view, *_ in drawn])
    pred_s1, pred_s2 = student(strong, comp_drop=comp_drop).logits.chunk(2)
    loss_x = F.cross_entropy(student(normalize(labeled["image"])).logits, labeled["mask"], ignore_index=255)
    terms = [
        released_unsupervised_term(pred, label, conf, ignore, box, 0.2)
        for pred, (_, _, box, _) in zip((pred_s1, pred_s2), drawn)
    ]
    expected = (loss_x + (terms[0] + terms[1]) / 2) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.scalars["loss_s"].item() == pytest.approx(((terms[0] + terms[1]) / 2).item(), rel=1e-5)
    assert out.scalars["loss_s"] > 0
    assert set(out.views) == {"weak", "strong_1", "strong_2", "pseudo_label", "prediction"}


def test_the_teacher_follows_from_the_first_iteration():
    """min(1 - 1/(t + 1), 0.996): a copy at t = 0 (no epoch of copies first), then 0.996."""
    method = make("unimatch_v2")
    student, teacher = method.models["model"], method.models["model_ema"]
    with torch.no_grad():
        student.head.weight.add_(1.0)
    method.after_step(Progress(iteration=0, epoch=0, iters_per_epoch=10, epochs=2))
    assert torch.equal(teacher.head.weight, student.head.weight)
    with torch.no_grad():
        student.head.weight.add_(1.0)
    before = teacher.head.weight.clone()
    method.after_step(Progress(iteration=999, epoch=0, iters_per_epoch=1000, epochs=2))
    expected = 0.996 * before + 0.004 * student.head.weight
    torch.testing.assert_close(teacher.head.weight, expected)


def test_the_student_is_reported_and_the_teacher_evaluated_beside_it():
    """The released code keeps best.pth by the student's mIoU and logs the EMA model's too."""
    method = METHODS["unimatch_v2"]
    assert method.reported().key == "model"
    assert [n.key for n in method.evaluated()] == ["model", "model_ema"]
    assert {n.key: n.ema_of for n in method.networks} == {"model": None, "model_ema": "model"}
    assert [n.name for n in method.networks] == ["student", "teacher"]  # what --model takes


def test_complementary_masks_as_released():
    torch.manual_seed(0)
    masks = perturb.complementary_masks(2 * 8, 32, torch.device("cpu"))
    first, second = masks.chunk(2)
    assert torch.equal(first + second, torch.full_like(first, 2.0))
    untouched = (first == 1).all(1)
    assert untouched.sum() == 4  # int(8 * 0.5) image pairs keep every channel
    assert set(first[~untouched].unique().tolist()) == {0.0, 2.0}
    with pytest.raises(ValueError, match="even batch"):
        perturb.complementary_masks(5, 4, torch.device("cpu"))


def test_a_vit_config_trains_unimatch_v2_and_imas_but_not_ps_mt():
    from imas.errors import ConfigError
    from imas.experiment import load_experiment

    vit = ["model.encoder=vit_toy", "model.head=dpt", "model.pretrained=", "model.stem=deep"]
    vit += ["model.backbone_width=64", "model.decoder_channels=256"]
    for name in ("unimatch_v2", "imas"):
        cfg = load_experiment(f"exps/toy/{name}.yaml", vit)
        assert cfg.model.head.value == "dpt" and cfg.train.method == name
    with pytest.raises(ConfigError, match="train.method ps_mt needs model.head deeplabv3plus"):
        load_experiment("exps/toy/ps_mt.yaml", vit)
