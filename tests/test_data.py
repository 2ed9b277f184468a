"""Datasets, split formats, joint transforms, loaders and every user-data error of imas.data (CPU, fast)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import block_label, class_color, make_cityscapes, make_custom, make_voc, write_pair, write_split
from PIL import Image
from torch.utils.data import Dataset

from imas.config import DataConfig, DatasetKind, ResizeRule
from imas.data import (
    MEAN_RGB_UINT8,
    build_datasets,
    build_train_loaders,
    build_val_loader,
    class_names,
    palette,
)
from imas.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, VOC_CLASSES, voc_palette
from imas.data.datasets import Datasets
from imas.data.loaders import EpochShardSampler, StridedSampler, derive_seed
from imas.data.transforms import weak_transform
from imas.errors import DataError

# ------------------------------------------------------------------------------------------ readers


@pytest.mark.parametrize("label_mode", ["L", "P"])
def test_voc_reads_index_and_palette_labels(tmp_path: Path, label_mode: str) -> None:
    labels = make_voc(tmp_path, ["a", "b"], label_mode=label_mode)
    cfg = DataConfig(
        root=str(tmp_path),
        labeled_split=str(write_split(tmp_path / "l.txt", ["a"])),
        val_split=str(write_split(tmp_path / "v.txt", ["# val ids", "", "a", "b  # trailing comment"])),
        label_dir="SegmentationClassAug" if label_mode == "L" else "SegmentationClass",
    )
    data = build_datasets(cfg, with_unlabeled=False)
    assert data.val.ids == ["a", "b"] and data.unlabeled is None
    for index, image_id in enumerate(data.val.ids):
        sample = data.val[index]
        label = labels[image_id]
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, *label.shape)
        assert sample["mask"].dtype == torch.int64 and sample["index"] == index
        # Palette PNGs must give the indices themselves, not grey levels of their colours.
        assert np.array_equal(sample["mask"].numpy(), label)


def test_voc_pair_lines(tmp_path: Path) -> None:
    labels = make_voc(tmp_path, ["a", "b"])
    pairs = [f"JPEGImages/{i}.jpg SegmentationClassAug/{i}.png" for i in ("a", "b")]
    cfg = DataConfig(
        root=str(tmp_path),
        labeled_split=str(write_split(tmp_path / "l.txt", pairs)),
        val_split=str(write_split(tmp_path / "v.txt", ["JPEGImages/b.jpg"])),  # one image path: label derived
    )
    data = build_datasets(cfg, with_unlabeled=False)
    assert data.labeled.ids == ["a", "b"] and data.val.ids == ["b"]
    assert np.array_equal(data.val[0]["mask"].numpy(), labels["b"])


def test_cityscapes_path_pair_and_id_lines(tmp_path: Path) -> None:
    labels = make_cityscapes(
        tmp_path, {"train": ["aachen_000000_000019", "bochum_000000_000313"], "val": ["lindau_000000_000019"]}
    )
    cfg = DataConfig(
        dataset=DatasetKind.cityscapes,
        root=str(tmp_path),
        num_classes=19,
        labeled_split=str(
            write_split(
                tmp_path / "l.txt",
                [
                    "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
                    "leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png "
                    "gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png",
                ],
            )
        ),
        unlabeled_split=str(
            write_split(tmp_path / "u.txt", ["aachen_000000_000019", "train/bochum/bochum_000000_000313"])
        ),
        val_split=str(write_split(tmp_path / "v.txt", ["lindau_000000_000019"])),
        crop_size=24,
        resize=ResizeRule.scale,
        base_size=[32, 64],
    )
    data = build_datasets(cfg, with_unlabeled=True)
    assert data.labeled.ids == ["aachen_000000_000019", "bochum_000000_000313"]
    assert data.unlabeled is not None and data.unlabeled.ids == data.labeled.ids
    assert np.array_equal(data.val[0]["mask"].numpy(), labels["lindau_000000_000019"])
    assert data.labeled[1]["mask"].shape == (24, 24)
    assert data.val.class_names == CITYSCAPES_CLASSES and data.val.palette == CITYSCAPES_PALETTE


def test_custom_layout_any_image_extension(tmp_path: Path) -> None:
    ids = ["x0", "x1", "x2", "x3"]
    labels = make_custom(tmp_path, ids)
    cfg = DataConfig(
        dataset=DatasetKind.custom,
        root=str(tmp_path),
        num_classes=4,
        labeled_split=str(write_split(tmp_path / "l.txt", ids[:2])),
        unlabeled_split=str(write_split(tmp_path / "u.txt", ["images/x2.bmp", "images/x3.png masks/x3.png"])),
        val_split=str(write_split(tmp_path / "v.txt", ids)),
        crop_size=16,
    )
    data = build_datasets(cfg, with_unlabeled=True)
    for index, image_id in enumerate(ids):
        assert np.array_equal(data.val[index]["mask"].numpy(), labels[image_id])
    assert data.unlabeled is not None and data.unlabeled.ids == ["x2", "x3"]
    assert data.val.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert data.val.palette == voc_palette(4)


def test_unlabeled_images_need_no_masks(voc_cfg: DataConfig) -> None:
    data = build_datasets(voc_cfg, with_unlabeled=True)
    assert data.unlabeled is not None and len(data.unlabeled) == 13 and data.unlabeled_count == 13
    sample = data.unlabeled[12]  # written without a mask
    assert set(sample) == {"image", "valid", "index"}
    assert sample["image"].shape == (3, 32, 32) and sample["valid"].dtype == torch.bool


def test_class_names_and_palette_sources(tmp_path: Path) -> None:
    cfg = DataConfig(root=str(tmp_path))
    assert class_names(cfg) == VOC_CLASSES and palette(cfg) == voc_palette(21)
    assert palette(cfg)[15] == (192, 128, 128)  # VOC's "person" colour
    cityscapes = DataConfig(dataset=DatasetKind.cityscapes, root=str(tmp_path), num_classes=19)
    assert class_names(cityscapes) == CITYSCAPES_CLASSES and palette(cityscapes)[0] == (128, 64, 128)
    custom = DataConfig(
        dataset=DatasetKind.custom, root=str(tmp_path), num_classes=3, palette=[[1, 2, 3]] * 3
    )
    assert class_names(custom) == ["class_0", "class_1", "class_2"] and palette(custom) == [(1, 2, 3)] * 3
    (tmp_path / "class_names.txt").write_text("sky\nsea\nsand\n")
    assert class_names(custom) == ["sky", "sea", "sand"]
    assert class_names(dataclasses.replace(custom, class_names=["a", "b", "c"])) == ["a", "b", "c"]
    with pytest.raises(DataError, match="class_names.txt lists 3 class names but data.num_classes is 4"):
        class_names(dataclasses.replace(custom, num_classes=4))
    (tmp_path / "class_names.txt").write_text("sky\nsea\nsky\n")
    with pytest.raises(DataError, match="lists the class name 'sky' twice; class names must be unique"):
        class_names(custom)


# --------------------------------------------------------------------------------------- transforms


def _alignment_cfg(resize: ResizeRule, crop: int) -> DataConfig:
    return DataConfig(
        crop_size=crop,
        resize=resize,
        long_side=[20, 90],
        base_size=[30, 50],
        scale_range=[0.5, 2.0],
        flip=True,
    )


def _check_alignment(image: np.ndarray, label: np.ndarray, exact: bool, num_classes: int) -> float:
    """Assert image and label still agree; return the fraction of unpadded pixels that could be checked."""
    padded = label == 255
    assert (image[padded] == MEAN_RGB_UINT8).all()
    if exact:
        assert (image[~padded] == class_color(label[~padded])).all()
        return 1.0
    # Bilinear resampling blends colours next to class boundaries; every pixel still showing a pure class
    # colour (all source pixels under the filter were that class) must carry that class in the label.
    colors = class_color(np.arange(num_classes, dtype=np.uint8)).astype(int)  # [K, 3]
    distance = np.abs(image[~padded].astype(int)[:, None] - colors[None]).max(axis=-1)  # [N, K]
    pure = distance.min(axis=1) <= 2
    assert (distance.argmin(axis=1)[pure] == label[~padded][pure]).all()
    return float(pure.mean())


@pytest.mark.parametrize("resize", [ResizeRule.none, ResizeRule.long_side, ResizeRule.scale])
def test_transforms_keep_image_and_label_aligned(resize: ResizeRule) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    flips, checked = 0, []
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(20, 70, size=2))
        label = block_label(rng, height, width, 6)
        image = Image.fromarray(class_color(label))
        crop = int(rng.integers(16, 48))
        out_image, out_label = weak_transform(
            image, Image.fromarray(label, mode="L"), _alignment_cfg(resize, crop)
        )
        assert out_image.shape == (crop, crop, 3) and out_label.shape == (crop, crop)
        assert out_image.dtype == np.uint8 and out_label.dtype == np.uint8
        checked.append(_check_alignment(out_image, out_label, resize == ResizeRule.none, num_classes=6))
        if resize == ResizeRule.none and crop >= max(height, width):
            # Whole image kept: it is either the original or its mirror image.
            flipped = not np.array_equal(out_label[:height, :width], label)
            flips += flipped
            assert np.array_equal(out_label[:height, :width], label[:, ::-1] if flipped else label)
    assert np.mean(checked) > 0.4  # the check above covered most pixels
    if resize == ResizeRule.none:
        assert flips > 0


def test_long_side_rule_sizes() -> None:
    from imas.data.transforms import resized_shape

    torch.manual_seed(0)
    cfg = DataConfig(resize=ResizeRule.long_side, long_side=[10, 12])
    seen = {resized_shape(300, 500, cfg) for _ in range(200)}
    assert seen == {(6, 10), (7, 11), (7, 12)}  # int(L * 300 / 500 + 0.5); both ends inclusive
    cfg = DataConfig(resize=ResizeRule.scale, base_size=[100, 200], scale_range=[0.5, 0.5])
    assert resized_shape(7, 9, cfg) == (50, 100)


def test_unlabeled_valid_mask_marks_padding(voc_cfg: DataConfig) -> None:
    cfg = dataclasses.replace(voc_cfg, crop_size=80, long_side=[30, 40], flip=False)
    data = build_datasets(cfg, with_unlabeled=True)
    assert data.unlabeled is not None
    torch.manual_seed(0)
    sample = data.unlabeled[0]
    valid, image = sample["valid"].numpy(), sample["image"].permute(1, 2, 0).numpy()
    rows, cols = np.nonzero(valid)
    # Padding is bottom/right only, and the crop starts at the origin when the image is smaller than it.
    assert valid[0, 0] and not valid[-1, -1] and rows.max() < 40 and cols.max() < 40
    assert valid[: rows.max() + 1, : cols.max() + 1].all()
    assert (image[~valid] == MEAN_RGB_UINT8).all()
    labeled = data.labeled[0]
    assert (labeled["mask"][-1] == 255).all() and (
        labeled["image"][:, -1] == torch.tensor(MEAN_RGB_UINT8)[:, None]
    ).all()


# ------------------------------------------------------------------------------------------ loaders


@pytest.mark.parametrize(("num_labeled", "epoch_length"), [(5, 13), (4, 5), (3, 3), (7, 100), (10, 4)])
def test_labeled_oversampling_counts(num_labeled: int, epoch_length: int) -> None:
    sampler = EpochShardSampler(num_labeled, epoch_length, batch_size=1, seed=0, stream=0)
    for epoch in range(3):
        order = sampler.epoch_order(epoch)
        counts = Counter(order)
        assert len(order) == epoch_length and set(counts) <= set(range(num_labeled))
        low, high = epoch_length // num_labeled, math.ceil(epoch_length / num_labeled)
        assert all(counts[i] in (low, high) for i in range(num_labeled))
    assert sampler.epoch_order(0) != sampler.epoch_order(1)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_are_disjoint_and_cover_the_global_order(world_size: int) -> None:
    num_items, batch = 23, 2
    shards = []
    for rank in range(world_size):
        sampler = EpochShardSampler(
            num_items, num_items, batch, seed=5, stream=1, rank=rank, world_size=world_size
        )
        sampler.set_epoch(4)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == (num_items // (batch * world_size)) * batch
    used = len(shards[0]) * world_size
    order = EpochShardSampler(num_items, num_items, batch, seed=5, stream=1).epoch_order(4)
    assert sorted(i for shard in shards for i in shard) == sorted(order[:used])
    assert len({i for shard in shards for i in shard}) == used  # no index on two ranks


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_val_sampler_covers_each_index_once(world_size: int) -> None:
    for num_items in (1, 7, 9):
        seen = [i for rank in range(world_size) for i in StridedSampler(num_items, rank, world_size)]
        assert sorted(seen) == list(range(num_items))


def test_train_loaders_batches_and_iterations(voc_cfg: DataConfig) -> None:
    data = build_datasets(voc_cfg, with_unlabeled=True)
    loaders = build_train_loaders(voc_cfg, data, batch_size=2, seed=0, rank=0, world_size=2)
    assert loaders.iters_per_epoch == 13 // 4 == len(loaders.labeled) == len(loaders.unlabeled)
    loaders.set_epoch(0)
    batches = list(zip(loaders.labeled, loaders.unlabeled))
    assert len(batches) == 3
    labeled, unlabeled = batches[0]
    assert labeled["image"].shape == (2, 3, 32, 32) and labeled["mask"].shape == (2, 32, 32)
    assert unlabeled["image"].dtype == torch.uint8 and unlabeled["valid"].shape == (2, 32, 32)
    # Supervised-only runs: no unlabeled loader, but the epoch is still one pass over the unlabeled split.
    supervised = build_datasets(voc_cfg, with_unlabeled=False)
    assert supervised.unlabeled is None and supervised.unlabeled_count == 13
    sup = build_train_loaders(voc_cfg, supervised, batch_size=2, seed=0, rank=0, world_size=1)
    assert sup.unlabeled is None and sup.iters_per_epoch == 6
    no_unlabeled = dataclasses.replace(voc_cfg, unlabeled_split="")
    only_labeled = build_train_loaders(
        no_unlabeled, build_datasets(no_unlabeled, False), batch_size=2, seed=0, rank=0, world_size=1
    )
    assert only_labeled.iters_per_epoch == 5 // 2
    with pytest.raises(DataError, match="smaller than one global batch of 16"):
        build_train_loaders(no_unlabeled, build_datasets(no_unlabeled, False), 8, 0, 0, 2)


def test_val_loader(voc_cfg: DataConfig) -> None:
    data = build_datasets(voc_cfg, with_unlabeled=False)
    seen = []
    for rank in range(3):
        for batch in build_val_loader(voc_cfg, data.val, rank, 3):
            assert batch["image"].shape[0] == 1 and batch["image"].shape[-2:] == batch["mask"].shape[-2:]
            seen.append(int(batch["index"]))
    assert sorted(seen) == list(range(len(data.val)))


def _epoch_data(
    cfg: DataConfig, data: Datasets, epoch: int, rank: int = 0, world: int = 1
) -> list[torch.Tensor]:
    loaders = build_train_loaders(cfg, data, batch_size=2, seed=3, rank=rank, world_size=world)
    loaders.set_epoch(epoch)
    assert loaders.unlabeled is not None
    return [
        torch.cat([b["image"].flatten(), u["image"].flatten()])
        for b, u in zip(loaders.labeled, loaders.unlabeled)
    ]


@pytest.mark.slow
def test_epoch_data_reproducible_on_resume_and_different_across_epochs(voc_cfg: DataConfig) -> None:
    cfg = dataclasses.replace(voc_cfg, num_workers=2)
    data = build_datasets(cfg, with_unlabeled=True)
    first = _epoch_data(cfg, data, epoch=2)
    resumed = _epoch_data(cfg, build_datasets(cfg, with_unlabeled=True), epoch=2)  # a fresh process's rebuild
    assert all(torch.equal(a, b) for a, b in zip(first, resumed))
    other = _epoch_data(cfg, data, epoch=3)
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # Without workers the transforms follow the main-process torch RNG, which the training loop checkpoints.
    cfg0 = dataclasses.replace(voc_cfg, num_workers=0)
    torch.manual_seed(11)
    a = _epoch_data(cfg0, data, epoch=2)
    torch.manual_seed(11)
    b = _epoch_data(cfg0, data, epoch=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


class _SeedProbe(Dataset):
    """Reports the RNG state each worker sees: torch's seed and draws from numpy and `random`."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import random

        info = torch.utils.data.get_worker_info()
        return {
            "seed": torch.tensor(torch.initial_seed() % 2**62),
            "numpy": torch.tensor(np.random.randint(0, 2**30)),  # noqa: NPY002 - probing the global RNG
            "random": torch.tensor(random.getrandbits(30)),
            "worker": torch.tensor(-1 if info is None else info.id),
        }


