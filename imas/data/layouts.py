"""Where each dataset keeps its files: split entries (ids or paths) -> (id, image path, label path)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imas.config import DataConfig
from imas.data.splits import IMAGE_EXTENSIONS, is_path
from imas.errors import DataError

CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"

# (id, image path, label path); unlabeled data ignores the label path, which need not exist.
Entry = tuple[str, Path, Path]


def _voc(token: str, root: Path, cfg: DataConfig) -> Entry:
    if is_path(token):
        stem = Path(token).stem
        return stem, root / token, root / cfg.label_dir / f"{stem}.png"
    return token, root / "JPEGImages" / f"{token}.jpg", root / cfg.label_dir / f"{token}.png"


def _cityscapes(token: str, root: Path, cfg: DataConfig) -> Entry:
    if is_path(token):
        rel = Path(token)
        if not rel.name.endswith(CITYSCAPES_IMAGE_SUFFIX):
            raise ValueError(
                f"Cityscapes image path {token} does not end in {CITYSCAPES_IMAGE_SUFFIX}, so its label path "
                "cannot be derived; give 'image label' pairs instead"
            )
        name = rel.name[: -len(CITYSCAPES_IMAGE_SUFFIX)]
        parts = list(rel.parent.parts)
        # leftImg8bit/<split>/<city>/ -> gtFine/<split>/<city>/
        if "leftImg8bit" in parts:
            parts[parts.index("leftImg8bit")] = "gtFine"
        label = root.joinpath(*parts, name + CITYSCAPES_LABEL_SUFFIX)
        return name, root / rel, label
    # An id is "<city>_<seq>_<frame>" (searched in train, val, test) or "<split>/<city>/<city>_<seq>_<frame>".
    if "/" in token:
        return Path(token).name, *_cityscapes_pair(root, token)
    city = token.split("_", 1)[0]
    candidates = [f"{split}/{city}/{token}" for split in ("train", "val", "test")]
    found = next(
        (c for c in candidates if (root / "leftImg8bit" / (c + CITYSCAPES_IMAGE_SUFFIX)).is_file()), None
    )
    return token, *_cityscapes_pair(root, found or candidates[0])


def _cityscapes_pair(root: Path, stem: str) -> tuple[Path, Path]:
    return (
        root / "leftImg8bit" / (stem + CITYSCAPES_IMAGE_SUFFIX),
        root / "gtFine" / (stem + CITYSCAPES_LABEL_SUFFIX),
    )


def _custom(token: str, root: Path, cfg: DataConfig) -> Entry:
    if is_path(token):
        stem = Path(token).stem
        return stem, root / token, root / cfg.mask_dir / f"{stem}.png"
    folder = root / cfg.image_dir
    image = next(
        (folder / (token + ext) for ext in IMAGE_EXTENSIONS if (folder / (token + ext)).is_file()), None
    )
    if image is None:
        # Not found under any extension: name the pattern so the missing-file message is accurate.
        image = folder / f"{token}.{{{','.join(e[1:] for e in IMAGE_EXTENSIONS)}}}"
    return token, image, root / cfg.mask_dir / f"{token}.png"


LAYOUTS: dict[str, Callable[[str, Path, DataConfig], Entry]] = {
    "voc": _voc,
    "cityscapes": _cityscapes,
    "custom": _custom,
}


def check_paths(cfg: DataConfig, with_unlabeled: bool) -> None:
    """The data root exists and the splits a run needs are named (data.labeled_split: by validate)."""
    if not Path(cfg.root).is_dir():
        raise DataError(f"data root {cfg.root} does not exist (set data.root)")
    if not cfg.val_split:
        raise DataError("data.val_split must name a split file")
    if with_unlabeled and not cfg.unlabeled_split:
        raise DataError("training with unlabeled data needs data.unlabeled_split to name a split file")


def resolve_entries(lines: list[tuple[str, ...]], cfg: DataConfig, split_file: str | Path) -> list[Entry]:
    """Turn split lines into (id, image, label) entries; a pair line gives both paths explicitly."""
    kind = cfg.dataset.value
    if kind not in LAYOUTS:
        raise DataError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(LAYOUTS)}")
    resolve, root = LAYOUTS[kind], Path(cfg.root)
    entries = []
    for tokens in lines:
        if len(tokens) == 2:
            image = Path(tokens[0])
            name = image.stem
            if kind == "cityscapes" and image.name.endswith(CITYSCAPES_IMAGE_SUFFIX):
                name = image.name[: -len(CITYSCAPES_IMAGE_SUFFIX)]
            entries.append((name, root / tokens[0], root / tokens[1]))
            continue
        try:
            entries.append(resolve(tokens[0], root, cfg))
        except ValueError as exc:
            raise DataError(f"in split file {split_file}: {exc}") from None
    return entries
