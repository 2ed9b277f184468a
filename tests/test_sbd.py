"""imas-data sbd: SBD .mat + VOC palette labels -> SegmentationClassAug index PNGs; clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imas.data.commands import main as imas_data
from imas.data.io import read_label
from tests.conftest import block_label, make_voc

scipy_io = pytest.importorskip("scipy.io", reason="scipy is in the dev extra (.[dev])")


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """A file in SBD's layout: struct GTcls with Segmentation (uint8 [H, W]) and CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)
    gtcls = {"Segmentation": segmentation, "CategoriesPresent": present}
    scipy_io.savemat(str(path), {"GTcls": gtcls})


def test_converts_sbd_and_voc_labels(tmp_path: Path, capsys) -> None:
    voc, sbd = tmp_path / "VOC2012", tmp_path / "dataset"
    voc_labels = make_voc(voc, ["2007_000032", "2007_000033"], label_mode="P")  # VOC's own palette PNGs
    rng = np.random.default_rng(0)
    sbd_labels = {name: block_label(rng, 20, 28, 21) for name in ("2008_000002", "2007_000032")}
    for name, label in sbd_labels.items():
        write_sbd_mat(sbd / "cls" / f"{name}.mat", label)

    assert imas_data(["sbd", "--sbd", str(sbd), "--voc", str(voc)]) == 0
    captured = capsys.readouterr()
    assert "wrote 3 label files" in captured.out
    # ImageProgress on stderr: not a terminal here, so the last count alone, on a line of its own
    assert captured.err.startswith("sbd 3/3 label files (100%), ") and "files/s" in captured.err
    assert captured.err.count("\n") == 1
    aug = voc / "SegmentationClassAug"
    for name, expected in (
        ("2008_000002", sbd_labels["2008_000002"]),  # from SBD
        ("2007_000032", voc_labels["2007_000032"]),  # VOC's fine label wins over SBD's
        ("2007_000033", voc_labels["2007_000033"]),  # VOC palette indices, 255 borders kept
    ):
        with Image.open(aug / f"{name}.png") as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), expected)
        read_label(aug / f"{name}.png", 21)  # what training reads

    assert imas_data(["sbd", "--sbd", str(sbd), "--voc", str(voc)]) == 0  # rerun: nothing to redo
    assert "wrote 0 label files, skipped 3" in capsys.readouterr().out


def test_errors(tmp_path: Path, capsys, monkeypatch) -> None:
    voc, sbd = tmp_path / "VOC2012", tmp_path / "dataset"
    make_voc(voc, ["2007_000032"], label_mode="P")
    assert imas_data(["sbd", "--sbd", str(sbd), "--voc", str(voc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "dataset/cls does not exist; pass SBD's dataset folder" in err
    assert err.count("\n") == 1

    (sbd / "cls").mkdir(parents=True)
    (sbd / "cls" / "2009_000001.mat").write_bytes(b"not a mat file")
    assert imas_data(["sbd", "--sbd", str(sbd), "--voc", str(voc)]) == 2
    assert "2009_000001.mat is not an SBD class label file" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    assert imas_data(["sbd", "--sbd", str(sbd), "--voc", str(voc)]) == 2
    assert "needs scipy, which is not installed; run `pip install scipy`" in capsys.readouterr().err
