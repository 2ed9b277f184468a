"""predict's overlay (background left as the photo, classes blended at --alpha) and legend, and the start line
and progress of imas-eval and imas-predict, on synthetic arrays and checkpoint dictionaries (no model)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from imas import predict as predict_cli
from imas.data.classes import CITYSCAPES_CLASSES, VOC_CLASSES
from imas.data.toy import TOY_CLASSES
from imas.errors import CheckpointError, ConfigError
from imas.networks import describe_model, model_names, reported_key, resolve_model
from imas.progress import ImageProgress

COLOURS = np.array([(0, 0, 0), (200, 10, 10), (10, 200, 40)], dtype=np.uint8)


def photo_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """A random photo and a label map holding classes 0, 1, 2 and the ignore label 255."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    labels = rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(9, 11))
    labels[0, :4] = (0, 1, 2, 255)  # each value at least once
    return rgb, labels


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_leaves_background_exact_and_blends_classes_by_alpha(alpha):
    rgb, labels = photo_and_labels()
    out = predict_cli.overlay(rgb, labels, COLOURS, alpha, frozenset({0}))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    untouched = (labels == 0) | (labels == 255)
    assert np.array_equal(out[untouched], rgb[untouched])  # the photo, bit for bit
    for c in (1, 2):
        here = labels == c
        expected = np.round((1 - alpha) * rgb[here].astype(float) + alpha * COLOURS[c].astype(float))
        assert np.array_equal(out[here], expected.astype(np.uint8)), c
    if alpha == 1.0:
        assert (out[labels == 1] == COLOURS[1]).all()


def test_overlay_colours_class_0_when_it_is_not_background():
    """Cityscapes' class 0 (road) is a class to see: blended like the others; 255 still left alone."""
    rgb, labels = photo_and_labels()
    out = predict_cli.overlay(rgb, labels, COLOURS, 0.5, frozenset())
    road = labels == 0
    assert np.array_equal(out[road], np.round(0.5 * rgb[road].astype(float)).astype(np.uint8))  # black at 0.5
    assert np.array_equal(out[labels == 255], rgb[labels == 255])


def test_background_is_decided_by_the_dataset_names():
    assert predict_cli.background_classes(VOC_CLASSES) == {0}
    assert predict_cli.background_classes(TOY_CLASSES) == {0}
    assert predict_cli.background_classes(["Background ", "cat"]) == {0}  # a class_names.txt
    assert predict_cli.background_classes(CITYSCAPES_CLASSES) == set()  # road is overlaid
    assert predict_cli.background_classes(["class_0", "class_1"]) == set()  # unnamed: nothing assumed


@pytest.mark.parametrize("text, value", [("0", 0.0), ("0.25", 0.25), ("1", 1.0)])
def test_alpha_accepts_0_to_1(text, value):
    assert predict_cli.overlay_alpha(text) == value


@pytest.mark.parametrize("text", ["1.5", "-0.1", "nan", "half", ""])
def test_alpha_outside_0_to_1_is_one_sentence(text):
    with pytest.raises(ConfigError, match=rf"^--alpha {re.escape(text)} is not a number from 0 .* to 1 "):
        predict_cli.overlay_alpha(text)


# ------------------------------------------------------------------------------------------ the legend


def test_legend_has_a_swatch_of_each_class_colour(tmp_path):
    names, colours = (
        TOY_CLASSES,
        np.array([(0, 0, 0), (255, 255, 255), *COLOURS[1:], (7, 8, 9), (250, 0, 250)]),
    )
    assert predict_cli.write_legend(tmp_path, names, colours.astype(np.uint8), frozenset({0}))
    image = Image.open(tmp_path / "legend.png")
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    rows = (image.height - 2 * predict_cli.LEGEND_MARGIN) // predict_cli.LEGEND_ROW
    assert rows == len(names)  # one row per class, no more
    for index, colour in enumerate(colours):
        left, top, right, bottom = predict_cli.legend_swatch_box(index)
        inside = pixels[top + 1 : bottom - 1, left + 1 : right - 1]  # within the 1 px grey frame
        assert (inside == colour).all(), (index, names[index])
        assert (pixels[top, left] == 128).all()  # the frame shows a white swatch on the white page
        assert (pixels[top + 2 : bottom - 2, right + 2 :] != 255).any()  # some text beside it
    assert predict_cli.legend_lines(names, frozenset({0}))[:2] == [
        "0  background  (not coloured in overlays)",
        "1  disk",
    ]


def test_legend_is_rewritten_only_when_what_it_shows_changes(tmp_path):
    path = tmp_path / "legend.png"
    assert predict_cli.write_legend(tmp_path, TOY_CLASSES, COLOURS.repeat(2, 0), frozenset({0}))
    before = path.stat()
    assert not predict_cli.write_legend(tmp_path, TOY_CLASSES, COLOURS.repeat(2, 0), frozenset({0}))
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    renamed = ["road", *TOY_CLASSES[1:]]  # another dataset's checkpoint into the same folder
    assert predict_cli.write_legend(tmp_path, renamed, COLOURS.repeat(2, 0), frozenset())
    assert "road" in predict_cli.legend_shows(path)
    assert [p.name for p in tmp_path.iterdir()] == ["legend.png"]  # no temporary file left


