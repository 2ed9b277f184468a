"""User inputs that used to get past the checks or get a wrong message: every one is now one sentence that
names the key, the path or the character (config values, YAML 1.1 booleans, split file text, folders)."""

from __future__ import annotations

import enum
import typing
from pathlib import Path

import pytest
import torch

from imas.config import CORE_SECTIONS, Config, from_dict, load_config, to_dict
from imas.config import schema as schema_module
from imas.config.checks import SEED_RANGE
from imas.config.convert import field_types
from imas.config.strict_yaml import load_yaml
from imas.data.commands import main as imas_data
from imas.data.splits import read_split
from imas.errors import CheckpointError, ConfigError, DataError
from imas.experiment import load_experiment
from imas.methods import SETTINGS
from imas.methods.imas import CutMixTrigger, ImasSettings

IMAS = "train:\n  method: imas\ndata:\n  unlabeled_split: u.txt\nimas:\n"
SLIDING = "eval:\n  mode: sliding\n  window: 512\n"


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, text), overrides or [])
    message = str(info.value)
    assert "\n" not in message
    return message


# 1. Values checked when the config is loaded, before anything is built.


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "data:\n  num_classes: 3\n  class_names: [cat, dog, cat]\n",
            ["data.class_names", "'cat' twice", "positions 0 and 2"],
        ),
        (
            "data:\n  num_classes: 2\n  palette: [[0, 0, 0], [10, 300, 0]]\n",
            ["data.palette[1][1]", "0..255", "300"],
        ),
        ("data:\n  num_classes: 1\n  palette: [[0, -1, 0]]\n", ["data.palette[0][1]", "-1"]),
        ("loss:\n  aux_weight: -0.5\n", ["loss.aux_weight", ">= 0", "-0.5"]),
        ("loss:\n  aux_weight: .inf\n", ["loss.aux_weight", "finite", "inf"]),
        ("loss:\n  kind: ohem\n  ohem_thresh: 1.5\n", ["loss.ohem_thresh", "[0, 1]", "1.5"]),
        ("loss:\n  ohem_thresh: -0.1\n", ["loss.ohem_thresh", "-0.1"]),
        ("loss:\n  ohem_min_kept: -1\n", ["loss.ohem_min_kept", ">= 0", "-1"]),
        ("loss:\n  ohem_thresh: 0\n  ohem_min_kept: 0\n", ["loss.ohem_thresh 0", "loss.ohem_min_kept 0"]),
        ("loss:\n  ohem_min_kept: 1.5\n", ["loss.ohem_min_kept", "integer"]),
        (SLIDING + "  stride: 600\n", ["eval.stride 600", "eval.window 512", "skip pixels"]),
        ("eval:\n  mode: sliding\n  window: 1\n", ["eval.window 1", "eval.stride"]),
        ("train:\n  seed: 9223372036854775808\n", ["train.seed", "2**63 - 1", "9223372036854775808"]),
        ("train:\n  seed: -9223372036854775809\n", ["train.seed", "-2**63", "-9223372036854775809"]),
    ],
)
def test_bad_values_are_refused_at_load(tmp_path, text, needles):
    message = config_error(tmp_path, text)
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize(
    "text",
    [
        SLIDING + "  stride: 512\n",  # windows that touch
        "eval:\n  mode: whole\n  window: 512\n  stride: 600\n",  # the stride is not used
        "loss:\n  kind: ohem\n  ohem_thresh: 0\n  ohem_min_kept: 1000\n",  # the 1000 hardest pixels
        "loss:\n  ohem_thresh: 1\n  ohem_min_kept: 0\n  aux_weight: 0\n",
        "data:\n  num_classes: 2\n  class_names: [a, b]\n  palette: [[0, 0, 0], [255, 255, 255]]\n",
        "train:\n  seed: -9223372036854775808\n",
        "train:\n  seed: 9223372036854775807\n",
    ],
)
def test_edge_values_are_accepted(tmp_path, text):
    load_experiment(write(tmp_path, text))


