"""EMA teacher (method.md §8): epoch-0 copy, the decay on parameters and BN statistics, int buffers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imas.ema import EMATeacher


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def train_step(model: nn.Module, seed: int) -> None:
    """One SGD step in train mode: moves parameters, BN running stats and num_batches_tracked."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    # Weight decay moves every parameter: the first conv's bias feeds a BN, so its gradient is 0 up to
    # rounding (exactly 0 with one thread), and without decay it could stay equal in teacher and student.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    opt.zero_grad()
    model(torch.randn(2, 3, 5, 5, generator=gen)).square().mean().backward()
    opt.step()


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_teacher_is_a_frozen_eval_copy():
    student = tiny_net()
    train_step(student, 0)  # leaves .grad on the student's parameters
    ema = EMATeacher(student)
    assert not ema.module.training
    assert all(not p.requires_grad and p.grad is None for p in ema.module.parameters())
    assert all(p.requires_grad for p in student.parameters())  # the student is not touched
    for k, v in student.state_dict().items():
        assert torch.equal(ema.state_dict()[k], v)
        assert ema.state_dict()[k].data_ptr() != v.data_ptr()  # a copy, not shared storage


def test_epoch0_copies_exactly():
    student = tiny_net()
    ema = EMATeacher(student)
    for it in range(3):
        train_step(student, it)
        ema.update(student, iteration=it, epoch=0)
        for k, v in student.state_dict().items():
            assert torch.equal(ema.state_dict()[k], v), k
    assert ema.decay_at(5, 0) == 0.0


@pytest.mark.parametrize("iteration,expected_decay", [(10, 1 - 1 / 11), (1000, 0.996)])
def test_later_step_follows_the_formula(iteration, expected_decay):
    student = tiny_net()
    ema = EMATeacher(student, decay=0.996)
    train_step(student, 1)
    ema.update(student, iteration=0, epoch=0)
    for s in range(2, 4):
        train_step(student, s)  # now teacher and student differ everywhere
    teacher_before, student_before = state(ema.module), state(student)
    ema.update(student, iteration=iteration, epoch=1)
    d = ema.decay_at(iteration, 1)
    assert d == pytest.approx(expected_decay)
    after = ema.state_dict()
    for k, t in teacher_before.items():
        s = student_before[k]
        if k.endswith("num_batches_tracked"):
            assert t.dtype == torch.long and torch.equal(after[k], s)  # copied, never averaged
            assert after[k].item() == 3
        else:
            assert not torch.equal(t, s), k  # the case is non-trivial
            torch.testing.assert_close(after[k], d * t + (1 - d) * s, atol=1e-6, rtol=1e-6)
    # BN running statistics took part.
    assert any("running_mean" in k for k in after) and any("running_var" in k for k in after)
    # The student is untouched and keeps its gradients; the teacher stays frozen in eval mode.
    for k, v in student.state_dict().items():
        assert torch.equal(v, student_before[k])
    assert all(p.grad is not None for p in student.parameters())
    assert not ema.module.training
    assert all(not p.requires_grad and p.grad is None for p in ema.module.parameters())


def test_teacher_forward_has_no_grad_and_stays_in_eval():
    student = tiny_net()
    ema = EMATeacher(student)
    ema.module.train()  # even if someone flips it, the next update puts it back
    ema.update(student, 0, 0)
    assert not ema.module.training
    out = ema(torch.randn(1, 3, 5, 5))
    assert out.shape == (1, 2, 5, 5) and not out.requires_grad


def test_state_dict_round_trip():
    student = tiny_net()
    ema = EMATeacher(student)
    train_step(student, 4)
    ema.update(student, 100, 2)
    saved = state(ema.module)
    other = EMATeacher(tiny_net())
    other.load_state_dict(saved)
    assert not other.module.training
    for k, v in saved.items():
        assert torch.equal(other.state_dict()[k], v)
    # Keys are the student's own, so the teacher loads into a plain model too.
    plain = tiny_net()
    plain.load_state_dict(ema.state_dict())


def test_wrapped_student_is_unwrapped():
    student = tiny_net()
    wrapped = nn.DataParallel(student)
    ema = EMATeacher(wrapped)
    assert not isinstance(ema.module, nn.DataParallel)
    train_step(student, 5)
    ema.update(wrapped, 0, 0)
    for k, v in student.state_dict().items():
        assert torch.equal(ema.state_dict()[k], v)
