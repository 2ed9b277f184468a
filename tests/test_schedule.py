"""Poly learning rate and the two-group SGD / AdamW."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imas.schedule import build_optimizer, poly_lr, set_lr


def test_poly_lr_values():
    assert poly_lr(0.01, 0, 1000) == pytest.approx(0.01)
    assert poly_lr(0.01, 500, 1000) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 500, 1000, power=1.0) == pytest.approx(0.005)
    assert poly_lr(0.01, 1000, 1000) == 0.0
    assert poly_lr(0.01, 1500, 1000) == 0.0  # clamped past the end, never negative or complex


def test_poly_lr_bad_arguments():
    with pytest.raises(ValueError):
        poly_lr(0.01, 0, 0)
    with pytest.raises(ValueError):
        poly_lr(0.01, -1, 10)


def test_two_groups_with_multipliers():
    backbone, decoder = nn.Linear(3, 4), nn.Linear(4, 2)
    opt = build_optimizer(
        backbone.parameters(),
        decoder.parameters(),
        lr=1e-3,
        momentum=0.9,
        weight_decay=1e-4,
        decoder_lr_mult=10,
    )
    assert isinstance(opt, torch.optim.SGD)
    low, high = opt.param_groups
    assert [g["lr_mult"] for g in opt.param_groups] == [1.0, 10]
    assert low["lr"] == pytest.approx(1e-3) and high["lr"] == pytest.approx(1e-2)
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 1e-4 for g in opt.param_groups)
    assert len(low["params"]) == 2 and len(high["params"]) == 2

    set_lr(opt, poly_lr(1e-3, 50, 100))
    expected = 1e-3 * 0.5**0.9
    assert low["lr"] == pytest.approx(expected) and high["lr"] == pytest.approx(10 * expected)


def test_lr_mult_survives_state_dict_round_trip():
    model = nn.Linear(2, 2)
    opt = build_optimizer([model.weight], [model.bias], 0.1, 0.9, 0.0, 5.0)
    fresh = build_optimizer([model.weight], [model.bias], 0.1, 0.9, 0.0, 1.0)
    fresh.load_state_dict(opt.state_dict())
    set_lr(fresh, 0.2)
    assert [g["lr"] for g in fresh.param_groups] == pytest.approx([0.2, 1.0])


def test_adamw_over_the_same_groups():
    backbone, decoder = nn.Linear(3, 4), nn.Linear(4, 2)
    opt = build_optimizer(backbone.parameters(), decoder.parameters(), 1e-3, 0.9, 0.01, 2.0, kind="adamw")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["betas"] for g in opt.param_groups] == [(0.9, 0.999)] * 2
    set_lr(opt, 5e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 1e-3])
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer(backbone.parameters(), decoder.parameters(), 1e-3, 0.9, 0.0, 1.0, kind="adam")
