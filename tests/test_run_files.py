"""The appended run files (metrics.jsonl, train_scalars.jsonl, the per-image histories), train.log and the
TensorBoard events when something goes wrong: a last line cut by a kill is dropped, a damaged line is one
sentence naming the file and line, a full disk is one sentence naming the file with the checkpoints kept,
and the readers do not present an evaluation no checkpoint holds, or a checkpoint of another run, as the
run's (docs/reliability.md)."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import small_config
from run_fixtures import tiny_config
from tensorboard.summary.writer.record_writer import RecordWriter

import imas.report
from imas import compare
from imas import train as train_cli
from imas.checkpoint import TrainState, save_checkpoint
from imas.errors import RunDirError
from imas.logging import PerImageWriter, RunLogHandler, RunWriter, setup_logging
from imas.report import page as report_page
from imas.report import reading
from imas.rundir import (
    UNSAVED,
    epoch_means,
    read_evaluations,
    read_per_image,
    read_run,
    read_train_scalars,
    truncate_metrics,
    truncate_per_image,
    truncate_train_scalars,
)

HEADER = "image_id,epoch,iteration,hardness\n"
ROWS = "u1,1,0,0.50000\nu2,1,1,0.25000\n"
NO_SPACE = "no space left on device"


def evaluation(epoch: int, miou: float) -> dict:
    return {"epoch": epoch, "iteration": 4 * epoch, "model": "teacher", "miou": miou, "iou": {"a": miou}}


def window(iteration: int) -> dict:
    return {"epoch": 1, "iteration": iteration, "lr": 0.01, "scalars": {"loss": 1.0 / iteration}}


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def hand_run(run_dir: Path, method: str = "imas", epochs: tuple[float, ...] = (0.3, 0.4)) -> Path:
    """A run directory written by hand: config.yaml, metrics.jsonl (one mIoU per epoch), train_scalars.jsonl
    and hardness.csv."""
    run_dir.mkdir(parents=True)
    config = {"data": {"unlabeled_split": "splits/unlabeled.txt"}, "train": {"method": method, "epochs": 3}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text(jsonl([evaluation(e + 1, m) for e, m in enumerate(epochs)]))
    (run_dir / "train_scalars.jsonl").write_text(jsonl([window(2), window(4)]))
    (run_dir / "hardness.csv").write_text(HEADER + ROWS)
    return run_dir


def checkpoint(path: Path, epoch: int, method: str = "imas", **extra) -> None:
    """A checkpoint holding only what the readers look at (its epoch and its config's method)."""
    save_checkpoint(
        {"epoch": epoch, "best_epoch": epoch, "config": {"train": {"method": method}}} | extra, path
    )


@pytest.fixture
def train_log(tmp_path):
    """train.log of tmp_path/run through imas.logging.setup_logging, as training sets it up."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    setup_logging(run_dir, is_main=True)
    yield run_dir / "train.log"
    setup_logging(None, is_main=True)  # closes train.log


# ------------------------------------------------------------------------- a last line cut by a kill


@pytest.mark.parametrize(
    "cut",
    ["u3", "u3,1", "u3,1,2", "u3,1,2,0.", "u3,1,2,0.12500", "\u00e9t\u00e9".encode()[:3].decode("latin-1")],
)
def test_a_cut_last_row_of_a_per_image_history_is_dropped_and_logged_on_resume(tmp_path, train_log, cut):
    """What a kill or a full disk leaves (fewer fields, no newline, half a UTF-8 character) is dropped by
    the cut-back on resume, which says so in train.log; the readers skip it."""
    run_dir = train_log.parent
    for name in ("hardness", "margin"):  # the iMAS history and any other method's
        path = run_dir / f"{name}.csv"
        path.write_bytes((HEADER.replace("hardness", name) + ROWS).encode() + cut.encode("latin-1"))
        assert read_per_image(path).value.tolist() == [0.5, 0.25]
    train_cli.cut_back(run_dir, ["hardness", "margin"], TrainState(epoch=1, iteration=2))
    assert (run_dir / "hardness.csv").read_text() == HEADER + ROWS
    assert (run_dir / "margin.csv").read_text() == HEADER.replace("hardness", "margin") + ROWS
    log = train_log.read_text()
    assert "dropped 1 hardness.csv rows" in log and "dropped 1 margin.csv rows" in log
    assert not list(run_dir.glob("*.tmp"))


def test_the_cut_back_is_atomic_and_a_failed_rewrite_leaves_the_file(tmp_path, monkeypatch):
    path = tmp_path / "hardness.csv"
    path.write_text(HEADER + ROWS + "u3,1,2,0.1")
    before = path.read_bytes()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(RunDirError) as info:
        truncate_per_image(tmp_path, "hardness", 2)
    assert f"cannot write {path} ({NO_SPACE})" in str(info.value)
    assert path.read_bytes() == before and not (tmp_path / "hardness.csv.tmp").exists()
    monkeypatch.undo()
    inode = path.stat().st_ino
    assert truncate_per_image(tmp_path, "hardness", 2) == 1
    assert path.read_text() == HEADER + ROWS and path.stat().st_ino != inode  # replaced by a rename
    inode = path.stat().st_ino
    assert truncate_per_image(tmp_path, "hardness", 2) == 0 and path.stat().st_ino == inode  # no rewrite


def test_a_history_counting_epochs_from_0_reads_from_1_and_is_renumbered_on_resume(tmp_path):
    """Files written before per-image histories counted epochs from 1 (as the console does): the reader
    shifts them, and the cut-back on resume renumbers them once, so rows appended after it agree."""
    path = tmp_path / "hardness.csv"
    path.write_text(HEADER + "u1,0,0,0.50000\nu2,0,1,0.25000\nu3,1,2,0.12500\n")
    assert read_per_image(path).epoch.tolist() == [1, 1, 2]
    assert truncate_per_image(tmp_path, "hardness", 3) == 0
    assert path.read_text() == HEADER + "u1,1,0,0.50000\nu2,1,1,0.25000\nu3,2,2,0.12500\n"
    assert read_per_image(path).epoch.tolist() == [1, 1, 2]
    assert truncate_per_image(tmp_path, "hardness", 2) == 1  # counted from 1 now: not shifted again
    assert path.read_text() == HEADER + ROWS


def test_a_cut_last_line_is_not_damage(tmp_path):
    """Each appended file ending in a line a kill cut short reads without it; a whole last record whose
    newline is missing is kept (and gets its newline back on resume)."""
    run_dir = hand_run(tmp_path / "run")
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "iteration": 12, "mi')
    with (run_dir / "train_scalars.jsonl").open("a") as f:
        f.write(json.dumps(window(6)))  # whole, without its newline
    with (run_dir / "hardness.csv").open("a") as f:
        f.write("u3,1,")
    run = read_run(run_dir)
    assert [r["epoch"] for r in run.evaluations] == [1, 2]
    assert [step for step, _ in run.scalars["train/loss"]] == [2, 4, 6]
    assert len(run.per_image["hardness"].value) == 2
    assert truncate_metrics(run_dir / "metrics.jsonl", 2) == 1
    assert truncate_train_scalars(run_dir, 6) == 0
    assert (run_dir / "train_scalars.jsonl").read_text().endswith("}\n")


# ------------------------------------------------------------------------------------- a damaged line


DAMAGE = {
    "not_utf8": (b"\xff\xfe not text\n", "is not UTF-8 text"),
    "not_json": (b"{oops\n", "is not JSON"),
    "not_a_record": (b'{"epoch": "first"}\n', "is not "),
}


def damage(path: Path, kind: str) -> str:
    """Put a damaged line second in `path` (after its header or first record); return its problem."""
    lines = path.read_bytes().splitlines(keepends=True)
    bad, problem = DAMAGE[kind]
    if path.suffix == ".csv" and kind != "not_utf8":
        bad, problem = (b"u9,zero,1,0.5\n" if kind == "not_a_record" else bad), "is not a per-image row"
    path.write_bytes(lines[0] + bad + b"".join(lines[1:]))
    return f"{path} line 2 {problem}"


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["metrics.jsonl", "train_scalars.jsonl", "hardness.csv"])
def test_a_damaged_line_is_one_sentence_naming_the_file_and_line(tmp_path, capsys, name, kind):
    """In the readers (imas-report, imas-compare) and in the cut-back on resume: never a traceback, never
    a silent drop."""
    run_dir = hand_run(tmp_path / "run")
    expected = damage(run_dir / name, kind)
    with pytest.raises(RunDirError, match="repair or delete that line") as info:
        read_run(run_dir)
    assert expected in str(info.value)
    with pytest.raises(RunDirError) as info:
        train_cli.cut_back(run_dir, ["hardness"], TrainState(epoch=2, iteration=8))
    assert expected in str(info.value)
    commands = [(imas.report.main, ["--out", str(tmp_path / "out.html")])]
    if name != "hardness.csv":  # imas-compare reads no per-image history
        commands.append((compare.main, []))
    for main, extra in commands:
        assert main([str(run_dir), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err


def test_a_damaged_line_past_the_checkpoint_goes_with_the_rerun_lines(tmp_path):
    """Lines an interrupted attempt wrote after the checkpoint are dropped whatever they hold."""
    run_dir = hand_run(tmp_path / "run")
    path = run_dir / "metrics.jsonl"
    path.write_bytes(path.read_bytes() + b"\xff\n" + json.dumps(evaluation(3, 0.5)).encode() + b"\n")
    assert truncate_metrics(path, 2) == 2 and [r["epoch"] for r in read_evaluations(run_dir)] == [1, 2]


def test_the_tools_readers_are_strict_but_the_quick_start_summary_is_not(tmp_path):
    path = tmp_path / "train_scalars.jsonl"
    path.write_text(jsonl([window(2)]) + "not json\n" + jsonl([window(4)]))
    with pytest.raises(RunDirError, match="line 2 is not JSON"):
        read_train_scalars(path)
    assert list(epoch_means(path)) == [1]  # tools/quick_start.py's closing lines, made from its own runs


# -------------------------------------------------------------------------------------- a full disk


class FullDisk:
    """A file whose write puts half the text on disk, then fails as a full disk does."""

    def __init__(self, real) -> None:
        self.real = real

    def write(self, text: str) -> int:
        self.real.write(text[: len(text) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.real.close()


def fill_disk_on(monkeypatch, name: str, after: int = 0) -> None:
    """Make the appends to the run file `name` fail as on a full disk, after `after` that succeed."""
    real_open = pathlib.Path.open
    appends = []

    def open_(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        if self.name == name and "a" in mode:
            appends.append(self)
            return FullDisk(handle) if len(appends) > after else handle
        return handle

    monkeypatch.setattr(pathlib.Path, "open", open_)


@pytest.mark.parametrize("name", ["metrics.jsonl", "train_scalars.jsonl", "hardness.csv"])
def test_a_full_disk_on_an_appended_file_is_one_sentence_in_train_log(tmp_path, train_log, monkeypatch, name):
    run_dir = train_log.parent
    checkpoint(run_dir / "latest.pth", 1)
    saved = (run_dir / "latest.pth").read_bytes()
    writer, history = RunWriter(run_dir, enabled=False), PerImageWriter(run_dir, ["hardness"], enabled=True)
    writer.enabled = True  # the JSON lines without TensorBoard
    (run_dir / "hardness.csv").write_text(HEADER)
    history.add(0, 0, torch.tensor([0, 1]), {"hardness": torch.tensor([0.5, 0.25])})
    fill_disk_on(monkeypatch, name)
    with pytest.raises(RunDirError) as info:
        writer.evaluation(evaluation(1, 0.3))
        writer.train_window(window(2))
        history.flush(["u1", "u2"])
    message = str(info.value)
    assert message.startswith(f"cannot write {run_dir / name} ({NO_SPACE}); the checkpoints are untouched")
    assert f"ERROR error: {message}" in train_log.read_text()
    assert (run_dir / "latest.pth").read_bytes() == saved
    monkeypatch.undo()
    (run_dir / "config.yaml").write_text("train: {method: imas}\n")
    read_run(run_dir)  # the half line the full disk left is a cut last line, not damage


def test_a_full_disk_on_train_log_is_one_sentence_not_a_traceback(tmp_path, capsys, train_log):
    """logging.FileHandler would print a traceback on stderr for this record and every later one."""
    log = setup_logging(train_log.parent, is_main=True)  # its console: this test's captured stdout
    handler = next(h for h in log.handlers if isinstance(h, RunLogHandler))

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        flush = close = lambda self: None

    handler.stream = Full()
    with pytest.raises(RunDirError) as info:
        log.info("epoch 1/2 it 2/8")
    assert str(info.value).startswith(f"cannot write {train_log} ({NO_SPACE})")
    log.info("later lines go to the console only")  # no second error, no traceback
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "later lines" in captured.out


def test_a_full_disk_on_the_tensorboard_events_is_one_sentence(tmp_path, monkeypatch, capsys):
    """SummaryWriter writes in a background thread, which would print a traceback and die: the failure is
    said at the next call or at the flush at the end of each epoch."""
    writer = RunWriter(tmp_path, enabled=True)

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full_disk)
    writer.scalars({"train/loss": 1.0}, 1)
    with pytest.raises(RunDirError) as info:
        writer.flush()
    events = next(tmp_path.glob("events.out.tfevents.*"))
    assert str(info.value).startswith(f"cannot write {events} ({NO_SPACE})")
    with pytest.raises(RunDirError):
        writer.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # a thread traceback
def test_a_full_disk_on_the_first_tensorboard_record_is_one_sentence(tmp_path, monkeypatch, capsys):
    """The disk is full when the event file's first record is written (by SummaryWriter itself or by its
    thread, before RunWriter guards it): one sentence, no thread traceback."""

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full_disk)
    with pytest.raises(RunDirError, match=rf"^cannot write .*events\.out\.tfevents\S* \({NO_SPACE}\)"):
        writer = RunWriter(tmp_path, enabled=True)
        time.sleep(0.2)  # let the thread meet the full disk
        writer.scalars({"train/loss": 1.0}, 1)
        writer.flush()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err


@pytest.mark.slow
def test_a_full_disk_on_metrics_jsonl_during_training_keeps_the_checkpoint_and_resumes(
    tmp_path, toy, capsys, monkeypatch
):
    config = tiny_config(tmp_path, toy, "supervised")  # 2 epochs of a few-channel model
    run_dir = tmp_path / "run"
    argv = ["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]
    fill_disk_on(monkeypatch, "metrics.jsonl", after=1)  # epoch 2's evaluation finds the disk full
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot write {run_dir / 'metrics.jsonl'} ({NO_SPACE}); the checkpoints are untouched: "
        "free space or fix the folder, then start the same command again (it resumes from the last "
        "checkpoint, if there is one)\n"
    )
    assert f"ERROR {err.strip()}" in (run_dir / "train.log").read_text()
    assert torch.load(run_dir / "latest.pth", weights_only=True)["epoch"] == 1
    monkeypatch.undo()
    assert train_cli.main(argv) == 0
    assert [r["epoch"] for r in read_evaluations(run_dir)] == [1, 2]
    assert "dropped 1 metrics.jsonl lines" in (run_dir / "train.log").read_text()


# --------------------------------------------------------------- evaluations and checkpoints that disagree


def test_an_evaluation_no_checkpoint_holds_is_not_presented_as_best_pth(tmp_path):
    """A stop between an evaluation and its checkpoint: metrics.jsonl has epoch 3, latest.pth epoch 2."""
    run_dir = hand_run(tmp_path / "run", epochs=(0.3, 0.4, 0.5))
    checkpoint(run_dir / "latest.pth", 2)
    run = read_run(run_dir)
    assert run.latest_epoch == 2 and run.unsaved(run.evaluations[2]) and not run.unsaved(run.evaluations[1])
    assert f"| 50.00 | 3 ({UNSAVED}) | 50.00 |" in compare.markdown(*_table(run_dir))
    summary = report_page.summary_section(reading.load_report(run_dir, []))
    assert f"50.00 (epoch 3; {UNSAVED})" in summary
    checkpoint(run_dir / "latest.pth", 3)
    assert "| 50.00 | 3 | 50.00 |" in compare.markdown(*_table(run_dir))
    assert UNSAVED not in report_page.summary_section(reading.load_report(run_dir, []))


def _table(run_dir: Path) -> tuple[list, list[str]]:
    row = compare.read_row(run_dir)
    return [row], list(row.iou)


def test_a_checkpoint_of_another_method_is_named(tmp_path, capsys):
    run_dir = hand_run(tmp_path / "run")
    checkpoint(run_dir / "latest.pth", 2, method="cps")
    expected = (
        f"{run_dir / 'latest.pth'} holds a cps checkpoint but {run_dir / 'config.yaml'} says imas; a run "
        "directory holds one run's files: move that checkpoint to its own run's folder"
    )
    with pytest.raises(RunDirError) as info:
        read_run(run_dir, per_image=False)
    assert str(info.value) == expected
    for argv in ([str(run_dir)], [str(run_dir), "--out", str(tmp_path / "r.html")]):
        main = compare.main if len(argv) == 1 else imas.report.main
        assert main(argv) == 2
        assert capsys.readouterr().err == f"error: {expected}\n"
    # A resume that changed the method (--resume-anyway) before config.yaml followed its checkpoint.
    changes = [{"epoch": 1, "iteration": 4, "changes": [["train.method", "imas", "cps"]]}]
    checkpoint(run_dir / "latest.pth", 2, method="cps", resumed_with_changes=changes)
    assert read_run(run_dir, per_image=False).latest_epoch == 2


@pytest.mark.slow
def test_resume_names_a_checkpoint_of_another_method(tmp_path, toy, capsys):
    """A SupOnly checkpoint copied into an iMAS run's folder: named as such, with or without
    --resume-anyway (not as a change of settings)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    supervised = small_config(tmp_path / "a", toy, train={"epochs": 1})
    imas_config = small_config(tmp_path / "b", toy, train={"epochs": 1, "method": "imas"})
    other, run_dir = tmp_path / "other", tmp_path / "run"
    assert train_cli.main(["--config", str(supervised), "--run-dir", str(other), "--device", "cpu"]) == 0
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"method": "imas"}}))
    (run_dir / "latest.pth").write_bytes((other / "latest.pth").read_bytes())
    capsys.readouterr()
    for anyway in ([], ["--resume-anyway"]):
        argv = ["--config", str(imas_config), "--run-dir", str(run_dir), "--device", "cpu", *anyway]
        assert train_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: {run_dir / 'latest.pth'} holds a supervised checkpoint but {run_dir / 'config.yaml'} "
            "says imas; a run directory holds one run's files: move that checkpoint to its own run's folder\n"
        )
