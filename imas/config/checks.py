"""Cross-field checks of a built config that a type alone cannot express.

Names the code defines (train.method, model.encoder) and what a method needs of the batch and the data are
checked above this package, where those names live (imas.experiment).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from imas.config.schema import (
    Config,
    DataConfig,
    EvalConfig,
    EvalMode,
    LossConfig,
    OptimConfig,
    TrainConfig,
)
from imas.config.strict_yaml import short_repr
from imas.errors import ConfigError


def validate(config: Config) -> None:
    """Cross-field checks that a type alone cannot express, then the method settings' own `check` (where
    they have one). train.method and model.encoder are checked against the code's names by
    imas.experiment.check_experiment."""
    # First, so that nan (which fails every comparison) and inf get the message that says what they are.
    bad_number = _first_non_finite(config, prefix="")
    if bad_number is None and dataclasses.is_dataclass(config.method_settings):
        bad_number = _first_non_finite(config.method_settings, prefix=f"{config.train.method}.")
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
    outside = [epoch for epoch in t.keep_epochs if not 1 <= epoch <= t.epochs]
    if outside:
        raise ConfigError(
            f"train.keep_epochs must list epochs in [1, train.epochs={t.epochs}], got {outside[0]}"
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
    _validate_names_and_colours(d)
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
    _validate_seed(t)
    _validate_loss(config.loss)
    _validate_optim(config.optim)
    if config.eval.stride < 0 or not config.eval.scales or min(config.eval.scales) <= 0:
        raise ConfigError("eval.stride must be >= 0 and eval.scales a non-empty list of positive numbers")
    _validate_sliding(config.eval)
    if m.representation < 0:
        raise ConfigError(f"model.representation must be >= 0 (0: none), got {m.representation}")
    check = getattr(config.method_settings, "check", None)
    if check is not None:
        check(config)


# torch.manual_seed takes -2**63 .. 2**64 - 1; train.py also seeds from train.seed plus a network index and
# plus 1_000_003 * (rank + 1). Capping at 2**63 - 1 leaves room for those sums (for any number of processes),
# so no seed fails after the run has started. numpy and `random` are seeded from torch.initial_seed() and the
# loaders' seeds are derived modulo 2**64, so they take any seed torch does.
SEED_RANGE = (-(2**63), 2**63 - 1)


def _validate_seed(t: TrainConfig) -> None:
    low, high = SEED_RANGE
    if not low <= t.seed <= high:
        raise ConfigError(f"train.seed must be in [-2**63, 2**63 - 1], got {short_repr(t.seed)}")


def _validate_names_and_colours(d: DataConfig) -> None:
    """data.class_names unique (the IoU table and the metrics are keyed by name); data.palette in 0..255."""
    first: dict[str, int] = {}
    for index, name in enumerate(d.class_names):
        if name in first:
            raise ConfigError(
                f"data.class_names has {short_repr(name)} twice (at positions {first[name]} and {index}); "
                "class names must be unique"
            )
        first[name] = index
    for index, colour in enumerate(d.palette):
        for channel, value in enumerate(colour):
            if not 0 <= value <= 255:
                raise ConfigError(
                    f"data.palette[{index}][{channel}] must be in 0..255 (an 8-bit colour), got {value}"
                )


def _validate_loss(loss: LossConfig) -> None:
    """The supervised loss's numbers, whichever loss.kind is set (a later override may switch to ohem)."""
    if loss.aux_weight < 0:
        raise ConfigError(f"loss.aux_weight must be >= 0, got {loss.aux_weight}")
    # A pixel is hard when its probability of the true class is <= the threshold, a probability. Threshold 0
    # with ohem_min_kept > 0 keeps exactly the ohem_min_kept hardest pixels; with 0 it would keep none.
    if not 0 <= loss.ohem_thresh <= 1:
        raise ConfigError(f"loss.ohem_thresh must be in [0, 1], got {loss.ohem_thresh}")
    if loss.ohem_min_kept < 0:
        raise ConfigError(
            f"loss.ohem_min_kept must be >= 0 (0: the threshold alone), got {loss.ohem_min_kept}"
        )
    if loss.ohem_thresh == 0 and loss.ohem_min_kept == 0:
        raise ConfigError(
            "loss.ohem_thresh 0 with loss.ohem_min_kept 0 would train on no pixel; raise either of them"
        )


def _validate_sliding(e: EvalConfig) -> None:
    """Sliding windows must overlap or touch: a stride past the window would leave pixels unpredicted."""
    if e.mode is not EvalMode.sliding:
        return
    if e.stride > e.window:
        raise ConfigError(
            f"eval.stride {e.stride} is larger than eval.window {e.window}, so sliding windows would skip "
            "pixels; use a stride <= the window (0: two thirds of it)"
        )
    if e.stride == 0 and 2 * e.window // 3 == 0:
        raise ConfigError(
            f"eval.window {e.window} is too small for the default eval.stride (two thirds of it is 0); "
            "use a window of at least 2 or set eval.stride"
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
        if f.name == "method_settings":
            continue  # named after the method (validate checks it)
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


def check_interval(key: str, value: float, low: float, high: float, brackets: str = "[]") -> None:
    """Refuse `value` outside the interval `brackets[0]low, high brackets[1]` (e.g. "[)"): one sentence."""
    above = low <= value if brackets[0] == "[" else low < value
    below = value <= high if brackets[1] == "]" else value < high
    if not (above and below):
        raise ConfigError(f"{key} must be in {brackets[0]}{low:g}, {high:g}{brackets[1]}, got {value}")


def check_at_least(key: str, value: float, low: float) -> None:
    """Refuse `value` below `low`: one sentence."""
    if value < low:
        raise ConfigError(f"{key} must be {'>= 0' if low == 0 else f'at least {low:g}'}, got {value}")
