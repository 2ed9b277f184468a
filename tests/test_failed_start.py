"""A command that stops before its work begins leaves nothing behind: imas-train removes the run directory,
runs/ and the files (config.yaml, train.log, run.lock, ...) that start created, never what was there
before, a run to resume or a run another process holds; once training began, the files stay. The commands
that create an output folder before their checks (imas-eval, imas-predict, imas-pseudo-labels,
imas-report, imas-compare, imas-data splits) remove it when they fail while it is still empty."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from imas import train as train_cli
from imas.config import save_config, to_dict
from imas.data.toy import make_toy_dataset
from imas.errors import UserError
from imas.experiment import load_experiment
from imas.rundir import LOCK_NAME, RunLock, StartUndo


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return make_toy_dataset(
        tmp_path_factory.mktemp("toy") / "toy", sizes={"labeled": 4, "unlabeled": 4, "val": 2}
    )


def write_config(path: Path, root: Path, **sections: dict) -> Path:
    """A tiny supervised config reading the toy at `root`, with `sections` merged in."""
    cfg = {
        "data": {
            "dataset": "voc",
            "root": str(root),
            "labeled_split": str(root / "splits/labeled.txt"),
            "val_split": str(root / "splits/val.txt"),
            "num_classes": 6,
            "crop_size": 32,
            "long_side": [32, 48],
            "num_workers": 0,
        },
        "model": {"encoder": "resnet18", "backbone_width": 8, "decoder_channels": 16, "pretrained": ""},
        "train": {"epochs": 1, "batch_size": 2, "image_every": 0},
    }
    for section, values in sections.items():
        cfg[section] |= values
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(*args: str) -> int:
    return train_cli.main([*args, "--device", "cpu"])


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))
    }


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ------------------------------------------------------------------------------------------ imas-train


def test_a_bad_config_value_creates_nothing(tmp_path, toy_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "exps/toy/x.yaml", toy_root)
    assert train("--config", str(config), "--opt", "train.epochs=0") == 2
    assert "train.epochs" in error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_missing_data_removes_the_run_directory_and_runs(tmp_path, toy_root, monkeypatch, capsys):
    """The default run directory runs/toy/x: every folder of it was made by this start, and goes."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "exps/toy/x.yaml", toy_root, data={"root": str(tmp_path / "none")})
    assert train("--config", str(config)) == 2
    assert str(tmp_path / "none") in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exps"]


def test_a_missing_pretrained_file_removes_only_what_the_start_made(tmp_path, toy_root, capsys):
    """runs/ existed (another run in it): only the new run directory goes."""
    other = tmp_path / "runs/other"
    other.mkdir(parents=True)
    (other / "train.log").write_text("another run\n")
    config = write_config(tmp_path / "x.yaml", toy_root, model={"pretrained": str(tmp_path / "r18.pth")})
    assert train("--config", str(config), "--run-dir", str(tmp_path / "runs/new/x")) == 2
    assert "r18.pth" in error_line(capsys)
    assert tree(tmp_path / "runs") == {"other": None, "other/train.log": b"another run\n"}


