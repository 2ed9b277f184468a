import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imas.config import (
    Config,
    LossKind,
    Precision,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from imas.errors import ConfigError
from imas.experiment import experiment_from_dict, load_experiment

REPO = Path(__file__).resolve().parents[1]


# An iMAS config head, for errors in the imas section.
IMAS = "train:\n  method: imas\ndata:\n  unlabeled_split: u.txt\nimas:\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_and_types(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  method: supervised\n  epochs: 3\noptim:\n  lr: 1e-3\n"))
    assert cfg.train.method == "supervised"
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
        ("train:\n  method: fixmatsch\n", ["train.method", "fixmatsch", "supervised, mean_teacher, imas"]),
        ("eval:\n  scales: 1.0\n", ["eval.scales", "list"]),
        ("data: [1, 2]\n", ["data", "mapping"]),
        ("data:\n  crop_size: 0\n", ["data.crop_size", "at least 1"]),
        ("model:\n  output_stride: 32\n", ["model.output_stride", "8 or 16"]),
        ("model:\n  backbone_width: 0\n", ["model.backbone_width", "at least 1"]),
        ("data:\n  num_classes: 3\n  class_names: [a, b]\n", ["class_names", "num_classes"]),
        ("data:\n  crop_size: [\n", ["not valid YAML"]),
        ("train:\n  method: imas\ndata:\n  unlabeled_split: ''\n", ["imas", "data.unlabeled_split"]),
        (IMAS + "  threshold: 1.5\n", ["imas.threshold", "(0, 1)"]),
        (IMAS + "  adaptive: strongest\n", ["imas.adaptive", "mix | select | magnitude | none"]),
        (IMAS + "  ema_decay: 1.2\n", ["imas.ema_decay", "[0, 1]", "1.2"]),
        (IMAS + "  cutmix_p: -0.1\n", ["imas.cutmix_p", "[0, 1]", "-0.1"]),
        (IMAS + "  magnitude: 2\n", ["imas.magnitude", "[0, 1]", "2"]),
        (IMAS + "  lambda_u: -1\n", ["imas.lambda_u", ">= 0", "-1"]),
        (IMAS + "  group_size: 0\n", ["imas.group_size", "at least 1", "0"]),
        (IMAS + "  num_ops: -2\n", ["imas.num_ops", ">= 0", "-2"]),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, needles):
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, text))
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
    load_experiment(path)


def test_the_schema_reads_without_torch_or_the_code_a_config_names(tmp_path):
    """imas.config sits below the methods and models: it imports neither (nor torch), so it checks no
    name they define; imas.experiment adds those checks."""
    code = "import imas.config, sys; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = set(loaded.split())
    assert not names & {"torch", "imas.methods", "imas.models"}, sorted(n for n in names if "imas" in n)
    path = write(tmp_path, "train:\n  method: fixmatsch\nmodel:\n  encoder: resnet34\n")
    assert load_config(path).train.method == "fixmatsch"
    with pytest.raises(ConfigError, match="model.encoder 'resnet34' is unknown"):
        load_experiment(path)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.method=fixmatsch", "train.method 'fixmatsch' is unknown; valid methods: supervised,"),
        ("model.encoder=resnet34", "model.encoder 'resnet34' is unknown; valid encoders: resnet18,"),
        ("train.method=fixmatch", "train.method fixmatch needs an unlabeled split"),
        ("train.batch_size=1", "train.method supervised needs train.batch_size >= 2"),
    ],
)
def test_a_stored_config_gets_the_same_name_checks(override, needle):
    """A config rebuilt from a checkpoint (imas-predict without --config, imas-report) is checked like
    a file: the same sentences."""
    stored = to_dict(Config())
    assert experiment_from_dict(stored) == Config()
    with pytest.raises(ConfigError, match=needle):
        experiment_from_dict(stored, [override])


