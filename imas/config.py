"""Typed experiment configuration: the schema with every default, strict YAML loading, dotted overrides.

A config file is YAML with the sections below; every key is optional (the default is used) but an unknown key
or a value of the wrong type is an error that names the key. ``--opt section.key=value`` overrides are parsed
to the field's type. The resolved config is written to the run directory as ``config.yaml``.

Files and override values are read by a SafeLoader that also refuses a key given twice in one mapping (plain
PyYAML keeps the last one silently), names any tag it cannot build (``!!python/...``) and refuses aliases that
expand past ``MAX_YAML_VALUES`` values or contain themselves. Messages echo user values through
``short_repr``, so no value, however large, makes a message longer than a line.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import reprlib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imas.errors import ConfigError


class DatasetKind(str, enum.Enum):
    voc = "voc"
    cityscapes = "cityscapes"
    custom = "custom"


class ResizeRule(str, enum.Enum):
    long_side = "long_side"  # VOC: long side ~ randint[a, b], aspect kept
    scale = "scale"  # Cityscapes: (base_h, base_w) x U[a, b]
    none = "none"


class LossKind(str, enum.Enum):
    ce = "ce"
    ohem = "ohem"


class OptimizerKind(str, enum.Enum):
    sgd = "sgd"  # the released runs (method.md §7)
    adamw = "adamw"  # for training from random initialisation (the toy); momentum is beta1


class Precision(str, enum.Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class EvalMode(str, enum.Enum):
    whole = "whole"
    sliding = "sliding"


class Stem(str, enum.Enum):
    deep = "deep"
    standard = "standard"


class EvalModel(str, enum.Enum):
    teacher = "teacher"
    student = "student"


class Adaptation(str, enum.Enum):
    mix = "mix"  # released code: e * strong + (1 - e) * weak
    select = "select"  # strong with probability e, else weak
    magnitude = "magnitude"  # the paper's wording: op strength U * e (method.md §4), no blend
    none = "none"  # plain strong view


class Weighting(str, enum.Enum):
    easiness = "easiness"  # per-image weight e_i on the unsupervised loss
    none = "none"


class CutMixTrigger(str, enum.Enum):
    easiness = "easiness"  # fire with p = mean easiness of the group
    fixed = "fixed"  # fire with p = cutmix_p
    off = "off"  # no CutMix view


class Pairing(str, enum.Enum):
    easy_hard = "easy_hard"
    random = "random"


class CutMixBox(str, enum.Enum):
    imas = "imas"  # side ratio v ~ U[0.1, 0.9] per group
    beta = "beta"  # classic CutMix, area ~ Beta(4, 4)


@dataclass
class DataConfig:
    dataset: DatasetKind = DatasetKind.voc
    root: str = "data/toy"
    # Split files: one id per line, or "image mask" relative path pairs per line. "" = not used.
    labeled_split: str = "data/toy/splits/labeled.txt"
    unlabeled_split: str = ""
    val_split: str = "data/toy/splits/val.txt"
    num_classes: int = 21
    class_names: list[str] = field(default_factory=list)  # empty: the dataset's own names
    palette: list[list[int]] = field(default_factory=list)  # empty: the dataset's own palette
    label_dir: str = "SegmentationClassAug"  # VOC: SegmentationClassAug (index PNG) or SegmentationClass
    image_dir: str = "images"  # custom layout: folder of images under root
    mask_dir: str = "masks"  # custom layout: folder of index-PNG masks under root
    crop_size: int = 513
    resize: ResizeRule = ResizeRule.long_side
    long_side: list[int] = field(default_factory=lambda: [250, 1000])
    base_size: list[int] = field(default_factory=lambda: [1024, 2048])  # (H, W) for resize: scale
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    num_workers: int = 2


@dataclass
class ModelConfig:
    backbone: str = "resnet101"
    output_stride: int = 16
    multi_grid: bool = False
    aux_head: bool = False
    stem: Stem = Stem.deep
    pretrained: str = ""  # path to backbone weights; "" = random init
    sync_bn: bool = True  # convert BN to SyncBN when training on several CUDA devices
    decoder_channels: int = 256  # ASPP and decoder width: 256 in method.md §7; smaller for the toy only
    backbone_width: int = 64  # channels of the ResNet's layer1 (64 in every ResNet); smaller for the toy only


@dataclass
class LossConfig:
    kind: LossKind = LossKind.ce
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100000
    aux_weight: float = 0.4


@dataclass
class OptimConfig:
    kind: OptimizerKind = OptimizerKind.sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decoder_lr_mult: float = 10.0
    poly_power: float = 0.9


@dataclass
class TrainConfig:
    method: str = "supervised"  # a name in imas.methods.METHODS; its settings: the section of that name
    epochs: int = 80
    batch_size: int = 4  # labeled (and unlabeled) images per device per iteration
    precision: Precision = Precision.fp32
    channels_last: bool = False
    compile: bool = False  # torch.compile the trained models' forward (the step's train-mode passes)
    eval_every: int = 1  # epochs
    log_every: int = 20  # iterations
    image_every: int = 1000  # iterations between TensorBoard image panels (semi-supervised); 0 = never
    seed: int = 0
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    run_dir: str = ""  # "" = runs/<config file name>


@dataclass
class EvalConfig:
    mode: EvalMode = EvalMode.whole
    window: int = 769
    stride: int = 0  # 0 = floor(2 * window / 3)
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    batch_size: int = 4  # sliding windows per forward pass
    model: EvalModel = EvalModel.teacher


@dataclass
class TeacherStudentConfig:
    """An EMA teacher's pseudo-labels supervise the student on strong views (train.method mean_teacher and
    imas). The instance-specific switches (weighting, adaptive, cutmix, pairing) are iMAS's parts; a mean
    teacher has them off and may turn any of them on. docs/methods.md compares the methods."""

    threshold: float = 0.95  # tau: pseudo-label confidence and confident-ratio threshold
    lambda_u: float = 3.0
    ema_decay: float = 0.996
    weighting: Weighting = Weighting.easiness
    adaptive: Adaptation = Adaptation.mix
    magnitude: float = 0.999  # m: op strength s = U * m (adaptive: magnitude uses s = U * m * e_i)
    num_ops: int = 2
    cutmix: CutMixTrigger = CutMixTrigger.easiness
    cutmix_p: float = 0.5  # for cutmix: fixed
    pairing: Pairing = Pairing.easy_hard
    cutmix_box: CutMixBox = CutMixBox.imas
    cutmix_scale: bool = False  # method.md §5 option: the box side v times the group's mean easiness
    group_size: int = 4  # images per trigger/pairing decision (the released runs: 4 per GPU)
    class_weighted: bool = True
    ignore_class0: bool = True
    weak_in_batch: bool = True  # the weak view joins the student's train forward (BN statistics only)
    mask_padding: bool = False  # exclude crop padding from the unsupervised loss


@dataclass
class ImasConfig(TeacherStudentConfig):
    """iMAS (train.method imas): every instance-specific part on; released defaults (method.md §12)."""


@dataclass
class MeanTeacherConfig(TeacherStudentConfig):
    """Mean teacher (train.method mean_teacher): iMAS's step with every instance-specific part off (no loss
    weighting, the plain strong view, CutMix with p = 0.5 and random pairs); each can be turned back on."""

    weighting: Weighting = Weighting.none
    adaptive: Adaptation = Adaptation.none
    cutmix: CutMixTrigger = CutMixTrigger.fixed
    pairing: Pairing = Pairing.random


@dataclass
class FixMatchConfig:
    """FixMatch (train.method fixmatch), as UniMatch's authors run it for segmentation: one network, the weak
    view's prediction is the pseudo-label of a strong view (colour jitter, grayscale, blur, CutMix)."""

    threshold: float = 0.95  # tau on the weak view's confidence (UniMatch's configs: 0.95 VOC, 0 Cityscapes)
    lambda_u: float = 1.0  # L = (L_x + lambda_u * L_s) / 2
    cutmix_p: float = 0.5  # probability that an image's strong view gets a CutMix box


