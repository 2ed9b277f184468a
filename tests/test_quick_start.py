"""The quick start (sh single_run.sh): phases that name themselves, two trainings side by side, closing lines
that state the gain this very command measured."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from imas.rundir import epoch_means, miou_of, read_evaluations
from tools import quick_start

TINY_PRETRAIN = ["--images", "24", "--val-images", "12", "--size", "32", "--steps", "2", "--batch", "8"]


def write_run(run_dir: Path, mious: list[float], model: str, windows: list[tuple[int, dict]] = ()) -> None:
    """metrics.jsonl and train_scalars.jsonl ((epoch, scalars) per logging window), as a training writes
    them."""
    run_dir.mkdir(parents=True)
    records = [
        {"epoch": 8 * (i + 1), "iteration": 1200 * (i + 1), "model": model, "miou": miou, "iou": {}}
        for i, miou in enumerate(mious)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = [
        json.dumps({"epoch": epoch, "iteration": 25 * (i + 1), "lr": 1e-3, "scalars": scalars})
        for i, (epoch, scalars) in enumerate(windows)
    ]
    (run_dir / "train_scalars.jsonl").write_text("".join(line + "\n" for line in lines))


def test_the_closing_lines_state_both_numbers_the_gain_and_where_the_runs_are(tmp_path, monkeypatch):
    monkeypatch.setattr(quick_start, "hardware", lambda: "a 2-core test CPU")
    window = {"easiness": 0.2, "cutmix_rate": 0.5, "confident": 0.6, "loss": 1.0}
    trainings = [
        quick_start.Training("SupOnly", "exps/toy/suponly.yaml", tmp_path / "suponly", tmp_path / "s.txt"),
        quick_start.Training("iMAS", "exps/toy/imas.yaml", tmp_path / "imas", tmp_path / "i.txt"),
    ]
    write_run(trainings[0].run_dir, [0.40, 0.5012], "student")
    windows = [(1, window), (1, window | {"easiness": 0.4}), (8, window)]
    write_run(trainings[1].run_dir, [0.45, 0.5587], "teacher", windows)
    text = quick_start.summary(trainings, {"data": 2.0, "backbone": 40.0, "training": 300.4}, 600, 64)
    assert (
        "quick start done in 0:05:42 (data 0:00:02, backbone 0:00:40, training 0:05:00) on a 2-core test CPU"
        in text
    )
    assert "iMAS teacher 55.9 vs SupOnly 50.1 (+5.8) with 600 unlabeled images (64 labeled;" in text
    assert "after 16 epochs" in text
    rows = [line.split() for line in text.splitlines() if re.match(r"^\s+\d+\s+\d", line)]
    assert rows == [
        ["1", "0.300", "0.500", "0.600"],
        ["8", "0.200", "0.500", "0.600"],
    ]  # epoch 1: two windows
    assert f"runs: {trainings[0].run_dir}, {trainings[1].run_dir}" in text
    assert f"imas-compare {trainings[0].run_dir} {trainings[1].run_dir}" in text


def test_progress_comes_from_the_last_progress_line_of_train_log(tmp_path):
    training = quick_start.Training("iMAS", "exps/toy/imas.yaml", tmp_path, tmp_path / "i.txt")
    assert training.progress() == "iMAS starting"
    (tmp_path / "train.log").write_text(
        "2026-12-06 09:33:20 INFO epoch 1/24 it 25/3600 7.92 it/s eta 0:07:31 lr 0.001 loss_x 1.5\n"
        "2026-12-06 09:33:23 INFO epoch 1/24 it 50/3600 8.11 it/s eta 0:07:18 lr 0.001 loss_x 1.1\n"
        "2026-12-06 09:33:24 INFO epoch 1 eval teacher mIoU 30.00\n"
    )
    assert training.progress() == "iMAS it 50/3600 8.11 it/s eta 0:07:18"


def test_epoch_means_average_each_epochs_windows_and_skip_broken_lines(tmp_path):
    path = tmp_path / "train_scalars.jsonl"
    path.write_text(
        '{"epoch": 1, "iteration": 25, "scalars": {"easiness": 0.2, "loss": 2}}\n'
        '{"epoch": 1, "iteration": 50, "scalars": {"easiness": 0.4, "loss": 1}}\n'
        "not json\n"
        '{"epoch": 2, "iteration": 75, "scalars": {"easiness": 0.5}}\n'
        '{"epoch": 3, "iteration": 1'
    )
    means = epoch_means(path)
    assert list(means) == [1, 2] and means[1] == pytest.approx({"easiness": 0.3, "loss": 1.5})
    assert means[2] == {"easiness": 0.5} and epoch_means(tmp_path / "missing.jsonl") == {}


def tiny_options(tmp_path: Path) -> list[str]:
    return [
        f"data.root={tmp_path / 'toy'}",
        f"model.pretrained={tmp_path / 'r18_w8.pth'}",
        "model.backbone_width=8",
        "model.decoder_channels=16",
        "train.epochs=1",
        "train.eval_every=1",
        "train.batch_size=8",
        "train.log_every=25",
        "train.image_every=0",
    ]


@pytest.mark.slow
def test_a_tiny_quick_start_runs_every_phase_and_reports_the_gain_it_measured(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(quick_start, "PRETRAIN_SETTINGS", TINY_PRETRAIN)
    runs = tmp_path / "runs"
    assert quick_start.main(["--runs", str(runs), "--opt", *tiny_options(tmp_path)]) == 0
    out = capfd.readouterr().out  # the phases' own commands print to the process's stdout
    phases = [line for line in out.splitlines() if re.match(r"^\[\d/3\] ", line)]
    assert [p[:5] for p in phases] == ["[1/3]", "[2/3]", "[3/3]"]
    assert "toy backbone: pretraining ResNet-18 width 8" in out  # the pretraining names itself
    finals = {name: 100 * miou_of(read_evaluations(runs / name)[-1]) for name in ("suponly", "imas")}
    gain = (
        f"{finals['imas']:.1f} vs SupOnly {finals['suponly']:.1f} ({finals['imas'] - finals['suponly']:+.1f})"
    )
    assert f"iMAS teacher {gain} with 600 unlabeled images (64 labeled;" in out
    assert f"runs: {runs / 'suponly'}, {runs / 'imas'}" in out
    assert re.search(r"^\s+1\s+\d\.\d{3}\s+\d\.\d{3}\s+\d\.\d{3}$", out, re.M)  # epoch 1's adaptive parts


@pytest.mark.slow
def test_bad_input_in_a_training_is_its_one_sentence(tmp_path, capsys, monkeypatch):
    """A training that refuses its input (here a missing split file) ends the quick start with that sentence,
    exit status 2, as the training alone would."""
    monkeypatch.setattr(quick_start, "PRETRAIN_SETTINGS", TINY_PRETRAIN)
    config = tmp_path / "suponly.yaml"
    config.write_text(
        Path("exps/toy/suponly.yaml").read_text().replace("splits/toy/labeled.txt", "no/such.txt")
    )
    monkeypatch.setitem(quick_start.CONFIGS, "SupOnly", str(config))
    code = quick_start.main(["--runs", str(tmp_path / "runs"), "--opt", *tiny_options(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "no/such.txt" in err


@pytest.mark.slow
def test_a_crashing_training_stops_the_other_and_shows_its_last_lines(tmp_path, capsys, monkeypatch):
    """A training that crashes (exit status 3 here, from a stand-in interpreter) stops the quick start with
    exit status 1 and its last lines, and the other training is stopped, not left running."""
    fake = tmp_path / "python"
    fake.write_text(
        f"#!/bin/sh\n"
        f'case "$*" in *imas.train*suponly*) echo "Traceback: it broke"; exit 3 ;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setattr(quick_start, "PRETRAIN_SETTINGS", TINY_PRETRAIN)
    runs = tmp_path / "runs"
    code = quick_start.main(["--runs", str(runs), "--opt", *tiny_options(tmp_path), "train.epochs=3"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: SupOnly (exps/toy/suponly.yaml) failed with exit code 3; its last lines:\n")
    assert "  Traceback: it broke" in err
    assert read_evaluations(runs / "imas") == []  # stopped long before its first evaluation


def test_a_config_pair_that_disagrees_is_one_sentence(tmp_path, capsys, monkeypatch):
    config = tmp_path / "suponly.yaml"
    config.write_text(Path("exps/toy/suponly.yaml").read_text().replace("root: data/toy", "root: data/other"))
    monkeypatch.setitem(quick_start.CONFIGS, "SupOnly", str(config))
    assert quick_start.main(["--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {config} and exps/toy/imas.yaml must read the same data.root and model.pretrained\n"
    )
