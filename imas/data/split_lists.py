"""Labeled / unlabeled / val split lists for the published protocols, with a manifest (`imas-data splits`).

    imas-data splits pascal --voc data/VOCdevkit/VOC2012 [--sbd data/benchmark_RELEASE/dataset]
    imas-data splits cityscapes --root data/cityscapes
    (options: --out splits/<dataset>  --seed 0  --classic N ...  --blended N ...  --sizes N N ...)

Pascal VOC 2012 (method.md §6):
  val      the 1449 ids of ImageSets/Segmentation/val.txt
  classic  labeled = N ids drawn from the 1464 fine ids of ImageSets/Segmentation/train.txt (92, 183, 366,
           732, 1464); unlabeled = the rest of train_aug
  blended  labeled = N ids drawn from all of train_aug (662, 1323, 2646, 5291); unlabeled = the rest
  train_aug (10582 ids) = fine train + SBD train + SBD val, minus VOC val. With --sbd it is read from SBD's
  train.txt and val.txt; without, from the label files present in VOC2012/SegmentationClassAug.
Cityscapes: labeled = N of the 2975 leftImg8bit/train images (186, 372, 744, 1488), unlabeled = the rest,
  val = the 500 leftImg8bit/val images; written as "image label" path pairs relative to the root.

The draw is one seeded permutation of each pool and labeled(N) is its first N entries, so the smaller labeled
sets are subsets of the larger ones. Lists are sorted. Output: <out>/<protocol>/<N>/{labeled,unlabeled}.txt
(Cityscapes: <out>/<N>/...),
<out>/val.txt and <out>/manifest.json (seed, pool sizes, and count and sha256 of every list); the same
inputs and seed give byte-identical files. Each file is written atomically (a hidden temporary, then a
rename), and an --out that cannot be written is one sentence before any list is drawn. These lists are this
tool's own draw: the published results used the CPS family's lists for VOC and U2PL's for Cityscapes, which
can be dropped in instead (splits/README.md).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from imas.data.layouts import CITYSCAPES_IMAGE_SUFFIX, CITYSCAPES_LABEL_SUFFIX
from imas.data.splits import read_split
from imas.errors import DataError
from imas.outputs import write_atomic, write_text_atomic

PASCAL_SIZES = {"classic": [92, 183, 366, 732, 1464], "blended": [662, 1323, 2646, 5291]}
CITYSCAPES_SIZES = [186, 372, 744, 1488]


def read_ids(path: Path) -> list[str]:
    """The ids of a VOC/SBD image-set file (one id per line)."""
    return [tokens[0] for tokens in read_split(path)]


def pascal_pools(voc: Path, sbd: Path | None) -> dict[str, list[str]]:
    """{"val": VOC val ids, "fine": VOC train ids, "train_aug": the 10582-id pool}, each sorted."""
    sets = voc / "ImageSets" / "Segmentation"
    val, fine = read_ids(sets / "val.txt"), read_ids(sets / "train.txt")
    if sbd is not None:
        extra = read_ids(sbd / "train.txt") + read_ids(sbd / "val.txt")
    else:
        aug = voc / "SegmentationClassAug"
        if not aug.is_dir():
            raise DataError(
                f"{aug} does not exist; give --sbd (the SBD dataset folder holding train.txt and val.txt) "
                "or put the SegmentationClassAug labels there first (imas-data sbd)"
            )
        extra = [path.stem for path in aug.glob("*.png")]
    train_aug = sorted((set(fine) | set(extra)) - set(val))
    return {"val": sorted(set(val)), "fine": sorted(set(fine) - set(val)), "train_aug": train_aug}


def cityscapes_pools(root: Path) -> dict[str, list[str]]:
    """{"train": [...], "val": [...]}: "image label" pair lines, each list sorted."""
    pools = {}
    for split in ("train", "val"):
        folder = root / "leftImg8bit" / split
        images = sorted(folder.glob(f"*/*{CITYSCAPES_IMAGE_SUFFIX}"))
        if not images:
            raise DataError(f"no *{CITYSCAPES_IMAGE_SUFFIX} images under {folder}")
        lines = []
        for image in images:
            name = image.name[: -len(CITYSCAPES_IMAGE_SUFFIX)]
            label = Path("gtFine", split, image.parent.name, name + CITYSCAPES_LABEL_SUFFIX)
            lines.append(f"{image.relative_to(root).as_posix()} {label.as_posix()}")
        pools[split] = lines
    return pools


def draw(pool: list[str], sizes: list[int], seed: int, what: str) -> dict[int, list[str]]:
    """labeled lists {N: sorted first N of one seeded permutation of `pool`}."""
    too_big = [n for n in sizes if not 0 < n <= len(pool)]
    if too_big:
        raise DataError(f"cannot draw {too_big[0]} labeled images from the {len(pool)} of {what}")
    order = list(pool)
    random.Random(seed).shuffle(order)
    return {n: sorted(order[:n]) for n in sizes}


def write_list(path: Path, lines: list[str], manifest: dict, out: Path) -> None:
    """One list, atomically (a full disk leaves the previous list whole), and its entry in the manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode()
    write_atomic(path, lambda f: f.write(data))
    key = path.relative_to(out).as_posix()
    manifest["lists"][key] = {"count": len(lines), "sha256": hashlib.sha256(data).hexdigest()}


def write_protocol(
    folder: Path, labeled: dict[int, list[str]], unlabeled_pool: list[str], manifest: dict, out: Path
) -> None:
    """<folder>/<N>/labeled.txt and unlabeled.txt (= the pool minus the labeled ids) for every N."""
    for n, ids in labeled.items():
        chosen = set(ids)
        write_list(folder / str(n) / "labeled.txt", ids, manifest, out)
        write_list(
            folder / str(n) / "unlabeled.txt", [x for x in unlabeled_pool if x not in chosen], manifest, out
        )


def make_pascal(voc: Path, sbd: Path | None, out: Path, seed: int, sizes: dict[str, list[int]]) -> dict:
    pools = pascal_pools(voc, sbd)
    manifest = {
        "dataset": "pascal",
        "seed": seed,
        "pools": {
            "val": len(pools["val"]),
            "fine_train": len(pools["fine"]),
            "train_aug": len(pools["train_aug"]),
        },
        "train_aug_from": "SBD train.txt + val.txt" if sbd is not None else "VOC2012/SegmentationClassAug",
        "lists": {},
    }
    write_list(out / "val.txt", pools["val"], manifest, out)
    for protocol, pool in (("classic", pools["fine"]), ("blended", pools["train_aug"])):
        labeled = draw(pool, sizes[protocol], seed, f"the {protocol} pool")
        write_protocol(out / protocol, labeled, pools["train_aug"], manifest, out)
    return manifest


def make_cityscapes(root: Path, out: Path, seed: int, sizes: list[int]) -> dict:
    pools = cityscapes_pools(root)
    manifest = {
        "dataset": "cityscapes",
        "seed": seed,
        "pools": {"train": len(pools["train"]), "val": len(pools["val"])},
        "lists": {},
    }
    write_list(out / "val.txt", pools["val"], manifest, out)
    labeled = draw(pools["train"], sizes, seed, "leftImg8bit/train")
    write_protocol(out, labeled, pools["train"], manifest, out)
    return manifest


def write_manifest(out: Path, manifest: dict) -> None:
    """<out>/manifest.json: the seed, the pool sizes, and the count and sha256 of every list."""
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
