"""The quick start: the toy data, its pretrained backbone, then SupOnly and iMAS on the same schedule side by
side (one CPU thread each), ending with the gain of iMAS over SupOnly that this very command measured.

    sh single_run.sh                        (the same as: python -m tools.quick_start)
    python -m tools.quick_start [--seed 0] [--opt key.path=value ...]

Each phase names itself when it starts and shows its progress with an ETA. The two runs are ordinary run
directories (runs/toy/suponly and runs/toy/imas, or --runs/...): a second call resumes or, when they are
finished, only prints the result again. docs/results.md holds the measured times and gains.
Exit status 0; 1 when a phase fails (its last lines are shown); 2 with one sentence for bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from imas.cli import on_exit, run_command
from imas.config import Config, load_config
from imas.errors import UserError
from imas.logging import format_duration
from imas.precision import cpu_description, cpu_model
from imas.rundir import SCALARS_NAME, epoch_means, miou_of, read_evaluations

CONFIGS = {"SupOnly": "exps/toy/suponly.yaml", "iMAS": "exps/toy/imas.yaml"}  # baseline first
PROGRESS_TTY_SECONDS, PROGRESS_PLAIN_SECONDS = 1.0, 15.0  # as imas.progress: a job log gets few lines
SUMMARY_SCALARS = {"easiness": "mean easiness", "cutmix_rate": "CutMix rate", "confident": "confident ratio"}
USER_ERROR = 2  # the exit status of a command that refused its input (imas.cli)
PRETRAIN_SETTINGS: list[str] = []  # extra tools.toy_pretrain options (the tests' tiny pretraining)
TRAIN_LINE = re.compile(r"it (\d+)/(\d+) ([\d.]+|nan) it/s eta (\S+)")  # imas.logging's progress fields


class PhaseError(Exception):
    """A phase's command failed: one sentence (and the command's last lines), exit status 1."""


@dataclass
class Training:
    """One of the two trainings: its process, where its console goes and where its run directory is."""

    name: str
    config: str
    run_dir: Path
    console: Path
    process: subprocess.Popen | None = None

    def progress(self) -> str:
        """'iMAS it 400/2400 8.91 it/s eta 0:03:44' from the last progress line of its train.log."""
        if self.process is not None and self.process.poll() == 0:
            return f"{self.name} done"
        found = None
        try:
            for line in (self.run_dir / "train.log").read_text(errors="replace").splitlines()[-40:]:
                found = TRAIN_LINE.search(line) or found
        except OSError:
            pass
        if found is None:
            return f"{self.name} starting"
        done, total, rate, eta = found.groups()
        return f"{self.name} it {done}/{total} {rate} it/s eta {eta}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="the seed of both trainings (default 0)")
    p.add_argument("--runs", default="runs/toy", help="folder of the two run directories (default runs/toy)")
    p.add_argument("--opt", nargs="*", action="extend", default=[], help="overrides for both trainings")
    return p.parse_args(argv)


def phase(number: int, title: str) -> float:
    print(f"[{number}/3] {title}", flush=True)
    return time.perf_counter()


class Reported(UserError):
    """A phase's command refused its input and printed its own sentence: exit status 2, nothing added."""


def call(command: list[str], what: str) -> None:
    """Run a phase's command with its output on the console. Its refusal (exit status 2: it said why in one
    sentence) ends the quick start in the same way; any other failure is a PhaseError."""
    code = subprocess.call(command)
    if code == USER_ERROR:
        raise Reported(what)
    if code != 0:
        raise PhaseError(f"{what} failed with exit code {code}")


def check_configs(args: argparse.Namespace) -> Config:
    """Both configs must read the same toy data and start from the same backbone (one sentence otherwise);
    returns iMAS's."""
    if not Path(CONFIGS["iMAS"]).is_file():
        raise UserError(
            f"{CONFIGS['iMAS']} is not here: run the quick start from the repository's root folder"
        )
    configs = [load_config(path, args.opt) for path in CONFIGS.values()]
    if len({(str(c.data.root), c.model.pretrained, c.model.backbone_width) for c in configs}) != 1:
        raise UserError(f"{' and '.join(CONFIGS.values())} must read the same data.root and model.pretrained")
    if not configs[0].model.pretrained:
        raise UserError(f"{CONFIGS['iMAS']} names no model.pretrained backbone for the quick start to make")
    return configs[-1]


