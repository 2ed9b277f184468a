"""Labeled / unlabeled / val split lists for the published protocols, with a manifest (`imas-data splits`).

    imas-data splits pascal --voc data/VOCdevkit/VOC2012 [--sbd data/benchmark_RELEASE/dataset]
    imas-data splits cityscapes --root data/cityscapes
    (options: --out splits/<dataset>  --seed 0  --classic N ...  --blended N ...  --sizes N N ...  --force)

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

What it replaces: only its own earlier output. The lists stay plain (other codebases read them), so the mark
is in the manifest: "written_by": "imas-data splits" and the sha256 of every list it wrote. An existing list
is the command's own when the manifest in --out is marked and records the list's current sha256; before
anything is drawn, every list to be written and the manifest are checked, and any other existing file (a
list dropped in from another codebase, one edited since, an unmarked manifest) is refused in one sentence
naming it, unless --force. Lists an earlier run wrote that this run does not rewrite (other sizes) stay
recorded, unchanged, under "earlier_lists", so a later run may still replace them.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from imas.data.layouts import CITYSCAPES_IMAGE_SUFFIX, CITYSCAPES_LABEL_SUFFIX
from imas.data.splits import read_split
from imas.errors import DataError, UserError
from imas.outputs import write_atomic, write_text_atomic

PASCAL_SIZES = {"classic": [92, 183, 366, 732, 1464], "blended": [662, 1323, 2646, 5291]}
CITYSCAPES_SIZES = [186, 372, 744, 1488]
COMMAND = "imas-data splits"  # the manifest's mark: "written_by": COMMAND
MANIFEST = "manifest.json"
KINDS = ("labeled", "unlabeled")


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


def list_name(protocol: str, n: int, kind: str) -> str:
    """The path of a list relative to --out: "<protocol>/<N>/<kind>.txt" ("<N>/<kind>.txt" without one)."""
    return "/".join(part for part in (protocol, str(n), f"{kind}.txt") if part)


def list_names(sizes: dict[str, list[int]]) -> list[str]:
    """Every list a run writes, relative to --out: val.txt, then labeled and unlabeled for each protocol
    (sizes: {protocol: [N, ...]}; Cityscapes has the one protocol "")."""
    names = ["val.txt"]
    for protocol, ns in sizes.items():
        names += [list_name(protocol, n, kind) for n in ns for kind in KINDS]
    return list(dict.fromkeys(names))


def protocol_lists(protocol: str, labeled: dict[int, list[str]], unlabeled_pool: list[str]) -> dict:
    """{name: lines} of labeled.txt and unlabeled.txt (= the pool minus the labeled ids) for every N."""
    lists = {}
    for n, ids in labeled.items():
        chosen = set(ids)
        lists[list_name(protocol, n, "labeled")] = ids
        lists[list_name(protocol, n, "unlabeled")] = [x for x in unlabeled_pool if x not in chosen]
    return lists


def make_pascal(voc: Path, sbd: Path | None, seed: int, sizes: dict[str, list[int]]) -> tuple[dict, dict]:
    """The manifest (its "lists" still empty) and {name: lines} of every list; nothing is written."""
    pools = pascal_pools(voc, sbd)
    manifest = {
        "written_by": COMMAND,
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
    lists = {"val.txt": pools["val"]}
    for protocol, pool in (("classic", pools["fine"]), ("blended", pools["train_aug"])):
        labeled = draw(pool, sizes[protocol], seed, f"the {protocol} pool")
        lists.update(protocol_lists(protocol, labeled, pools["train_aug"]))
    return manifest, lists


def make_cityscapes(root: Path, seed: int, sizes: list[int]) -> tuple[dict, dict]:
    """As make_pascal; the lists are "image label" pairs relative to `root`."""
    pools = cityscapes_pools(root)
    manifest = {
        "written_by": COMMAND,
        "dataset": "cityscapes",
        "seed": seed,
        "pools": {"train": len(pools["train"]), "val": len(pools["val"])},
        "lists": {},
    }
    labeled = draw(pools["train"], sizes, seed, "leftImg8bit/train")
    return manifest, {"val.txt": pools["val"], **protocol_lists("", labeled, pools["train"])}


def encode(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def write_lists(out: Path, lists: dict[str, list[str]], manifest: dict) -> None:
    """Every list, each atomically (a full disk leaves the previous list whole), and its entry in the
    manifest. All lists are drawn before the first is written, so a draw that fails writes nothing."""
    for name, lines in lists.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode(lines)
        write_atomic(path, lambda f, data=data: f.write(data))
        manifest["lists"][name] = {"count": len(lines), "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(out: Path, manifest: dict) -> None:
    """<out>/manifest.json: the mark, the seed, the pool sizes, and the count and sha256 of every list."""
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------- what a run may replace in --out


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def earlier_manifest(out: Path) -> dict | None:
    """The manifest in `out` when this command wrote it (it carries the mark), else None."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable, not JSON: not ours
        return None
    return data if isinstance(data, dict) and data.get("written_by") == COMMAND else None


