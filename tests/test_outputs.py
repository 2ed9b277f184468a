"""No command replaces a file it did not write, every result is written atomically (a full disk leaves the
previous file whole and no temporary), broken symlinks among predict's inputs are listed, and an unwritable
--out is one sentence before any work (imas.outputs and its writers)."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import imas.report
from imas import compare, outputs, pseudo_labels
from imas import evaluate as eval_cli
from imas import predict as predict_cli
from imas.cli import run_command
from imas.data import split_lists
from imas.data.commands import main as imas_data
from imas.logging import METRICS_NAME, SCALARS_NAME
from imas.report import command as report_command
from imas.report.page import COMMAND as REPORT
from tools import convert_pretrained

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "training-imas-logs/toy"


# ------------------------------------------------------------------------------------------- helpers


def photo(path: Path, h: int = 20, w: int = 30, seed: int = 0) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def forbid(monkeypatch, module, name: str) -> None:
    """`module.name` is the first piece of work: a refusal must come before it."""

    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran before the refusal")

    monkeypatch.setattr(module, name, fail)


class FullDisk(io.FileIO):
    """A temporary file on a disk that fills up after a few bytes."""

    def write(self, data) -> int:
        super().write(bytes(data)[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def full_disk(monkeypatch) -> None:
    monkeypatch.setattr(outputs, "_open", lambda tmp: FullDisk(tmp, "w"))


def one_sentence(capsys) -> str:
    """The one error line, the last on stderr (progress lines may come before it), without "error: "."""
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], lines
    return lines[-1][len("error: ") :]


def no_temporary(folder: Path) -> None:
    assert not [p.name for p in folder.rglob(".*.tmp")]


def eval_args(checkpoint: Path, output: Path, *extra: str) -> list[str]:
    config = checkpoint.parent / "c.yaml"
    return [
        "--config",
        str(config),
        "--checkpoint",
        str(checkpoint),
        "--device",
        "cpu",
        "--output",
        str(output),
        *extra,
    ]


def predict(checkpoint: Path, source: Path, out: Path, *extra: str) -> int:
    args = ["--checkpoint", str(checkpoint), "--input", str(source), "--output", str(out), "--device", "cpu"]
    return predict_cli.main([*args, *extra])


def fake_run(folder: Path) -> Path:
    """A folder holding a run's own files (what matters here is their names and headers)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("train: {method: supervised}\n")
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "miou": 0.5}\n')
    (folder / "hardness.csv").write_text("image_id,epoch,iteration,hardness\na,0,1,0.5\n")
    return folder


def stub_report(
    monkeypatch, page: str = f"<!DOCTYPE html>\n{outputs.text_mark(REPORT)}\n<p>ok</p>\n"
) -> None:
    """imas-report without reading a run or drawing: only its writing is under test."""
    monkeypatch.setattr(report_command, "load_report", lambda run_dir, opts: object())
    monkeypatch.setattr(report_command, "render", lambda report, count, device: page)


# ------------------------------------------------------------------------------------------- the rule


def test_a_file_is_ours_only_with_our_mark(tmp_path):
    marked = {
        "a.json": lambda p: p.write_text(json.dumps({"miou": 1, "written_by": "imas-eval"})),
        "a.md": lambda p: p.write_text(outputs.text_mark("imas-eval") + "\n| a |\n"),
        "a.png": lambda p: Image.new("L", (2, 2)).save(p, pnginfo=outputs.png_mark("imas-eval")),
        "a.jpg": lambda p: Image.new("RGB", (2, 2)).save(p, comment=outputs.jpeg_mark("imas-eval")),
        "a.pth": lambda p: torch.save({"w": torch.zeros(1), "written_by": "imas-eval"}, p),
    }
    for name, write in marked.items():
        write(tmp_path / name)
        assert outputs.mark_of(tmp_path / name) == "imas-eval", name
        outputs.check_output(tmp_path / name, "imas-eval", f"--output {name}")  # ours: no refusal
        with pytest.raises(
            outputs.UserError, match=rf"^--output {name} is a file imas-report did not write; "
        ):
            outputs.check_output(tmp_path / name, "imas-report", f"--output {name}")
    (tmp_path / "t.csv").write_text("run,method,config,model,best mIoU,x\n")
    assert outputs.mark_of(tmp_path / "t.csv") == "imas-compare"
    assert compare.HEAD[:5] == list(outputs.CSV_HEADERS["imas-compare"])  # compare's header is its mark
    # Results written before the marks: an imas-eval JSON by its keys, a legend by its chunk.
    (tmp_path / "old.json").write_text(json.dumps({"miou": 0.5, "checkpoint": "c.pth", "model": "teacher"}))
    assert outputs.mark_of(tmp_path / "old.json") == "imas-eval"
    legend = PngInfo()
    legend.add_text(outputs.LEGEND_KEY, "6 classes")
    Image.new("RGB", (2, 2)).save(tmp_path / "legend.png", pnginfo=legend)
    assert outputs.mark_of(tmp_path / "legend.png") == "imas-predict"
    for name in ("plain.json", "plain.png", "plain.html", "plain.csv", "plain.pth"):
        (tmp_path / name).write_bytes(b"a user's file")
        assert outputs.mark_of(tmp_path / name) is None, name


