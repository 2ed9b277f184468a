"""The toy's backbone pretraining: deterministic images of other shapes, weights that load into the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imas.data.toy import PRETRAIN_CLASSES, TOY_CLASSES, make_pretrain_sample
from imas.models import build_deeplabv3plus
from tools import toy_pretrain


def test_pretraining_shapes_are_not_segmentation_classes_and_are_deterministic():
    assert not set(PRETRAIN_CLASSES) & set(TOY_CLASSES)
    image, label = make_pretrain_sample(0, 7, size=40)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8 and label == 7 % len(PRETRAIN_CLASSES)
    assert np.array_equal(image, make_pretrain_sample(0, 7, size=40)[0])
    assert not np.array_equal(image, make_pretrain_sample(1, 7, size=40)[0])


@pytest.mark.slow
def test_tiny_pretraining_writes_a_backbone_that_loads_strictly(tmp_path, capsys):
    out = tmp_path / "r18.pth"
    args = ["--out", str(out), "--images", "24", "--val-images", "12", "--size", "32", "--steps", "2"]
    assert toy_pretrain.main(args + ["--batch", "8"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"] == 2 and 0.0 <= record["val_accuracy"] <= 1.0
    captured = capsys.readouterr()
    assert (
        "toy backbone: pretraining ResNet-18 width 64 on 24 generated images (2 steps of 8)" in captured.out
    )
    assert "held-out accuracy" in captured.out
    assert "pretraining 2/2 steps (100%)" in captured.err and "eta 0:00:00" in captured.err  # the progress
    # The standard-stem layout of model.pretrained: every backbone tensor of the toy model is filled.
    model = build_deeplabv3plus("resnet18", 6, stem="standard", pretrained=str(out), decoder_channels=32)
    saved = torch.load(out, weights_only=True)
    assert torch.equal(model.backbone.conv1.weight, saved["conv1.weight"])
    mtime = out.stat().st_mtime_ns
    assert toy_pretrain.main(args + ["--batch", "8", "--ensure"]) == 0  # same settings: kept
    assert out.stat().st_mtime_ns == mtime and capsys.readouterr().out == ""


def test_bad_settings_are_one_sentence_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cases = {
        ("--steps", "0"): "--steps must be at least 1, got 0",
        ("--val-images", "-3"): "--val-images must be at least 1, got -3",
        ("--lr", "0"): "--lr must be positive, got 0.0",
        ("--out", str(blocker / "r18.pth")): f"--out {blocker / 'r18.pth'} cannot be written",
    }
    for extra, message in cases.items():
        assert toy_pretrain.main(["--out", str(tmp_path / "r18.pth"), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1, extra
        assert captured.out == ""
    assert not (tmp_path / "r18.pth").exists()


def test_the_backbone_file_and_width_come_from_the_config_unless_named(capsys):
    args = toy_pretrain.parse_args([])  # the quick start's config
    assert (args.out, args.width) == ("data/toy/pretrained/resnet18_w32.pth", 32)
    args = toy_pretrain.parse_args(["--config", "exps/toy_w64/imas.yaml"])  # the toy before the quick start
    assert (args.out, args.width) == ("data/toy/pretrained/resnet18_standard.pth", 64)
    assert (
        toy_pretrain.parse_args(["--out", "x.pth"]).width,
        toy_pretrain.parse_args(["--out", "x.pth", "--width", "16"]).width,
    ) == (64, 16)
    cases = {
        ("--config", "exps/toy/imas.yaml", "--out", "x.pth"): "give --config, or --out and --width, not both",
        ("--width", "16"): "--width needs --out (without them both come from --config)",
    }
    for argv, message in cases.items():
        assert toy_pretrain.main(list(argv)) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
