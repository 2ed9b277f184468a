"""Check everything a run reads before its first iteration, so a bad file never costs an epoch: the
pretrained backbone file, the class names, every file the config's splits name, and an epoch that holds a
batch.

``check_run`` is what training calls: it raises one sentence for the first problem (with a count of the
others where there are more in the data), and returns warnings for findings that a run survives.
``scan_run`` does the same work and keeps every finding; `imas-data check` prints all of them. Both check
the pretrained file first: it is one file, where the data are thousands.

The pretrained file is read as training reads it (imas.models.pretrained) and matched against the config's
backbone (shapes and keys, nothing copied): it exists, torch.load reads it, and it fills every backbone
tensor.

What is read, per split (the cost per entry is measured by `tools/benchmark.py --mode preflight`, see
docs/reliability.md):

- labeled and val: the image fully decoded (a truncated file fails now, not in the middle of an epoch) and
  the label fully decoded and checked by imas.data.io.read_label (index mode, values in [0, K) or 255), then
  the sizes compared. The image decode is most of the cost.
- unlabeled (large, e.g. 10k VOC images): the image header only (it exists, is an image, has a size), a
  small fraction of a full decode. A corrupt pixel stream in an unlabeled image is found only when training
  reads it.

Files are read by a pool of threads (PIL releases the GIL while decoding).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imas.config import Config, DataConfig, ModelConfig
from imas.data.classes import IGNORE_INDEX
from imas.data.datasets import class_names
from imas.data.io import check_same_size, read_image, read_label
from imas.data.layouts import Entry, check_paths, resolve_entries
from imas.data.splits import read_split
from imas.errors import CheckpointError, DataError, user_message
from imas.models import ENCODERS, build_encoder
from imas.models.pretrained import match_backbone_weights, match_vit_weights, read_state_dict

log = logging.getLogger(__name__)

# Kinds of finding (also the headings of `imas-data check`'s report).
MISSING = "missing file"
CORRUPT = "corrupt file"
NOT_INDEX = "label not an index image"
BAD_VALUE = "label value out of range"
SIZE_MISMATCH = "image/label size mismatch"
TOO_LARGE = "image too large (decompression-bomb guard)"
PIXEL_FORMAT = "unsupported pixel format"
OTHER = "other"
ALL_IGNORE = "labels all 255 (ignore)"
CLASS_NAMES = "class names"
DUPLICATE = "id listed twice in a split"
VAL_IN_LABELED = "val id also in labeled"
VAL_IN_UNLABELED = "val id also in unlabeled"
ABSENT_CLASSES = "classes in no label"
PRETRAINED = "pretrained backbone file"
SHORT_EPOCH = "epoch shorter than one batch"

# What to do about a pretrained file that is missing or unreadable (one that does not fit says why itself).
PRETRAINED_HELP = (
    "point model.pretrained at pretrained weights for model.encoder (the repository's pretrained/README.md; "
    "its tools/convert_pretrained.py checks and converts a torchvision or timm file), or set it to '' to "
    "train from random weights"
)
TOY_PRETRAINED_HELP = (  # the toy configs' backbone is made, not downloaded
    "the toy's backbone is made by sh single_run.sh CONFIG, or by python -m tools.toy_pretrain --config "
    "CONFIG --ensure (both in the repository)"
)

# Findings a run survives, so training only warns. Duplicates can be deliberate oversampling (and only
# reweight the images); val ids in a training split make val mIoU optimistic but the run itself is sound;
# an absent class cannot be learned but the others can. Everything else would crash the run or make it
# meaningless (a labeled split whose labels are all ignore has a supervised loss of 0).
WARNING_KINDS = frozenset({DUPLICATE, VAL_IN_LABELED, VAL_IN_UNLABELED, ABSENT_CLASSES})

_WHY = {
    DUPLICATE: "a repeated id is sampled (or evaluated) once per listing",
    VAL_IN_LABELED: "val mIoU then scores images the model trained on",
    VAL_IN_UNLABELED: "val mIoU then scores images the model trained on",
}

SPLITS = ("labeled", "val", "unlabeled")  # the order they are checked in


@dataclass
class Finding:
    kind: str  # one of the kinds above
    split: str  # "labeled" | "val" | "unlabeled", or "" for findings across splits
    message: str  # one sentence naming the file or id


@dataclass
class SplitSummary:
    name: str
    path: str
    entries: int
    findings: int
    seconds: float


@dataclass
class DataScan:
    splits: list[SplitSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def problem_kind(message: str) -> str:
    """The kind of a DataError message from imas.data.io (missing, corrupt, not an index image, ...)."""
    for needle, kind in (
        ("does not exist", MISSING),
        ("cannot be read", CORRUPT),
        ("colour image", NOT_INDEX),
        ("contains value", BAD_VALUE),
        ("but its image is", SIZE_MISMATCH),
        ("pixels, more than", TOO_LARGE),
        ("floating-point", PIXEL_FORMAT),
        ("8-bit or 16-bit", PIXEL_FORMAT),
    ):
        if needle in message:
            return kind
    return OTHER


def check_run(
    cfg: Config,
    with_unlabeled: bool,
    world_size: int = 1,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
) -> list[str]:
    """What training checks before its first iteration, on `world_size` processes: the pretrained backbone
    file (CheckpointError), then the data (check_data), then that an epoch holds one global batch (DataError).

    Raises one sentence for the first problem; returns check_data's warnings.
    """
    problem = check_pretrained(cfg.model)
    if problem:
        raise CheckpointError(problem)
    warnings = check_data(cfg.data, with_unlabeled, progress=progress, progress_every_s=progress_every_s)
    problem = short_epoch(cfg, world_size)
    if problem:
        raise DataError(problem)
    return warnings


def scan_run(
    cfg: Config,
    with_unlabeled: bool,
    world_size: int = 1,
    decode_unlabeled: bool = False,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
) -> DataScan:
    """Every finding check_run would stop on or warn about (scan_data's, with the pretrained file's first and
    a too short epoch's last). A missing data root or split file raises DataError at once, as in scan_data."""
    pretrained = check_pretrained(cfg.model)
    try:
        scan = scan_data(
            cfg.data, with_unlabeled, decode_unlabeled, progress=progress, progress_every_s=progress_every_s
        )
    except DataError as exc:  # the data cannot be read at all: the pretrained file's problem is said too
        if pretrained:
            raise DataError(f"{user_message(exc)}; also {pretrained}") from None
        raise
    if pretrained:
        scan.findings.insert(0, Finding(PRETRAINED, "", pretrained))
    epoch = short_epoch(cfg, world_size)
    if epoch:
        scan.findings.append(Finding(SHORT_EPOCH, "", epoch))
    return scan


def check_pretrained(model: ModelConfig) -> str | None:
    """None when model.pretrained is "" or a file that fills every tensor of model.encoder (as training
    will load it), else one sentence naming the file, what is wrong and what to do."""
    if not model.pretrained:
        return None
    try:
        tensors = read_state_dict(model.pretrained)
    except CheckpointError as exc:
        toy = Path(model.pretrained).parent.as_posix().endswith("toy/pretrained")
        return f"model.pretrained: {user_message(exc)}; {TOY_PRETRAINED_HELP if toy else PRETRAINED_HELP}"
    # Built on the CPU (on the meta device the first random init imports torch's compiler, seconds), its
    # random init drawn from a forked stream: the caller's RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        expected = build_encoder(model).state_dict()
    try:
        if ENCODERS[model.encoder] == "vit":
            match_vit_weights(expected, tensors, model.pretrained, model.encoder)
        else:
            match_backbone_weights(expected, tensors, model.pretrained)
    except CheckpointError as exc:
        return f"model.pretrained: {user_message(exc)}"
    return None


def short_epoch(cfg: Config, world_size: int = 1) -> str | None:
    """One sentence when an epoch (the unlabeled split's length where one is named, else the labeled
    split's) is shorter than one global batch, so training would run no iteration; else None. The split
    files must be readable (scan_data checks that first)."""
    batch = cfg.train.batch_size * world_size
    split = cfg.data.unlabeled_split or cfg.data.labeled_split
    length = len(read_split(split))
    if length >= batch:
        return None
    key = "data.unlabeled_split" if cfg.data.unlabeled_split else "data.labeled_split"
    devices = f"{world_size} device{'s' if world_size > 1 else ''}"
    return (
        f"an epoch of {length} images ({key} {split}) is smaller than one global batch of {batch} "
        f"({cfg.train.batch_size} per device x {devices}); list more images or lower train.batch_size"
    )


def check_data(
    cfg: DataConfig,
    with_unlabeled: bool,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
) -> list[str]:
    """Check every file of the labeled, val and (if `with_unlabeled`) unlabeled splits before training.

    Raises DataError naming the first problem (and how many more there are); returns one warning sentence per
    kind of finding a run survives (duplicate ids, val ids in a training split, classes in no label).
    `progress` (default: this module's logger at INFO) gets a line every `progress_every_s` seconds of a
    long split and one summary line at the end.
    """
    report = progress or log.info
    start = time.perf_counter()
    scan = scan_data(cfg, with_unlabeled, progress=report, progress_every_s=progress_every_s)
    fatal = [f for f in scan.findings if f.kind not in WARNING_KINDS]
    if fatal:
        first = fatal[0]
        where = f"{first.split} split: " if first.split else ""
        more = (
            f"; {len(fatal) - 1} more problem{'s' if len(fatal) > 2 else ''}: run imas-data check "
            "on this config for the full list"
            if len(fatal) > 1
            else ""
        )
        raise DataError(f"{where}{first.message}{more}")
    counts = ", ".join(f"{s.entries} {s.name}" for s in scan.splits)
    report(f"data check: {counts} files read in {time.perf_counter() - start:.1f} s, no problems")
    return _warnings([f for f in scan.findings if f.kind in WARNING_KINDS])


def scan_data(
    cfg: DataConfig,
    with_unlabeled: bool,
    decode_unlabeled: bool = False,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
    workers: int | None = None,
) -> DataScan:
    """Every finding about the splits' files, in split order (labeled, val, unlabeled), then across splits.

    A split file that is missing or malformed raises DataError at once (nothing else can be checked for it).
    `decode_unlabeled` decodes unlabeled images fully instead of reading their headers.
    """
    check_paths(cfg, with_unlabeled)
    workers = workers or min(8, os.cpu_count() or 1)
    scan = DataScan()
    try:
        class_names(cfg)  # a class_names.txt under the root that does not fit stops build_datasets
    except DataError as exc:
        scan.findings.append(Finding(CLASS_NAMES, "", user_message(exc)))
    ids: dict[str, list[str]] = {}
    present = np.zeros(256, dtype=bool)  # label values seen in the labeled and val labels
    for name in SPLITS:
        split = {"labeled": cfg.labeled_split, "val": cfg.val_split, "unlabeled": cfg.unlabeled_split}[name]
        if not split:
            continue
        lines = read_split(split)
        if name == "unlabeled" and not with_unlabeled:
            continue  # not trained on; reading the split file is all build_datasets does with it
        entries = resolve_entries(lines, cfg, split)
        labeled = name != "unlabeled"
        before, start = len(scan.findings), time.perf_counter()
        check = partial(
            _check_entry, num_classes=cfg.num_classes, labeled=labeled, decode=labeled or decode_unlabeled
        )
        split_present = np.zeros(256, dtype=bool)  # label values seen in this split
        last = start
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done, (messages, values) in enumerate(pool.map(check, entries), start=1):
                scan.findings += [Finding(problem_kind(m), name, m) for m in messages]
                if values is not None:
                    split_present |= values
                now = time.perf_counter()
                if progress is not None and now - last >= progress_every_s and done < len(entries):
                    last = now
                    rate = done / max(now - start, 1e-9)
                    progress(f"checking the {name} split: {done}/{len(entries)} files, {rate:.0f} files/s")
        if labeled:
            present |= split_present
            readable = split_present.any()  # False when no label could be read: those are already findings
            if readable and not split_present[:IGNORE_INDEX].any():
                scan.findings.append(Finding(ALL_IGNORE, name, _all_ignore_message(name, split)))
        ids[name] = [entry[0] for entry in entries]
        for image_id, count in Counter(ids[name]).items():
            if count > 1:
                scan.findings.append(
                    Finding(DUPLICATE, name, f"{image_id} is listed {count} times in {split}")
                )
        scan.splits.append(
            SplitSummary(name, split, len(entries), len(scan.findings) - before, time.perf_counter() - start)
        )
    for other, kind in (("labeled", VAL_IN_LABELED), ("unlabeled", VAL_IN_UNLABELED)):
        for image_id in sorted(set(ids.get("val", ())) & set(ids.get(other, ()))):
            scan.findings.append(Finding(kind, "", f"{image_id} is in both val and {other}"))
    scan.findings += _absent_classes(cfg, present)
    return scan


# ------------------------------------------------------------------------------------------- helpers


def _check_entry(
    entry: Entry, num_classes: int, labeled: bool, decode: bool
) -> tuple[list[str], np.ndarray | None]:
    """Problems of one entry's image (and label if `labeled`), and the values its label holds (bool [256]).

    Image and label are checked independently, so a missing image does not hide a bad label.
    """
    _, image_path, label_path = entry
    problems: list[str] = []
    image: Image.Image | None = None
    label: Image.Image | None = None
    try:
        image = read_image(image_path) if decode else _image_header(image_path)
    except DataError as exc:
        problems.append(user_message(exc))
    except Image.DecompressionBombError as exc:  # in case read_image lets it through: still the file's fault
        problems.append(f"image {image_path} cannot be read; it is too large to decode safely ({exc})")
    if not labeled:
        return problems, None
    try:
        label = read_label(label_path, num_classes)
    except DataError as exc:
        problems.append(user_message(exc))
    except Image.DecompressionBombError as exc:
        problems.append(f"label {label_path} cannot be read; it is too large to decode safely ({exc})")
    if label is None:
        return problems, None
    if image is not None:
        try:
            check_same_size(image, label, label_path)
        except DataError as exc:
            problems.append(user_message(exc))
    # read_label returns an 8-bit "L" image: PIL's histogram has its 256 value counts, cheaper than bincount.
    return problems, np.asarray(label.histogram()) > 0


def _image_header(path: Path) -> Image.Image:
    """The image opened, not decoded: it exists, is an image and has a size (still readable once closed)."""
    try:
        with Image.open(path) as image:
            return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        # Let read_image word the failure, exactly as training would (it fails the same way, or decodes).
        return read_image(path)


def _all_ignore_message(name: str, split: str) -> str:
    consequence = {
        "labeled": "the supervised loss is 0 and nothing can be learned",
        "val": "mIoU cannot be measured",
    }[name]
    where = f"the {name} split {split}"
    return f"every label pixel of {where} is 255 (ignore), so {consequence}; check data.label_dir"


def _absent_classes(cfg: DataConfig, present: np.ndarray) -> list[Finding]:
    """A finding naming the classes in [0, K) that no labeled or val label holds (none if every one does)."""
    if not present.any():
        return []  # no label was read at all; those problems are findings already
    absent = [c for c in range(cfg.num_classes) if not present[c]]
    if not absent:
        return []
    try:
        names = class_names(cfg)
    except DataError:  # a finding of its own already (scan_data): name the classes by index
        names = [f"class {c}" for c in range(cfg.num_classes)]
    shown = 30  # bounds the sentence; K can be up to 255
    listed = ", ".join(f"{c} ({names[c]})" for c in absent[:shown])
    if len(absent) > shown:
        listed += f" and {len(absent) - shown} more"
    return [
        Finding(
            ABSENT_CLASSES,
            "",
            f"data.num_classes is {cfg.num_classes} but {len(absent)} class(es) appear in no labeled or val "
            f"label: {listed}; they cannot be learned and score IoU 0 wherever predicted",
        )
    ]


def _warnings(findings: Iterable[Finding]) -> list[str]:
    """One sentence per kind: its first finding, how many more there are, and why it matters."""
    by_kind: dict[str, list[Finding]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    out = []
    for kind, group in by_kind.items():
        text = group[0].message
        if len(group) > 1:
            text += f" (and {len(group) - 1} more {kind})"
        if kind in _WHY:
            text += f"; {_WHY[kind]}"
        out.append(text)
    return out
