"""Model tests: output stride, shapes, aux head, exact parameter counts (method.md §7), pretrained loading."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torchvision
from torch import nn

from imas.errors import CheckpointError
from imas.models import build_deeplabv3plus, load_backbone_weights
from imas.models.resnet import resnet18, resnet50, resnet101

K = 21


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------- closed-form parameter counts of method.md §7


def conv(k: int, cin: int, cout: int, bias: bool = False) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c  # weight and bias; running stats are buffers


def expected_backbone(blocks: tuple[int, int, int, int], stem: str, w: int = 64) -> int:
    if stem == "deep":
        total = conv(3, 3, w) + bn(w) + conv(3, w, w) + bn(w) + conv(3, w, 2 * w) + bn(2 * w)
        cin = 2 * w
    else:
        total = conv(7, 3, w) + bn(w)
        cin = w
    for planes, n in zip((w, 2 * w, 4 * w, 8 * w), blocks):
        cout = 4 * planes
        for j in range(n):
            c = cin if j == 0 else cout
            total += conv(1, c, planes) + bn(planes) + conv(3, planes, planes) + bn(planes)
            total += conv(1, planes, cout) + bn(cout)
        total += conv(1, cin, cout) + bn(cout)  # downsample of block 0 (every stage changes channels)
        cin = cout
    return total


def expected_head(aux: bool) -> int:
    aspp = 2 * (conv(1, 2048, 256) + bn(256))  # image pooling + 1x1
    aspp += 3 * (conv(3, 2048, 256) + bn(256))  # three dilated 3x3
    aspp += conv(1, 5 * 256, 256) + bn(256)  # projection of the 1280-channel concat
    low = conv(1, 256, 48, bias=True) + bn(48)
    fuse = conv(3, 304, 256) + bn(256) + conv(3, 256, 256) + bn(256) + conv(1, 256, K, bias=True)
    aux_head = conv(3, 1024, 256) + bn(256) + conv(1, 256, K, bias=True) if aux else 0
    return aspp + low + fuse + aux_head


@pytest.mark.parametrize("name,blocks", [("resnet50", (3, 4, 6, 3)), ("resnet101", (3, 4, 23, 3))])
@pytest.mark.parametrize("stem", ["deep", "standard"])
@pytest.mark.parametrize("aux", [False, True])
def test_exact_parameter_counts(name, blocks, stem, aux):
    model = build_deeplabv3plus(name, K, aux_head=aux, stem=stem)
    assert n_params(model.backbone) == expected_backbone(blocks, stem)
    assert n_params(model) == expected_backbone(blocks, stem) + expected_head(aux)
    backbone, decoder = model.param_groups()
    assert len(backbone) + len(decoder) == len(list(model.parameters()))
    assert sum(p.numel() for p in backbone) == n_params(model.backbone)


@pytest.mark.parametrize("stem", ["deep", "standard"])
def test_narrow_backbone_parameter_counts(stem):
    # The toy's narrower ResNets: every channel count scales with the layer1 width.
    net = resnet50(stem=stem, width=16)
    assert n_params(net) == expected_backbone((3, 4, 6, 3), stem, w=16)
    assert net.channels == (64, 256, 512)


def test_narrow_resnet18_in_deeplab():
    model = build_deeplabv3plus("resnet18", 6, stem="standard", decoder_channels=32, backbone_width=16).eval()
    assert model.backbone.channels == (16, 64, 128)
    assert model.backbone.layer4[1].conv2.weight.shape == (128, 128, 3, 3)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 48, 40)).logits.shape == (2, 6, 48, 40)
    # A quarter of the width is about a sixteenth of the weights.
    full = build_deeplabv3plus("resnet18", 6, stem="standard", decoder_channels=32)
    assert 14 < n_params(full.backbone) / n_params(model.backbone) < 17


def test_known_totals():
    # The numbers the closed form gives, pinned so a change of the formula itself is visible too.
    assert expected_backbone((3, 4, 6, 3), "deep") + expected_head(False) == 40_476_005
    assert expected_backbone((3, 4, 23, 3), "deep") + expected_head(False) == 59_468_133
    assert expected_backbone((3, 4, 23, 3), "deep") + expected_head(True) == 61_833_338


def test_standard_stem_matches_torchvision():
    tv = torchvision.models.resnet50()
    ours = resnet50(stem="standard")
    assert n_params(ours) == n_params(tv) - n_params(tv.fc)
    tv_keys = {k for k in tv.state_dict() if not k.startswith("fc.")}
    assert tv_keys == set(ours.state_dict())


# ---------------------------------------------------------------- shapes, output stride, dilations


@pytest.mark.parametrize(
    "os_,size,high,mid",
    [(16, (65, 65), (5, 5), (5, 5)), (8, (65, 65), (9, 9), (9, 9)), (16, (97, 113), (7, 8), (7, 8))],
)
def test_backbone_output_stride(os_, size, high, mid):
    net = resnet18(output_stride=os_).eval()
    with torch.no_grad():
        low_f, mid_f, high_f = net(torch.zeros(1, 3, *size))
    # Deep stem + ceil-mode maxpool: 65 -> 33 -> 17 at stride 4, then 9 / 5 at strides 8 / 16.
    assert tuple(low_f.shape[-2:]) == tuple(math.ceil(s / 4) for s in size)
    assert tuple(high_f.shape[-2:]) == high and tuple(mid_f.shape[-2:]) == mid
    assert (low_f.shape[1], mid_f.shape[1], high_f.shape[1]) == net.channels == (64, 256, 512)


@pytest.mark.parametrize("os_", [8, 16])
def test_logits_at_input_size_odd(os_):
    model = build_deeplabv3plus("resnet18", K, output_stride=os_).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 97, 113)).logits
    assert out.shape == (2, K, 97, 113)


def test_resnet50_tiny_forward():
    model = build_deeplabv3plus("resnet50", 3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 33)).logits.shape == (1, 3, 33, 33)


def test_the_segmentor_names_what_it_returns():
    """Aux logits in train mode with an aux head only; perturbed logits and decoder features when asked."""
    model = build_deeplabv3plus(
        "resnet18", K, aux_head=True, decoder_channels=32, backbone_width=16, representation=8
    )
    x = torch.randn(2, 3, 65, 65)
    out = model.train()(x)
    assert (
        out.logits.shape == out.aux.shape == (2, K, 65, 65) and out.perturbed is None and out.features is None
    )
    with torch.no_grad():
        out = model.eval()(x, fp_dropout=0.5, features=True)
    assert out.aux is None and out.logits.shape == out.perturbed.shape == (2, K, 65, 65)
    assert out.features.shape == (2, 8, 17, 17)  # the representation head's width, at stride 4
    plain = build_deeplabv3plus("resnet18", K, decoder_channels=32, backbone_width=16).train()
    assert plain(x).aux is None
    with pytest.raises(ValueError, match="representation head"):
        plain(x, features=True)
    assert [t.shape[0] for t in (out.head(1).logits, out.tail(1).features)] == [1, 1]


@pytest.mark.parametrize(
    "os_,multi_grid,layer4,layer3",
    [
        (16, False, [1, 2, 2], [1] * 6),
        (16, True, [4, 4, 8], [1] * 6),
        (8, False, [2, 4, 4], [1] + [2] * 5),
        (8, True, [8, 8, 16], [1] + [2] * 5),
    ],
)
def test_dilations(os_, multi_grid, layer4, layer3):
    net = resnet50(output_stride=os_, multi_grid=multi_grid)
    assert [b.conv2.dilation[0] for b in net.layer4] == layer4
    assert [b.conv2.padding[0] for b in net.layer4] == layer4
    assert [b.conv2.dilation[0] for b in net.layer3] == layer3
    assert all(b.conv2.stride == (1, 1) for b in net.layer4)


def test_multi_grid_resnet18_uses_first_two_values():
    assert [b.conv2.dilation[0] for b in resnet18(multi_grid=True).layer4] == [4, 4]


def test_aspp_rates_follow_output_stride():
    for os_, rates in ((16, [6, 12, 18]), (8, [12, 24, 36])):
        model = build_deeplabv3plus("resnet18", K, output_stride=os_)
        assert [b[0].dilation[0] for b in model.aspp.branches[1:]] == rates


def test_init_and_sync_bn():
    model = build_deeplabv3plus("resnet18", K, sync_bn=True)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, nn.SyncBatchNorm) for m in bns)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    assert torch.all(model.classifier.bias == 0)


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"backbone": "resnet34"}, ["resnet34", "resnet18", "resnet50", "resnet101"]),
        ({"output_stride": 32}, ["8", "16"]),
        ({"stem": "wide"}, ["wide", "deep", "standard"]),
        ({"backbone_width": 0}, ["width", "0"]),
    ],
)
def test_bad_arguments(kwargs, words):
    args = {"backbone": "resnet18", "num_classes": K, **kwargs}
    with pytest.raises(ValueError) as info:
        build_deeplabv3plus(**args)
    assert all(w in str(info.value) for w in words)


# ---------------------------------------------------------------- pretrained loading


def _released_checkpoint(net: nn.Module) -> dict[str, torch.Tensor]:
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, net.channels[2])
    state["fc.bias"] = torch.randn(1000)
    return state


def test_load_released_layout(tmp_path):
    source = _released_checkpoint(resnet18())
    assert source["conv1.0.weight"].shape == (64, 3, 3, 3) and source["bn1.weight"].shape == (128,)
    path = tmp_path / "resnet18.pth"
    torch.save(source, path)
    model = build_deeplabv3plus("resnet18", K, pretrained=str(path))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, source[k]), k


def test_load_module_prefix_and_wrapper(tmp_path, caplog):
    net = resnet18()
    source = _released_checkpoint(net)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.items()}}
    wrapped["state_dict"]["module.extra.weight"] = torch.zeros(3)
    path = tmp_path / "wrapped.pth"
    torch.save(wrapped, path)
    with caplog.at_level(logging.WARNING, logger="imas.models.pretrained"):
        report = load_backbone_weights(net, str(path))
    assert report.missing == [] and report.unexpected == ["extra.weight"]
    assert "extra.weight" in caplog.text
    assert torch.equal(net.layer4[1].conv2.weight, source["layer4.1.conv2.weight"])


@pytest.mark.slow
def test_torchvision_checkpoint_into_standard_stem(tmp_path):
    path = tmp_path / "tv_resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    report = load_backbone_weights(resnet50(stem="standard"), str(path))
    assert report.missing == [] and report.unexpected == []
    with pytest.raises(CheckpointError) as info:
        load_backbone_weights(resnet50(stem="deep"), str(path))
    assert str(path) in str(info.value) and "model.stem: standard" in str(info.value)


def test_foreign_checkpoints_refused(tmp_path):
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, unrelated)
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("not a checkpoint")
    missing = tmp_path / "nowhere.pth"
    for path in (unrelated, not_a_checkpoint, missing):
        with pytest.raises(CheckpointError) as info:
            load_backbone_weights(resnet18(), str(path))
        assert str(path) in str(info.value)


def test_partial_checkpoint_refused(tmp_path):
    source = _released_checkpoint(resnet18())
    del source["layer4.1.bn2.weight"]
    path = tmp_path / "partial.pth"
    torch.save(source, path)
    with pytest.raises(CheckpointError, match="1 of .* backbone tensors unloaded .*layer4.1.bn2.weight"):
        load_backbone_weights(resnet18(), str(path))


@pytest.mark.slow
def test_deeper_resnet_checkpoint_refused(tmp_path):
    """A ResNet-101 file fills every ResNet-50 tensor, but from the wrong network: refuse it."""
    path = tmp_path / "resnet101.pth"
    torch.save(_released_checkpoint(resnet101()), path)
    with pytest.raises(CheckpointError) as info:
        load_backbone_weights(resnet50(), str(path))
    assert str(path) in str(info.value) and "model.encoder" in str(info.value)
