"""DINOv2 vision transformers (Oquab et al. 2023) in Meta's key layout, as segmentation encoders.

ViT-S/14, B/14 and L/14 with LayerScale and no register tokens, built so that Meta's
``dinov2_vit{s,b,l}14_pretrain.pth`` files load with strict key checks and no renaming: ``cls_token``,
``pos_embed`` (a 37 x 37 grid, for 518-pixel images), ``mask_token`` (unused here, kept so the file loads
whole), ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma}``, ``norm``. Attention is PyTorch's ``scaled_dot_product_attention`` (flash attention on a GPU).
The position embeddings are resized for the input's patch grid as the released DINOv2 code resizes them
(bicubic, by the scale factor (grid + 0.1) / 37), so a crop gives the same tokens as there.

The encoder returns the patch tokens of four blocks (UniMatch V2's choice: 3rd, 6th, 9th and 12th of 12, the
5th, 12th, 18th and 24th of 24), each through the final LayerNorm, as maps [B, D, H/14, W/14]: what the
DPT head reads (imas.models.dpt).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imas.models.resnet import FeatureInfo


@dataclass(frozen=True)
class ViTSize:
    """One ViT's architecture and the widths of the DPT head UniMatch V2 gives it."""

    width: int  # token channels D
    depth: int  # transformer blocks
    heads: int  # attention heads (D / heads = 64 in every DINOv2 model)
    patch: int  # pixels per patch side: inputs are multiples of it
    layers: tuple[int, int, int, int]  # the blocks (0-based) whose tokens the head reads
    grid: int  # side of the pretrained position-embedding grid
    dpt_features: int  # the DPT head's fusion width
    dpt_channels: tuple[int, int, int, int]  # the DPT head's widths of its four reassembled scales


# Widths, depths and heads as published (DINOv2, Table 17); the blocks the head reads and the DPT widths as
# UniMatch V2 releases them (model/semseg/dpt.py, unimatch_v2.py `model_configs`). vit_toy is the toy's
# small ViT, pretrained by tools/toy_pretrain.py: patch 6 on 48-pixel crops gives an 8 x 8 grid (patch 4's
# 12 x 12 grid made the DPT head, which decodes at 8x the grid, 2.4x slower per step on a 2-core CPU).
VIT_SIZES = {
    "dinov2_vits14": ViTSize(384, 12, 6, 14, (2, 5, 8, 11), 37, 64, (48, 96, 192, 384)),
    "dinov2_vitb14": ViTSize(768, 12, 12, 14, (2, 5, 8, 11), 37, 128, (96, 192, 384, 768)),
    "dinov2_vitl14": ViTSize(1024, 24, 16, 14, (4, 11, 17, 23), 37, 256, (256, 512, 1024, 1024)),
    "vit_toy": ViTSize(96, 6, 3, 6, (1, 2, 4, 5), 8, 32, (24, 48, 96, 96)),
}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, D / heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class LayerScale(nn.Module):
    """A learned per-channel factor on a residual branch (DINOv2 starts it at 1.0)."""

    def __init__(self, dim: int, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, H, W] -> tokens [B, (H/p)(W/p), D], row-major."""
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """A DINOv2 ViT (sizes in VIT_SIZES) returning four blocks' normalised patch tokens as maps."""

    def __init__(self, size: ViTSize) -> None:
        super().__init__()
        self.size = size
        self.patch_size = size.patch
        d = size.width
        self.patch_embed = PatchEmbed(size.patch, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + size.grid**2, d))
        # Meta's files hold the masked-image-modelling token; segmentation never uses it, so it takes no
        # gradient (DDP would otherwise wait for one).
        self.mask_token = nn.Parameter(torch.zeros(1, d), requires_grad=False)
        self.blocks = nn.ModuleList(Block(d, size.heads) for _ in range(size.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.feature_info = tuple(FeatureInfo(f"block{i + 1}", d, size.patch) for i in size.layers)
        # DINOv2's initialisation (used when no pretrained file is given, e.g. the toy before pretraining).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, rows: int, cols: int) -> Tensor:
        """[1, 1 + rows * cols, D]: the class token's embedding and the grid's resized to rows x cols patches
        as the released DINOv2 code does (bicubic in fp32 with scale factors (n + 0.1) / grid)."""
        g = self.size.grid
        if rows == g and cols == g:
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:].float()
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        # The offset makes floor(g * scale) land on rows / cols despite rounding (as released).
        scale = ((rows + 0.1) / g, (cols + 0.1) / g)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(self.pos_embed.dtype)
        return torch.cat([cls, grid], dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """x: [B, 3, H, W], H and W multiples of the patch -> the feature_info blocks' tokens after the final
        LayerNorm, each [B, D, H/p, W/p]."""
        b, _, h, w = x.shape
        rows, cols = h // self.patch_size, w // self.patch_size
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), self.patch_embed(x)], dim=1)
        tokens = tokens + self.position_embedding(rows, cols)
        out = []
        for i, block in enumerate(self.blocks[: self.size.layers[-1] + 1]):
            tokens = block(tokens)
            if i in self.size.layers:
                patches = self.norm(tokens)[:, 1:]  # the class token is not a place in the image
                out.append(patches.transpose(1, 2).reshape(b, -1, rows, cols))
        return tuple(out)


def vit(name: str) -> VisionTransformer:
    """The ViT named `name` (a key of VIT_SIZES), randomly initialised."""
    return VisionTransformer(VIT_SIZES[name])


def width_of(state: dict[str, Tensor]) -> int | None:
    """The token width of a ViT state_dict in Meta's layout (None when it holds no cls_token)."""
    cls = state.get("cls_token")
    return int(cls.shape[-1]) if cls is not None and cls.ndim == 3 else None


def blocks_of(state: dict[str, Tensor]) -> int:
    """How many transformer blocks a ViT state_dict holds."""
    indices = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    return max(indices) + 1 if indices else 0
