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

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int = 0) -> None:
        """purge_step: the iteration the run starts from; TensorBoard hides the events an earlier, crashed
        attempt logged from that step on, so a re-run stretch is shown once."""
        self.enabled = enabled
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self._tb: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only where it is used

            self._tb = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

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

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """A TensorBoard histogram of a 1-D tensor (e.g. the hardness of every image since the last log)."""
        if self._tb is not None:
            self._tb.add_histogram(tag, values.detach().float().cpu(), step, bins=20)

    def panel(self, tag: str, views: dict[str, Any], palette: list[tuple[int, int, int]], step: int) -> None:
        """One TensorBoard image: a row per image (at most 4), a column per view in `views`' order.

        uint8 images [B, 3, H, W] are shown as they are; label maps [B, H, W] in the dataset palette
        (255, the ignored or unconfident pixels, in white).
        """
        if self._tb is None:
            return
        from imas.visualize import colorize, grid

        columns = [v[:4] if v.dim() == 4 else colorize(v[:4], palette) for v in views.values()]
        self._tb.add_image(tag, grid(columns), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class HardnessHistory:
    """Per-image hardness over training, one CSV row per (image, iteration): run_dir/hardness.csv.

    Rows are buffered on the device and written at logging time, so training never waits on the host.
    On resume, rows of iterations the checkpoint does not cover (a crash mid-epoch) are dropped first, so the
    file continues exactly where the checkpoint stands: a checkpoint taken after `resume_iteration` steps
    covers the rows of iterations 0 .. resume_iteration - 1 (a row carries the iteration's index).
    """

    HEADER = "image_id,epoch,iteration,hardness\n"

    def __init__(self, run_dir: Path, enabled: bool, resume_iteration: int = 0) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "hardness.csv"
        self._pending: list[tuple[int, int, Any, Any]] = []
        if not enabled:
            return
        rows = self.path.read_text().splitlines()[1:] if self.path.is_file() and resume_iteration else []
        kept = [row for row in rows if int(row.rsplit(",", 2)[1]) < resume_iteration]
        self.path.write_text(self.HEADER + "".join(f"{row}\n" for row in kept))

    def add(self, epoch: int, iteration: int, indices: Any, hardness: Any) -> None:
        """Queue one iteration: indices LongTensor [N] into the dataset, hardness Tensor [N] (all ranks)."""
        self._pending.append((epoch, iteration, indices.detach(), hardness.detach().float()))

    def flush(self, ids: list[str]) -> None:
        """Write the queued rows (rank 0), with `ids[index]` naming each image."""
        pending, self._pending = self._pending, []
        if not self.enabled or not pending:
            return
        with self.path.open("a") as f:
            for epoch, iteration, indices, hardness in pending:
                for index, value in zip(indices.tolist(), hardness.tolist()):
                    f.write(f"{ids[index]},{epoch},{iteration},{value:.5f}\n")