def test_sliding_stride_is_checked_in_overrides_and_stored_configs(tmp_path):
    # An override (a resume with --opt, imas-eval --mode) is checked with the whole config.
    message = config_error(tmp_path, SLIDING, ["eval.stride=700"])
    assert "eval.stride 700" in message and "eval.window 512" in message
    message = config_error(tmp_path, "eval:\n  stride: 700\n  window: 512\n", ["eval.mode=sliding"])
    assert "eval.stride 700" in message
    stored = to_dict(load_config(write(tmp_path, SLIDING)))
    with pytest.raises(ConfigError, match=r"eval\.stride 900 is larger than eval\.window 512"):
        from_dict(stored, ["eval.stride=900"])


def test_seed_range_is_what_torch_takes_for_every_derived_seed():
    low, high = SEED_RANGE
    # train.py seeds from train.seed + a network index and + 1_000_003 * (rank + 1): all must stay valid.
    for seed in (low, high, high + 1 + 1_000_003 * 1024):
        torch.Generator().manual_seed(seed)
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(low - 1)


def test_seed_override_is_checked(tmp_path):
    message = config_error(tmp_path, "", ["train.seed=18446744073709551616"])
    assert "train.seed" in message and "18446744073709551616" in message


# 2. YAML 1.1 booleans: `off`, `no`, `yes`, `on` are read as the words they are.


def test_cutmix_off_written_plainly_is_the_off_trigger(tmp_path):
    cfg = load_experiment(write(tmp_path, IMAS + "  cutmix: off\n"))
    assert cfg.imas.cutmix is CutMixTrigger.off
    cfg = load_experiment(write(tmp_path, IMAS), ["imas.cutmix=off"])
    assert cfg.imas.cutmix is CutMixTrigger.off


def test_a_boolean_for_an_enum_key_lists_the_words(tmp_path):
    message = config_error(tmp_path, IMAS + "  cutmix: false\n")
    assert "imas.cutmix = False" in message and "easiness | fixed | off" in message


def test_boolean_keys_still_read_yaml_1_1_words(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  flip: no\ntrain:\n  channels_last: yes\n  compile: off\n"))
    assert (cfg.data.flip, cfg.train.channels_last, cfg.train.compile) == (False, True, False)
    cfg = load_config(write(tmp_path, ""), ["data.flip=off", "train.deterministic=on"])
    assert cfg.data.flip is False and cfg.train.deterministic is True
    with pytest.raises(ConfigError, match=r"data\.flip = 'maybe' is invalid: expected true or false"):
        load_config(write(tmp_path, "data:\n  flip: maybe\n"))


def test_strings_that_yaml_1_1_read_as_booleans_stay_strings(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  num_classes: 3\n  class_names: [no, yes, on]\n"))
    assert cfg.data.class_names == ["no", "yes", "on"]


def _enum_fields() -> list[tuple[str, type[enum.Enum]]]:
    """(dotted key, enum) of every enum-typed key in the schema and in every method's settings."""
    found = []
    sections = {name: field_types(Config)[name] for name in CORE_SECTIONS}
    sections |= {name: cls for name, cls in SETTINGS.items() if cls is not None}
    for section, hint in sections.items():
        for name, value_hint in field_types(hint).items():
            if isinstance(value_hint, type) and issubclass(value_hint, enum.Enum):
                found.append((f"{section}.{name}", value_hint))
    return found


def test_every_enum_value_can_be_written_plainly():
    fields = _enum_fields()
    assert any(e is CutMixTrigger for _, e in fields) and len(fields) >= 10
    enums = {e for _, e in fields} | {
        e for e in vars(schema_module).values() if isinstance(e, type) and issubclass(e, enum.Enum)
    }
    for enum_type in enums:
        for member in enum_type:
            # What an error message lists must load as itself, unquoted, in a file and in an override.
            assert load_yaml(f"key: {member.value}\n", "test") == {"key": member.value}, member
            assert load_yaml(member.value, "test") == member.value, member
    assert typing.get_type_hints(ImasSettings)["cutmix"] is CutMixTrigger


# 3. Split files saved on Windows, and invisible characters.


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbf2007_000032\r\n2007_000039\r\n",  # BOM + CRLF (Notepad)
        b"2007_000032\r2007_000039\r",  # CR only (classic Mac)
        b"# ids\r\n2007_000032  \r\n\r\n\t2007_000039 # a comment\r\n",
    ],
)
def test_split_files_from_windows_read_the_same(tmp_path, data):
    path = tmp_path / "split.txt"
    path.write_bytes(data)
    assert read_split(path) == [("2007_000032",), ("2007_000039",)]


