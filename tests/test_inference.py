"""Whole / sliding-window / multi-scale + flip prediction and evaluation with tiny models on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imas.inference import (
    evaluate,
    predict,
    predict_box,
    predict_labels_tiled,
    predict_sliding,
    predict_whole,
    window_starts,
)
from imas.metrics import ConfusionMatrix
from imas.models import SegOutput
from imas.normalization import IMAGENET_MEAN, IMAGENET_STD, MEAN_RGB_UINT8, normalize

K = 4


def image(h: int, w: int, b: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def pointwise_model() -> nn.Module:
    """1×1 convs with a nonlinearity: each output pixel depends on that input pixel only."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Tanh(), nn.Conv2d(8, K, 1)).eval()


def conv_model(layers: int = 1) -> nn.Module:
    torch.manual_seed(1)
    body = [nn.Conv2d(3 if i == 0 else K, K, 3, padding=1) for i in range(layers)]
    return nn.Sequential(*body).eval()


class ColumnBias(nn.Module):
    """Adds a ramp over the columns of whatever it is given: the output depends on the window position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 3, x.shape[-1]).view(1, 1, 1, -1)
        return x.repeat(1, 2, 1, 1)[:, :K] * torch.arange(1, K + 1).view(1, K, 1, 1) * ramp


def test_window_starts_cover_and_end_aligned():
    assert window_starts(1024, 769, 512) == [0, 255]
    assert window_starts(2048, 769, 512) == [0, 512, 1024, 1279]
    assert window_starts(769, 769, 512) == [0]
    assert window_starts(100, 769, 512) == [0]
    assert window_starts(41, 16, 7) == [0, 7, 14, 21, 25]


def test_whole_gives_probabilities():
    probs = predict_whole(conv_model(), image(9, 13, b=2))
    assert probs.shape == (2, K, 9, 13) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(2, 9, 13))


def test_sliding_equals_whole_when_one_window_covers_the_image():
    model = conv_model(layers=2)
    x = image(20, 20, b=2)
    assert torch.allclose(predict_sliding(model, x, window=20), predict_whole(model, x), atol=1e-6)
    # Smaller than the window: zero padding at the bottom/right is what a single zero-padded conv sees anyway.
    model = conv_model(layers=1)
    x = image(17, 23, b=2)
    out = predict_sliding(model, x, window=32)
    assert out.shape == (2, K, 17, 23)
    assert torch.allclose(out, predict_whole(model, x), atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_sliding_stitches_pointwise_model_exactly(batch_size):
    model = pointwise_model()
    x = image(37, 50, b=2)
    out = predict_sliding(model, x, window=16, stride=10, batch_size=batch_size)
    assert torch.allclose(out, predict_whole(model, x), atol=1e-6)


def test_sliding_averages_overlapping_windows():
    """A position-dependent model: each pixel is the mean softmax of the windows that contain it."""
    model, window, stride = ColumnBias(), 8, 5
    x = image(6, 19, b=2)  # height below the window: padded; width 19 -> windows at 0, 5, 10, 11
    expected = torch.zeros(2, K, 8, 19)
    count = torch.zeros(8, 19)
    for left in (0, 5, 10, 11):
        padded = torch.nn.functional.pad(x, (0, 0, 0, 2))
        expected[..., left : left + window] += model(padded[..., left : left + window]).softmax(1)
        count[:, left : left + window] += 1
    expected = (expected / count)[:, :, :6]
    out = predict_sliding(model, x, window=window, stride=stride, batch_size=3)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("size", [(41, 29), (16, 16), (5, 70)])
def test_sliding_shapes(size):
    out = predict_sliding(conv_model(), image(*size), window=16, stride=7)
    assert out.shape == (1, K, *size)
    assert torch.allclose(out.sum(1), torch.ones(1, *size), atol=1e-6)


def test_default_stride_and_bad_arguments():
    model, x = pointwise_model(), image(30, 30)
    assert torch.allclose(predict_sliding(model, x, 12), predict_sliding(model, x, 12, stride=8))
    with pytest.raises(ValueError):
        predict_sliding(model, x, 12, stride=13)
    with pytest.raises(ValueError):
        predict(model, x, mode="tiles")
    with pytest.raises(ValueError):
        predict(model, x, scales=[])


def test_flip_with_flip_equivariant_model():
    model = conv_model()
    with torch.no_grad():  # a left-right symmetric kernel makes the model commute with a horizontal flip
        model[0].weight.copy_((model[0].weight + model[0].weight.flip(-1)) / 2)
    x = image(11, 14, b=2)
    assert torch.allclose(predict(model, x, flip=True), predict(model, x), atol=1e-6)
    pointwise = pointwise_model()  # sliding windows are not placed symmetrically, so only pointwise is exact
    sliding = predict(pointwise, x, mode="sliding", window=8, flip=True)
    assert torch.allclose(sliding, predict_whole(pointwise, x), atol=1e-6)


def test_flip_averages_the_mirrored_prediction():
    model, x = ColumnBias(), image(5, 9)
    expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1).flip(-1)) / 2
    assert torch.allclose(predict(model, x, flip=True), expected, atol=1e-6)


def test_multi_scale():
    x = image(21, 30, b=2)
    model = pointwise_model()
    out = predict(model, x, scales=(0.5, 0.75, 1.5), flip=True)
    assert out.shape == (2, K, 21, 30)
    assert torch.allclose(out.sum(1), torch.ones(2, 21, 30), atol=1e-5)
    assert torch.allclose(predict(model, x, scales=[1.0]), predict_whole(model, x))
    sliding = predict(model, x, mode="sliding", window=12, scales=(0.75, 1.25))
    assert sliding.shape == (2, K, 21, 30)
    assert not out.requires_grad


def test_a_segmentors_named_output_gives_its_logits():
    x = image(4, 4)
    torch.testing.assert_close(predict(lambda t: SegOutput(t, aux=-t), x), predict(lambda t: t, x))


def test_normalize():
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = normalize(pixels)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    for c, value in enumerate((0, 128, 255)):
        assert out[0, c, 0, 0].item() == pytest.approx((value / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    assert normalize(pixels[0]).shape == (3, 2, 2)
    with pytest.raises(TypeError):
        normalize(out)
    # crop padding (the mean as uint8) normalises to 0 within rounding
    padding = torch.tensor(MEAN_RGB_UINT8, dtype=torch.uint8).view(3, 1, 1)
    assert MEAN_RGB_UINT8 == (124, 116, 104) and normalize(padding).abs().max() < 0.01


def uint8_batches(num: int, h: int, w: int) -> list[dict]:
    gen = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(num):
        mask = torch.randint(0, K, (2, h, w), generator=gen)
        mask[:, 0] = 255
        batches.append(
            {
                "image": torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=gen),
                "mask": mask,
                "id": "x",
            }
        )
    return batches


@pytest.mark.parametrize("mode", ["whole", "sliding"])
def test_evaluate_matches_manual_loop(mode):
    model, loader = conv_model(), uint8_batches(3, 13, 17)
    expected = ConfusionMatrix(K, "cpu")
    for batch in loader:
        probs = predict(model, normalize(batch["image"]), mode, window=8, scales=(1.0, 0.5), flip=True)
        expected.update(probs.argmax(1), batch["mask"])
    counts: list[int] = []
    confusion = evaluate(
        model,
        loader,
        K,
        torch.device("cpu"),
        mode,
        window=8,
        scales=(1.0, 0.5),
        flip=True,
        progress=counts.append,
    )
    assert torch.equal(confusion.matrix, expected.matrix)
    assert confusion.matrix.sum() == 3 * 2 * 12 * 17  # the first row of each mask is ignored
    assert counts == [2, 4, 6]  # images done after each batch of 2 (imas-eval's progress line counts them)


def test_evaluate_under_bf16_autocast():
    confusion = evaluate(
        conv_model(), uint8_batches(1, 9, 9), K, torch.device("cpu"), autocast_dtype=torch.bfloat16
    )
    assert confusion.matrix.sum() == 2 * 8 * 9


@pytest.mark.slow
@pytest.mark.parametrize(
    "scales, flip, tile",
    [((1.0,), False, 10), ((0.75, 1.25), True, 13), ((0.3, 1.0), True, 50), ((1.0,), True, 1)],
)
def test_tiles_equal_one_sliding_pass(scales, flip, tile):
    """Large images are predicted box by box (predict.py): the same probabilities as one pass, tile seams
    included; 0.3 makes the view smaller than the window (padded), tile 1 is one pixel per box."""
    model = conv_model(layers=2)
    pixels = torch.randint(
        0, 256, (2, 3, 23, 31), dtype=torch.uint8, generator=torch.Generator().manual_seed(5)
    )
    options = {"window": 12, "stride": 7, "scales": scales, "flip": flip, "batch_size": 3}
    expected = predict(model, normalize(pixels), "sliding", **options)
    out = torch.zeros_like(expected)
    for top in range(0, 23, tile):
        for left in range(0, 31, tile):
            box = (top, min(top + tile, 23), left, min(left + tile, 31))
            out[..., box[0] : box[1], box[2] : box[3]] = predict_box(model, pixels, box, **options)
    assert torch.allclose(out, expected, atol=1e-5)
    labels = predict_labels_tiled(model, pixels, tile, **options)
    assert labels.dtype == torch.uint8 and labels.shape == (2, 23, 31)
    assert (labels.long() == expected.argmax(1)).float().mean() > 0.999  # ties may round either way