@dataclass
class UniMatchConfig:
    """UniMatch V1 (train.method unimatch): FixMatch with two strong views and a feature-perturbed stream."""

    threshold: float = 0.95  # tau (UniMatch's configs: 0.95 VOC, 0 Cityscapes)
    cutmix_p: float = 0.5  # per strong view and image
    fp_dropout: float = 0.5  # channel dropout on the encoder features of the feature-perturbed stream


@dataclass
class CPSConfig:
    """Cross pseudo supervision (train.method cps): two networks, each one's hard pseudo-label supervises the
    other on labeled and CutMix-mixed unlabeled images."""

    weight: float = 1.5  # lambda on the CPS loss (published: 1.5 VOC, 6 Cityscapes)
    n_boxes: int = 3  # CutMix boxes per image (CPS's mask generator)
    # The boxes' total area fraction, drawn from U[low, high] per image.
    box_area: list[float] = field(default_factory=lambda: [0.25, 0.5])


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # One section per method that has settings, named after it; only train.method's may be given.
    imas: ImasConfig = field(default_factory=ImasConfig)
    mean_teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)
    fixmatch: FixMatchConfig = field(default_factory=FixMatchConfig)
    unimatch: UniMatchConfig = field(default_factory=UniMatchConfig)
    cps: CPSConfig = field(default_factory=CPSConfig)