def test_inputs_and_a_runs_files_are_refused_even_with_force(tmp_path):
    run = fake_run(tmp_path / "run")
    user = tmp_path / "notes.json"
    user.write_text("{}")
    outputs.check_output(user, "imas-eval", "--output notes.json", force=True)  # --force: a user's file
    with pytest.raises(outputs.UserError, match=r"is the config this command reads; choose another path$"):
        outputs.check_output(user, "imas-eval", "--output x", inputs={"config": user}, force=True)
    for name, kind in (("metrics.jsonl", "a run's metrics"), ("hardness.csv", "a run's per-image history")):
        with pytest.raises(outputs.UserError) as info:
            outputs.check_output(run / name, "imas-eval", f"--output {run / name}", force=True)
        assert (
            str(info.value)
            == f"--output {run / name} is a file imas-eval did not write ({kind}); choose another path"
        )
    with pytest.raises(outputs.UserError, match=r"is a folder; name a file$"):
        outputs.check_output(run, "imas-eval", "--output run")


def test_a_run_file_name_outside_a_run_is_any_file_and_a_marked_one_is_the_commands(tmp_path):
    alone = tmp_path / "mine/result.json"
    alone.parent.mkdir()
    alone.write_text('{"note": "mine"}')
    outputs.check_output(alone, "imas-eval", "--output result.json", force=True)  # a name, not a run's file
    with pytest.raises(outputs.UserError, match=r"did not write; choose another path, or add --force"):
        outputs.check_output(alone, "imas-eval", "--output result.json")
    alone.write_text(json.dumps({"miou": 0.5, "written_by": "imas-eval"}))
    outputs.check_output(alone, "imas-eval", "--output result.json")  # imas-eval's: replaced on a rerun
    run = fake_run(tmp_path / "run")
    (run / "result.json").write_text(json.dumps({"miou": 0.5, "written_by": "imas-eval"}))
    outputs.check_output(run / "result.json", "imas-eval", "--output x")  # its own mark, even in a run
    # A run's result without the mark is refused even with --force, even with an old imas-eval JSON's keys.
    (run / "result.json").write_text(json.dumps({"miou": 0.5, "checkpoint": "c.pth", "model": "teacher"}))
    for command in ("imas-eval", "imas-report"):
        with pytest.raises(outputs.UserError, match=r"did not write \(a run's benchmark result\); choose"):
            outputs.check_output(run / "result.json", command, "--output x", force=True)
    assert outputs.protected(run / "config.yaml") == "a run's config"
    assert outputs.protected(tmp_path / "config.yaml") is None  # a config.yaml alone in its folder
    (tmp_path / "c/config.yaml").parent.mkdir()
    (tmp_path / "c/config.yaml").write_text("{}")  # a checkpoint copied with its config: no run
    assert outputs.protected(tmp_path / "c/best.pth") is None
    assert outputs.protected(tmp_path / "c/metrics.jsonl") == "a run's metrics"  # only training writes it


