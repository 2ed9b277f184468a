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

import pytest
import torch
from PIL import Image
from run_forms import legacy_form, new_form, text_copy

import imas.report
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


def test_galleries_hold_the_hardest_and_easiest_images_of_the_history(imas_page, imas_run) -> None:
    means = last_epoch_means(imas_run)
    # the tiny run's threshold makes the hardness vary from image to image: the order is not by id alone
    assert len(set(means.values())) > 1
    hardest = sorted(means, key=lambda i: (-means[i], i))[:8]
    easiest = sorted(means, key=lambda i: (means[i], i))[:8]
    for name, expected in (("hardest", hardest), ("easiest", easiest)):
        cards = imas_page.cards[name]
        assert [c["data-image-id"] for c in cards] == expected
        assert [c["value"] for c in cards] == pytest.approx([means[i] for i in expected], abs=1e-6)
        assert all(c["images"] == ["image", "pseudo-label", "student"] for c in cards)
    assert "latest.pth (epoch 2)" in imas_page.notes("hardest")
    assert "imas.threshold" in imas_page.notes("hardest")


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
    means = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5}
    hardest, easiest = reading.rank_images(means, 2)
    assert hardest == [("a", 1.0), ("b", 1.0)] and easiest == [("d", 0.5), ("a", 1.0)]
    assert reading.tie_note(hardest, means) == (
        "3 images have hardness 1.000: the 2 shown of them are the first by image id."
    )
    assert reading.tie_note(reading.rank_images(means, 3)[0], means) == ""
    assert reading.tie_note(hardest, means, "margin").startswith("3 images have margin 1.000")


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
