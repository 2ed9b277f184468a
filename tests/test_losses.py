"""Supervised losses: CE, OHEM against a slow reference, aux weighting, inputs left untouched."""

from __future__ import annotations

import math

import pytest
import torch

from imas.losses import SupervisedLoss, build_supervised_loss, cross_entropy, ohem_cross_entropy


def random_batch(seed: int, b: int = 2, k: int = 5, h: int = 9, w: int = 11, ignored: float = 0.2):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, k, h, w, generator=gen)
    target = torch.randint(0, k, (b, h, w), generator=gen)
    target[torch.rand(b, h, w, generator=gen) < ignored] = 255
    return logits, target


def reference_ohem(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> float:
    """Pixel by pixel in float64 with a full sort: the definition of method.md §7 written out."""
    probs = logits.double().softmax(1)
    b, _, h, w = logits.shape
    pixels = []  # (probability of the ground-truth class, −log of it)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                label = int(target[i, y, x])
                if label != 255:
                    p = float(probs[i, label, y, x])
                    pixels.append((p, -math.log(p)))
    if len(pixels) < min_kept:
        kept = pixels
    else:
        kth = sorted(p for p, _ in pixels)[min_kept - 1]
        threshold = max(thresh, kth)
        kept = [(p, nll) for p, nll in pixels if p <= threshold]
    return sum(nll for _, nll in kept) / len(kept)


def test_cross_entropy_ignores_255():
    logits, target = random_batch(0)
    valid = target != 255
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(cross_entropy(logits, target), expected, atol=1e-6)
    assert valid.sum() < valid.numel()  # the batch really has ignored pixels


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    for loss in (cross_entropy(logits, target), ohem_cross_entropy(logits, target, min_kept=5)):
        assert loss.item() == 0.0
        loss.backward()  # still attached to the graph


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_kept", [1, 7, 60, 150])
def test_ohem_matches_reference_when_enough_valid_pixels(seed, min_kept):
    logits, target = random_batch(seed)
    assert (target != 255).sum() >= min_kept
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=min_kept)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_ohem(logits, target, 0.7, min_kept), rel=1e-5)


def test_ohem_really_drops_pixels():
    logits, target = random_batch(3)
    plain = cross_entropy(logits, target).item()
    hard = ohem_cross_entropy(logits, target, thresh=0.3, min_kept=10).item()
    assert hard > plain  # easy pixels (p > 0.3) left out raise the mean loss


@pytest.mark.parametrize("min_kept", [10**6, "valid", "valid+1"])
def test_ohem_is_plain_ce_with_fewer_valid_pixels_than_min_kept(min_kept):
    logits, target = random_batch(4)
    num_valid = int((target != 255).sum())
    min_kept = {"valid": num_valid, "valid+1": num_valid + 1}.get(min_kept, min_kept)
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=min_kept)
    assert torch.allclose(got, cross_entropy(logits, target), atol=1e-6)
    assert got.item() == pytest.approx(reference_ohem(logits, target, 0.7, min_kept), rel=1e-5)


def test_ohem_threshold_is_at_least_thresh():
    """A tiny min_kept must not shrink the kept set below the pixels with p <= thresh."""
    logits, target = random_batch(5)
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=1)
    assert got.item() == pytest.approx(reference_ohem(logits, target, 0.7, 1), rel=1e-5)
    probs = logits.softmax(1).gather(1, target.clamp(max=4).unsqueeze(1)).squeeze(1)
    assert ((probs <= 0.7) & (target != 255)).sum() > 1


def test_ohem_min_kept_zero_uses_thresh_alone():
    logits, target = random_batch(11)
    valid = target != 255
    nll = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    kept = valid & (torch.exp(-nll) <= 0.7)
    expected = nll[kept].mean()
    assert torch.allclose(ohem_cross_entropy(logits, target, thresh=0.7, min_kept=0), expected, atol=1e-6)


def test_ohem_under_autocast_and_half_logits():
    logits, target = random_batch(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ohem_cross_entropy(logits.bfloat16(), target, min_kept=20)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_ohem(logits.bfloat16().float(), target, 0.7, 20), rel=1e-4)


def test_ohem_gradient_flows_to_kept_pixels_only():
    logits, target = random_batch(7)
    logits.requires_grad_(True)
    ohem_cross_entropy(logits, target, thresh=0.3, min_kept=5).backward()
    touched = logits.grad.abs().sum(1) > 0
    assert not touched[target == 255].any()
    assert 0 < touched.sum() < (target != 255).sum()


@pytest.mark.parametrize("kind", ["ce", "ohem"])
def test_supervised_loss_with_aux_head(kind):
    logits, target = random_batch(8)
    aux, _ = random_batch(9)
    logits_before, aux_before, target_before = logits.clone(), aux.clone(), target.clone()
    criterion = build_supervised_loss(kind, ohem_thresh=0.7, ohem_min_kept=30, aux_weight=0.4)
    main_only = criterion(logits, target)
    aux_only = criterion(aux, target)
    both = criterion(logits, target, aux)
    assert both.item() == pytest.approx(main_only.item() + 0.4 * aux_only.item(), rel=1e-6)
    assert torch.equal(logits, logits_before) and torch.equal(aux, aux_before)
    assert torch.equal(target, target_before)


def test_supervised_loss_kinds():
    logits, target = random_batch(10)
    ce = SupervisedLoss("ce")(logits, target)
    assert torch.allclose(ce, cross_entropy(logits, target))
    ohem = SupervisedLoss("ohem", ohem_thresh=0.7, ohem_min_kept=10)(logits, target)
    assert torch.allclose(ohem, ohem_cross_entropy(logits, target, 0.7, 10))
    with pytest.raises(ValueError, match="ce, ohem"):
        SupervisedLoss("focal")


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="target"):
        cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long))
