"""imas.data.preflight.check_data: every split's files are checked before the first iteration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import make_voc, write_split
from PIL import Image

from imas.config import DataConfig
from imas.data.preflight import check_data
from imas.errors import DataError


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
