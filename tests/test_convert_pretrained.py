"""tools/convert_pretrained.py on torchvision-layout and deep-stem checkpoints made here."""

from __future__ import annotations

import pytest
import torch
import torchvision

from imas.models import build_deeplabv3plus
from imas.models.resnet import resnet18
from tools import convert_pretrained


@pytest.mark.slow
def test_torchvision_checkpoint_with_prefix_and_fc_is_converted(tmp_path, capsys):
    weights = torchvision.models.resnet18().state_dict()  # standard stem, with fc.*
    source = tmp_path / "tv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, source)
    out = tmp_path / "converted.pth"
    assert convert_pretrained.main([str(source), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    required = [k for k in resnet18(stem="standard").state_dict() if not k.endswith("num_batches_tracked")]
    assert len(required) == 100  # 20 convs + 20 batch norms x 4
    assert "as resnet18 with the standard stem" in report and "fills 100 of 100 backbone tensors" in report
    converted = torch.load(out, weights_only=True)
    assert not any(k.startswith("fc.") for k in converted)
    model = build_deeplabv3plus("resnet18", 6, stem="standard", pretrained=str(out))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, weights["layer4.1.conv2.weight"])


def test_a_file_that_does_not_fill_the_backbone_is_reported_and_not_written(tmp_path, capsys):
    source = tmp_path / "deep.pth"
    torch.save(resnet18(stem="deep").state_dict(), source)
    assert convert_pretrained.main([str(source)]) == 0  # deep stem detected: complete
    assert "with the deep stem" in capsys.readouterr().out
    out = tmp_path / "out.pth"
    assert convert_pretrained.main([str(source), "--stem", "standard", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "set model.stem: deep" in captured.out and "nothing written" in captured.err
    assert not out.exists()
    assert convert_pretrained.main([str(tmp_path / "missing.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_depth_that_cannot_be_told_is_one_sentence(tmp_path, capsys):
    source = tmp_path / "odd.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, source)
    assert convert_pretrained.main([str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot tell the ResNet depth of {source}") and err.count("\n") == 1
    assert "pass --backbone" in err