# The sections above that belong to a method (the section is named after the method).
METHOD_SECTIONS = ("imas", "mean_teacher", "fixmatch", "unimatch", "cps")
MAX_BOXES = 16  # cps.n_boxes: each box is a [B, H, W] mask while the CutMix mask is made


# ----------------------------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, check every key and type against the schema, then apply "a.b=c" overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read as text ({exc.__class__.__name__})") from None
    raw = _load_yaml(text, f"config file {path}")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    if "semi" in raw:
        method = raw.get("train", {}).get("method") if isinstance(raw.get("train"), dict) else None
        name = method if method in ("imas", "mean_teacher") else "imas"
        raise ConfigError(
            f"config file {path} has a section 'semi', which is now named after its method: rename it to "
            f"{name!r} (its keys are unchanged)"
        )
    config = _build(Config, raw, prefix="")
    given = {key for key in raw if key in METHOD_SECTIONS and raw[key]}  # an empty section sets nothing
    for override in overrides:
        apply_override(config, override)
        first = override.partition("=")[0].strip().split(".")[0]
        if first in METHOD_SECTIONS:
            given.add(first)
    validate(config, sorted(given))
    return config


def apply_override(config: Config, override: str) -> None:
    """Apply one "section.key=value" override in place; the value is parsed to the field's type."""
    dotted, sep, text = override.partition("=")
    if not sep or not dotted.strip():
        raise ConfigError(f"override {short_repr(override)} must look like section.key=value")
    names = dotted.strip().split(".")
    node: Any = config
    for depth, name in enumerate(names):
        valid = [f.name for f in dataclasses.fields(node)]
        if name not in valid:
            key, where = short_repr(".".join(names[: depth + 1])), ".".join(names[:depth]) or "the config"
            raise ConfigError(
                f"unknown key {key} in {short_repr(where, quote=False)}; valid keys: {', '.join(valid)}"
            )
        if depth == len(names) - 1:
            hint = _field_types(type(node))[name]
            if dataclasses.is_dataclass(hint):
                raise ConfigError(
                    f"override {short_repr(dotted)} names a whole section; give one of its keys"
                )
            value = text if hint is str else _parse_text(text, dotted)
            setattr(node, name, _convert(value, hint, dotted))
        else:
            node = getattr(node, name)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{short_repr('.'.join(names[: depth + 1]))} is a value, not a section")


