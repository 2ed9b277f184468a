"""PS-MT's parts against direct computations of the paper's equations (and the released code's choices) on
fixed inputs, its teacher schedule, its warm-up, and its teachers' ensemble as a checkpoint network."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_methods import batches, make

from imas.dist import DistInfo
from imas.errors import ConfigError
from imas.experiment import load_experiment
from imas.methods import Progress
from imas.methods.ps_mt import (
    TEACHERS,
    assisted,
    confidence_weighted_loss,
    cosine_ramp_up,
    ensemble_target,
    t_vat_noise,
)
from imas.models import Ensemble, build_model
from imas.networks import load_trained_model, model_names
from imas.normalization import normalize


def test_unsupervised_loss_is_the_confidence_weighted_ce_of_the_confident_pixels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, generator=gen)
    target = 3 * torch.randn(2, 4, 3, 5, generator=gen)
    loss, confidence = confidence_weighted_loss(logits, target, 0.6)
    terms = []
    for b in range(2):
        for y in range(3):
            for x in range(5):
                p = torch.softmax(target[b, :, y, x], 0)
                c, label = p.max(0)
                if c >= 0.6:
                    terms.append(c * -torch.log_softmax(logits[b, :, y, x], 0)[label])
    assert 0 < len(terms) < 30  # some pixels pass, some do not
    assert loss == pytest.approx(float(sum(terms) / len(terms)), rel=1e-5)
    assert confidence.shape == (2, 3, 5)
    assert confidence_weighted_loss(logits, torch.zeros_like(target), 0.5)[0].item() == 0.0  # none passes


def test_the_assisting_teacher_keeps_its_top_k_classes_and_the_core_fills_the_rest():
    gen = torch.Generator().manual_seed(1)
    core = torch.randn(2, 5, 3, 3, generator=gen)
    assist = torch.randn(2, 5, 3, 3, generator=gen)
    out = assisted(core, assist, 2)
    for b in range(2):
        for y in range(3):
            for x in range(3):
                top = set(assist[b, :, y, x].argsort(descending=True)[:2].tolist())
                for k in range(5):
                    expected = assist[b, k, y, x] if k in top else core[b, k, y, x]
                    assert out[b, k, y, x] == expected
    assert torch.equal(assisted(core, assist, 5), assist)  # k >= K keeps every class
    # The target: the mean of the teacher whose turn it is and the assisted other one.
    assert torch.equal(ensemble_target([core, assist], 0, 2), torch.stack([core, out]).mean(0))
    assert torch.equal(ensemble_target([assist, core], 1, 2), torch.stack([out, core]).mean(0))


def test_t_vat_is_the_normalised_gradient_of_the_ensembles_kl():
    gen = torch.Generator().manual_seed(2)
    decoders = [torch.nn.Conv2d(6, 3, 1) for _ in range(2)]
    features = torch.randn(2, 6, 4, 4, generator=gen, requires_grad=True)
    torch.manual_seed(7)
    noise = t_vat_noise(features, decoders, xi=1e-1, eps=2.0)
    # Direct: the same random start, the KL written out, its gradient by autograd in float64.
    torch.manual_seed(7)
    d = torch.rand_like(features) - 0.5
    d = (d / (d.flatten(1).norm(dim=1).view(2, 1, 1, 1) + 1e-8)).double().requires_grad_()
    f = features.detach().double()
    weights = [(c.weight.double(), c.bias.double()) for c in decoders]

    def mean_logits(x):
        return torch.stack([F.conv2d(x, w, b) for w, b in weights]).mean(0)

    p = torch.softmax(mean_logits(f), 1)
    log_q = torch.log_softmax(mean_logits(f + 0.1 * d), 1)
    kl = (p * (p.log() - log_q)).sum() / 2  # batchmean: the sum over all, over the batch size
    (grad,) = torch.autograd.grad(kl, d)
    expected = 2.0 * grad / (grad.flatten(1).norm(dim=1).view(2, 1, 1, 1) + 1e-8)
    assert torch.allclose(noise.double(), expected, rtol=1e-3, atol=1e-4)  # fp32 against fp64
    assert noise.flatten(1).norm(dim=1).tolist() == pytest.approx([2.0, 2.0], rel=1e-3)  # |g| + 1e-8
    assert features.grad is None and all(c.weight.grad is None for c in decoders)


def test_the_ramp_up_is_the_released_cosine():
    assert cosine_ramp_up(0, 100) == 0.0
    assert cosine_ramp_up(50, 100) == pytest.approx(0.5)
    assert cosine_ramp_up(25, 100) == pytest.approx(1 - (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_ramp_up(100, 100) == cosine_ramp_up(500, 100) == 1.0
    assert cosine_ramp_up(3, 0) == 1.0


def test_teachers_take_turns_by_semi_supervised_epoch_after_the_warm_up():
    method = make("ps_mt", ("ps_mt.warm_up_epochs=2", "ps_mt.ema_decay=0.9"))
    student, teachers = method.models["model"], [method.models[k] for k in TEACHERS]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    # 3 labeled iterations per pass: the warm-up is the first 6; epochs of 10 iterations after it.
    turns = [method.turn(Progress(i, 0, 10, 5, labeled_iters=3)) for i in (6, 15, 16, 25, 26, 36)]
    assert turns == [0, 0, 1, 1, 0, 1]
    for iteration, moved in ((5, None), (6, 0), (16, 1)):
        before = [[p.clone() for p in t.parameters()] for t in teachers]
        method.after_step(Progress(iteration, 0, 10, 5, labeled_iters=3))
        for index, teacher in enumerate(teachers):
            for old, new, s in zip(before[index], teacher.parameters(), student.parameters()):
                expected = 0.9 * old + 0.1 * s if index == moved else old
                assert torch.allclose(new, expected), (iteration, index)


def test_the_warm_up_trains_each_network_on_its_own_view():
    method = make("ps_mt", ("ps_mt.warm_up_epochs=1",))
    labeled, unlabeled = batches()
    nets = {key: method.models[key] for key in method.trained_keys()}
    torch.manual_seed(0)
    out = method.step(nets, labeled, unlabeled, Progress(0, 0, 10, 2, labeled_iters=2))
    assert set(out.scalars) == {"loss_x", "loss_teacher1", "loss_teacher2"}
    assert out.loss.item() == pytest.approx(float(sum(out.scalars.values())), rel=1e-6)
    out.loss.backward()
    assert all(p.grad is not None for net in nets.values() for p in net.parameters())
    # The teachers saw the weak view: their loss is the CE of their logits on it.
    expected = F.cross_entropy(method.models["teacher1"](normalize(labeled["image"])).logits, labeled["mask"])
    assert out.scalars["loss_teacher1"] == pytest.approx(expected.item(), rel=1e-5)
    torch.manual_seed(0)
    semi = method.step(nets, labeled, unlabeled, Progress(2, 0, 10, 2, labeled_iters=2))
    assert {"loss_u", "ramp_up", "confident"} <= set(semi.scalars)


def test_one_teacher_or_three_are_refused_in_one_sentence():
    for count in (1, 3):
        with pytest.raises(ConfigError, match=r"^ps_mt\.teachers must be 2 .*got " + str(count) + "$"):
            load_experiment("exps/toy/ps_mt.yaml", [f"ps_mt.teachers={count}"])


def test_the_teachers_ensemble_loads_from_a_checkpoint_as_the_mean_of_its_members(tmp_path):
    cfg = load_experiment(
        "exps/toy/ps_mt.yaml", ["model.pretrained=", "model.backbone_width=8", "model.decoder_channels=16"]
    )
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    members = {}
    for seed, key in enumerate(TEACHERS):
        torch.manual_seed(seed)
        members[key] = build_model(cfg, info, pretrained=False).eval()
    ckpt = {"config": {"train": {"method": "ps_mt"}, "data": {"num_classes": 6}}}
    ckpt |= {key: m.state_dict() for key, m in members.items()}
    assert model_names(ckpt) == ["teacher_1", "teacher_2", "teachers"]  # the student's left out here
    x = torch.randn(1, 3, 32, 32)
    for asked in ("teachers", "teacher"):  # the default eval.model reads the reported ensemble
        model, key = load_trained_model(cfg, ckpt, tmp_path / "x.pth", asked, info)
        assert key == "teachers" and isinstance(model, Ensemble)
        with torch.no_grad():
            expected = (members["teacher1"](x).logits + members["teacher2"](x).logits) / 2
            assert torch.allclose(model(x).logits, expected, atol=1e-6)
    model, key = load_trained_model(cfg, ckpt, tmp_path / "x.pth", "teacher_2", info)
    assert key == "teacher2" and not isinstance(model, Ensemble)
