"""AugSeg's two augmentations: the random intensity view (imas.augment, against PIL) and the adaptive
label-aided CutMix (imas.label_mix, against a per-image reference of the released semantics)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from imas import label_mix
from imas.augment import (
    AUGSEG_NUM_OPS,
    AUGSEG_OPS,
    augseg_op,
    augseg_strong_view,
    draw_augseg_ops,
)
from imas.label_mix import (
    LABELED_BETA,
    UNLABELED_BETA,
    beta_draw,
    cutmix_boxes,
    group_permutation,
    image_confidence,
    label_aided_cutmix,
    label_mix_probability,
)

DRAWS = (0.0, 0.37, 0.5, 0.999)  # 0.5: hue shift ±63.75, where truncation and rounding differ


def _images(n: int = 2, h: int = 24, w: int = 28, seed: int = 0) -> torch.Tensor:
    """uint8 [n, 3, h, w]: colour gradients, a flat block and noise (hard edges, saturated hues)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for i in range(n):
        base = np.stack([30 + 180 * xx / w + 15 * i, 20 + 200 * yy / h, 128 + 90 * np.sin((xx + yy) / 5.0)])
        base[:, h // 3 : h // 3 + 6, w // 2 : w // 2 + 8] = np.array([220.0, 35.0 + 50 * i, 25.0])[
            :, None, None
        ]
        base += rng.normal(0, 10, size=base.shape)
        out.append(np.clip(base, 0, 255).round().astype(np.uint8))
    return torch.from_numpy(np.stack(out))


def _pil_augseg(name: str, img: Image.Image, u: float, sign: int) -> Image.Image:
    """The op as AugSeg's released PIL functions parameterise it, for the uniform draw u."""
    factor = 0.95 - (0.95 - 0.05) * u
    if name == "identity":
        return img
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=0.1 + (2.0 - 0.1) * u))
    if name == "contrast":
        return ImageEnhance.Contrast(img).enhance(factor)
    if name == "brightness":
        return ImageEnhance.Brightness(img).enhance(factor)
    if name == "color":
        return ImageEnhance.Color(img).enhance(factor)
    if name == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(factor)
    if name == "posterize":
        return ImageOps.posterize(img, 8 - max(1, math.ceil(4 * u)))
    if name == "solarize":
        return ImageOps.solarize(img, 256 - max(1, math.ceil(255 * u)))
    if name == "hue":
        hsv = np.array(img.convert("HSV")).astype(np.int64)
        hsv[..., 0] = (hsv[..., 0] + int(sign * 0.5 * u * 255)) % 256  # int(): truncation, as np.uint8
        return Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB")
    raise AssertionError(name)


# ------------------------------------------------------------------------------------ intensity view


def test_pool_and_defaults() -> None:
    assert len(AUGSEG_OPS) == 11 and "invert" not in AUGSEG_OPS and "blur" in AUGSEG_OPS
    assert AUGSEG_NUM_OPS == 3


@pytest.mark.parametrize("name", [n for n in AUGSEG_OPS if n != "identity"])
def test_op_matches_pil(name: str) -> None:
    images = _images()
    for u in DRAWS:
        for sign in (-1, 1):
            ours = augseg_op(name, images, u, sign=sign)
            assert ours.dtype == torch.uint8 and ours.shape == images.shape
            for i in range(images.shape[0]):
                pil = _pil_augseg(name, Image.fromarray(images[i].permute(1, 2, 0).numpy()), u, sign)
                ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
                diff = (ours[i].int() - ref.int()).abs()
                assert diff.float().mean() <= 0.05 and diff.max() <= 1, (name, u, sign)


def test_op_parameter_extremes() -> None:
    x = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    # u = 0: posterize drops one bit, solarize inverts only 255 (threshold 255), never a no-op.
    assert torch.equal(augseg_op("posterize", x, 0.0), x & 0xFE)
    assert torch.equal(augseg_op("solarize", x, 0.0), torch.where(x == 255, 0, x).to(torch.uint8))
    # u = 1: four bits dropped, threshold 1 (every non-zero value inverted).
    assert torch.equal(augseg_op("posterize", x, 1.0), x & 0xF0)
    assert torch.equal(augseg_op("solarize", x, 1.0), torch.where(x >= 1, 255 - x, x))
    # Brightness factor 0.95 − 0.9·u, truncated like PIL.
    assert torch.equal(augseg_op("brightness", x, 0.0), (x.double() * 0.95).to(torch.uint8))


