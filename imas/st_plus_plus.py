"""ST++ (Yang et al., CVPR 2022) and ST as a resumable chain of ordinary training runs (docs/methods.md).

    imas-st-plus-plus --config exps/toy/st_plus_plus.yaml [--opt key=value ...] [--run-dir DIR] [--seed N]

The config is an experiment of train.method self_training (its section holds the recipe's settings). The
chain, for ST++ (self_training.selective true), as the released main.py runs it:

1. `1_supervised`: SupOnly on the labeled images; the models of epochs E/3 and 2E/3 are kept
   (train.keep_epochs) beside latest.pth (epoch E).
2. `selection`: every unlabeled image predicted by those three snapshots (no test-time augmentation); its
   reliability is the mean over the first two of the mIoU of their prediction against the last one's; the
   images ranked by it (descending, ties in split order), the first share (self_training.reliable) reliable.
3. `pseudo_labels/reliable`: the reliable images labeled by stage 1's best.pth (self_training.label_with)
   with test-time augmentation (self_training.tta_scales, tta_flip; eval.mode's whole or sliding prediction).
4. `2_reliable`: a fresh model trained on the labeled images (repeated ceil(P / L) times) and the P
   pseudo-labeled ones, the pseudo-labeled ones strongly augmented (imas.methods.self_training).
5. `pseudo_labels/unreliable`: the other images labeled by stage 2's best.pth, with test-time augmentation.
6. `3_all`: a fresh model on the labeled images and every unlabeled one: the chain's result.

ST (selective false): `1_supervised`, `pseudo_labels/all`, `2_all`. Each training is an ordinary run
directory (config.yaml, train.log, metrics.jsonl, checkpoints) trained by imas.train; each selection and
pseudo-label set is written once, atomically, with a manifest.json that a resume checks. A stopped chain
resumes where it stopped; a finished step is not redone; a changed setting is refused. The layout:
docs/run-directory.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from imas import train as training
from imas.arguments import parse_st_plus_plus
from imas.checkpoint import load_checkpoint, saved_epoch
from imas.cli import Terminated, discard_new_folders, on_exit, run_command
from imas.config import Config, save_config, to_dict
from imas.data import palette
from imas.data.io import read_image
from imas.data.layouts import Entry, resolve_entries
from imas.data.loaders import seed_worker
from imas.data.splits import read_split
from imas.dist import DistInfo, init_distributed
from imas.errors import ConfigError, DataError, RunDirError
from imas.experiment import experiment_from_dict, load_experiment
from imas.inference import inference_options, predict
from imas.logging import format_duration, format_miou
from imas.methods.self_training import LabelWith
from imas.networks import load_trained_model
from imas.normalization import normalize
from imas.precision import AUTOCAST_DTYPES
from imas.rundir import (
    RunLock,
    best_record,
    check_run_dir,
    describe_changes,
    miou_of,
    read_evaluations,
    result_changes,
)

log = logging.getLogger("imas_chain")  # not below "imas": each stage's training takes that logger over

METHOD = "self_training"
CHAIN_CONFIG = "chain.yaml"
CHAIN_LOG = "chain.log"
MANIFEST = "manifest.json"
SELECTION = "selection"
PSEUDO_LABELS = "pseudo_labels"
SPLITS = "splits"
RANKING, RELIABLE, UNRELIABLE = "ranking.csv", "reliable.txt", "unreliable.txt"
MANIFEST_FORMAT = 1
# Settings that change nothing a chain makes. Unlike a single run's, the evaluation settings do: best.pth,
# which pseudo-labels, is the best evaluation, and the selection and the labels predict with eval.mode.
NEUTRAL_KEYS = ("train.log_every", "train.image_every", "train.run_dir", "train.compile")
RESUME_HINT = "starting the same command again resumes the chain where it stopped"
REMAKE = "remove that folder and start the chain again to make it anew"


# --------------------------------------------------------------------------------- the chain's steps


@dataclass(frozen=True)
class Train:
    """A training stage: its run directory's name and the pseudo-label sets it trains on (none: SupOnly)."""

    name: str
    sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Select:
    """The ranking of the unlabeled images by the stability of stage `source`'s snapshots."""

    source: str