def test_only_our_legend_is_recognised(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "legend.png")  # a user's picture
    assert predict_cli.legend_shows(tmp_path / "legend.png") is None
    (tmp_path / "notes.png").write_text("not an image")
    assert predict_cli.legend_shows(tmp_path / "notes.png") is None
    (tmp_path / "dir.png").mkdir()
    assert predict_cli.legend_shows(tmp_path / "dir.png") is None


# ------------------------------------------------------------------ naming the model, showing progress


def test_describe_model_uses_what_the_checkpoint_records():
    imas = {"config": {"train": {"method": "imas"}}, "teacher": {}, "model": {}, "iteration": 3000}
    best = imas | {"epoch": 12, "best_miou": 0.4723, "best_epoch": 12}
    assert describe_model(best, "runs/x/best.pth", "teacher", "teacher") == (
        "the teacher of runs/x/best.pth (epoch 12, iteration 3000, val mIoU 47.23 at save time)"
    )
    latest = imas | {"epoch": 15, "best_miou": 0.4723, "best_epoch": 12}
    assert describe_model(latest, "runs/x/latest.pth", "model", "student") == (
        "the student of runs/x/latest.pth (epoch 15, iteration 3000, best val mIoU 47.23 of the teacher at "
        "epoch 12)"
    )
    supervised = {"config": {"train": {"method": "supervised"}}, "model": {}, "epoch": 3, "best_miou": 0.1}
    assert describe_model(supervised, "s.pth", "model", "teacher") == (
        "the network of s.pth (it holds no teacher; epoch 3, best val mIoU 10.00 so far)"
    )
    cps = {"config": {"train": {"method": "cps"}}, "model": {}, "model2": {}, "epoch": 2, "best_epoch": 2}
    cps["best_miou"] = 0.5
    assert describe_model(cps, "c.pth", "model2", "student").startswith(
        "the second network of c.pth (epoch 2, val mIoU 50.00 of the first network at save time)"
    )
    assert describe_model({"model": {}, "best_miou": -1.0}, "n.pth", "model", "student") == (
        "the network of n.pth (no epoch or mIoU recorded)"
    )


def test_model_names_come_from_the_methods_declaration():
    """--model takes any network the run's method declares (CPS's second one too); "teacher" on a run
    without one reads its reported network; another name is one sentence listing the valid ones."""
    cps = {"config": {"train": {"method": "cps"}}, "model": {}, "model2": {}}
    assert model_names(cps) == ["student", "second_network"]
    assert resolve_model(cps, "c.pth", "second_network") == "model2"
    assert resolve_model(cps, "c.pth", "teacher") == resolve_model(cps, "c.pth", "student") == "model"
    u2pl = {"config": {"train": {"method": "u2pl"}}, "model": {}, "teacher": {}}
    assert resolve_model(u2pl, "u.pth", "teacher") == "teacher" and reported_key(u2pl) == "teacher"
    with pytest.raises(
        CheckpointError, match="holds no 'second_network' network; its networks: teacher, student"
    ):
        resolve_model(u2pl, "u.pth", "second_network")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


LINE = re.compile(r"^eval (\d+)/(\d+) images \(\d+%\), ([\d.]+) img/s, elapsed [\d:]+, eta (\d+:\d\d:\d\d)$")


def test_progress_in_a_log_is_a_plain_line_every_10_s_with_rate_and_eta():
    clock, stream = FakeClock(), io.StringIO()
    progress = ImageProgress("eval", 1000, stream=stream, clock=clock)
    for done in range(1, 1001):
        clock.now += 0.125  # 8 img/s: 125 s in all
        progress.update(done)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 12 + 1  # every 10 s (80 images) and the last, not 1000 lines
    first = LINE.match(lines[0])
    assert first and first.group(1) == "80" and first.group(3) == "8.00"
    assert first.group(4) == "0:01:55"  # 920 images left at 8 img/s
    assert LINE.match(lines[-1]).group(1, 2, 4) == ("1000", "1000", "0:00:00")
    assert "\r" not in stream.getvalue()


def test_progress_on_a_terminal_redraws_one_line():
    clock, stream = FakeClock(), Terminal()
    progress = ImageProgress("eval", 40, stream=stream, clock=clock)
    for done in range(1, 17):
        clock.now += 0.125
        progress.update(done)
    text = stream.getvalue()
    assert text.count("\r") == 4 and "\n" not in text  # every 0.5 s, in place
    progress.clear()  # before a log line: the line is blanked, the cursor back at its start
    assert stream.getvalue().endswith("\r") and stream.getvalue()[len(text) + 1 : -1].strip() == ""
    clock.now += 1
    progress.update(21)
    progress.close()  # stopped early: the line is ended
    assert stream.getvalue().endswith("\n") and LINE.match(stream.getvalue().split("\r")[-1].strip())


def test_progress_of_rank_0_counts_every_rank_and_other_ranks_stay_quiet():
    clock, stream = FakeClock(), io.StringIO()
    progress = ImageProgress("eval", 7, scale=2, stream=stream, clock=clock)
    clock.now += 1
    progress.update(4)  # rank 0's 4 of 7 (indices 0, 2, 4, 6): all done, as 8 > 7
    assert LINE.match(stream.getvalue().strip()).group(1, 2) == ("7", "7")
    quiet = io.StringIO()
    other = ImageProgress("eval", 7, enabled=False, scale=2, stream=quiet, clock=clock)
    other.update(3)
    other.close()
    assert quiet.getvalue() == ""
