"""The report's HTML: one self-contained page (no script, no other file), its sections two a row, the
galleries below at full width."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imas.data import palette
from imas.errors import UserError, user_message
from imas.logging import format_duration
from imas.outputs import text_mark
from imas.report.gallery import Models, Scoring, gallery_panels, load_models, unlabeled_paths
from imas.report.plots import (
    VIOLIN_EPOCHS,
    plot_classes,
    plot_distribution,
    plot_miou,
    plot_panels,
    plot_series,
    pyplot,
)
from imas.report.reading import (
    HARDNESS,
    Report,
    Wording,
    describe_hardware,
    draw_counts,
    image_means,
    rank_images,
    recorded_hardware,
    say,
    tie_note,
)
from imas.rundir import UNSAVED, PerImageHistory, best_record, miou_of
from imas.visualize import IGNORE_COLOUR

COMMAND = "imas-report"  # the page's mark, a comment after the doctype (imas.outputs)
SIGNALS = {"easiness": "easiness", "confident": "confident ratio", "cutmix_rate": "CutMix rate"}

STYLE = """
body { margin: 0; background: #f3f4f6; color: #1f2933; font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h1 small { font-weight: normal; color: #52606d; font-size: 16px; }
section { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.12); padding: 14px 20px;
  margin: 16px 0; }
