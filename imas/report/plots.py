"""The report's plots, drawn with matplotlib (the report extra) and embedded as base64 PNGs."""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from typing import Any

import numpy as np

from imas.errors import UserError
from imas.rundir import best_record, miou_of

FIG_WIDTH = 6.4  # inches at 100 dpi: a plot fills half the page's width (two sections a row)
VIOLIN_EPOCHS = (
    15  # up to this many epochs a violin per epoch; more would be slivers at half the page's width
)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), or one sentence naming the extra to
    install: the report is the only part of the project that needs matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "the report draws its plots with matplotlib, which is not installed: pip install matplotlib "
            '(in a checkout of the repository: pip install -e ".[report]")'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(plt: Any, fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


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
    """Whole epochs on the x axis, also where the axis spans one epoch or less (one evaluation, one epoch of
    history): matplotlib's integer locator falls back to ticks at 5.95, 5.97, ... unless told that a single
    whole tick will do. An axis narrower than one epoch is widened to half an epoch each side."""
    from matplotlib.ticker import MaxNLocator

    low, high = ax.get_xlim()
    if high - low < 1:
        middle = (low + high) / 2
        ax.set_xlim(middle - 0.5, middle + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_miou(
    plt: Any, records: list[dict[str, Any]], reported: str, others: dict[str, list[tuple[int, float]]]
) -> str:
    """The reported model's mIoU per evaluation, its best starred, and the other evaluated models dashed
    (`others`: label -> (epoch, mIoU as a fraction))."""
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
    iteration it is logged at, so the windows of epoch e are those logged at iterations in
    ((e - 1)·n, e·n]."""
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


def plot_series(
    plt: Any, series: dict[str, list[tuple[int, float]]], iters_per_epoch: int, ylabel: str
) -> str:
    """Series of one kind in [0, 1] (easiness, confident ratio, CutMix rate) on one axes."""
    fig, ax = new_axes(plt)
    for index, (name, points) in enumerate(series.items()):
        draw_series(ax, points, iters_per_epoch, name, f"C{index}")
    epoch_ticks(ax)
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
        epoch_ticks(ax)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel("loss", fontsize=9)
    fig.tight_layout()
    return figure_png(plt, fig)


def plot_distribution(plt: Any, by_epoch: dict[int, np.ndarray], name: str) -> str:
    """Per epoch (PerImageHistory's epochs, 1-based as the console counts), a box (median, quartiles,
    whiskers at 1.5 IQR) over a violin of one per-image quantity's values (boxes alone, filled, beyond
    VIOLIN_EPOCHS epochs), and the mean. A quantity within [0, 1] (the hardness) is drawn on that whole
    range."""
    fig, ax = new_axes(plt)
    data = list(by_epoch.values())
    positions = list(by_epoch)
    violins = len(positions) <= VIOLIN_EPOCHS
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
    ax.set_xlim(min(positions) - 0.6, max(positions) + 0.6)
    epoch_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    if all(d.min() >= 0 and d.max() <= 1 for d in data):
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
    ax.set_xlabel("class")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right")
    return figure_png(plt, fig)
