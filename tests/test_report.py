"""tools/report.py on tiny real runs: the page holds the sections the method has (and one line for each it
has not), every image is an embedded PNG, the galleries hold the hardest and easiest images by hardness.csv,
train.log stands in for missing event files, and bad input is one sentence with exit status 2."""

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import report  # noqa: E402

# The session's tiny runs (imas_run, suponly_run), trained once for this file and test_compare.py.
pytest_plugins = ["run_fixtures"]

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
            card = {"data-image-id": a["data-image-id"], "hardness": float(a["data-hardness"]), "images": []}
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
    assert report.main([str(run_dir), *args]) == 0
    out = Path(args[args.index("--out") + 1]) if "--out" in args else run_dir / "report.html"
    return Page(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def imas_page(imas_run) -> Page:
    """The report of the tiny iMAS run, written where it goes by default (RUN_DIR/report.html)."""
    return make_page(imas_run)


def last_epoch_means(run_dir: Path) -> dict[str, float]:
    """Each image's mean hardness in the last epoch of hardness.csv, read here independently of the tool."""
    rows = [line.split(",") for line in (run_dir / "hardness.csv").read_text().splitlines()[1:]]
    last = max(int(row[1]) for row in rows)
    values = defaultdict(list)
    for image_id, epoch, _, value in rows:
        if int(epoch) == last:
            values[image_id].append(float(value))
    return {image_id: sum(v) / len(v) for image_id, v in values.items()}


def test_imas_page_has_every_section(imas_page) -> None:
    assert list(imas_page.sections) == SECTIONS
    assert imas_page.absent() == []
    assert imas_page.sections["miou"]["h2"] == "mIoU over training"
    curves = imas_page.notes("miou")
    assert "teacher (reported" in curves and "student (TensorBoard events)" in curves
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
        assert [c["hardness"] for c in cards] == pytest.approx([means[i] for i in expected], abs=1e-6)
        assert all(c["images"] == ["image", "pseudo-label", "student"] for c in cards)
    assert "latest.pth (epoch 2)" in imas_page.notes("hardest")
    assert "imas.threshold" in imas_page.notes("hardest")


def test_suponly_page_says_why_sections_are_missing(suponly_run, tmp_path) -> None:
    page = make_page(suponly_run, "--out", str(tmp_path / "page.html"))
    assert list(page.sections) == SECTIONS
    assert page.absent() == ["signals", "hardness", "hardest", "easiest"]
    for name in page.absent():
        assert len(page.sections[name]["notes"]) == 1 and "supervised" in page.notes(name)
    assert "no per-image hardness" in page.notes("hardness")
    assert "evaluates one model, the student" in page.notes("miou")
    assert not page.cards


def test_train_log_stands_in_for_event_files(imas_run, tmp_path) -> None:
    """A run folder copied with its text logs only (no events, no checkpoints): the same curves from
    train.log, and galleries of images without predictions."""
    source = imas_run
    copy = tmp_path / "copy"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("events.out.tfevents.*", "*.pth", "*.html"))
    ipe = 4
    from_events, from_log = report.read_tensorboard(source), report.read_train_log(copy, ipe)
    assert from_events is not None and from_log is not None
    per_class = {tag for tag in from_events.series if "/iou/" in tag}
    assert (
        set(from_log.series)
        == set(from_events.series) - {"train/lr", "eval/miou", "eval/best_miou"} - per_class
    )
    for tag, points in from_log.series.items():
        steps = [step for step, _ in points]
        assert steps == [step for step, _ in from_events.series[tag]], tag
        expected = [v for _, v in from_events.series[tag]]
        if tag.startswith("train/"):  # train.log prints 4 significant digits
            assert [v for _, v in points] == pytest.approx(expected, rel=5e-4, abs=1e-9), tag
        else:  # the mIoU in percent with 2 decimals: within 5e-5 as a fraction
            assert [v for _, v in points] == pytest.approx(expected, abs=6e-5), tag

    page = make_page(copy, "--out", str(tmp_path / "page.html"))
    assert page.absent() == []
    assert "training scalars: train.log" in page.text
    assert "student (train.log)" in page.notes("miou")
    assert "No latest.pth" in page.notes("hardest")
    assert all(c["images"] == ["image"] for c in page.cards["hardest"] + page.cards["easiest"])


def test_partial_signals_and_a_single_model_are_said(imas_run) -> None:
    """A FixMatch-like run (confident ratio and CutMix rate, no easiness, one evaluated model): the plots it
    has, and a line for what it lacks."""
    r = report.load_report(imas_run, ["train.method=fixmatch"])
    kept = {"train/confident", "train/cutmix_rate", "train/loss_x"}
    r.scalars = report.Scalars({t: p for t, p in r.scalars.series.items() if t in kept}, "TensorBoard events")
    plt = report.pyplot()
    signals = Page(report.signals_section(plt, r))
    assert signals.absent() == [] and "Not logged by this fixmatch run: easiness." in signals.notes("signals")
    assert "evaluates one model, the teacher" in Page(report.miou_section(plt, r)).notes("miou")


def test_a_cut_among_equal_hardness_is_said() -> None:
    means = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5}
    hardest, easiest = report.rank_images(means, 2)
    assert hardest == [("a", 1.0), ("b", 1.0)] and easiest == [("d", 0.5), ("a", 1.0)]
    assert report.tie_note(hardest, means) == (
        "3 images have hardness 1.000: the 2 shown of them are the first by image id."
    )
    assert report.tie_note(report.rank_images(means, 3)[0], means) == ""


def run_main(capsys, *argv: str) -> tuple[int, str]:
    code = report.main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist"),
        ("file", "is a file, not a run directory"),
        ("empty", "is not a run directory: it holds no config.yaml"),
        ("no_metrics", "has no evaluation in metrics.jsonl yet"),
        ("bad_opt", "unknown key 'train.nope'"),
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
    code, err = run_main(capsys, str(run_dir), *extra)
    assert code == 2
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_said_before_the_work(imas_run, tmp_path, capsys) -> None:
    code = report.main([str(imas_run), "--device", "cuda", "--out", str(tmp_path / "x.html")])
    captured = capsys.readouterr()
    assert code == 2 and captured.err == "error: device cuda was asked for but no CUDA device is available\n"
    assert captured.out == ""  # nothing read yet


def test_without_matplotlib_names_the_extra(imas_run, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, err = run_main(capsys, str(imas_run), "--out", str(tmp_path / "x.html"))
    assert code == 2 and 'pip install -e ".[report]"' in err and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()