def validate(config: Config, given_sections: Sequence[str] = ()) -> None:
    """Cross-field checks that a type alone cannot express. `given_sections`: the method sections the user
    wrote (in the file or an override); only train.method's own may be among them."""
    # First, so that nan (which fails every comparison) and inf get the message that says what they are.
    bad_number = _first_non_finite(config, prefix="")
    if bad_number is not None:
        key, value = bad_number
        raise ConfigError(f"{key} must be a finite number, got {value}")
    d, m, t = config.data, config.model, config.train
    positive = {
        "data.num_classes": d.num_classes,
        "data.crop_size": d.crop_size,
        "model.decoder_channels": m.decoder_channels,
        "model.backbone_width": m.backbone_width,
        "train.epochs": t.epochs,
        "train.batch_size": t.batch_size,
        "train.eval_every": t.eval_every,
        "train.log_every": t.log_every,
        "eval.window": config.eval.window,
        "eval.batch_size": config.eval.batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    if not 1 <= d.num_classes <= 255:
        raise ConfigError(
            f"data.num_classes must be in [1, 255] (255 is the ignore label), got {d.num_classes}"
        )
    if t.image_every < 0:
        raise ConfigError(f"train.image_every must be >= 0 (0 = no image panels), got {t.image_every}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
    if d.class_names and len(d.class_names) != d.num_classes:
        raise ConfigError(
            f"data.class_names has {len(d.class_names)} names but data.num_classes is {d.num_classes}"
        )
    if d.palette and (len(d.palette) < d.num_classes or any(len(c) != 3 for c in d.palette)):
        raise ConfigError(f"data.palette must give one [r, g, b] per class ({d.num_classes} classes)")
    if len(d.long_side) != 2 or not 1 <= d.long_side[0] <= d.long_side[1]:
        raise ConfigError(
            f"data.long_side must be [low, high] with 1 <= low <= high, got {short_repr(d.long_side)}"
        )
    if len(d.base_size) != 2 or min(d.base_size) < 1:
        raise ConfigError(
            f"data.base_size must be two positive integers [height, width], got {short_repr(d.base_size)}"
        )
    if len(d.scale_range) != 2 or not 0 < d.scale_range[0] <= d.scale_range[1]:
        raise ConfigError(
            f"data.scale_range must be [low, high] with 0 < low <= high, got {short_repr(d.scale_range)}"
        )
    if not d.labeled_split:
        raise ConfigError("data.labeled_split must name a split file")
    if m.output_stride not in (8, 16):
        raise ConfigError(f"model.output_stride must be 8 or 16, got {m.output_stride}")
    _validate_model(m)
    _validate_optim(config.optim)
    _validate_method(config, given_sections)
    if config.eval.stride < 0 or not config.eval.scales or min(config.eval.scales) <= 0:
        raise ConfigError("eval.stride must be >= 0 and eval.scales a non-empty list of positive numbers")


def _validate_method(config: Config, given_sections: Sequence[str]) -> None:
    # Imported here, like BACKBONES below: METHODS is the one list of method names.
    from imas.methods import METHODS

    t, d = config.train, config.data
    if t.method not in METHODS:
        raise ConfigError(
            f"train.method {short_repr(t.method)} is unknown; valid methods: {', '.join(METHODS)}"
        )
    for section in given_sections:
        if section != t.method:
            raise ConfigError(
                f"section {section!r} holds the settings of train.method {section}, but this config trains "
                f"{t.method}; remove the section or set train.method {section}"
            )
    smallest = METHODS[t.method].min_batch_size
    if t.batch_size < smallest:
        raise ConfigError(
            f"train.method {t.method} needs train.batch_size >= {smallest} (a training forward of one image "
            f"cannot normalise the ASPP's pooled features), got {t.batch_size}"
        )
    if METHODS[t.method].uses_unlabeled and not d.unlabeled_split:
        raise ConfigError(f"train.method {t.method} needs an unlabeled split: set data.unlabeled_split")
    if t.method not in METHOD_SECTIONS:
        return
    section = getattr(config, t.method)
    prefix = f"{t.method}."
    # A teacher-student threshold must leave some pixels confident and some not; FixMatch and UniMatch also
    # accept 0 (every pixel, as UniMatch's Cityscapes configs).
    zero_ok = isinstance(section, (FixMatchConfig, UniMatchConfig))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name == "threshold" and not (0 <= value < 1 if zero_ok else 0 < value < 1):
            bounds = "[0, 1)" if zero_ok else "(0, 1)"
            raise ConfigError(f"{prefix}threshold must be in {bounds}, got {value}")
        elif f.name == "fp_dropout" and not 0 < value < 1:
            # 0 would be no perturbed stream at all; 1 drops every channel
            raise ConfigError(f"{prefix}fp_dropout must be in (0, 1), got {value}")
        elif f.name in ("cutmix_p", "magnitude", "ema_decay") and not 0 <= value <= 1:
            raise ConfigError(f"{prefix}{f.name} must be in [0, 1], got {value}")
        elif f.name in ("lambda_u", "weight", "num_ops") and value < 0:
            raise ConfigError(f"{prefix}{f.name} must be >= 0, got {value}")
        elif f.name in ("group_size", "n_boxes") and value < 1:
            raise ConfigError(f"{prefix}{f.name} must be at least 1, got {value}")
        elif f.name == "n_boxes" and value > MAX_BOXES:
            raise ConfigError(f"{prefix}n_boxes must be at most {MAX_BOXES}, got {value}")
        elif f.name == "box_area" and (len(value) != 2 or not 0 < value[0] <= value[1] <= 1):
            raise ConfigError(
                f"{prefix}box_area must be [low, high] with 0 < low <= high <= 1, got {short_repr(value)}"
            )
    if (
        isinstance(section, TeacherStudentConfig)
        and section.cutmix is not CutMixTrigger.off
        and t.batch_size % section.group_size
    ):
        raise ConfigError(
            f"train.batch_size {t.batch_size} must be a multiple of {prefix}group_size {section.group_size}"
        )


def _validate_model(m: ModelConfig) -> None:
    # Imported here: imas.models pulls in torch, which reading a config does not otherwise need. BACKBONES
    # is the one list of backbone names (build_deeplabv3plus looks names up in it).
    from imas.models import BACKBONES

    if m.backbone not in BACKBONES:
        raise ConfigError(
            f"model.backbone {short_repr(m.backbone)} is unknown; valid backbones: {', '.join(BACKBONES)}"
        )


def _validate_optim(o: OptimConfig) -> None:
    if o.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {o.lr}")
    # Both optimizers need momentum in [0, 1): SGD diverges at >= 1 and it is AdamW's beta1.
    if not 0 <= o.momentum < 1:
        raise ConfigError(f"optim.momentum must be in [0, 1), got {o.momentum}")
    if o.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    # 0 is allowed: it freezes the decoder (an ablation); a negative lr would ascend the loss.
    if o.decoder_lr_mult < 0:
        raise ConfigError(
            f"optim.decoder_lr_mult must be >= 0 (0 freezes the decoder), got {o.decoder_lr_mult}"
        )
    # A negative power makes the lr rise over training; 0 would silently turn the poly schedule into a
    # constant lr (and break its "0 at the end" contract, 0 ** 0 = 1).
    if o.poly_power <= 0:
        raise ConfigError(f"optim.poly_power must be > 0, got {o.poly_power}")


def _first_non_finite(node: Any, prefix: str) -> tuple[str, float] | None:
    """The dotted key and value of the first nan/inf float in a config (lists included), else None."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            found = _first_non_finite(value, key + ".")
            if found is not None:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return key, value
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, float) and not math.isfinite(item):
                    return f"{key}[{index}]", item
    return None


def to_dict(config: Any, all_sections: bool = False) -> dict[str, Any]:
    """The config as plain YAML/JSON-able data (enums as their values). Of the method sections only
    train.method's is included (what config.yaml and checkpoints hold), unless `all_sections`."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        other_method = isinstance(config, Config) and f.name in METHOD_SECTIONS
        if other_method and f.name != config.train.method and not all_sections:
            continue
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, list):
            value = [list(v) if isinstance(v, list) else v for v in value]
        out[f.name] = value
    return out


def upgrade_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config (a checkpoint's) in today's layout: older versions kept the iMAS settings in a section
    'semi' (written for every method), which is now the method's own section."""
    if "semi" not in data:
        return data
    data = dict(data)
    semi = data.pop("semi")
    method = data.get("train", {}).get("method")
    if method in ("imas", "mean_teacher") and method not in data:
        data[method] = semi
    return data


def from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. the copy stored in a checkpoint or a run's config.yaml),
    then apply "a.b=c" overrides. The stored config is checked as stored; with overrides it is checked again
    as a whole, where its stored method section is not held against an override of train.method (a
    report or a prediction may read a run's weights as another method's)."""
    data = upgrade_stored(data)
    config = _build(Config, data, prefix="")
    validate(config, [key for key in data if key in METHOD_SECTIONS])
    if overrides:
        for override in overrides:
            apply_override(config, override)
        validate(config)
    return config


def save_config(config: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ type checks


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {short_repr(raw)}")
    hints = _field_types(cls)
    unknown = [key for key in raw if key not in hints]
    if unknown:
        section = f"section {where!r}" if prefix else where
        raise ConfigError(
            f"unknown key {short_repr(prefix + str(unknown[0]))} in {section}; valid keys: {', '.join(hints)}"
        )
    kwargs = {}
    for name, hint in hints.items():
        if name not in raw:
            continue
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name] if raw[name] is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _convert(raw[name], hint, f"{prefix}{name}")
    return cls(**kwargs)


def _parse_text(text: str, key: str) -> Any:
    return _load_yaml(text, f"value {short_repr(text)} for {key}")


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + " | ".join(m.value for m in hint)
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type `hint`; return it converted (int -> float, str -> enum)."""

    def bad() -> ConfigError:
        return ConfigError(f"{key} = {short_repr(value)} is invalid: expected {_type_name(hint)}")

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in the schema ({key})")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        (item,) = typing.get_args(hint)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise bad() from None
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string; accept every spelling Python accepts.
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported type {hint!r} in the schema ({key})")


# ------------------------------------------------------------------------------------------ YAML reading

# A config has a few hundred values at most (a 256-colour palette is ~1000); far below this, a document that
# expands past it is an alias bomb ("billion laughs"), refused before anything walks or prints it.
MAX_YAML_VALUES = 100_000
_MESSAGE_VALUE_CHARS = 80

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _MESSAGE_VALUE_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


def short_repr(value: Any, quote: bool = True) -> str:
    """repr() of a user value for a message, at most 80 characters (reprlib never builds the whole repr)."""
    text = _repr.repr(value) if quote else str(value)
    return text if len(text) <= _MESSAGE_VALUE_CHARS else text[: _MESSAGE_VALUE_CHARS - 3] + "..."


class _YamlProblem(Exception):
    """Raised inside the loader; the message is a predicate ("has a duplicate key ...") for _load_yaml."""


def _tag_name(node: yaml.Node) -> str:
    """The node's tag as written ("!!python/name:x", not "tag:yaml.org,2002:python/name:x"), bounded."""
    prefix = "tag:yaml.org,2002:"
    tag = "!!" + node.tag[len(prefix) :] if node.tag.startswith(prefix) else node.tag
    return short_repr(tag, quote=False)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and turns every construction failure into a _YamlProblem."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base" merges; keys given next to it override the merged ones by design
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:
                continue  # unhashable: SafeLoader itself reports it
            if seen:
                raise _YamlProblem(
                    f"has a duplicate key {short_repr(key)} at line {_line(key_node)} "
                    f"(first at line {first_line[key]})"
                )
            first_line[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            # PyYAML's own constructors fail this way on e.g. "!!float abc" or "!!bool maybe".
            raise _YamlProblem(
                f"has a value at line {_line(node)} that its tag {_tag_name(node)} cannot build "
                f"({exc.__class__.__name__})"
            ) from None

    def construct_unsupported(self, node: yaml.Node) -> Any:
        raise _YamlProblem(f"uses the unsupported YAML tag {_tag_name(node)} at line {_line(node)}")


# Replaces SafeLoader's catch-all (which says "could not determine a constructor"), for this loader only.
_ConfigLoader.add_constructor(None, _ConfigLoader.construct_unsupported)


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded; linear in the composed nodes.

    Raises _YamlProblem for an alias inside its own anchor (the expansion would be infinite).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _YamlProblem(f"has a YAML alias inside its own anchor (the anchor at line {_line(node)})")
        open_nodes.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        total = 1 + sum(size(child) for child in children)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _load_yaml(text: str, what: str) -> Any:
    """Parse one YAML document; every problem becomes one ConfigError sentence that starts with `what`."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node)
        if values > MAX_YAML_VALUES:
            raise _YamlProblem(
                f"has YAML aliases that expand to {values} values (more than {MAX_YAML_VALUES}, "
                "far beyond any config)"
            )
        return loader.construct_document(node)
    except _YamlProblem as exc:
        raise ConfigError(f"{what} {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} nests lists or mappings too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} is not valid YAML{where}") from None
    finally:
        loader.dispose()
