from pathlib import Path

import pytest
import yaml

from imas.config import (
    Config,
    LossKind,
    Method,
    Precision,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from imas.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_and_types(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  method: supervised\n  epochs: 3\noptim:\n  lr: 1e-3\n"))
    assert cfg.train.method is Method.supervised
    assert cfg.train.epochs == 3
    assert cfg.optim.lr == pytest.approx(1e-3)  # "1e-3" is a string to PyYAML; the schema makes it a float
    assert cfg.data.crop_size == Config().data.crop_size


def test_empty_file_gives_defaults(tmp_path):
    assert to_dict(load_config(write(tmp_path, ""))) == to_dict(Config())


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("data:\n  crop_sise: 321\n", ["data.crop_sise", "crop_size"]),
        ("trian:\n  epochs: 1\n", ["trian", "valid keys", "train"]),
        ("data:\n  crop_size: big\n", ["data.crop_size", "'big'", "integer"]),
        ("train:\n  epochs: 2.5\n", ["train.epochs", "2.5", "integer"]),
        ("train:\n  channels_last: 1\n", ["train.channels_last", "true or false"]),
        ("loss:\n  kind: focal\n", ["loss.kind", "focal", "ce | ohem"]),
        ("train:\n  method: fixmatch\n", ["train.method", "supervised | imas"]),
        ("eval:\n  scales: 1.0\n", ["eval.scales", "list"]),
        ("data: [1, 2]\n", ["data", "mapping"]),
        ("data:\n  crop_size: 0\n", ["data.crop_size", "at least 1"]),
        ("model:\n  output_stride: 32\n", ["model.output_stride", "8 or 16"]),
        ("model:\n  backbone_width: 0\n", ["model.backbone_width", "at least 1"]),
        ("data:\n  num_classes: 3\n  class_names: [a, b]\n", ["class_names", "num_classes"]),
        ("data:\n  crop_size: [\n", ["not valid YAML"]),
        ("train:\n  method: imas\ndata:\n  unlabeled_split: ''\n", ["imas", "data.unlabeled_split"]),
        ("semi:\n  threshold: 1.5\n", ["semi.threshold", "(0, 1)"]),
        ("semi:\n  adaptive: strongest\n", ["semi.adaptive", "mix | select | magnitude | none"]),
        ("semi:\n  ema_decay: 1.2\n", ["semi.ema_decay", "[0, 1]", "1.2"]),
        ("semi:\n  cutmix_p: -0.1\n", ["semi.cutmix_p", "[0, 1]", "-0.1"]),
        ("semi:\n  magnitude: 2\n", ["semi.magnitude", "[0, 1]", "2"]),
        ("semi:\n  lambda_u: -1\n", ["semi.lambda_u", ">= 0", "-1"]),
        ("semi:\n  group_size: 0\n", ["semi.group_size", "at least 1", "0"]),
        ("semi:\n  num_ops: -2\n", ["semi.num_ops", ">= 0", "-2"]),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, needles):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_typed(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.001\n")
    cfg = load_config(
        path,
        [
            "optim.lr=0.01",
            "train.epochs=7",
            "train.precision=bf16",
            "train.channels_last=true",
            "eval.scales=[0.75, 1, 1.25]",
            "data.root=/data/voc 2012",
            "loss.kind=ohem",
            "data.class_names=[a, b, c]",
            "data.num_classes=3",
        ],
    )
    assert cfg.optim.lr == 0.01
    assert cfg.train.epochs == 7
    assert cfg.train.precision is Precision.bf16
    assert cfg.train.channels_last is True
    assert cfg.eval.scales == [0.75, 1.0, 1.25]
    assert all(isinstance(s, float) for s in cfg.eval.scales)
    assert cfg.data.root == "/data/voc 2012"
    assert cfg.loss.kind is LossKind.ohem
    assert cfg.data.class_names == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.lrr=1", "optim.lrr"),
        ("optim.lr=fast", "optim.lr"),
        ("nosuch.key=1", "nosuch"),
        ("optim=1", "whole section"),
        ("optim.lr", "section.key=value"),
        ("optim.lr.x=1", "not a section"),
        ("train.epochs=true", "train.epochs"),
    ],
)
def test_bad_overrides(tmp_path, override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(write(tmp_path, ""), [override])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  epochs: 5\n"), ["eval.flip=true", "train.precision=fp16"])
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert to_dict(again) == to_dict(cfg)
    assert from_dict(yaml.safe_load(out.read_text())) == cfg


@pytest.mark.parametrize("path", sorted((REPO / "exps").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(path)
