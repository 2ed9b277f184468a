"""Model construction: ``build_model(cfg, info)`` builds the config's segmentor on a device (training,
evaluation, prediction): a ResNet with DeepLabv3+ or a DINOv2 ViT with the DPT head. ``ENCODERS`` names
every encoder ``model.encoder`` takes; ``build_deeplabv3plus`` and ``build_dpt`` take the architectures'
arguments directly."""

from __future__ import annotations

import torch
from torch import nn

from imas.config import Config, EvalMode, Head, ModelConfig, short_repr
from imas.dist import DistInfo
from imas.errors import ConfigError
from imas.models.deeplabv3plus import DeepLabV3Plus, SegOutput
from imas.models.dpt import DPT
from imas.models.ensemble import Ensemble
from imas.models.pretrained import LoadReport, load_backbone_weights, load_vit_weights
from imas.models.resnet import ResNet, resnet18, resnet50, resnet101
from imas.models.vit import VIT_SIZES, VisionTransformer, vit

BACKBONES = {"resnet18": resnet18, "resnet50": resnet50, "resnet101": resnet101}
OUTPUT_STRIDES = (8, 16)
STEMS = ("deep", "standard")
# Every encoder model.encoder takes, and the head each family goes with.
ENCODERS = {**{name: "resnet" for name in BACKBONES}, **{name: "vit" for name in VIT_SIZES}}
HEAD_OF = {"resnet": Head.deeplabv3plus, "vit": Head.dpt}
# Options of one family or head: a config that sets one to anything but its default elsewhere is refused.
RESNET_ONLY = ("output_stride", "multi_grid", "stem", "backbone_width")
DEEPLAB_ONLY = ("aux_head", "decoder_channels", "representation")

__all__ = [
    "BACKBONES",
    "DPT",
    "DeepLabV3Plus",
    "ENCODERS",
    "Ensemble",
    "LoadReport",
    "ResNet",
    "SegOutput",
    "VisionTransformer",
    "build_deeplabv3plus",
    "build_dpt",
    "build_encoder",
    "build_model",
    "check_model",
    "load_backbone_weights",
    "patch_size",
]


def patch_size(encoder: str) -> int:
    """What the input sides of `encoder` must be multiples of (1: any size)."""
    return VIT_SIZES[encoder].patch if encoder in VIT_SIZES else 1


def check_model(cfg: Config) -> None:
    """Refuse an unknown model.encoder, a head of the other family, an option of another family or head set
    on this one, and a training crop or sliding window that is not a multiple of a ViT's patch: one
    ConfigError sentence."""
    m = cfg.model
    if m.encoder not in ENCODERS:
        raise ConfigError(
            f"model.encoder {short_repr(m.encoder)} is unknown; valid encoders: {', '.join(ENCODERS)}"
        )
    family = ENCODERS[m.encoder]
    if m.head != HEAD_OF[family]:
        raise ConfigError(
            f"model.head {m.head.value} does not fit model.encoder {m.encoder} (a {family_name(family)}): "
            f"use model.head {HEAD_OF[family].value}"
        )
    default = ModelConfig()
    foreign = RESNET_ONLY if family == "vit" else ()
    foreign += DEEPLAB_ONLY if m.head == Head.dpt else ()
    for key in foreign:
        if getattr(m, key) != getattr(default, key):
            owner = "ResNet encoders" if key in RESNET_ONLY else "the DeepLabv3+ head"
            raise ConfigError(
                f"model.{key} is an option of {owner}, which model.encoder {m.encoder} with model.head "
                f"{m.head.value} has not: remove it"
            )
    p = patch_size(m.encoder)
    sides = {"data.crop_size": cfg.data.crop_size}
    if cfg.eval.mode == EvalMode.sliding:
        sides["eval.window"] = cfg.eval.window
    for key, side in sides.items():
        if side % p:
            raise ConfigError(
                f"{key} {side} is not a multiple of the patch size {p} of model.encoder {m.encoder}; use "
                f"{max(p, round(side / p) * p)}"
            )


def family_name(family: str) -> str:
    return {"resnet": "ResNet", "vit": "ViT"}[family]


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


def build_dpt(
    encoder: str, num_classes: int, pretrained: str | None = None, freeze_encoder: bool = False
) -> DPT:
    """A DINOv2 ViT (a key of VIT_SIZES) with UniMatch V2's DPT head, randomly initialised, then the encoder
    loaded from ``pretrained`` (Meta's layout, strict). ``model(x)``: x [B, 3, H, W] -> SegOutput.
    freeze_encoder: the encoder's parameters take no gradient (trained: the head only)."""
    if encoder not in VIT_SIZES:
        raise ValueError(f"unknown ViT encoder {encoder!r}; valid: {', '.join(VIT_SIZES)}")
    net = vit(encoder)
    if pretrained:
        load_vit_weights(net, pretrained, encoder)
    model = DPT(net, num_classes)
    if freeze_encoder:
        model.backbone.requires_grad_(False)
    return model


def build_encoder(m: ModelConfig) -> nn.Module:
    """model.encoder randomly initialised, with the config's ResNet options (what model.pretrained must
    fill)."""
    if ENCODERS[m.encoder] == "vit":
        return vit(m.encoder)
    return BACKBONES[m.encoder](
        output_stride=m.output_stride, multi_grid=m.multi_grid, stem=m.stem.value, width=m.backbone_width
    )


def build_model(cfg: Config, info: DistInfo, pretrained: bool = True) -> nn.Module:
    """The segmentor of cfg.model (DeepLabv3+ on a ResNet, DPT on a ViT) on info.device; SyncBN when training
    on several CUDA devices."""
    m = cfg.model
    if ENCODERS.get(m.encoder) == "vit":
        model = build_dpt(
            m.encoder,
            cfg.data.num_classes,
            pretrained=(m.pretrained or None) if pretrained else None,
            freeze_encoder=m.freeze_encoder,
        ).to(info.device)
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        return model
    model = build_deeplabv3plus(
        m.encoder,
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
    if m.freeze_encoder:
        model.backbone.requires_grad_(False)
    model.to(info.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model