def test_identity_leaves_images_unchanged() -> None:
    images = _images(3)
    out = augseg_op("identity", images, 0.5)
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()
    view = augseg_strong_view(images, pool=("identity",), generator=torch.Generator().manual_seed(0))
    assert torch.equal(view, images) and view.data_ptr() != images.data_ptr()


def test_bad_arguments() -> None:
    images = _images(1)
    with pytest.raises(ValueError):
        augseg_op("invert", images, 0.5)
    with pytest.raises(ValueError):
        augseg_op("contrast", images, 1.5)
    with pytest.raises(ValueError):
        augseg_strong_view(images, pool=("identity", "invert"))
    with pytest.raises(ValueError):
        augseg_strong_view(images.float())


def test_draws_shapes_ranges_and_counts() -> None:
    g = torch.Generator().manual_seed(1)
    op_idx, draws, signs, active = draw_augseg_ops(600, 3, True, len(AUGSEG_OPS), g)
    assert op_idx.shape == draws.shape == signs.shape == active.shape == (3, 600)
    assert op_idx.dtype == torch.int64 and draws.dtype == torch.float64 and active.dtype == torch.bool
    assert set(op_idx.unique().tolist()) == set(range(len(AUGSEG_OPS)))
    assert float(draws.min()) >= 0.0 and float(draws.max()) < 1.0
    assert set(signs.unique().tolist()) == {-1, 1}
    counts = active.sum(0)
    assert set(counts.unique().tolist()) == {1, 2, 3}  # k ~ U{1, 2, 3} per image
    assert torch.equal(active, torch.arange(3)[:, None] < counts[None, :])  # steps 0 .. k − 1
    _, _, _, fixed = draw_augseg_ops(50, 3, False, len(AUGSEG_OPS), g)
    assert bool(fixed.all())


def test_strong_view_seeded_and_per_image() -> None:
    images = _images(4)
    before = images.clone()
    a = augseg_strong_view(images, generator=torch.Generator().manual_seed(7))
    b = augseg_strong_view(images, generator=torch.Generator().manual_seed(7))
    c = augseg_strong_view(images, generator=torch.Generator().manual_seed(8))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(images, before)
    # The batched view is each image's drawn ops applied one after the other.
    op_idx, draws, signs, active = draw_augseg_ops(4, generator=torch.Generator().manual_seed(7))
    for i in range(4):
        x = images[i]
        for step in range(AUGSEG_NUM_OPS):
            if active[step, i]:
                name = AUGSEG_OPS[int(op_idx[step, i])]
                x = augseg_op(name, x, float(draws[step, i]), sign=int(signs[step, i]))
        assert torch.equal(a[i], x), i


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_strong_view_on_cuda_matches_cpu() -> None:
    images = _images(4)
    cpu = augseg_strong_view(images, generator=torch.Generator().manual_seed(3))
    gpu = augseg_strong_view(images.cuda(), generator=torch.Generator().manual_seed(3))
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 1


# ------------------------------------------------------------------------------- label-aided CutMix


def test_label_mix_imports_nothing_from_the_package() -> None:
    tree = ast.parse(Path(label_mix.__file__).read_text(encoding="utf-8"))
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.split(".")[0] == "imas"]


def test_image_confidence() -> None:
    k = 5
    one_hot = torch.zeros(2, k, 3, 4)
    one_hot[:, 2] = 1.0
    uniform = torch.full((2, k, 3, 4), 1.0 / k)
    probs = torch.cat([one_hot, uniform])
    rho = image_confidence(probs)
    assert rho.shape == (4,) and rho.dtype == torch.float32
    assert torch.allclose(rho, torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-6)
    # A mixed image: the mean over its pixels, or over its valid ones.
    mixed = uniform[:1].clone()
    mixed[:, :, :, :2] = one_hot[:1, :, :, :2]
    assert torch.allclose(image_confidence(mixed), torch.tensor([0.5]), atol=1e-6)
    valid = torch.zeros(1, 3, 4, dtype=torch.bool)
    valid[:, :, :2] = True
    assert torch.allclose(image_confidence(mixed, valid), torch.tensor([1.0]), atol=1e-6)
    # (1 − H/log K)·max p for a two-class pixel p = (0.8, 0.2).
    p = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1)
    expected = (1 + (0.8 * math.log(0.8) + 0.2 * math.log(0.2)) / math.log(2)) * 0.8
    assert math.isclose(float(image_confidence(p)), expected, rel_tol=1e-5)
    assert torch.allclose(
        label_mix_probability(torch.tensor([1.0, 0.25, 1.2])), torch.tensor([0.0, 0.75, 0.0])
    )


