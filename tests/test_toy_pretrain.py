"""The toy's backbone pretraining: deterministic images of other shapes, weights that load into the model (a
ResNet-18, or the toy's ViT in Meta's key layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imas.data.toy import PRETRAIN_CLASSES, TOY_CLASSES, make_pretrain_sample
from imas.models import build_deeplabv3plus, build_dpt
from imas.models.vit import VIT_SIZES, vit
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


@pytest.mark.slow
def test_tiny_vit_pretraining_writes_meta_layout_that_build_dpt_loads_strictly(tmp_path, capsys):
    out = tmp_path / "vit.pth"
    size = VIT_SIZES["vit_toy"]
    args = ["--out", str(out), "--encoder", "vit_toy", "--images", "8", "--val-images", "4"]
    args += ["--size", str(2 * size.patch), "--steps", "2", "--batch", "4"]  # 2 x 2 patches: the grid resized
    assert toy_pretrain.main(args) == 0
    name = f"ViT vit_toy (width {size.width}, {size.depth} blocks, patch {size.patch})"
    assert f"toy backbone: pretraining {name} on 8 generated images (2 steps of 4)" in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    expected = vit("vit_toy").state_dict()
    assert list(saved) == list(expected) and "mask_token" in saved  # Meta's keys, the unused token included
    assert all(saved[k].shape == expected[k].shape for k in expected)
    model = build_dpt("vit_toy", 6, pretrained=str(out))  # strict: a missing or extra key is an error
    assert torch.equal(model.backbone.blocks[5].mlp.fc2.weight, saved["blocks.5.mlp.fc2.weight"])
    assert not torch.equal(saved["blocks.5.mlp.fc2.weight"], expected["blocks.5.mlp.fc2.weight"])  # trained
    record = json.loads(out.with_suffix(".json").read_text())
    assert (record["version"], record["encoder"], record["steps"]) == (toy_pretrain.VIT_VERSION, "vit_toy", 2)
    assert "width" not in record and 0.0 <= record["val_accuracy"] <= 1.0
    mtime = out.stat().st_mtime_ns
    assert toy_pretrain.main(args + ["--ensure"]) == 0  # same settings: kept
    assert out.stat().st_mtime_ns == mtime and capsys.readouterr().out == ""
    # A ResNet asked for at the ViT's path is made anew (the record names another recipe).
    resnet = toy_pretrain.parse_args(["--out", str(out)])
    assert not toy_pretrain.up_to_date(resnet)


def test_a_vit_config_names_the_vit_and_its_recipe(capsys, tmp_path):
    # The toy's ViT configs start from random weights (model.pretrained ""); a ViT config that names a file
    # gets one made with the ViT's recipe.
    config = tmp_path / "vit.yaml"
    config.write_text(
        Path("exps/toy/vit_imas.yaml").read_text().replace('pretrained: ""', "pretrained: out/vit_toy.pth")
    )
    args = toy_pretrain.parse_args(["--config", str(config)])
    assert (args.out, args.encoder, args.width) == ("out/vit_toy.pth", "vit_toy", None)
    assert (args.steps, args.lr) == (toy_pretrain.VIT_RECIPE["steps"], toy_pretrain.VIT_RECIPE["lr"])
    resnet = toy_pretrain.parse_args([])
    assert (resnet.encoder, resnet.steps, resnet.lr) == ("resnet18", 400, 2e-3)  # as before ViTs existed
    vit_out, patch = ("--out", "x.pth", "--encoder", "vit_toy"), VIT_SIZES["vit_toy"].patch
    cases = {
        ("--config", str(config), "--encoder", "vit_toy"): "give --config, or --out and --encoder, not both",
        ("--encoder", "vit_toy"): "--encoder needs --out (without them both come from --config)",
        (*vit_out, "--width", "16"): "--width is the ResNet's layer1 width; vit_toy has none: leave it out",
        (*vit_out, "--size", str(patch + 1)): f"--size {patch + 1} is not a multiple of vit_toy's patch size "
        f"{patch}",
    }
    for argv, message in cases.items():
        assert toy_pretrain.main(list(argv)) == 2
        assert capsys.readouterr().err == f"error: {message}\n", argv
