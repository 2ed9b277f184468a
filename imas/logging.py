"""Run logs: text log (rank 0), TensorBoard scalars, one JSON line per evaluation in metrics.jsonl."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

LOGGER_NAME = "imas"


def setup_logging(run_dir: Path | None, is_main: bool) -> logging.Logger:
    """Log INFO to stdout and run_dir/train.log on rank 0; only warnings and errors on other ranks."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if is_main and run_dir is not None:
        file_handler = logging.FileHandler(Path(run_dir) / "train.log")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Iterations per second and time left, measured from the first iteration of this process."""

    def __init__(self, start_iteration: int, total_iterations: int) -> None:
        self.start_iteration = start_iteration
        self.total = total_iterations
        self.start_time = time.perf_counter()

    def line(self, iteration: int) -> str:
        elapsed = time.perf_counter() - self.start_time
        done = iteration - self.start_iteration
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        eta = (self.total - iteration) / rate if rate == rate and rate > 0 else float("nan")
        return f"it {iteration}/{self.total} {rate:.2f} it/s eta {format_duration(eta)}"


class RunWriter:
    """TensorBoard scalars (tags train/*, eval/*, lr) and metrics.jsonl; does nothing off rank 0."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self._tb: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only where it is used

            self._tb = SummaryWriter(log_dir=str(run_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._tb is None:
            return
        for tag, value in values.items():
            self._tb.add_scalar(tag, value, step)

    def evaluation(self, record: dict[str, Any]) -> None:
        """Append one evaluation (epoch, iteration, mIoU, ...) as a JSON line."""
        if not self.enabled:
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    @property
    def tensorboard(self) -> Any:
        """The SummaryWriter (None off rank 0), for histograms and images."""
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
