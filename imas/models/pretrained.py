"""Strict loading of pretrained encoder weights (method.md §7): every encoder tensor must come from the file.

The released code loaded with ``strict=False`` and a print, so a wrong file silently trained from scratch;
here a file that leaves any backbone weight unloaded is refused with a hint at the likely cause.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from imas.errors import CheckpointError
from imas.models.vit import blocks_of, width_of

log = logging.getLogger(__name__)

_PREFIXES = (
    "module.",
    "model.",
    "encoder.",
    "backbone.",
)  # wrappers: DDP, Lightning-style, segmentation models


@dataclass
class LoadReport:
    """Key lists of one backbone load; ``missing`` is always empty after a successful load."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def read_state_dict(path: str) -> dict[str, Tensor]:
    """The tensors of a plain state_dict or of the one under "state_dict" / "model", prefixes stripped."""
    if os.path.isdir(path):  # "does not exist" would send the user looking for a path that is there
        raise CheckpointError(
            f"pretrained backbone file {path} is a folder, not a file; give the path of a weights file in it"
        )
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained backbone file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a checkpoint we can read"
        raise CheckpointError(
            f"pretrained backbone file {path} is not a PyTorch checkpoint readable with "
            f"torch.load(weights_only=True) ({type(exc).__name__})"
        ) from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    tensors = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if isinstance(key, str) and isinstance(value, Tensor):
                for prefix in _PREFIXES:
                    key = key.removeprefix(prefix)
                tensors[key] = value
    if not tensors:
        raise CheckpointError(f"pretrained backbone file {path} holds no state_dict of tensors")
    return tensors


def mismatch_hint(model_keys: Mapping[str, Tensor], ckpt: Mapping[str, Tensor]) -> str:
    """The most likely reason a checkpoint does not fit, phrased as what to change."""
    ckpt_standard = "conv1.weight" in ckpt and ckpt["conv1.weight"].ndim == 4
    ckpt_deep = "conv1.0.weight" in ckpt
    model_deep = "conv1.0.weight" in model_keys
    if model_deep and ckpt_standard:
        return "this looks like a torchvision/standard-stem checkpoint; set model.stem: standard"
    if not model_deep and ckpt_deep:
        return "this looks like a deep-stem checkpoint (the released iMAS/U2PL layout); set model.stem: deep"
    if not any(k.startswith("layer1.") for k in ckpt):
        return "it holds no ResNet backbone keys (expected e.g. 'layer1.0.conv1.weight')"
    return "check that model.encoder (resnet18/50/101) matches the network the file was saved from"


def match_backbone_weights(
    expected: Mapping[str, Tensor], ckpt: Mapping[str, Tensor], path: str
) -> LoadReport:
    """Which of `ckpt`'s tensors fill a backbone whose state_dict is `expected` (shapes are all that is read:
    meta tensors will do), or CheckpointError naming the first that does not fit and the likely cause.

    ``fc.*`` keys (the ImageNet classifier) are ignored; extra ``layer*`` keys (a deeper ResNet) are an error;
    other extra keys are reported, not fatal. ``num_batches_tracked`` counters may be absent (converted
    checkpoints often lack them).
    """
    report = LoadReport()
    mismatched = [k for k in expected if k in ckpt and ckpt[k].shape != expected[k].shape]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(
            f"pretrained backbone file {path} has {k} of shape {tuple(ckpt[k].shape)} but the model expects "
            f"{tuple(expected[k].shape)} ({len(mismatched)} tensors differ in shape); "
            f"{mismatch_hint(expected, ckpt)}"
        )
    required = [k for k in expected if not k.endswith("num_batches_tracked")]
    report.missing = [k for k in required if k not in ckpt]
    if report.missing:
        raise CheckpointError(
            f"pretrained backbone file {path} leaves {len(report.missing)} of {len(required)} backbone "
            f"tensors unloaded (e.g. {report.missing[0]}); {mismatch_hint(expected, ckpt)}"
        )
    report.loaded = [k for k in expected if k in ckpt]
    report.unexpected = [k for k in ckpt if k not in expected and not k.startswith("fc.")]
    extra_blocks = [k for k in report.unexpected if k.startswith("layer")]
    if extra_blocks:
        # e.g. a ResNet-101 file into a ResNet-50: every tensor "loads" but from the wrong network.
        raise CheckpointError(
            f"pretrained backbone file {path} has {len(extra_blocks)} ResNet block tensors the model lacks "
            f"(e.g. {extra_blocks[0]}); check that model.encoder matches the network the file was saved from"
        )
    return report


