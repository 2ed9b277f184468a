"""One self-contained HTML page about a training run: what it learnt, how, and on which images it struggled.

    python tools/report.py RUN_DIR [--out RUN_DIR/report.html] [--device cpu|cuda|auto] [--gallery 8]
        [--opt data.root=...]

The page (every plot and image embedded as a base64 PNG; no script, no other file) shows:

- the mIoU over epochs of every evaluated model: the reported one (the iMAS / mean-teacher teacher, else the
  student) and the ones evaluated beside it (the student next to a teacher, CPS's second network);
- the training losses, and the easiness, confident-pixel ratio and CutMix rate: each epoch's mean, drawn over
  the means over logging windows that the loop logs;
- the distribution of the per-image hardness in each epoch (methods that measure it: iMAS, mean teacher);
- the per-class IoU of the reported model at the last and at the best evaluation;
- the hardest and the easiest unlabeled images of the last epoch of the hardness history (an image drawn more
  than once in that epoch counts with its mean), each with the teacher's pseudo-label (pixels below the
  method's confidence threshold white, as training ignores them) and the student's prediction, both
  computed on the whole image by the models of latest.pth with the config's eval settings.

A section the run has nothing for (SupOnly has no unlabeled data and no hardness, FixMatch no teacher, a
folder copied without checkpoints no predictions) is replaced by one line saying why.

Where the numbers come from, and why these sources:

- metrics.jsonl for the reported model: exact values per class, and the loop cuts it back to the checkpoint
  when a run resumes, so each evaluation appears once.
- TensorBoard event files for the training scalars and the other evaluated models: their tags
  (train/<name>, eval/<model>_miou) are what the loop writes for every method, the values are full floats,
  and the reader drops what a crashed attempt logged past the checkpoint it resumed from (the writer's
  purge_step), so a resumed run shows each iteration once. Where the folder holds no event file (a copy of
  the text logs only) or it cannot be read, train.log is parsed instead: the same numbers to four decimals
  (the mIoU of the other models to two), a re-run iteration's last line kept.
- hardness.csv for the hardness: one row per image and iteration; TensorBoard's histograms have bins only,
  no image ids.

The plots need matplotlib (pip install -e ".[report]"). Exit status 0, or 2 with one sentence on stderr for
bad input (no such folder, not a run directory, no evaluation yet, a bad --opt).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from imas.checkpoint import load_checkpoint
from imas.config import Config, from_dict
from imas.data import palette
from imas.data.io import read_image
from imas.data.layouts import resolve_entries
from imas.data.splits import read_split
from imas.dist import DistInfo, init_distributed
from imas.errors import ConfigError, UserError, user_message
from imas.inference import inference_options, load_trained_model, normalize, predict
from imas.rundir import best_record, check_existing_run, miou_of, read_evaluations
from imas.visualize import IGNORE_COLOUR, colorize

SIGNALS = {"easiness": "easiness", "confident": "confident ratio", "cutmix_rate": "CutMix rate"}
THUMB_SIDE = 240  # longest side of a gallery image as stored in the page (larger images are scaled down)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a training run directory (holds config.yaml, metrics.jsonl, ...)")
    p.add_argument("--out", default=None, help="the HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "auto"],
        help="where the gallery's predictions run (default: cpu)",
    )
    p.add_argument(
        "--gallery", type=int, default=8, help="images in each of the hardest/easiest galleries (default 8)"
    )
    p.add_argument(
        "--opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of the run's config, e.g. data.root=/data/voc when the run was made elsewhere",
    )
    return p.parse_args(argv)


def say(message: str) -> None:
    """A progress line: reading a long run's logs and predicting the gallery take a while."""
    print(message, flush=True)


# ------------------------------------------------------------------------------------ reading the run


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), or one sentence naming the extra to
    install: the report is the only part of the project that needs matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            'the report draws its plots with matplotlib, which is not installed: pip install -e ".[report]"'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_run_config(run_dir: Path, overrides: list[str]) -> Config:
    """The run's config.yaml, also one written by an older version (a 'semi' section), plus overrides.

    Read as a stored config (imas.config.from_dict, as a checkpoint's copy is) rather than as an
    experiment file, so that the logs of runs made before a rename still open."""
    path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read as a config ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a config (a mapping of sections)")
    return from_dict(raw, overrides)


