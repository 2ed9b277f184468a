"""The installed commands' --help (imas.entry, pyproject.toml [project.scripts]): answered before torch is
imported, on one 80 x 24 terminal (and on one 100 x 24), with an example that names files an installed user
has or says where they come from; the checkout's scripts answer the same way."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imas import arguments

REPO = Path(__file__).resolve().parents[1]
# pyproject.toml's [project.scripts], read without tomllib (Python 3.10 has none): `name = "module:function"`
SECTION = (REPO / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
SCRIPTS = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"', SECTION, re.M))
HEAVY = ("torch", "numpy", "PIL", "matplotlib", "scipy")
SCREEN = 24  # rows of a terminal
COLUMNS = 80  # the terminal's width; every help is also checked at WIDE columns
WIDE = 100

# Runs every command's entry point on `argv` in one fresh interpreter and reports, per command, its exit
# status, its output and the heavy modules imported by then.
PROBE = """
import contextlib, io, json, sys
import imas.entry
found = {}
for command, function, argv in json.loads(sys.argv[1]):
    sys.argv[0] = command
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = getattr(imas.entry, function)(argv)
        except SystemExit as exc:
            status = exc.code
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
    found[" ".join([command, *argv])] = {"status": status, "text": out.getvalue(), "heavy": heavy}
print(json.dumps(found))
"""


def probe(calls: list[tuple[str, str, list[str]]], columns: int = COLUMNS) -> dict[str, dict]:
    env = dict(os.environ, COLUMNS=str(columns), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(calls), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def entry_calls(argv: list[str]) -> list[tuple[str, str, list[str]]]:
    calls = []
    for command, target in SCRIPTS.items():
        module, function = target.split(":")
        assert module == "imas.entry", target
        calls.append((command, function, argv))
    return calls


def rows(lines: list[str], columns: int) -> int:
    """The terminal rows `lines` take: a line longer than the terminal wraps onto more rows."""
    return sum(max(1, math.ceil(len(line) / columns)) for line in lines)


@pytest.mark.parametrize("columns", [COLUMNS, WIDE])
def test_every_command_answers_help_on_one_screen_without_torch(columns: int) -> None:
    subcommands = [
        ("imas-data", "data", [name, "--help"]) for name in ("sbd", "cityscapes", "splits", "check")
    ]
    found = probe(entry_calls(["--help"]) + subcommands, columns)
    assert len(found) == len(SCRIPTS) + 4
    for call, result in found.items():
        lines = result["text"].splitlines()
        assert result["status"] == 0, (call, result["text"])
        assert lines[0].startswith(f"usage: {call.removesuffix(' --help')} "), (call, lines[0])
        assert result["heavy"] == [], (call, result["heavy"])
        assert rows(lines, columns) <= SCREEN, (call, rows(lines, columns))
        for line in lines:  # text wraps to the terminal; only an example command may be longer
            assert len(line) <= columns or line.startswith("  imas-"), (call, line)
        assert "example" in result["text"] and arguments.MANUAL in result["text"], call


def test_help_text_wraps_to_the_terminal_but_keeps_example_commands() -> None:
    text = "A long sentence that goes on. " * 4 + "\n  imas-x --a 1 --b 2 --c 3\nManual line."
    parser = argparse.ArgumentParser(prog="x", epilog=text, formatter_class=arguments._formatter)
    formatter = parser._get_formatter()
    filled = formatter._fill_text(text, 30, "").splitlines()
    assert all(len(line) <= 30 for line in filled if not line.startswith("  ")), filled
    assert "  imas-x --a 1 --b 2 --c 3" in filled and filled[-1] == "Manual line.", filled
    assert " ".join(filled[:-2]) == text.split("\n")[0].strip(), filled


def test_help_examples_say_where_checkout_files_come_from() -> None:
    """exps/, docs/ and single_run.sh are in the repository, not in an installed package: a help that names
    one says so."""
    for call, result in probe(entry_calls(["--help"])).items():
        text = " ".join(result["text"].split())
        if any(name in text for name in ("exps/", "docs/", "single_run")):
            assert "repository" in text, call


def test_a_usage_error_is_answered_without_torch() -> None:
    for call, result in probe(entry_calls([])).items():
        assert result["status"] == 2, call
        assert "error:" in result["text"] and "the following arguments are required" in result["text"], call
        assert result["heavy"] == [], call


@pytest.mark.parametrize(
    "command",
    [["train_semi.py"], ["eval.py"], ["predict.py"], ["-m", "imas.report"]],
    ids=["train_semi.py", "eval.py", "predict.py", "python -m imas.report"],
)
def test_checkout_scripts_answer_help_without_torch(command) -> None:
    code = "import runpy, sys; sys.argv = sys.argv[1:]; "
    if command[0] == "-m":
        code += f"sys.argv[0] = '{command[1]}'; "
        run = f"runpy.run_module('{command[1]}', run_name='__main__', alter_sys=True)"
    else:
        run = f"runpy.run_path('{command[0]}', run_name='__main__')"
    heavy = repr(HEAVY)
    code += f"""
try:
    {run}
except SystemExit as exc:
    assert exc.code == 0, exc.code
loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy}))
assert not loaded, loaded
"""
    env = dict(os.environ, COLUMNS=str(COLUMNS), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", code, command[-1], "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: ") and rows(result.stdout.splitlines(), COLUMNS) <= SCREEN


def test_predict_writes_below_runs_unless_told_otherwise() -> None:
    args = arguments.parse_predict(["--checkpoint", "runs/toy/imas/best.pth", "--input", "x"])
    assert Path(args.output) == Path("runs/predictions/toy/imas/best")
    other = arguments.parse_predict(["--checkpoint", "runs/toy_w64/imas/best.pth", "--input", "x"])
    assert Path(other.output) == Path("runs/predictions/toy_w64/imas/best")  # two runs, two folders
    args = arguments.parse_predict(["--checkpoint", "/elsewhere/imas/latest.pth", "--input", "x"])
    assert Path(args.output) == Path("runs/predictions/imas_latest")
    args = arguments.parse_predict(["--checkpoint", "best.pth", "--input", "x", "--output", "mine"])
    assert args.output == "mine"
    assert "/runs/" in (REPO / ".gitignore").read_text().split()  # the default is never committed


def test_the_module_parsers_are_the_light_ones() -> None:
    """One definition per command line: the command modules parse with imas.arguments."""
    import imas.compare
    import imas.data.commands
    import imas.evaluate
    import imas.predict
    import imas.pseudo_labels
    import imas.report.command
    import imas.st_plus_plus
    import imas.train

    args = imas.train.parse_args(["--config", "c.yaml", "--seed", "3"])
    assert args.opt == ["train.seed=3"]
    assert imas.evaluate.parse_args(["--config", "c", "--checkpoint", "p"]).output is None
    assert imas.predict.parse_args(["--checkpoint", "a/b.pth", "--input", "x"]).output.endswith("a_b")
    assert imas.pseudo_labels.parse_args(["--config", "c", "--checkpoint", "p"]).model == "teacher"
    assert imas.report.command.parse_args(["r"]).device == "cpu"
    assert imas.compare.parse_args(["r1", "r2"]).run_dirs == ["r1", "r2"]
    chain = imas.st_plus_plus.parse_st_plus_plus(["--config", "c.yaml", "--seed", "2"])
    assert chain.opt == ["train.seed=2"] and chain.nproc_per_node == 1
    splits = imas.data.commands.parse_args(["splits", "pascal", "--voc", "v"])
    assert splits.classic is None and splits.seed == 0  # the published sizes are imas.data.split_lists'
