"""The tensor intensity ops against PIL (the oracle the released code used), plus the strong view and
the adaptation modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from imas.augment import OPS, _apply, adapt, draw_ops, intensity_op, random_strong_view

STRENGTHS = (0.1, 0.5, 0.95)
# mean |ours - PIL| in grey levels (method.md §4); measured 0 (exact) for every op on Pillow 12.3
TOLERANCE = 2.0


def _synthetic_images(n: int = 3, h: int = 64, w: int = 80) -> torch.Tensor:
    """Real-looking uint8 [n, 3, h, w]: smooth colour gradients, a few flat shapes, and noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    images = []
    for i in range(n):
        base = np.stack(
            [
                40 + 150 * xx / w + 20 * i,
                30 + 180 * yy / h,
                120 + 80 * np.sin((xx + yy) / (9.0 + 3 * i)),
            ]
        )
        # A disc and a rectangle of flat colour give hard edges and saturated hues.
        disc = (yy - h * 0.4) ** 2 + (xx - w * (0.3 + 0.2 * i)) ** 2 < (h * 0.2) ** 2
        base[:, disc] = np.array([220.0, 40.0 + 60 * i, 30.0])[:, None]
        base[:, h // 2 : h // 2 + 12, w // 2 : w // 2 + 25] = np.array([20.0, 90.0, 200.0 - 50 * i])[
            :, None, None
        ]
        base += rng.normal(0, 8, size=base.shape)
        images.append(np.clip(base, 0, 255).round().astype(np.uint8))
    return torch.from_numpy(np.stack(images))


def _pil_op(name: str, img: Image.Image, s: float, sign: int) -> Image.Image:
    """The op as the released code ran it, with PIL (method.md §4 strength table)."""
    factor = 0.95 - 0.85 * s
    if name == "identity":
        return img
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "invert":
        return ImageOps.invert(img)
    if name == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=0.1 + 1.9 * s))
    if name == "contrast":
        return ImageEnhance.Contrast(img).enhance(factor)
    if name == "brightness":
        return ImageEnhance.Brightness(img).enhance(factor)
    if name == "color":
        return ImageEnhance.Color(img).enhance(factor)
    if name == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(factor)
    if name == "posterize":
        return ImageOps.posterize(img, 8 - max(1, int(np.ceil(4 * s))))
    if name == "solarize":
        return ImageOps.solarize(img, int(np.clip(256 - np.ceil(255 * s), 1, 256)))
    if name == "hue":
        hsv = np.array(img.convert("HSV")).astype(np.int64)
        hsv[..., 0] = (hsv[..., 0] + sign * round(255 * 0.5 * s)) % 256
        return Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB")
    raise AssertionError(name)


def _to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def _from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.to(torch.float64) - b.to(torch.float64)).abs().mean().item()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _synthetic_images()


@pytest.mark.parametrize("name", OPS)
def test_op_matches_pil(name: str, images: torch.Tensor) -> None:
    worst = 0.0
    for s in STRENGTHS:
        for sign in (1, -1) if name == "hue" else (1,):
            for img in images:
                ours = intensity_op(name, img, s, sign=sign)
                theirs = _from_pil(_pil_op(name, _to_pil(img), s, sign))
                worst = max(worst, _mean_abs_diff(ours, theirs))
    assert worst <= TOLERANCE, f"{name}: mean |ours - PIL| = {worst:.3f}"


@pytest.mark.parametrize("name", OPS)
def test_batched_equals_per_image(name: str, images: torch.Tensor) -> None:
    batched = intensity_op(name, images, 0.5, sign=1)
    assert batched.dtype == torch.uint8 and batched.shape == images.shape
    for i, img in enumerate(images):
        single = intensity_op(name, img, 0.5, sign=1)
        assert single.dtype == torch.uint8 and single.shape == img.shape
        torch.testing.assert_close(batched[i], single, rtol=0, atol=0)


def test_identity_exact_and_unknown_name(images: torch.Tensor) -> None:
    assert torch.equal(intensity_op("identity", images, 0.7), images)
    with pytest.raises(ValueError, match="valid names: identity"):
        intensity_op("rotate", images, 0.5)