@pytest.mark.slow
def test_worker_seeds_differ_across_ranks_workers_and_epochs() -> None:
    cfg = DataConfig(num_workers=2)
    probe = _SeedProbe()
    seen: dict[tuple[int, int, int], tuple[int, int, int]] = {}
    for epoch in (0, 1):
        for rank in (0, 1):
            data = Datasets(labeled=probe, unlabeled=probe, val=probe, unlabeled_count=16)  # type: ignore[arg-type]
            loaders = build_train_loaders(cfg, data, batch_size=1, seed=0, rank=rank, world_size=2)
            loaders.set_epoch(epoch)
            for stream, loader in enumerate((loaders.labeled, loaders.unlabeled)):
                for batch in loader:
                    key = (epoch, rank, stream * 10 + int(batch["worker"]))
                    value = (int(batch["seed"]), int(batch["numpy"]), int(batch["random"]))
                    seen.setdefault(key, value)
    assert len(seen) == 2 * 2 * 2 * 2
    for position in range(3):  # torch seed, numpy draw, random draw: all distinct
        assert len({value[position] for value in seen.values()}) == len(seen)


def test_derive_seed_is_stable_and_sensitive_to_every_key() -> None:
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) < 2**63
    assert (
        len({derive_seed(*keys) for keys in [(0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 0, 1, 0), (-1, 0, 1)]}) == 5
    )


