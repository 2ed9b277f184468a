"""The toy dataset: byte-identical for a seed, every class in every split, readable by the VOC reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imas.config import DataConfig, DatasetKind
from imas.data import build_datasets
from imas.data.toy import (
    MAX_SIDE,
    MIN_SIDE,
    SPLIT_SIZES,
    TOY_CLASSES,
    VERSION_FILE,
    dataset_digest,
    is_current,
    main,
    make_toy_dataset,
    make_toy_sample,
)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), seed=0)


@pytest.mark.slow
def test_same_seed_gives_byte_identical_files(toy_root: Path, tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / "again"), "--seed", "0"]) == 0
    assert dataset_digest(tmp_path / "again") == dataset_digest(toy_root)
    small = make_toy_dataset(tmp_path / "small", seed=0, sizes={"labeled": 3, "unlabeled": 2, "val": 1})
    assert (small / "splits" / "labeled.txt").read_text().split() == [f"labeled_{i:04d}" for i in range(3)]
    for name in ("labeled_0002.jpg", "unlabeled_0001.jpg", "val_0000.jpg"):  # a prefix of the full dataset
        assert (small / "JPEGImages" / name).read_bytes() == (toy_root / "JPEGImages" / name).read_bytes()
    image, label = make_toy_sample(1, "val", 3)
    assert not np.array_equal(image, make_toy_sample(0, "val", 3)[0])
    assert np.array_equal(image, make_toy_sample(1, "val", 3)[0])
    assert np.array_equal(label, make_toy_sample(1, "val", 3)[1])


def test_layout_counts_and_every_class_in_every_split(toy_root: Path) -> None:
    assert (toy_root / "class_names.txt").read_text().split() == TOY_CLASSES
    all_ids: set[str] = set()
    for split, count in SPLIT_SIZES.items():
        ids = (toy_root / "splits" / f"{split}.txt").read_text().split()
        assert len(ids) == count
        all_ids |= set(ids)
        pixels = np.zeros(len(TOY_CLASSES), dtype=np.int64)
        for image_id in ids:
            label_image = Image.open(toy_root / "SegmentationClassAug" / f"{image_id}.png")
            assert label_image.mode == "L"
            label = np.asarray(label_image)
            image = Image.open(toy_root / "JPEGImages" / f"{image_id}.jpg")
            assert (
                image.size == label.shape[::-1] and MIN_SIDE <= min(image.size) <= max(image.size) <= MAX_SIDE
            )
            pixels += np.bincount(label.ravel(), minlength=len(TOY_CLASSES))
        assert (pixels[1:] > 0.01 * pixels.sum()).all(), f"a class is (nearly) missing from {split}: {pixels}"
    assert len(all_ids) == sum(SPLIT_SIZES.values())  # the splits are disjoint


def test_toy_reads_through_the_voc_reader(toy_root: Path) -> None:
    cfg = DataConfig(
        dataset=DatasetKind.voc,
        root=str(toy_root),
        labeled_split=str(toy_root / "splits" / "labeled.txt"),
        unlabeled_split=str(toy_root / "splits" / "unlabeled.txt"),
        val_split=str(toy_root / "splits" / "val.txt"),
        num_classes=len(TOY_CLASSES),
        crop_size=80,
        long_side=[64, 128],
    )
    data = build_datasets(cfg, with_unlabeled=True)
    assert data.labeled.class_names == TOY_CLASSES
    assert data.labeled[0]["mask"].shape == (80, 80)
    assert data.unlabeled is not None and data.unlabeled[5]["valid"].shape == (80, 80)
    assert int(data.val[0]["mask"].max()) < len(TOY_CLASSES)


def test_ensure_keeps_a_current_dataset_and_rewrites_an_outdated_one(tmp_path: Path, capsys) -> None:
    args = ["--out", str(tmp_path), "--labeled", "2", "--unlabeled", "2", "--val", "1"]
    assert main(args + ["--ensure"]) == 0  # missing: written
    assert is_current(tmp_path, 0, {"labeled": 2, "unlabeled": 2, "val": 1})
    marker = tmp_path / "JPEGImages" / "marker.txt"
    marker.write_text("x")
    capsys.readouterr()
    assert main(args + ["--ensure"]) == 0
    assert capsys.readouterr().out == ""  # current: untouched, nothing printed
    assert not is_current(tmp_path, 0, {"labeled": 3, "unlabeled": 2, "val": 1})
    (tmp_path / VERSION_FILE).write_text("generator 1 seed 0\n")  # made by an older generator
    assert main(args + ["--ensure"]) == 0
    assert "writing it again" in capsys.readouterr().out
    assert is_current(tmp_path, 0, {"labeled": 2, "unlabeled": 2, "val": 1})


def test_committed_toy_splits_are_the_generators(toy_root: Path) -> None:
    """The toy configs read splits/toy/; those lists must be exactly what the generator writes."""
    committed = Path(__file__).resolve().parents[1] / "splits" / "toy"
    for split in SPLIT_SIZES:
        assert (committed / f"{split}.txt").read_text() == (toy_root / "splits" / f"{split}.txt").read_text()
