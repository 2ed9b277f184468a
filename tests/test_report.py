"""imas-report on tiny real runs: the page holds the sections the method has (and one line for each it has
not), every image is an embedded PNG, the galleries hold the images of highest and lowest value of each
per-image quantity, the records are read in both forms (train_scalars.jsonl, and train.log for runs written
before it, such as the committed logs), and bad input is one sentence with exit status 2."""

from __future__ import annotations

import base64
import io
import shutil
import sys
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from run_forms import legacy_form, new_form, text_copy

import imas.report
from imas.logging import format_duration
from imas.report import page as report_page
from imas.report import plots, reading
from imas.rundir import read_run

# The session's tiny runs (imas_run, suponly_run), trained once for this file and test_compare.py.
pytest_plugins = ["run_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["summary", "miou", "classes", "losses", "signals", "hardness", "hardest", "easiest"]


class Page(HTMLParser):
    """The parts of a report page the tests look at: sections (id -> classes, heading, text), image
    sources, and the gallery cards of each section (image id, hardness, number of images)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.images: list[str] = []
        self.cards: dict[str, list[dict]] = defaultdict(list)
        self._section = ""
        self._tag = ""
        self.text = text
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self._tag = tag
        if tag == "section":
            self._section = a["id"]
            self.sections[self._section] = {"class": a.get("class", ""), "h2": "", "notes": []}
        elif tag == "img":
            self.images.append(a["src"])
            if self.cards.get(self._section) and "data-image-id" in self.cards[self._section][-1]:
                self.cards[self._section][-1]["images"].append(a["alt"])
        elif tag == "figure" and "card" in a.get("class", ""):
            card = {"data-image-id": a["data-image-id"], "value": float(a["data-value"]), "images": []}
            card["whole"] = float(a["data-whole"]) if "data-whole" in a else None
            self.cards[self._section].append(card)

    def handle_data(self, data: str) -> None:
        if not self._section:
            return
        if self._tag == "h2":
            self.sections[self._section]["h2"] += data
        elif self._tag == "p":
            self.sections[self._section]["notes"].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._tag = ""
        if tag == "section":
            self._section = ""

    def absent(self) -> list[str]:
        return [name for name, s in self.sections.items() if "absent" in s["class"]]

    def notes(self, section: str) -> str:
        return " ".join(self.sections[section]["notes"])


def make_page(run_dir: Path, *args: str) -> Page:
    assert imas.report.main([str(run_dir), *args]) == 0
    out = Path(args[args.index("--out") + 1]) if "--out" in args else run_dir / "report.html"
    return Page(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def imas_page(imas_run) -> Page:
    """The report of the tiny iMAS run, written where it goes by default (RUN_DIR/report.html)."""
    return make_page(imas_run)


def last_epoch_means(run_dir: Path, name: str = "hardness") -> dict[str, float]:
    """Each image's mean value in the last epoch of <name>.csv, read here independently of the tool."""
    rows = [line.split(",") for line in (run_dir / f"{name}.csv").read_text().splitlines()[1:]]
    last = max(int(row[1]) for row in rows)
    values = defaultdict(list)
    for image_id, epoch, _, value in rows:
        if int(epoch) == last:
            values[image_id].append(float(value))
    return {image_id: sum(v) / len(v) for image_id, v in values.items()}


@pytest.mark.slow
def test_imas_page_has_every_section(imas_page) -> None:
    assert list(imas_page.sections) == SECTIONS
    assert imas_page.absent() == []
    assert imas_page.text.startswith("<!DOCTYPE html>\n<!-- written by imas-report -->\n")  # its mark
    assert imas_page.sections["miou"]["h2"] == "mIoU over training"
    curves = imas_page.notes("miou")
    assert "teacher (reported, metrics.jsonl)" in curves and "student (metrics.jsonl)" in curves
    assert "Not logged" not in imas_page.notes("signals")  # easiness, confident ratio and CutMix rate: all
    # one plot per section with a plot, one image per panel of each gallery card
    cards = imas_page.cards["hardest"] + imas_page.cards["easiest"]
    plots = len(imas_page.images) - sum(len(c["images"]) for c in cards)
    assert plots == 5


def test_page_is_self_contained_png(imas_page) -> None:
    text = imas_page.text
    for outside in ("<script", "<link", "http://", "https://", "url("):
        assert outside not in text
    assert imas_page.images
    for src in imas_page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
        assert image.format == "PNG"
        image.verify()


def whole_image_hardness(run_dir: Path, image_id: str) -> float:
    """The hardness of one whole unlabeled image under latest.pth's teacher and student, computed here from
    their logits with training's function and the run's settings, independently of the report's code."""
    from imas.checkpoint import load_checkpoint
    from imas.data.io import read_image
    from imas.dist import DistInfo
    from imas.hardness import instance_hardness
    from imas.networks import load_trained_model
    from imas.normalization import normalize
    from imas.report.gallery import unlabeled_paths

    cfg = read_run(run_dir, per_image=False).resolved_config()
    ckpt = load_checkpoint(run_dir / "latest.pth")
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    pixels = torch.from_numpy(np.array(read_image(unlabeled_paths(cfg)[image_id])))
    x = normalize(pixels.permute(2, 0, 1)[None])
    with torch.no_grad():
        logits = [
            load_trained_model(cfg, ckpt, run_dir, w, info)[0](x).logits for w in ("student", "teacher")
        ]
    s = cfg.imas
    return float(instance_hardness(*logits, s.threshold, s.class_weighted, s.ignore_class0)[0])


def test_galleries_hold_the_hardest_and_easiest_images_of_the_history(imas_page, imas_run) -> None:
    means = last_epoch_means(imas_run)
    # the tiny run's threshold makes the hardness vary from image to image: the order is not by id alone
    assert len(set(means.values())) > 1
    assert len(means) == 16  # twice --gallery: every image is in one gallery, none in both
    hardest = sorted(means, key=lambda i: (-means[i], i))[:8]
    easiest = sorted(set(means) - set(hardest), key=lambda i: (means[i], i))
    for name, expected in (("hardest", hardest), ("easiest", easiest)):
        cards = imas_page.cards[name]
        assert [c["data-image-id"] for c in cards] == expected
        assert [c["value"] for c in cards] == pytest.approx([means[i] for i in expected], abs=1e-6)
        assert all(c["images"] == ["image", "pseudo-label", "student"] for c in cards)
    assert "latest.pth (epoch 2)" in imas_page.notes("hardest")
    assert "imas.threshold" in imas_page.notes("hardest")
    # how the ranking was measured and what a hardness of 1 means, in both galleries
    for name in ("hardest", "easiest"):
        notes = imas_page.notes(name)
        assert (
            "the mean over the crops of it that training scored in that epoch (1 crop for 16 images)" in notes
        )
        assert "A score of exactly 1 means easiness 0" in notes
        assert "the two models shared no class there," in notes  # the tiny run's unweighted IoU
        assert "Whole image: scored at report time by training's hardness function and settings" in notes
        assert "from one forward of each model on the whole image, at one scale and unflipped" in notes
    # beside each training value, the whole image's score, as training's function gives it
    card = imas_page.cards["hardest"][0]
    assert card["whole"] == pytest.approx(whole_image_hardness(imas_run, card["data-image-id"]), abs=1e-5)
    assert all(0 <= c["whole"] <= 1 for c in imas_page.cards["hardest"] + imas_page.cards["easiest"])


def test_suponly_page_says_why_sections_are_missing(suponly_run, tmp_path) -> None:
    page = make_page(suponly_run, "--out", str(tmp_path / "page.html"))
    assert list(page.sections) == SECTIONS
    assert page.absent() == ["signals", "hardness", "hardest", "easiest"]
    for name in page.absent():
        assert len(page.sections[name]["notes"]) == 1 and "supervised" in page.notes(name)
    assert "no per-image history (such as hardness.csv)" in page.notes("hardness")
    assert "evaluates one model, the student" in page.notes("miou")
    assert not page.cards


def event_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The train/* scalars of the run's TensorBoard events, read here independently of the tool."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = [tag for tag in accumulator.Tags()["scalars"] if tag.startswith("train/")]
    return {tag: sorted({e.step: e.value for e in accumulator.Scalars(tag)}.items()) for tag in tags}


def test_the_records_of_a_real_run_hold_what_tensorboard_shows(imas_run, tmp_path) -> None:
    """The training scalars the reader finds are TensorBoard's, in either form of the run's records:
    train_scalars.jsonl (full precision) where the loop writes it, and train.log (4 significant digits)
    for a run written before it."""
    events = event_scalars(imas_run)
    for copy in (imas_run, legacy_form(text_copy(imas_run, tmp_path / "legacy"))):
        run = read_run(copy, per_image=False)
        exact = run.scalars_source == "train_scalars.jsonl"
        assert run.scalars_source in ("train_scalars.jsonl", "train.log")
        assert set(run.scalars) <= set(events) and {"train/loss_x", "train/easiness"} <= set(run.scalars)
        for tag, points in run.scalars.items():
            assert [step for step, _ in points] == [step for step, _ in events[tag]], tag
            expected = [value for _, value in events[tag]]
            tolerance = {"rel": 1e-6} if exact else {"rel": 5e-4, "abs": 1e-9}
            assert [value for _, value in points] == pytest.approx(expected, **tolerance), tag
    assert run.scalars_source == "train.log"


def test_a_run_written_before_train_scalars_opens(imas_run, tmp_path) -> None:
    """A run folder of the older form, copied without events and checkpoints: the curves come from
    train.log, the student's from metrics.jsonl, and the galleries show images without predictions."""
    copy = legacy_form(text_copy(imas_run, tmp_path / "copy"))
    page = make_page(copy, "--out", str(tmp_path / "page.html"))
    assert list(page.sections) == SECTIONS and page.absent() == []
    assert "training scalars: train.log; hardness.csv" in page.text
    assert "from train.log" in page.notes("losses") and "student (metrics.jsonl)" in page.notes("miou")
    assert "No latest.pth" in page.notes("hardest")
    assert all(c["images"] == ["image"] for c in page.cards["hardest"] + page.cards["easiest"])


@pytest.mark.slow
def test_a_committed_log_folder_opens(tmp_path) -> None:
    """training-imas-logs/ holds runs of the older form (no "others" in metrics.jsonl either): the student's
    curve comes from train.log too."""
    page = make_page(
        REPO / "training-imas-logs/toy/imas/seed0", "--out", str(tmp_path / "p.html"), "--gallery", "0"
    )
    assert list(page.sections) == SECTIONS
    assert page.absent() == ["hardest", "easiest"] and "left out by --gallery 0" in page.notes("hardest")
    assert "training scalars: train.log" in page.text and "student (train.log)" in page.notes("miou")
    assert "(4800 values in hardness.csv)" in page.notes("hardness")


@pytest.mark.slow
def test_every_per_image_quantity_gets_its_sections(imas_run, tmp_path) -> None:
    """A run of the current form with a second per-image quantity (margin.csv): a distribution and two
    galleries each, the hardness in its own words, the other in neutral ones; the curves are
    train_scalars.jsonl's values (train.log is gone)."""
    copy = text_copy(imas_run, tmp_path / "copy", keep_checkpoints=True)
    written = new_form(copy)
    rows = [line.split(",") for line in (copy / "hardness.csv").read_text().splitlines()[1:]]
    margin = "".join(f"{i},{e},{it},{-float(v) * 10:.4f}\n" for i, e, it, v in rows)
    (copy / "margin.csv").write_text("image_id,epoch,iteration,margin\n" + margin)
    page = make_page(copy, "--gallery", "3")
    quantity = ["hardness", "margin", "hardest", "easiest", "margin-highest", "margin-lowest"]
    assert list(page.sections) == SECTIONS[:5] + quantity and page.absent() == []
    assert page.sections["margin"]["h2"] == "Margin distribution per epoch"
    assert page.sections["margin-highest"]["h2"] == "Unlabeled images of highest margin"
    assert "training scalars: train_scalars.jsonl; hardness.csv; margin.csv" in page.text
    assert "from train_scalars.jsonl" in page.notes("losses")
    means = last_epoch_means(copy, "margin")
    highest = sorted(means, key=lambda i: (-means[i], i))[:3]
    assert [c["data-image-id"] for c in page.cards["margin-highest"]] == highest
    assert all(c["images"] == ["image", "pseudo-label", "student"] for c in page.cards["margin-lowest"])
    r = reading.load_report(copy, [])
    assert r.scalars["train/loss"] == [(i, pytest.approx(v)) for i, v in written["loss"]]
    assert (r.record.wall_s, r.record.wall_source) == (10.0 * 8 + 5, "metrics.jsonl")


def test_partial_signals_and_a_single_model_are_said(imas_run) -> None:
    """A FixMatch-like run (confident ratio and CutMix rate, no easiness, one evaluated model): the plots it
    has, and a line for what it lacks."""
    r = reading.load_report(imas_run, ["train.method=fixmatch"])
    kept = {"train/confident", "train/cutmix_rate", "train/loss_x"}
    r.record.scalars = {t: p for t, p in r.scalars.items() if t in kept}
    r.record.others = {}
    plt = plots.pyplot()
    signals = Page(report_page.signals_section(plt, r))
    assert signals.absent() == [] and "Not logged by this fixmatch run: easiness." in signals.notes("signals")
    assert "evaluates one model, the teacher" in Page(report_page.miou_section(plt, r)).notes("miou")


def test_a_cut_among_equal_values_is_said() -> None:
    means = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5, "e": 1.0}
    hardest, easiest = reading.rank_images(means, 2)
    assert hardest == [("a", 1.0), ("b", 1.0)] and easiest == [("d", 0.5), ("c", 1.0)]
    assert reading.tie_note(hardest, means) == (
        "4 images have hardness 1.000: the 2 shown of them are the first by image id."
    )
    assert reading.tie_note(easiest, means, elsewhere=hardest) == (
        "4 images have hardness 1.000: the 1 shown of them are the first by image id after the 2 in the "
        "other gallery."
    )
    assert reading.tie_note([(i, 1.0) for i in "abce"], means) == ""  # every tied image shown
    assert reading.tie_note(hardest, means, "margin").startswith("4 images have margin 1.000")


@pytest.mark.parametrize("count", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("values", [[0.5] * 7, [0.9, 0.1, 0.5, 0.7, 0.3, 1.0, 0.2], [1.0]])
def test_no_image_is_both_highest_and_lowest(values, count) -> None:
    """With fewer than 2 x count images they are split (the middle one of an odd number to the highest);
    with more, each gallery holds `count` images; the highest are always the top of the ranking."""
    means = {f"img{i}": v for i, v in enumerate(values)}
    highest, lowest = reading.rank_images(means, count)
    assert not {i for i, _ in highest} & {i for i, _ in lowest}
    n = len(means)
    assert len(highest) == min(count, (n + 1) // 2) and len(lowest) == min(count, n // 2)
    ranked = sorted(means.items(), key=lambda item: (-item[1], item[0]))
    assert highest == ranked[: len(highest)]
    assert all(value <= min(v for _, v in highest) for _, value in lowest)
    assert [v for _, v in lowest] == sorted(v for _, v in lowest)


def test_draw_counts_says_how_many_values_each_image_has() -> None:
    values = {"a": [1.0], "b": [0.5, 0.7], "c": [0.2], "d": [0.1, 0.3, 0.4]}
    assert reading.draw_counts(values, "crop") == "1 crop for 2 images, 2 for 1 image, 3 for 1 image"
    assert reading.draw_counts({"a": [0.1, 0.2]}, "value") == "2 values for 1 image"


def captured_figures(monkeypatch) -> list:
    """The figures the plot functions draw, kept instead of being encoded."""
    figures: list = []

    def keep(plt, fig) -> str:
        figures.append(fig)
        plt.close(fig)
        return ""

    monkeypatch.setattr(plots, "figure_png", keep)
    return figures


def visible_ticks(ax) -> list[float]:
    low, high = sorted(ax.get_xlim())
    return [t for t in ax.get_xticks() if low - 1e-9 <= t <= high + 1e-9]


@pytest.mark.parametrize("epochs", [[6], [1], [1, 2], [1, 2, 3, 4, 5, 6]])
def test_epoch_axes_show_whole_epochs_and_every_plot_is_labelled(epochs, monkeypatch) -> None:
    """One evaluation, one epoch of history or a few: the epoch axes tick whole epochs only, and every axes
    of every plot (each loss panel included) names both of its axes."""
    figures = captured_figures(monkeypatch)
    plt = plots.pyplot()
    records = [{"epoch": e, "iteration": 10 * e, "miou": 0.3 + e / 100, "iou": {"a": 0.5}} for e in epochs]
    plots.plot_miou(plt, records, "teacher", {"student": [(e, 0.3) for e in epochs]})
    # logging windows every 5 iterations of 10-iteration epochs, up to the last epoch
    points = [(step, 1.0 / step) for step in range(5, 10 * epochs[-1] + 1, 5)]
    plots.plot_panels(plt, {"loss_x": points, "loss_u": points, "loss_cm": points}, 10)
    plots.plot_series(plt, {"easiness": points}, 10, "share of images / pixels")
    # a per-image history's epochs count from 1, as PerImageHistory holds them
    plots.plot_distribution(plt, {e: np.array([0.2, 0.5, 1.0]) for e in epochs}, "hardness")
    plots.plot_classes(plt, ["a", "b"], [("epoch 6 (last and best)", records[-1])])
    assert len(figures) == 5
    epoch_axes = 0
    for fig in figures:
        for ax in [ax for ax in fig.axes if ax.get_visible()]:
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
            if ax.get_xlabel() == "epoch":
                epoch_axes += 1
                ticks = visible_ticks(ax)
                assert ticks and all(float(t).is_integer() for t in ticks), ticks
                assert set(epochs) <= set(ticks) or ax.get_title().startswith("loss") or len(epochs) > 5
    assert epoch_axes == 1 + 3 + 1 + 1
    distribution = figures[3].axes[0]
    assert [int(t) for t in visible_ticks(distribution)] == epochs  # drawn at the history's own epochs


def banner(stamp: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    lines = [f"{stamp} INFO run runs/x on cpu x 1 (fp32)"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines) + "\n"


def test_the_hardware_of_each_start_is_read_from_train_log(tmp_path) -> None:
    xeon = "Intel(R) Xeon(R) Processor, 2 cores, AVX512"
    gpu = "NVIDIA H100 80GB HBM3, 16 cores"
    rows = [("seed", "0"), ("world size", "1 process on cpu, precision fp32")]
    train_line = "2026-12-02 10:00:05 INFO epoch 1/6 it 25/900 3.36 it/s lr 0.001 loss_x 0.48\n"
    (tmp_path / "train.log").write_text(
        banner("2026-12-02 10:00:00", [*rows, ("hardware", xeon)])
        + train_line
        + "    class      IoU\n  hardware   an evaluation table's row, not the banner's\n"
        + banner("2026-12-02 11:00:00", [*rows, ("hardware", gpu)])
        + banner("2026-12-02 12:00:00", [*rows, ("hardware", xeon)])
        + banner("2026-12-02 13:00:00", rows)  # a start whose banner has no hardware row
    )
    starts = reading.recorded_hardware(tmp_path)
    assert starts == [xeon, gpu, xeon, None]
    assert reading.describe_hardware(starts) == f"{xeon}; {gpu} (not recorded for 1 of 4 starts)"
    assert reading.describe_hardware(starts[:1]) == xeon
    assert reading.describe_hardware([None]) == reading.describe_hardware([]) == "not recorded"
    assert reading.recorded_hardware(tmp_path / "nowhere") == []


def summary_rows(r: reading.Report) -> dict[str, str]:
    text = report_page.summary_section(r)
    cells = [part.split("</td>")[0] for part in text.split("<td>")[1:]]
    return dict(zip(cells[::2], cells[1::2]))


def test_summary_names_seed_precision_hardware_and_wall_time(imas_run, tmp_path) -> None:
    copy = text_copy(imas_run, tmp_path / "copy")
    r = reading.load_report(copy, [])
    rows = summary_rows(r)
    assert rows["seed"] == "0" and rows["precision"] == "fp32"  # config.yaml's train.seed and precision
    run = read_run(copy, per_image=False)  # the run's own record of its time
    assert run.wall_s is not None and run.wall_source in ("metrics.jsonl", "train_scalars.jsonl")
    assert rows["wall time"] == f"{format_duration(run.wall_s)} (h:mm:ss, from {run.wall_source})"
    log = (copy / "train.log").read_text()
    if "hardware" not in log:  # a run from before the banner's hardware row
        assert rows["hardware"] == "not recorded"
        (copy / "train.log").write_text(
            banner("2026-12-02 10:00:00", [("hardware", "Some CPU, 2 cores")]) + log
        )
        assert summary_rows(r)["hardware"].startswith("Some CPU, 2 cores")
    (copy / "train.log").unlink()
    assert summary_rows(r)["hardware"] == "not recorded"
    r.record.wall_s = None
    assert summary_rows(r)["wall time"] == "not recorded"


def test_a_history_of_few_images_is_split_and_its_epochs_shown_as_held(imas_run) -> None:
    """A hand-made history (epochs from 1, as PerImageHistory holds them) of 5 images in its last epoch,
    one drawn twice: 3 hardest and 2 easiest, none in both; the epoch shown is the history's own, the
    crops per image are counted, and each card carries the whole image's score."""
    from imas.rundir import PerImageHistory

    r = reading.load_report(imas_run, [])
    ids = r.per_image["hardness"].ids[:5]
    rows = [(0, 1, 0.3), (1, 1, 0.6)]  # epoch 1: not the last
    rows += [(0, 2, 1.0), (1, 2, 1.0), (2, 2, 0.4), (3, 2, 0.2), (4, 2, 0.9), (2, 2, 0.6)]
    history = PerImageHistory(
        "hardness",
        imas_run / "hardness.csv",
        ids,
        np.array([i for i, _, _ in rows]),
        np.array([e for _, e, _ in rows]),
        np.arange(len(rows)),
        np.array([v for _, _, v in rows], dtype=np.float64),
    )
    pictures = report_page.Pictures(r, torch.device("cpu"), total=5)
    page = Page("\n".join(report_page.quantity_galleries(history, 8, pictures)))
    hardest = [c["data-image-id"] for c in page.cards["hardest"]]
    easiest = [c["data-image-id"] for c in page.cards["easiest"]]
    assert hardest == [ids[0], ids[1], ids[4]] and easiest == [ids[3], ids[2]]
    assert [c["value"] for c in page.cards["easiest"]] == pytest.approx([0.2, 0.5])
    for name in ("hardest", "easiest"):
        notes = page.notes(name)
        assert "in epoch 2." in notes and "epoch 3" not in notes
        assert "(1 crop for 4 images, 2 for 1 image)" in notes
        assert "Epoch 2 measured 5 images, fewer than twice --gallery 8: they are split" in notes
        assert (
            "hardness function and settings (imas.threshold 0.182, mean IoU over the classes present)"
            in notes
        )
    assert "(mean of 2 crops)" in page.text and "hardness 1.000 in training (1 crop)" in page.text
    assert all(c["whole"] is not None for c in page.cards["hardest"] + page.cards["easiest"])


def run_main(capsys, *argv: str) -> tuple[int, str]:
    code = imas.report.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist"),
        ("file", "is a file, not a run directory"),
        ("empty", "is not a run directory: it holds no config.yaml"),
        ("no_metrics", "has no evaluation in metrics.jsonl yet"),
        ("bad_opt", "unknown key 'train.nope'"),
        ("bad_gallery", "--gallery must be >= 0, got -1"),
        ("bad_config", "cannot be read as a config"),
    ],
)
def test_bad_input_is_one_sentence(case, expected, imas_run, tmp_path, capsys) -> None:
    run_dir, extra = tmp_path / "run", []
    if case == "file":
        run_dir.write_text("x")
    elif case == "empty":
        run_dir.mkdir()
    elif case == "no_metrics":
        run_dir.mkdir()
        shutil.copy(imas_run / "config.yaml", run_dir)
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "iter')  # a line cut short by a crash
    elif case == "bad_opt":
        run_dir, extra = imas_run, ["--opt", "train.nope=1", "--out", str(tmp_path / "x.html")]
    elif case == "bad_gallery":
        run_dir, extra = imas_run, ["--gallery", "-1", "--out", str(tmp_path / "x.html")]
    elif case == "bad_config":
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text("train: [")
    code, err = run_main(capsys, str(run_dir), *extra)
    assert code == 2
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err


def test_bad_input_is_said_before_the_per_image_histories_are_read(imas_run, tmp_path, capsys, monkeypatch):
    """A bad --opt and a run without evaluations are answered before the per-image CSVs (the large files)
    are read."""
    monkeypatch.setattr(reading, "read_per_image_histories", lambda run_dir: pytest.fail(f"{run_dir} read"))
    code, err = run_main(capsys, str(imas_run), "--opt", "train.nope=1", "--out", str(tmp_path / "x.html"))
    assert code == 2 and "unknown key 'train.nope'" in err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(imas_run / "config.yaml", run_dir)
    shutil.copy(imas_run / "hardness.csv", run_dir)
    code, err = run_main(capsys, str(run_dir))
    assert code == 2 and "has no evaluation in metrics.jsonl yet" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_said_before_the_work(imas_run, tmp_path, capsys) -> None:
    code = imas.report.main([str(imas_run), "--device", "cuda", "--out", str(tmp_path / "x.html")])
    captured = capsys.readouterr()
    assert code == 2 and captured.err == "error: device cuda was asked for but no CUDA device is available\n"
    assert captured.out == ""  # nothing read yet


def test_without_matplotlib_names_the_extra(imas_run, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, err = run_main(capsys, str(imas_run), "--out", str(tmp_path / "x.html"))
    assert code == 2 and 'pip install -e ".[report]"' in err and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def test_the_ranking_note_names_what_a_hardness_of_one_means_under_each_setting(tmp_path) -> None:
    """Class-weighted with the background left out (the default), the note says a crop of background alone
    scores 1; with the background counted, it does not claim so."""
    from types import SimpleNamespace

    from imas.report.gallery import Scoring
    from imas.rundir import PerImageHistory

    history = PerImageHistory(
        "hardness",
        tmp_path / "hardness.csv",
        ["a", "b"],
        np.array([0, 1, 1]),
        np.array([3, 3, 3]),
        np.array([0, 0, 1]),
        np.array([1.0, 0.5, 0.7]),
    )
    values = history.image_values(3)
    for weighted, background, expected in (
        (True, True, "no foreground class"),
        (False, True, "no class there"),
    ):
        scoring = Scoring("imas", 0.95, weighted, background)
        pictures = SimpleNamespace(scoring=scoring)
        how, split = report_page.ranking_notes(history, values, 8, pictures)
        assert how.startswith("Ranked by each image's hardness in epoch 3, the last of hardness.csv")
        assert "(1 crop for 1 image, 2 for 1 image)" in how and expected in how
        assert ("one of the models predicted background alone there" in how) == weighted
        assert split.startswith("Epoch 3 measured 2 images, fewer than twice --gallery 8")