def recorded_lists(manifest: dict | None) -> dict[str, dict]:
    """{name: {"count", "sha256"}} of every list a marked manifest records (this draw's and earlier ones)."""
    entries: dict[str, dict] = {}
    for key in ("earlier_lists", "lists"):
        section = (manifest or {}).get(key)
        if isinstance(section, dict):
            entries.update({k: v for k, v in section.items() if isinstance(v, dict)})
    return entries


def check_out(out: Path, names: list[str], force: bool) -> dict[str, dict]:
    """Refuse, in one sentence naming the file, to replace anything in `out` this command did not write:
    the manifest unless it carries the mark, and each of `names` (the lists this run writes) that exists
    unless the marked manifest records its current sha256. --force lets such files be replaced, but not a
    folder where a file goes nor a file where a folder goes. Returns the entries of earlier lists to keep
    recording (ones this run does not rewrite, still as they were written)."""
    manifest_path = out / MANIFEST
    earlier = earlier_manifest(out)
    subject = f"--out {out} holds"
    if manifest_path.is_dir():
        raise UserError(
            f"{subject} a folder {MANIFEST} where {COMMAND} writes its manifest; choose another --out"
        )
    if manifest_path.exists() and earlier is None and not force:
        raise UserError(
            f"{subject} {MANIFEST}, which {COMMAND} did not write; "
            "move it, choose another --out, or add --force to replace it"
        )
    recorded = recorded_lists(earlier)
    refused: list[tuple[str, str]] = []
    for name in names:
        path = out / name
        parts = Path(name).parts
        for depth in range(1, len(parts)):
            folder = out.joinpath(*parts[:depth])
            if folder.exists() and not folder.is_dir():
                raise UserError(
                    f"{subject} a file {folder.relative_to(out).as_posix()} where {COMMAND} writes a folder; "
                    "move it or choose another --out"
                )
        if path.is_dir():
            raise UserError(f"{subject} a folder {name} where {COMMAND} writes a list; choose another --out")
        if not path.exists() or force:
            continue
        entry = recorded.get(name)
        if entry is None:
            refused.append((name, f"{COMMAND} did not write"))
        elif entry.get("sha256") != sha256_of(path):
            refused.append((name, f"was edited since {COMMAND} wrote it"))
    if refused:
        (name, why), more = refused[0], len(refused) - 1
        what, it = (name, "it") if not more else (f"{name} (and {more} more list{'s' * (more > 1)})", "them")
        raise UserError(
            f"{subject} {what}, which {why}; move {it}, choose another --out, or add --force to replace {it}"
        )
    return {
        name: entry
        for name, entry in sorted(recorded.items())
        if name not in names and entry.get("sha256") is not None and entry["sha256"] == sha256_of(out / name)
    }
