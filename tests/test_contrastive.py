"""U2PL's tensor maths (imas.contrastive): schedule, percentile split, unsupervised loss, one-hot, negative
queue and the contrastive loss, each against a small hand-computable case or a direct reference."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imas import contrastive
from imas.contrastive import (
    NegativeBank,
    class_ranks,
    contrastive_loss,
    contrastive_problem,
    contrastive_targets,
    drop_percentile,
    entropy_split,
    label_onehot,
    masked_percentile,
    nearest_downsample,
    negative_candidates,
    pixel_entropy,
    released_queue_sizes,
    reliable_mask,
    reliable_pseudo_label_loss,
    unreliable_percent,
)

# ------------------------------------------------------------------------------------------- schedule


def test_schedule_is_linear_in_the_epoch():
    assert unreliable_percent(0, 80) == 20.0
    assert unreliable_percent(40, 80) == 10.0
    assert unreliable_percent(20, 80, alpha0=40.0) == 30.0
    assert drop_percentile(0, 80) == 80.0
    assert drop_percentile(79, 80) == pytest.approx(99.75)
    assert drop_percentile(100, 200, drop_percent=60.0) == 80.0
    with pytest.raises(ValueError):
        unreliable_percent(0, 0)


# ------------------------------------------------------------------------------------- percentile split


@pytest.mark.parametrize("seed", [0, 1])
def test_masked_percentile_matches_numpy(seed):
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(2, 5, 7, generator=gen)
    mask = torch.rand(2, 5, 7, generator=gen) < 0.6
    qs = [0.0, 12.5, 37.0, 50.0, 80.0, 99.75, 100.0]
    got = masked_percentile(values, mask, qs)
    expected = np.percentile(values[mask].double().numpy(), qs)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    assert masked_percentile(values, mask, 37.0).dim() == 0


def test_masked_percentile_of_nothing_is_nan():
    values = torch.rand(3, 3)
    assert torch.isnan(masked_percentile(values, torch.zeros(3, 3, dtype=torch.bool), 50.0))
    with pytest.raises(ValueError):
        masked_percentile(values, values > 0, 101.0)


def test_entropy_split_by_hand():
    entropy = torch.tensor([[[0.1, 0.2, 0.3, 0.4, 0.5, 0.0]]])
    valid = torch.tensor([[[True, True, True, True, True, False]]])
    # Over the five valid values: pct25 = 0.2, pct75 = 0.4; the invalid 0.0 is in neither set.
    low, high = entropy_split(entropy, valid, 25.0)
    assert low.tolist() == [[[True, True, False, False, False, False]]]
    assert high.tolist() == [[[False, False, False, True, True, False]]]


def test_pixel_entropy():
    prob = torch.tensor([0.5, 0.5, 0.0]).view(1, 3, 1, 1)
    assert pixel_entropy(prob).item() == pytest.approx(math.log(2), abs=1e-6)


def test_reliable_loss_by_hand():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 2, 2, generator=gen, requires_grad=True)
    pseudo = torch.tensor([[[0, 2], [1, 1]]])
    entropy = torch.tensor([[[0.1, 0.2], [0.9, 0.3]]])
    # pct75 of {0.1, 0.2, 0.3, 0.9} = 0.3 + 0.25·0.6 = 0.45: the 0.9 pixel is dropped, 3 pixels kept.
    kept = reliable_mask(entropy, pseudo != 255, 75.0)
    assert kept.tolist() == [[[True, True], [False, True]]]
    nll = F.cross_entropy(logits, pseudo, reduction="none")
    expected = 4 * (nll[0, 0, 0] + nll[0, 0, 1] + nll[0, 1, 1]) / 9
    loss = reliable_pseudo_label_loss(logits, pseudo, entropy, 75.0)
    assert torch.allclose(loss, expected)
    # The released form: target 255 where dropped, then (B·H·W / kept) × the mean CE.
    target = pseudo.masked_fill(~kept, 255)
    released = 4 / 3 * F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(loss, released)
    loss.backward()
    assert logits.grad[0, :, 1, 0].abs().sum() == 0  # the dropped pixel


def test_reliable_loss_without_any_pixel_is_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = reliable_pseudo_label_loss(logits, torch.full((1, 2, 2), 255), torch.rand(1, 2, 2), 80.0)
    assert loss.item() == 0.0
    loss.backward()


# ---------------------------------------------------------------------------------------------- one-hot


def test_released_onehot_collects_every_image_in_the_first():
    labels = torch.tensor([[[0, 1], [2, 255]], [[3, 3], [255, 1]], [[1, 0], [0, 2]]])
    out = label_onehot(labels, 4, "released")
    assert out.shape == (3, 4, 2, 2) and out.dtype == torch.bool
    # Image 0, classes per pixel: union over the batch, 255 of another image counts as class 0, nothing
    # where image 0 itself is ignored (measured on u2pl/utils/utils.py label_onehot).
    assert out[0].permute(1, 2, 0).int().tolist() == [
        [[1, 1, 0, 1], [1, 1, 0, 1]],
        [[1, 0, 1, 0], [0, 0, 0, 0]],
    ]
    assert not out[1:].any()
    fixed = label_onehot(labels, 4, "per_image")
    assert fixed.sum(1).tolist() == [[[1, 1], [1, 0]], [[1, 1], [0, 1]], [[1, 1], [1, 1]]]
    assert fixed[1, 3, 0, 0] and fixed[2, 2, 1, 1]
    assert torch.equal(label_onehot(labels[:1], 4, "released"), label_onehot(labels[:1], 4, "per_image"))


@pytest.mark.parametrize("mode", ["released", "per_image"])
def test_downsampling_labels_first_equals_the_released_order(mode):
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (3, 9, 11), generator=gen)
    labels[torch.rand(3, 9, 11, generator=gen) < 0.2] = 255
    released_order = F.interpolate(label_onehot(labels, 5, mode).float(), size=(4, 5), mode="nearest")
    assert torch.equal(released_order.bool(), label_onehot(nearest_downsample(labels, (4, 5)), 5, mode))


def test_contrastive_targets_layout():
    label_l = torch.tensor([[[0, 255], [1, 1]]])
    pseudo = torch.tensor([[[2, 2], [0, 1]], [[1, 1], [1, 1]]])
    low_u = torch.tensor([[[True, False], [True, True]], [[False, False], [False, True]]])
    onehot, low, high = contrastive_targets(label_l, pseudo, low_u, ~low_u, (2, 2), 3, "per_image")
    assert onehot.shape == (3, 3, 2, 2)
    assert low[0].tolist() == [[True, False], [True, True]] == high[0].tolist()  # labeled: label valid
    assert torch.equal(low[1:], low_u) and torch.equal(high[1:], ~low_u)


# ------------------------------------------------------------------------------------------------ queue


def test_queue_ring_by_hand():
    bank = NegativeBank([3, 2], dim=1)
    keys = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert bank.enqueue(keys, mask).tolist() == [2, 3]
    assert bank.fill.tolist() == [2, 2] and bank.ptr.tolist() == [2, 1]
    assert bank.keys[:2, 0].tolist() == [1.0, 2.0]
    assert sorted(bank.keys[3:, 0].tolist()) == [4.0, 5.0]  # of 3, 4, 5 the newest two stay
    bank.enqueue(torch.tensor([[6.0], [7.0]]), torch.tensor([[1, 1], [0, 0]], dtype=torch.bool))
    assert sorted(bank.keys[:3, 0].tolist()) == [2.0, 6.0, 7.0]  # 1 was the oldest
    assert bank.fill.tolist() == [3, 2] and bank.ptr.tolist() == [1, 1]
    # Sampling draws only written keys of the asked class.
    draws = bank.sample(torch.tensor([0, 1, 1]), 40)
    assert draws.shape == (3, 40, 1)
    assert set(draws[0, :, 0].tolist()) <= {2.0, 6.0, 7.0}
    assert set(draws[1:, :, 0].flatten().tolist()) <= {4.0, 5.0}


def test_queue_matches_the_released_append_and_truncate():
    """Against the released semantics: append the selected keys, keep the newest `size` (as multisets)."""
    rng = random.Random(0)
    sizes = [4, 7, 1]
    bank = NegativeBank(sizes, dim=1)
    reference: list[list[float]] = [[] for _ in sizes]
    next_key = 0.0
    for _ in range(12):
        n = rng.randint(0, 9)
        keys = torch.arange(next_key, next_key + n).unsqueeze(1)
        next_key += n
        mask = torch.rand(len(sizes), n) < 0.5
        bank.enqueue(keys, mask)
        for c, size in enumerate(sizes):
            reference[c] = (reference[c] + keys[mask[c], 0].tolist())[-size:]
            offset = sum(sizes[:c])
            fill = int(bank.fill[c])
            assert fill == len(reference[c])
            assert sorted(bank.keys[offset : offset + fill, 0].tolist()) == sorted(reference[c])


def test_queue_state_round_trip_with_weights_only_loading():
    bank = NegativeBank([5, 3], dim=2)
    gen = torch.Generator().manual_seed(1)
    bank.enqueue(torch.randn(6, 2, generator=gen), torch.rand(2, 6, generator=gen) < 0.7)
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    restored = NegativeBank([5, 3], dim=2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for name in ("keys", "ptr", "fill"):
        assert torch.equal(getattr(restored, name), getattr(bank, name))
    more, mask = torch.randn(4, 2, generator=gen), torch.rand(2, 4, generator=gen) < 0.7
    bank.enqueue(more, mask)
    restored.enqueue(more, mask)
    assert torch.equal(restored.keys, bank.keys) and torch.equal(restored.ptr, bank.ptr)
    with pytest.raises(ValueError):
        NegativeBank([5, 4], dim=2).load_state_dict(bank.state_dict())


def test_released_queue_sizes():
    assert released_queue_sizes(3) == [50000, 30000, 30000]


# ------------------------------------------------------------------------------------- selection rules


def test_class_ranks():
    prob = torch.tensor([0.15, 0.5, 0.3, 0.05]).view(1, 4, 1, 1)
    assert class_ranks(prob).flatten().tolist() == [2, 0, 1, 3]


def test_negative_rules_by_hand():
    # One labeled and one unlabeled image of one pixel, four classes, low_rank 2, high_rank 4.
    prob = torch.tensor([[0.15, 0.5, 0.3, 0.05], [0.6, 0.25, 0.1, 0.05]]).view(2, 4, 1, 1)
    high = torch.ones(2, 1, 1, dtype=torch.bool)
    args = dict(num_labeled=1, low_rank=2, high_rank=4)
    per_image = label_onehot(torch.tensor([0, 0]).view(2, 1, 1), 4, "per_image")
    paper = negative_candidates(prob, per_image, high, rule="paper", **args).flatten(1)
    # Labeled: not class 0 and ranked 0 or 1 -> classes 1, 2. Unlabeled: ranked 2 or 3 -> classes 2, 3.
    assert paper.int().tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]]
    released = negative_candidates(prob, per_image, high, rule="released", **args)
    assert not released.any()  # a pixel's own label ranks first: nothing under the released rule
    union = per_image.clone()
    union[1, 2] = True  # as the released one-hot marks another image's class 2 at this pixel
    released = negative_candidates(prob, union, high, rule="released", **args).flatten(1)
    assert released.int().tolist() == [[0, 0, 0, 0], [0, 0, 1, 0]]
    assert not negative_candidates(prob, union, ~high, rule="released", **args).any()  # low entropy


def test_contrastive_problem():
    assert "low_rank below 2" in contrastive_problem(2, 3, 20)
    assert contrastive_problem(3, 3, 20) is not None
    assert contrastive_problem(21, 3, 20) is None
    assert contrastive_problem(2, 1, 20) is None
    assert contrastive_problem(2, 3, 20, rule="paper") is None
    assert contrastive_problem(1) is not None


# ------------------------------------------------------------------------------------- contrastive loss


def _case(labels_l: list, pseudo: list, low_u: list, prob: list, k: int = 3, d: int = 4):
    """One labeled and one unlabeled 2x2 image, per-image one-hot, random features."""
    gen = torch.Generator().manual_seed(7)
    label_l = torch.tensor([labels_l])
    pseudo_u = torch.tensor([pseudo])
    low_u = torch.tensor([low_u])
    onehot, low, high = contrastive_targets(label_l, pseudo_u, low_u, ~low_u, (2, 2), k, "per_image")
    rep = torch.randn(2, d, 2, 2, generator=gen, requires_grad=True)
    rep_teacher = torch.randn(2, d, 2, 2, generator=gen)
    prob = torch.tensor(prob).view(2, 2, 2, k).permute(0, 3, 1, 2)  # given per pixel, stored [B, K, h, w]
    return rep, rep_teacher, prob, onehot, low, high


def _filled_bank(k: int, d: int) -> tuple[NegativeBank, torch.Tensor]:
    """A bank holding exactly one known key per class."""
    bank = NegativeBank([4] * k, dim=d)
    keys = torch.randn(k, d, generator=torch.Generator().manual_seed(11))
    bank.enqueue(keys, torch.eye(k, dtype=torch.bool))
    return bank, keys


def _term(anchor, positive, negative, num_negatives, temperature):
    """−log softmax of the positive among [positive, num_negatives × the same negative]."""
    pos = F.cosine_similarity(anchor, positive, dim=0) / temperature
    neg = F.cosine_similarity(anchor, negative, dim=0) / temperature
    return -pos + torch.logaddexp(pos, neg + math.log(num_negatives))


# Per pixel (row-major over the 2x2 image) class probabilities of the teacher.
PROB_3 = [
    [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.05, 0.9, 0.05], [0.6, 0.1, 0.3]],  # labeled
    [[0.5, 0.2, 0.3], [0.1, 0.2, 0.7], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]],  # unlabeled
]


@pytest.mark.parametrize("pairing", ["released", "matched"])
def test_contrastive_loss_against_direct_computation(pairing):
    # Candidates: class 0 = L(0,0), L(0,1); class 1 = L(1,0), L(1,1), U(0,0); class 2 = U(0,1), U(1,0)
    # (U(1,1) is not low-entropy). Anchors (p > 0.3): class 0 L(0,0), class 1 L(1,0), class 2 U(0,1).
    rep, rep_t, prob, onehot, low, high = _case(
        [[0, 0], [1, 1]], [[1, 2], [2, 2]], [[True, True], [True, False]], PROB_3
    )
    bank, keys = _filled_bank(3, 4)
    with torch.random.fork_rng():
        out = contrastive_loss(
            rep,
            rep_t,
            prob,
            onehot,
            low,
            high,
            1,
            bank,
            negative_threshold=0.0,
            pairing=pairing,
            num_queries=5,
            num_negatives=3,
        )  # negative_threshold 0: nothing is queued this step, the bank keeps its one key per class
    assert out.present.item() == 3 and out.terms.item() == 3 and out.new_keys.tolist() == [0, 0, 0]
    f = rep_t.permute(0, 2, 3, 1)  # [B, h, w, D]
    protos = [
        (f[0, 0, 0] + f[0, 0, 1]) / 2,
        (f[0, 1, 0] + f[0, 1, 1] + f[1, 0, 0]) / 3,
        (f[1, 0, 1] + f[1, 1, 0]) / 2,
    ]
    s = rep.permute(0, 2, 3, 1)
    anchors = [s[0, 0, 0], s[0, 1, 0], s[1, 0, 1]]
    expected = sum(_term(anchors[c], protos[c], keys[c], 3, 0.5) for c in range(3)) / 3
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    touched = rep.grad.abs().sum(1) > 0  # [B, h, w]
    assert touched.tolist() == [[[True, False], [True, False]], [[False, True], [False, False]]]


def test_released_pairing_takes_the_queue_of_the_t_th_present_class():
    # Class 0 has no candidate (labeled class-0 pixels are ignored): present = {1, 2}.
    rep, rep_t, prob, onehot, low, high = _case(
        [[255, 255], [1, 1]], [[1, 2], [2, 2]], [[True, True], [True, False]], PROB_3
    )
    bank, keys = _filled_bank(3, 4)
    s, f = rep.permute(0, 2, 3, 1), rep_t.permute(0, 2, 3, 1)
    proto1 = (f[0, 1, 0] + f[0, 1, 1] + f[1, 0, 0]) / 3
    proto2 = (f[1, 0, 1] + f[1, 1, 0]) / 2
    args = dict(negative_threshold=0.0, num_queries=4, num_negatives=2)
    released = contrastive_loss(rep, rep_t, prob, onehot, low, high, 1, bank, pairing="released", **args)
    # Term 0 (class 0) has no anchor, term 1 is class 1 against the queue of class 2 (the 2nd present
    # class), term 2 lies beyond the number of present classes; the divisor is still 2.
    assert released.present.item() == 2 and released.terms.item() == 1
    assert torch.allclose(released.loss, _term(s[0, 1, 0], proto1, keys[2], 2, 0.5) / 2, atol=1e-6)
    matched = contrastive_loss(rep, rep_t, prob, onehot, low, high, 1, bank, pairing="matched", **args)
    expected = (_term(s[0, 1, 0], proto1, keys[1], 2, 0.5) + _term(s[1, 0, 1], proto2, keys[2], 2, 0.5)) / 2
    assert matched.terms.item() == 2 and torch.allclose(matched.loss, expected, atol=1e-6)


def test_one_present_class_or_empty_queues_give_zero_attached_to_the_graph():
    rep, rep_t, prob, onehot, low, high = _case(
        [[1, 1], [1, 1]], [[1, 1], [1, 1]], [[True, True], [True, True]], PROB_3
    )
    bank, _ = _filled_bank(3, 4)
    out = contrastive_loss(rep, rep_t, prob, onehot, low, high, 1, bank, num_queries=4, num_negatives=2)
    assert out.present.item() == 1 and out.loss.item() == 0.0
    out.loss.backward()
    rep, rep_t, prob, onehot, low, high = _case(
        [[0, 0], [1, 1]], [[1, 2], [2, 2]], [[True, True], [True, False]], PROB_3
    )
    empty = NegativeBank([4, 4, 4], dim=4)
    out = contrastive_loss(
        rep, rep_t, prob, onehot, low, high, 1, empty, negative_threshold=0.0, num_queries=4, num_negatives=2
    )
    assert out.present.item() == 3 and out.terms.item() == 0 and out.loss.item() == 0.0


def _random_step(k: int, b_u: int = 2, size: int = 6, d: int = 8, seed: int = 0):
    """Released targets from random labels, pseudo-labels and teacher probabilities (all high entropy)."""
    gen = torch.Generator().manual_seed(seed)
    label_l = torch.randint(0, k, (1, size, size), generator=gen)
    pseudo = torch.randint(0, k, (b_u, size, size), generator=gen)
    every = torch.ones(b_u, size, size, dtype=torch.bool)
    onehot, low, high = contrastive_targets(label_l, pseudo, every, every, (size, size), k, "released")
    prob = torch.randn(1 + b_u, k, size, size, generator=gen).softmax(1)
    rep = torch.randn(1 + b_u, d, size, size, generator=gen, requires_grad=True)
    return rep, torch.randn(1 + b_u, d, size, size, generator=gen), prob, onehot, low, high


def test_two_classes_with_the_released_ranks_never_queue_a_negative():
    step = _random_step(k=2)
    bank = NegativeBank([16, 16], dim=8)
    out = contrastive_loss(*step, 1, bank, num_queries=4, num_negatives=2)
    assert out.new_keys.tolist() == [0, 0] and out.terms.item() == 0 and out.loss.item() == 0.0
    out = contrastive_loss(*step, 1, bank, low_rank=1, num_queries=4, num_negatives=2)
    assert out.new_keys.sum() > 0 and out.loss.item() > 0.0


def test_autocast_does_not_change_the_loss():
    step = _random_step(k=4, seed=1)
    losses = []
    for enabled in (False, True):
        bank = NegativeBank([32] * 4, dim=8)
        with torch.random.fork_rng(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            torch.manual_seed(0)
            losses.append(contrastive_loss(*step, 1, bank, num_queries=8, num_negatives=4).loss)
    assert losses[0].dtype == losses[1].dtype == torch.float32
    assert losses[0].item() > 0 and torch.equal(losses[0], losses[1])


def test_both_ways_of_enqueueing_give_the_same_queues():
    """The scattered write (few keys) and the ring rewrite (many) agree, a queue overflowing in one call
    included."""
    gen = torch.Generator().manual_seed(7)
    banks = [contrastive.NegativeBank([5, 3, 8], dim=4) for _ in range(2)]
    for n in (6, 2, 11, 0, 9):
        keys = torch.randn(n, 4, generator=gen)
        mask = torch.rand(3, n, generator=gen) > 0.4
        banks[0]._enqueue_scattered(keys, mask, mask.sum(1))
        if n:  # the rewrite needs a key to point at
            banks[1]._enqueue_rewritten(keys, mask, mask.sum(1))
        for bank in banks:
            bank.ptr.copy_((bank.ptr + mask.sum(1)) % bank._sizes_t)
            bank.fill.copy_(torch.minimum(bank.fill + mask.sum(1), bank._sizes_t))
        assert torch.equal(banks[0].keys, banks[1].keys) and torch.equal(banks[0].ptr, banks[1].ptr)
    assert banks[0].fill.tolist() == [5, 3, 8]
