"""Model construction: ``build_model(cfg, info)`` builds the config's DeepLabv3+ on a device (training,
evaluation, prediction); ``build_deeplabv3plus`` takes the architecture's arguments directly."""

from __future__ import annotations

import torch
from torch import nn

from imas.config import Config, ModelConfig, short_repr
from imas.dist import DistInfo
from imas.errors import ConfigError
from imas.models.deeplabv3plus import DeepLabV3Plus, SegOutput
from imas.models.ensemble import Ensemble
from imas.models.pretrained import LoadReport, load_backbone_weights
from imas.models.resnet import ResNet, resnet18, resnet50, resnet101

BACKBONES = {"resnet18": resnet18, "resnet50": resnet50, "resnet101": resnet101}
OUTPUT_STRIDES = (8, 16)
STEMS = ("deep", "standard")

__all__ = [
    "BACKBONES",
    "DeepLabV3Plus",
    "Ensemble",
    "LoadReport",
    "ResNet",
    "SegOutput",
    "build_deeplabv3plus",
    "build_model",
    "check_backbone",
    "load_backbone_weights",
]


def check_backbone(m: ModelConfig) -> None:
    """Refuse a model.backbone that is not in BACKBONES: one ConfigError sentence naming the valid ones."""
    if m.backbone not in BACKBONES:
        raise ConfigError(
            f"model.backbone {short_repr(m.backbone)} is unknown; valid backbones: {', '.join(BACKBONES)}"
        )


def build_deeplabv3plus(
    backbone: str,
    num_classes: int,
    output_stride: int = 16,
    aux_head: bool = False,
    multi_grid: bool = True,
    pretrained: str | None = None,
    stem: str = "deep",
    sync_bn: bool = False,
    decoder_channels: int = 256,
    backbone_width: int = 64,
    representation: int = 0,
) -> nn.Module:
    """DeepLabv3+ of method.md §7, randomly initialised, then the backbone loaded from ``pretrained``.

    ``model(x)``: x [B, 3, H, W] -> SegOutput (logits [B, K, H, W]; aux logits in train mode with an aux
    head).
    ``decoder_channels``: width of ASPP and the decoder (256 in method.md §7; smaller only for the toy).
    ``backbone_width``: channels of the backbone's layer1 (64 in every ResNet; smaller only for the toy).
    ``representation``: channels of a representation head beside the classifier (U2PL's; 0: none).
    Raises ValueError on an unknown backbone / output stride / stem, CheckpointError on a bad ``pretrained``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    stem = str(getattr(stem, "value", stem))  # accept the config's Stem enum as well as a plain string
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")

    net = BACKBONES[backbone](
        output_stride=output_stride, multi_grid=multi_grid, stem=stem, width=backbone_width
    )
    if pretrained:
        load_backbone_weights(net, pretrained)
    model = DeepLabV3Plus(net, num_classes, output_stride, aux_head, decoder_channels, representation)
    if sync_bn:
        # Conversion keeps the loaded weights and statistics; SyncBN only syncs inside a process group.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def build_model(cfg: Config, info: DistInfo, pretrained: bool = True) -> nn.Module:
    """The DeepLabv3+ of cfg.model on info.device; SyncBN when training on several CUDA devices."""
    m = cfg.model
    model = build_deeplabv3plus(
        m.backbone,
        cfg.data.num_classes,
        output_stride=m.output_stride,
        aux_head=m.aux_head,
        multi_grid=m.multi_grid,
        pretrained=(m.pretrained or None) if pretrained else None,
        stem=m.stem.value,
        decoder_channels=m.decoder_channels,
        backbone_width=m.backbone_width,
        representation=m.representation,
        # SyncBatchNorm has CUDA kernels only; on CPU (gloo) each process keeps its own statistics.
        sync_bn=m.sync_bn and info.distributed and info.device.type == "cuda",
    )
    model.to(info.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model
