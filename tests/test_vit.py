"""The DINOv2 ViT encoders, the DPT head and their config rules (imas.models.vit, imas.models.dpt).

Tiny ViTs (width 32, 4 blocks) carry every check that needs only names, shapes and arithmetic; the real
sizes are built on the meta device (no memory, no time) where only their key names and shapes matter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imas.config import Config, to_dict
from imas.errors import CheckpointError, ConfigError
from imas.experiment import experiment_from_dict, load_experiment
from imas.models import DPT, build_deeplabv3plus, build_dpt
from imas.models.perturb import complementary_masks
from imas.models.pretrained import load_vit_weights, match_vit_weights
from imas.models.resnet import resnet18
from imas.models.vit import VIT_SIZES, Attention, VisionTransformer, ViTSize, vit
from imas.schedule import build_optimizer

# Patch 14 and the pretrained 37 x 37 grid as in DINOv2; width, depth and the DPT widths tiny.
TINY = ViTSize(32, 4, 2, 14, (0, 1, 2, 3), 37, 8, (4, 8, 16, 32))
NARROW = ViTSize(16, 4, 2, 14, (0, 1, 2, 3), 37, 8, (4, 8, 16, 16))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these tensors are tiny, and on a busy two-core machine (the suite runs two
    workers) two threads per operation spend their time waiting for each other (seconds, not tens of ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vit(size: ViTSize = TINY, seed: int = 0) -> VisionTransformer:
    """A ViT whose every tensor is random (LayerScale, LayerNorm and biases too, not their constant starts),
    so that a comparison sees each one."""
    torch.manual_seed(seed)
    model = VisionTransformer(size).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.1) + (1.0 if p.ndim == 1 else 0.0))
    return model


def meta_keys(size: ViTSize) -> dict[str, tuple[int, ...]]:
    """Meta's dinov2_vit*14_pretrain.pth layout for `size`, written out: key -> shape."""
    d, p, n = size.width, size.patch, 1 + size.grid**2
    keys = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, n, d),
        "mask_token": (1, d),
        "patch_embed.proj.weight": (d, 3, p, p),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }
    for i in range(size.depth):
        b = f"blocks.{i}."
        keys |= {
            b + "norm1.weight": (d,),
            b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d),
            b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d),
            b + "attn.proj.bias": (d,),
            b + "ls1.gamma": (d,),
            b + "norm2.weight": (d,),
            b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (4 * d, d),
            b + "mlp.fc1.bias": (4 * d,),
            b + "mlp.fc2.weight": (d, 4 * d),
            b + "mlp.fc2.bias": (d,),
            b + "ls2.gamma": (d,),
        }
    return keys


def one_sentence(message: str, *names: str) -> None:
    """`message` is one line and one sentence, and names each of `names`."""
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)
    rest = message
    for name in names:
        rest = rest.replace(name, "")
    assert not re.search(r"\.\s+[A-Z]", rest), message


# ---------------------------------------------------------------------------------------------------------
# 1. Faithfulness to DINOv2


