"""imas-data check: a clean toy passes; each listed problem is found, all in one report; training stops on
what it reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from conftest import make_voc, toy_data, write_split
from PIL import Image

from imas import train as train_cli
from imas.data.commands import main as imas_data
from imas.data.toy import make_toy_dataset
from imas.models import BACKBONES


def write_config(tmp_path: Path, root: Path, **sections: dict) -> Path:
    # batch 2: the tiny datasets below hold one batch of it (a shorter epoch is a problem of its own)
    config = {"data": toy_data(root), "train": {"batch_size": 2}} | sections
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


TINY_MODEL = {"encoder": "resnet18", "stem": "standard", "backbone_width": 8, "decoder_channels": 16}


def test_the_pretrained_file_is_checked(tmp_path, capsys):
    import torch

    root = make_toy_dataset(tmp_path / "toy", sizes={"labeled": 4, "unlabeled": 4, "val": 2})
    weights = tmp_path / "r18.pth"
    torch.save(
        BACKBONES["resnet18"](output_stride=16, multi_grid=False, stem="standard", width=8).state_dict(),
        weights,
    )
    config = write_config(tmp_path, root, model=TINY_MODEL | {"pretrained": str(weights)})
    assert imas_data(["check", str(config)]) == 0
    assert f"model.pretrained: {weights}: fills every tensor of resnet18" in capsys.readouterr().out

    assert imas_data(["check", str(config), "--opt", "model.stem=deep"]) == 1
    out = capsys.readouterr().out
    assert "- pretrained backbone file: 1" in out and "set model.stem: standard" in out, out


def test_training_stops_on_the_sentence_check_reports(tmp_path, capsys):
    """The template's first stop: a pretrained file that is not there. Check and training name it alike."""
    root = make_toy_dataset(tmp_path / "toy", sizes={"labeled": 4, "unlabeled": 4, "val": 2})
    missing = tmp_path / "pretrained/resnet18.pth"
    config = write_config(tmp_path, root, model=TINY_MODEL | {"pretrained": str(missing)})
    assert imas_data(["check", str(config)]) == 1
    out = capsys.readouterr().out
    (reported,) = [line.strip() for line in out.splitlines() if str(missing) in line]
    assert "does not exist" in reported and "pretrained/README.md" in reported, out

    run_dir = tmp_path / "run"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {reported}"
    assert not (run_dir / "latest.pth").exists()


def test_an_epoch_shorter_than_one_batch_is_a_problem(tmp_path, capsys):
    root = make_toy_dataset(tmp_path / "toy", sizes={"labeled": 4, "unlabeled": 3, "val": 2})
    config = write_config(tmp_path, root, train={"batch_size": 4})
    assert imas_data(["check", str(config)]) == 1
    out = capsys.readouterr().out
    assert "- epoch shorter than one batch: 1" in out and "an epoch of 3 images" in out, out