def test_beta_draws() -> None:
    g = torch.Generator().manual_seed(0)
    lam = beta_draw(LABELED_BETA, (20000,), g)
    assert lam.dtype == torch.float64 and float(lam.min()) > 0 and float(lam.max()) < 1
    assert abs(float(lam.mean()) - 0.8) < 0.01  # Beta(8, 2): a labeled box covers 1 − λ ≈ 20 %
    assert abs(float(beta_draw(UNLABELED_BETA, (20000,), g).mean()) - 0.5) < 0.01
    with pytest.raises(ValueError):
        beta_draw((0.5, 2), (3,), g)


def test_group_permutation() -> None:
    source = group_permutation(12, 4, torch.Generator().manual_seed(0))
    assert source.dtype == torch.int64 and source.shape == (12,)
    for g0 in range(0, 12, 4):
        assert sorted(source[g0 : g0 + 4].tolist()) == list(range(g0, g0 + 4))
    assert torch.equal(source, group_permutation(12, 4, torch.Generator().manual_seed(0)))
    assert sorted(group_permutation(5, None, torch.Generator().manual_seed(1)).tolist()) == list(range(5))
    with pytest.raises(ValueError):
        group_permutation(6, 4)


def test_boxes_follow_the_released_geometry() -> None:
    b, h, w = 6, 40, 30
    boxes = cutmix_boxes(b, h, w, UNLABELED_BETA, 3, torch.Generator().manual_seed(5))
    # Replay the draws in the function's order: λ per group, then row and column centres per image.
    g = torch.Generator().manual_seed(5)
    lam = beta_draw(UNLABELED_BETA, (2,), g)
    cy = torch.randint(h // 8, h, (b,), generator=g)
    cx = torch.randint(w // 8, w, (b,), generator=g)
    assert boxes.shape == (b, h, w) and boxes.dtype == torch.bool
    for i in range(b):
        ratio = math.sqrt(1.0 - float(lam[i // 3]))
        half_h, half_w = int(h * ratio) // 2, int(w * ratio) // 2
        expected = torch.zeros(h, w, dtype=torch.bool)
        y0, y1 = np.clip([int(cy[i]) - half_h, int(cy[i]) + half_h], 0, h)
        x0, x1 = np.clip([int(cx[i]) - half_w, int(cx[i]) + half_w], 0, w)
        expected[y0:y1, x0:x1] = True
        assert torch.equal(boxes[i], expected), i


def _batch(b: int = 8, h: int = 32, w: int = 32) -> dict[str, torch.Tensor]:
    """Constant images that name their origin: unlabeled i has value i and pseudo-label i, labeled j has
    value 100 + j and ground truth 10 + j, except a void (255) column in every labeled mask."""
    idx = torch.arange(b)
    gt = (10 + idx).view(b, 1, 1).expand(b, h, w).clone()
    gt[:, :, 0] = 255
    return {
        "unlabeled_image": idx.view(b, 1, 1, 1).expand(b, 3, h, w).to(torch.uint8).clone(),
        "pseudo_label": idx.view(b, 1, 1).expand(b, h, w).clone(),
        "confidence": torch.full((b, h, w), 0.5),
        "labeled_image": (100 + idx).view(b, 1, 1, 1).expand(b, 3, h, w).to(torch.uint8).clone(),
        "labeled_mask": gt,
    }


def test_probability_zero_never_injects() -> None:
    data = _batch()
    out = label_aided_cutmix(**data, probability=torch.zeros(8), generator=torch.Generator().manual_seed(0))
    assert not bool(out.injected.any()) and not bool(out.labeled_boxes.any())
    assert int(out.label.max()) < 10 and int(out.image.max()) < 100 and bool((out.confidence == 0.5).all())
    assert bool(out.valid.all())
    # Plain CutMix: inside its box image i is its partner π(i), outside itself.
    own = torch.arange(8).view(8, 1, 1).expand(8, 32, 32)
    assert torch.equal(out.label, torch.where(out.unlabeled_boxes, out.source.view(8, 1, 1), own))


def test_probability_one_always_injects_with_ground_truth() -> None:
    data = _batch()
    before = {k: v.clone() for k, v in data.items()}
    out = label_aided_cutmix(**data, probability=torch.ones(8), generator=torch.Generator().manual_seed(0))
    assert bool(out.injected.all())
    assert all(torch.equal(data[k], before[k]) for k in data)  # inputs untouched
    # A labeled pixel reaches image i where its partner π(i)'s labeled box meets i's CutMix box.
    reached = out.unlabeled_boxes & out.labeled_boxes[out.source]
    assert bool(reached.any())
    labeled = out.label >= 10
    assert torch.equal(labeled | (out.label == 255), reached)
    # ... carrying labeled image π(π(i)) and its ground truth, with confidence 1; void stays void, invalid.
    assert bool((out.confidence[reached] == 1).all()) and bool((out.confidence[~reached] == 0.5).all())
    source_of_patch = out.source[out.source].view(8, 1, 1).expand(8, 32, 32)
    assert torch.equal(out.label[labeled], 10 + source_of_patch[labeled])
    assert torch.equal(out.image[:, 0][reached].long(), 100 + source_of_patch[reached])
    assert torch.equal(out.valid, ~(reached & (out.label == 255)))


def test_matches_a_per_image_reference() -> None:
    data = _batch(6, 20, 24)
    probability = torch.tensor([0.0, 1.0, 0.5, 0.5, 0.9, 0.1])
    valid = torch.ones(6, 20, 24, dtype=torch.bool)
    valid[:, -3:] = False  # crop padding at the bottom of every unlabeled image
    out = label_aided_cutmix(
        **data, probability=probability, valid=valid, group_size=3, generator=torch.Generator().manual_seed(4)
    )
    src, lb, ub = out.source.tolist(), out.labeled_boxes, out.unlabeled_boxes
    assert sorted(src[:3]) == [0, 1, 2] and sorted(src[3:]) == [3, 4, 5]
    for i in range(6):
        j = src[i]  # partner; its own labeled patch came from labeled image src[j]
        inject = ub[i] & lb[j]
        k = src[j]
        exp_label = torch.where(inject, data["labeled_mask"][k], torch.where(ub[i], j, i))
        exp_conf = torch.where(inject, 1.0, 0.5)
        exp_valid = torch.where(
            inject, data["labeled_mask"][k] != 255, torch.where(ub[i], valid[j], valid[i])
        )
        assert torch.equal(out.label[i], exp_label) and torch.equal(out.confidence[i], exp_conf), i
        assert torch.equal(out.valid[i], exp_valid), i
        assert torch.equal(out.image[i, 1].long(), torch.where(inject, 100 + k, torch.where(ub[i], j, i)))
    again = label_aided_cutmix(
        **data, probability=probability, valid=valid, group_size=3, generator=torch.Generator().manual_seed(4)
    )
    assert all(torch.equal(x, y) for x, y in zip(out, again))


def test_bad_shapes() -> None:
    data = _batch(4, 8, 8)
    with pytest.raises(ValueError):
        label_aided_cutmix(**{**data, "labeled_image": data["labeled_image"][:2]}, probability=torch.ones(4))
    with pytest.raises(ValueError):
        label_aided_cutmix(**data, probability=torch.ones(3))
    with pytest.raises(ValueError):
        label_aided_cutmix(**data, probability=torch.ones(4), group_size=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_label_mix_on_cuda_matches_cpu() -> None:
    data = _batch()
    probability = torch.linspace(0, 1, 8)
    cpu = label_aided_cutmix(**data, probability=probability, generator=torch.Generator().manual_seed(2))
    cuda_data = {k: v.cuda() for k, v in data.items()}
    gpu = label_aided_cutmix(
        **cuda_data, probability=probability.cuda(), generator=torch.Generator().manual_seed(2)
    )
    assert all(torch.equal(x, y.cpu()) for x, y in zip(cpu, gpu))
