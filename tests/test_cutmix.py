"""Adaptive CutMix (method.md §5): pairing, boxes, trigger statistics, mixing; UniMatch's box sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imas import cutmix
from imas.cutmix import (
    REDRAW_CANDIDATES,
    cutmix_boxes,
    easy_hard_pairing,
    group_pairing,
    mix,
    per_image,
    redraw_box_params,
    single_boxes,
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


@pytest.mark.parametrize("geometry", ["exact", "released"])
def test_unclipped_box_has_exact_size(geometry: str):
    # Tiny boxes (v scaled by 0.1 → v ≤ 0.09) in a large image: the centre range [H/16, H) makes clipping
    # possible only at the bottom/right edge, so check the images whose box is clear of it. "exact": ⌊H·v⌋
    # rows; "released": 2·⌊⌊H·v⌋/2⌋ rows, one fewer when ⌊H·v⌋ is odd.
    b, h, w, g = 32, 200, 160, 8
    scale = torch.full((b // g,), 0.1)
    boxes = cutmix_boxes(b, h, w, g, gen(7), scale=scale, geometry=geometry)  # type: ignore[arg-type]
    v = (0.1 + 0.8 * torch.rand(b // g, generator=gen(7))) * 0.1
    checked = 0
    for i in range(b):
        full_h, full_w = int(h * v[i // g]), int(w * v[i // g])
        if geometry == "released":
            full_h, full_w = full_h - full_h % 2, full_w - full_w % 2
        rows = boxes[i].any(dim=1).nonzero()
        cols = boxes[i].any(dim=0).nonzero()
        if rows.numel() and rows.max() < h - 1 and cols.max() < w - 1 and rows.min() > 0 and cols.min() > 0:
            assert _box_extent(boxes[i]) == (full_h, full_w)
            checked += 1
    assert checked > b // 2


def test_box_centres_in_range():
    b, h, w, g = 400, 64, 64, 4
    # v·H < 2 → boxes of at most 1 × 1 pixel, which mark their centre exactly.
    scale = torch.full((b // g,), 1.9 / (0.9 * h))
    boxes = cutmix_boxes(b, h, w, g, gen(9), scale=scale, geometry="exact")
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
    big = cutmix_boxes(64, h, w, g, gen(10), geometry="exact")
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
    with pytest.raises(ValueError, match="box geometry"):
        cutmix_boxes(8, 33, 31, 2, gen(11), geometry="centred")  # type: ignore[arg-type]
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


# ------------------------------------------------------------------------ iMAS's released box geometry


def _queued(monkeypatch: pytest.MonkeyPatch, uniforms: list[list[float]], ints: list[list[int]]) -> None:
    """Make cutmix's draws return the given values in order: v's uniforms, then centre rows, then columns."""
    u_queue = [torch.tensor(x) for x in uniforms]
    i_queue = [torch.tensor(x) for x in ints]
    monkeypatch.setattr(cutmix, "_uniform", lambda shape, generator, device: u_queue.pop(0).view(shape))
    monkeypatch.setattr(
        cutmix, "_randint", lambda lo, hi, shape, generator, device: i_queue.pop(0).view(shape)
    )


def _rows_cols(mask: torch.Tensor) -> tuple[list[int], list[int]]:
    return mask.any(1).nonzero().flatten().tolist(), mask.any(0).nonzero().flatten().tolist()


def test_released_box_is_one_shorter_when_the_side_is_odd_and_clear_of_the_edge(monkeypatch):
    # 10 × 10 image, one group of two images. u = 0.5625 gives v = 0.1 + 0.8 u = 0.55: ⌊10 v⌋ = 5 (odd);
    # u = 0.6875 gives v = 0.65: ⌊10 v⌋ = 6 (even). Centres (row, column): (4, 9) and (5, 5).
    def boxes(u: float, geometry: str) -> torch.Tensor:
        _queued(monkeypatch, [[u]], [[4, 5], [9, 5]])
        return cutmix_boxes(2, 10, 10, 2, geometry=geometry)  # type: ignore[arg-type]

    released, exact = boxes(0.5625, "released"), boxes(0.5625, "exact")
    # Side 5, centre row 4: released rows [4 − 2, 4 + 2) = 2..5 (four rows), exact rows [2, 2 + 5) = 2..6.
    # Centre column 9: both run from 9 − 2 = 7 to the right edge (released [7, 11), exact [7, 12)), 7..9.
    assert _rows_cols(released[0]) == ([2, 3, 4, 5], [7, 8, 9])
    assert _rows_cols(exact[0]) == ([2, 3, 4, 5, 6], [7, 8, 9])
    # Centre (5, 5): released [3, 7) in both directions, exact [3, 8).
    assert _rows_cols(released[1]) == ([3, 4, 5, 6], [3, 4, 5, 6])
    assert _rows_cols(exact[1]) == ([3, 4, 5, 6, 7], [3, 4, 5, 6, 7])
    # Side 6 (even): both are [c − 3, c + 3), the same box.
    released, exact = boxes(0.6875, "released"), boxes(0.6875, "exact")
    assert torch.equal(released, exact)
    assert _rows_cols(released[1]) == ([2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7])
    assert _rows_cols(released[0]) == ([1, 2, 3, 4, 5, 6], [6, 7, 8, 9])


@pytest.mark.parametrize("box", ["imas", "beta"])
@pytest.mark.parametrize("geometry", ["released", "exact"])
def test_box_geometry_on_the_drawn_stream(box: str, geometry: str):
    # Redraw v, the centre rows and the centre columns from the same generator state and build every box
    # by hand: rows [cy − ⌊h/2⌋, cy + ⌊h/2⌋) released, [cy − ⌊h/2⌋, cy − ⌊h/2⌋ + h) exact, clipped.
    b, h, w, g = 48, 37, 45, 4
    masks = cutmix_boxes(b, h, w, g, gen(31), box=box, geometry=geometry)  # type: ignore[arg-type]
    stream = gen(31)
    if box == "imas":
        v = 0.1 + 0.8 * torch.rand(b // g, generator=stream)
        low = (h // 16, w // 16)
    else:
        v = cutmix._beta_side_ratio(b // g, stream, None)
        low = (h // 8, w // 8) if geometry == "released" else (0, 0)
    cy = torch.randint(low[0], h, (b,), generator=stream).tolist()
    cx = torch.randint(low[1], w, (b,), generator=stream).tolist()
    for i in range(b):
        side_h, side_w = int(h * v[i // g]), int(w * v[i // g])
        end_h = side_h // 2 if geometry == "released" else side_h - side_h // 2
        end_w = side_w // 2 if geometry == "released" else side_w - side_w // 2
        expected = torch.zeros(h, w, dtype=torch.bool)
        r0, c0 = max(0, cy[i] - side_h // 2), max(0, cx[i] - side_w // 2)
        expected[r0 : min(h, cy[i] + end_h), c0 : min(w, cx[i] + end_w)] = True
        assert torch.equal(masks[i], expected), i


def test_released_and_exact_geometry_differ_only_by_the_odd_sides_last_row_and_column():
    b, h, w, g = 256, 64, 48, 4
    released = cutmix_boxes(b, h, w, g, gen(33))
    exact = cutmix_boxes(b, h, w, g, gen(33), geometry="exact")
    assert not (released & ~exact).any()  # the released box lies inside the exact one
    v = 0.1 + 0.8 * torch.rand(b // g, generator=gen(33))
    rows_lost = (exact.any(2).sum(1) - released.any(2).sum(1)).tolist()
    cols_lost = (exact.any(1).sum(1) - released.any(1).sum(1)).tolist()
    for i in range(b):
        assert rows_lost[i] <= int(h * v[i // g]) % 2 and cols_lost[i] <= int(w * v[i // g]) % 2
    assert sum(rows_lost) > b // 8  # odd sides clear of the edge are common, so the rule matters


# --------------------------------------------------------------------- UniMatch's redraw box sampler


def _released_loop(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Reference for UniMatch's obtain_cutmix_box, the loop run literally (each image redraws on its own
    until its box fits; all images step together). Returns int [4, n]: top, left, height, width."""
    area = rng.uniform(0.02, 0.4, n) * h * w  # drawn once per image, outside the loop
    out = np.zeros((4, n), dtype=np.int64)
    pending = np.ones(n, dtype=bool)
    while pending.any():
        idx = np.flatnonzero(pending)
        ratio = rng.uniform(0.3, 1 / 0.3, idx.size)
        bw = np.floor(np.sqrt(area[idx] / ratio)).astype(np.int64)
        bh = np.floor(np.sqrt(area[idx] * ratio)).astype(np.int64)
        x, y = rng.integers(0, w, idx.size), rng.integers(0, h, idx.size)
        ok = (x + bw <= w) & (y + bh <= h)
        out[:, idx[ok]] = np.stack([y, x, bh, bw])[:, ok]
        pending[idx[ok]] = False
    return out


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(
        np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size).max()
    )


