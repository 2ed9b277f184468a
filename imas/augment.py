"""Strong photometric ops for the intensity view, run on tensors in batch (method.md §4).

The released code ran these ops with PIL in data-loader workers. Here they run on whatever device the
images live on, after the hardness e_i is known, and reproduce PIL's formulas (including its rounding and
truncation) so that results stay within a couple of grey levels of PIL's.

Every op takes uint8 images [B, 3, H, W] and a per-image strength s ∈ [0, 1] (Tensor[B]); the strength
mapping follows the table in method.md §4. Adaptation (`adapt`) blends or selects between the weak and strong
views per image; docs/method.md's `magnitude` mode is not a blend: pass `magnitude=e` to `random_strong_view`
(so s = U·e_i) and use the result as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "invert",
    "blur",
    "contrast",
    "brightness",
    "color",
    "sharpness",
    "posterize",
    "solarize",
    "hue",
)


# ----------------------------------------------------------------------------------------------------------
# Helpers shared by several ops.


def _per_image(values: Tensor) -> Tensor:
    """[B] -> [B, 1, 1, 1] so a per-image value broadcasts over [B, C, H, W]."""
    return values.view(-1, 1, 1, 1)


def _apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """x: uint8 [B, C, H, W]; lut: integer [B, C, 256] -> uint8 [B, C, H, W], lut[b, c, x[b, c, h, w]]."""
    b, c, h, w = x.shape
    out = torch.gather(lut.to(torch.uint8), 2, x.reshape(b, c, h * w).long())
    return out.view(b, c, h, w)


def _histogram(x: Tensor) -> Tensor:
    """x: uint8 [B, C, H, W] -> int64 [B, C, 256] per-image, per-channel counts (one scatter, no loop)."""
    b, c, h, w = x.shape
    hist = torch.zeros(b, c, 256, dtype=torch.int64, device=x.device)
    src = torch.ones(1, 1, 1, dtype=torch.int64, device=x.device).expand(b, c, h * w)
    return hist.scatter_add_(2, x.reshape(b, c, h * w).long(), src)


def _grey(x: Tensor) -> Tensor:
    """PIL's RGB -> L conversion (ITU-R 601-2 luma, fixed point): uint8 [B, 3, H, W] -> int32 [B, 1, H, W]."""
    xi = x.to(torch.int32)
    luma = xi[:, 0:1] * 19595 + xi[:, 1:2] * 38470 + xi[:, 2:3] * 7471 + 0x8000
    return luma >> 16


def _blend(degenerate: Tensor, image: Tensor, factor: Tensor) -> Tensor:
    """PIL Image.blend(degenerate, image, factor): degenerate + factor·(image − degenerate) in float32,
    clipped and then truncated towards zero (PIL casts the float to uint8 without rounding).

    degenerate, image: numeric [B, C or 1, H, W]; factor: [B] -> uint8 [B, C, H, W].
    """
    d = degenerate.to(torch.float32)
    out = d + _per_image(factor.to(torch.float32)) * (image.to(torch.float32) - d)
    return out.clamp(0.0, 255.0).to(torch.uint8)  # values are >= 0, so the cast truncates like PIL


def _enhance_factor(strength: Tensor) -> Tensor:
    """ImageEnhance factor of the table of method.md §4, 0.95 − 0.85·s."""
    return 0.95 - 0.85 * strength


# ----------------------------------------------------------------------------------------------------------
# The ops. Each: x uint8 [B, 3, H, W], s float64 [B], sign int64 [B] (only hue uses it) -> uint8 [B, 3, H, W].


