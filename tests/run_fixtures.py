"""Tiny real training runs for the tests of the tools that read run directories (imas-report,
imas-compare): a few seconds each on a CPU, made once per test session and shared (the two forms of a
run directory's records those tools read are made from copies of them by run_forms.py).

The model is the toy's ResNet-18 shrunk to a few channels and the images to 32-pixel crops: the numbers mean
nothing, but every file a run directory holds (config.yaml, train.log, metrics.jsonl, train_scalars.jsonl,
TensorBoard events, hardness.csv, latest.pth, best.pth) is written by the real training loop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import FEW_STEP_SECTIONS, toy_data

from imas import train as train_cli

# Settings that let the teacher-student methods' few steps see confident pixels and whole CutMix groups.
METHOD_SECTIONS = {
    name: {"threshold": 0.182, "group_size": 2, "class_weighted": False} for name in ("imas", "mean_teacher")
}
# U2PL's representation head and queues that fill in a few steps.
MODEL_SECTIONS = {"u2pl": FEW_STEP_SECTIONS["u2pl"]}


def tiny_config(folder: Path, toy: Path, method: str) -> Path:
    """A config training `method` for 2 epochs of 4 iterations on the `toy` fixture's short split lists."""
    cfg = {
        "data": toy_data(toy, "small_", crop_size=32, long_side=[32, 48], num_workers=0),
        "model": {"encoder": "resnet18", "output_stride": 16, "backbone_width": 8, "decoder_channels": 16},
        "optim": {"lr": 0.01, "decoder_lr_mult": 1.0},
        "train": {
            "method": method,
            "epochs": 2,
            "batch_size": 4,
            "log_every": 2,
            "eval_every": 1,
            "image_every": 0,
        },
    }
    if method in METHOD_SECTIONS:
        cfg[method] = METHOD_SECTIONS[method]
    for section, values in MODEL_SECTIONS.get(method, {}).items():
        cfg.setdefault(section, {}).update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_run(folder: Path, toy: Path, method: str) -> Path:
    """Train `method` into folder/<method>/run and return that run directory."""
    config = tiny_config(folder / method, toy, method)
    run_dir = folder / method / "run"
    code = train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"])
    assert code == 0, f"the tiny {method} run failed"
    return run_dir


@pytest.fixture(scope="session")
def tiny_runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_runs")


@pytest.fixture(scope="session")
def imas_run(tiny_runs_dir, toy) -> Path:
    """A tiny iMAS run directory (teacher and student, hardness.csv), trained once per session."""
    return tiny_run(tiny_runs_dir, toy, "imas")


@pytest.fixture(scope="session")
def suponly_run(tiny_runs_dir, toy) -> Path:
    """A tiny SupOnly run directory (one model, no unlabeled data), trained once per session."""
    return tiny_run(tiny_runs_dir, toy, "supervised")
