"""DeepLabv3+ as in method.md §7: ASPP on layer4, a 48-channel layer1 shortcut, optional aux head on layer3.

The backbone lives in ``model.backbone`` and every other module is decoder, so the two learning-rate groups of
§7 are ``model.param_groups()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imas.models.perturb import complementary_masks
from imas.models.resnet import ResNet, init_weights


def conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    """conv (no bias: the BN's shift replaces it) + BN + ReLU, size-preserving."""
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ASPP(nn.Module):
    """Five cout-channel branches (image pooling, 1x1, three dilated 3x3), concatenated and projected to cout
    (256 in method.md §7).

    The image-pooling BN sees one value per channel and sample, so in train mode it needs a batch of at least
    2 (PyTorch raises otherwise); training batches are always ≥ 2 per device, evaluation runs in eval mode.
    """

    def __init__(self, cin: int, rates: tuple[int, int, int], cout: int = 256) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(cin, cout, 1))
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, dilation=r) for r in rates]
        )
        self.project = conv_bn_relu(5 * cout, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, cin, h, w] -> [B, cout, h, w]."""
        pooled = _resize(self.pool(x), x.shape[-2:])
        return self.project(torch.cat([pooled] + [branch(x) for branch in self.branches], dim=1))


@dataclass
class SegOutput:
    """What a segmentor's forward returns, by name, whatever was asked of it.

    logits: [B, K, H, W] at the input size. aux: the aux head's logits [B, K, H, W] (train mode with an
    aux head), else None. perturbed: logits [B, K, H, W] decoded from channel-dropped encoder features
    (asked with fp_dropout > 0), else None. features: the representation head's output [B, D, h, w] at
    stride 4 (asked with features=True, of a model built with one), else None.
    """

    logits: Tensor
    aux: Tensor | None = None
    perturbed: Tensor | None = None
    features: Tensor | None = None

    def head(self, n: int) -> SegOutput:
        """The first n images of every tensor it holds (e.g. the labeled part of a joint forward)."""
        return SegOutput(
            *(None if t is None else t[:n] for t in (self.logits, self.aux, self.perturbed, self.features))
        )

    def tail(self, n: int) -> SegOutput:
        """Every image after the first n."""
        return SegOutput(
            *(None if t is None else t[n:] for t in (self.logits, self.aux, self.perturbed, self.features))
        )


class DeepLabV3Plus(nn.Module):
    """Dilated ResNet + ASPP + low-level decoder (+ aux head on layer3 for the Cityscapes recipe)."""

    def __init__(
        self,
        backbone: ResNet,
        num_classes: int,
        output_stride: int = 16,
        aux_head: bool = False,
        channels: int = 256,
        representation: int = 0,
    ):
        super().__init__()
        rates = {16: (6, 12, 18), 8: (12, 24, 36)}[output_stride]
        c_low, c_mid, c_high = backbone.channels
        self.backbone = backbone
        self.aspp = ASPP(c_high, rates, channels)
        self.low_proj = nn.Sequential(
            nn.Conv2d(c_low, 48, 1, bias=True),  # with bias, as in the released head (counted in §7)
            nn.BatchNorm2d(48),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            conv_bn_relu(channels + 48, channels, 3), conv_bn_relu(channels, channels, 3)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.representation = None
        if representation > 0:
            # U2PL's representation head, beside the classifier on the same fused input (docs/methods.md).
            self.representation = nn.Sequential(
                conv_bn_relu(channels + 48, channels, 3),
                nn.Dropout2d(0.1),
                conv_bn_relu(channels, channels, 3),
                nn.Dropout2d(0.1),
                nn.Conv2d(channels, representation, 1),
            )
        self.aux = None
        if aux_head:
            self.aux = nn.Sequential(conv_bn_relu(c_mid, channels, 3), nn.Conv2d(channels, num_classes, 1))
        for module in self.children():
            if module is not backbone:  # the backbone came initialised (maybe pretrained): keep it
                init_weights(module)
        # Kaiming fan-out on a 1x1 conv to K outputs gives logits of std ~6 at the start (CE ~8, every
        # pixel confidently wrong); small classifier weights start from near-uniform predictions instead.
        for head in [self.classifier] + ([self.aux[-1]] if self.aux is not None else []):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def forward(
        self,
        x: Tensor,
        fp_dropout: float = 0.0,
        features: bool = False,
        decoder_noise: Callable[[Tensor], Tensor] | None = None,
        comp_drop: bool = False,
    ) -> SegOutput:
        """x: [B, 3, H, W] -> SegOutput: logits [B, K, H, W]; aux logits in train mode with an aux head.

        fp_dropout > 0 (UniMatch's feature perturbation): also decode a copy of the encoder features (layer1
        and layer4) with channel dropout at that rate, in the same decoder batch as the clean ones, into
        `perturbed`. features: also return the representation head's output (a model built with one).
        decoder_noise (PS-MT's T-VAT): a function of the decoder's input [B, 48 + C, H/4, W/4] whose result
        is added to it before `decode`. comp_drop (UniMatch V2's complementary dropout): the images are two
        views of B/2 images; layer1's and layer4's channels get complementary masks
        (imas.models.perturb.complementary_masks, one draw per map) and `logits` are of the dropped maps.
        """
        size = x.shape[-2:]
        low, mid, high = self.backbone(x)
        if comp_drop:
            low, high = (
                f * complementary_masks(f.shape[0], f.shape[1], f.device)[:, :, None, None].to(f.dtype)
                for f in (low, high)
            )
        if fp_dropout > 0:
            low = torch.cat([low, F.dropout2d(low, fp_dropout, training=True)])
            high = torch.cat([high, F.dropout2d(high, fp_dropout, training=True)])
        low = self.low_proj(low)
        high = _resize(self.aspp(high), low.shape[-2:])
        decoder_input = torch.cat([low, high], dim=1)
        if decoder_noise is not None:
            decoder_input = decoder_input + decoder_noise(decoder_input)
        logits = self.decode(decoder_input, size)
        perturbed = None
        if fp_dropout > 0:
            logits, perturbed = logits.chunk(2)
            decoder_input = decoder_input.chunk(2)[0]
        aux = _resize(self.aux(mid), size) if self.aux is not None and self.training else None
        rep = None
        if features:
            if self.representation is None:
                raise ValueError("features=True needs a model built with a representation head")
            rep = self.representation(decoder_input)
        return SegOutput(logits, aux, perturbed, rep)

    def decode(self, decoder_input: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """The decoder's last part: its input [B, 48 + C, h, w] (the layer1 shortcut and the ASPP's output)
        -> logits [B, K, *size]."""
        return _resize(self.classifier(self.fuse(decoder_input)), size)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, decoder parameters) for the per-group learning rates of §7; a frozen
        backbone's (requires_grad False) are left out."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return [p for p in backbone if p.requires_grad], [p for p in self.parameters() if id(p) not in ids]