def test_a_tab_between_image_and_mask_paths_is_a_separator(tmp_path):
    path = write(tmp_path, "images/a.jpg\tmasks/a.png\n", "split.txt")
    assert read_split(path) == [("images/a.jpg", "masks/a.png")]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("2007_\u200b000039", "U+200B ZERO WIDTH SPACE"),
        ("2007_000039\u200b", "U+200B ZERO WIDTH SPACE"),
        ("2007_000039\u00a0x", "U+00A0 NO-BREAK SPACE"),
        ("images/a.jpg\u00a0masks/a.png", "U+00A0 NO-BREAK SPACE"),
        ("2007\t000039", "U+0009 CHARACTER TABULATION"),
        ("2007_000039\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("2007_000039\x0c", "U+000C CONTROL CHARACTER"),
        ("2007_000039\u2028x", "U+2028 LINE SEPARATOR"),
    ],
)
def test_invisible_characters_in_a_split_are_named(tmp_path, line, needle):
    path = tmp_path / "split.txt"
    path.write_text(f"2007_000032\n# comment\n{line}\n", encoding="utf-8", newline="")
    with pytest.raises(DataError) as info:
        read_split(path)
    message = str(info.value)
    assert needle in message and "line 3" in message and str(path) in message, message
    assert "\n" not in message


# 4. A folder where a file is expected.


def test_config_folder_is_named_as_a_folder(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"config .* is a folder, not a file; give the path of a \.yaml"):
        load_config(tmp_path)
    assert imas_data(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: config {tmp_path} is a folder, not a file; give the path of a .yaml file in it\n"


def test_split_folder_is_named_as_a_folder(tmp_path, capsys):
    (tmp_path / "splits").mkdir()
    with pytest.raises(DataError, match=r"split file .*splits is a folder, not a file"):
        read_split(tmp_path / "splits")
    config = write(tmp_path, f"data:\n  root: {tmp_path}\n  labeled_split: {tmp_path / 'splits'}\n")
    assert imas_data(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: split file {tmp_path / 'splits'} is a folder, not a file")
        and "Trace" not in err
    )


def test_checkpoint_folder_is_named_as_a_folder(tmp_path):
    from imas.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match=r"is a folder, not a file; give the path of a \.pth file$"):
        load_checkpoint(tmp_path)
    (tmp_path / "latest.pth").write_bytes(b"")
    (tmp_path / "best.pth").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert str(info.value) == (
        f"checkpoint {tmp_path} is a folder, not a file; give the path of a .pth file such as "
        f"{tmp_path / 'best.pth'}"
    )


def test_pretrained_folder_is_named_as_a_folder(tmp_path):
    from imas.models.pretrained import read_state_dict

    with pytest.raises(CheckpointError, match=r"pretrained backbone file .* is a folder, not a file"):
        read_state_dict(str(tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(str(tmp_path / "missing.pth"))


def test_a_full_disk_when_the_config_is_saved_is_one_sentence(tmp_path, monkeypatch):
    """config.yaml is written when a run starts: a full disk is one sentence, the previous file kept."""
    import errno

    from imas.config import Config, save_config
    from imas.errors import RunDirError

    path = tmp_path / "config.yaml"
    save_config(Config(), path)
    before = path.read_text()

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(RunDirError) as info:
        save_config(Config(), path)
    expected = f"{path} could not be written (no space left on device); the previous one is kept"
    assert str(info.value) == expected
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