def load_backbone_weights(backbone: nn.Module, path: str) -> LoadReport:
    """Copy every backbone tensor from ``path`` into ``backbone`` or raise CheckpointError
    (match_backbone_weights says which files fit)."""
    ckpt = read_state_dict(path)
    report = match_backbone_weights(backbone.state_dict(), ckpt, path)
    backbone.load_state_dict({k: ckpt[k] for k in report.loaded}, strict=False)
    if report.unexpected:
        log.warning(
            "pretrained backbone file %s has %d keys the backbone does not use (e.g. %s); they were ignored",
            path,
            len(report.unexpected),
            report.unexpected[0],
        )
    log.info("loaded %d backbone tensors from %s", len(report.loaded), path)
    return report


# The DINOv2 file of each width, to name the file a user gave in a sentence.
_VIT_BY_WIDTH = {384: "dinov2_vits14", 768: "dinov2_vitb14", 1024: "dinov2_vitl14", 1536: "dinov2_vitg14"}


def match_vit_weights(
    expected: Mapping[str, Tensor], ckpt: Mapping[str, Tensor], path: str, name: str
) -> None:
    """Check that `ckpt` holds exactly the tensors of the ViT `name` whose state_dict is `expected` (Meta's
    key layout), or raise CheckpointError naming what differs: another model size, missing or extra
    tensors, a shape."""
    width, depth = width_of(dict(expected)), blocks_of(dict(expected))
    got_width, got_depth = width_of(dict(ckpt)), blocks_of(dict(ckpt))
    if got_width is None:
        resnet = " (it looks like a ResNet's)" if any(k.startswith("layer1.") for k in ckpt) else ""
        raise CheckpointError(
            f"pretrained encoder file {path} holds no ViT in DINOv2's key layout{resnet} (expected e.g. "
            f"'cls_token' and 'blocks.0.attn.qkv.weight'); model.encoder {name} needs {name}_pretrain.pth"
        )
    if (got_width, got_depth) != (width, depth):
        holds = _VIT_BY_WIDTH.get(got_width, f"a ViT of width {got_width}")
        raise CheckpointError(
            f"pretrained encoder file {path} holds {holds} ({got_depth} blocks of width {got_width}) but "
            f"model.encoder {name} has {depth} blocks of width {width}; give {name}'s file or set "
            f"model.encoder to the file's model"
        )
    missing = [k for k in expected if k not in ckpt]
    unexpected = [k for k in ckpt if k not in expected]
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which {name} does not"
        raise CheckpointError(
            f"pretrained encoder file {path} {what} ({len(missing)} missing, {len(unexpected)} unexpected "
            f"tensors); a DINOv2 file without registers (dinov2_vit*14_pretrain.pth) fits"
        )
    shaped = [k for k in expected if ckpt[k].shape != expected[k].shape]
    if shaped:
        k = shaped[0]
        raise CheckpointError(
            f"pretrained encoder file {path} has {k} of shape {tuple(ckpt[k].shape)} but model.encoder "
            f"{name} expects {tuple(expected[k].shape)}"
        )


def load_vit_weights(vit: nn.Module, path: str, name: str) -> None:
    """Copy every tensor of a DINOv2 file in Meta's layout into `vit` (strict), or raise CheckpointError."""
    ckpt = read_state_dict(path)
    match_vit_weights(vit.state_dict(), ckpt, path, name)
    vit.load_state_dict(ckpt, strict=True)
    log.info("loaded %d encoder tensors from %s", len(ckpt), path)
