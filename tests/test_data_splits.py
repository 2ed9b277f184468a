"""imas-data splits: protocol counts, disjointness, nesting, determinism, manifest, and readable lists."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from imas.config import DataConfig, DatasetKind
from imas.data.commands import main as imas_data
from imas.data.layouts import resolve_entries
from imas.data.splits import read_split
from tests.conftest import make_cityscapes


def fake_voc(tmp_path: Path) -> tuple[Path, Path, set[str], set[str], set[str]]:
    """VOC image sets (30 fine train, 10 val) and SBD lists (overlapping both), as the real ones do."""
    voc, sbd = tmp_path / "VOC2012", tmp_path / "sbd"
    fine = [f"2007_{i:06d}" for i in range(30)]
    val = [f"2008_{i:06d}" for i in range(10)]
    sbd_train = fine[:12] + [f"2009_{i:06d}" for i in range(40)] + val[:3]  # SBD train holds VOC val ids
    sbd_val = [f"2010_{i:06d}" for i in range(20)] + fine[20:25]
    for folder, name, ids in (
        (voc / "ImageSets/Segmentation", "train.txt", fine),
        (voc / "ImageSets/Segmentation", "val.txt", val),
        (sbd, "train.txt", sbd_train),
        (sbd, "val.txt", sbd_val),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("\n".join(ids) + "\n")
    train_aug = (set(fine) | set(sbd_train) | set(sbd_val)) - set(val)
    return voc, sbd, set(fine), set(val), train_aug


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_pascal_protocols(tmp_path: Path) -> None:
    voc, sbd, fine, val, train_aug = fake_voc(tmp_path)
    assert len(train_aug) == 90
    out = tmp_path / "splits"

    def pascal(folder: Path, *extra: str) -> int:
        common = ["--voc", str(voc), "--sbd", str(sbd), "--out", str(folder), "--classic", "5", "10", "30"]
        return imas_data(["splits", "pascal", *common, *extra])

    assert pascal(out, "--blended", "8", "16") == 0

    assert set(lines(out / "val.txt")) == val
    for protocol, sizes, pool in (("classic", (5, 10, 30), fine), ("blended", (8, 16), train_aug)):
        previous: set[str] = set()
        for n in sizes:
            labeled = lines(out / protocol / str(n) / "labeled.txt")
            unlabeled = lines(out / protocol / str(n) / "unlabeled.txt")
            assert len(labeled) == len(set(labeled)) == n and labeled == sorted(labeled)
            assert set(labeled) <= pool and previous <= set(labeled)  # nested: smaller sets are subsets
            assert not set(labeled) & set(unlabeled) and set(labeled) | set(unlabeled) == train_aug
            assert not (set(labeled) | set(unlabeled)) & val
            previous = set(labeled)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pools"] == {"val": 10, "fine_train": 30, "train_aug": 90} and manifest["seed"] == 0
    assert len(manifest["lists"]) == 1 + 2 * 5
    for name, entry in manifest["lists"].items():
        data = (out / name).read_bytes()
        assert entry == {"count": len(data.splitlines()), "sha256": hashlib.sha256(data).hexdigest()}

    # The lists are what the data readers take (CPS-family id lines).
    cfg = DataConfig(dataset=DatasetKind.voc, root=str(voc))
    entries = resolve_entries(read_split(out / "classic/5/labeled.txt"), cfg, "labeled.txt")
    assert entries[0][1] == voc / "JPEGImages" / f"{entries[0][0]}.jpg"

    # Same inputs and seed: byte-identical; another seed: another draw.
    again, other = tmp_path / "again", tmp_path / "other"
    assert pascal(again, "--blended", "8", "16") == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert pascal(other, "--seed", "1", "--blended", "8") == 0
    assert lines(other / "classic/5/labeled.txt") != lines(out / "classic/5/labeled.txt")


def test_pascal_pool_from_segmentation_class_aug(tmp_path: Path) -> None:
    voc, _, fine, val, _ = fake_voc(tmp_path)
    aug = voc / "SegmentationClassAug"
    aug.mkdir()
    for image_id in sorted(fine | val | {"2011_000001", "2011_000002"}):
        (aug / f"{image_id}.png").write_bytes(b"")
    out = tmp_path / "splits"
    args = ["pascal", "--voc", str(voc), "--out", str(out), "--classic", "4", "--blended", "6"]
    assert imas_data(["splits", *args]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["pools"]["train_aug"] == 32 and manifest["train_aug_from"] == "VOC2012/SegmentationClassAug"
    )
    assert len(lines(out / "blended/6/unlabeled.txt")) == 26


@pytest.mark.parametrize(
    ("sbd_arg", "extra", "message"),
    [
        ("sbd", ["--classic", "31"], "cannot draw 31 labeled images from the 30 of the classic pool"),
        ("nowhere", [], "nowhere/train.txt does not exist"),
        (None, [], "SegmentationClassAug does not exist"),
    ],
)
def test_pascal_errors(tmp_path: Path, capsys, sbd_arg: str | None, extra: list[str], message: str) -> None:
    voc, sbd, *_ = fake_voc(tmp_path)
    sbd_args = [] if sbd_arg is None else ["--sbd", str(sbd) if sbd_arg == "sbd" else sbd_arg]
    args = ["splits", "pascal", "--voc", str(voc), "--out", str(tmp_path / "s"), *sbd_args, *extra]
    assert imas_data(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cityscapes_protocol(tmp_path: Path) -> None:
    root = tmp_path / "cityscapes"
    train = [f"{city}_000000_{i:06d}" for city in ("aachen", "bremen") for i in range(6)]
    make_cityscapes(root, {"train": train, "val": ["frankfurt_000000_000001", "lindau_000000_000002"]})
    out = tmp_path / "splits"
    assert (
        imas_data(["splits", "cityscapes", "--root", str(root), "--out", str(out), "--sizes", "3", "6"]) == 0
    )
    assert len(lines(out / "val.txt")) == 2
    labeled, unlabeled = lines(out / "6/labeled.txt"), lines(out / "6/unlabeled.txt")
    assert len(labeled) == 6 and len(unlabeled) == 6 and set(lines(out / "3/labeled.txt")) <= set(labeled)
    # "image label" pairs, relative to the root, that exist and that the reader takes as they are.
    cfg = DataConfig(dataset=DatasetKind.cityscapes, root=str(root))
    for name, image, label in resolve_entries(read_split(out / "6/labeled.txt"), cfg, "labeled.txt"):
        assert image.is_file() and label.is_file() and name in image.name and name in label.name
    assert imas_data(["splits", "cityscapes", "--root", str(root), "--out", str(out), "--sizes", "13"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["splits", "pascal"], "pascal splits need --voc, the VOC2012 folder"),
        (["splits", "cityscapes"], "cityscapes splits need --root, the folder holding leftImg8bit/"),
        (
            ["splits", "cityscapes", "--root", "nowhere"],
            "no *_leftImg8bit.png images under nowhere/leftImg8bit",
        ),
    ],
)
def test_missing_folders_are_one_sentence(args: list[str], message: str, capsys) -> None:
    assert imas_data(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert captured.out == ""
