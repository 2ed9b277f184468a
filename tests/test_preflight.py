"""imas.data.preflight: the pretrained file, the class names, every split's files and the epoch's length are
checked before the first iteration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import make_voc, write_split
from PIL import Image

from imas.config import Config, DataConfig, ModelConfig, Stem, TrainConfig
from imas.data.preflight import check_data, check_pretrained, check_run, scan_run
from imas.errors import CheckpointError, DataError
from imas.models import BACKBONES


def data_error(cfg: DataConfig, with_unlabeled: bool = True) -> str:
    with pytest.raises(DataError) as info:
        check_data(cfg, with_unlabeled=with_unlabeled)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_clean_data_passes_without_warnings(voc_cfg):
    lines: list[str] = []
    assert check_data(voc_cfg, with_unlabeled=True, progress=lines.append) == []
    # One summary line at the end, with the counts and the rate.
    assert any("5 labeled" in line and "4 val" in line and "13 unlabeled" in line for line in lines), lines


def test_progress_names_the_split_and_the_rate(voc_cfg):
    lines: list[str] = []
    check_data(voc_cfg, with_unlabeled=True, progress=lines.append, progress_every_s=0.0)
    assert any("unlabeled" in line and "files/s" in line and "/13" in line for line in lines), lines


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        ("missing_image", ["val", "image", "v1.jpg", "does not exist"]),
        ("corrupt_label", ["val", "label", "v1.png", "cannot be read"]),
        ("label_value", ["val", "label", "v1.png", "contains value 30"]),
        ("colour_label", ["val", "label", "v1.png", "colour image"]),
        ("size_mismatch", ["val", "label", "v1.png", "5x5", "its image is"]),
        ("truncated_image", ["val", "image", "v1.jpg", "cannot be read"]),
    ],
)
def test_a_bad_val_file_stops_before_training(voc_cfg, damage, needles):
    root = Path(voc_cfg.root)
    image, label = root / "JPEGImages/v1.jpg", root / "SegmentationClassAug/v1.png"
    if damage == "missing_image":
        image.unlink()
    elif damage == "corrupt_label":
        label.write_bytes(b"not a png")
    elif damage == "label_value":
        values = np.asarray(Image.open(label)).copy()
        values[1, 1] = 30
        Image.fromarray(values).save(label)
    elif damage == "colour_label":
        Image.open(label).convert("RGB").save(label)
    elif damage == "size_mismatch":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(label)
    elif damage == "truncated_image":
        # The header survives, the pixels do not: only a full decode finds this (val images are decoded).
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
    message = data_error(voc_cfg)
    for needle in needles:
        assert needle in message, (needle, message)


def test_unlabeled_images_get_a_header_read(voc_cfg):
    (Path(voc_cfg.root) / "JPEGImages/u3.jpg").write_bytes(b"garbage")
    message = data_error(voc_cfg)
    assert "u3.jpg" in message and "unlabeled" in message
    # A supervised run never reads the unlabeled images, so they are not checked.
    assert check_data(voc_cfg, with_unlabeled=False) == []


def test_a_supervised_run_still_needs_a_readable_unlabeled_split_file(voc_cfg):
    # build_datasets reads it for the epoch length, so preflight must find a missing one first.
    cfg = dataclasses.replace(voc_cfg, unlabeled_split=str(Path(voc_cfg.root) / "splits/nope.txt"))
    assert "nope.txt" in data_error(cfg, with_unlabeled=False)


def test_several_problems_give_the_first_and_a_count(voc_cfg):
    root = Path(voc_cfg.root)
    for name in ("v0", "v2", "v3"):
        (root / "SegmentationClassAug" / f"{name}.png").unlink()
    (root / "JPEGImages/l1.jpg").unlink()
    message = data_error(voc_cfg)
    assert message.startswith("labeled split: image") and "l1.jpg" in message, message
    assert "3 more problems" in message and "imas-data check" in message, message


@pytest.mark.parametrize("split", ["labeled", "val"])
def test_labels_that_are_all_ignore_are_an_error(voc_cfg, split):
    root = Path(voc_cfg.root)
    ids = [f"l{i}" for i in range(5)] if split == "labeled" else [f"v{i}" for i in range(4)]
    for image_id in ids:
        path = root / "SegmentationClassAug" / f"{image_id}.png"
        Image.fromarray(np.full_like(np.asarray(Image.open(path)), 255)).save(path)
    message = data_error(voc_cfg)
    assert f"{split} split" in message and "255" in message, message


def test_duplicates_and_val_overlap_are_warnings(voc_cfg):
    write_split(Path(voc_cfg.labeled_split), ["l0", "l1", "l2", "l3", "l4", "l2", "v0"])
    warnings = check_data(voc_cfg, with_unlabeled=True)
    assert len(warnings) == 2, warnings
    assert any("l2 is listed 2 times" in w for w in warnings), warnings
    assert any("v0 is in both val and labeled" in w for w in warnings), warnings


def test_classes_in_no_label_are_a_warning(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, ["a", "b", "c"], num_classes=3)
    cfg = DataConfig(
        root=str(root),
        labeled_split=str(write_split(root / "splits/l.txt", ["a", "b"])),
        val_split=str(write_split(root / "splits/v.txt", ["c"])),
        num_classes=21,
    )
    (warning,) = check_data(cfg, with_unlabeled=False)
    assert "data.num_classes is 21" in warning and "3 (bird)" in warning and "20 (tvmonitor)" in warning


# ------------------------------------------------------------- the pretrained file and the whole run


def tiny_model(pretrained: str = "", stem: Stem = Stem.standard) -> ModelConfig:
    return ModelConfig(encoder="resnet18", stem=stem, backbone_width=8, pretrained=pretrained)


def save_backbone(path: Path, stem: str = "standard") -> Path:
    import torch

    backbone = BACKBONES["resnet18"](output_stride=16, multi_grid=False, stem=stem, width=8)
    torch.save({"state_dict": backbone.state_dict()}, path)
    return path


def test_a_fitting_pretrained_file_or_none_passes(tmp_path):
    import torch

    assert check_pretrained(tiny_model()) is None
    path = save_backbone(tmp_path / "r18.pth")
    state = torch.get_rng_state()
    assert check_pretrained(tiny_model(str(path))) is None
    assert torch.equal(torch.get_rng_state(), state)  # the backbone it builds leaves the caller's RNG alone


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (
            "missing",
            ["nope.pth", "does not exist", "pretrained/README.md", "tools/convert_pretrained.py", "''"],
        ),
        ("folder", ["is a folder", "pretrained/README.md"]),
        ("not_a_checkpoint", ["not a PyTorch checkpoint", "pretrained/README.md"]),
        ("other_stem", ["has bn1.weight of shape", "set model.stem: standard"]),
        ("other_width", ["of shape", "the model expects"]),
    ],
)
def test_a_bad_pretrained_file_is_one_sentence_naming_it(tmp_path, damage, needles):
    path = tmp_path / "nope.pth"
    if damage == "folder":
        path = tmp_path
    elif damage == "not_a_checkpoint":
        path.write_text("these are not weights")
    elif damage in ("other_stem", "other_width"):
        save_backbone(path)
    model = tiny_model(str(path), stem=Stem.deep if damage == "other_stem" else Stem.standard)
    if damage == "other_width":
        model.backbone_width = 16
    message = check_pretrained(model)
    assert message is not None and message.startswith("model.pretrained: ") and "\n" not in message
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_training_checks_the_pretrained_file_before_the_data(tmp_path):
    # The data root is missing too: the pretrained file is named first (it costs seconds, the data minutes).
    cfg = Config(data=DataConfig(root=str(tmp_path / "nowhere")), model=tiny_model(str(tmp_path / "w.pth")))
    with pytest.raises(CheckpointError, match="w.pth does not exist"):
        check_run(cfg, with_unlabeled=True)


@pytest.mark.parametrize(("batch_size", "world_size", "fails"), [(4, 1, False), (4, 4, True), (16, 1, True)])
def test_an_epoch_shorter_than_one_batch_stops_training(voc_cfg, batch_size, world_size, fails):
    # 13 unlabeled images make an epoch: 16 per iteration would run no iteration at all.
    cfg = Config(data=voc_cfg, model=tiny_model(), train=TrainConfig(batch_size=batch_size))
    if not fails:
        assert check_run(cfg, with_unlabeled=True, world_size=world_size) == []
        return
    with pytest.raises(DataError) as info:
        check_run(cfg, with_unlabeled=True, world_size=world_size)
    message = str(info.value)
    assert "an epoch of 13 images" in message and "global batch of 16" in message, message
    assert f"{batch_size} per device x {world_size} device" in message and "train.batch_size" in message


@pytest.mark.parametrize(("names", "needle"), [(["a", "b"], "lists 2 class names"), (["a"] * 21, "twice")])
def test_a_class_names_file_that_does_not_fit_stops_training(voc_cfg, names, needle):
    # Found whether or not some class is absent from the labels (build_datasets reads the file either way).
    (Path(voc_cfg.root) / "class_names.txt").write_text("\n".join(names) + "\n")
    message = data_error(voc_cfg)
    assert "class_names.txt" in message and needle in message, message


def test_a_missing_toy_backbone_names_the_command_that_makes_it(tmp_path):
    """The toy configs' backbone is made, not downloaded: its hint names the commands that make it."""
    message = check_pretrained(tiny_model(str(tmp_path / "data/toy/pretrained/resnet18_w32.pth")))
    assert message is not None and "does not exist" in message
    assert "sh single_run.sh CONFIG" in message and "tools.toy_pretrain --config CONFIG --ensure" in message
    assert "ImageNet" not in message


def test_a_missing_data_root_and_a_bad_pretrained_file_are_said_together(tmp_path):
    cfg = Config()
    cfg.data.root = str(tmp_path / "no_such_data")
    cfg.model = tiny_model(str(tmp_path / "nope.pth"))
    with pytest.raises(DataError) as info:
        scan_run(cfg, with_unlabeled=False)
    message = str(info.value)
    assert "no_such_data" in message and "; also model.pretrained: " in message and "nope.pth" in message