@dataclass
class Scalars:
    """Logged scalars by TensorBoard tag (train/loss_x, eval/student_miou, ...): (iteration, value) pairs in
    iteration order, one per iteration; `source` says which file they came from."""

    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    source: str = "none"


def read_tensorboard(run_dir: Path) -> Scalars | None:
    """Every scalar of the run's event files, or None where there are none or they cannot be read."""
    if not list(run_dir.glob("events.out.tfevents.*")):
        return None
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    # Scalars only: images and histograms are skipped (kept at one each) to read fast.
    guidance = {"scalars": 0, "images": 1, "histograms": 1, "compressedHistograms": 1, "tensors": 1}
    try:
        accumulator = EventAccumulator(str(run_dir), size_guidance=guidance)
        accumulator.Reload()
        tags = accumulator.Tags().get("scalars", [])
        series = {}
        for tag in tags:
            by_step = {int(e.step): float(e.value) for e in accumulator.Scalars(tag)}
            series[tag] = sorted(by_step.items())
    except Exception:  # a truncated or foreign file: train.log is the fallback
        return None
    if not series:
        return None
    return Scalars(series, "TensorBoard events")


# "... INFO epoch 3/40 it 425/6000 1.61 it/s eta 0:57:32 lr 0.000936 loss_x 0.6076 easiness 0.0989 ..."
TRAIN_LINE = re.compile(r" epoch \d+/\d+ it (\d+)/\d+ .*? lr \S+((?: [A-Za-z_]\w* \S+)*)\s*$")
# "... INFO epoch 8 student mIoU 40.05" (the reported model's line continues with "(best ...)")
EVAL_LINE = re.compile(r" epoch (\d+) (.+?) mIoU (-?[\d.]+|nan)\s*$")


def read_train_log(run_dir: Path, iters_per_epoch: int) -> Scalars | None:
    """The scalars that train.log prints, under the TensorBoard tags the loop gives them; None if none.

    After a resume the iterations re-run after the checkpoint appear twice: the last line of each wins,
    as it does in TensorBoard."""
    path = run_dir / "train.log"
    if not path.is_file():
        return None
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = TRAIN_LINE.search(line)
        if match:
            step = int(match.group(1))
            tokens = match.group(2).split()
            for name, value in zip(tokens[::2], tokens[1::2]):
                try:
                    series[f"train/{name}"][step] = float(value)
                except ValueError:
                    continue
            continue
        match = EVAL_LINE.search(line)
        if match and match.group(2) != "eval":
            model = match.group(2).replace(" ", "_")
            series[f"eval/{model}_miou"][int(match.group(1)) * iters_per_epoch] = float(match.group(3)) / 100
    if not series:
        return None
    return Scalars({tag: sorted(values.items()) for tag, values in series.items()}, "train.log")


def read_scalars(run_dir: Path, iters_per_epoch: int) -> Scalars:
    return read_tensorboard(run_dir) or read_train_log(run_dir, iters_per_epoch) or Scalars()


@dataclass
class Hardness:
    """The per-image hardness history: every value of each epoch (0-based, as hardness.csv counts), and the
    values of each image in the last epoch."""

    by_epoch: dict[int, np.ndarray]
    last_epoch: int
    last: dict[str, list[float]]


def read_hardness(run_dir: Path) -> Hardness | None:
    """hardness.csv (image_id,epoch,iteration,hardness), or None where the run has none or it is empty.

    One pass, keeping only the last epoch's image ids: a long run's file has millions of rows."""
    path = run_dir / "hardness.csv"
    if not path.is_file():
        return None
    values: dict[int, list[float]] = defaultdict(list)
    last_epoch, last = -1, defaultdict(list)
    with path.open(encoding="utf-8") as f:
        next(f, None)  # the header
        for line in f:
            try:
                image_id, epoch_text, _, value_text = line.rstrip("\n").rsplit(",", 3)
                epoch, value = int(epoch_text), float(value_text)
            except ValueError:
                continue  # a line cut short by a crash
            values[epoch].append(value)
            if epoch > last_epoch:
                last_epoch, last = epoch, defaultdict(list)
            if epoch == last_epoch:
                last[image_id].append(value)
    if not values:
        return None
    return Hardness({e: np.asarray(v) for e, v in sorted(values.items())}, last_epoch, dict(last))


