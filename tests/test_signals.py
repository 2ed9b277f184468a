"""A scheduler's stop reaches every process of the job: training ends the same way each time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, start_training, toy_data
from run_fixtures import tiny_config


def _wait_for_log_lines(run_dir: Path, proc: subprocess.Popen, text: str, count: int) -> None:
    deadline = time.monotonic() + 120
    log = run_dir / "train.log"
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.read_text().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"training did not log {count} x {text!r} in time (exit status {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("moment", [(" it ", 2), ("eval teacher mIoU", 1)])
def test_sigterm_to_the_process_group_with_loader_workers_is_one_line_and_143(tmp_path, toy, moment):
    """`scancel` / `kill -- -PGID` signals the loader workers too: exit 143, one line, no worker traceback,
    while training (early, later) and right after an evaluation."""
    config = tiny_config(tmp_path, toy, "imas")
    cfg = yaml.safe_load(config.read_text())
    cfg["data"] = toy_data(
        toy, crop_size=32, long_side=[32, 48], num_workers=2
    )  # the full lists: a long epoch
    cfg["train"] |= {"epochs": 50, "eval_every": 1}
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    proc = start_training(config, run_dir, own_group=True)
    _wait_for_log_lines(run_dir, proc, *moment)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert err.splitlines() == [
        "terminated; starting the same command again resumes from the last checkpoint"
    ]


def test_a_loader_worker_lets_the_first_sigterm_pass_and_ends_at_the_second():
    """The group's SIGTERM is left to the main process (a batch it stops receiving midway is no news); the
    DataLoader's own terminate() still ends a worker that did not stop in time."""
    code = (
        "import os, signal, time\n"
        "from imas.data.loaders import seed_worker\n"
        "seed_worker(0)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.1)\n"
        "print('alive', flush=True)\n"
        "import sys\n"
        "sys.excepthook(BrokenPipeError, BrokenPipeError(32, 'Broken pipe'), None)\n"
        "sys.excepthook(ValueError, ValueError('a real bug'), None)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(5)\n"
        "print('still alive', flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["alive"] and proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
    # After the first SIGTERM a lost connection (the main process ending midway through a batch) is quiet;
    # any other error is still printed.
    assert "BrokenPipeError" not in proc.stderr and "ValueError: a real bug" in proc.stderr


def _worker_that_passed_a_sigterm() -> None:
    from imas.data import loaders

    loaders.WORKER_GRACE_S = 0.2
    loaders._pass_first_sigterm(signal.SIGTERM, None)
    time.sleep(60)  # nothing ends it: multiprocessing's exit handler would be joining it now


def test_a_worker_that_let_a_sigterm_pass_leaves_by_itself():
    """A DataLoader worker lets the first SIGTERM pass; one that nothing ends then leaves within its grace
    period, so that a main process joining it at exit does not wait forever."""
    import multiprocessing

    start = time.monotonic()
    worker = multiprocessing.get_context("fork").Process(target=_worker_that_passed_a_sigterm, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert worker.exitcode == 0 and time.monotonic() - start < 20