def test_vit_matches_timm_dinov2_at_518():
    """timm's VisionTransformer in DINOv2's configuration (patch 14, class token, no registers, LayerScale,
    LayerNorm eps 1e-6, 518-pixel images: the 37 x 37 grid), holding our weights, gives the same four
    normalised patch-token maps. Its keys are Meta's but for mask_token, which timm's DINOv2 conversion drops.
    """
    pytest.importorskip("timm", minversion="1.0")
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    from timm.models.vision_transformer import checkpoint_filter_fn

    ours = tiny_vit()
    ref = TimmViT(
        img_size=518,
        patch_size=14,
        embed_dim=TINY.width,
        depth=TINY.depth,
        num_heads=TINY.heads,
        init_values=1.0,
        num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).eval()
    state = ours.state_dict()
    theirs = ref.state_dict()
    assert set(state) - set(theirs) == {"mask_token"} and set(theirs) <= set(state)
    assert all(theirs[k].shape == state[k].shape for k in theirs)
    converted = checkpoint_filter_fn(dict(state), ref)
    assert set(converted) == set(state) - {"mask_token"}
    ref.load_state_dict(converted, strict=True)
    # An eps of 1e-5 would move the maps by less than the tolerance below: compared here instead.
    eps = [m.eps for m in ours.modules() if isinstance(m, nn.LayerNorm)]
    assert (
        eps == [m.eps for m in ref.modules() if isinstance(m, nn.LayerNorm)] == [1e-6] * (2 * TINY.depth + 1)
    )

    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        got = ours(x)
        want = ref.forward_intermediates(
            x, indices=list(TINY.layers), norm=True, output_fmt="NCHW", intermediates_only=True
        )
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert g.shape == w.shape == (1, TINY.width, 37, 37)
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_attention_is_softmax_qk_over_sqrt_d_times_v():
    """Attention written out in fp64: heads of width d = D / heads, softmax(Q K^T / sqrt(d)) V, then proj."""
    torch.manual_seed(0)
    dim, heads, b, n = 16, 2, 2, 7
    attn = Attention(dim, heads).double()
    x = torch.randn(b, n, dim, dtype=torch.float64)
    d = dim // heads
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias  # [B, N, 3D]: q, k, v, each heads x d
    q, k, v = (qkv[..., i * dim : (i + 1) * dim].reshape(b, n, heads, d).transpose(1, 2) for i in range(3))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # [B, heads, N, N]
    out = (weights @ v).transpose(1, 2).reshape(b, n, dim) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), out, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# 2. Position embeddings


def keys_cubic(t: Tensor) -> Tensor:
    """The cubic convolution kernel with a = -0.75 (PyTorch's bicubic), of distances t >= 0."""
    a = -0.75
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_matrix(size_in: int, size_out: int, scale: float) -> Tensor:
    """[size_out, size_in] in fp64: bicubic resampling by the factor `scale` (align_corners False, no
    antialias): output i reads source (i + 0.5) / scale - 0.5 from its four neighbours, edges clamped."""
    out = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        for j in range(base - 1, base + 3):
            weight = keys_cubic(torch.tensor(abs(src - j), dtype=torch.float64))
            out[i, min(max(j, 0), size_in - 1)] += weight
    return out


def test_position_embedding_at_the_pretrained_grid_is_not_resized():
    model = tiny_vit()
    assert model.position_embedding(37, 37) is model.pos_embed


@pytest.mark.parametrize("rows,cols", [(10, 13), (40, 52), (37, 52), (20, 37), (1, 90)])
def test_position_embedding_is_dinov2s_bicubic_rule(rows, cols):
    """DINOv2's released rule (DinoVisionTransformer.interpolate_pos_encoding, which UniMatch V2 ships in
    model/backbone/dinov2.py with interpolate_offset 0.1 and interpolate_antialias False): the 37 x 37 grid
    is resized bicubically (align_corners False) in fp32 by the scale factors ((rows + 0.1) / 37,
    (cols + 0.1) / 37), not to the size (rows, cols); the factors, not the sizes, set where the output
    samples fall. Computed here by separable fp64 cubic-convolution matrices. The class token's embedding is
    kept. 37 x 52 is resized too (the released code resizes unless the grid is square and the pretrained
    one)."""
    model = tiny_vit()
    g, d = TINY.grid, TINY.width
    got = model.position_embedding(rows, cols)
    assert got.shape == (1, 1 + rows * cols, d)
    assert torch.equal(got[:, 0], model.pos_embed[:, 0])
    grid = model.pos_embed[0, 1:].double().reshape(g, g, d).permute(2, 0, 1)  # [D, g, g]
    wr = bicubic_matrix(g, rows, (rows + 0.1) / g)
    wc = bicubic_matrix(g, cols, (cols + 0.1) / g)
    want = (wr @ grid @ wc.T).permute(1, 2, 0).reshape(rows * cols, d)  # [rows * cols, D]
    torch.testing.assert_close(got[0, 1:].double(), want, rtol=1e-5, atol=1e-5)
    # The offset matters: resizing to the size instead samples elsewhere.
    by_size = F.interpolate(grid[None].float(), size=(rows, cols), mode="bicubic", align_corners=False)
    assert not torch.allclose(by_size[0].permute(1, 2, 0).reshape(rows * cols, d), got[0, 1:], atol=1e-4)


