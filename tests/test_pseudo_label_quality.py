"""imas-pseudo-labels: exact counts on a hand-made case; end to end it agrees with eval; bad input is one
sentence with exit status 2, before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import toy_data

from imas import pseudo_labels as plq
from imas.checkpoint import save_checkpoint
from imas.config import load_config, to_dict
from imas.data import build_datasets, build_val_loader
from imas.data.toy import make_toy_dataset
from imas.dist import init_distributed
from imas.inference import evaluate_model
from imas.models import build_model


def test_confident_confusion_and_summary_by_hand() -> None:
    # 1 x 4 pixels, 3 classes: confident correct bg, confident object called bg, unconfident, ignored.
    probs = torch.tensor([[0.9, 0.8, 0.4, 0.9], [0.05, 0.1, 0.35, 0.05], [0.05, 0.1, 0.25, 0.05]])
    probs = probs.view(3, 1, 4)
    label = torch.tensor([[0, 1, 2, 255]])
    confusion, gt = plq.confident_confusion(probs, label, threshold=0.75, num_classes=3)
    assert gt.tolist() == [1, 1, 1]
    assert confusion.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    report = plq.summarize(confusion.numpy(), gt.numpy(), ["bg", "a", "b"])
    assert (report["coverage"], report["precision"]) == (round(2 / 3, 4), 0.5)
    assert (report["object_coverage"], report["object_precision"]) == (0.5, 0.0)
    assert report["object_called_background"] == 0.5
    assert report["per_class"]["b"] == {"pixels": 1, "coverage": 0.0, "correct": None}


@pytest.mark.slow
def test_end_to_end_matches_the_evaluation_metric(tmp_path: Path, capsys) -> None:
    root = make_toy_dataset(tmp_path / "toy", sizes={"labeled": 2, "unlabeled": 3, "val": 4})
    config = tmp_path / "c.yaml"
    data = toy_data(root, num_workers=0)
    model = {"encoder": "resnet18", "stem": "standard", "decoder_channels": 16}
    config.write_text(yaml.safe_dump({"data": data, "model": model, "train": {"method": "imas"}}))
    cfg = load_config(config)
    info = init_distributed("cpu")
    torch.manual_seed(0)
    net = build_model(cfg, info, pretrained=False).eval()
    checkpoint = tmp_path / "latest.pth"
    save_checkpoint(
        {"config": to_dict(cfg), "model": net.state_dict(), "teacher": net.state_dict()}, checkpoint
    )

    # A threshold below 1/K makes every pixel confident: the precision is then the pixel accuracy.
    out = tmp_path / "q.json"
    args = ["--config", str(config), "--checkpoint", str(checkpoint), "--device", "cpu", "--output", str(out)]
    assert plq.main([*args, "--threshold", "0.1"]) == 0
    result = json.loads(out.read_text())
    loader = build_val_loader(cfg.data, build_datasets(cfg.data, with_unlabeled=False).val, 0, 1)
    accuracy = evaluate_model(cfg, net, loader, info.device).pixel_accuracy()
    assert result["images"] == 4 and result["coverage"] == 1.0
    assert result["precision"] == pytest.approx(accuracy, abs=1e-4)
    captured = capsys.readouterr()
    assert "object pixels confidently called background" in captured.out and "4/4" not in captured.out
    assert captured.err.startswith(
        "pseudo-labels 4/4 images (100%), "
    )  # progress on stderr, not in the report

    assert plq.main([*args, "--split", "unlabeled", "--threshold", "0.5"]) == 0  # the toy's held-back masks
    assert json.loads(out.read_text())["images"] == 3
    capsys.readouterr()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad = {
        ("--threshold", "1.5"): "--threshold must be in (0, 1), got 1.5",
        ("--limit", "-1"): "--limit must be >= 0 (0: every image), got -1",
        ("--split", "labeled", "--opt", "data.labeled_split="): "data.labeled_split must name a split file",
        ("--output", str(blocker / "q.json")): f"--output {blocker / 'q.json'} cannot be written",
    }
    for extra, message in bad.items():
        assert plq.main([*args, *extra]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1, extra
        assert captured.out == ""  # said before any image was predicted
