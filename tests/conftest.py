"""Shared helpers: tiny fake datasets written in the real VOC / Cityscapes / custom layouts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imas.config import DataConfig, DatasetKind
from imas.data.classes import voc_palette
from imas.data.toy import make_toy_dataset


def class_color(label: np.ndarray) -> np.ndarray:
    """An RGB colour per class value, so an image can encode its own label: [H, W] -> [H, W, 3].

    Random colours rather than a formula: colours on a line would make a blend of two look like a third.
    """
    return _CLASS_COLORS[label]


_CLASS_COLORS = np.random.default_rng(1234).integers(0, 256, size=(256, 3)).astype(np.uint8)


def block_label(
    rng: np.random.Generator, height: int, width: int, num_classes: int, block: int = 8
) -> np.ndarray:
    """Random class per block x block tile, uint8 [H, W]: asymmetric, so a flip or shift would show."""
    tiles = rng.integers(0, num_classes, size=(-(-height // block), -(-width // block)))
    return np.kron(tiles, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)


def write_split(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pair(image_path: Path, label_path: Path | None, label: np.ndarray) -> None:
    """Write an image whose colours encode `label`, and (if a path is given) the label as an 'L' PNG."""
    image_path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(class_color(label))
    if image_path.suffix == ".jpg":
        image.save(image_path, quality=95)
    else:
        image.save(image_path)
    if label_path is not None:
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label, mode="L").save(label_path)


def make_voc(
    root: Path, ids: list[str], num_classes: int = 21, label_mode: str = "L", seed: int = 0
) -> dict[str, np.ndarray]:
    """VOC layout: JPEGImages/<id>.jpg and SegmentationClassAug/<id>.png ('L') or SegmentationClass ('P')."""
    rng = np.random.default_rng(seed)
    labels = {}
    label_dir = "SegmentationClassAug" if label_mode == "L" else "SegmentationClass"
    for image_id in ids:
        height, width = (int(v) for v in rng.integers(24, 48, size=2))
        label = block_label(rng, height, width, num_classes)
        label[0, 0] = 255  # VOC labels hold 255 on object borders
        write_pair(root / "JPEGImages" / f"{image_id}.jpg", None, label)
        path = root / label_dir / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if label_mode == "P":
            palette_image = Image.fromarray(label, mode="P")
            palette_image.putpalette([v for color in voc_palette(256) for v in color])
            palette_image.save(path)
        else:
            Image.fromarray(label, mode="L").save(path)
        labels[image_id] = label
    return labels


def make_cityscapes(root: Path, names: dict[str, list[str]], seed: int = 0) -> dict[str, np.ndarray]:
    """leftImg8bit/<split>/<city>/<name>_leftImg8bit.png + gtFine/.../<name>_gtFine_labelTrainIds.png."""
    rng = np.random.default_rng(seed)
    labels = {}
    for split, stems in names.items():
        for stem in stems:
            city = stem.split("_")[0]
            label = block_label(rng, 32, 64, 19)
            write_pair(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png",
                label,
            )
            labels[stem] = label
    return labels


def make_custom(root: Path, ids: list[str], num_classes: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """images/<id>.<png|jpg|bmp> (rotating extensions) + masks/<id>.png."""
    rng = np.random.default_rng(seed)
    labels = {}
    for n, image_id in enumerate(ids):
        label = block_label(rng, 40, 56, num_classes)
        ext = (".png", ".jpg", ".bmp")[n % 3]
        write_pair(root / "images" / f"{image_id}{ext}", root / "masks" / f"{image_id}.png", label)
        labels[image_id] = label
    return labels


@pytest.fixture
def voc_cfg(tmp_path: Path) -> DataConfig:
    """A VOC dataset of 5 labeled, 13 unlabeled (no masks needed, so none for 3 of them) and 4 val images."""
    root = tmp_path / "voc"
    labeled = [f"l{i}" for i in range(5)]
    unlabeled = [f"u{i}" for i in range(13)]
    val = [f"v{i}" for i in range(4)]
    make_voc(root, labeled + unlabeled[:10] + val)
    rng = np.random.default_rng(1)
    for image_id in unlabeled[10:]:
        write_pair(root / "JPEGImages" / f"{image_id}.jpg", None, block_label(rng, 30, 40, 21))
    return DataConfig(
        dataset=DatasetKind.voc,
        root=str(root),
        labeled_split=str(write_split(root / "splits" / "labeled.txt", labeled)),
        unlabeled_split=str(write_split(root / "splits" / "unlabeled.txt", unlabeled)),
        val_split=str(write_split(root / "splits" / "val.txt", val)),
        num_classes=21,
        crop_size=32,
        long_side=[24, 64],
        num_workers=0,
    )


# ------------------------------------------------------------------ the toy data for end-to-end runs


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> Path:
    """A toy dataset with short split lists: 8 labeled, 16 unlabeled, 6 val images."""
    root = make_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", seed=0)
    for name, count in (("labeled", 8), ("unlabeled", 16), ("val", 6)):
        ids = (root / "splits" / f"{name}.txt").read_text().split()[:count]
        (root / "splits" / f"small_{name}.txt").write_text("\n".join(ids) + "\n")
    return root


def toy_data(root: Path, splits: str = "", **keys) -> dict:
    """The data section of a config reading a toy dataset made by make_toy_dataset: its split lists
    splits/<splits>labeled.txt etc. (splits="small_": the `toy` fixture's short lists), plus `keys`."""
    return {
        "dataset": "voc",
        "root": str(root),
        "labeled_split": str(root / f"splits/{splits}labeled.txt"),
        "unlabeled_split": str(root / f"splits/{splits}unlabeled.txt"),
        "val_split": str(root / f"splits/{splits}val.txt"),
        "num_classes": 6,
    } | keys


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny DeepLabv3+ saved the way training saves it (config + weights) as best.pth, beside
    its config c.yaml (a toy dataset of 2 + 2 + 2 images), for the commands that read a checkpoint."""
    import torch

    from imas.checkpoint import save_checkpoint
    from imas.config import load_config, to_dict
    from imas.dist import DistInfo
    from imas.models import build_model

    folder = tmp_path_factory.mktemp("ckpt")
    root = make_toy_dataset(folder / "toy", sizes={"labeled": 2, "unlabeled": 2, "val": 2})
    config = {
        "data": toy_data(root, num_workers=0),
        "model": {"encoder": "resnet18", "stem": "standard", "decoder_channels": 16, "backbone_width": 8},
        "eval": {"window": 48},
    }
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    cfg = load_config(folder / "c.yaml")
    torch.manual_seed(0)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    path = folder / "best.pth"
    save_checkpoint(
        {"config": to_dict(cfg), "model": build_model(cfg, info, pretrained=False).state_dict()}, path
    )
    return path


# What each method's few toy steps need beyond small_config: teacher-student thresholds that leave some
# pixels confident and whole CutMix groups; U2PL's representation head, and queues that fill in a few steps.
FEW_STEP_SECTIONS: dict[str, dict[str, dict]] = {
    "imas": {"imas": {"threshold": 0.5, "group_size": 2}},
    "mean_teacher": {"mean_teacher": {"threshold": 0.5, "group_size": 2}},
    "ps_mt": {"ps_mt": {"warm_up_epochs": 1, "threshold": 0.0, "top_k": 2}},  # teachers from scratch
    # a re-training stage of ST++ as imas-st-plus-plus writes it: entries from 4 on are "pseudo-labeled"
    "self_training": {"self_training": {"pseudo_from": 4}},
    "unimatch_v2": {"unimatch_v2": {"threshold": 0.0}},  # every pixel a target within a few steps
    "u2pl": {
        "model": {"representation": 16},
        "u2pl": {"sup_only_epochs": 0, "queue_size": 64, "queue_size_class0": 64, "num_queries": 16},
    },
}


def small_config(tmp_path: Path, toy: Path, **sections) -> Path:
    cfg = {
        "data": toy_data(toy, "small_", crop_size=64, long_side=[64, 96], num_workers=0),
        # A quarter-width ResNet-18 and a 32-channel decoder: the same code paths, a fraction of the time.
        "model": {"encoder": "resnet18", "output_stride": 16, "backbone_width": 16, "decoder_channels": 32},
        "optim": {"lr": 0.01, "decoder_lr_mult": 1.0},
        "train": {"epochs": 2, "batch_size": 4, "log_every": 2, "eval_every": 1},
    }
    for section, values in sections.items():  # a method's section (e.g. imas=...) only when given
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------- running train_semi.py


REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc_per_node 2 ARGS` in the repository (gloo on the
    CPU, one thread per process), its output captured."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def start_training(config: Path, run_dir: Path, own_group: bool = False) -> subprocess.Popen:
    """train_semi.py on the CPU in a process of its own (one thread), stderr piped, not waited for;
    own_group: in a new session, so that its whole process group (with loader workers) can be signalled."""
    cmd = [
        sys.executable,
        "train_semi.py",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
        "--device",
        "cpu",
    ]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=own_group,
    )


def stop_after_save(monkeypatch, when: Callable[[Path, object], bool]) -> Callable[[], None]:
    """Make training (imas.train) stop as a killed job would (KeyboardInterrupt) right after a checkpoint
    write for which when(path, state) is true; returns the function that restores normal saving."""
    from imas import train as train_cli

    original = train_cli.save_training_state

    def save_then_stop(path, cfg, state, *args, **kwargs):
        original(path, cfg, state, *args, **kwargs)
        if when(path, state):
            raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "save_training_state", save_then_stop)
    return lambda: monkeypatch.setattr(train_cli, "save_training_state", original)


# ---------------------------------------------------------------------------- golden values


def cpu_identity() -> str:
    """The CPU golden values are compared bit for bit on: the vector ISA torch dispatches to and the
    processor's model name (two AVX-512 CPUs of other vendors take other oneDNN kernels)."""
    import torch

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return f"{torch.backends.cpu.get_cpu_capability()} {model}".strip()


# Fixtures of scope "session" that train a run (tests/run_fixtures.py): a test using one is end-to-end.
TRAINING_FIXTURES = {"imas_run", "suponly_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` marker (pyproject.toml) on every test that needs a trained run, however it gets one."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