def test_position_embedding_shape_for_many_grids():
    """floor(37 * (n + 0.1) / 37) == n for every n: the offset keeps rounding from losing a row."""
    model = VisionTransformer(ViTSize(4, 1, 1, 14, (0, 0, 0, 0), 37, 4, (4, 4, 4, 4)))
    with torch.no_grad():
        for rows in range(1, 130):
            cols = 131 - rows
            assert model.position_embedding(rows, cols).shape == (1, 1 + rows * cols, 4)


def test_forward_at_560_by_728_gives_a_40_by_52_grid():
    model = tiny_vit()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 560, 728))
    assert [tuple(m.shape) for m in maps] == [(1, TINY.width, 40, 52)] * 4


# ---------------------------------------------------------------------------------------------------------
# 3. Meta's layout


def test_state_dict_is_metas_layout():
    model = VisionTransformer(TINY)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == meta_keys(TINY)
    assert not model.mask_token.requires_grad  # in the file, never used: no gradient for DDP to wait for


def test_a_file_in_metas_layout_loads_strictly(tmp_path):
    torch.manual_seed(1)
    weights = {k: torch.randn(shape) for k, shape in meta_keys(TINY).items()}
    path = tmp_path / "tiny_pretrain.pth"
    torch.save(weights, path)
    model = VisionTransformer(TINY)
    load_vit_weights(model, str(path), "tiny")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


# Width, depth, heads of Meta's vit_small / vit_base / vit_large (as UniMatch V2 ships them in
# model/backbone/dinov2.py, mlp_ratio 4, no registers).
PUBLISHED = {"dinov2_vits14": (384, 12, 6), "dinov2_vitb14": (768, 12, 12), "dinov2_vitl14": (1024, 24, 16)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_sizes_have_metas_keys_and_shapes(name):
    width, depth, heads = PUBLISHED[name]
    with torch.device("meta"):
        model = vit(name)
    size = VIT_SIZES[name]
    assert (size.width, size.depth, size.heads, size.patch, size.grid) == (width, depth, heads, 14, 37)
    assert all(block.attn.heads == heads for block in model.blocks)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state == meta_keys(size)
    assert state["pos_embed"] == (1, 1370, width) and state["mask_token"] == (1, width)
    # Per block 12 D^2 + 15 D; the patch embedding 588 D + D, cls, mask, 1370 positions, the final norm 2 D.
    count = sum(p.numel() for p in model.parameters())
    assert count == depth * (12 * width**2 + 15 * width) + (588 + 1 + 1 + 1 + 1370 + 2) * width


def test_vit_b14_has_86_6_million_parameters():
    with torch.device("meta"):
        model = vit("dinov2_vitb14")
    assert sum(p.numel() for p in model.parameters()) == 86_580_480


# ---------------------------------------------------------------------------------------------------------
# 4. Files that do not fit


def test_missing_file_folder_and_garbage(tmp_path):
    model = VisionTransformer(TINY)
    missing = str(tmp_path / "nowhere.pth")
    with pytest.raises(CheckpointError) as err:
        load_vit_weights(model, missing, "tiny")
    one_sentence(str(err.value), missing)
    assert "does not exist" in str(err.value)
    with pytest.raises(CheckpointError) as err:
        load_vit_weights(model, str(tmp_path), "tiny")
    one_sentence(str(err.value), str(tmp_path))
    assert "folder" in str(err.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_vit_weights(model, str(garbage), "tiny")
    one_sentence(str(err.value), str(garbage))
    assert "not a PyTorch checkpoint" in str(err.value)


def test_resnet_file(tmp_path):
    path = str(tmp_path / "resnet18.pth")
    torch.save(resnet18(width=8).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_vit_weights(VisionTransformer(TINY), path, "tiny")
    one_sentence(str(err.value), path)
    assert "ResNet" in str(err.value) and "tiny_pretrain.pth" in str(err.value)


def test_file_of_another_width(tmp_path):
    path = str(tmp_path / "narrow.pth")
    torch.save(VisionTransformer(NARROW).state_dict(), path)
    model = VisionTransformer(TINY)
    before = model.state_dict()["cls_token"].clone()
    with pytest.raises(CheckpointError) as err:
        load_vit_weights(model, path, "tiny")
    one_sentence(str(err.value), path)
    assert "width 16" in str(err.value) and "width 32" in str(err.value)
    assert torch.equal(model.state_dict()["cls_token"], before)  # nothing loaded
    # The real sizes, on the meta device (the check reads shapes only): a ViT-S file for a ViT-B.
    with torch.device("meta"):
        expected, small = vit("dinov2_vitb14").state_dict(), vit("dinov2_vits14").state_dict()
    with pytest.raises(CheckpointError) as err:
        match_vit_weights(expected, small, "s.pth", "dinov2_vitb14")
    one_sentence(str(err.value), "s.pth")
    assert "holds dinov2_vits14" in str(err.value) and "width 768" in str(err.value)


def tiny_file(tmp_path: Path, change: Callable[[dict[str, Tensor]], object]) -> str:
    weights = VisionTransformer(TINY).state_dict()
    change(weights)
    path = str(tmp_path / "changed.pth")
    torch.save(weights, path)
    return path


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda w: w.pop("blocks.1.ls1.gamma"), "lacks blocks.1.ls1.gamma"),
        (lambda w: w.pop("mask_token"), "lacks mask_token"),
        (lambda w: w.update(register_tokens=torch.zeros(1, 4, TINY.width)), "has register_tokens"),
        (
            lambda w: w.update(pos_embed=torch.zeros(1, 1 + 16 * 16, TINY.width)),
            "pos_embed of shape (1, 257, 32)",
        ),
        (
            lambda w: w.update({"blocks.0.attn.qkv.bias": torch.zeros(TINY.width)}),
            "attn.qkv.bias of shape (32,)",
        ),
    ],
    ids=["missing", "missing_mask_token", "registers", "pos_embed_shape", "qkv_shape"],
)
def test_file_with_other_keys_or_shapes(tmp_path, change, words):
    path = tiny_file(tmp_path, change)
    with pytest.raises(CheckpointError) as err:
        load_vit_weights(VisionTransformer(TINY), path, "tiny")
    one_sentence(str(err.value), path)
    assert words in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# 5. The DPT head