def test_the_format_is_read_from_the_content_not_the_name(tmp_path, monkeypatch):
    marked = {
        "eval.out": lambda p: p.write_text(json.dumps({"miou": 1, "written_by": "imas-eval"})),
        "table.txt": lambda p: p.write_text(outputs.text_mark("imas-eval") + "\n| a |\n"),
        "report": lambda p: p.write_text(f"<!DOCTYPE html>\n{outputs.text_mark('imas-eval')}\n<p>x</p>"),
        "table.csv": lambda p: p.write_text(outputs.text_mark("imas-eval") + "\n| a |\n"),  # markdown inside
        "image.dat": lambda p: Image.new("L", (2, 2)).save(p, "PNG", pnginfo=outputs.png_mark("imas-eval")),
        "photo": lambda p: Image.new("RGB", (2, 2)).save(p, "JPEG", comment=outputs.jpeg_mark("imas-eval")),
        "weights.bin": lambda p: torch.save({"w": torch.zeros(1), "written_by": "imas-eval"}, p),
    }
    for name, write in marked.items():
        write(tmp_path / name)
        assert outputs.mark_of(tmp_path / name) == "imas-eval", name
        outputs.check_output(tmp_path / name, "imas-eval", f"--output {name}")
    (tmp_path / "t.tsv").write_text("run,method,config,model,best mIoU,x\n")
    assert outputs.mark_of(tmp_path / "t.tsv") == "imas-compare"
    (tmp_path / "table.md").write_text("run,method,config,model,best mIoU\n")  # a CSV named .md
    assert outputs.mark_of(tmp_path / "table.md") == "imas-compare"
    # A large file is not read whole to look for a mark: only a JSON under the cap is.
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.write(b'{"written_by": "imas-eval"')
        f.truncate(outputs.JSON_LIMIT + 1)
    monkeypatch.setattr(outputs.json, "loads", lambda *a, **k: pytest.fail("a large file was read whole"))
    assert outputs.mark_of(big) is None


def test_compare_replaces_its_own_tables_whatever_their_names(tmp_path, capsys):
    runs = [str(LOGS / "imas/seed0")]
    md, table = tmp_path / "table.csv", tmp_path / "t.tsv"  # markdown in a .csv, CSV in a .tsv
    for _ in range(2):
        assert compare.main([*runs, "--out", str(md), "--csv", str(table)]) == 0
    capsys.readouterr()
    assert md.read_text().startswith(outputs.text_mark("imas-compare"))
    assert table.read_text().startswith("run,method,config,model,best mIoU,")


def test_imas_outputs_imports_neither_torch_nor_pil():
    code = "import sys, imas.outputs; print('torch' in sys.modules, 'PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.split() == ["False", "False"], result.stderr[-2000:]
    # The run's file names written out in imas.outputs are the ones training writes.
    assert {METRICS_NAME: "a run's metrics", SCALARS_NAME: "a run's training scalars"}.items() <= (
        outputs.RUN_FILES.items()
    )


def test_a_report_written_before_the_marks_is_the_reports(tmp_path):
    old = tmp_path / "report.html"
    old.write_text(
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>Run report: seed0</title>\n<style>body {}</style>\n</head>\n<body>\n"
    )
    assert outputs.mark_of(old) == REPORT
    outputs.check_output(old, REPORT, "--out report.html")
    with pytest.raises(outputs.UserError, match=r"is a file imas-compare did not write; "):
        outputs.check_output(old, "imas-compare", "--out report.html")
    other = tmp_path / "notes.html"
    other.write_text("<!DOCTYPE html>\n<title>My notes</title>\n")
    assert outputs.mark_of(other) is None