def test_random_strong_view_seeded(images: torch.Tensor) -> None:
    batch = images.repeat(3, 1, 1, 1)  # 9 images, so most op pairs leave some image changed
    a = random_strong_view(batch, generator=torch.Generator().manual_seed(1))
    b = random_strong_view(batch, generator=torch.Generator().manual_seed(1))
    c = random_strong_view(batch, generator=torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == batch.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Per-image magnitudes (the `magnitude` mode's m = e_i) reach their own images: image i of a batch
    # with m = [m_0, ..., m_8] equals image i of the same draw with the scalar m_i.
    m = torch.linspace(0.0, 0.999, 9)
    per_image = random_strong_view(batch, magnitude=m, generator=torch.Generator().manual_seed(1))
    for i in (0, 4, 8):
        scalar = random_strong_view(batch, magnitude=float(m[i]), generator=torch.Generator().manual_seed(1))
        assert torch.equal(per_image[i], scalar[i])
    assert not torch.equal(per_image, a)  # the strengths did change


def test_draw_ops_two_per_image_with_replacement() -> None:
    """method.md §4: per image 2 ops drawn uniformly from the 12 with replacement, s = U·m."""
    n = 12000
    m = torch.rand(n)
    op_idx, strengths, signs = draw_ops(n, m, 2, torch.Generator().manual_seed(0))
    assert op_idx.shape == strengths.shape == signs.shape == (2, n)
    counts = torch.bincount(op_idx.flatten(), minlength=len(OPS)).double() / (2 * n)
    assert len(OPS) == 12 and counts.min() > 0.07 and counts.max() < 0.097  # uniform: 1/12 = 0.083
    repeats = (op_idx[0] == op_idx[1]).double().mean().item()
    assert 0.07 < repeats < 0.097  # with replacement: the same op twice with p = 1/12
    assert torch.all(strengths >= 0) and torch.all(strengths <= m)
    assert abs((strengths / m).mean().item() - 0.5) < 0.01  # U ~ U[0, 1]
    assert set(signs.unique().tolist()) == {-1, 1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ops_on_cuda_match_cpu(images: torch.Tensor) -> None:
    """Each op with the same strengths and signs on CUDA gives the CPU's images within 1 grey level."""
    s = torch.tensor([0.1, 0.5, 0.95], dtype=torch.float64)
    sign = torch.tensor([1, -1, 1])
    for name in OPS:
        cpu = _apply(name, images, s, sign)
        cuda = _apply(name, images.cuda(), s, sign)
        assert cuda.device.type == "cuda"
        assert (cpu.int() - cuda.cpu().int()).abs().float().mean().item() <= 1.0, name


def test_adapt_modes(images: torch.Tensor) -> None:
    weak = images
    strong = 255 - images
    b = weak.shape[0]
    assert torch.equal(adapt(weak, strong, torch.zeros(b), "mix"), weak)
    assert torch.equal(adapt(weak, strong, torch.ones(b), "mix"), strong)
    half = adapt(weak, strong, torch.full((b,), 0.5), "mix")
    expected = (0.5 * weak.double() + 0.5 * strong.double()).round().to(torch.uint8)
    assert torch.equal(half, expected)
    assert torch.equal(adapt(weak, strong, torch.full((b,), 0.3), "none"), strong)

    # select: strong with probability e; 2000 one-pixel images give the frequency to about ±0.02.
    n = 2000
    w1 = torch.zeros(n, 3, 1, 1, dtype=torch.uint8)
    s1 = torch.full((n, 3, 1, 1), 255, dtype=torch.uint8)
    for e in (0.0, 0.25, 0.8, 1.0):
        out = adapt(w1, s1, torch.full((n,), e), "select", generator=torch.Generator().manual_seed(0))
        assert abs((out[:, 0, 0, 0] == 255).double().mean().item() - e) < 0.04
    with pytest.raises(ValueError):
        adapt(weak, strong, torch.ones(b), "magnitude")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["blur", "contrast", "color", "sharpness", "posterize", "solarize", "hue"])
def test_per_image_strengths_in_one_batch(name: str, images: torch.Tensor) -> None:
    """random_strong_view runs images sharing an op together, each at its own strength and sign."""
    strengths = torch.tensor([0.05, 0.6, 1.0], dtype=torch.float64)
    signs = torch.tensor([1, -1, 1])
    batched = _apply(name, images, strengths, signs)
    for i, img in enumerate(images):
        single = intensity_op(name, img, strengths[i].item(), sign=int(signs[i]))
        assert torch.equal(batched[i], single)


@pytest.mark.parametrize("name", OPS)
def test_flat_and_tiny_images(name: str) -> None:
    """Single-valued channels (autocontrast / equalize leave them alone) and images too small for a
    3x3 filter still match PIL."""
    flat = torch.full((3, 6, 5), 77, dtype=torch.uint8)
    flat[2] = 200
    tiny = torch.randint(0, 256, (3, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for img in (flat, tiny):
        ours = intensity_op(name, img, 0.5, sign=1)
        theirs = _from_pil(_pil_op(name, _to_pil(img), 0.5, 1))
        assert _mean_abs_diff(ours, theirs) <= TOLERANCE
