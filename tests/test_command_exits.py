"""imas-eval and imas-predict end through imas.cli.run_command: Ctrl-C is "interrupted" on stderr, exit 130,
never a traceback; eval's process group is closed however it ends; predict without a readable image prints
its summary, then one sentence and exit 2."""

from __future__ import annotations

import imas.evaluate as eval_cli
import imas.predict as predict_cli


def interrupt(args):
    raise KeyboardInterrupt


def test_eval_interrupted_is_exit_130_without_traceback(monkeypatch, capsys):
    closed = []
    monkeypatch.setattr(eval_cli, "run", interrupt)
    monkeypatch.setattr(eval_cli, "cleanup", lambda: closed.append(True))
    assert eval_cli.main(["--config", "c.yaml", "--checkpoint", "best.pth"]) == 130
    err = capsys.readouterr().err
    assert err == "interrupted\n"
    assert closed == [True]


def test_predict_interrupted_is_exit_130_without_traceback(monkeypatch, capsys):
    monkeypatch.setattr(predict_cli, "run", interrupt)
    assert predict_cli.main(["--checkpoint", "best.pth", "--input", "x", "--output", "out"]) == 130
    out, err = capsys.readouterr()
    assert err == "interrupted\n"
    assert "Traceback" not in out + err


def test_predict_without_a_readable_image_is_exit_2_after_its_summary(monkeypatch, capsys):
    skipped = ["photo.jpg cannot be read (truncated)"]
    monkeypatch.setattr(predict_cli, "run", lambda args: predict_cli.Summary(0, skipped, 0, None))
    assert predict_cli.main(["--checkpoint", "best.pth", "--input", "x", "--output", "out"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("wrote 0 predictions to out in ") and "skipped 1 images" in out
    assert "  skipped: photo.jpg cannot be read (truncated)" in out
    assert err == "error: no image could be read, nothing was written\n"