# ------------------------------------------------------------------------------ bad numbers, one sentence


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("optim:\n  decoder_lr_mult: -1\n", ["optim.decoder_lr_mult", ">= 0", "-1"]),
        ("optim:\n  poly_power: 0\n", ["optim.poly_power", "> 0", "0"]),
        ("optim:\n  poly_power: -0.5\n", ["optim.poly_power", "> 0", "-0.5"]),
        ("optim:\n  lr: .nan\n", ["optim.lr", "finite", "nan"]),
        ("optim:\n  lr: .inf\n", ["optim.lr", "finite", "inf"]),
        ("optim:\n  momentum: 1.0\n", ["optim.momentum", "[0, 1)", "1.0"]),
        ("optim:\n  momentum: -0.1\n", ["optim.momentum", "[0, 1)", "-0.1"]),
        ("optim:\n  weight_decay: -1e-4\n", ["optim.weight_decay", ">= 0", "-0.0001"]),
        ("model:\n  encoder: resnet34\n", ["model.encoder", "'resnet34'", "resnet18, resnet50, resnet101"]),
        ("model:\n  backbone: resnet50\n", ["model.backbone", "now named model.encoder"]),
        ("loss:\n  ohem_thresh: .nan\n", ["loss.ohem_thresh", "finite"]),
        ("data:\n  scale_range: [0.5, .inf]\n", ["data.scale_range[1]", "finite"]),
        ("eval:\n  scales: [1.0, -.inf]\n", ["eval.scales[1]", "finite"]),
    ],
)
def test_bad_numbers_name_the_key(tmp_path, text, needles):
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize(
    ("override", "needle"),
    [("optim.lr=inf", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("imas.lambda_u=inf", "imas.lambda_u")],
)
def test_non_finite_overrides(tmp_path, override, needle):
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, ""), ["train.method=imas", "data.unlabeled_split=u.txt", override])
    assert f"{needle} must be a finite number" in str(info.value)


def test_decoder_lr_mult_zero_freezes_the_decoder_and_is_allowed(tmp_path):
    assert load_config(write(tmp_path, "optim:\n  decoder_lr_mult: 0\n")).optim.decoder_lr_mult == 0.0


# ------------------------------------------------------------------------------------ YAML hazards


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("optim:\n  lr: 0.1\n  momentum: 0.5\n  lr: 0.2\n", ["duplicate key 'lr'", "line 4", "line 2"]),
        (
            "optim:\n  lr: 0.1\ntrain:\n  epochs: 2\noptim:\n  momentum: 0.5\n",
            ["duplicate key 'optim'", "line 5"],
        ),
        ("data: {crop_size: 3, crop_size: 4}\n", ["duplicate key 'crop_size'", "line 1"]),
    ],
)
def test_duplicate_keys_are_errors(tmp_path, text, needles):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_anchors_and_aliases_still_work(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  scale_range: &r [0.5, 2.0]\neval:\n  scales: *r\n"))
    assert cfg.eval.scales == [0.5, 2.0]


def billion_laughs(levels: int, width: int = 9) -> str:
    """A list whose item k repeats item k - 1 `width` times: width**levels strings once aliases expand."""
    items = [f"&a0 [{', '.join(['lol'] * width)}]"]
    items += [f"&a{k} [{', '.join([f'*a{k - 1}'] * width)}]" for k in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


def test_alias_bomb_is_refused_in_a_short_message(tmp_path):
    # 9**6 = 531441 strings once expanded: today the error message alone is megabytes long.
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"data:\n  crop_size: {billion_laughs(6)}\n"))
    message = str(info.value)
    assert len(message) < 300 and "alias" in message, message[:300]


def test_recursive_alias_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "data:\n  class_names: &a [x, *a]\n"))
    message = str(info.value)
    assert len(message) < 300 and "alias" in message, message[:300]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "optim:\n  lr: !!python/object/apply:os.system ['true']\n",
            ["!!python/object/apply:os.system", "line 2"],
        ),
        ("data:\n  root: !!python/name:os.system\n", ["!!python/name:os.system", "line 2"]),
        ("data:\n  root: !custom x\n", ["!custom", "line 2"]),
    ],
)
def test_unsupported_tags_are_named(tmp_path, text, needles):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "unsupported YAML tag" in message and "not valid YAML" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("optim.lr=!!python/object/apply:os.system ['true']", ["unsupported YAML tag", "!!python/object"]),
        ("data.scale_range={a: 1, a: 2}", ["duplicate key 'a'"]),
        ("data.class_names=&a [x, *a]", ["alias"]),
    ],
)
def test_overrides_get_the_same_yaml_checks(tmp_path, override, needles):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), [override])
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


@pytest.mark.parametrize(
    ("text", "overrides"),
    [
        ("data:\n  crop_size: '" + "x" * 5000 + "'\n", []),
        ("data: [" + ", ".join(["1"] * 3000) + "]\n", []),
        ("data:\n  long_side: [" + ", ".join(["1"] * 3000) + "]\n", []),
        ("", ["optim.lr=" + "x" * 5000]),
        ("", ["optim.lr=[" + "x" * 5000]),
        ("", ["optim.l" + "r" * 5000 + "=1"]),
    ],
)
def test_messages_never_echo_huge_values(tmp_path, text, overrides):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    assert len(str(info.value)) < 400, str(info.value)[:400]
