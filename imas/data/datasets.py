"""Segmentation datasets (labeled / unlabeled / val) over VOC, Cityscapes and custom folder layouts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from imas.config import DataConfig, DatasetKind
from imas.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, VOC_CLASSES, voc_palette
from imas.data.io import check_same_size, read_image, read_label
from imas.data.layouts import Entry, check_paths, resolve_entries
from imas.data.splits import read_split
from imas.data.transforms import weak_transform
from imas.errors import DataError

Mode = Literal["labeled", "unlabeled", "val"]

CLASS_NAMES_FILE = "class_names.txt"


class SegmentationDataset(Dataset):
    """Samples of one split; see `__getitem__` for the three sample layouts."""

    def __init__(
        self,
        entries: list[Entry],
        mode: Mode,
        cfg: DataConfig,
        class_names: list[str],
        palette: list[tuple[int, int, int]],
    ) -> None:
        self.ids = [entry[0] for entry in entries]
        self.images = [entry[1] for entry in entries]
        # Unlabeled images need no mask, so their label paths are never read.
        self.labels = [entry[2] for entry in entries] if mode != "unlabeled" else []
        self.mode = mode
        self.cfg = cfg
        self.class_names = class_names
        self.palette = palette

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        """labeled:   image uint8 [3, S, S], mask int64 [S, S] (255 = ignore / padding), index;
        unlabeled: image uint8 [3, S, S] (weak view), valid bool [S, S] (False on padding), index;
        val:       image uint8 [3, H, W] untransformed, mask int64 [H, W], index.
        """
        image = read_image(self.images[index])
        if self.mode == "unlabeled":
            # A zero label run through the same transform marks the crop padding with 255.
            label = Image.new("L", image.size, 0)
        else:
            label = read_label(self.labels[index], self.cfg.num_classes)
            check_same_size(image, label, self.labels[index])
        if self.mode == "val":
            image_arr, label_arr = np.asarray(image), np.asarray(label)
        else:
            image_arr, label_arr = weak_transform(image, label, self.cfg)
        image_t = torch.from_numpy(np.ascontiguousarray(image_arr.transpose(2, 0, 1)))
        label_t = torch.from_numpy(np.array(label_arr, dtype=np.int64))
        if self.mode == "unlabeled":
            return {"image": image_t, "valid": label_t != IGNORE_INDEX, "index": index}
        return {"image": image_t, "mask": label_t, "index": index}


@dataclass
class Datasets:
    labeled: SegmentationDataset
    unlabeled: SegmentationDataset | None
    val: SegmentationDataset
    # Number of images in the unlabeled split (0 when none is configured), also known when the unlabeled
    # dataset is not built: supervised-only runs still use it as the epoch length.
    unlabeled_count: int = 0


def build_datasets(cfg: DataConfig, with_unlabeled: bool) -> Datasets:
    """The labeled, unlabeled (if `with_unlabeled`) and val datasets; checks that every listed file exists."""
    check_paths(cfg, with_unlabeled)
    names, colors = class_names(cfg), palette(cfg)

    def build(split: str, mode: Mode) -> SegmentationDataset:
        entries = resolve_entries(read_split(split), cfg, split)
        _check_files_exist(entries, split, with_labels=mode != "unlabeled")
        return SegmentationDataset(entries, mode, cfg, names, colors)

    labeled = build(cfg.labeled_split, "labeled")
    unlabeled, unlabeled_count = None, 0
    if cfg.unlabeled_split:
        if with_unlabeled:
            unlabeled = build(cfg.unlabeled_split, "unlabeled")
            unlabeled_count = len(unlabeled)
        else:
            unlabeled_count = len(read_split(cfg.unlabeled_split))
    return Datasets(
        labeled=labeled,
        unlabeled=unlabeled,
        val=build(cfg.val_split, "val"),
        unlabeled_count=unlabeled_count,
    )


SPLIT_KEYS = ("labeled_split", "unlabeled_split", "val_split")


def split_digests(cfg: DataConfig) -> dict[str, str]:
    """The SHA-256 of each named split file's bytes, by its key (`data.labeled_split`, ...). A checkpoint
    keeps them, so a list edited between a stop and a resume is noticed although its path is unchanged."""
    digests = {}
    for key in SPLIT_KEYS:
        path = Path(getattr(cfg, key))
        if getattr(cfg, key) and path.is_file():
            digests[f"data.{key}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _check_files_exist(entries: list[Entry], split: str, with_labels: bool) -> None:
    """Fail at construction, not hours into training, if any listed file is missing."""
    missing = [entry[1] for entry in entries if not entry[1].is_file()]
    if with_labels:
        missing += [entry[2] for entry in entries if not entry[2].is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} file(s) listed in split {split} do not exist; the first is {missing[0]}"
        )


def class_names(cfg: DataConfig) -> list[str]:
    """cfg.class_names, else <root>/class_names.txt, else the dataset's own names, else class_0, class_1..."""
    if cfg.class_names:
        return list(cfg.class_names)
    names_file = Path(cfg.root) / CLASS_NAMES_FILE
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != cfg.num_classes:
            raise DataError(
                f"{names_file} lists {len(names)} class names but data.num_classes is {cfg.num_classes}"
            )
        twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
        if twice is not None:  # the IoU table and the metrics are keyed by name
            raise DataError(f"{names_file} lists the class name {twice!r} twice; class names must be unique")
        return names
    defaults = {DatasetKind.voc: VOC_CLASSES, DatasetKind.cityscapes: CITYSCAPES_CLASSES}.get(cfg.dataset)
    if defaults is not None and len(defaults) == cfg.num_classes:
        return list(defaults)
    return [f"class_{i}" for i in range(cfg.num_classes)]


def palette(cfg: DataConfig) -> list[tuple[int, int, int]]:
    """One (r, g, b) per class: cfg.palette, else Cityscapes' own colours, else the VOC colour map."""
    if cfg.palette:
        return [(int(c[0]), int(c[1]), int(c[2])) for c in cfg.palette[: cfg.num_classes]]
    if cfg.dataset == DatasetKind.cityscapes and cfg.num_classes == len(CITYSCAPES_PALETTE):
        return list(CITYSCAPES_PALETTE)
    return voc_palette(cfg.num_classes)