# ---------------------------------------------------------------------------------------- bad input


def _two_image_voc(tmp_path: Path) -> DataConfig:
    make_voc(tmp_path, ["a", "b"])
    return DataConfig(
        root=str(tmp_path),
        labeled_split=str(write_split(tmp_path / "l.txt", ["a", "b"])),
        val_split=str(write_split(tmp_path / "v.txt", ["a", "b"])),
    )


def test_missing_root_and_splits(tmp_path: Path) -> None:
    cfg = _two_image_voc(tmp_path)
    with pytest.raises(DataError, match=r"^data root .*nowhere does not exist"):
        build_datasets(dataclasses.replace(cfg, root=str(tmp_path / "nowhere")), False)
    with pytest.raises(DataError, match=r"^split file .*missing.txt does not exist$"):
        build_datasets(dataclasses.replace(cfg, labeled_split=str(tmp_path / "missing.txt")), False)
    empty = write_split(tmp_path / "empty.txt", ["# nothing here", "   "])
    with pytest.raises(DataError, match=r"^split file .*empty.txt lists no images$"):
        build_datasets(dataclasses.replace(cfg, val_split=str(empty)), False)
    with pytest.raises(DataError, match="needs data.unlabeled_split"):
        build_datasets(cfg, with_unlabeled=True)
    three = write_split(tmp_path / "three.txt", ["a b c"])
    with pytest.raises(DataError, match=r"line 1 of split file .*three.txt has 3 fields"):
        build_datasets(dataclasses.replace(cfg, labeled_split=str(three)), False)