@pytest.mark.parametrize(("h", "w"), [(64, 64), (48, 80)])
def test_redraw_boxes_always_fit_with_unimatchs_sizes(h: int, w: int):
    n = 4000
    top, left, bh, bw, fallback = redraw_box_params(n, h, w, 1.0, gen(41))
    assert all(t.shape == (n,) and t.dtype == torch.long for t in (top, left, bh, bw))
    assert not fallback.any()
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert (bh >= 1).all() and (bw >= 1).all()
    # The sides are floors of sqrt(A·r), sqrt(A / r) with A ≤ 0.4 HW and r in [0.3, 1/0.3].
    area = (bh * bw).float() / (h * w)
    assert area.max() <= 0.4 and area.min() >= 0.01
    ratio = bh.float() / bw.float()
    assert ratio.min() >= 0.2 and ratio.max() <= 1 / 0.2
    # The masks are those boxes, never clipped.
    masks = single_boxes(n, h, w, 1.0, gen(41))
    assert torch.equal(masks.flatten(1).sum(1), bh * bw)
    assert torch.equal(masks.any(2).int().argmax(1), top) and torch.equal(masks.any(1).int().argmax(1), left)


@pytest.mark.parametrize(("h", "w"), [(64, 64), (48, 80)])
def test_redraw_sampler_matches_the_released_loop_and_the_clamped_one_does_not(h: int, w: int):
    n = 6000
    ref_top, ref_left, ref_h, ref_w = _released_loop(n, h, w, np.random.default_rng(0))
    new = redraw_box_params(n, h, w, 1.0, gen(43))
    old = single_boxes(n, h, w, 1.0, gen(43), sampler="clamp")
    old_h, old_w = old.any(2).sum(1).numpy(), old.any(1).sum(1).numpy()
    new_h, new_w = new.height.numpy(), new.width.numpy()
    # KS critical value for two samples of 6000 at the 0.1 % level: 1.95 · sqrt(2 / 6000) ≈ 0.036.
    critical = 1.95 * (2 / n) ** 0.5
    log_ratio = {
        name: np.log(bh / bw)
        for name, bh, bw in [("ref", ref_h, ref_w), ("new", new_h, new_w), ("old", old_h, old_w)]
    }
    assert _ks(log_ratio["new"], log_ratio["ref"]) < critical
    assert _ks(new_h * new_w, ref_h * ref_w) < critical
    assert _ks(new.top.numpy(), ref_top) < critical and _ks(new.left.numpy(), ref_left) < critical
    # The clamped sampler keeps a uniform ratio, measurably further from square than the released loop.
    assert _ks(log_ratio["old"], log_ratio["ref"]) > 3 * critical
    distance = {name: np.abs(lr).mean() for name, lr in log_ratio.items()}
    assert distance["new"] < distance["old"] - 0.08
    assert abs(distance["new"] - distance["ref"]) < 0.03


