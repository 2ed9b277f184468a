"""A run's result depends only on what trains it: evaluating (how often, with or without panels) leaves the
trained weights bit for bit as they are, and a split file edited between a stop and a resume is noticed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from run_fixtures import tiny_config

from imas import train as train_cli
from imas.checkpoint import load_checkpoint


def _train(config: Path, run_dir: Path, *opts: str) -> int:
    args = ["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]
    flags = [opt for opt in opts if opt.startswith("--")]
    return train_cli.main(args + flags + [arg for opt in opts if "=" in opt for arg in ("--opt", opt)])


def _tensors(node: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint's nested dicts and lists, by its path."""
    if isinstance(node, torch.Tensor):
        return {prefix: node}
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return {k: v for key, value in items for k, v in _tensors(value, f"{prefix}.{key}").items()}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The models, optimiser, scaler and RNG states of latest.pth (not its config, times or best)."""
    ckpt = load_checkpoint(run_dir / "latest.pth")
    return _tensors({key: value for key, value in ckpt.items() if key not in ("config", "best_miou")})


@pytest.mark.slow
def test_eval_every_and_panels_leave_the_trained_weights_unchanged(tmp_path, toy):
    """Evaluating after epoch 1 (with the eval panel) or only at the end trains the same weights."""
    config = tiny_config(tmp_path, toy, "imas")
    often, rarely = tmp_path / "often", tmp_path / "rarely"
    assert _train(config, often, "train.eval_every=1", "train.image_every=1") == 0
    assert _train(config, rarely, "train.eval_every=2", "train.image_every=0") == 0
    a, b = _weights(often), _weights(rarely)
    assert a.keys() == b.keys()
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    # The runs did differ in what they evaluated: one line per evaluation in metrics.jsonl.
    assert len((often / "metrics.jsonl").read_text().splitlines()) == 2
    assert len((rarely / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_a_split_edited_between_stop_and_resume_is_refused_unless_accepted(tmp_path, toy, capsys):
    config = tiny_config(tmp_path, toy, "supervised")
    cfg = yaml.safe_load(config.read_text())
    labeled = tmp_path / "labeled.txt"  # a copy: the toy's own lists are shared by every test
    labeled.write_text(Path(cfg["data"]["labeled_split"]).read_text())
    cfg["data"]["labeled_split"] = str(labeled)
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    assert _train(config, run_dir) == 0
    assert _train(config, run_dir) == 0  # the same files: the finished run is resumed (nothing to do)
    labeled.write_text("\n".join(labeled.read_text().split()[:-1]) + "\n")  # one image fewer, same path
    capsys.readouterr()
    assert _train(config, run_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run made under other settings" in err[0]
    assert "data.labeled_split contents sha256 " in err[0] and "--resume-anyway" in err[0]
    assert _train(config, run_dir, "--resume-anyway") == 0
    log = (run_dir / "train.log").read_text()
    assert "resuming under changed settings (--resume-anyway): data.labeled_split contents" in log
