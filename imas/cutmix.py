"""Adaptive CutMix (method.md §5): trigger, easy↔hard pairing, boxes, mixing of image / label / confidence;
and the CutMix boxes of the baselines (UniMatch's and FixMatch's redraw sampler, CPS's box masks).

Everything is batched on the device and never synchronises with the host, so a training step can queue
the CutMix work behind the forward pass. The released runs decided trigger, pairing and box per GPU on its
own few images; here a "group" of `group_size` consecutive images of the batch plays the role of one GPU's
batch, so a run on fewer devices reproduces those statistics.

Random draws come from the passed `torch.Generator` (None = the global RNG of the target device). The
draws are made on the generator's device and then moved, so a CPU generator works for CUDA tensors too
and seeded tests are deterministic.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

PairingMode = Literal["easy_hard", "random"]
BoxMode = Literal["imas", "beta"]
# "released": iMAS's released box geometry; "exact": a box of exactly ⌊H·v⌋ rows (see cutmix_boxes).
BoxGeometry = Literal["released", "exact"]
# "redraw": UniMatch's released sampler (redraw until the box fits); "clamp": one draw, sides clamped.
BoxSampler = Literal["redraw", "clamp"]

# Side ratio range of the iMAS box (method.md §5).
V_MIN, V_MAX = 0.1, 0.9
# Shape of the classic CutMix Beta(α, α) area prior; an integer, so Gamma(α) is a sum of α exponentials.
BETA_ALPHA = 4
# UniMatch's box: area fraction U[0.02, 0.4], aspect ratio h/w ~ U[0.3, 1/0.3].
AREA_MIN, AREA_MAX = 0.02, 0.4
RATIO_MIN, RATIO_MAX = 0.3, 1 / 0.3
# Candidates per image of the vectorised redraw loop. One candidate of UniMatch's loop fits with probability
# >= 0.0593 at every area on a square crop of any size (least at area 0.4: 0.0607 for 513 pixels, 0.0603 for
# 769, 0.0593 in the limit of large crops; tests/test_cutmix.py recomputes it), so all 256 miss with
# probability <= 0.9407^256 ≈ 1.6e-7: the fallback box, and with it any difference from the released loop's
# distribution, is that rare.
REDRAW_CANDIDATES = 256


# ------------------------------------------------------------------------------------------ random draws


def _draw_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Where to draw: on the generator's own device (torch requires it), else on the target device."""
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """U[0, 1) float32 of `shape` on `device`, drawn from `generator`."""
    u = torch.rand(shape, generator=generator, device=_draw_device(generator, device))
    return u.to(device) if device is not None else u