def test_a_folder_that_cannot_be_searched_is_one_sentence(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root searches any folder: the file system's answer to a user
        stat = Path.stat

        def refuse(self, *args, **kwargs):
            if locked in self.parents:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return stat(self, *args, **kwargs)

        monkeypatch.setattr(Path, "stat", refuse)
    else:
        locked.chmod(0)
    try:
        with pytest.raises(outputs.UserError) as info:
            outputs.check_output(locked / "r.json", "imas-eval", f"--output {locked / 'r.json'}")
    finally:
        locked.chmod(0o700)
    assert str(info.value) == f"--output {locked / 'r.json'} cannot be checked (permission denied)"


def test_write_atomic_writes_through_a_symlink_and_keeps_the_mode(tmp_path):
    target = tmp_path / "data/r.json"
    target.parent.mkdir()
    target.write_text("previous")
    target.chmod(0o640)
    link = tmp_path / "r.json"
    link.symlink_to(target)
    outputs.write_text_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o7777 == 0o640
    no_temporary(tmp_path)
    # What a link names is what is checked: a link to a run's metrics is a run's file.
    run = fake_run(tmp_path / "run")
    (tmp_path / "mine.json").symlink_to(run / "metrics.jsonl")
    with pytest.raises(outputs.UserError, match=r"did not write \(a run's metrics\); choose another path$"):
        outputs.check_output(tmp_path / "mine.json", "imas-eval", "--output mine.json", force=True)


def test_write_atomic_keeps_the_previous_file_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    path.write_text("previous")
    full_disk(monkeypatch)
    with pytest.raises(outputs.UserError) as info:
        outputs.write_text_atomic(path, "new" * 1000)
    assert (
        str(info.value)
        == f"{path} could not be written (no space left on device); the previous r.json is kept"
    )
    assert path.read_text() == "previous"
    no_temporary(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # a stop mid-write: no temporary either, the error unchanged

        def stop(f):
            f.write(b"half")
            raise KeyboardInterrupt

        monkeypatch.undo()
        outputs.write_atomic(path, stop)
    assert path.read_text() == "previous"
    no_temporary(tmp_path)


# ------------------------------------------------------------------------------------------- imas-report


def test_report_refuses_a_runs_file_and_a_users_file_before_any_work(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path / "run")
    forbid(monkeypatch, report_command, "load_report")
    for flag in ([], ["--force"]):
        assert imas.report.main([str(run), "--out", str(run / "metrics.jsonl"), *flag]) == 2
        assert one_sentence(capsys) == (
            f"--out {run / 'metrics.jsonl'} is a file imas-report did not write (a run's metrics); "
            "choose another path"
        )
    user = tmp_path / "mine.html"
    user.write_text("<p>my notes</p>")
    assert imas.report.main([str(run), "--out", str(user)]) == 2
    assert one_sentence(capsys).endswith("did not write; choose another path, or add --force to replace it")
    assert user.read_text() == "<p>my notes</p>" and (run / "metrics.jsonl").read_text().startswith(
        '{"epoch"'
    )


def test_report_force_replaces_a_users_file_and_a_later_run_its_own(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path / "run")
    stub_report(monkeypatch)
    user = tmp_path / "mine.html"
    user.write_text("<p>my notes</p>")
    assert imas.report.main([str(run), "--out", str(user), "--force"]) == 0
    assert outputs.mark_of(user) == REPORT
    assert imas.report.main([str(run), "--out", str(user)]) == 0  # our own page: replaced without --force
    capsys.readouterr()


def test_report_full_disk_is_one_sentence_and_keeps_the_page(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path / "run")
    stub_report(monkeypatch)
    assert imas.report.main([str(run)]) == 0
    before = (run / "report.html").read_text()
    full_disk(monkeypatch)
    capsys.readouterr()
    assert imas.report.main([str(run)]) == 2
    assert one_sentence(capsys) == (
        f"{run / 'report.html'} could not be written (no space left on device); "
        "the previous report.html is kept"
    )
    assert (run / "report.html").read_text() == before
    no_temporary(run)


# ------------------------------------------------------------------------------------------- imas-compare


def test_compare_refuses_a_runs_file_before_reading_any_run(monkeypatch, capsys):
    metrics = LOGS / "imas/seed0/metrics.jsonl"
    before = metrics.read_bytes()
    forbid(monkeypatch, compare, "read_row")
    for flag in ("--out", "--csv"):
        assert compare.main([str(LOGS / "imas/seed0"), flag, str(metrics), "--force"]) == 2
        assert one_sentence(capsys) == (
            f"{flag} {metrics} is a file imas-compare did not write (a run's metrics); choose another path"
        )
    assert metrics.read_bytes() == before


def test_compare_replaces_its_own_tables_and_a_users_file_only_with_force(tmp_path, capsys):
    runs = [str(LOGS / "suponly/seed0"), str(LOGS / "imas/seed0")]
    md, table = tmp_path / "t.md", tmp_path / "t.csv"
    user = tmp_path / "mine.csv"
    user.write_text("my,own\n")
    assert compare.main([*runs, "--out", str(md), "--csv", str(table)]) == 0
    capsys.readouterr()
    assert compare.main([*runs, "--out", str(md), "--csv", str(table)]) == 0  # its own: replaced silently
    printed = capsys.readouterr().out
    assert md.read_text() == f"{outputs.text_mark('imas-compare')}\n{printed}"
    assert table.read_text().startswith("run,method,config,model,best mIoU,")
    assert compare.main([*runs, "--csv", str(user)]) == 2
    assert one_sentence(capsys) == (
        f"--csv {user} is a file imas-compare did not write; choose another path, "
        "or add --force to replace it"
    )
    assert user.read_text() == "my,own\n"
    assert compare.main([*runs, "--csv", str(user), "--force"]) == 0
    assert user.read_text().startswith("run,method")


def test_compare_refuses_one_file_under_two_names(tmp_path, monkeypatch, capsys):
    forbid(monkeypatch, compare, "read_row")
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias.csv").symlink_to(tmp_path / "t.md")
    for out, table in (
        (tmp_path / "t.md", tmp_path / "sub/../t.md"),
        (tmp_path / "t.md", tmp_path / "alias.csv"),
    ):
        assert compare.main([str(LOGS / "imas/seed0"), "--out", str(out), "--csv", str(table)]) == 2
        assert one_sentence(capsys) == f"--out and --csv name the same file {out}; give each its own"
    assert not (tmp_path / "t.md").exists()


def test_compare_full_disk_keeps_the_previous_csv(tmp_path, monkeypatch, capsys):
    runs = [str(LOGS / "imas/seed0")]
    table = tmp_path / "t.csv"
    assert compare.main([*runs, "--csv", str(table)]) == 0
    before = table.read_text()
    full_disk(monkeypatch)
    capsys.readouterr()
    assert compare.main([*runs, "--csv", str(table)]) == 2
    assert (
        one_sentence(capsys)
        == f"{table} could not be written (no space left on device); the previous t.csv is kept"
    )
    assert table.read_text() == before
    no_temporary(tmp_path)


# ------------------------------------------------------------------------------------------- imas-eval


def test_eval_refuses_a_users_file_unless_forced_and_replaces_its_own(tmp_path, checkpoint, capsys):
    out = tmp_path / "e.json"
    out.write_text('{"note": "mine"}')
    assert eval_cli.main(eval_args(checkpoint, out)) == 2
    assert one_sentence(capsys) == (
        f"--output {out} is a file imas-eval did not write; choose another path, or add --force to replace it"
    )
    assert out.read_text() == '{"note": "mine"}'
    assert eval_cli.main(eval_args(checkpoint, out, "--force")) == 0
    assert json.loads(out.read_text())["written_by"] == "imas-eval"
    assert eval_cli.main(eval_args(checkpoint, out)) == 0  # its own result: replaced silently
    assert eval_cli.main(eval_args(checkpoint, checkpoint, "--force")) == 2
    assert one_sentence(capsys).endswith("is the checkpoint this command reads; choose another path")


def test_eval_full_disk_keeps_the_previous_result(tmp_path, checkpoint, monkeypatch, capsys):
    out = tmp_path / "e.json"
    assert eval_cli.main(eval_args(checkpoint, out)) == 0
    before = out.read_text()
    full_disk(monkeypatch)
    capsys.readouterr()
    assert eval_cli.main(eval_args(checkpoint, out)) == 2
    assert (
        one_sentence(capsys)
        == f"{out} could not be written (no space left on device); the previous e.json is kept"
    )
    assert out.read_text() == before
    no_temporary(tmp_path)


# ------------------------------------------------------------------------------------------- imas-predict


def test_predict_refuses_users_files_in_its_folder_before_any_work(tmp_path, checkpoint, monkeypatch, capsys):
    photo(tmp_path / "a.jpg")
    out = tmp_path / "out"
    out.mkdir()
    photo(out / "a.png", seed=1)  # the user's own files where a.jpg's prediction would go
    photo(out / "a_overlay.jpg", seed=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as m:
        forbid(m, predict_cli, "load_checkpoint")
        assert predict(checkpoint, tmp_path / "a.jpg", out) == 2
        assert one_sentence(capsys) == (
            f"--output {out} holds a.png, which is a file imas-predict did not write; move it or choose "
            "another --output folder, or add --force to replace it"
        )
        (out / "a.png").unlink()
        assert predict(checkpoint, tmp_path / "a.jpg", out) == 2
        assert "holds a_overlay.jpg, which is a file imas-predict did not write" in one_sentence(capsys)
        photo(out / "a.png", seed=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert predict(checkpoint, tmp_path / "a.jpg", out, "--force") == 0
    assert outputs.mark_of(out / "a.png") == outputs.mark_of(out / "a_overlay.jpg") == "imas-predict"
    assert predict(checkpoint, tmp_path / "a.jpg", out) == 0  # its own files: replaced without --force
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.jpg", "legend.png"]


def test_predict_full_disk_keeps_the_previous_prediction(tmp_path, checkpoint, monkeypatch, capsys):
    photo(tmp_path / "a.jpg")
    out = tmp_path / "out"
    assert predict(checkpoint, tmp_path / "a.jpg", out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full_disk(monkeypatch)
    photo(tmp_path / "a.jpg", seed=5)  # another picture: the legend is kept, the prediction rewritten
    capsys.readouterr()
    assert predict(checkpoint, tmp_path / "a.jpg", out) == 2
    assert one_sentence(capsys) == (
        f"{out / 'a.png'} could not be written (no space left on device); the previous a.png is kept"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    no_temporary(out)


def test_predict_legend_full_disk_leaves_no_legend(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    with pytest.raises(
        outputs.UserError, match=r"legend\.png could not be written \(no space left on device\); nothing"
    ):
        predict_cli.write_legend(
            tmp_path, ["a", "b"], np.array([[0, 0, 0], [9, 9, 9]], np.uint8), frozenset()
        )
    assert list(tmp_path.iterdir()) == []


def test_predict_lists_broken_symlinks_as_skipped(tmp_path, checkpoint, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.png")
    (photos / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (photos / "loop1.png").symlink_to(photos / "loop2.png")
    (photos / "loop2.png").symlink_to(photos / "loop1.png")
    assert predict(checkpoint, photos, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "wrote 1 predictions" in printed and "skipped 3 images" in printed
    assert f"  skipped: {photos / 'gone.jpg'} is a dangling symlink (to {tmp_path / 'missing.jpg'}" in printed
    assert f"  skipped: {photos / 'loop1.png'} is a symlink loop" in printed
    assert f"  skipped: {photos / 'loop2.png'} is a symlink loop" in printed
    (photos / "a.png").unlink()  # nothing left but broken links: one sentence naming one
    assert predict(checkpoint, photos, tmp_path / "out") == 2
    assert "gone.jpg is a dangling symlink" in one_sentence(capsys)


# --------------------------------------------------------------------------------------- convert_pretrained


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tv") / "tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_convert_pretrained_refuses_what_it_did_not_write_before_reading(
    tmp_path, resnet18_file, monkeypatch, capsys
):
    run = fake_run(tmp_path / "run")
    (run / "latest.pth").write_bytes(b"a checkpoint")
    user = tmp_path / "mine.pth"
    user.write_bytes(b"mine")
    with monkeypatch.context() as m:
        forbid(m, convert_pretrained, "read_state_dict")
        assert convert_pretrained.main([str(resnet18_file), "--out", str(resnet18_file)]) == 2
        assert (
            one_sentence(capsys)
            == f"--out {resnet18_file} is the checkpoint this command reads; choose another path"
        )
        assert convert_pretrained.main([str(resnet18_file), "--out", str(run / "latest.pth")]) == 2
        assert one_sentence(capsys).endswith("did not write (a run's checkpoint); choose another path")
        assert convert_pretrained.main([str(resnet18_file), "--out", str(user)]) == 2
        assert one_sentence(capsys) == (
            f"--out {user} is a file tools/convert_pretrained.py did not write; "
            "choose another path or delete it first"
        )
    assert user.read_bytes() == b"mine" and (run / "latest.pth").read_bytes() == b"a checkpoint"
    out = tmp_path / "r18.pth"
    assert convert_pretrained.main([str(resnet18_file), "--out", str(out)]) == 0
    assert convert_pretrained.main([str(resnet18_file), "--out", str(out)]) == 0  # its own: replaced
    assert torch.load(out, weights_only=True)["written_by"] == "tools/convert_pretrained.py"


def test_convert_pretrained_unwritable_out_is_one_sentence_before_reading(
    tmp_path, resnet18_file, monkeypatch, capsys
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    forbid(monkeypatch, convert_pretrained, "read_state_dict")
    assert convert_pretrained.main([str(resnet18_file), "--out", str(blocker / "r18.pth")]) == 2
    assert one_sentence(capsys).startswith(f"--out {blocker / 'r18.pth'} cannot be written")


def read_only(monkeypatch, folder: Path) -> None:
    """`folder` read-only: as a mode where the tests are not root, as the file system's answer where they are
    (root writes into a folder of mode 0o500)."""
    folder.mkdir(mode=0o500)
    if os.geteuid() != 0:
        return

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)


def test_convert_pretrained_read_only_folder_is_one_sentence(tmp_path, resnet18_file, monkeypatch, capsys):
    folder = tmp_path / "ro"
    read_only(monkeypatch, folder)
    assert convert_pretrained.main([str(resnet18_file), "--out", str(folder / "r18.pth")]) == 2
    assert one_sentence(capsys).startswith(f"--out {folder / 'r18.pth'} cannot be written")


def test_convert_pretrained_full_disk_leaves_no_file(tmp_path, resnet18_file, monkeypatch, capsys):
    out = tmp_path / "r18.pth"
    full_disk(monkeypatch)
    assert convert_pretrained.main([str(resnet18_file), "--out", str(out)]) == 2
    assert (
        one_sentence(capsys) == f"{out} could not be written (no space left on device); nothing was written"
    )
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- pseudo-labels


def test_pseudo_labels_output_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "p.json"
    pseudo_labels.write_output(str(out), {"coverage": 0.5})
    assert json.loads(out.read_text()) == {"coverage": 0.5, "written_by": "imas-pseudo-labels"}
    full_disk(monkeypatch)
    assert run_command(lambda: pseudo_labels.write_output(str(out), {"coverage": 0.9})) == 2
    assert (
        one_sentence(capsys)
        == f"{out} could not be written (no space left on device); the previous p.json is kept"
    )
    assert json.loads(out.read_text())["coverage"] == 0.5
    no_temporary(tmp_path)


# ------------------------------------------------------------------------------------------- make-splits


def fake_voc(root: Path) -> Path:
    sets = root / "ImageSets/Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("".join(f"t{i}\n" for i in range(8)))
    (sets / "val.txt").write_text("v0\nv1\n")
    (root / "SegmentationClassAug").mkdir()
    for i in range(12):
        (root / "SegmentationClassAug" / f"t{i}.png").write_bytes(b"")
    return root


def splits(voc: Path, out: Path) -> int:
    sizes = ["--classic", "2", "--blended", "3"]
    return imas_data(["splits", "pascal", "--voc", str(voc), "--out", str(out), *sizes])


def test_splits_unwritable_out_is_one_sentence_before_any_work(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    forbid(monkeypatch, split_lists, "make_pascal")
    for out in (blocker, blocker / "sub"):
        assert splits(tmp_path / "voc", out) == 2
        assert one_sentence(capsys).startswith(f"--out {out} ")
    assert blocker.read_text() == "not a folder"


def test_splits_read_only_out_is_one_sentence(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro"
    read_only(monkeypatch, out)
    forbid(monkeypatch, split_lists, "make_pascal")
    assert splits(tmp_path / "voc", out) == 2
    assert one_sentence(capsys).startswith(f"--out {out} cannot be created or written")


def test_splits_full_disk_keeps_the_previous_lists(tmp_path, monkeypatch, capsys):
    voc, out = fake_voc(tmp_path / "voc"), tmp_path / "splits"
    assert splits(voc, out) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    full_disk(monkeypatch)
    capsys.readouterr()
    assert splits(voc, out) == 2
    assert one_sentence(capsys) == (
        f"{out / 'val.txt'} could not be written (no space left on device); the previous val.txt is kept"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    no_temporary(out)