def tiny_dpt(num_classes: int = 3) -> DPT:
    return DPT(tiny_vit(), num_classes).eval()


@pytest.mark.parametrize("size", [(56, 84), (28, 28), (50, 61), (13, 20), (71, 43)])
def test_dpt_output_has_the_input_size(size):
    model = tiny_dpt()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        logits = model(x).logits
    assert logits.shape == (2, 3, *size)
    assert torch.isfinite(logits).all()


def test_dpt_resizes_other_sides_to_the_nearest_multiple_and_back():
    """The released evaluation ('original' mode, multiplier 14): the image is resized (bilinear, corners
    aligned) to int(side / 14 + 0.5) * 14 and the prediction back to the image's size."""
    model = tiny_dpt()
    x = torch.randn(1, 3, 50, 61)
    with torch.no_grad():
        got = model(x).logits
        inner = model(F.interpolate(x, size=(56, 56), mode="bilinear", align_corners=True)).logits
    want = F.interpolate(inner, size=(50, 61), mode="bilinear", align_corners=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# The released head's keys (UniMatch-V2 model/semseg/dpt.py DPTHead and model/util/blocks.py, use_bn False,
# expand False): 1x1 projections, resize layers 0, 1 (transposed) and 3 (strided), the bias-free 3x3 scratch
# convolutions, four fusion blocks of two residual units and a 1x1 out_conv, the output convolutions.
def released_head_keys() -> set[str]:
    keys = {f"head.projects.{i}.{t}" for i in range(4) for t in ("weight", "bias")}
    keys |= {f"head.resize_layers.{i}.{t}" for i in (0, 1, 3) for t in ("weight", "bias")}
    keys |= {f"head.scratch.layer{i}_rn.weight" for i in range(1, 5)}
    for i in range(1, 5):
        r = f"head.scratch.refinenet{i}."
        keys |= {r + f"out_conv.{t}" for t in ("weight", "bias")}
        keys |= {
            r + f"resConfUnit{u}.conv{c}.{t}" for u in (1, 2) for c in (1, 2) for t in ("weight", "bias")
        }
    keys |= {f"head.scratch.output_conv.{i}.{t}" for i in (0, 2) for t in ("weight", "bias")}
    return keys


def test_dpt_keys_are_the_released_ones():
    state = tiny_dpt().state_dict()
    head = {k for k in state if k.startswith("head.")}
    assert head == released_head_keys()
    for key in (
        "head.projects.0.weight",
        "head.resize_layers.0.weight",
        "head.scratch.layer1_rn.weight",
        "head.scratch.refinenet1.resConfUnit1.conv1.weight",
        "head.scratch.refinenet4.out_conv.weight",
        "head.scratch.output_conv.2.weight",
    ):
        assert key in state
    assert {k.removeprefix("backbone.") for k in state if k.startswith("backbone.")} == set(meta_keys(TINY))
    c, f = TINY.dpt_channels, TINY.dpt_features
    assert state["head.projects.3.weight"].shape == (c[3], TINY.width, 1, 1)
    assert state["head.resize_layers.0.weight"].shape == (c[0], c[0], 4, 4)
    assert state["head.scratch.layer2_rn.weight"].shape == (f, c[1], 3, 3)
    assert state["head.scratch.output_conv.2.weight"].shape == (3, f, 1, 1)


def conv(x: Tensor, layer: nn.Module, **kwargs) -> Tensor:
    return F.conv2d(x, layer.weight, layer.bias, padding=layer.padding, stride=layer.stride, **kwargs)


def residual_unit(x: Tensor, unit: nn.Module) -> Tensor:
    """x + conv2(relu(conv1(relu(x)))) (the released ResidualConvUnit without BN)."""
    return x + conv(F.relu(conv(F.relu(x), unit.conv1)), unit.conv2)


def fusion(block: nn.Module, path: Tensor, skip: Tensor | None, size: tuple[int, int] | None) -> Tensor:
    """The released FeatureFusionBlock: the skip through resConfUnit1 added, resConfUnit2, a bilinear resize
    (corners aligned) to `size` or by scale factor 2, the 1x1 out_conv."""
    if skip is not None:
        path = path + residual_unit(skip, block.resConfUnit1)
    path = residual_unit(path, block.resConfUnit2)
    if size is None:
        path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
    else:
        path = F.interpolate(path, size=size, mode="bilinear", align_corners=True)
    return conv(path, block.out_conv)


def test_dpt_forward_is_the_released_order_of_operations():
    """UniMatch-V2 DPT.forward / DPTHead.forward written out: per map a 1x1 projection and its resize (x4
    and x2 transposed convolutions, identity, a stride-2 3x3), the layerN_rn convolutions, refinenet4 on
    layer 4 alone resized to layer 3's size, refinenet3 and 2 each to the next finer size, refinenet1 by x2
    with no size, output_conv (3x3, ReLU, 1x1), then a bilinear resize (corners aligned) to the patch grid
    times 14."""
    model = tiny_dpt()
    h = model.head
    s = h.scratch
    x = torch.randn(2, 3, 56, 84)  # a 4 x 6 grid: rows and columns differ
    with torch.no_grad():
        got = model(x).logits
        maps = model.backbone(x)
        ups = h.resize_layers
        layer1 = F.conv_transpose2d(conv(maps[0], h.projects[0]), ups[0].weight, ups[0].bias, stride=4)
        layer2 = F.conv_transpose2d(conv(maps[1], h.projects[1]), ups[1].weight, ups[1].bias, stride=2)
        layer3 = conv(maps[2], h.projects[2])
        layer4 = conv(conv(maps[3], h.projects[3]), ups[3])
        rn = [
            conv(t, m)
            for t, m in zip(
                (layer1, layer2, layer3, layer4), (s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn)
            )
        ]
        assert [tuple(t.shape[-2:]) for t in rn] == [(16, 24), (8, 12), (4, 6), (2, 3)]
        path = fusion(s.refinenet4, rn[3], None, tuple(rn[2].shape[-2:]))
        path = fusion(s.refinenet3, path, rn[2], tuple(rn[1].shape[-2:]))
        path = fusion(s.refinenet2, path, rn[1], tuple(rn[0].shape[-2:]))
        path = fusion(s.refinenet1, path, rn[0], None)
        assert path.shape[-2:] == (32, 48)  # 8 x the token grid
        out = conv(F.relu(conv(path, s.output_conv[0])), s.output_conv[2])
        want = F.interpolate(out, size=(4 * 14, 6 * 14), mode="bilinear", align_corners=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_every_trained_dpt_parameter_gets_a_gradient():
    """DDP (imas.train wraps without find_unused_parameters) fails on the second step when a parameter that
    requires grad gets none: refinenet4's resConfUnit1 (never run, as released) is kept for the key layout
    but takes no gradient, and the optimizer groups leave it out."""
    model = DPT(tiny_vit(), 3).train()
    model(torch.randn(2, 3, 28, 42)).logits.square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    unused = model.head.scratch.refinenet4.resConfUnit1
    assert not any(p.requires_grad for p in unused.parameters())
    encoder, head = model.param_groups()
    grouped = {id(p) for p in encoder + head}
    assert all(id(p) not in grouped for p in unused.parameters())
    assert id(model.backbone.mask_token) not in grouped


def test_frozen_encoder_stays_put_while_the_head_trains():
    torch.manual_seed(0)
    model = build_dpt("vit_toy", 3, freeze_encoder=True).train()
    encoder, head = model.param_groups()
    assert encoder == [] and len(head) > 0
    optimizer = build_optimizer(encoder, head, 1e-3, 0.9, 0.01, 40.0, kind="adamw")
    assert isinstance(optimizer, torch.optim.AdamW)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(2, 3, 48, 48), torch.randint(0, 3, (2, 48, 48))
    F.cross_entropy(model(x).logits, y).backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("backbone."))
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not torch.equal(
        after["head.scratch.output_conv.2.weight"], before["head.scratch.output_conv.2.weight"]
    )
    assert not torch.equal(after["head.projects.0.weight"], before["head.projects.0.weight"])
    # Unfrozen, the encoder's group holds every encoder parameter but the unused mask token.
    encoder, _ = build_dpt("vit_toy", 3).param_groups()
    assert len(encoder) == len(list(model.backbone.parameters())) - 1


# ---------------------------------------------------------------------------------------------------------
# 6. Complementary dropout


@pytest.mark.parametrize("batch", [2, 4, 6, 8, 10])
def test_complementary_masks(batch):
    """Released (UniMatch-V2 model/semseg/dpt.py DPT.forward, comp_drop): per image and channel a
    Binomial(0.5) x 2 mask on the first view and 2 - mask on the second; int(B / 2 * 0.5) = floor(B / 4)
    images keep every channel (1) in both views."""
    torch.manual_seed(batch)
    mask = complementary_masks(batch, 64, torch.device("cpu"))
    assert mask.shape == (batch, 64)
    first, second = mask.chunk(2)
    assert torch.equal(first + second, torch.full_like(first, 2.0))
    kept = (first == 1).all(dim=1)
    assert int(kept.sum()) == batch // 4
    dropped = first[~kept]
    assert ((dropped == 0) | (dropped == 2)).all()
    if dropped.numel():
        assert 0 < float((dropped == 0).float().mean()) < 1  # both values drawn


def test_complementary_masks_refuse_an_odd_batch():
    with pytest.raises(ValueError, match="even batch"):
        complementary_masks(3, 8, torch.device("cpu"))


def known_mask(batch: int, channels: int) -> Tensor:
    torch.manual_seed(batch * 1000 + channels)
    first = torch.randint(0, 2, (batch // 2, channels)).float() * 2
    return torch.cat([first, 2 - first])


def test_dpt_comp_drop_masks_all_four_maps(monkeypatch):
    model = tiny_dpt()
    x = torch.randn(4, 3, 28, 42)
    mask = known_mask(4, TINY.width)
    calls = []

    def fake(batch: int, channels: int, device: torch.device) -> Tensor:
        calls.append((batch, channels))
        return mask

    monkeypatch.setattr("imas.models.dpt.complementary_masks", fake)
    with torch.no_grad():
        got = model(x, comp_drop=True).logits
        handle = model.backbone.register_forward_hook(
            lambda module, args, maps: tuple(m * mask[:, :, None, None] for m in maps)
        )
        want = model(x).logits
        handle.remove()
        plain = model(x).logits
    assert calls == [(4, TINY.width)]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-4)


def test_deeplabv3plus_comp_drop_masks_layer1_and_layer4(monkeypatch):
    torch.manual_seed(0)
    model = build_deeplabv3plus("resnet18", 3, backbone_width=8, decoder_channels=16).eval()
    x = torch.randn(4, 3, 32, 32)
    masks: dict[int, Tensor] = {}

    def fake(batch: int, channels: int, device: torch.device) -> Tensor:
        masks[channels] = known_mask(batch, channels)
        return masks[channels]

    monkeypatch.setattr("imas.models.deeplabv3plus.complementary_masks", fake)
    with torch.no_grad():
        got = model(x, comp_drop=True).logits
        low, mid, high = model.backbone(x)
        assert sorted(masks) == sorted({low.shape[1], high.shape[1]})

        def hook(module: nn.Module, args: tuple, feats: tuple[Tensor, Tensor, Tensor]) -> tuple:
            low, mid, high = feats
            return (
                low * masks[low.shape[1]][:, :, None, None],
                mid,
                high * masks[high.shape[1]][:, :, None, None],
            )

        handle = model.backbone.register_forward_hook(hook)
        want = model(x).logits
        handle.remove()
        plain = model(x).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# 7. Config rules


@pytest.fixture(scope="module")
def vit_config() -> dict:
    """A stored config (to_dict of the defaults) training vit_toy with the DPT head on 48-pixel crops."""
    data = to_dict(Config())
    data["model"].update(encoder="vit_toy", head="dpt")
    data["data"]["crop_size"] = 48
    experiment_from_dict(data)  # accepted as it is
    return data


@pytest.mark.parametrize(
    "overrides,key,words",
    [
        (["data.crop_size=50"], "data.crop_size", "patch size 6"),
        (["model.encoder=dinov2_vitb14", "data.crop_size=513"], "data.crop_size", "use 518"),
        (["eval.mode=sliding", "eval.window=50"], "eval.window", "patch size 6"),
        (["model.output_stride=8"], "model.output_stride", "ResNet encoders"),
        (["model.multi_grid=true"], "model.multi_grid", "ResNet encoders"),
        (["model.stem=standard"], "model.stem", "ResNet encoders"),
        (["model.backbone_width=32"], "model.backbone_width", "ResNet encoders"),
        (["model.aux_head=true"], "model.aux_head", "DeepLabv3+ head"),
        (["model.decoder_channels=64"], "model.decoder_channels", "DeepLabv3+ head"),
        (["model.representation=256"], "model.representation", "DeepLabv3+ head"),
        (["model.encoder=resnet18"], "model.head", "use model.head deeplabv3plus"),
        (["model.head=deeplabv3plus"], "model.head", "use model.head dpt"),
        (["train.method=ps_mt", "data.unlabeled_split=x"], "train.method", "needs model.head deeplabv3plus"),
    ],
)
def test_config_refusals(vit_config, overrides, key, words):
    with pytest.raises(ConfigError) as err:
        experiment_from_dict(vit_config, overrides)
    one_sentence(str(err.value), key, words)


def test_config_accepts_multiples(vit_config):
    cfg = experiment_from_dict(vit_config, ["eval.mode=sliding", "eval.window=48"])
    assert cfg.model.encoder == "vit_toy" and cfg.eval.window == 48
    cfg = experiment_from_dict(vit_config, ["model.encoder=dinov2_vitb14", "data.crop_size=518"])
    assert cfg.data.crop_size == 518


def test_old_key_model_backbone(tmp_path, vit_config):
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  backbone: resnet101\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    one_sentence(str(err.value), str(path), "model.backbone", "model.encoder")
    # A stored config (a checkpoint's) is upgraded instead.
    stored = {**vit_config, "model": {**vit_config["model"]}}
    stored["model"]["backbone"] = stored["model"].pop("encoder")
    assert experiment_from_dict(stored).model.encoder == "vit_toy"