def test_missing_files_are_reported_up_front(tmp_path: Path) -> None:
    cfg = _two_image_voc(tmp_path)
    split = write_split(tmp_path / "m.txt", ["a", "gone1", "gone2"])
    with pytest.raises(
        DataError, match=r"^4 file\(s\) listed in split .*m.txt do not exist; the first is .*gone1.jpg$"
    ):
        build_datasets(dataclasses.replace(cfg, labeled_split=str(split)), False)
    (tmp_path / "SegmentationClassAug" / "b.png").unlink()
    with pytest.raises(DataError, match=r"1 file\(s\) .* the first is .*SegmentationClassAug/b.png"):
        build_datasets(cfg, False)
    custom = DataConfig(
        dataset=DatasetKind.custom,
        root=str(tmp_path),
        labeled_split=str(write_split(tmp_path / "c.txt", ["zz"])),
        val_split=str(tmp_path / "c.txt"),
    )
    with pytest.raises(DataError, match=r"images/zz\.\{jpg,jpeg,png,bmp,tif,tiff\}"):
        build_datasets(custom, False)
    cityscapes = DataConfig(
        dataset=DatasetKind.cityscapes,
        root=str(tmp_path),
        labeled_split=str(write_split(tmp_path / "cs.txt", ["leftImg8bit/train/x/x_1.png"])),
        val_split=str(tmp_path / "cs.txt"),
    )
    with pytest.raises(DataError, match=r"in split file .*cs.txt: .*does not end in _leftImg8bit.png"):
        build_datasets(cityscapes, False)


