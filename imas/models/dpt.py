"""The DPT head on a ViT encoder, as UniMatch V2 builds it (docs/methods.md, "UniMatch V2").

Four blocks' token maps [B, D, H/14, W/14] are projected (1x1) to the encoder's four DPT widths and
reassembled to four scales (x4 and x2 by transposed convolutions, x1, x1/2 by a strided convolution), each
brought to the fusion width by a 3x3 convolution, then fused from the coarsest up (residual conv units,
bilinear x2 steps, the last one to 8x the token grid), and classified there; the logits are resized to the
input.
No BatchNorm (UniMatch V2's `use_bn=False`) and PyTorch's default initialisation, as released. Module
names follow the released ones (``head.projects``, ``head.resize_layers``, ``head.scratch.layerN_rn``,
``head.scratch.refinenetN``, ``head.scratch.output_conv``) so that its checkpoints' keys read alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imas.models.deeplabv3plus import SegOutput
from imas.models.perturb import complementary_masks
from imas.models.vit import VisionTransformer


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3x3 convolutions with bias."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """(coarser path + RCU(skip)) -> RCU -> bilinear resize -> 1x1 convolution."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)  # noqa: N815 - the released key name
        self.resConfUnit2 = ResidualConvUnit(features)  # noqa: N815

    def forward(self, path: Tensor, skip: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        size = size if size is not None else [2 * s for s in path.shape[-2:]]
        return self.out_conv(_resize(path, size))


class DPTHead(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, features: int, channels: Sequence[int]) -> None:
        super().__init__()
        c = list(channels)
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, ci, 1) for ci in c)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(c[0], c[0], 4, stride=4),
                nn.ConvTranspose2d(c[1], c[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(c[3], c[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, ci in enumerate(c, start=1):
            self.scratch.add_module(f"layer{i}_rn", nn.Conv2d(ci, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.scratch.add_module(f"refinenet{i}", FeatureFusionBlock(features))
        # refinenet4 starts the path and fuses no skip, so its resConfUnit1 never runs (as released); it is
        # kept for the released key layout but takes no gradient, or DDP would wait for one and fail.
        self.scratch.refinenet4.resConfUnit1.requires_grad_(False)
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1), nn.ReLU(True), nn.Conv2d(features, num_classes, 1)
        )

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        """Four token maps [B, D, h, w] -> logits [B, K, 8h, 8w]."""
        s = self.scratch
        layers = [
            rn(resize(project(x)))
            for x, project, resize, rn in zip(
                maps, self.projects, self.resize_layers, (s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn)
            )
        ]
        path = s.refinenet4(layers[3], size=layers[2].shape[-2:])
        path = s.refinenet3(path, layers[2], size=layers[1].shape[-2:])
        path = s.refinenet2(path, layers[1], size=layers[0].shape[-2:])
        path = s.refinenet1(path, layers[0])
        return s.output_conv(path)


class DPT(nn.Module):
    """A ViT encoder (``backbone``) and the DPT head (``head``); the two learning-rate groups are
    ``param_groups()``."""

    def __init__(self, backbone: VisionTransformer, num_classes: int) -> None:
        super().__init__()
        size = backbone.size
        self.backbone = backbone
        self.head = DPTHead(num_classes, size.width, size.dpt_features, size.dpt_channels)

    def forward(
        self,
        x: Tensor,
        fp_dropout: float = 0.0,
        features: bool = False,
        decoder_noise: Callable[[Tensor], Tensor] | None = None,
        comp_drop: bool = False,
    ) -> SegOutput:
        """x: [B, 3, H, W] -> SegOutput with logits [B, K, H, W].

        An input side that is not a multiple of the patch is resized to the nearest multiple and the logits
        back (the released evaluation's `multiplier=14`); training crops are multiples (checked in the
        config). fp_dropout > 0: also decode the token maps with channel dropout at that rate into
        `perturbed` (UniMatch V1's stream). comp_drop: the images are two views of B/2 images (view 1 of
        every image, then view 2); their token maps are multiplied by complementary channel masks
        (UniMatch V2's complementary dropout, imas.models.perturb) and `logits` are of the dropped maps.
        """
        if features or decoder_noise is not None:
            asked = "features" if features else "decoder_noise"
            raise ValueError(f"the DPT head has no {asked} (a DeepLabv3+ option)")
        size = x.shape[-2:]
        p = self.backbone.patch_size
        grid = [max(p, int(s / p + 0.5) * p) for s in size]
        if list(size) != grid:
            x = _resize(x, grid)
        maps = list(self.backbone(x))
        if comp_drop:
            mask = complementary_masks(x.shape[0], maps[0].shape[1], x.device)[:, :, None, None]
            maps = [m * mask.to(m.dtype) for m in maps]
        if fp_dropout > 0:
            maps = [torch.cat([m, F.dropout2d(m, fp_dropout, training=True)]) for m in maps]
        logits = _resize(self.head(maps), grid)
        if list(size) != grid:
            logits = _resize(logits, size)
        perturbed = None
        if fp_dropout > 0:
            logits, perturbed = logits.chunk(2)
        return SegOutput(logits, None, perturbed, None)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(encoder parameters, head parameters) for the per-group learning rates; parameters that take no
        gradient (a frozen encoder's, the mask token, refinenet4's unused unit) are left out."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return backbone, [p for p in self.head.parameters() if p.requires_grad]
