"""Decode throughput of PIL vs OpenCV on one thread, and whether the decoded pixels agree.

    pip install opencv-python-headless   # not a dependency of the project
    OMP_NUM_THREADS=1 python benchmarks/decode_pil_vs_cv2.py [--seconds 3]

Two in-memory files: a 500x375 JPEG (quality 90) of photo-like content (smooth gradients plus noise) and a
2048x1024 RGB PNG of the same kind. Each library decodes the bytes to an RGB uint8 array (OpenCV's BGR
turned to RGB, as a caller would), best of 3 timed rounds.
"""

from __future__ import annotations

import argparse
import io
import time

import cv2
import numpy as np
import PIL
from PIL import Image


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients and blobs plus per-pixel noise: compresses like a photo, not like flat art."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * fx * x / width + phase) * np.cos(2 * np.pi * fy * y / height)
        ramp = (x / width + (c + 1) * y / height) / (c + 2)
        channels.append(110 + 70 * wave + 60 * ramp)
    image = np.stack(channels, axis=-1) + rng.normal(0, 8, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"quality": 90} if fmt == "JPEG" else {}
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def cv2_decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rate(decode, data: bytes, seconds: float) -> float:
    """Images per second, best of 3 rounds of about `seconds` / 3 each."""
    decode(data)  # warm-up
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            decode(data)
            count += 1
        best = max(best, count / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per library and file")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"Pillow {PIL.__version__}, OpenCV {cv2.__version__}, cv2 threads {cv2.getNumThreads()}")
    files = {
        "JPEG 500x375 q90": encode(photo_like(500, 375), "JPEG"),
        "PNG 2048x1024 RGB": encode(photo_like(2048, 1024, seed=1), "PNG"),
    }
    for name, data in files.items():
        a, b = pil_decode(data), cv2_decode(data)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        same = (
            "identical"
            if a.shape == b.shape and not diff.any()
            else (
                f"differ: {np.count_nonzero(diff.any(-1)) / diff[..., 0].size:.2%} of pixels, "
                f"max |diff| {diff.max()}"
            )
        )
        pil, ocv = rate(pil_decode, data, args.seconds), rate(cv2_decode, data, args.seconds)
        print(
            f"{name} ({len(data) / 1024:.0f} KiB): PIL {pil:.1f} img/s, cv2 {ocv:.1f} img/s "
            f"(cv2/PIL {ocv / pil:.2f}); pixels {same}"
        )


if __name__ == "__main__":
    main()