def test_redraw_fallback_is_a_fitting_square():
    # One candidate per image: at these areas about two thirds miss, and those get the fallback square.
    n, h, w = 2000, 64, 64
    top, left, bh, bw, fallback = redraw_box_params(n, h, w, 1.0, gen(47), candidates=1)
    assert 0.3 < fallback.float().mean() < 0.95
    assert torch.equal(bh[fallback], bw[fallback])
    assert (top + bh <= h).all() and (left + bw <= w).all() and (top >= 0).all() and (left >= 0).all()
    # The square's side is ⌊sqrt(A)⌋ with A ∈ [0.02, 0.4]·HW.
    side = bh[fallback].float()
    assert side.min() >= int((0.02 * h * w) ** 0.5) and side.max() <= int((0.4 * h * w) ** 0.5)
    with pytest.raises(ValueError, match="candidate"):
        redraw_box_params(4, h, w, 1.0, gen(0), candidates=0)


def test_redraw_fallback_bound_of_the_default_candidates():
    # The probability that one draw of UniMatch's loop fits, for a box of area A: the mean over ratios r of
    # (fitting rows)·(fitting columns)/(H·W). Least at the largest area; REDRAW_CANDIDATES relies on it.
    ratio = torch.linspace(0.3, 1 / 0.3, 20001, dtype=torch.float64)
    for size, least in [(513, 0.0607), (769, 0.0603), (100_000, 0.0593)]:
        fit = []
        for fraction in torch.linspace(0.02, 0.4, 39, dtype=torch.float64):
            area = fraction * size * size
            bw, bh = torch.sqrt(area / ratio).floor(), torch.sqrt(area * ratio).floor()
            fit.append(((size - bw + 1).clamp(min=0) * (size - bh + 1).clamp(min=0)).mean() / size**2)
        fit_t = torch.stack(fit)
        assert fit_t.argmin() == len(fit) - 1 and fit_t.min() == pytest.approx(least, abs=5e-5)
        assert (1 - fit_t.min()) ** REDRAW_CANDIDATES < 1.7e-7


def test_single_boxes_probability_determinism_and_options():
    for sampler in ("redraw", "clamp"):
        fired = single_boxes(4000, 32, 40, 0.3, gen(51), sampler=sampler).flatten(1).any(1)  # type: ignore[arg-type]
        assert abs(fired.float().mean().item() - 0.3) < 0.03
        assert not single_boxes(64, 32, 40, 0.0, gen(52), sampler=sampler).any()  # type: ignore[arg-type]
        assert single_boxes(64, 32, 40, 1.0, gen(52), sampler=sampler).flatten(1).any(1).all()  # type: ignore[arg-type]
    a = single_boxes(16, 32, 40, 0.5, gen(53))
    assert a.shape == (16, 32, 40) and a.dtype == torch.bool
    assert torch.equal(a, single_boxes(16, 32, 40, 0.5, gen(53)))
    assert not torch.equal(a, single_boxes(16, 32, 40, 0.5, gen(54)))
    with pytest.raises(ValueError, match="box sampler"):
        single_boxes(4, 32, 40, 0.5, gen(0), sampler="loop")  # type: ignore[arg-type]