def test_bad_label_value(tmp_path: Path) -> None:
    cfg = _two_image_voc(tmp_path)
    path = tmp_path / "SegmentationClassAug" / "b.png"
    label = np.asarray(Image.open(path)).copy()
    label[3, 3] = 21
    label[4, 4] = 200
    Image.fromarray(label, mode="L").save(path)
    data = build_datasets(cfg, False)
    data.val[0]  # a fine label still reads
    with pytest.raises(
        DataError,
        match=r"^label .*b.png contains value 21 \(and 1 other invalid values\), but labels must be in",
    ):
        data.val[1]
    with pytest.raises(DataError, match="contains value 21"):
        data.labeled[1]


def test_corrupt_image_rgb_mask_and_size_mismatch(tmp_path: Path) -> None:
    cfg = _two_image_voc(tmp_path)
    data = build_datasets(cfg, False)
    image_path = tmp_path / "JPEGImages" / "a.jpg"
    image_path.write_bytes(image_path.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError, match=r"^image .*a.jpg cannot be read; it is corrupt or not an image"):
        data.val[0]
    image_path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"^image .*a.jpg cannot be read"):
        data.labeled[0]
    label_path = tmp_path / "SegmentationClassAug" / "b.png"
    rgb = np.asarray(Image.open(label_path))
    Image.fromarray(class_color(rgb)).save(label_path)
    with pytest.raises(
        DataError, match=r"^label .*b.png is a colour image \(mode RGB\); labels must be single-channel"
    ):
        data.val[1]
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8), mode="L").save(label_path)
    with pytest.raises(DataError, match=r"^label .*b.png is 7x5 \(WxH\) but its image is \d+x\d+$"):
        data.val[1]