def image_means(last: dict[str, list[float]]) -> dict[str, float]:
    """Each image's mean hardness in the last epoch."""
    return {image_id: sum(v) / len(v) for image_id, v in last.items()}


def rank_images(means: dict[str, float], count: int) -> tuple[list[tuple[str, float]], ...]:
    """(hardest, easiest): the `count` images of highest and of lowest mean hardness, ties by image id."""
    hardest = sorted(means.items(), key=lambda item: (-item[1], item[0]))[:count]
    easiest = sorted(means.items(), key=lambda item: (item[1], item[0]))[:count]
    return hardest, easiest


def tie_note(chosen: list[tuple[str, float]], means: dict[str, float]) -> str:
    """Where the cut falls among equal values (early in training many images have hardness 1): say so."""
    if not chosen:
        return ""
    edge = chosen[-1][1]
    tied = sum(1 for value in means.values() if value == edge)
    shown = sum(1 for _, value in chosen if value == edge)
    if tied <= shown:
        return ""
    return f"{tied} images have hardness {edge:.3f}: the {shown} shown of them are the first by image id."


# ---------------------------------------------------------------------------------------------- plots


def figure_png(plt: Any, fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


FIG_WIDTH = 6.4  # inches at 100 dpi: a plot fills half the page's width (two sections a row)


def style_axes(ax: Any) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.ticklabel_format(axis="y", useOffset=False)  # a flat curve's ticks read 59.6, not 1e-8 + 5.96e1


def new_axes(plt: Any, height: float = 3.6) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, height))
    style_axes(ax)
    return fig, ax


