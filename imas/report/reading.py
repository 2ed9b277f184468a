"""What the report is made of: the run's records (imas.rundir.read_run), its config, and the ranking of the
images of each per-image quantity."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imas.config import Config
from imas.errors import UserError
from imas.rundir import PerImageHistory, RunRecord, read_per_image_histories, read_run

HARDNESS = "hardness"  # iMAS's per-image quantity: its galleries are the hardest and the easiest images


def say(message: str) -> None:
    """A progress line: reading a long run's records and predicting the galleries take a while."""
    print(message, flush=True)


@dataclass
class Report:
    """Everything the page is made of, read from one run directory."""

    record: RunRecord
    cfg: Config

    @property
    def run_dir(self) -> Path:
        return self.record.run_dir

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.record.evaluations

    @property
    def iters_per_epoch(self) -> int:
        return self.record.iters_per_epoch

    @property
    def scalars(self) -> dict[str, list[tuple[int, float]]]:
        return self.record.scalars

    @property
    def per_image(self) -> dict[str, PerImageHistory]:
        return self.record.per_image

    @property
    def method(self) -> str:
        return self.cfg.train.method

    @property
    def reported(self) -> str:
        return str(self.records[-1].get("model", "student"))

    @property
    def names(self) -> list[str]:
        return list(self.records[-1]["iou"])


def load_report(run_dir: Path, overrides: list[str]) -> Report:
    """The run's records and its config with `overrides`; one sentence where it is not a run directory,
    its config does not load or it has no evaluation yet."""
    say(f"{run_dir}: reading the run's records")
    # The per-image histories (the large files) are read last, once the config and the evaluations are
    # known to be good: bad input is said before the expensive read.
    record = read_run(run_dir, per_image=False)
    cfg = record.resolved_config(overrides)
    if not record.evaluations:
        raise UserError(
            f"{run_dir} has no evaluation in metrics.jsonl yet; report again after the first one "
            "(every train.eval_every epochs)"
        )
    record.per_image = read_per_image_histories(run_dir)
    say(
        f"{run_dir}: {len(record.evaluations)} evaluation(s); training scalars from {record.scalars_source}"
        + "".join(f"; {h.path.name}" for h in record.per_image.values())
    )
    return Report(record, cfg)


def image_means(values: dict[str, list[float]]) -> dict[str, float]:
    """Each image's mean over its values (an image drawn more than once in an epoch has several)."""
    return {image_id: sum(v) / len(v) for image_id, v in values.items()}


def rank_images(means: dict[str, float], count: int) -> tuple[list[tuple[str, float]], ...]:
    """(highest, lowest): the `count` images of highest and of lowest mean value, ties by image id. No image
    is in both: the lowest are taken from the images not among the highest, and with fewer than 2 × count
    images they are split between the two (the middle one of an odd number to the highest)."""
    order = sorted(means.items(), key=lambda item: (-item[1], item[0]))
    high = min(count, (len(order) + 1) // 2)
    highest = order[:high]
    lowest = sorted(order[high:], key=lambda item: (item[1], item[0]))[: min(count, len(order) - high)]
    return highest, lowest


def tie_note(
    chosen: list[tuple[str, float]],
    means: dict[str, float],
    name: str = HARDNESS,
    elsewhere: list[tuple[str, float]] | None = None,
) -> str:
    """Where the cut falls among equal values (early in training many images have hardness 1): say so.
    elsewhere: the images of the other gallery, chosen first (the highest, for the lowest)."""
    if not chosen:
        return ""
    edge = chosen[-1][1]
    tied = sum(1 for value in means.values() if value == edge)
    shown = sum(1 for _, value in chosen if value == edge)
    before = sum(1 for _, value in elsewhere or [] if value == edge)
    if tied <= shown + before:
        return ""
    after = f" after the {before} in the other gallery" if before else ""
    return (
        f"{tied} images have {name} {edge:.3f}: the {shown} shown of them are the first by image id{after}."
    )


def draw_counts(values: dict[str, list[float]], unit: str) -> str:
    """How many values each image has, most common first: '1 crop for 598 images, 2 for 2'."""
    counts = Counter(len(v) for v in values.values())
    parts = []
    for index, (draws, images) in enumerate(sorted(counts.items(), key=lambda item: (-item[1], item[0]))):
        what = f"{unit}{'' if draws == 1 else 's'} " if index == 0 else ""
        parts.append(f"{draws} {what}for {images} image{'' if images == 1 else 's'}")
    return ", ".join(parts)


# A start or resume of training logs one record, "YYYY-MM-DD HH:MM:SS INFO run ...", whose continuation
# lines are indented "key  value" rows, among them "  hardware     <what the run ran on>".
_STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+ (.*)$")
_HARDWARE_ROW = re.compile(r"^\s+hardware\s{2,}(\S.*?)\s*$")


def recorded_hardware(run_dir: Path) -> list[str | None]:
    """The hardware row of each start or resume of the run in its train.log, in order (None for a start
    whose banner has none); [] without a train.log or a start in it."""
    path = run_dir / "train.log"
    starts: list[str | None] = []
    in_banner = False
    if not path.is_file():
        return starts
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            stamped = _STAMPED.match(line)
            if stamped:
                in_banner = stamped.group(1).startswith("run ")
                if in_banner:
                    starts.append(None)
                continue
            row = _HARDWARE_ROW.match(line) if in_banner else None
            if row:
                starts[-1] = row.group(1)
    return starts


def describe_hardware(starts: list[str | None]) -> str:
    """The summary's hardware: the distinct recorded values in order, and how many starts recorded none."""
    known = list(dict.fromkeys(value for value in starts if value is not None))
    if not known:
        return "not recorded"
    missing = starts.count(None)
    return "; ".join(known) + (f" (not recorded for {missing} of {len(starts)} starts)" if missing else "")


@dataclass(frozen=True)
class Wording:
    """How the page names one per-image quantity: its sections' anchors and titles, and its galleries'."""

    name: str

    @property
    def is_hardness(self) -> bool:
        return self.name == HARDNESS

    @property
    def anchors(self) -> tuple[str, str, str]:
        """(distribution, highest gallery, lowest gallery)."""
        if self.is_hardness:
            return "hardness", "hardest", "easiest"
        return self.name, f"{self.name}-highest", f"{self.name}-lowest"

    @property
    def titles(self) -> tuple[str, str, str]:
        if self.is_hardness:
            return "Hardness distribution per epoch", "Hardest unlabeled images", "Easiest unlabeled images"
        return (
            f"{self.name[:1].upper()}{self.name[1:]} distribution per epoch",
            f"Unlabeled images of highest {self.name}",
            f"Unlabeled images of lowest {self.name}",
        )