def test_worker_errors_keep_their_message(tmp_path: Path) -> None:
    from imas.errors import user_message

    cfg = dataclasses.replace(_two_image_voc(tmp_path), num_workers=1)
    data = build_datasets(cfg, False)
    (tmp_path / "JPEGImages" / "b.jpg").write_bytes(b"junk")
    with pytest.raises(DataError) as info:
        list(build_val_loader(cfg, data.val, 0, 1))
    assert user_message(info.value).startswith("image ") and "b.jpg cannot be read" in user_message(
        info.value
    )


# ----------------------------------------------------------------------------------------- cityscapes


@pytest.mark.slow
def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    from imas.data.commands import main as imas_data

    folder = tmp_path / "gtFine" / "train" / "aachen"
    folder.mkdir(parents=True)
    label_ids = np.array(
        [[0, 7, 8, 11, 12, 13, 17, 19, 20, 21], [22, 23, 24, 25, 26, 27, 28, 31, 32, 33]], np.uint8
    )
    label_ids = np.concatenate([label_ids, [[1, 6, 9, 10, 14, 15, 16, 18, 29, 30]]]).astype(np.uint8)
    Image.fromarray(label_ids, mode="L").save(folder / "aachen_000000_000019_gtFine_labelIds.png")
    assert imas_data(["cityscapes", str(tmp_path)]) == 0
    target = folder / "aachen_000000_000019_gtFine_labelTrainIds.png"
    train_ids = np.asarray(Image.open(target))
    assert Image.open(target).mode == "L"
    assert train_ids[0].tolist() == [255, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert train_ids[1].tolist() == [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert (train_ids[2] == 255).all()
    # Existing files are skipped unless --overwrite.
    Image.fromarray(np.zeros_like(label_ids), mode="L").save(target)
    assert imas_data(["cityscapes", str(tmp_path)]) == 0
    assert np.asarray(Image.open(target)).max() == 0
    assert imas_data(["cityscapes", str(tmp_path), "--overwrite"]) == 0
    assert np.array_equal(np.asarray(Image.open(target)), train_ids)
    assert imas_data(["cityscapes", str(tmp_path / "nowhere")]) == 2  # one sentence, as every user error


def test_write_pair_helper_round_trip(tmp_path: Path) -> None:
    label = block_label(np.random.default_rng(0), 9, 11, 3)
    write_pair(tmp_path / "i.png", tmp_path / "l.png", label)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "l.png")), label)