def epoch_ticks(ax: Any) -> None:
    """Whole epochs on the x axis (a run of a few epochs would otherwise get ticks at 1.2, 1.4, ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_miou(
    plt: Any, records: list[dict[str, Any]], reported: str, others: dict[str, list[tuple[float, float]]]
) -> str:
    fig, ax = new_axes(plt)
    epochs = [r["epoch"] for r in records]
    values = [100 * miou_of(r) for r in records]
    ax.plot(epochs, values, marker="o", linewidth=2, label=f"{reported} (reported)")
    best = best_record(records)
    ax.plot([best["epoch"]], [100 * miou_of(best)], marker="*", ms=16, color="#d62728", ls="", zorder=5)
    ax.annotate(
        f"best {100 * miou_of(best):.2f}",
        (best["epoch"], 100 * miou_of(best)),
        textcoords="offset points",
        xytext=(0, 10),
        ha="center",
    )
    for label, points in others.items():
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="s", linestyle="--", label=label)
    low, high = ax.get_ylim()
    if high - low < 5:  # a flat curve: a few points of context rather than a magnified 0.01
        low, high = (high + low) / 2 - 2.5, (high + low) / 2 + 2.5
    ax.set_ylim(low, high + 0.08 * (high - low))  # room for the best's label
    epoch_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mIoU (%)")
    ax.legend(loc="lower right")
    return figure_png(plt, fig)


def draw_series(
    ax: Any, points: list[tuple[int, float]], iters_per_epoch: int, label: str, colour: str
) -> None:
    """Each epoch's mean of the logged values as a line with markers, over the logged values themselves
    (thin). The loop logs means over its logging windows (train.log_every iterations); a window ends at the
    step it is logged at, so the windows of epoch e are those logged at steps in ((e - 1)·n, e·n]."""
    ax.plot(
        [s / iters_per_epoch for s, _ in points], [v for _, v in points], color=colour, lw=0.8, alpha=0.35
    )
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for step, value in points:
        if step > 0:
            by_epoch[(step - 1) // iters_per_epoch + 1].append(value)
    epochs = sorted(by_epoch)
    means = [float(np.mean(by_epoch[e])) for e in epochs]
    ax.plot(epochs, means, marker="o", markersize=4, color=colour, label=label)
    epoch_ticks(ax)


def plot_series(
    plt: Any, series: dict[str, list[tuple[int, float]]], iters_per_epoch: int, ylabel: str
) -> str:
    """Series of one kind in [0, 1] (easiness, confident ratio, CutMix rate) on one axes."""
    fig, ax = new_axes(plt)
    for index, (name, points) in enumerate(series.items()):
        draw_series(ax, points, iters_per_epoch, name, f"C{index}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left")
    return figure_png(plt, fig)


def plot_panels(plt: Any, series: dict[str, list[tuple[int, float]]], iters_per_epoch: int) -> str:
    """One small plot per series, each on its own scale: an unsupervised loss is often a tenth of the
    supervised one and would lie flat on a shared axis."""
    columns = 1 if len(series) == 1 else 2
    rows = math.ceil(len(series) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(FIG_WIDTH, 1.2 + 1.9 * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(series):
            ax.set_visible(False)
            continue
        name, points = list(series.items())[index]
        style_axes(ax)
        draw_series(ax, points, iters_per_epoch, name, f"C{index}")
        ax.set_title(name, fontsize=10)
        if index >= len(series) - columns:
            ax.set_xlabel("epoch")
    fig.tight_layout()
    return figure_png(plt, fig)


VIOLIN_EPOCHS = (
    15  # up to this many epochs a violin per epoch; more would be slivers at half the page's width
)


def plot_hardness(plt: Any, hardness: Hardness) -> str:
    """Per epoch, a box (median, quartiles, whiskers at 1.5 IQR) over a violin of the hardness values (boxes
    alone, filled, beyond VIOLIN_EPOCHS epochs), and the mean."""
    fig, ax = new_axes(plt)
    epochs = list(hardness.by_epoch)
    data = [hardness.by_epoch[e] for e in epochs]
    positions = [e + 1 for e in epochs]  # epoch 1 is the first, as metrics.jsonl counts
    violins = len(epochs) <= VIOLIN_EPOCHS
    # A violin needs a spread (the first iterations often give every image hardness 1): its box shows it.
    spread = [(p, d) for p, d in zip(positions, data) if np.ptp(d) > 0] if violins else []
    if spread:
        parts = ax.violinplot(
            [d for _, d in spread], positions=[p for p, _ in spread], widths=0.8, showextrema=False
        )
        for body in parts["bodies"]:
            body.set_facecolor("#9ecae1")
            body.set_edgecolor("#3182bd")
            body.set_alpha(0.7)
    ax.boxplot(
        data,
        positions=positions,
        widths=0.18 if violins else 0.7,
        showfliers=False,
        manage_ticks=False,
        patch_artist=not violins,
        boxprops={"facecolor": "#9ecae1", "edgecolor": "#3182bd"} if not violins else {},
        medianprops={"color": "#08306b", "linewidth": 1.5},
        whiskerprops={"color": "#555555"},
        capprops={"color": "#555555"},
    )
    ax.plot(positions, [float(np.mean(d)) for d in data], color="#d62728", marker=".", label="mean")
    epoch_ticks(ax)
    ax.set_xlim(min(positions) - 0.6, max(positions) + 0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("hardness")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower left")
    return figure_png(plt, fig)


def plot_classes(plt: Any, names: list[str], bars: list[tuple[str, dict[str, Any]]]) -> str:
    fig, ax = new_axes(plt)
    width = 0.8 / len(bars)
    x = np.arange(len(names))
    for index, (label, record) in enumerate(bars):
        iou = [record["iou"].get(name) for name in names]
        values = [math.nan if v is None else 100 * v for v in iou]
        ax.bar(x + (index - (len(bars) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(
        names, rotation=45 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center"
    )
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right")
    return figure_png(plt, fig)


# -------------------------------------------------------------------------------------------- gallery


def png_uri(pixels: np.ndarray, nearest: bool) -> str:
    """An RGB uint8 [H, W, 3] array as a PNG data URI, its longest side scaled down to THUMB_SIDE."""
    image = Image.fromarray(pixels)
    scale = THUMB_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Models:
    """The models of latest.pth that the gallery shows ({"teacher": ..., "student": ...}, either may be
    missing) and what to tell the reader about them."""

    nets: dict[str, torch.nn.Module]
    note: str
    device: torch.device
    epoch: int | None = None

    def describe(self, method: str, threshold: float | None) -> str:
        """What the prediction columns show, or why there are none."""
        if not self.nets:
            return self.note
        columns = []
        if "teacher" in self.nets:
            below = (
                f", white where its confidence is below {method}.threshold {threshold:g}" if threshold else ""
            )
            columns.append(f"pseudo-label: the teacher's prediction{below} (training ignores those pixels)")
        if "student" in self.nets:
            columns.append("student: the student's prediction")
        text = f"Predicted by the models of latest.pth (epoch {self.epoch}) with the run's eval settings; "
        return text + "; ".join(columns) + (f". {self.note}" if self.note else ".")


def load_models(cfg: Config, run_dir: Path, device: torch.device) -> Models:
    """The teacher and student of latest.pth; none (and a note why) when there is no usable checkpoint, so
    that a folder copied without its checkpoints still gets its galleries of images."""
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    latest = run_dir / "latest.pth"
    if not latest.is_file():
        return Models(
            {}, "No latest.pth in the run directory: the images are shown without predictions.", info.device
        )
    try:
        ckpt = load_checkpoint(latest, mmap=True)
        nets = {}
        for which, key in (("teacher", "teacher"), ("student", "model")):
            if key in ckpt:
                nets[which] = load_trained_model(cfg, ckpt, latest, which, info)[0]
    except UserError as exc:
        return Models(
            {}, f"latest.pth cannot be used ({user_message(exc)}): no predictions shown.", info.device
        )
    note = "" if "teacher" in nets else f"This {cfg.train.method} run has no teacher: no pseudo-label column."
    epoch = ckpt.get("epoch")
    return Models(nets, note, info.device, int(epoch) if isinstance(epoch, int) else None)


def colour_labels(labels: torch.Tensor, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """A label map [1, H, W] (255: none) in the dataset palette -> uint8 [H, W, 3]."""
    return colorize(labels.cpu(), colours)[0].permute(1, 2, 0).numpy()


def gallery_panels(
    path: Path, models: Models, cfg: Config, colours: list[tuple[int, int, int]], threshold: float | None
) -> list[tuple[str, str]]:
    """(title, PNG data URI) of the image, the teacher's pseudo-label and the student's prediction."""
    pixels = np.array(read_image(path))
    panels = [("image", png_uri(pixels, nearest=False))]
    if not models.nets:
        return panels
    x = normalize(torch.from_numpy(pixels).permute(2, 0, 1)[None].to(models.device))
    options = inference_options(cfg)
    if "teacher" in models.nets:
        confidence, label = predict(models.nets["teacher"], x, **options).max(dim=1)
        if threshold is not None:
            label[confidence < threshold] = 255
        panels.append(("pseudo-label", png_uri(colour_labels(label, colours), nearest=True)))
    if "student" in models.nets:
        label = predict(models.nets["student"], x, **options).argmax(dim=1)
        panels.append(("student", png_uri(colour_labels(label, colours), nearest=True)))
    return panels


def unlabeled_paths(cfg: Config) -> dict[str, Path]:
    """Image path by id of the unlabeled split (a user error when the split cannot be read)."""
    split = cfg.data.unlabeled_split
    if not split:
        raise UserError("the config names no unlabeled split")
    return {entry[0]: entry[1] for entry in resolve_entries(read_split(split), cfg.data, split)}


# ----------------------------------------------------------------------------------------------- HTML

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
    return f'<section id="{anchor}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def absent(anchor: str, title: str, why: str) -> str:
    """A section the run has nothing for: its heading and one line saying why."""
    heading = f"<h2>{esc(title)}</h2>"
    return f'<section id="{anchor}" class="absent">\n{heading}\n<p class="note">{esc(why)}</p>\n</section>'


def plot_img(png: str, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{png}">'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def fmt_percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


@dataclass
class Report:
    """Everything the page is made of, read from one run directory."""

    run_dir: Path
    cfg: Config
    records: list[dict[str, Any]]
    iters_per_epoch: int
    scalars: Scalars
    hardness: Hardness | None

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
    check_existing_run(run_dir)
    cfg = read_run_config(run_dir, overrides)
    records = read_evaluations(run_dir)
    if not records:
        raise UserError(
            f"{run_dir} has no evaluation in metrics.jsonl yet; report again after the first one "
            "(every train.eval_every epochs)"
        )
    first = records[0]
    iters_per_epoch = max(1, round(int(first["iteration"]) / int(first["epoch"])))
    say(f"{run_dir}: {len(records)} evaluation(s); reading the training scalars")
    scalars = read_scalars(run_dir, iters_per_epoch)
    if (run_dir / "hardness.csv").is_file():
        say(f"{run_dir}: reading hardness.csv")
    return Report(run_dir, cfg, records, iters_per_epoch, scalars, read_hardness(run_dir))


def summary_section(r: Report) -> str:
    best, last = best_record(r.records), r.records[-1]
    rows = [
        ("run directory", str(r.run_dir)),
        ("method", r.method),
        ("data", f"{r.cfg.data.dataset.value} at {r.cfg.data.root}, {len(r.names)} classes"),
        ("epochs", f"{last['epoch']} of {r.cfg.train.epochs} evaluated, {r.iters_per_epoch} iterations each"),
        ("reported model", r.reported),
        ("best mIoU", f"{fmt_percent(miou_of(best))} (epoch {best['epoch']})"),
        ("final mIoU", f"{fmt_percent(miou_of(last))} (epoch {last['epoch']})"),
        (
            "sources",
            f"metrics.jsonl; training scalars: {r.scalars.source}" + ("; hardness.csv" if r.hardness else ""),
        ),
    ]
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return section("summary", "Summary", f'<table class="summary">{body}</table>')


def other_models(r: Report) -> dict[str, list[tuple[float, float]]]:
    """mIoU points (epoch, value) of the models evaluated beside the reported one, by label."""
    others = {}
    for tag, points in r.scalars.series.items():
        match = re.fullmatch(r"eval/(.+)_miou", tag)
        if match and match.group(1) not in ("best",):
            others[match.group(1).replace("_", " ")] = [(s / r.iters_per_epoch, v) for s, v in points]
    return others


def miou_section(plt: Any, r: Report) -> str:
    others = other_models(r)
    plotted = [f"{r.reported} (reported, metrics.jsonl)"] + [f"{m} ({r.scalars.source})" for m in others]
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
    losses = {t.split("/", 1)[1]: p for t, p in r.scalars.series.items() if t.startswith("train/loss")}
    if not losses:
        return absent(
            "losses",
            title,
            "no training loss was logged: the run has no TensorBoard event file and "
            "train.log holds no loss line",
        )
    png = plot_panels(plt, losses, r.iters_per_epoch)
    text = f"Epoch means (markers) over the logged window means, from {r.scalars.source}."
    return section("losses", title, plot_img(png, "training losses") + note(text))


def signals_section(plt: Any, r: Report) -> str:
    title = "Easiness, confident ratio and CutMix rate"
    found = {
        label: r.scalars.series[f"train/{name}"]
        for name, label in SIGNALS.items()
        if f"train/{name}" in r.scalars.series
    }
    if not found:
        return absent(
            "signals",
            title,
            f"this {r.method} run logs none of them: they are measured on the "
            "unlabeled images by the semi-supervised methods",
        )
    missing = [label for label in SIGNALS.values() if label not in found]
    text = f"Epoch means (markers) over the logged window means, from {r.scalars.source}."
    if missing:
        text += f" Not logged by this {r.method} run: {', '.join(missing)}."
    png = plot_series(plt, found, r.iters_per_epoch, "share of images / pixels")
    return section("signals", title, plot_img(png, title) + note(text))


def hardness_section(plt: Any, r: Report) -> str:
    title = "Hardness distribution per epoch"
    if r.hardness is None:
        return absent("hardness", title, no_hardness(r))
    count = sum(len(v) for v in r.hardness.by_epoch.values())
    shape = "violin and box" if len(r.hardness.by_epoch) <= VIOLIN_EPOCHS else "box"
    text = (
        f"Every image's hardness as each iteration measured it ({count} values in hardness.csv): {shape} "
        "(median, quartiles, whiskers at 1.5 IQR) per epoch, the mean in red."
    )
    return section("hardness", title, plot_img(plot_hardness(plt, r.hardness), title) + note(text))


def no_hardness(r: Report) -> str:
    return (
        f"this {r.method} run has no per-image hardness history (hardness.csv): only methods that measure "
        "instance hardness on unlabeled images (iMAS, mean teacher) write one"
    )


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


def legend(names: list[str], colours: list[tuple[int, int, int]]) -> str:
    items = [(name, colour) for name, colour in zip(names, colours)] + [("unconfident / none", IGNORE_COLOUR)]
    spans = "".join(
        f'<span><span class="swatch" style="background: rgb{tuple(colour)}"></span>{esc(name)}</span>'
        for name, colour in items
    )
    return f'<div class="legend">{spans}</div>'


def gallery_sections(r: Report, count: int, device: torch.device) -> list[str]:
    titles = {"hardest": "Hardest unlabeled images", "easiest": "Easiest unlabeled images"}
    if r.hardness is None:
        return [absent(anchor, title, no_hardness(r)) for anchor, title in titles.items()]
    if count <= 0:
        return [absent(anchor, title, "left out by --gallery 0") for anchor, title in titles.items()]
    means = image_means(r.hardness.last)
    hardest, easiest = rank_images(means, count)
    epoch = r.hardness.last_epoch + 1
    try:
        paths: dict[str, Path] = unlabeled_paths(r.cfg)
        problem = ""
    except UserError as exc:
        paths, problem = {}, user_message(exc)
    models = Models({}, "", device)
    if paths:
        say(f"{r.run_dir}: loading latest.pth for the galleries")
        models = load_models(r.cfg, r.run_dir, device)
    section_cfg = getattr(r.cfg, r.method, None)
    threshold = getattr(section_cfg, "threshold", None)
    colours = palette(r.cfg.data)
    total, done = len(hardest) + len(easiest), 0
    out = []
    for anchor, chosen in (("hardest", hardest), ("easiest", easiest)):
        cards = []
        for image_id, value in chosen:
            panels: list[tuple[str, str]] = []
            if image_id in paths:
                try:
                    panels = gallery_panels(paths[image_id], models, r.cfg, colours, threshold)
                except UserError as exc:
                    problem = problem or user_message(exc)
            done += 1
            if done % max(1, total // 4) == 0 or done == total:
                say(f"{r.run_dir}: gallery {done}/{total} images")
            cards.append(card(image_id, value, len(r.hardness.last[image_id]), panels))
        order = "highest" if anchor == "hardest" else "lowest"
        text = (
            f"The {len(chosen)} images of {order} hardness in epoch {epoch}, the last of hardness.csv "
            "(an image drawn more than once counts with its mean)."
        )
        notes = [text] + ([tie_note(chosen, means)] if tie_note(chosen, means) else [])
        if paths:
            notes.append(models.describe(r.method, threshold))
        if problem:
            notes.append(
                f"Images not shown: {problem} (give --opt data.root=... if the data lies elsewhere)."
            )
        body = "".join(note(t) for t in notes)
        if models.nets:
            body += legend(r.names, colours)
        body += f'<div class="gallery">{"".join(cards)}</div>'
        out.append(section(anchor, titles[anchor], body))
    return out


def card(image_id: str, hardness: float, draws: int, panels: list[tuple[str, str]]) -> str:
    cells = "".join(
        f'<div><img class="{"image" if title == "image" else "labels"}" alt="{esc(title)}" src="{uri}">'
        f"{esc(title)}</div>"
        for title, uri in panels
    )
    drawn = f", drawn {draws} times" if draws > 1 else ""
    return (
        f'<figure class="card" data-image-id="{esc(image_id)}" data-hardness="{hardness:.6f}">'
        f'<div class="panels">{cells}</div>'
        f"<figcaption><b>{esc(image_id)}</b> hardness {hardness:.3f}{drawn}</figcaption></figure>"
    )


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
        hardness_section(plt, r),
    ]
    galleries = gallery_sections(r, count, device)
    title = f"Run report: {r.run_dir.resolve().name}"
    heading = f"<h1>Run report <small>{esc(r.run_dir)} &middot; {esc(r.method)}</small></h1>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{heading}\n"
        + '<div class="grid">\n'
        + "\n".join(grid)
        + "\n</div>\n"
        + "\n".join(galleries)
        + "\n</main>\n</body>\n</html>\n"
    )


def run(args: argparse.Namespace) -> Path:
    pyplot()  # first: a missing matplotlib is said before any slow reading
    if args.gallery < 0:
        raise UserError(f"--gallery must be >= 0, got {args.gallery}")
    device = init_distributed(args.device).device  # a missing CUDA device too is said before the work
    run_dir = Path(args.run_dir)
    report = load_report(run_dir, args.opt)
    page = render(report, args.gallery, device)
    out = Path(args.out) if args.out else run_dir / "report.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {out} ({exc.strerror or exc})") from None
    say(f"wrote {out} ({len(page.encode()) // 1024} KiB)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
