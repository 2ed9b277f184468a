"""Adaptive CutMix (method.md §5): pairing, boxes, trigger statistics, mixing."""

from __future__ import annotations

import pytest
import torch

from imas.cutmix import (
    cutmix_boxes,
    easy_hard_pairing,
    group_pairing,
    mix,
    per_image,
    trigger,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- pairing


def test_easy_hard_pairing_even_group():
    # hardness order: image 2 hardest, then 0, then 3, image 1 easiest.
    hardness = torch.tensor([0.6, 0.1, 0.9, 0.3])
    source = easy_hard_pairing(hardness)
    assert source.dtype == torch.long
    # hardest (2) ↔ easiest (1), second hardest (0) ↔ second easiest (3).
    assert source.tolist() == [3, 2, 1, 0]


def test_easy_hard_pairing_odd_group_middle_maps_to_itself():
    hardness = torch.tensor([0.5, 0.9, 0.1, 0.7, 0.3])
    source = easy_hard_pairing(hardness)
    # sorted hardest first: 1, 3, 0, 4, 2 → 1↔2, 3↔4, 0 (the median) stays.
    assert source.tolist() == [0, 2, 1, 4, 3]


@pytest.mark.parametrize("g", [1, 2, 3, 4, 7, 8])
def test_easy_hard_pairing_is_an_involution(g: int):
    hardness = torch.rand(g, generator=gen(g))
    source = easy_hard_pairing(hardness)
    assert torch.equal(source[source], torch.arange(g))
    assert sorted(source.tolist()) == list(range(g))


def test_easy_hard_pairing_ties_are_deterministic():
    hardness = torch.full((4,), 0.5)
    # Stable sort keeps index order: 0 ↔ 3, 1 ↔ 2.
    assert easy_hard_pairing(hardness).tolist() == [3, 2, 1, 0]


def test_random_pairing_is_seeded_and_varies_between_groups():
    hardness = torch.rand(36, generator=gen(1))
    a = group_pairing(hardness, 9, "random", gen(3))
    assert torch.equal(a, group_pairing(hardness, 9, "random", gen(3)))
    assert not torch.equal(a, group_pairing(hardness, 9, "random", gen(4)))
    local = (a.view(4, 9) - torch.arange(4).unsqueeze(1) * 9).tolist()
    assert all(sorted(row) == list(range(9)) for row in local)
    assert len({tuple(row) for row in local}) > 1  # each group draws its own permutation


@pytest.mark.parametrize("mode", ["easy_hard", "random"])
def test_group_pairing_stays_within_groups(mode: str):
    b, g = 12, 4
    hardness = torch.rand(b, generator=gen(1))
    source = group_pairing(hardness, g, mode, gen(2))
    assert source.shape == (b,) and source.dtype == torch.long
    assert torch.equal(source // g, torch.arange(b) // g)
    for k in range(b // g):
        assert sorted(source[k * g : (k + 1) * g].tolist()) == list(range(k * g, (k + 1) * g))
    if mode == "easy_hard":
        for k in range(b // g):
            local = easy_hard_pairing(hardness[k * g : (k + 1) * g]) + k * g
            assert torch.equal(source[k * g : (k + 1) * g], local)


def test_group_pairing_rejects_partial_groups():
    with pytest.raises(ValueError, match="divisible"):
        group_pairing(torch.rand(6), 4)
    with pytest.raises(ValueError, match="pairing mode"):
        group_pairing(torch.rand(4), 2, "nearest")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ boxes


def _box_extent(mask: torch.Tensor) -> tuple[int, int]:
    """Height and width of the (rectangular) True region of a [H, W] mask."""
    rows = mask.any(dim=1).nonzero()
    cols = mask.any(dim=0).nonzero()
    if rows.numel() == 0:
        return 0, 0
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_boxes_are_rectangles_shared_per_group_and_bounded():
    b, h, w, g = 16, 64, 48, 4
    boxes = cutmix_boxes(b, h, w, g, gen(5))
    assert boxes.shape == (b, h, w) and boxes.dtype == torch.bool
    # Reproduce the per-group side ratio with the same generator: v is the first draw.
    v = 0.1 + 0.8 * torch.rand(b // g, generator=gen(5))
    for i in range(b):
        bh, bw = _box_extent(boxes[i])
        full_h, full_w = int(h * v[i // g]), int(w * v[i // g])
        # A rectangle, never larger than ⌊H·v⌋ × ⌊W·v⌋ (clipping only shrinks it).
        assert boxes[i].sum() == bh * bw
        assert bh <= full_h and bw <= full_w
        assert boxes[i].sum() <= v[i // g] ** 2 * h * w


def test_unclipped_box_has_exact_size():
    # Tiny boxes (v scaled by 0.1 → v ≤ 0.09) in a large image: the centre range [H/16, H) makes clipping
    # possible only at the bottom/right edge, so check the images whose box is clear of it.
    b, h, w, g = 32, 200, 160, 8
    scale = torch.full((b // g,), 0.1)
    boxes = cutmix_boxes(b, h, w, g, gen(7), scale=scale)
    v = (0.1 + 0.8 * torch.rand(b // g, generator=gen(7))) * 0.1
    checked = 0
    for i in range(b):
        full_h, full_w = int(h * v[i // g]), int(w * v[i // g])
        rows = boxes[i].any(dim=1).nonzero()
        cols = boxes[i].any(dim=0).nonzero()
        if rows.numel() and rows.max() < h - 1 and cols.max() < w - 1 and rows.min() > 0 and cols.min() > 0:
            assert _box_extent(boxes[i]) == (full_h, full_w)
            checked += 1
    assert checked > b // 2


def test_box_centres_in_range():
    b, h, w, g = 400, 64, 64, 4
    # v·H < 2 → boxes of at most 1 × 1 pixel, which mark their centre exactly.
    boxes = cutmix_boxes(b, h, w, g, gen(9), scale=torch.full((b // g,), 1.9 / (0.9 * h)))
    marked = 0
    for i in range(b):
        ys, xs = boxes[i].nonzero(as_tuple=True)
        assert ys.numel() <= 1
        if ys.numel():
            assert h // 16 <= ys.item() < h and w // 16 <= xs.item() < w
            marked += 1
    assert marked > b // 4
    # Unscaled: redraw the centres from the same stream (v, then rows, then cols); each box contains its
    # centre and spans rows [cy − ⌊bh/2⌋, cy − ⌊bh/2⌋ + bh) before clipping.
    big = cutmix_boxes(64, h, w, g, gen(10))
    stream = gen(10)
    v = 0.1 + 0.8 * torch.rand(64 // g, generator=stream)
    cy = torch.randint(h // 16, h, (64,), generator=stream)
    cx = torch.randint(w // 16, w, (64,), generator=stream)
    for i in range(64):
        bh, bw = int(h * v[i // g]), int(w * v[i // g])
        ys, xs = big[i].nonzero(as_tuple=True)
        assert big[i, cy[i], cx[i]]
        assert ys.min() == max(0, cy[i] - bh // 2) and ys.max() == min(h, cy[i] - bh // 2 + bh) - 1
        assert xs.min() == max(0, cx[i] - bw // 2) and xs.max() == min(w, cx[i] - bw // 2 + bw) - 1


def test_boxes_deterministic_and_options():
    a = cutmix_boxes(8, 33, 31, 2, gen(11))
    assert torch.equal(a, cutmix_boxes(8, 33, 31, 2, gen(11)))
    assert not torch.equal(a, cutmix_boxes(8, 33, 31, 2, gen(12)))
    beta = cutmix_boxes(8, 33, 31, 2, gen(11), box="beta")
    assert beta.shape == (8, 33, 31) and torch.equal(beta, cutmix_boxes(8, 33, 31, 2, gen(11), box="beta"))
    # Zero scale → empty boxes.
    assert not cutmix_boxes(8, 33, 31, 2, gen(11), scale=torch.zeros(4)).any()
    with pytest.raises(ValueError, match="box mode"):
        cutmix_boxes(8, 33, 31, 2, gen(11), box="square")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible"):
        cutmix_boxes(6, 33, 31, 4, gen(11))


def test_beta_box_area_mean():
    # λ ~ Beta(4, 4) has mean 1/2; clipping at the border (centre uniform over the image) only shrinks it.
    boxes = cutmix_boxes(2000, 64, 64, 1, gen(13), box="beta")
    area = boxes.float().mean().item()
    assert 0.2 < area < 0.5


# ---------------------------------------------------------------------------------------------- trigger


def test_trigger_frequency_matches_mean_easiness():
    n, g = 20000, 4
    # Each group has mean easiness 0.3 (values differ within the group: the mean, not one image, counts).
    easiness = torch.tensor([0.1, 0.2, 0.4, 0.5]).repeat(n)
    fired = trigger(easiness, g, gen(17))
    assert fired.shape == (n,) and fired.dtype == torch.bool
    # std of the mean is sqrt(0.21 / 20000) ≈ 0.0032: ±0.02 is more than 6 sigma.
    assert abs(fired.float().mean().item() - 0.3) < 0.02


def test_trigger_fixed_p_and_extremes():
    n, g = 20000, 2
    fired = trigger(torch.zeros(n * g), g, gen(19), fixed_p=0.7)
    assert abs(fired.float().mean().item() - 0.7) < 0.02
    assert trigger(torch.ones(n * g), g, gen(20)).all()
    assert not trigger(torch.zeros(n * g), g, gen(21)).any()
    assert torch.equal(
        trigger(torch.rand(40, generator=gen(1)), 4, gen(2)),
        trigger(torch.rand(40, generator=gen(1)), 4, gen(2)),
    )
    with pytest.raises(ValueError, match="divisible"):
        trigger(torch.rand(5), 2)


# -------------------------------------------------------------------------------------------------- mix


def test_mix_pastes_all_three_at_box_pixels_only():
    b, h, w, g = 4, 10, 12, 2
    images = torch.randint(0, 256, (b, 3, h, w), generator=gen(23), dtype=torch.uint8)
    labels = torch.randint(0, 21, (b, h, w), generator=gen(24))
    confidence = torch.rand(b, h, w, generator=gen(25))
    boxes = cutmix_boxes(b, h, w, g, gen(26))
    # Keep only the boxes of the groups that fired (first fired, second not).
    boxes = boxes & per_image(torch.tensor([True, False]), g)[:, None, None]
    source = group_pairing(torch.tensor([0.9, 0.1, 0.3, 0.7]), g)
    assert source.tolist() == [1, 0, 3, 2]
    copies = (images.clone(), labels.clone(), confidence.clone(), boxes.clone(), source.clone())

    out_images, out_labels, out_conf = mix(images, labels, confidence, boxes, source)

    for before, after in zip(copies, (images, labels, confidence, boxes, source), strict=True):
        assert torch.equal(before, after)
    assert out_images.dtype == torch.uint8 and out_images.shape == images.shape
    for i in range(b):
        inside = boxes[i]
        s = int(source[i])
        assert torch.equal(out_images[i][:, inside], images[s][:, inside])
        assert torch.equal(out_images[i][:, ~inside], images[i][:, ~inside])
        assert torch.equal(out_labels[i][inside], labels[s][inside])
        assert torch.equal(out_labels[i][~inside], labels[i][~inside])
        assert torch.equal(out_conf[i][inside], confidence[s][inside])
        assert torch.equal(out_conf[i][~inside], confidence[i][~inside])
    # The group that did not fire is untouched.
    assert torch.equal(out_images[2:], images[2:]) and torch.equal(out_labels[2:], labels[2:])


def test_mix_rejects_bad_shapes():
    images = torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError, match="pseudo_label"):
        mix(
            images,
            torch.zeros(2, 4, 4),
            torch.zeros(2, 4, 5),
            torch.zeros(2, 4, 5, dtype=torch.bool),
            torch.arange(2),
        )
