"""imas-data check: a clean toy passes; each listed problem is found, all in one report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from conftest import make_voc, toy_data, write_split
from PIL import Image

from imas.data.commands import main as imas_data
from imas.data.toy import make_toy_dataset


def write_config(tmp_path: Path, root: Path) -> Path:
    config = {"data": toy_data(root)}
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_clean_dataset_passes_and_every_problem_is_reported(tmp_path, capsys):
    root = make_toy_dataset(tmp_path / "toy", sizes={"labeled": 6, "unlabeled": 4, "val": 4})
    config = write_config(tmp_path, root)
    assert imas_data(["check", str(config)]) == 0
    assert "no problems" in capsys.readouterr().out

    images, labels = root / "JPEGImages", root / "SegmentationClassAug"
    (images / "labeled_0000.jpg").unlink()  # missing image
    (images / "labeled_0001.jpg").write_bytes(b"garbage")  # corrupt image
    Image.fromarray(np.full((20, 20), 9, np.uint8)).save(labels / "labeled_0002.png")  # value 9 and size
    Image.open(labels / "labeled_0003.png").convert("RGB").save(labels / "labeled_0003.png")  # colour label
    small = np.zeros((5, 5), np.uint8)
    Image.fromarray(small).save(labels / "labeled_0004.png")  # size mismatch only
    split = root / "splits/labeled.txt"
    split.write_text(split.read_text() + "labeled_0005\nval_0000\n")  # twice in a split; also in val
    assert imas_data(["check", str(config)]) == 1
    out = capsys.readouterr().out
    for kind in (
        "missing file: 1",
        "corrupt file: 1",
        "label value out of range: 1",
        "label not an index image: 1",
        "image/label size mismatch: 1",
        "id listed twice in a split: 1",
        "val id also in labeled: 1",
    ):
        assert f"- {kind}" in out, kind
    assert "labeled_0000.jpg" in out and "val_0000 is in both val and labeled" in out


def test_bad_config_is_one_sentence(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "nowhere")
    assert imas_data(["check", str(config)]) == 2
    assert capsys.readouterr().err.startswith("error: data root")


def test_classes_in_no_label_are_a_warning(tmp_path, capsys):
    root = tmp_path / "voc"
    make_voc(root, ["a", "b", "c"], num_classes=3)
    write_split(root / "splits/labeled.txt", ["a", "b"])
    write_split(root / "splits/unlabeled.txt", ["a", "b"])
    write_split(root / "splits/val.txt", ["c"])
    config = write_config(tmp_path, root)
    config.write_text(config.read_text().replace("num_classes: 6", "num_classes: 21"))
    assert imas_data(["check", str(config)]) == 0  # a warning, not a problem
    out = capsys.readouterr().out
    assert "warning: data.num_classes is 21" in out and "3 (bird)" in out and "20 (tvmonitor)" in out, out


def test_labels_that_are_all_ignore_are_a_problem(tmp_path, capsys):
    root = tmp_path / "voc"
    make_voc(root, ["a", "b", "c"], num_classes=3)
    for name in ("a", "b"):
        path = root / "SegmentationClassAug" / f"{name}.png"
        Image.fromarray(np.full_like(np.asarray(Image.open(path)), 255)).save(path)
    write_split(root / "splits/labeled.txt", ["a", "b"])
    write_split(root / "splits/unlabeled.txt", ["a"])
    write_split(root / "splits/val.txt", ["c"])
    config = write_config(tmp_path, root)
    assert imas_data(["check", str(config)]) == 1
    out = capsys.readouterr().out
    assert "- labels all 255 (ignore): 1" in out and "labeled split" in out, out


def test_a_config_without_unlabeled_split_is_checked(tmp_path, capsys):
    root = make_toy_dataset(tmp_path / "toy", sizes={"labeled": 3, "unlabeled": 2, "val": 2})
    config = write_config(tmp_path, root)
    config.write_text(config.read_text().replace(str(root / "splits/unlabeled.txt"), "''"))
    assert imas_data(["check", str(config)]) == 0
    assert "unlabeled: no split configured" in capsys.readouterr().out
