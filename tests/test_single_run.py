"""single_run.sh's command line: CONFIG, then in any order a bare number (NGPU), key.path=value overrides and
--resume-anyway; the interpreter is $PYTHON, else ./.venv/bin/python where it exists, else python. A stub
interpreter records what the script would run, so no training runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def make_stub(path: Path, calls: Path) -> Path:
    """An interpreter that answers the script's GPU count with $FAKE_GPUS, reads configs with the real one,
    and records every other call (one argument a line, each call after a line "call")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            if [ "$1" = "-c" ]; then
                case "$2" in
                    *device_count*) echo "${{FAKE_GPUS:-0}}"; exit 0 ;;
                esac
                exec {sys.executable} "$@"
            fi
            {{ echo call; for arg in "$@"; do echo "$arg"; done; }} >> {calls}
            """
        )
    )
    path.chmod(0o755)
    return path


def read_calls(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    return [block.strip("\n").split("\n") for block in ("\n" + calls.read_text()).split("\ncall\n")[1:]]


@pytest.fixture
def single_run(tmp_path):
    """Run single_run.sh with a stub $PYTHON; returns (exit status, stderr, the calls it made)."""
    calls = tmp_path / "calls.txt"
    stub = make_stub(tmp_path / "bin" / "python", calls)

    def run(*args: str, gpus: int = 0, env: dict[str, str] | None = None, cwd: Path = REPO):
        calls.unlink(missing_ok=True)
        base = dict(os.environ, PYTHON=str(stub), PYTHONPATH=str(REPO), FAKE_GPUS=str(gpus))
        result = subprocess.run(
            ["sh", "single_run.sh", *args],
            cwd=cwd,
            env=base | (env or {}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.returncode, result.stderr, read_calls(calls)

    return run


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  root: /my/data\n")  # not the toy: nothing to prepare
    return path


def train(config: Path, *rest: str) -> list[str]:
    return ["train_semi.py", "--config", str(config), *rest]


def test_overrides_without_ngpu(single_run, config):
    status, err, calls = single_run(str(config), "train.epochs=2", "optim.lr=0.002")
    assert (status, err) == (0, "")
    assert calls == [train(config, "--opt", "train.epochs=2", "optim.lr=0.002")]


def test_ngpu_then_overrides_and_the_flag(single_run, config):
    _, _, calls = single_run(str(config), "1", "train.epochs=2", "--resume-anyway")
    assert calls == [train(config, "--resume-anyway", "--opt", "train.epochs=2")]


def test_ngpu_anywhere_launches_torchrun(single_run, config):
    _, _, calls = single_run(str(config), "train.epochs=2", "2")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert calls == [launcher + train(config, "--opt", "train.epochs=2")]


def test_without_ngpu_every_visible_gpu_is_used(single_run, config):
    _, _, calls = single_run(str(config), "train.epochs=2", gpus=4)
    assert calls[0][:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
    _, _, calls = single_run(str(config), gpus=1)  # one GPU (or none): plain python
    assert calls == [train(config, "--opt")]


def test_an_override_keeps_its_spaces(single_run, config):
    _, _, calls = single_run(str(config), "train.run_dir=runs/my run")
    assert calls == [train(config, "--opt", "train.run_dir=runs/my run")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1", "2"], "error: NGPU is given twice ('1' and '2')"),
        (["1.5"], "error: '1.5' is neither NGPU (a number) nor a key.path=value override"),
        (["--run-dir", "x"], "error: unknown option '--run-dir'"),
    ],
)
def test_a_bad_argument_is_one_sentence_and_runs_nothing(single_run, config, args, message):
    status, err, calls = single_run(str(config), *args)
    assert status == 2 and err.startswith(message) and err.count("\n") == 1
    assert calls == []


def test_no_argument_is_the_quick_start(single_run):
    assert single_run()[2] == [["-m", "tools.quick_start"]]


def test_the_checkout_venv_is_the_default_interpreter(tmp_path, config):
    """Without $PYTHON: ./.venv/bin/python where the checkout has one, else python on the PATH."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "single_run.sh", checkout)
    venv_calls, path_calls = tmp_path / "venv.txt", tmp_path / "path.txt"
    make_stub(tmp_path / "path" / "python", path_calls)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env |= {
        "PATH": f"{tmp_path / 'path'}{os.pathsep}{env['PATH']}",
        "PYTHONPATH": str(REPO),
        "FAKE_GPUS": "0",
    }

    def run() -> None:
        command = ["sh", "single_run.sh", str(config), "train.epochs=1"]
        subprocess.run(command, cwd=checkout, env=env, check=True, timeout=60)

    run()
    assert read_calls(path_calls) == [train(config, "--opt", "train.epochs=1")]
    make_stub(checkout / ".venv" / "bin" / "python", venv_calls)
    run()
    assert read_calls(venv_calls) == [train(config, "--opt", "train.epochs=1")]
    assert len(read_calls(path_calls)) == 1  # not called again