@dataclass(frozen=True)
class Label:
    """A pseudo-label set: the images of `images` ("unlabeled", "reliable", "unreliable") labeled by the
    checkpoint of stage `by`."""

    name: str
    images: str
    by: str


Step = Train | Select | Label


def chain_steps(cfg: Config) -> list[Step]:
    """The steps of the chain that `cfg` describes, in order (module docstring)."""
    if cfg.method_settings.selective:
        return [
            Train("1_supervised"),
            Select("1_supervised"),
            Label("reliable", "reliable", by="1_supervised"),
            Train("2_reliable", ("reliable",)),
            Label("unreliable", "unreliable", by="2_reliable"),
            Train("3_all", ("reliable", "unreliable")),
        ]
    return [Train("1_supervised"), Label("all", "unlabeled", by="1_supervised"), Train("2_all", ("all",))]


def final_stage(cfg: Config) -> str:
    """The run directory name of the chain's last stage: its result."""
    return [step for step in chain_steps(cfg) if isinstance(step, Train)][-1].name


def snapshot_epochs(epochs: int) -> list[int]:
    """The epochs whose models the selection compares: E/3, 2E/3 and E, rounded down (released main.py)."""
    return [epochs // 3, 2 * epochs // 3, epochs]


def step_name(step: Step) -> str:
    if isinstance(step, Train):
        return step.name
    if isinstance(step, Select):
        return SELECTION
    return f"{PSEUDO_LABELS}/{step.name}"


# ----------------------------------------------------------------------- reliability and ranking


def stability(predictions: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ST++'s reliability of one image from its predicted label maps [N, H, W] by N >= 2 snapshots, the last
    one the reference: the mIoU of each earlier map against the last (utils.meanIOU of the released code:
    per-class IoU from their confusion, the classes in neither map left out), then their mean. Returns
    (reliability 0-d, the N - 1 mIoUs [N - 1]) in float64, the precision the released numpy code ranks in."""
    k = num_classes
    reference, earlier = predictions[-1].flatten(), predictions[:-1].flatten(1)  # [HW], [M, HW]
    m = earlier.shape[0]
    offsets = torch.arange(m, device=predictions.device)[:, None] * (k * k)
    codes = (reference[None].long() * k + earlier.long() + offsets).flatten()
    confusion = torch.bincount(codes, minlength=m * k * k).view(m, k, k).double()  # [M, ref, earlier]
    inter = confusion.diagonal(dim1=1, dim2=2)
    union = confusion.sum(1) + confusion.sum(2) - inter
    mious = torch.nanmean(inter / union, dim=1)  # 0 / 0 = nan: a class in neither map
    return mious.sum() / m, mious


def rank(reliability: Sequence[float]) -> list[int]:
    """Indices by reliability, descending; ties keep their order (Python's stable sort, as released)."""
    return sorted(range(len(reliability)), key=lambda i: reliability[i], reverse=True)


def reliable_count(images: int, share: float) -> int:
    """How many of `images` ranked images are reliable: floor(images x share) (len // 2 for 0.5)."""
    return math.floor(images * share)


# ------------------------------------------------------------------------------------- file helpers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_torchrun(command: list[str]) -> int:
    """Run a stage's torchrun and wait for it, also when this process is interrupted or terminated: the
    signal goes to torchrun, which passes it to its workers (started outside this process's group, they
    would not get a terminal's or a SIGTERM of this process otherwise) and waits for them to save and stop;
    then this process stops as interrupted. A torchrun killed by a signal gives 128 + the signal's number."""
    process = subprocess.Popen(command)
    try:
        code = process.wait()
    except KeyboardInterrupt as stop:  # Ctrl-C or imas.cli.Terminated (SIGTERM)
        process.send_signal(signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
        process.wait()
        raise
    return 128 - code if code < 0 else code


def check_records(folder: Path, manifest: dict[str, Any], expected: dict[str, Any]) -> None:
    """One DataError sentence for the first of `expected`'s values that the folder's manifest records
    otherwise."""
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise DataError(
                f"{folder}/{MANIFEST} records {key} {manifest.get(key)!r} where this chain has {value!r}; "
                f"{REMAKE}"
            )


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def split_line(entry_tokens: tuple[str, ...]) -> str:
    return " ".join(entry_tokens)


def absolute(path: Path) -> str:
    """A path for a split file: absolute, so it reads the same whatever the data root; a split line cannot
    hold whitespace in a path."""
    text = os.path.abspath(path)
    if any(c.isspace() for c in text):
        raise DataError(
            f"{text} holds whitespace, which a split file cannot list; move it to a path without whitespace"
        )
    return text


def read_manifest(folder: Path) -> dict[str, Any]:
    """A folder's manifest.json, or one DataError sentence where it has none that reads."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(
            f"{folder} holds no readable {MANIFEST} of this version (a folder of another tool, or "
            "damaged); remove that folder and start the chain again to make it anew"
        )
    return manifest


def check_files(folder: Path, recorded: dict[str, str]) -> None:
    """Every file the manifest records is in `folder` with the recorded SHA-256: one DataError sentence."""
    missing = [name for name in recorded if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder} lacks {len(missing)} of the {len(recorded)} files its {MANIFEST} lists (first: "
            f"{missing[0]}); remove that folder and start the chain again to make it anew"
        )
    for name, digest in recorded.items():
        if sha256_file(folder / name) != digest:
            raise DataError(
                f"{folder / name} differs from the file its {MANIFEST} records; remove that folder and start "
                "the chain again to make it anew"
            )


def folder_digest(files: dict[str, str]) -> str:
    """One SHA-256 for a folder's files: of their names and SHA-256s, in name order."""
    text = "".join(f"{name}\t{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- inference over images


class Images(Dataset):
    """Whole images, untransformed: image uint8 [3, H, W] and their index."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = np.asarray(read_image(self.entries[index][1]))
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "index": index}


def each_image(cfg: Config, entries: list[Entry], what: str) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, image uint8 [1, 3, H, W]) for every entry, in order, with a log line every 30 s."""
    loader = DataLoader(
        Images(entries), batch_size=1, num_workers=cfg.data.num_workers, worker_init_fn=seed_worker
    )
    start = shown = time.perf_counter()
    for done, batch in enumerate(loader, start=1):
        yield int(batch["index"][0]), batch["image"]
        now = time.perf_counter()
        if now - shown >= 30 or done == len(entries):
            shown = now
            rate = done / max(now - start, 1e-9)
            eta = format_duration((len(entries) - done) / rate)
            log.info("%s: %d/%d images, %.1f images/s, eta %s", what, done, len(entries), rate, eta)


def predict_labels(
    cfg: Config,
    model: nn.Module,
    image: torch.Tensor,
    device: torch.device,
    scales: Sequence[float],
    flip: bool,
) -> torch.Tensor:
    """The argmax [H, W] of `model` on one uint8 image [1, 3, H, W] with eval's mode (whole or sliding) at
    `scales`, mirrored too where `flip`: the released TTA sums the softmax of every view, as `predict`
    does."""
    options = inference_options(cfg) | {"scales": list(scales), "flip": flip}
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    with autocast:
        probs = predict(model, normalize(image.to(device)), **options)
    return probs.argmax(1)[0]


# -------------------------------------------------------------------------------------------- chain


class Chain:
    """One chain directory: its config, the stages' configs, what is done, and each step."""

    def __init__(self, cfg: Config, folder: Path, info: DistInfo) -> None:
        self.cfg, self.dir, self.info = cfg, folder, info
        self.settings = cfg.method_settings
        self.steps = chain_steps(cfg)
        split = cfg.data.unlabeled_split
        self.unlabeled_lines = read_split(split)
        self.unlabeled = resolve_entries(self.unlabeled_lines, cfg.data, split)
        self.labeled = resolve_entries(read_split(cfg.data.labeled_split), cfg.data, cfg.data.labeled_split)
        ids = [entry[0] for entry in self.unlabeled]
        twice = (
            next((i for n, i in enumerate(ids) if i in ids[:n]), None) if len(set(ids)) < len(ids) else None
        )
        if twice is not None:
            raise DataError(
                f"data.unlabeled_split {split} lists the image {twice!r} twice; a pseudo-label is one file "
                "per image"
            )
        bad = next((i for i in ids if "/" in i or "\\" in i or i in ("", ".", "..")), None)
        if bad is not None:
            raise DataError(f"image id {bad!r} of {split} cannot name a pseudo-label file")
        if cfg.method_settings.selective and cfg.train.epochs < 3:
            raise ConfigError(
                "ST++ (self_training.selective) ranks images with the checkpoints of epochs E/3, 2E/3 and E: "
                f"train.epochs must be at least 3, got {cfg.train.epochs}"
            )
        if cfg.method_settings.selective:
            n = reliable_count(len(ids), self.settings.reliable)
            if not 0 < n < len(ids):
                raise ConfigError(
                    f"self_training.reliable {self.settings.reliable} of {len(ids)} unlabeled images leaves "
                    f"{n} reliable and {len(ids) - n} unreliable; both need at least one"
                )

    # ---- where things are

    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def set_dir(self, name: str) -> Path:
        return self.dir / PSEUDO_LABELS / name

    def split_path(self, stage: Train) -> Path:
        return self.dir / SPLITS / f"{stage.name}.txt"

    def label_step(self, name: str) -> Label:
        return next(s for s in self.steps if isinstance(s, Label) and s.name == name)

    def labeler(self, step: Label) -> Path:
        """The checkpoint that labels a set: best.pth (or latest.pth) of the stage before it."""
        which = "best.pth" if self.settings.label_with == LabelWith.best else "latest.pth"
        return self.stage_dir(step.by) / which

    def snapshots(self, source: str) -> list[tuple[Path, int]]:
        epochs = snapshot_epochs(self.cfg.train.epochs)
        folder = self.stage_dir(source)
        kept = [(training.kept_checkpoint(folder, epoch), epoch) for epoch in epochs[:-1]]
        return [*kept, (folder / "latest.pth", epochs[-1])]

    def set_images(self, images: str) -> list[int]:
        """The indices (into the unlabeled split) of a set's images, in the order they are labeled."""
        if images == "unlabeled":
            return list(range(len(self.unlabeled)))
        position = {entry[0]: i for i, entry in enumerate(self.unlabeled)}
        lines = read_split(self.dir / SELECTION / (RELIABLE if images == "reliable" else UNRELIABLE))
        entries = resolve_entries(lines, self.cfg.data, self.dir / SELECTION)
        return [position[entry[0]] for entry in entries]

    def set_size(self, images: str) -> int:
        """A set's size, known before the selection is made."""
        n = len(self.unlabeled)
        if images == "unlabeled":
            return n
        reliable = reliable_count(n, self.settings.reliable)
        return reliable if images == "reliable" else n - reliable

    # ---- configs

    def stage_config(self, stage: Train) -> Config:
        """A stage's config: the chain's, with what the stage trains (SupOnly with the selection's snapshots
        kept; or self_training on its labeled + pseudo-labeled split) and its own run directory."""
        data = to_dict(self.cfg)
        section = data.pop(METHOD)
        data["train"]["run_dir"] = str(self.stage_dir(stage.name))
        if not stage.sets:
            data["train"]["method"] = "supervised"
            if self.settings.selective:
                data["train"]["keep_epochs"] = snapshot_epochs(self.cfg.train.epochs)[:-1]
        else:
            pseudo = sum(self.set_size(self.label_step(name).images) for name in stage.sets)
            repeats = math.ceil(pseudo / len(self.labeled))
            data["data"]["labeled_split"] = str(self.split_path(stage))
            data[METHOD] = section | {"pseudo_from": repeats * len(self.labeled)}
        return experiment_from_dict(data)

    def stage_split(self, stage: Train) -> str:
        """A re-training stage's labeled split: the labeled images (image, ground truth) repeated
        ceil(P / L) times, then the P pseudo-labeled ones (image, pseudo-label) in the unlabeled split's
        order, as released (dataset/semi.py: one shuffled union)."""
        owner: dict[int, str] = {}
        for name in stage.sets:
            for index in self.set_images(self.label_step(name).images):
                owner[index] = name
        repeats = math.ceil(len(owner) / len(self.labeled))
        lines = [f"{absolute(image)} {absolute(label)}" for _, image, label in self.labeled] * repeats
        for index in sorted(owner):
            image_id, image, _ = self.unlabeled[index]
            lines.append(f"{absolute(image)} {absolute(self.set_dir(owner[index]) / f'{image_id}.png')}")
        return "\n".join(lines) + "\n"

    # ---- what is there (checked before any training)

    def check(self) -> None:
        """Refuse, in one sentence, a chain directory whose contents this chain did not make or cannot
        continue from: a stage run of other settings, a selection or pseudo-label folder that is incomplete
        or made from other checkpoints, a step done without the steps it needs."""
        for step in self.steps:
            if isinstance(step, Train):
                self.check_stage(step)
            elif isinstance(step, Select):
                self.check_selection(step)
            else:
                self.check_set(step)

    def check_stage(self, stage: Train) -> None:
        folder = self.stage_dir(stage.name)
        latest, config = folder / "latest.pth", folder / "config.yaml"
        if latest.is_file():
            stored = load_checkpoint(latest, mmap=True).get("config", {})
        elif config.is_file():
            stored = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        else:
            return
        changes = result_changes(stored, self.stage_config(stage))
        if changes:
            raise RunDirError(
                f"stage directory {folder} holds a run made under other settings than this chain's stage "
                f"{stage.name} ({describe_changes(changes)}); give this chain its own --run-dir, or remove "
                "that folder"
            )
        if latest.is_file():
            for name in stage.sets:
                if not (self.set_dir(name) / MANIFEST).is_file():
                    raise RunDirError(
                        f"stage directory {folder} holds a run, but the pseudo-labels it trains on "
                        f"({self.set_dir(name)}) are gone; remove {folder} to train it again"
                    )

    def check_made_by(self, folder: Path, recorded: list[dict[str, Any]], expected: list[Path]) -> None:
        """The checkpoints a manifest records are this chain's, with the bytes they had then."""
        paths = [Path(item.get("path", "")) for item in recorded]
        if [p.resolve() for p in paths] != [p.resolve() for p in expected]:
            raise DataError(
                f"{folder} was made from {', '.join(map(str, paths))}, not from this chain's "
                f"{', '.join(map(str, expected))}; {REMAKE}"
            )
        for item, path in zip(recorded, expected):
            if not path.is_file():
                raise DataError(f"{folder} was made from {path}, which is no longer there; {REMAKE}")
            if sha256_file(path) != item.get("sha256"):
                raise DataError(f"{folder} was made from another {path} than the one there now; {REMAKE}")

    def check_selection(self, step: Select) -> None:
        folder = self.dir / SELECTION
        if not folder.exists():
            return
        manifest = read_manifest(folder)
        check_files(folder, manifest.get("files", {}))
        expected = {
            "images": len(self.unlabeled),
            "reliable": reliable_count(len(self.unlabeled), self.settings.reliable),
            "unlabeled_split": self.cfg.data.unlabeled_split,
        }
        check_records(folder, manifest, expected)
        self.check_made_by(folder, manifest.get("snapshots", []), [p for p, _ in self.snapshots(step.source)])

    def check_set(self, step: Label) -> None:
        folder = self.set_dir(step.name)
        if not folder.exists():
            return
        manifest = read_manifest(folder)
        if step.images != "unlabeled" and not (self.dir / SELECTION).exists():
            raise DataError(f"{folder} holds pseudo-labels of a selection that is gone; {REMAKE}")
        expected = {"images": self.set_size(step.images), "inference": self.inference_record()}
        check_records(folder, manifest, expected)
        files = manifest.get("files", {})
        if len(files) != manifest["images"] or manifest.get("digest") != folder_digest(files):
            raise DataError(
                f"{folder}/{MANIFEST} contradicts itself; remove that folder and start the chain again"
            )
        check_files(folder, files)
        if step.images != "unlabeled":
            ids = [self.unlabeled[i][0] for i in self.set_images(step.images)]
            if sorted(files) != sorted(f"{i}.png" for i in ids):
                raise DataError(
                    f"{folder} holds the pseudo-labels of other images than {self.dir / SELECTION}'s "
                    f"{step.images} ones; remove that folder and start the chain again to make it anew"
                )
        self.check_made_by(folder, [manifest.get("checkpoint", {})], [self.labeler(step)])

    def inference_record(self) -> dict[str, Any]:
        """How the pseudo-labels are predicted (what their manifest records)."""
        options = inference_options(self.cfg)
        return options | {"scales": list(self.settings.tta_scales), "flip": self.settings.tta_flip}

    # ---- running

    def run(self) -> int:
        """Every step not done yet, in order; a stage's exit status other than 0 ends the chain with it."""
        started = time.perf_counter()
        for number, step in enumerate(self.steps, start=1):
            where = f"step {number}/{len(self.steps)} {step_name(step)}"
            if isinstance(step, Train):
                code = self.train(step, where)
                if code:
                    return code
            elif isinstance(step, Select):
                self.select(step, where)
            else:
                self.label(step, where)
        self.summary(time.perf_counter() - started)
        return 0

    def finished(self, stage: Train) -> bool:
        """Whether the stage trained all its epochs and its best.pth holds the epoch latest.pth names as best.
        latest.pth is written before best.pth, so a stop between the two leaves best.pth behind: the stage is
        then run again, and its resume (imas.train) rebuilds best.pth before training no more epochs."""
        folder = self.stage_dir(stage.name)
        if not (folder / "latest.pth").is_file():
            return False
        ckpt = load_checkpoint(folder / "latest.pth", mmap=True)
        if int(ckpt.get("epoch", 0)) < self.cfg.train.epochs:
            return False
        return not ckpt.get("best_epoch") or saved_epoch(folder / "best.pth") == ckpt["best_epoch"]

    def train(self, stage: Train, where: str) -> int:
        folder = self.stage_dir(stage.name)
        if self.finished(stage):
            log.info("%s: done (%s)", where, folder)
            return 0
        if stage.sets:
            path = self.split_path(stage)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = self.stage_split(stage)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                write_atomic(path, text)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "config.yaml"
        save_config(self.stage_config(stage), config)
        log.info("%s: training %s", where, folder)
        if self.nproc > 1:  # the stage's own torchrun; the selection and labels stay in this process
            command = [
                *("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(self.nproc)),
                *("-m", "imas.train", "--config", str(config), "--run-dir", str(folder)),
                *("--device", self.device_arg),
            ]
            return run_torchrun([sys.executable, *command])
        args = argparse.Namespace(
            config=str(config), opt=[], run_dir=str(folder), device=self.device_arg, resume_anyway=False
        )
        return run_command(lambda: training.train(args), terminate=True, interrupted=RESUME_HINT)

    device_arg = "auto"  # --device
    nproc = 1  # --nproc-per-node

    def load(self, path: Path, stage: str, epoch: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """The network of a stage's checkpoint, for inference; `epoch`: the epoch it must hold."""
        ckpt = load_checkpoint(path)
        if epoch is not None and ckpt.get("epoch") != epoch:
            raise RunDirError(
                f"{path} holds epoch {ckpt.get('epoch')}, not epoch {epoch}; remove {path.parent}"
            )
        cfg = self.stage_config(next(s for s in self.steps if isinstance(s, Train) and s.name == stage))
        model, _ = load_trained_model(cfg, ckpt, path, "student", self.info)
        record = {"path": str(path), "sha256": sha256_file(path), "epoch": ckpt.get("epoch")}
        if isinstance(ckpt.get("best_miou"), float):
            record["best_miou"] = ckpt["best_miou"]
        return model, record

    def select(self, step: Select, where: str) -> None:
        folder = self.dir / SELECTION
        if folder.exists():
            log.info("%s: done (%s)", where, folder)
            return
        log.info(
            "%s: ranking %d unlabeled images by the stability of 3 snapshots", where, len(self.unlabeled)
        )
        loaded = [self.load(path, step.source, epoch) for path, epoch in self.snapshots(step.source)]
        models = [model for model, _ in loaded]
        reliability, mious = [], []
        for _, image in each_image(self.cfg, self.unlabeled, "selection"):
            with torch.inference_mode():
                maps = torch.stack(
                    [predict_labels(self.cfg, m, image, self.info.device, (1.0,), False) for m in models]
                )
                value, per_snapshot = stability(maps, self.cfg.data.num_classes)
            reliability.append(value)
            mious.append(per_snapshot)
        values = torch.stack(reliability).cpu().tolist()  # one host synchronisation for the whole split
        per = torch.stack(mious).cpu().tolist()
        order = rank(values)
        n = reliable_count(len(order), self.settings.reliable)
        tmp = self.dir / f".{SELECTION}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        epochs = [epoch for _, epoch in self.snapshots(step.source)]
        writer.writerow(
            ["rank", "id", "reliability", *(f"miou_epoch{e}_vs_{epochs[-1]}" for e in epochs[:-1])]
        )
        for position, index in enumerate(order, start=1):
            row = [position, self.unlabeled[index][0], repr(values[index]), *map(repr, per[index])]
            writer.writerow(row)
        (tmp / RANKING).write_text(table.getvalue(), encoding="utf-8")
        for name, part in ((RELIABLE, order[:n]), (UNRELIABLE, order[n:])):
            (tmp / name).write_text("".join(split_line(self.unlabeled_lines[i]) + "\n" for i in part))
        files = {name: sha256_file(tmp / name) for name in (RANKING, RELIABLE, UNRELIABLE)}
        manifest = {
            "format": MANIFEST_FORMAT,
            "made": "ST++ selection: the mean mIoU of each snapshot's prediction against the last one's",
            "unlabeled_split": self.cfg.data.unlabeled_split,
            "images": len(order),
            "reliable": n,
            "snapshots": [record for _, record in loaded],
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder)
        log.info(
            "%s: %d reliable (reliability %.4f to %.4f), %d unreliable -> %s",
            where,
            n,
            values[order[0]],
            values[order[n - 1]],
            len(order) - n,
            folder,
        )

    def label(self, step: Label, where: str) -> None:
        folder = self.set_dir(step.name)
        if folder.exists():
            log.info("%s: done (%s)", where, folder)
            return
        indices = self.set_images(step.images)
        checkpoint = self.labeler(step)
        model, record = self.load(checkpoint, step.by)
        log.info(
            "%s: labeling %d images with %s (epoch %s) and test-time augmentation (scales %s, flip %s)",
            where,
            len(indices),
            checkpoint,
            record["epoch"],
            self.settings.tta_scales,
            self.settings.tta_flip,
        )
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        colours = [v for colour in palette(self.cfg.data) for v in colour]
        entries = [self.unlabeled[i] for i in indices]
        files = {}
        for index, image in each_image(self.cfg, entries, f"pseudo-labels {step.name}"):
            with torch.inference_mode():
                labels = predict_labels(
                    self.cfg, model, image, self.info.device, self.settings.tta_scales, self.settings.tta_flip
                )
            name = f"{entries[index][0]}.png"
            png = Image.fromarray(labels.to(torch.uint8).cpu().numpy(), mode="P")
            png.putpalette(colours)
            png.save(tmp / name)
            files[name] = sha256_file(tmp / name)
        manifest = {
            "format": MANIFEST_FORMAT,
            "made": f"pseudo-labels of the {step.images} images by stage {step.by}",
            "checkpoint": record,
            "inference": self.inference_record(),
            "images": len(files),
            "digest": folder_digest(files),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder)
        log.info("%s: %d pseudo-labels -> %s", where, len(files), folder)

    def summary(self, seconds: float) -> None:
        lines = []
        for step in self.steps:
            if isinstance(step, Train):
                records = read_evaluations(self.stage_dir(step.name))
                if records:
                    best = best_record(records)
                    lines.append(
                        f"  {step.name:<14} best val mIoU {format_miou(miou_of(best))} at epoch "
                        f"{best['epoch']}, final {format_miou(miou_of(records[-1]))}"
                    )
        result = self.stage_dir(final_stage(self.cfg))
        log.info(
            "chain done in %s (this attempt); the result is %s\n%s",
            format_duration(seconds),
            result,
            "\n".join(lines),
        )


# ------------------------------------------------------------------------------------------- command


def default_chain_dir(config_path: str) -> Path:
    return training.default_run_dir(config_path)


def chain_changes(stored: dict[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
    """The settings in which `cfg` differs from a chain's stored config, evaluation settings included."""

    def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
        return out

    old, new = flat(to_dict(experiment_from_dict(stored))), flat(to_dict(cfg))
    keys = [key for key in new if not key.startswith(NEUTRAL_KEYS)]
    return [(key, old.get(key), new[key]) for key in keys if old.get(key) != new[key]]


def setup_chain_log(folder: Path) -> None:
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    for handler in (
        logging.StreamHandler(sys.stdout),
        logging.FileHandler(folder / CHAIN_LOG, encoding="utf-8"),
    ):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    on_exit(lambda: [h.close() for h in log.handlers])


def run_chain(args: argparse.Namespace) -> int:
    cfg = load_experiment(args.config, args.opt)
    if cfg.train.method != METHOD:
        raise ConfigError(
            f"imas-st-plus-plus runs configs of train.method {METHOD}; {args.config} trains "
            f"{cfg.train.method} (imas-train runs it)"
        )
    if not cfg.data.unlabeled_split:
        raise ConfigError(
            "a self-training chain pseudo-labels the unlabeled images: set data.unlabeled_split"
        )
    if cfg.method_settings.pseudo_from != -1:
        raise ConfigError(
            "self_training.pseudo_from is set by the chain in each stage's config; leave it at -1 in the "
            "chain's config"
        )
    # Absolute: the stages' configs name their split files by it, and a resume may spell it otherwise.
    folder = Path(os.path.abspath(args.run_dir or cfg.train.run_dir or default_chain_dir(args.config)))
    check_run_dir(folder)
    info = init_distributed(args.device)
    if info.world_size > 1:
        raise ConfigError(
            "imas-st-plus-plus starts the stages' torchrun itself: start it without torchrun, with "
            "--nproc-per-node N"
        )
    chain = Chain(cfg, folder, info)  # reads the splits: a data problem is said before anything is made
    chain.device_arg, chain.nproc = args.device, args.nproc_per_node
    discard_new_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = RunLock.acquire(folder)
    on_exit(lock.release)
    stored = folder / CHAIN_CONFIG
    if stored.is_file():
        changes = chain_changes(yaml.safe_load(stored.read_text(encoding="utf-8")) or {}, cfg)
        if changes:
            raise RunDirError(
                f"chain directory {folder} holds a chain made under other settings "
                f"({describe_changes(changes)}); use a new --run-dir (or train.run_dir) for these settings"
            )
    for leftover in (folder / f".{SELECTION}.tmp", *(folder / PSEUDO_LABELS).glob(".*.tmp")):
        shutil.rmtree(leftover, ignore_errors=True)  # a selection or labeling stopped midway
    chain.check()
    save_config(cfg, stored)
    setup_chain_log(folder)
    log.info(
        "chain %s: %s, config %s", folder, "ST++" if cfg.method_settings.selective else "ST", args.config
    )
    return chain.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_st_plus_plus(argv)
    return run_command(lambda: run_chain(args), terminate=True, interrupted=RESUME_HINT)


if __name__ == "__main__":
    raise SystemExit(main())
