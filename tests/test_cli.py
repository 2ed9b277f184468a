"""imas.cli.run_command, the wrapper of every command's main: a user error is one line and exit 2, Ctrl-C
130, SIGTERM (where asked for) 143, and what the body registered with on_exit is removed however it ends
(with failed=True, such as the new folders of discard_new_folders, only where it fails)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from imas.cli import discard_new_folders, on_exit, run_command
from imas.errors import ConfigError, UserError


def test_success_returns_the_body_status(capsys) -> None:
    assert run_command(lambda: None) == 0
    assert run_command(lambda: 1) == 1
    assert capsys.readouterr().err == ""


def test_a_user_error_is_one_line_on_stderr_and_exit_2(capsys) -> None:
    def body() -> None:
        print("working")
        raise ConfigError("unknown key 'optim.lrr' in optim")

    assert run_command(body) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: unknown key 'optim.lrr' in optim\n"
    assert captured.out == "working\n"


def test_a_worker_traceback_is_cut_to_its_message(capsys) -> None:
    """DataLoader workers re-raise with the worker's traceback in the message: only the sentence shows."""
    text = 'Caught DataError in worker 0.\nTraceback (most recent call last):\n  File "x.py"\n'
    text += "imas.errors.UserError: image a.jpg cannot be read"

    def body() -> None:
        raise UserError(text)

    assert run_command(body) == 2
    assert capsys.readouterr().err == "error: image a.jpg cannot be read\n"


def test_quiet_error_leaves_the_message_to_another_process(capsys) -> None:
    def body() -> None:
        raise UserError("said elsewhere")

    assert run_command(body, quiet_error=lambda exc: True) == 2
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_130_with_the_hint(capsys) -> None:
    def body() -> None:
        raise KeyboardInterrupt

    assert run_command(body) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert run_command(body, interrupted="run it again to resume") == 130
    assert capsys.readouterr().err == "interrupted; run it again to resume\n"


def test_sigterm_with_terminate_is_143_and_the_handler_is_put_back(capsys) -> None:
    before = signal.getsignal(signal.SIGTERM)

    def body() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
        raise AssertionError("SIGTERM did not stop the body")

    assert run_command(body, terminate=True, interrupted="latest.pth is kept") == 143
    assert capsys.readouterr().err == "terminated; latest.pth is kept\n"
    assert signal.getsignal(signal.SIGTERM) == before


def test_terminate_outside_the_main_thread_leaves_sigterm_alone() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body() -> int:
        seen.append(signal.getsignal(signal.SIGTERM))
        return 3

    worker = threading.Thread(target=lambda: seen.append(run_command(body, terminate=True)))
    worker.start()
    worker.join()
    assert seen == [before, 3]


def make_paths(tmp_path: Path) -> tuple[Path, Path]:
    temp_file = tmp_path / "out.pth.tmp"
    temp_file.write_text("half")
    temp_dir = tmp_path / "work"
    (temp_dir / "sub").mkdir(parents=True)
    (temp_dir / "sub" / "x").write_text("x")
    return temp_file, temp_dir


@pytest.mark.parametrize("ending", ["success", "user error", "ctrl-c", "bug"])
def test_on_exit_paths_are_removed_however_the_command_ends(ending, tmp_path, capsys) -> None:
    temp_file, temp_dir = make_paths(tmp_path)
    kept = tmp_path / "result.json"
    order = []

    def body() -> int:
        on_exit(temp_file)
        on_exit(str(temp_dir))
        on_exit(tmp_path / "never-made")  # a temporary not written yet: nothing to do
        on_exit(lambda: order.append("first registered"))
        on_exit(lambda: order.append("last registered"))
        kept.write_text("{}")
        if ending == "user error":
            raise UserError("bad input")
        if ending == "ctrl-c":
            raise KeyboardInterrupt
        if ending == "bug":
            raise RuntimeError("a bug")
        return 0

    if ending == "bug":  # not a user error: the traceback stays, the clean-up is done all the same
        with pytest.raises(RuntimeError):
            run_command(body)
    else:
        assert run_command(body) == {"success": 0, "user error": 2, "ctrl-c": 130}[ending]
    assert not temp_file.exists() and not temp_dir.exists() and kept.is_file()
    assert order == ["last registered", "first registered"]


def test_every_cleanup_runs_when_one_fails(tmp_path) -> None:
    temp_file, _ = make_paths(tmp_path)

    def failing() -> None:
        raise OSError("cleanup failed")

    def body() -> None:
        on_exit(temp_file)
        on_exit(failing)

    with pytest.raises(OSError, match="cleanup failed"):
        run_command(body)
    assert not temp_file.exists()


def test_nested_commands_clean_up_their_own(tmp_path) -> None:
    outer, _ = make_paths(tmp_path)
    inner = tmp_path / "inner.tmp"
    inner.write_text("x")
    states = []

    def inner_body() -> None:
        on_exit(inner)

    def outer_body() -> None:
        on_exit(outer)
        run_command(inner_body)
        states.append((outer.exists(), inner.exists()))

    assert run_command(outer_body) == 0
    assert states == [(True, False)] and not outer.exists()


@pytest.mark.parametrize("ending", ["success", "user error", "ctrl-c"])
def test_on_exit_failed_runs_only_where_the_body_fails(ending) -> None:
    ran = []

    def body() -> int:
        on_exit(lambda: ran.append("failed only"), failed=True)
        on_exit(lambda: ran.append("always"))
        if ending == "user error":
            raise UserError("bad input")
        if ending == "ctrl-c":
            raise KeyboardInterrupt
        return 1  # a status, not a failure: e.g. imas-data check finding problems

    run_command(body)
    assert ran == (["always"] if ending == "success" else ["always", "failed only"])


@pytest.mark.parametrize("fails", [True, False])
def test_discard_new_folders_removes_what_a_failed_command_made(tmp_path, fails) -> None:
    """The folders that did not exist are removed innermost first while empty; those that existed or hold
    a file stay; a command that succeeds keeps all of them."""
    (tmp_path / "old").mkdir()

    def body() -> None:
        for out in (tmp_path / "old/new/deep", tmp_path / "kept/deep", tmp_path / "old"):
            discard_new_folders(out)
            out.mkdir(parents=True, exist_ok=True)
        (tmp_path / "kept/file").write_text("x")  # the command wrote here before it failed
        if fails:
            raise UserError("refused")

    assert run_command(body) == (2 if fails else 0)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    made = ["old/new", "old/new/deep"] if not fails else []
    assert left == sorted(["old", "kept", "kept/file", *made] + ([] if fails else ["kept/deep"]))


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_prints_no_traceback_of_an_object_it_cut_short(capsys, monkeypatch):
    """A stop that lands in a constructor (a DataLoader iterator starting its workers) leaves an object whose
    __del__ fails when it is collected; the stop's one line stays the only output (pytest's own hook would
    turn that traceback into a warning, an error here)."""
    import gc
    import sys

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # put back after the test

    class HalfBuilt:
        def __init__(self) -> None:
            raise KeyboardInterrupt  # before the attribute __del__ reads is set

        def __del__(self) -> None:
            self._shutdown  # noqa: B018 - AttributeError, as in the interrupted iterator

    def body() -> None:
        HalfBuilt()

    assert run_command(body) == 130
    gc.collect()
    assert capsys.readouterr().err.strip() == "interrupted"
