"""A small synthetic segmentation dataset on which semi-supervised learning has something to gain.

Background + 5 shape classes (disk, square, triangle, ring, cross), 2-4 objects per image, 56-90 px images.
Like real classes (sky is usually blue, but not always), each class has a typical colour that 70% of its
objects take (jittered); the rest get any colour. Fills are flat, gradients or stripes; objects vary in size
(and, if ROTATION_DEG > 0, in rotation), overlap (the top one wins in the mask) and lie on gradient
backgrounds; Gaussian noise and JPEG compression on top. Background is ~71% of the pixels (VOC: ~70%).

Why these settings (measured with this code, ResNet-18 segmenters, 600 iterations of batch 8 on 2 CPU cores;
numbers in training-imas-logs/toy/README.md): with colours unrelated to the class and objects covering ~13%
of the image, even all ~650 images labeled gave ~25 mIoU in the budget (the net mostly predicted background);
class-typical colours and larger objects made it learnable (at 80-128 px and crop 64: 64 labels 37, 600
labels 45, from scratch). At the present size (crop 48) 64 labels give 39 from scratch in 1200 iterations and
47 in 600 iterations from the backbone of tools/toy_pretrain.py.
Free rotation, stripes / smooth-noise backgrounds and distractor lines, dots and blobs (all background) are
kept as knobs below (off): with them on, nothing was learned in 2000 iterations even with all labels.

Everything is drawn from numpy generators keyed by (seed, split, index), so the files are byte-identical for
the same seed. Layout written (VOC style, 6 classes): JPEGImages/<id>.jpg, SegmentationClassAug/<id>.png
(single-channel index PNGs), splits/{labeled,unlabeled,val}.txt (one id per line), class_names.txt.

    python -m imas.data.toy --out data/toy [--seed 0] [--labeled 64 --unlabeled 600 --val 150]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

TOY_CLASSES = ["background", "disk", "square", "triangle", "ring", "cross"]
SPLIT_SIZES = {"labeled": 64, "unlabeled": 600, "val": 150}
_SPLIT_CODES = {"labeled": 0, "unlabeled": 1, "val": 2}
MIN_SIDE, MAX_SIDE = 56, 90
JPEG_QUALITY = 95
# Difficulty knobs (see the module docstring for what was measured with which setting).
OBJECT_RADIUS = (11.0, 20.0)  # px, half the size of a shape
OBJECTS_PER_IMAGE = (2, 4)
ROTATION_DEG = 0.0  # objects are rotated by U[-ROTATION_DEG, ROTATION_DEG]
NOISE_SIGMA = (2.0, 4.0)
DISTRACTORS = {"lines": 0, "dots": 0, "blobs": 0}  # at most this many of each per image
BACKGROUND_P = {"stripes": 0.0, "noise": 0.0}  # probability of each background layer
# Like real classes (sky, grass, road), each shape class has a typical colour that an object takes with
# probability CLASS_COLOUR_P (jittered by N(0, CLASS_COLOUR_JITTER) per channel); otherwise any colour.
CLASS_COLOURS = {1: (220, 60, 60), 2: (60, 190, 70), 3: (60, 90, 225), 4: (230, 200, 40), 5: (190, 70, 210)}
CLASS_COLOUR_P = 0.7
CLASS_COLOUR_JITTER = 35.0


# Bumped whenever the generator's output changes; written to <root>/toy_version.txt so that `--ensure`
# replaces a dataset made by an older generator.
GENERATOR_VERSION = "2"
VERSION_FILE = "toy_version.txt"


def is_current(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> bool:
    """True if `root` holds a complete toy dataset written by this generator version with these settings."""
    version = Path(root) / VERSION_FILE
    return version.is_file() and version.read_text() == _version_text(seed, {**SPLIT_SIZES, **(sizes or {})})


def _version_text(seed: int, sizes: dict[str, int]) -> str:
    counts = " ".join(f"{split}={count}" for split, count in sizes.items())
    return f"generator {GENERATOR_VERSION} seed {seed} {counts}\n"


def make_toy_dataset(root: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Write the toy dataset under `root` (created if needed) and return `root` as a Path.

    `sizes` maps split name -> number of images (default SPLIT_SIZES); image i of a split does not depend on
    the sizes, so a larger labeled split extends a smaller one.
    """
    root = Path(root)
    sizes = {**SPLIT_SIZES, **(sizes or {})}
    for folder in ("JPEGImages", "SegmentationClassAug", "splits"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, count in sizes.items():
        if split not in _SPLIT_CODES or count < 1:
            raise ValueError(
                f"toy split sizes must be positive counts for {', '.join(_SPLIT_CODES)}: {sizes}"
            )
        ids = toy_split_ids(split, count)
        for index, image_id in enumerate(ids):
            image, label = make_toy_sample(seed, split, index)
            Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
            Image.fromarray(label, mode="L").save(root / "SegmentationClassAug" / f"{image_id}.png")
        (root / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "class_names.txt").write_text("\n".join(TOY_CLASSES) + "\n")
    (root / VERSION_FILE).write_text(_version_text(seed, sizes))  # last: marks the dataset complete
    return root


def toy_split_ids(split: str, count: int) -> list[str]:
    """The ids of a toy split, as its list file holds them (`splits/toy/` keeps the default ones)."""
    return [f"{split}_{index:04d}" for index in range(count)]


def make_toy_sample(seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image uint8 [H, W, 3] and its label uint8 [H, W] (values 0..5), a pure function of its key."""
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    height, width = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    image = _background(rng, height, width, ys, xs)
    _draw_distractors(rng, image, ys, xs)
    label = np.zeros((height, width), dtype=np.uint8)
    # The last object is drawn on top and cycles through the classes, so every split holds every class.
    num_objects = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    classes = [int(c) for c in rng.integers(1, len(TOY_CLASSES), size=num_objects - 1)]
    classes.append(1 + index % (len(TOY_CLASSES) - 1))
    for class_id in classes:
        _draw_object(rng, image, label, class_id, ys, xs)
    image += rng.normal(0.0, rng.uniform(*NOISE_SIGMA), size=image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


# --------------------------------------------------------------------------------------------- drawing


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1], [H, W]: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BICUBIC))
    return np.clip(field, 0, 1)


def _stripes(
    rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, period: tuple[float, float]
) -> np.ndarray:
    """Sinusoidal stripes in [0, 1] at a random angle, period and phase, [H, W]."""
    angle = rng.uniform(0, np.pi)
    freq = 2 * np.pi / rng.uniform(*period)
    return 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xs + np.sin(angle) * ys) + rng.uniform(0, 2 * np.pi))


def _background(
    rng: np.random.Generator, height: int, width: int, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Float RGB [H, W, 3]: a two-colour gradient, plus stripes and/or smooth colour noise."""
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = _color(rng) * (1 - t[..., None]) + _color(rng) * t[..., None]
    if rng.uniform() < BACKGROUND_P["stripes"]:
        weight = rng.uniform(0.15, 0.5) * _stripes(rng, ys, xs, (4.0, 16.0))[..., None]
        image = image * (1 - weight) + _color(rng) * weight
    if rng.uniform() < BACKGROUND_P["noise"]:
        weight = rng.uniform(0.2, 0.6) * _smooth_noise(rng, height, width, int(rng.integers(3, 8)))[..., None]
        image = image * (1 - weight) + _color(rng) * weight
    return image.astype(np.float32)


def _blend(image: np.ndarray, alpha: np.ndarray, fill: np.ndarray) -> None:
    """In place: image = image * (1 - alpha) + fill * alpha; alpha [H, W], fill [3] or [H, W, 3]."""
    image *= 1 - alpha[..., None]
    image += fill * alpha[..., None]


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    """Background clutter that is not any class: thin lines, small dots, soft blobs."""
    height, width = ys.shape
    # Lines: anti-aliased distance to a segment.
    for _ in range(int(rng.integers(0, DISTRACTORS["lines"] + 1))):
        (x0, x1), (y0, y1) = rng.uniform(0, width, 2), rng.uniform(0, height, 2)
        dx, dy = x1 - x0, y1 - y0
        s = np.clip(((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        dist = np.hypot(xs - x0 - s * dx, ys - y0 - s * dy)
        _blend(image, np.clip(rng.uniform(0.5, 1.5) + 0.5 - dist, 0, 1), _color(rng))
    for _ in range(int(rng.integers(0, DISTRACTORS["dots"] + 1))):  # dots of radius 1-3 px
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1.0, 3.0)
        _blend(image, np.clip(radius + 0.5 - np.hypot(xs - cx, ys - cy), 0, 1), _color(rng))
    # Soft, low-contrast blobs without a sharp edge.
    for _ in range(int(rng.integers(0, DISTRACTORS["blobs"] + 1))):
        cx, cy, sigma = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(6.0, 20.0)
        alpha = rng.uniform(0.2, 0.5) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        _blend(image, alpha.astype(np.float32), _color(rng))


def _signed_distance(
    class_id: int, u: np.ndarray, v: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Approximate signed distance (negative inside) to a shape of size `radius` in its own frame (u, v)."""
    name = TOY_CLASSES[class_id]
    r = np.hypot(u, v)
    if name == "disk":
        return r - radius
    if name == "ring":
        inner = radius * rng.uniform(0.45, 0.65)
        return np.maximum(r - radius, inner - r)
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85 * radius
    if name == "triangle":
        # Equilateral with circumradius 1.15 * radius: inside all three edges at distance (inradius) from 0.
        inradius = 0.575 * radius
        angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.max([np.cos(a) * u + np.sin(a) * v - inradius for a in angles], axis=0)
    if name == "cross":
        half_width = radius * rng.uniform(0.25, 0.35)
        bar_u = np.maximum(np.abs(u) - radius, np.abs(v) - half_width)
        bar_v = np.maximum(np.abs(v) - radius, np.abs(u) - half_width)
        return np.minimum(bar_u, bar_v)
    raise ValueError(f"unknown toy class {class_id}")


def _object_fill(
    rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, avoid: np.ndarray, class_id: int
) -> np.ndarray:
    """A flat colour, gradient or stripe texture whose mean differs clearly from `avoid` ([3]); its first
    colour is the class's typical one with probability CLASS_COLOUR_P."""
    typical = class_id in CLASS_COLOURS and rng.uniform() < CLASS_COLOUR_P
    for _ in range(20):
        first, second = _color(rng), _color(rng)
        if typical:
            jitter = rng.normal(0.0, CLASS_COLOUR_JITTER, size=3)
            first = np.clip(np.asarray(CLASS_COLOURS[class_id], np.float32) + jitter, 0, 255).astype(
                np.float32
            )
        kind = rng.uniform()
        if kind < 0.5:
            fill: np.ndarray = first
        else:
            if kind < 0.75:
                angle = rng.uniform(0, 2 * np.pi)
                t = np.cos(angle) * xs + np.sin(angle) * ys
                t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
            else:
                t = _stripes(rng, ys, xs, (3.0, 8.0))
            fill = first * (1 - t[..., None]) + second * t[..., None]
        mean = fill.reshape(-1, 3).mean(axis=0)
        if np.linalg.norm(mean - avoid) >= 70:
            break
    return fill.astype(np.float32)


def _draw_object(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    class_id: int,
    ys: np.ndarray,
    xs: np.ndarray,
) -> None:
    """Draw one shape with anti-aliased edges; pixels more than half covered get its class in the label."""
    height, width = label.shape
    radius = rng.uniform(*OBJECT_RADIUS)
    # Keep the centre far enough inside that most of the object is visible.
    cx = rng.uniform(0.4 * radius, width - 0.4 * radius)
    cy = rng.uniform(0.4 * radius, height - 0.4 * radius)
    theta = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    extent = 1.3 * radius + 2
    y0, y1 = max(0, int(cy - extent)), min(height, int(cy + extent) + 1)
    x0, x1 = max(0, int(cx - extent)), min(width, int(cx + extent) + 1)
    by, bx = ys[y0:y1, x0:x1], xs[y0:y1, x0:x1]
    u = np.cos(theta) * (bx - cx) + np.sin(theta) * (by - cy)
    v = -np.sin(theta) * (bx - cx) + np.cos(theta) * (by - cy)
    dist = _signed_distance(class_id, u, v, radius, rng)
    alpha = np.clip(0.5 - dist, 0, 1).astype(np.float32)
    region = image[y0:y1, x0:x1]
    inside = dist <= 0
    avoid = region[inside].mean(axis=0) if inside.any() else region.reshape(-1, 3).mean(axis=0)
    _blend(region, alpha, _object_fill(rng, by, bx, avoid, class_id))
    label[y0:y1, x0:x1][inside] = class_id


# --------------------------------------------------------------------------- backbone pretraining images

# The toy's stand-in for ImageNet: classify one object of *other* shapes than the segmentation classes, drawn
# the same way (random colours and fills on gradient backgrounds), so that a backbone pretrained on it knows
# edges, corners and curvature but has never seen a segmentation class or label.
PRETRAIN_CLASSES = ["star", "hexagon", "ellipse", "ell", "chevron", "crescent"]
_PRETRAIN_SPLIT_CODE = 9
_SUPERSAMPLE = 4


def _pretrain_outline(class_id: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Polygon vertices of a pretraining shape in a unit frame (radius ~1); the crescent is drawn apart."""
    name = PRETRAIN_CLASSES[class_id]
    if name == "star":
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return list(zip(radii * np.cos(angles), radii * np.sin(angles)))
    if name == "hexagon":
        angles = np.arange(6) * np.pi / 3
        return list(zip(np.cos(angles), np.sin(angles)))
    if name == "ellipse":
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        minor = rng.uniform(0.4, 0.6)
        return list(zip(np.cos(angles), minor * np.sin(angles)))
    if name == "ell":
        return [(-1, -1), (-0.35, -1), (-0.35, 0.35), (1, 0.35), (1, 1), (-1, 1)]
    if name == "chevron":
        return [(-1, -1), (-0.35, -1), (0.7, 0), (-0.35, 1), (-1, 1), (0.05, 0)]
    raise ValueError(f"no outline for pretraining class {name!r}")


def make_pretrain_sample(seed: int, index: int, size: int = 48) -> tuple[np.ndarray, int]:
    """One pretraining image uint8 [size, size, 3] and its class in [0, len(PRETRAIN_CLASSES)),
    a pure function of (seed, index); classes cycle with the index."""
    from PIL import ImageDraw

    rng = np.random.default_rng([seed, _PRETRAIN_SPLIT_CODE, index])
    class_id = index % len(PRETRAIN_CLASSES)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = _background(rng, size, size, ys, xs)
    radius = rng.uniform(0.25, 0.45) * size
    cx, cy = rng.uniform(0.35, 0.65, size=2) * size
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)

    def to_pixels(points: np.ndarray) -> list[tuple[float, float]]:
        points = points @ rot.T * radius + (cx, cy)
        return [(float(x) * _SUPERSAMPLE, float(y) * _SUPERSAMPLE) for x, y in points]

    if PRETRAIN_CLASSES[class_id] == "crescent":
        circle = np.stack([np.cos(np.linspace(0, 2 * np.pi, 48)), np.sin(np.linspace(0, 2 * np.pi, 48))], 1)
        draw.polygon(to_pixels(circle), fill=255)
        draw.polygon(to_pixels(0.8 * circle + (0.45, 0.0)), fill=0)
    else:
        draw.polygon(to_pixels(np.asarray(_pretrain_outline(class_id, rng), dtype=np.float64)), fill=255)
    alpha = np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    inside = alpha > 0.5
    avoid = image[inside].mean(axis=0) if inside.any() else image.reshape(-1, 3).mean(axis=0)
    _blend(image, alpha, _object_fill(rng, ys, xs, avoid, class_id=0))
    image += rng.normal(0.0, rng.uniform(*NOISE_SIGMA), size=image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), class_id


# ------------------------------------------------------------------------------------------------- CLI


def dataset_digest(root: str | Path) -> str:
    """SHA-256 over every file's relative path and bytes: equal digests mean byte-identical datasets."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic toy segmentation dataset.")
    parser.add_argument("--out", default="data/toy", help="output folder (default: data/toy)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    for split, count in SPLIT_SIZES.items():
        parser.add_argument(
            f"--{split}", type=int, default=count, help=f"images in {split} (default: {count})"
        )
    parser.add_argument(
        "--ensure",
        action="store_true",
        help="do nothing if --out already holds this generator's dataset with these settings",
    )
    args = parser.parse_args(argv)
    sizes = {split: getattr(args, split) for split in SPLIT_SIZES}
    if min(sizes.values()) < 1:
        parser.error(f"split sizes must be at least 1, got {sizes}")
    if args.ensure and is_current(args.out, args.seed, sizes):
        return 0
    if args.ensure and Path(args.out, VERSION_FILE).is_file():
        print(f"{args.out} was made by another toy generator version or settings; writing it again")
    start = time.perf_counter()
    root = make_toy_dataset(args.out, args.seed, sizes)
    counts = ", ".join(f"{count} {split}" for split, count in sizes.items())
    print(f"wrote the toy dataset ({counts}) to {root} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