h2 { font-size: 19px; margin: 0 0 8px; }
p.note { color: #52606d; margin: 6px 0; }
section.absent p.note { font-style: italic; }
img.plot { width: 100%; height: auto; display: block; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; align-items: start; margin: 16px 0; }
.grid section { margin: 0; }
@media (max-width: 900px) { .grid { grid-template-columns: 1fr; } }
table.summary { border-collapse: collapse; }
table.summary td { padding: 2px 18px 2px 0; vertical-align: top; }
table.summary td:first-child { color: #52606d; white-space: nowrap; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 4px 0 10px; font-size: 14px; }
.swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #9aa5b1; margin-right: 5px;
  vertical-align: -2px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 12px; }
figure.card { margin: 0; border: 1px solid #e4e7eb; border-radius: 6px; padding: 8px; background: #fafbfc; }
.panels { display: flex; gap: 6px; }
.panels div { flex: 1; text-align: center; font-size: 12px; color: #52606d; }
.panels img { width: 100%; height: 104px; object-fit: contain; background: #eef0f2; display: block; }
.panels img.labels { image-rendering: pixelated; }
figcaption { font-size: 13px; margin-top: 6px; }
figcaption b { font-weight: 600; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def absent(anchor: str, title: str, why: str) -> str:
    """A section the run has nothing for: its heading and one line saying why."""
    heading = f"<h2>{esc(title)}</h2>"
    return (
        f'<section id="{esc(anchor)}" class="absent">\n{heading}\n<p class="note">{esc(why)}</p>\n</section>'
    )


def plot_img(png: str, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{png}">'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def fmt_percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


# ------------------------------------------------------------------------------------ the grid's sections


def unsaved(r: Report, record: dict[str, Any]) -> str:
    """'; no checkpoint holds it: ...' for an evaluation made after latest.pth's epoch, so that it is not
    taken for best.pth's."""
    return f"; {UNSAVED}" if r.record.unsaved(record) else ""


def wall_time(r: Report) -> str:
    """The run's training time as it records it (resumed attempts summed), or 'not recorded'."""
    if r.record.wall_s is None:
        return "not recorded"
    return f"{format_duration(r.record.wall_s)} (h:mm:ss, from {r.record.wall_source})"


def summary_section(r: Report) -> str:
    best, last = best_record(r.records), r.records[-1]
    sources = f"metrics.jsonl; training scalars: {r.record.scalars_source}"
    sources += "".join(f"; {history.path.name}" for history in r.per_image.values())
    rows = [
        ("run directory", str(r.run_dir)),
        ("method", r.method),
        ("data", f"{r.cfg.data.dataset.value} at {r.cfg.data.root}, {len(r.names)} classes"),
        ("epochs", f"{last['epoch']} of {r.cfg.train.epochs} evaluated, {r.iters_per_epoch} iterations each"),
        ("reported model", r.reported),
        ("best mIoU", f"{fmt_percent(miou_of(best))} (epoch {best['epoch']}{unsaved(r, best)})"),
        ("final mIoU", f"{fmt_percent(miou_of(last))} (epoch {last['epoch']})"),
        ("seed", str(r.cfg.train.seed)),
        ("precision", r.cfg.train.precision.value),
        ("hardware", describe_hardware(recorded_hardware(r.run_dir))),
        ("wall time", wall_time(r)),
        ("sources", sources),
    ]
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return section("summary", "Summary", f'<table class="summary">{body}</table>')


def miou_section(plt: Any, r: Report) -> str:
    others = r.record.others
    source = r.record.others_source
    plotted = [f"{r.reported} (reported, metrics.jsonl)"] + [f"{label} ({source})" for label in others]
    text = "Curves: " + ", ".join(plotted) + "."
    if not others:
        text += f" This {r.method} run evaluates one model, the {r.reported}: no other curve."
    return section(
        "miou",
        "mIoU over training",
        plot_img(plot_miou(plt, r.records, r.reported, others), "mIoU") + note(text),
    )


def losses_section(plt: Any, r: Report) -> str:
    title = "Training losses"
    losses = {t.split("/", 1)[1]: p for t, p in r.scalars.items() if t.startswith("train/loss")}
    if not losses:
        why = "no training loss was logged: the run has no train_scalars.jsonl and no train.log training line"
        return absent("losses", title, why)
    png = plot_panels(plt, losses, r.iters_per_epoch)
    text = f"Epoch means (markers) over the logged window means, from {r.record.scalars_source}."
    return section("losses", title, plot_img(png, "training losses") + note(text))


def signals_section(plt: Any, r: Report) -> str:
    title = "Easiness, confident ratio and CutMix rate"
    found = {
        label: r.scalars[f"train/{name}"] for name, label in SIGNALS.items() if f"train/{name}" in r.scalars
    }
    if not found:
        return absent(
            "signals",
            title,
            f"this {r.method} run logs none of them: they are measured on the "
            "unlabeled images by the semi-supervised methods",
        )
    missing = [label for label in SIGNALS.values() if label not in found]
    text = f"Epoch means (markers) over the logged window means, from {r.record.scalars_source}."
    if missing:
        text += f" Not logged by this {r.method} run: {', '.join(missing)}."
    png = plot_series(plt, found, r.iters_per_epoch, "share of images / pixels")
    return section("signals", title, plot_img(png, title) + note(text))


def no_per_image(r: Report) -> str:
    return (
        f"this {r.method} run has no per-image history (such as hardness.csv): only methods that measure a "
        "quantity per unlabeled image (iMAS and the mean teacher: the instance hardness) write one"
    )


def distribution_sections(plt: Any, r: Report) -> list[str]:
    """One section per per-image quantity: its values per epoch (for a run without any, one line why)."""
    if not r.per_image:
        wording = Wording(HARDNESS)
        return [absent(wording.anchors[0], wording.titles[0], no_per_image(r))]
    out = []
    for history in r.per_image.values():
        wording = Wording(history.name)
        by_epoch = history.by_epoch()
        shape = "violin and box" if len(by_epoch) <= VIOLIN_EPOCHS else "box"
        measured = (
            "each crop's hardness as training scored it"
            if wording.is_hardness
            else f"every image's {history.name} as each iteration measured it"
        )
        text = (
            f"{measured[:1].upper()}{measured[1:]} ({len(history.value)} values in {history.path.name}): "
            f"{shape} (median, quartiles, whiskers at 1.5 IQR) per epoch, the mean in red."
        )
        png = plot_distribution(plt, by_epoch, history.name)
        out.append(
            section(wording.anchors[0], wording.titles[0], plot_img(png, wording.titles[0]) + note(text))
        )
    return out


def classes_section(plt: Any, r: Report) -> str:
    best, last = best_record(r.records), r.records[-1]
    if best is last:
        bars = [(f"epoch {last['epoch']} (last and best)", last)]
    else:
        bars = [(f"epoch {last['epoch']} (last)", last), (f"epoch {best['epoch']} (best)", best)]
    text = f"IoU of the {r.reported} per class, from metrics.jsonl."
    return section(
        "classes", "Per-class IoU", plot_img(plot_classes(plt, r.names, bars), "per-class IoU") + note(text)
    )


# ---------------------------------------------------------------------------------------------- galleries


def legend(names: list[str], colours: list[tuple[int, int, int]]) -> str:
    items = [(name, colour) for name, colour in zip(names, colours)] + [("unconfident / none", IGNORE_COLOUR)]
    spans = "".join(
        f'<span><span class="swatch" style="background: rgb{tuple(colour)}"></span>{esc(name)}</span>'
        for name, colour in items
    )
    return f'<div class="legend">{spans}</div>'


def card(
    image_id: str, name: str, value: float, draws: int, panels: list[tuple[str, str]], whole: float | None
) -> str:
    """One image of a gallery: its panels, its value in training and, for the hardness, the whole image's
    score (`whole`, None where there is none)."""
    cells = "".join(
        f'<div><img class="{"image" if title == "image" else "labels"}" alt="{esc(title)}" src="{uri}">'
        f"{esc(title)}</div>"
        for title, uri in panels
    )
    if name == HARDNESS:
        crops = f"mean of {draws} crops" if draws > 1 else "1 crop"
        caption = f"{esc(name)} {value:.3f} in training ({crops})"
    else:
        caption = f"{esc(name)} {value:.3f}" + (f" (mean of {draws} values)" if draws > 1 else "")
    attributes = f'data-image-id="{esc(image_id)}" data-value="{value:.6f}"'
    if whole is not None:
        caption += f"<br>whole image, latest.pth: {esc(name)} {whole:.3f}"
        attributes += f' data-whole="{whole:.6f}"'
    return (
        f'<figure class="card" {attributes}><div class="panels">{cells}</div>'
        f"<figcaption><b>{esc(image_id)}</b> {caption}</figcaption></figure>"
    )


@dataclass
class Pictures:
    """What the gallery cards show, set up once for all galleries: each unlabeled image's path, the models
    of latest.pth, and why images are missing where they are."""

    r: Report
    device: torch.device
    total: int
    paths: dict[str, Path] = field(default_factory=dict)
    problem: str = ""
    models: Models | None = None
    threshold: float | None = None  # the method's confidence threshold, where it has one
    scoring: Scoring | None = None  # how training scores the hardness, where the method measures it
    colours: list[tuple[int, int, int]] = field(default_factory=list)
    done: int = 0

    def __post_init__(self) -> None:
        try:
            self.paths = unlabeled_paths(self.r.cfg)
        except UserError as exc:
            self.problem = user_message(exc)
        self.models = Models({}, "", self.device)
        if self.paths:
            say(f"{self.r.run_dir}: loading latest.pth for the galleries")
            self.models = load_models(self.r.cfg, self.r.run_dir, self.device)
        self.threshold = getattr(getattr(self.r.cfg, self.r.method, None), "threshold", None)
        self.scoring = Scoring.of(self.r.cfg)
        self.colours = palette(self.r.cfg.data)

    @property
    def scored(self) -> bool:
        """Whether the cards of the hardness show the whole image's score (both models are there)."""
        return self.scoring is not None and len(self.models.nets) == 2

    def panels(self, image_id: str, score: bool) -> tuple[list[tuple[str, str]], float | None]:
        """The image's panels, and with `score` its whole-image hardness (None where there is none)."""
        panels: list[tuple[str, str]] = []
        whole = None
        if image_id in self.paths:
            scoring = self.scoring if score else None
            try:
                panels, whole = gallery_panels(
                    self.paths[image_id], self.models, self.r.cfg, self.colours, self.threshold, scoring
                )
            except UserError as exc:
                self.problem = self.problem or user_message(exc)
        self.done += 1
        if self.done % max(1, self.total // 4) == 0 or self.done == self.total:
            say(f"{self.r.run_dir}: gallery {self.done}/{self.total} images")
        return panels, whole

    def notes(self, hardness: bool) -> list[str]:
        """What the pictures show (for the hardness, what the whole image's score is) and why any are
        missing."""
        notes = [self.models.describe(self.r.method, self.threshold)] if self.paths else []
        if hardness and self.scored and self.paths:
            notes.append(
                "Whole image: scored at report time by training's hardness function and settings "
                f"({self.scoring.describe()}) from one forward of each model on the whole image, at one "
                "scale and unflipped, as training scores its crops."
            )
        if self.problem:
            notes.append(
                f"Images not shown: {self.problem} (give --opt data.root=... if the data lies elsewhere)."
            )
        return notes


def ranking_notes(
    history: PerImageHistory, values: dict[str, list[float]], count: int, pictures: Pictures
) -> list[str]:
    """What both galleries of one quantity say about their ranking: how the values were measured, what a
    hardness of 1 means, and a split of few images."""
    epoch, name = history.last_epoch, history.name
    if name != HARDNESS:
        how = (
            f"Ranked by each image's mean {name} over the values measured in epoch {epoch}, the last of "
            f"{history.path.name} ({draw_counts(values, 'value')})."
        )
        return [how, split_note(values, count, epoch)]
    scoring = pictures.scoring
    if scoring is None or (scoring.class_weighted and scoring.ignore_class0):
        zero = (
            "one of the models predicted background alone there (background is left out of the IoU), the two "
            "shared no foreground class, or neither had a confident pixel"
        )
    else:
        zero = "the two models shared no class there, or neither had a confident pixel"
    how = (
        f"Ranked by each image's hardness in epoch {epoch}, the last of {history.path.name}: the mean over "
        f"the crops of it that training scored in that epoch ({draw_counts(values, 'crop')}), a crop being "
        "the weak view (random scale, crop and flip). A score of exactly 1 means easiness 0 on each of those "
        f"crops: {zero}; it says nothing about the rest of the image."
    )
    return [how, split_note(values, count, epoch)]


def split_note(values: dict[str, list[float]], count: int, epoch: int) -> str:
    """Where the last epoch has fewer than 2 x count images, that rank_images splits them."""
    if len(values) >= 2 * count:
        return ""
    return (
        f"Epoch {epoch} measured {len(values)} images, fewer than twice --gallery {count}: they are split "
        "between the two galleries, so that no image is in both."
    )


def quantity_galleries(history: PerImageHistory, count: int, pictures: Pictures) -> list[str]:
    """The images of highest and of lowest mean value of one quantity in the last epoch of its history."""
    r, wording, name = pictures.r, Wording(history.name), history.name
    values = history.image_values(history.last_epoch)
    means = image_means(values)
    highest, lowest = rank_images(means, count)
    about = ranking_notes(history, values, count, pictures)
    out = []
    for order, anchor, title, chosen, elsewhere in zip(
        ("highest", "lowest"), wording.anchors[1:], wording.titles[1:], (highest, lowest), (None, highest)
    ):
        cards = []
        for image_id, value in chosen:
            panels, whole = pictures.panels(image_id, score=wording.is_hardness)
            cards.append(card(image_id, name, value, len(values[image_id]), panels, whole))
        text = f"The {len(chosen)} images of {order} {name} in epoch {history.last_epoch}."
        notes = [text, tie_note(chosen, means, name, elsewhere), *about, *pictures.notes(wording.is_hardness)]
        body = "".join(note(t) for t in notes if t)
        if pictures.models.nets:
            body += legend(r.names, pictures.colours)
        body += f'<div class="gallery">{"".join(cards)}</div>'
        out.append(section(anchor, title, body))
    return out


def gallery_sections(r: Report, count: int, device: torch.device) -> list[str]:
    """Two galleries per per-image quantity (for the hardness: the hardest and the easiest images)."""
    if not r.per_image:
        wording = Wording(HARDNESS)
        return [absent(a, t, no_per_image(r)) for a, t in zip(wording.anchors[1:], wording.titles[1:])]
    if count <= 0:
        pairs = [zip(Wording(n).anchors[1:], Wording(n).titles[1:]) for n in r.per_image]
        return [absent(a, t, "left out by --gallery 0") for pair in pairs for a, t in pair]
    total = sum(min(2 * count, len(h.image_values(h.last_epoch))) for h in r.per_image.values())
    pictures = Pictures(r, device, total)
    return [text for history in r.per_image.values() for text in quantity_galleries(history, count, pictures)]


def render(r: Report, count: int, device: torch.device) -> str:
    plt = pyplot()
    say(f"{r.run_dir}: drawing the plots")
    # Results first (summary, mIoU, per class), then how training went, two sections a row; the galleries
    # below take the whole width.
    grid = [
        summary_section(r),
        miou_section(plt, r),
        classes_section(plt, r),
        losses_section(plt, r),
        signals_section(plt, r),
        *distribution_sections(plt, r),
    ]
    galleries = gallery_sections(r, count, device)
    title = f"Run report: {r.run_dir.resolve().name}"
    heading = f"<h1>Run report <small>{esc(r.run_dir)} &middot; {esc(r.method)}</small></h1>"
    return (
        f'<!DOCTYPE html>\n{text_mark(COMMAND)}\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{heading}\n"
        + '<div class="grid">\n'
        + "\n".join(grid)
        + "\n</div>\n"
        + "\n".join(galleries)
        + "\n</main>\n</body>\n</html>\n"
    )