def start(training: Training, args: argparse.Namespace) -> None:
    """Launch one training with one CPU thread, its console into a temporary file."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "imas.train", "--config", training.config, "--device", "cpu"]
    command += ["--run-dir", str(training.run_dir), "--seed", str(args.seed)]
    command += ["--opt", *args.opt] if args.opt else []
    with training.console.open("w") as console:
        training.process = subprocess.Popen(command, env=env, stdout=console, stderr=subprocess.STDOUT)


def watch(trainings: list[Training]) -> None:
    """Wait for both trainings, showing their progress; the first failure stops the other."""
    tty = sys.stdout.isatty()
    every = PROGRESS_TTY_SECONDS if tty else PROGRESS_PLAIN_SECONDS
    last = time.perf_counter()
    while any(t.process.poll() is None for t in trainings):
        failed = [t for t in trainings if t.process.poll() not in (None, 0)]
        if failed:
            break
        time.sleep(0.2)
        if time.perf_counter() - last >= every:
            last = time.perf_counter()
            line = "training: " + " | ".join(t.progress() for t in trainings)
            print(("\r" + line.ljust(100)) if tty else line, end="" if tty else "\n", flush=True)
    if tty:
        print(flush=True)
    for training in trainings:
        code = training.process.poll()
        if code not in (None, 0):
            stop(trainings)
            lines = training.console.read_text(errors="replace").splitlines()
            refusal = [line for line in lines if line.startswith("error: ")]
            if code == USER_ERROR and refusal:  # bad input (e.g. a broken toy file): its one sentence
                raise UserError(refusal[-1].removeprefix("error: "))
            tail = lines[-6:]
            raise PhaseError(
                f"{training.name} ({training.config}) failed with exit code {code}; its last lines:\n"
                + "\n".join("  " + line for line in tail)
            )


def stop(trainings: list[Training]) -> None:
    """Terminate what still runs (each saves nothing more than its last checkpoint) and wait for it."""
    for training in trainings:
        if training.process is not None and training.process.poll() is None:
            training.process.terminate()
    for training in trainings:
        if training.process is not None:
            try:
                training.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                training.process.kill()


def hardware() -> str:
    """'Intel(R) Xeon(R) Processor, 2 cores, AVX512, native bf16': what the times above depend on."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {cpu_description()}"


def summary(trainings: list[Training], seconds: dict[str, float], unlabeled: int, labeled: int) -> str:
    """The closing lines: both numbers and the gain, the wall time, where the runs are, and what iMAS's
    adaptive parts did per epoch."""
    finals = {}
    for training in trainings:
        records = read_evaluations(training.run_dir)
        if not records:
            raise PhaseError(f"{training.name} recorded no evaluation in {training.run_dir}")
        finals[training.name] = (100 * miou_of(records[-1]), records[-1]["epoch"], records[-1]["model"])
    (base, epochs, _), (imas, _, model) = finals["SupOnly"], finals["iMAS"]
    total = sum(seconds.values())
    lines = [
        "",
        f"quick start done in {format_duration(total)} ("
        + ", ".join(f"{k} {format_duration(v)}" for k, v in seconds.items())
        + f") on {hardware()}",
        f"iMAS {model} {imas:.1f} vs SupOnly {base:.1f} ({imas - base:+.1f}) with {unlabeled} unlabeled "
        f"images ({labeled} labeled; mIoU on the val images after {epochs} epochs)",
        "iMAS's adaptive parts per epoch (mean of the logged iterations):",
        "  epoch  " + "  ".join(f"{label:>15}" for label in SUMMARY_SCALARS.values()),
    ]
    rows = epoch_means(trainings[1].run_dir / SCALARS_NAME)
    for epoch, values in rows.items():
        if epoch == 1 or epoch % 4 == 0 or epoch == max(rows):
            lines.append(
                f"  {epoch:5d}  " + "  ".join(f"{values.get(k, float('nan')):15.3f}" for k in SUMMARY_SCALARS)
            )
    lines += [
        "runs: " + ", ".join(str(t.run_dir) for t in trainings),
        "compare them: imas-compare "
        + " ".join(str(t.run_dir) for t in trainings)
        + f"; a report: imas-report {trainings[1].run_dir}",
    ]
    return "\n".join(lines)


def quick_start(args: argparse.Namespace) -> int:
    cfg = check_configs(args)
    seconds: dict[str, float] = {}
    began = phase(1, f"toy data in {cfg.data.root}")
    call(
        [sys.executable, "-m", "imas.data.toy", "--out", str(cfg.data.root), "--ensure"],
        "making the toy data",
    )
    seconds["data"] = time.perf_counter() - began
    began = phase(2, "toy backbone (the stand-in for ImageNet weights)")
    pretrain = [sys.executable, "-m", "tools.toy_pretrain", "--out", cfg.model.pretrained]
    pretrain += ["--width", str(cfg.model.backbone_width), "--ensure", *PRETRAIN_SETTINGS]
    call(pretrain, "pretraining the toy backbone")
    seconds["backbone"] = time.perf_counter() - began
    began = phase(3, "training SupOnly and iMAS on the same schedule, side by side, one CPU thread each")
    console_dir = Path(tempfile.mkdtemp(prefix="imas-quick-start-"))
    on_exit(console_dir)
    trainings = [
        Training(name, config, Path(args.runs) / Path(config).stem, console_dir / f"{name}.txt")
        for name, config in CONFIGS.items()
    ]
    on_exit(lambda: stop(trainings))  # Ctrl-C or a failure: no training is left running
    for training in trainings:
        start(training, args)
    watch(trainings)
    seconds["training"] = time.perf_counter() - began
    counts = {
        name: len(Path(split).read_text().split())
        for name, split in (("labeled", cfg.data.labeled_split), ("unlabeled", cfg.data.unlabeled_split))
    }
    print(summary(trainings, seconds, counts["unlabeled"], counts["labeled"]), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        try:
            return quick_start(parse_args(argv))
        except PhaseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run_command(
        body,
        terminate=True,
        interrupted="run the same command again to resume",
        quiet_error=lambda exc: isinstance(exc, Reported),
    )


if __name__ == "__main__":
    sys.exit(main())
