"""Dilated ResNet backbones (18 / 50 / 101) with the released deep stem or torchvision's standard stem.

Key names follow the released checkpoints (``conv1.0``…``conv1.6``, ``bn1``, ``layerK.J.convN``,
``layerK.0.downsample.{0,1}``) for ``stem="deep"`` and torchvision's for ``stem="standard"``, so both kinds of
ImageNet weights load without renaming. There is no ``fc``: a segmentation backbone never uses it.

Dilation convention (output stride 8 or 16): a dilated layer keeps stride 1 and multiplies the running
dilation by the stride it replaces. Like torchvision, the first block of a dilated layer still uses the
*previous* dilation and the later blocks the new one. With multi-grid (method.md §7) every block j of
layer4 instead gets ``layer4 dilation × grid[j]``, grid (2, 2, 4): os16 gives (4, 4, 8), os8 (8, 8, 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

MULTI_GRID = (2, 2, 4)  # method.md §7; ResNet-18's two-block layer4 uses the first two values


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 conv without bias (a BN follows); padding = dilation keeps the size at stride 1."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18). Unlike torchvision it accepts dilation > 1 so ResNet-18 can be dilated."""

    expansion = 1

    def __init__(
        self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce → 3x3 (carries the stride and dilation, "ResNet v1.5") → 1x1 expand ×4."""

    expansion = 4

    def __init__(
        self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class FeatureInfo(NamedTuple):
    """One feature map an encoder returns: its name, channels and stride (input pixels per map pixel).

    The encoder contract (docs/extending.md): `encoder(x)` returns its maps in the order of its
    `feature_info`, and `encoder.patch_size` is what input sides must be multiples of (1: any size).
    """

    name: str
    channels: int
    stride: int


def _deep_stem(width: int = 64) -> nn.Sequential:
    """Three 3x3 convs; indices 0/1/3/4/6 give the released key names. Its last BN is the ResNet's ``bn1``."""
    return nn.Sequential(
        conv3x3(3, width, stride=2),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        conv3x3(width, width),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        conv3x3(width, 2 * width),
    )


class ResNet(nn.Module):
    """Dilated ResNet returning the three feature maps DeepLabv3+ needs.

    Attributes ``channels`` = (layer1, layer3, layer4) output channels, e.g. (256, 1024, 2048) for ResNet-50.
    ``width`` is the channel count of layer1's blocks (64 in every published ResNet); the stem and the later
    layers scale with it (layerK uses width × 2^(K-1)). Only the toy uses a narrower network.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        output_stride: int = 16,
        multi_grid: bool = False,
        stem: str = "deep",
        width: int = 64,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        if stem not in ("deep", "standard"):
            raise ValueError(f"stem must be 'deep' or 'standard', got {stem!r}")
        if stem == "deep":
            self.conv1: nn.Module = _deep_stem(width)
            stem_channels = 2 * width
            # ceil_mode as in the released deep-stem code: odd sizes keep one more row/column.
            self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            stem_channels = width
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)

        self._cin = stem_channels
        self._dilation = 1
        dilate3 = output_stride == 8
        grid = MULTI_GRID[: layers[3]] if multi_grid else None
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2, dilate=dilate3)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2, dilate=True, grid=grid)
        e = block.expansion
        self.channels = (width * e, 4 * width * e, 8 * width * e)
        self.feature_info = (
            FeatureInfo("layer1", width * e, 4),
            FeatureInfo("layer3", 4 * width * e, 8 if dilate3 else 16),
            FeatureInfo("layer4", 8 * width * e, output_stride),
        )
        self.patch_size = 1

    def _make_layer(
        self,
        block: Block,
        planes: int,
        blocks: int,
        stride: int,
        dilate: bool = False,
        grid: Sequence[int] | None = None,
    ) -> nn.Sequential:
        previous = self._dilation
        if dilate:
            # Replace the stride by dilation so the resolution stays while the receptive field grows.
            self._dilation *= stride
            stride = 1
        if grid is not None:
            dilations = [self._dilation * g for g in grid]
        else:
            dilations = [previous] + [self._dilation] * (blocks - 1)
        cout = planes * block.expansion
        downsample = None
        if stride != 1 or self._cin != cout:
            downsample = nn.Sequential(conv1x1(self._cin, cout, stride), nn.BatchNorm2d(cout))
        layers = [block(self._cin, planes, stride, dilations[0], downsample)]
        self._cin = cout
        layers += [block(cout, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: [B, 3, H, W] -> (low [B, C1, H/4, W/4], mid [B, C3, H/s3, W/s3], high [B, C4, H/os, W/os]).

        low/mid/high are the outputs of layer1/layer3/layer4; s3 = 16 at os16 and 8 at os8. Sizes round up
        for odd inputs (65 -> 17 after the deep stem, 5 at os16).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        mid = self.layer3(self.layer2(low))
        high = self.layer4(mid)
        return low, mid, high


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs (zero bias), BN weight 1 and bias 0: the usual ResNet/DeepLab initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.SyncBatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _build(block: Block, layers: Sequence[int], **kwargs) -> ResNet:
    net = ResNet(block, layers, **kwargs)
    init_weights(net)
    return net


def resnet18(
    output_stride: int = 16, multi_grid: bool = False, stem: str = "deep", width: int = 64
) -> ResNet:
    return _build(
        BasicBlock, (2, 2, 2, 2), output_stride=output_stride, multi_grid=multi_grid, stem=stem, width=width
    )


def resnet50(
    output_stride: int = 16, multi_grid: bool = False, stem: str = "deep", width: int = 64
) -> ResNet:
    return _build(
        Bottleneck, (3, 4, 6, 3), output_stride=output_stride, multi_grid=multi_grid, stem=stem, width=width
    )


def resnet101(
    output_stride: int = 16, multi_grid: bool = False, stem: str = "deep", width: int = 64
) -> ResNet:
    return _build(
        Bottleneck, (3, 4, 23, 3), output_stride=output_stride, multi_grid=multi_grid, stem=stem, width=width
    )