def test_an_existing_folder_keeps_what_it_held(tmp_path, toy_root, capsys):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("my notes")
    (run_dir / "train.log").write_text("an attempt that crashed\n")
    config = write_config(tmp_path / "x.yaml", toy_root, data={"root": str(tmp_path / "none")})
    assert train("--config", str(config), "--run-dir", str(run_dir)) == 2
    error_line(capsys)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt", "train.log"]  # no config.yaml, no lock
    assert (run_dir / "notes.txt").read_text() == "my notes"
    assert (run_dir / "train.log").read_text().startswith("an attempt that crashed\n")  # appended to, kept


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, toy_root, capsys):
    config = write_config(tmp_path / "x.yaml", toy_root)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(load_experiment(config), run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text("")
    stored = {"config": to_dict(load_experiment(config, ["train.seed=5"])), "epoch": 1}
    torch.save(stored, run_dir / "latest.pth")
    before = tree(run_dir)
    assert train("--config", str(config), "--run-dir", str(run_dir)) == 2
    assert "train.seed 5 -> 0" in error_line(capsys)
    assert tree(run_dir) == before


def test_a_run_directory_in_use_is_left_alone(tmp_path, toy_root, capsys):
    """Refused at the lock: the other run's files, those made while this start waited included, stay."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    held = RunLock.acquire(run_dir)
    try:
        (run_dir / "train.log").write_text("the other run\n")
        config = write_config(tmp_path / "x.yaml", toy_root)
        before = tree(run_dir)
        assert train("--config", str(config), "--run-dir", str(run_dir)) == 2
        assert "is in use by" in error_line(capsys)
        assert tree(run_dir) == before and (run_dir / LOCK_NAME).exists()
    finally:
        held.release()


def test_ctrl_c_before_training_leaves_nothing(tmp_path, toy_root, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        assert (tmp_path / "runs/x/config.yaml").is_file() and (tmp_path / "runs/x/train.log").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "announce", interrupt)  # once config.yaml and train.log are written
    config = write_config(tmp_path / "x.yaml", toy_root)
    assert train("--config", str(config), "--run-dir", str(tmp_path / "runs/x")) == 130
    assert not (tmp_path / "runs").exists()


def test_a_start_that_began_training_keeps_its_files(tmp_path, toy_root, monkeypatch, capsys):
    def fail(run):
        raise UserError("stopped in the first epoch")

    monkeypatch.setattr(train_cli, "fit", fail)
    config = write_config(tmp_path / "x.yaml", toy_root)
    run_dir = tmp_path / "runs/x"
    assert train("--config", str(config), "--run-dir", str(run_dir)) == 2
    assert error_line(capsys) == "error: stopped in the first epoch"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert not (run_dir / LOCK_NAME).exists()


def test_start_undo_removes_only_new_entries_and_empty_folders(tmp_path):
    run_dir = tmp_path / "a/b/run"
    start = StartUndo(run_dir)
    (tmp_path / "a").mkdir()
    start.make_folders()
    assert start.made == [tmp_path / "a/b", run_dir]
    start.locked(exclusive=True)
    (run_dir / "config.yaml").write_text("x")
    (run_dir / "events.out.tfevents.1.host.2.0").write_text("x")
    (run_dir / "hardness.csv").write_text("image_id,epoch,iteration,hardness\n")
    (tmp_path / "a/b/sibling").write_text("another run's")  # made meanwhile beside the run directory
    start.remove_files()
    start.remove_folders()
    assert tree(tmp_path) == {"a": None, "a/b": None, "a/b/sibling": b"another run's"}


def test_start_undo_leaves_what_another_program_added_during_the_start(tmp_path):
    """Only files of the names training writes go: a folder, a user's file or a CSV of another header that
    appeared in the run directory while the start ran stay, and with them the run directory."""
    run_dir = tmp_path / "run"
    start = StartUndo(run_dir)
    start.make_folders()
    start.locked(exclusive=True)
    (run_dir / "train.log").write_text("x")
    (run_dir / "sub").mkdir()
    (run_dir / "sub/f").write_text("x")
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "table.csv").write_text("class,iou\n")
    start.remove_files()
    start.remove_folders()
    assert tree(tmp_path) == {
        "run": None,
        "run/sub": None,
        "run/sub/f": b"x",
        "run/notes.txt": b"mine",
        "run/table.csv": b"class,iou\n",
    }


@pytest.mark.parametrize("why", ["a checkpoint", "no exclusive lock", "training began"])
def test_start_undo_keeps_everything_where_it_must(tmp_path, why):
    run_dir = tmp_path / "run"
    start = StartUndo(run_dir)
    start.make_folders()
    if why == "a checkpoint":
        (run_dir / "latest.pth").write_bytes(b"x")
    start.locked(exclusive=why != "no exclusive lock")
    (run_dir / "best.pth").write_bytes(b"repaired")
    if why == "training began":
        start.began()
    start.remove_files()
    start.remove_folders()
    assert (run_dir / "best.pth").read_bytes() == b"repaired"


# ------------------------------------------------------------------------ commands with an output folder


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "photos/a.png"
    path.parent.mkdir()
    Image.new("RGB", (8, 8)).save(path)
    return path


def test_predict_without_its_checkpoint_leaves_no_output_folder(tmp_path, image, monkeypatch, capsys):
    from imas.entry import predict

    monkeypatch.chdir(tmp_path)
    assert predict(["--checkpoint", "runs/x/best.pth", "--input", str(image)]) == 2
    assert "runs/x/best.pth does not exist" in error_line(capsys)
    assert not (tmp_path / "runs").exists()  # runs/predictions/x_best and its parents
    out = tmp_path / "new/out"
    assert predict(["--checkpoint", "none.pth", "--input", str(image), "--output", str(out)]) == 2
    error_line(capsys)
    assert not (tmp_path / "new").exists()


def test_eval_and_pseudo_labels_without_data_leave_no_output_folder(tmp_path, checkpoint, capsys):
    from imas.entry import evaluate, pseudo_labels

    config = str(checkpoint.parent / "c.yaml")
    common = ["--config", config, "--checkpoint", str(checkpoint), "--device", "cpu"]
    nowhere = ["--opt", f"data.root={tmp_path / 'none'}"]
    assert evaluate([*common, *nowhere, "--output", str(tmp_path / "new/deep/r.json")]) == 2
    error_line(capsys)
    assert pseudo_labels([*common, *nowhere, "--output", str(tmp_path / "new/p.json")]) == 2
    assert "has a mask" in error_line(capsys)
    assert not (tmp_path / "new").exists()


def test_report_compare_and_splits_refusals_leave_no_output_folder(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from imas.entry import compare, data, report

    empty = tmp_path / "empty"
    empty.mkdir()
    assert report([str(empty), "--out", str(tmp_path / "new/r.html")]) == 2
    error_line(capsys)
    assert (
        compare([str(empty), "--out", str(tmp_path / "new/t.md"), "--csv", str(tmp_path / "new2/t.csv")]) == 2
    )
    error_line(capsys)
    assert data(["splits", "pascal", "--out", str(tmp_path / "new/lists")]) == 2
    assert "--voc" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
