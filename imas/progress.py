"""Progress of a command that works through many images (imas-eval, imas-predict, imas-pseudo-labels,
imas-data sbd / cityscapes), shown on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from imas.logging import format_duration

# How often progress is shown: a terminal line is redrawn at most every PROGRESS_TTY_SECONDS; where stderr is
# a file or a pipe (a job log) a plain line is written every PROGRESS_PLAIN_SECONDS, so thousands of images
# give a few lines a minute, not one each. The last count is always shown.
PROGRESS_TTY_SECONDS = 0.5
PROGRESS_PLAIN_SECONDS = 10.0


class ImageProgress:
    """Images done / total, img/s and time left, on stderr while eval or predict work through many images.

    Why stderr: stdout holds the results (eval's table, predict's summary) and the log, which stay readable
    when progress is redirected away. On a terminal one line is redrawn in place (\\r) at most every
    PROGRESS_TTY_SECONDS; elsewhere (a job log) a plain line every PROGRESS_PLAIN_SECONDS; the last count is
    always shown. `scale`: the processes sharing the work equally (torchrun eval), of which only the one
    with enabled=True (rank 0) reports: its count times `scale`, at most `total`, estimates everyone's.
    `units`: what is counted and its rate, ("images", "img/s") unless told (imas-data: label files).
    """

    def __init__(
        self,
        label: str,
        total: int,
        enabled: bool = True,
        scale: int = 1,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
        units: tuple[str, str] = ("images", "img/s"),
    ) -> None:
        self.label, self.total, self.enabled, self.scale = label, total, enabled, scale
        self.units = units
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = PROGRESS_TTY_SECONDS if self.tty else PROGRESS_PLAIN_SECONDS
        self.clock = clock
        self.start = self.last = clock()
        self.width = 0  # characters of the line drawn on the terminal; 0: none open

    def line(self, done: int) -> str:
        """'eval 40/150 images (27%), 3.21 img/s, elapsed 0:00:12, eta 0:00:34'."""
        elapsed = self.clock() - self.start
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        percent = f" ({100 * done // self.total}%)" if self.total else ""
        speed = _rate(rate)
        return (
            f"{self.label} {done}/{self.total} {self.units[0]}{percent}, {speed} {self.units[1]}, "
            f"elapsed {format_duration(elapsed)}, eta {format_duration(eta)}"
        )

    def update(self, done: int) -> None:
        """`done` images finished by this process (predict: read or skipped); shown when due."""
        if not self.enabled:
            return
        done = min(self.total, done * self.scale)
        now = self.clock()
        last = done >= self.total
        if not last and now - self.last < self.every:
            return
        self.last = now
        text = self.line(done)
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width) + ("\n" if last else ""))
            self.width = 0 if last else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the terminal line before other output (a log line), which would otherwise run on after it;
        the next update draws it again."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def close(self) -> None:
        """End an open terminal line (work stopped before the last image), so the shell prompt or an error
        starts on a line of its own."""
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _rate(per_second: float) -> str:
    """3.21, 45.6, 152: three significant digits or so, never an exponent; '?' before the first image."""
    if per_second != per_second:
        return "?"
    return (
        f"{per_second:.2f}"
        if per_second < 10
        else f"{per_second:.1f}"
        if per_second < 100
        else f"{per_second:.0f}"
    )