def _identity(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    return x.clone()


def _invert(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    return 255 - x


def _autocontrast(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    """ImageOps.autocontrast(cutoff=0) per channel: stretch [lo, hi] to [0, 255] with int() truncation."""
    flat = x.flatten(2)
    lo = flat.amin(dim=2).to(torch.float64)  # [B, C]
    hi = flat.amax(dim=2).to(torch.float64)
    flat_channel = hi <= lo  # PIL leaves a single-valued channel unchanged
    # Tensor / tensor division: `255.0 / t` is computed as 255 · (1 / t) and can be one ulp off Python's
    # 255.0 / (hi - lo), which flips int() at exact integers.
    scale = torch.full_like(hi, 255.0) / torch.where(flat_channel, torch.ones_like(hi), hi - lo)
    offset = -lo * scale
    ramp = torch.arange(256, dtype=torch.float64, device=x.device)
    # PIL computes int(ix * scale + offset) in Python doubles; trunc matches int() for either sign.
    lut = torch.trunc(ramp * scale[..., None] + offset[..., None]).clamp(0, 255)
    lut = torch.where(flat_channel[..., None], ramp, lut)
    return _apply_lut(x, lut.to(torch.int64))


def _equalize(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    """ImageOps.equalize per channel: step = (N − count of the last non-empty bin) // 255,
    lut[i] = (step // 2 + Σ_{j<i} h[j]) // step; identity when step == 0 or only one bin is used."""
    hist = _histogram(x)  # [B, C, 256]
    nonzero = hist > 0
    bins = torch.arange(256, device=x.device)
    last_bin = torch.where(nonzero, bins, torch.full_like(bins, -1)).amax(dim=2, keepdim=True)  # [B, C, 1]
    last_count = hist.gather(2, last_bin.clamp(min=0))
    step = (hist.sum(dim=2, keepdim=True) - last_count) // 255
    identity = (nonzero.sum(dim=2, keepdim=True) <= 1) | (step == 0)
    exclusive_cumsum = hist.cumsum(dim=2) - hist
    lut = (step // 2 + exclusive_cumsum) // step.clamp(min=1)
    lut = torch.where(identity, bins.expand_as(lut), lut.clamp(max=255))
    return _apply_lut(x, lut)


def _pil_box_radius(sigma: float, passes: int = 3) -> float:
    """Fractional box radius PIL uses so that `passes` extended box blurs have std `sigma`
    (Gwosdek et al., "Theoretical foundations of Gaussian convolution by extended box filtering").
    PIL computes it in C floats, hence the float32 round trips."""
    f32 = np.float32
    sigma2 = f32(sigma) * f32(sigma) / f32(passes)
    big_l = np.sqrt(f32(12.0) * sigma2 + f32(1.0), dtype=np.float32)
    small_l = np.floor((big_l - f32(1.0)) / f32(2.0))
    a = (f32(2) * small_l + f32(1)) * (small_l * (small_l + f32(1)) - f32(3) * sigma2)
    a /= f32(6) * (sigma2 - (small_l + f32(1)) * (small_l + f32(1)))
    return float(f32(small_l + a))


def _box_kernel(radius: float) -> Tensor:
    """PIL's fixed-point extended box kernel of fractional radius r = l + a (float64 [2l + 3], integer
    values summing to about 2^24): ww = 2^24 / (2r + 1) on |k| ≤ l, the remainder split on |k| = l + 1."""
    small_l = int(radius)
    ww = int(np.float32(1 << 24) / (np.float32(radius) * np.float32(2) + np.float32(1)))
    fw = ((1 << 24) - (2 * small_l + 1) * ww) // 2
    k = torch.full((2 * small_l + 3,), float(ww), dtype=torch.float64)
    k[0] = k[-1] = float(fw)
    return k


def _box_pass(y: Tensor, bank: Tensor, dim: int) -> Tensor:
    """One PIL fixed-point box pass along `dim` (-1: W, -2: H), edges replicated.

    y: int64 [B, C, H, W]; bank: int64 [B, L] per-image kernels (L odd) -> int64 [B, C, H, W]. A sum of
    L shifted slices: the kernels are a handful of taps, so this beats a float64 depthwise convolution.
    """
    length = bank.shape[1]
    pad = length // 2
    n = y.shape[dim]
    # Replicate padding is not implemented for integer tensors; clamped indices do the same thing.
    index = torch.arange(-pad, n + pad, device=y.device).clamp(0, n - 1)
    padded = y.index_select(dim, index)
    acc = torch.zeros_like(y)
    for k in range(length):
        acc += bank[:, k].view(-1, 1, 1, 1) * padded.narrow(dim, k, n)
    return (acc + (1 << 23)) >> 24


def _blur(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    """PIL GaussianBlur(radius=σ), σ = 0.1 + 1.9·s: three extended box passes along W, then three along
    H, edges replicated, each pass rounded back to integers as PIL's fixed-point code does (this rounding
    matters for small σ, where a float blur drifts by most of a grey level). Integer arithmetic, so the
    result is exact on any device.

    All images are blurred together: each image's kernel is zero-padded to the longest one, which leaves
    its result unchanged (the edge replication only feeds the zero taps).
    """
    # Kernel weights are a few host scalars per image (PIL derives them in C floats).
    kernels = [_box_kernel(_pil_box_radius(0.1 + 1.9 * v)) for v in s.cpu().tolist()]
    length = max(k.numel() for k in kernels)
    bank = torch.stack([F.pad(k, ((length - k.numel()) // 2,) * 2) for k in kernels])  # [B, L]
    bank = bank.to(device=x.device, dtype=torch.int64)
    y = x.to(torch.int64)
    for dim in (-1, -1, -1, -2, -2, -2):
        y = _box_pass(y, bank, dim)
    return y.clamp(0, 255).to(torch.uint8)


def _contrast_by(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Contrast with factor [B]: blend with a constant grey = round(mean of the L image)."""
    mean = _grey(x).to(torch.float64).mean(dim=(1, 2, 3))
    grey = torch.floor(mean + 0.5)  # int(mean + 0.5) in PIL, mean >= 0
    return _blend(_per_image(grey).expand_as(x), x, factor)


def _brightness_by(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Brightness with factor [B]: blend with black."""
    return _blend(torch.zeros_like(x), x, factor)


def _color_by(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Color with factor [B]: blend with the L-converted grey image (replicated over RGB)."""
    return _blend(_grey(x).expand_as(x), x, factor)


def _contrast(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    return _contrast_by(x, _enhance_factor(s))


def _brightness(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    return _brightness_by(x, _enhance_factor(s))


def _color(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    return _color_by(x, _enhance_factor(s))


def _smooth(x: Tensor) -> Tensor:
    """PIL ImageFilter.SMOOTH: 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded, border pixels kept.

    x: uint8 [B, C, H, W] -> uint8 [B, C, H, W].
    """
    if x.shape[-2] < 3 or x.shape[-1] < 3:
        return x.clone()  # no interior pixels: PIL keeps the border unchanged
    c = x.shape[1]
    kernel = torch.ones(3, 3, dtype=torch.float32, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    inner = F.conv2d(x.to(torch.float32), kernel, groups=c)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = (inner + 0.5).clamp(0, 255).to(torch.uint8)
    return out


def _sharpness(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image."""
    return _blend(_smooth(x), x, _enhance_factor(s))


def _posterize(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    """ImageOps.posterize: keep the top 8 − max(1, ⌈4·s⌉) bits."""
    dropped = torch.ceil(4.0 * s).clamp(min=1).to(torch.int64)  # bits removed, 1..4
    mask = (255 - ((1 << dropped) - 1)).to(torch.uint8)
    return x & _per_image(mask)


def _solarize(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    """ImageOps.solarize: invert pixels >= threshold, threshold = clip(256 − ⌈255·s⌉, 1, 256)."""
    threshold = (256 - torch.ceil(255.0 * s)).clamp(1, 256).to(torch.int16)
    return torch.where(x.to(torch.int16) >= _per_image(threshold), 255 - x, x)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    """PIL's RGB -> HSV (all channels 0..255, H and S truncated): uint8 [B, 3, H, W] -> int64 [B, 3, H, W]."""
    rgb = x.to(torch.float32)
    r, g, b = rgb.unbind(1)
    maxc = rgb.amax(dim=1)
    minc = rgb.amin(dim=1)
    chroma = maxc - minc
    grey = chroma == 0
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    rc = (maxc - r) / safe_chroma
    gc = (maxc - g) / safe_chroma
    bc = (maxc - b) / safe_chroma
    # PIL mixes C floats and doubles here (float ratios, double constants, a float h); replaying the same
    # precisions matters because hues like 110.0 sit exactly on the int() truncation boundary.
    rc, gc, bc = rc.double(), gc.double(), bc.double()
    h = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc)).float()
    h = torch.remainder(h.double() / 6.0 + 1.0, 1.0).float().double()
    sat = chroma / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    hue_u8 = torch.where(grey, 0.0, torch.trunc(h * 255.0)).clamp(0, 255)
    sat_u8 = torch.where(grey, 0.0, torch.trunc(sat.double() * 255.0)).clamp(0, 255)
    return torch.stack([hue_u8, sat_u8, maxc.double()], dim=1).to(torch.int64)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """PIL's HSV -> RGB (sector formula, rounded): int64 [B, 3, H, W] 0..255 -> uint8 [B, 3, H, W]."""
    hh, ss, vv = hsv.to(torch.float32).unbind(1)
    h = hh * 6.0 / 255.0
    s = ss / 255.0
    sector = torch.floor(h)
    f = h - sector
    p = torch.round(vv * (1.0 - s)).clamp(0, 255)
    q = torch.round(vv * (1.0 - s * f)).clamp(0, 255)
    t = torch.round(vv * (1.0 - s * (1.0 - f))).clamp(0, 255)
    sector = sector.to(torch.int64) % 6
    # (r, g, b) for sectors 0..5, picked per pixel from the stacked candidates [V, p, q, t].
    candidates = torch.stack([vv, p, q, t], dim=1)  # [B, 4, H, W]
    table = torch.tensor(
        [[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]], device=hsv.device
    )  # indices into candidates: V=0, p=1, q=2, t=3
    choice = table[sector].permute(0, 3, 1, 2)  # [B, 3, H, W]
    rgb = torch.gather(candidates, 1, choice)
    rgb = torch.where((ss == 0).unsqueeze(1), vv.unsqueeze(1).expand_as(rgb), rgb)
    return rgb.to(torch.uint8)


def _hue_shift(x: Tensor, shift: Tensor) -> Tensor:
    """PIL-style hue rotation: H (0..255) + shift (int64 [B], wrapping mod 256)."""
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + _per_image(shift)[:, 0], 256)
    return _hsv_to_rgb(hsv)


def _hue(x: Tensor, s: Tensor, sign: Tensor) -> Tensor:
    """Shift H (PIL HSV, 0..255) by sign·round(255·0.5·s), wrapping mod 256."""
    # Python round() is round-half-even, as is torch.round.
    shift = sign.to(torch.float64) * torch.round(255.0 * 0.5 * s)
    return _hue_shift(x, shift.to(torch.int64))


_OP_FNS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "identity": _identity,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "invert": _invert,
    "blur": _blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "color": _color,
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
    "hue": _hue,
}
assert tuple(_OP_FNS) == OPS


def _random_signs(n: int, generator: torch.Generator | None) -> Tensor:
    """n signs ±1 with p = ½ each, drawn on the CPU so a CPU generator works for any image device."""
    return torch.randint(0, 2, (n,), generator=generator) * 2 - 1


def _apply(name: str, x: Tensor, strength: Tensor, sign: Tensor) -> Tensor:
    """Run op `name` on x: uint8 [B, 3, H, W] with strength float64 [B] and sign int64 [B]."""
    if name not in _OP_FNS:
        raise ValueError(f"unknown intensity op {name!r}; valid names: {', '.join(OPS)}")
    return _OP_FNS[name](x, strength.to(x.device, torch.float64), sign.to(x.device, torch.int64))


def intensity_op(
    name: str,
    image: Tensor,
    strength: float,
    *,
    sign: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Apply one photometric op of the method.md §4 pool at strength s ∈ [0, 1].

    image: uint8 [3, H, W] or [B, 3, H, W] -> uint8, same shape. `sign` (±1) fixes hue's shift direction;
    otherwise one sign per image is drawn from `generator` (CPU generator).
    """
    if name not in _OP_FNS:
        raise ValueError(f"unknown intensity op {name!r}; valid names: {', '.join(OPS)}")
    return _one_op(_apply, name, image, strength, sign, generator)


def _one_op(
    apply: Callable[[str, Tensor, Tensor, Tensor], Tensor],
    name: str,
    image: Tensor,
    value: float,
    sign: int | None,
    generator: torch.Generator | None,
) -> Tensor:
    """`apply(name, images [B, 3, H, W], value [B] float64, signs [B])` on one image [3, H, W] or a batch,
    with the same value for every image; the signs `sign`, else drawn per image from `generator`."""
    if image.dtype != torch.uint8 or image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(
            f"image must be uint8 [3, H, W] or [B, 3, H, W], got {image.dtype} {tuple(image.shape)}"
        )
    if sign is not None and sign not in (-1, 1):
        raise ValueError(f"sign must be -1 or 1, got {sign}")
    single = image.dim() == 3
    x = image.unsqueeze(0) if single else image
    b = x.shape[0]
    values = torch.full((b,), float(value), dtype=torch.float64)
    signs = torch.full((b,), sign, dtype=torch.int64) if sign is not None else _random_signs(b, generator)
    out = apply(name, x, values, signs)
    return out.squeeze(0) if single else out


def draw_ops(
    batch: int,
    magnitude: float | Tensor = 0.999,
    num_ops: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The random choices of a strong view, on the CPU: op indices into OPS int64 [num_ops, B] (uniform,
    with replacement), strengths s = U·m float64 [num_ops, B] and hue signs ±1 int64 [num_ops, B].

    magnitude: float or Tensor[B] (m per image). All draws are made up front, in a fixed order, so the
    result depends only on the generator's seed and the batch size.
    """
    m = torch.as_tensor(magnitude, dtype=torch.float64).detach().cpu().expand(batch)
    op_idx = torch.randint(0, len(OPS), (num_ops, batch), generator=generator)
    strengths = torch.rand(num_ops, batch, generator=generator, dtype=torch.float64) * m
    signs = _random_signs(num_ops * batch, generator).view(num_ops, batch)
    return op_idx, strengths, signs


def random_strong_view(
    images: Tensor,
    magnitude: float | Tensor = 0.999,
    num_ops: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Strong view: per image, `num_ops` ops drawn uniformly with replacement from OPS, each at
    s = U·m (U ~ U[0, 1], m per image), applied in sequence.

    images: uint8 [B, 3, H, W]; magnitude: float or Tensor[B] (the `magnitude` adaptation mode passes
    m = e_i here). Random draws use `generator` on the CPU; images sharing an op at a step run together.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    op_idx, strengths, signs = draw_ops(images.shape[0], magnitude, num_ops, generator)
    out = images.clone()
    for step in range(num_ops):
        for k in torch.unique(op_idx[step]).tolist():
            if OPS[k] == "identity":
                continue
            sel = (op_idx[step] == k).nonzero().squeeze(1)
            dev_sel = sel.to(images.device)
            out[dev_sel] = _apply(OPS[k], out[dev_sel], strengths[step, sel], signs[step, sel])
    return out


# The strong view of FixMatch-style methods, as UniMatch's code draws it (torchvision on PIL images):
# ColorJitter(0.5, 0.5, 0.5, 0.25) with p = 0.8, RandomGrayscale p = 0.2, GaussianBlur sigma ~ U[0.1, 2]
# with p = 0.5.
JITTER_P, JITTER_RANGE, HUE_RANGE = 0.8, 0.5, 0.25
GRAYSCALE_P, BLUR_P = 0.2, 0.5


def colour_strong_view(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """FixMatch/UniMatch strong view: per image, with p = 0.8 a colour jitter (brightness, contrast and
    saturation factors U[0.5, 1.5], hue shift U[-0.25, 0.25] of the circle, in a random order per image, as
    torchvision's ColorJitter), then grayscale with p = 0.2, then Gaussian blur with sigma ~ U[0.1, 2.0]
    with p = 0.5. PIL's formulas throughout (the ops above).

    images: uint8 [B, 3, H, W] -> uint8 [B, 3, H, W]. Every random draw is made up front on the CPU from
    `generator`, so the result depends only on its seed and the batch size.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    jitter = torch.rand(b, generator=generator) < JITTER_P
    factors = 1.0 + JITTER_RANGE * (2 * torch.rand(3, b, generator=generator, dtype=torch.float64) - 1)
    hue = HUE_RANGE * (2 * torch.rand(b, generator=generator, dtype=torch.float64) - 1)
    order = torch.argsort(torch.rand(b, 4, generator=generator), dim=1)  # a random op order per image
    grey = torch.rand(b, generator=generator) < GRAYSCALE_P
    blur = torch.rand(b, generator=generator) < BLUR_P
    sigma_strength = torch.rand(b, generator=generator, dtype=torch.float64)  # sigma = 0.1 + 1.9 s

    # The four jitter ops with each image's value for them: brightness, contrast, saturation, hue shift.
    jitter_ops = (
        (_brightness_by, factors[0]),
        (_contrast_by, factors[1]),
        (_color_by, factors[2]),
        (_hue_shift, torch.trunc(hue * 255).to(torch.int64)),
    )
    out = images.clone()
    for position in range(4):
        for k, (op, values) in enumerate(jitter_ops):
            sel = (jitter & (order[:, position] == k)).nonzero().squeeze(1)
            if sel.numel():
                dev = sel.to(images.device)
                out[dev] = op(out[dev], values[sel].to(images.device))
    if grey.any():
        dev = grey.nonzero().squeeze(1).to(images.device)
        out[dev] = _grey(out[dev]).to(torch.uint8).expand(-1, 3, -1, -1)
    if blur.any():
        sel = blur.nonzero().squeeze(1)
        dev = sel.to(images.device)
        out[dev] = _blur(out[dev], sigma_strength[sel], sel)  # _blur reads its strengths on the host
    return out


def adapt(
    weak: Tensor,
    strong: Tensor,
    easiness: Tensor,
    mode: Literal["mix", "select", "none"] = "mix",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Model-adaptive intensity view from the weak and strong views (method.md §4).

    weak, strong: uint8 [B, 3, H, W]; easiness e: Tensor[B] in [0, 1] -> uint8 [B, 3, H, W].
    - mix: round(e·strong + (1 − e)·weak) (released code);
    - select: strong with probability e_i, else weak (one CPU draw per image from `generator`);
    - none: strong unchanged.
    The `magnitude` mode is not handled here: call random_strong_view(weak, magnitude=e) instead.
    """
    if weak.shape != strong.shape or weak.dtype != torch.uint8 or strong.dtype != torch.uint8:
        raise ValueError("weak and strong must be uint8 tensors of the same shape [B, 3, H, W]")
    e = easiness.detach().to(torch.float32)
    if mode == "mix":
        ew = _per_image(e.to(weak.device))
        mixed = ew * strong.to(torch.float32) + (1.0 - ew) * weak.to(torch.float32)
        return mixed.round().clamp(0, 255).to(torch.uint8)
    if mode == "select":
        pick = torch.rand(e.shape[0], generator=generator) < e.cpu()
        return torch.where(_per_image(pick.to(weak.device)), strong, weak)
    if mode == "none":
        return strong.clone()
    raise ValueError(
        f"unknown adaptation mode {mode!r}; valid modes: mix, select, none (magnitude: see docs)"
    )


# ----------------------------------------------------------------------------------------------------------
# AugSeg's random intensity view (Zhao et al., CVPR 2023). The released code drew it per image with PIL in
# the unlabeled loader's workers (augseg/dataset/augs_TIBA.py, class strong_img_aug): k ops drawn uniformly
# with replacement from an 11-op pool (no invert), k ~ U{1, ..., num_augs} per image when
# flag_use_random_num_sampling is on (the released configs: num_augs 3, sampling on), each op at its own
# uniform draw u ~ U[0, 1) mapped to the op's range as below. Blur is one of the pool's ops, not a separate
# step, and there is no cutout: the only other perturbation of the unlabeled view is the label-aided CutMix.

AUGSEG_OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "blur",
    "contrast",
    "brightness",
    "color",
    "sharpness",
    "posterize",
    "solarize",
    "hue",
)
AUGSEG_NUM_OPS = 3  # num_augs of every released config (VOC and Cityscapes)
# ImageEnhance factor range of contrast, brightness, color and sharpness; the factor is hi − (hi − lo)·u.
AUGSEG_ENHANCE_RANGE = (0.05, 0.95)
AUGSEG_HUE_MAX = 0.5  # hue shift ±u·0.5 of the circle, the sign a fair coin
# Smallest u that solarize sees: the released threshold 256 − max(1, ⌈255·u⌉) never reaches 256 (no-op),
# and every u in (0, 1/255] already gives ⌈255·u⌉ = 1, so clamping u here reproduces max(1, ·) exactly.
_SOLARIZE_MIN_U = 1.0 / 512


def _augseg_enhance_factor(u: Tensor) -> Tensor:
    """ImageEnhance factor of AugSeg's draw u: 0.95 − 0.9·u ∈ (0.05, 0.95], float64 [B]."""
    lo, hi = AUGSEG_ENHANCE_RANGE
    return hi - (hi - lo) * u


def _augseg_apply(name: str, x: Tensor, u: Tensor, sign: Tensor) -> Tensor:
    """AugSeg's op `name` on x: uint8 [B, 3, H, W] with draws u float64 [B] and hue signs int64 [B].

    u → op parameter, as the released op functions map it:
      blur       GaussianBlur σ = 0.1 + 1.9·u                     (the pool op `_blur` at s = u)
      contrast, brightness, color, sharpness   factor 0.95 − 0.9·u  (ImageEnhance, PIL formulas)
      posterize  keep 8 − max(1, ⌈4·u⌉) bits (4..7)              (`_posterize` at s = u)
      solarize   threshold 256 − max(1, ⌈255·u⌉) (1..255)        (`_solarize`, u clamped, see above)
      hue        H += trunc(±0.5·u·255) mod 256                   (np.uint8 of the shift truncates)
      identity, autocontrast, equalize: no parameter.
    """
    if name == "blur":
        # Blur computes its kernel weights on the host: hand it host draws, so nothing waits for the device.
        return _blur(x, u.detach().cpu().to(torch.float64), sign)
    u = u.to(x.device, torch.float64)
    sign = sign.to(x.device, torch.int64)
    if name in ("identity", "autocontrast", "equalize", "posterize"):
        return _OP_FNS[name](x, u, sign)
    if name == "solarize":
        return _solarize(x, u.clamp(min=_SOLARIZE_MIN_U), sign)
    if name == "hue":
        shift = torch.trunc(sign.to(torch.float64) * (AUGSEG_HUE_MAX * u) * 255.0)
        return _hue_shift(x, shift.to(torch.int64))
    factor = _augseg_enhance_factor(u)
    if name == "contrast":
        return _contrast_by(x, factor)
    if name == "brightness":
        return _brightness_by(x, factor)
    if name == "color":
        return _color_by(x, factor)
    if name == "sharpness":
        return _blend(_smooth(x), x, factor)
    raise ValueError(f"unknown AugSeg op {name!r}; valid names: {', '.join(AUGSEG_OPS)}")


def augseg_op(
    name: str,
    image: Tensor,
    u: float,
    *,
    sign: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Apply one op of AugSeg's pool at the uniform draw u ∈ [0, 1] (mapped per op, see `_augseg_apply`).

    image: uint8 [3, H, W] or [B, 3, H, W] -> uint8, same shape. `sign` (±1) fixes hue's direction;
    otherwise one sign per image is drawn from `generator` (CPU generator).
    """
    if name not in AUGSEG_OPS:
        raise ValueError(f"unknown AugSeg op {name!r}; valid names: {', '.join(AUGSEG_OPS)}")
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"u must lie in [0, 1], got {u}")
    return _one_op(_augseg_apply, name, image, u, sign, generator)


def draw_augseg_ops(
    batch: int,
    num_ops: int = AUGSEG_NUM_OPS,
    random_num: bool = True,
    pool_size: int = len(AUGSEG_OPS),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The random choices of AugSeg's intensity view, on the CPU, all made up front in a fixed order.

    Returns (op indices into the pool int64 [num_ops, B], draws u ~ U[0, 1) float64 [num_ops, B], hue signs
    ±1 int64 [num_ops, B], active bool [num_ops, B]). Image i runs steps 0 .. k_i − 1 (active[step, i]),
    k_i ~ U{1, ..., num_ops} when `random_num` (flag_use_random_num_sampling), else k_i = num_ops.
    """
    if num_ops < 1:
        raise ValueError(f"num_ops must be at least 1, got {num_ops}")
    if random_num:
        count = torch.randint(1, num_ops + 1, (batch,), generator=generator)
    else:
        count = torch.full((batch,), num_ops, dtype=torch.int64)
    op_idx = torch.randint(0, pool_size, (num_ops, batch), generator=generator)
    draws = torch.rand(num_ops, batch, generator=generator, dtype=torch.float64)
    signs = _random_signs(num_ops * batch, generator).view(num_ops, batch)
    active = torch.arange(num_ops)[:, None] < count[None, :]
    return op_idx, draws, signs, active


def augseg_strong_view(
    images: Tensor,
    num_ops: int = AUGSEG_NUM_OPS,
    random_num: bool = True,
    pool: tuple[str, ...] = AUGSEG_OPS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """AugSeg's random intensity view: per image, k ops drawn uniformly with replacement from `pool`
    (k ~ U{1, ..., num_ops} when `random_num`, else num_ops), each at its own draw u ~ U[0, 1), in sequence.

    images: uint8 [B, 3, H, W] -> uint8 [B, 3, H, W], a new tensor. The draws come from `generator` on the
    CPU (`draw_augseg_ops`), so the result depends only on its seed and the batch size, on any device; the
    images sharing an op at a step run together, and nothing waits for the device.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    unknown = [name for name in pool if name not in AUGSEG_OPS]
    if unknown or not pool:
        raise ValueError(f"unknown AugSeg ops {unknown} (or an empty pool); valid: {', '.join(AUGSEG_OPS)}")
    op_idx, draws, signs, active = draw_augseg_ops(images.shape[0], num_ops, random_num, len(pool), generator)
    out = images.clone()
    for step in range(num_ops):
        for k in torch.unique(op_idx[step][active[step]]).tolist():
            if pool[k] == "identity":
                continue
            sel = (active[step] & (op_idx[step] == k)).nonzero().squeeze(1)
            dev_sel = sel.to(images.device)
            out[dev_sel] = _augseg_apply(pool[k], out[dev_sel], draws[step, sel], signs[step, sel])
    return out
