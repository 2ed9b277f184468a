"""Unsupervised loss (method.md §3): masked, instance-weighted CE over all pixels; inputs untouched."""

from __future__ import annotations

import math

import pytest
import torch

from imas.losses import unsupervised_loss


def random_view(seed: int, b: int = 3, k: int = 4, h: int = 6, w: int = 8):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(b, k, h, w, generator=gen)
    label = torch.randint(0, k, (b, h, w), generator=gen)
    conf = torch.rand(b, h, w, generator=gen)
    weight = torch.rand(b, generator=gen)
    return logits, label, conf, weight


def reference(logits, label, conf, tau, weight=None, valid=None) -> float:
    """Pixel by pixel in float64, straight from the formula of method.md §3."""
    logp = logits.double().log_softmax(1)
    b, _, h, w = logits.shape
    total = 0.0
    for i in range(b):
        loss_i = 0.0
        for y in range(h):
            for x in range(w):
                c = int(label[i, y, x])
                keep = conf[i, y, x] >= tau and c != 255 and (valid is None or bool(valid[i, y, x]))
                if keep:
                    loss_i -= float(logp[i, c, y, x])
        total += (1.0 if weight is None else float(weight[i])) * loss_i / (h * w)
    return total / b


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.0, 0.5, 0.95])
def test_matches_reference(seed, tau):
    logits, label, conf, weight = random_view(seed)
    got = unsupervised_loss(logits, label, conf, tau, weight)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(reference(logits, label, conf, tau, weight), rel=1e-5, abs=1e-6)


def test_no_weight_equals_all_ones():
    logits, label, conf, _ = random_view(3)
    a = unsupervised_loss(logits, label, conf, 0.3)
    b = unsupervised_loss(logits, label, conf, 0.3, torch.ones(3))
    assert torch.equal(a, b)
    assert a.item() == pytest.approx(reference(logits, label, conf, 0.3), rel=1e-5)


def test_mean_runs_over_all_pixels():
    # Uniform logits: CE = log K at every pixel. Half the pixels unconfident → loss = ½ log K, not log K.
    k, h, w = 5, 4, 6
    logits = torch.zeros(2, k, h, w)
    label = torch.zeros(2, h, w, dtype=torch.long)
    conf = torch.ones(2, h, w)
    conf[:, :, : w // 2] = 0.1
    loss = unsupervised_loss(logits, label, conf, 0.9)
    assert loss.item() == pytest.approx(0.5 * math.log(k), rel=1e-6)


def test_valid_mask_and_255_exclude_padding():
    logits, label, conf, weight = random_view(4)
    conf = torch.ones_like(conf)
    valid = torch.ones_like(label, dtype=torch.bool)
    valid[:, -2:, :] = False  # bottom padding
    got = unsupervised_loss(logits, label, conf, 0.5, weight, valid=valid)
    assert got.item() == pytest.approx(reference(logits, label, conf, 0.5, weight, valid), rel=1e-5)
    # Padding labelled 255: masked out without a valid mask, the tensor is left as it was.
    padded = label.clone()
    padded[:, -2:, :] = 255
    before = padded.clone()
    via_255 = unsupervised_loss(logits, padded, conf, 0.5, weight)
    torch.testing.assert_close(via_255, got)
    assert torch.equal(padded, before)
    # Default (valid=None) keeps the padding pixels, as the released runs did.
    assert unsupervised_loss(logits, label, conf, 0.5, weight).item() > got.item()


def test_inputs_unchanged_and_gradient_to_logits_only():
    logits, label, conf, weight = random_view(5)
    logits.requires_grad_(True)
    conf.requires_grad_(True)
    weight.requires_grad_(True)
    valid = torch.rand(label.shape) > 0.2
    clones = [t.detach().clone() for t in (logits, label, conf, weight, valid)]
    loss = unsupervised_loss(logits, label, conf, 0.4, weight, valid)
    loss.backward()
    for original, clone in zip((logits, label, conf, weight, valid), clones):
        assert torch.equal(original.detach(), clone)
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert conf.grad is None and weight.grad is None
    # Unconfident pixels get no gradient.
    masked = (conf < 0.4) | ~valid
    assert (logits.grad.permute(0, 2, 3, 1)[masked] == 0).all()


def test_half_precision_logits():
    logits, label, conf, weight = random_view(6)
    got = unsupervised_loss(logits.bfloat16(), label, conf, 0.5, weight)
    assert got.dtype == torch.float32
    expected = reference(logits.bfloat16().float(), label, conf, 0.5, weight)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_bad_shapes_are_errors():
    logits, label, conf, weight = random_view(7)
    with pytest.raises(ValueError):
        unsupervised_loss(logits, label[:, :-1], conf, 0.5)
    with pytest.raises(ValueError):
        unsupervised_loss(logits, label, conf, 0.5, weight[:2])
    with pytest.raises(ValueError):
        unsupervised_loss(logits, label, conf, 0.5, valid=torch.ones(3, 6, 7, dtype=torch.bool))