def _randint(
    low: int,
    high: int,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> torch.Tensor:
    """Integers uniform over [low, high) as int64 of `shape` on `device`, drawn from `generator`."""
    r = torch.randint(low, high, shape, generator=generator, device=_draw_device(generator, device))
    return r.to(device) if device is not None else r


def _check_groups(batch: int, group_size: int) -> int:
    """Number of groups; a batch that does not split into whole groups is a configuration error."""
    if group_size < 1 or batch % group_size != 0:
        raise ValueError(f"batch size {batch} is not divisible by the CutMix group size {group_size}")
    return batch // group_size


def group_mean(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean of each group of `group_size` consecutive images: values [B] -> float [B / group_size].

    E.g. the groups' mean easiness, which is CutMix's firing probability and, with `semi.cutmix_scale`,
    the factor on the box side.
    """
    num_groups = _check_groups(values.shape[0], group_size)
    return values.float().view(num_groups, group_size).mean(dim=1)


# ----------------------------------------------------------------------------------------------- pairing


def _easy_hard_local(hardness: torch.Tensor) -> torch.Tensor:
    """Row-wise easy↔hard pairing: hardness [N, G] → local source indices [N, G] (int64).

    o = argsort(e) ascending with e = 1 − hardness (hardest first); o[k] receives from o[G−1−k]. A stable
    sort keeps equal-hardness images in index order, so ties pair deterministically; the map is its own
    inverse and, for odd G, fixes the middle image.
    """
    easiness = 1.0 - hardness.float()
    order = torch.argsort(easiness, dim=1, stable=True)
    source = torch.empty_like(order)
    # source[order[:, k]] = order[:, G-1-k]
    source.scatter_(1, order, order.flip(1))
    return source


def easy_hard_pairing(hardness: torch.Tensor) -> torch.Tensor:
    """Index of each image's patch source within one group (method.md §5).

    hardness: [G] float. Returns a LongTensor [G] on the same device: the hardest image gets the easiest's
    patch and vice versa, the second hardest the second easiest's, …; with odd G the middle maps to itself.
    """
    if hardness.dim() != 1:
        raise ValueError(f"expected hardness [G], got shape {tuple(hardness.shape)}")
    return _easy_hard_local(hardness.unsqueeze(0)).squeeze(0)


def group_pairing(
    hardness: torch.Tensor,
    group_size: int,
    mode: PairingMode = "easy_hard",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pair images within each group of `group_size` consecutive images of the batch.

    hardness: [B] float (B divisible by group_size, else ValueError). Returns global source indices
    LongTensor [B] on hardness's device: image i takes its patch from image result[i], always in i's group.
    """
    if hardness.dim() != 1:
        raise ValueError(f"expected hardness [B], got shape {tuple(hardness.shape)}")
    num_groups = _check_groups(hardness.shape[0], group_size)
    if mode == "easy_hard":
        local = _easy_hard_local(hardness.view(num_groups, group_size))
    elif mode == "random":
        # argsort of i.i.d. uniforms is a uniform random permutation per row, all groups in one call.
        keys = _uniform((num_groups, group_size), generator, hardness.device)
        local = torch.argsort(keys, dim=1)
    else:
        raise ValueError(f"unknown CutMix pairing mode {mode!r}; valid: 'easy_hard', 'random'")
    offset = torch.arange(num_groups, device=hardness.device).unsqueeze(1) * group_size
    return (local + offset).reshape(-1)


# ------------------------------------------------------------------------------------------------ boxes


def _beta_side_ratio(
    num_groups: int, generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """Side ratio sqrt(λ), λ ~ Beta(4, 4) the box's area fraction (classic CutMix), [num_groups].

    torch.distributions cannot take a generator; Beta(α, α) = X / (X + Y) with X, Y ~ Gamma(α), and an
    integer-shape Gamma is a sum of α Exp(1) = −log U draws, so this is exact and seedable.
    """
    u = _uniform((2, num_groups, BETA_ALPHA), generator, device)
    gammas = -torch.log1p(-u).sum(dim=2)  # log1p(−u): u ∈ [0, 1) never gives log(0)
    area = gammas[0] / (gammas[0] + gammas[1])
    return area.sqrt()


def cutmix_boxes(
    batch: int,
    height: int,
    width: int,
    group_size: int,
    generator: torch.Generator | None = None,
    scale: torch.Tensor | None = None,
    box: BoxMode = "imas",
    device: torch.device | str | None = None,
    geometry: BoxGeometry = "released",
) -> torch.Tensor:
    """Box masks, True inside the box to paste: BoolTensor [B, H, W] on `device` (default: generator's).

    box "imas" (method.md §5): per group one side ratio v ~ U[0.1, 0.9]; h = ⌊H·v⌋, w = ⌊W·v⌋; centre per
    image uniform over [⌊H/16⌋, H) × [⌊W/16⌋, W). box "beta": v = sqrt(λ) with λ ~ Beta(4, 4) per group.
    scale: optional [num_groups] factor on v (option "v scaled by mean e"), e.g. the group's mean easiness.
    Every box is clipped to the image.

    geometry "released" (default), as iMAS's released rand_bbox_by_v / rand_bbox: rows
    [cy − ⌊h/2⌋, cy + ⌊h/2⌋), i.e. 2·⌊h/2⌋ rows before clipping, one fewer than h when h is odd (columns
    alike); the "beta" centre is uniform over [⌊H/8⌋, H) × [⌊W/8⌋, W). geometry "exact": rows
    [cy − ⌊h/2⌋, cy − ⌊h/2⌋ + h), exactly h before clipping, and the "beta" centre over the whole image.
    Both draw the same random numbers in the same order, so with one generator state they differ only there.
    """
    if device is None and scale is not None:
        device = scale.device
    if geometry not in ("released", "exact"):
        raise ValueError(f"unknown CutMix box geometry {geometry!r}; valid: 'released', 'exact'")
    num_groups = _check_groups(batch, group_size)
    if box == "imas":
        v = V_MIN + (V_MAX - V_MIN) * _uniform((num_groups,), generator, device)
        low_y, low_x = height // 16, width // 16
    elif box == "beta":
        v = _beta_side_ratio(num_groups, generator, device)
        low_y, low_x = (height // 8, width // 8) if geometry == "released" else (0, 0)
    else:
        raise ValueError(f"unknown CutMix box mode {box!r}; valid: 'imas', 'beta'")
    if scale is not None:
        if scale.shape != (num_groups,):
            raise ValueError(f"expected scale [{num_groups}] (one per group), got {tuple(scale.shape)}")
        v = v * scale.to(v.device, torch.float32)
    # One side ratio per group, shared by its images; floor as in ⌊H·v⌋ (v ≥ 0, so trunc = floor).
    v = v.repeat_interleave(group_size)
    box_h = (height * v).long()
    box_w = (width * v).long()
    cy = _randint(low_y, height, (batch,), generator, device)
    cx = _randint(low_x, width, (batch,), generator, device)
    top = cy - box_h // 2
    left = cx - box_w // 2
    if geometry == "released":
        # The released box ends at c + ⌊h/2⌋ (both ends from the centre), not at c − ⌊h/2⌋ + h.
        box_h = 2 * (box_h // 2)
        box_w = 2 * (box_w // 2)
    inside = _rectangles(height, width, top[:, None], left[:, None], box_h[:, None], box_w[:, None])
    return inside[:, 0]


class BoxParams(NamedTuple):
    """Axis-aligned boxes, one per image, each an int64 tensor [B]: rows [top, top + height), columns
    [left, left + width); fallback (bool [B]): the box came from the redraw sampler's fallback."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    fallback: torch.Tensor


def redraw_box_params(
    batch: int,
    height: int,
    width: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    candidates: int = REDRAW_CANDIDATES,
) -> BoxParams:
    """UniMatch's released CutMix box (dataset/transform.py, obtain_cutmix_box), batched and without a loop.

    Released, per image: with probability p a box; its area A = U[0.02, 0.4]·H·W is drawn once; then, until
    the box fits, a ratio r ~ U[0.3, 1/0.3], w = ⌊sqrt(A / r)⌋, h = ⌊sqrt(A·r)⌋ and a corner
    x ~ U{0, …, W − 1}, y ~ U{0, …, H − 1} are redrawn; it fits when x + w <= W and y + h <= H. Redrawing
    weights each ratio by its number of fitting corners, which favours squares at large areas.

    Here every image draws `candidates` (r, x, y) triples at once and keeps the first that fits: the same
    distribution as the loop's first fitting triple, because the triples are i.i.d. and A stays fixed, as in
    the loop. When none fits (probability <= 1.6e-7 per box with the default 256, see REDRAW_CANDIDATES), the
    box is the square of side ⌊sqrt(A)⌋ (clamped to the image; the ratio that fits most often) at a uniformly
    drawn fitting corner, so the total-variation distance to the released distribution is at most that
    probability. Images without a box get height = width = 0. Never synchronises with the host.
    """
    if candidates < 1:
        raise ValueError(f"the redraw sampler needs at least one candidate, got {candidates}")
    u = _uniform((4, batch), generator, device)  # fire, area, fallback row, fallback column
    ratio = RATIO_MIN + (RATIO_MAX - RATIO_MIN) * _uniform((batch, candidates), generator, device)
    cand_y = _randint(0, height, (batch, candidates), generator, device)  # [B, K]
    cand_x = _randint(0, width, (batch, candidates), generator, device)
    fire = u[0] < p
    area = (AREA_MIN + (AREA_MAX - AREA_MIN) * u[1]) * (height * width)  # [B]
    cand_w = torch.sqrt(area[:, None] / ratio).long()  # [B, K]; floor, as int() of a positive number
    cand_h = torch.sqrt(area[:, None] * ratio).long()
    fits = (cand_x + cand_w <= width) & (cand_y + cand_h <= height)  # [B, K]
    # argmax returns the first maximal index: the first candidate that fits (0 when none does).
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # [B, 1]
    found = fits.any(dim=1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.gather(1, first).squeeze(1)

    side = torch.sqrt(area).long()
    square_h, square_w = side.clamp(max=height), side.clamp(max=width)
    # Uniform over the fitting corners [0, H − h]; the clamp guards float rounding of u·(H − h + 1).
    square_top = torch.minimum((u[2] * (height - square_h + 1)).long(), height - square_h)
    square_left = torch.minimum((u[3] * (width - square_w + 1)).long(), width - square_w)
    top = torch.where(found, pick(cand_y), square_top)
    left = torch.where(found, pick(cand_x), square_left)
    zero = torch.zeros_like(side)
    box_h = torch.where(fire, torch.where(found, pick(cand_h), square_h), zero)
    box_w = torch.where(fire, torch.where(found, pick(cand_w), square_w), zero)
    return BoxParams(top, left, box_h, box_w, fire & ~found)


def single_boxes(
    batch: int,
    height: int,
    width: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    sampler: BoxSampler = "redraw",
    candidates: int = REDRAW_CANDIDATES,
) -> torch.Tensor:
    """UniMatch's CutMix box, one per image with probability p: area U[0.02, 0.4]·HW, aspect ratio h/w in
    [0.3, 1/0.3], inside the image. BoolTensor [B, H, W].

    sampler "redraw" (default): the released sampler, which redraws ratio and corner until the box fits
    (`redraw_box_params`); the ratios it keeps lean towards 1. sampler "clamp": one draw, the ratio uniform,
    the sides clamped to the image and the corner uniform among the fitting ones (same size for every box
    that fits at once, but a uniform ratio rather than the released loop's). `candidates`: redraw only.
    """
    if sampler == "redraw":
        boxes = redraw_box_params(batch, height, width, p, generator, device, candidates)
        top, left, box_h, box_w = boxes.top, boxes.left, boxes.height, boxes.width
    elif sampler == "clamp":
        u = _uniform((5, batch), generator, device)
        fire = u[0] < p
        area = (AREA_MIN + (AREA_MAX - AREA_MIN) * u[1]) * height * width
        ratio = RATIO_MIN + (RATIO_MAX - RATIO_MIN) * u[2]
        box_w = torch.sqrt(area / ratio).long().clamp(max=width)
        box_h = torch.sqrt(area * ratio).long().clamp(max=height)
        top = (u[3] * (height - box_h + 1)).long()
        left = (u[4] * (width - box_w + 1)).long()
        box_h, box_w = box_h * fire, box_w * fire
    else:
        raise ValueError(f"unknown CutMix box sampler {sampler!r}; valid: 'redraw', 'clamp'")
    inside = _rectangles(height, width, top[:, None], left[:, None], box_h[:, None], box_w[:, None])
    return inside[:, 0]


def multi_box_masks(
    batch: int,
    height: int,
    width: int,
    n_boxes: int = 3,
    area: tuple[float, float] | list[float] = (0.25, 0.5),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """CPS's CutMix mask (French et al.'s box mask generator with a random aspect ratio): per image
    `n_boxes` boxes, each drawn as a proportion p ~ U[area] with height fraction y = p^U and width fraction
    p / y, both then scaled by sqrt(1 / n_boxes) (so each box covers p / n of the image), placed uniformly
    inside the image; overlapping boxes cancel (each box flips the mask). BoolTensor [B, H, W], True where
    the partner is pasted."""
    u = _uniform((4, batch, n_boxes), generator, device)
    proportion = area[0] + (area[1] - area[0]) * u[0]  # [B, n]
    y = torch.exp(u[1] * torch.log(proportion))
    x = proportion / y
    scale = (1.0 / n_boxes) ** 0.5
    box_h = torch.round(y * scale * height).long()
    box_w = torch.round(x * scale * width).long()
    top = torch.round((height - box_h) * u[2]).long()
    left = torch.round((width - box_w) * u[3]).long()
    inside = _rectangles(height, width, top, left, box_h, box_w)  # [B, n, H, W]
    return (inside.sum(1) % 2).bool()


def _rectangles(
    height: int, width: int, top: torch.Tensor, left: torch.Tensor, box_h: torch.Tensor, box_w: torch.Tensor
) -> torch.Tensor:
    """Masks of axis-aligned boxes: integer tensors [B, n] -> BoolTensor [B, n, H, W] (n boxes per image);
    rows and columns outside the image simply do not exist."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[..., None]) & (rows < (top + box_h)[..., None])  # [B, n, H]
    in_cols = (cols >= left[..., None]) & (cols < (left + box_w)[..., None])  # [B, n, W]
    return in_rows[..., :, None] & in_cols[..., None, :]


def half_area_boxes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """U2PL's CutMix box, one per image: width w ~ U{floor(W/2) + 1, ..., W - 1}, height round(H·W / 2 / w)
    (half the image's area), the corner uniform among those where it fits. BoolTensor [B, H, W]."""
    u = _uniform((3, batch), generator, device)
    low = width // 2 + 1
    box_w = low + (u[0] * max(width - low, 1)).long()
    box_h = torch.round(height * width / 2 / box_w.float()).long().clamp(max=height)
    top = (u[1] * (height - box_h + 1)).long()
    left = (u[2] * (width - box_w + 1)).long()
    return _rectangles(height, width, top, left, box_h, box_w)


def other_image(
    batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """A CutMix partner for every image that is never the image itself: source[i] = (i + k) mod B with one
    k ~ U{1, ..., B - 1} per batch (UniMatch and CPS draw partners from a second loader; within the batch,
    this is the same distribution of pairs). LongTensor [B]; B = 1 pairs the image with itself."""
    shift = _randint(1, max(batch, 2), (1,), generator, device) % batch
    return (torch.arange(batch, device=shift.device) + shift) % batch


# ------------------------------------------------------------------------------------------ trigger, mix


def trigger(
    easiness: torch.Tensor,
    group_size: int,
    generator: torch.Generator | None = None,
    fixed_p: float | None = None,
) -> torch.Tensor:
    """Whether CutMix fires, one Bernoulli per group: BoolTensor [num_groups] on easiness's device.

    easiness: [B] in [0, 1] (e = 1 − hardness). p = the group's mean easiness, or `fixed_p` when given
    (ablation). Stays on the device: the caller masks boxes and losses with it instead of branching.
    """
    if easiness.dim() != 1:
        raise ValueError(f"expected easiness [B], got shape {tuple(easiness.shape)}")
    num_groups = _check_groups(easiness.shape[0], group_size)
    if fixed_p is not None:
        if not 0.0 <= fixed_p <= 1.0:
            raise ValueError(f"CutMix fixed probability must be in [0, 1], got {fixed_p}")
        p = torch.full((num_groups,), fixed_p, device=easiness.device)
    else:
        p = group_mean(easiness, group_size).clamp(0.0, 1.0)
    # u ∈ [0, 1): p = 1 always fires, p = 0 never does.
    return _uniform((num_groups,), generator, easiness.device) < p


def per_image(group_flags: torch.Tensor, group_size: int) -> torch.Tensor:
    """Expand a per-group tensor [num_groups] to its images [num_groups · group_size].

    E.g. `boxes & per_image(fired, g)[:, None, None]` keeps only the boxes of the groups that fired.
    """
    return group_flags.repeat_interleave(group_size)


def paste(x: torch.Tensor, boxes: torch.Tensor, source_index: torch.Tensor) -> torch.Tensor:
    """where(box, x[source], x): inside its box each image takes its partner's values.

    x: [B, H, W] (labels, confidences, padding masks) or [B, C, H, W] (images); boxes: bool [B, H, W];
    source_index: LongTensor [B]. Returns a new tensor of x's shape.
    """
    return torch.where(boxes if x.dim() == 3 else boxes[:, None], x[source_index], x)


def mix(
    images: torch.Tensor,
    pseudo_label: torch.Tensor,
    confidence: torch.Tensor,
    boxes: torch.Tensor,
    source_index: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste each image's partner inside its box: out = where(box, x[source], x) for all three tensors.

    images: [B, C, H, W] (any dtype), pseudo_label: [B, H, W], confidence: [B, H, W], boxes: bool
    [B, H, W], source_index: LongTensor [B] of global batch indices (from `group_pairing`). Image, label
    and confidence move together so the loss on a pasted pixel uses the partner's own target. Returns new
    tensors; the inputs are never modified.
    """
    b, _, h, w = images.shape
    for name, t in (("pseudo_label", pseudo_label), ("confidence", confidence), ("boxes", boxes)):
        if t.shape != (b, h, w):
            raise ValueError(f"expected {name} [{b}, {h}, {w}], got {tuple(t.shape)}")
    if source_index.shape != (b,):
        raise ValueError(f"expected source_index [{b}], got {tuple(source_index.shape)}")
    boxes = boxes.bool()
    return tuple(paste(t, boxes, source_index) for t in (images, pseudo_label, confidence))
