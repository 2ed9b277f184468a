"""Screenshot what TensorBoard shows of a run, as a person opening it in a browser sees it.

    python -m tools.tensorboard_view runs/toy --out /tmp/tbview     # runs/toy: a folder of runs, or one run
    python -m tools.tensorboard_view runs/toy --out /tmp/tbview --smoothing 0 --width 1280 --height 1200

Starts `tensorboard --logdir RUN --port P` in the background (P: a free port unless --port names one),
waits until it serves the run's scalars, opens its default page (Time Series) and its custom-scalars page in
headless Chromium (a fresh profile: what a first visit shows), waits --settle seconds for the charts to draw
(TensorBoard draws them in a background worker, which Chromium's own --screenshot does not wait for), writes
OUT/default.png and OUT/custom_scalars.png, and stops both. --smoothing opens the pages with that curve
smoothing in their URL (?smoothing=S, #custom_scalars&_smoothingWeight=S) instead of TensorBoard's 0.6. A
developer's check of the tags and the custom-scalars layout imas.logging writes; docs/tensorboard.png is the
default.png of a 2-epoch toy iMAS run with --smoothing 0 --width 1280 --height 1200 (about 20 s on 2 cores).

Needs Debian's chromium (`apt-get install chromium`; or --chromium PATH) and tensorboard. Exit status 0, or 2
with one sentence on stderr (no chromium, no tensorboard, no event files, a page that did not load).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from imas.cli import run_command
from imas.errors import UserError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PAGES = {"default": "/", "custom_scalars": "/#custom_scalars"}  # PNG name: the page's path
# The smoothing each page takes from its URL (TensorBoard's own default: 0.6)
SMOOTHING = {"default": "?smoothing={}", "custom_scalars": "&_smoothingWeight={}"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",  # the DevTools protocol on fds 3 (to Chromium) and 4 (from it)
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the run directory (TensorBoard's --logdir), or a folder of runs")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs (default: here)")
    p.add_argument("--port", type=int, default=0, help="TensorBoard's port (default: a free one)")
    p.add_argument("--width", type=int, default=1000, help="page width in CSS pixels (default 1000)")
    p.add_argument("--height", type=int, default=1250, help="page height in CSS pixels (default 1250)")
    p.add_argument("--settle", type=float, default=8.0, help="seconds a page gets to draw (default 8)")
    p.add_argument(
        "--smoothing", type=float, help="open the pages with this curve smoothing (0: none) instead of 0.6"
    )
    p.add_argument("--chromium", help="the browser (default: chromium, chromium-browser or google-chrome)")
    return p.parse_args(argv)


def find_browser(name: str | None) -> str:
    found = shutil.which(name) if name else next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        raise UserError(
            f"{name or 'chromium'} not found: install Debian's chromium (apt-get install chromium) or pass "
            "--chromium PATH"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(server: subprocess.Popen, base: str, log: Path, seconds: float = 120) -> None:
    """Until TensorBoard lists a scalar tag of the run (it reads the event files in the background)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise UserError(f"tensorboard stopped before serving the run ({last})")
        try:
            with urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=5) as response:
                if json.loads(response.read()):
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    raise UserError(f"tensorboard served no scalars of the run within {seconds:.0f} s (its log: {log})")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (JSON messages ended by NUL bytes)."""

    def __init__(self, path: str, profile: Path) -> None:
        to_browser, self._send_fd = os.pipe()
        self._receive_fd, from_browser = os.pipe()

        def child_fds() -> None:  # the pipe ends at fds 3 and 4, where --remote-debugging-pipe looks
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        command = [path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # the os.pipe ends are close-on-exec; fds 3 and 4 stay
            preexec_fn=child_fds,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive before it are dropped)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._receive_fd, 1 << 20)
                if not chunk:
                    raise UserError(f"chromium closed its DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise UserError(f"chromium refused {method}: {reply['error'].get('message')}")
                return reply["result"]

    def screenshot(self, url: str, png: Path, width: int, height: int, settle: float) -> None:
        """Open `url` in a new tab of width x height CSS pixels, wait `settle` seconds, write a PNG."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", session, **metrics)
        self.call("Emulation.setFocusEmulationEnabled", session, enabled=True)  # draws as a focused tab
        self.call("Page.bringToFront", session)
        failed = self.call("Page.navigate", session, url=url).get("errorText")
        if failed:
            raise UserError(f"chromium could not open {url} ({failed})")
        time.sleep(settle)
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", session, format="png")["data"]))
        self.call("Target.closeTarget", targetId=target)

    def close(self) -> None:
        for fd in (self._send_fd, self._receive_fd):
            os.close(fd)
        stop(self.process)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(args: argparse.Namespace) -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError("tensorboard is not installed in this Python environment: pip install tensorboard")
    if not args.run.is_dir() or not any(args.run.rglob("events.out.tfevents.*")):
        raise UserError(f"{args.run} holds no TensorBoard event files (events.out.tfevents.*)")
    browser_path = find_browser(args.chromium)
    args.out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{args.port or free_port()}"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tensorboard_view_") as tmp:
        log = Path(tmp) / "tensorboard.log"
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(args.run)]
        command += ["--host", "127.0.0.1", "--port", base.rsplit(":", 1)[1]]
        with log.open("w") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        browser = None
        try:
            wait_until_served(server, base, log)
            browser = Browser(browser_path, Path(tmp) / "profile")
            for name, path in PAGES.items():
                png = args.out / f"{name}.png"
                if args.smoothing is not None:
                    path += SMOOTHING[name].format(f"{args.smoothing:g}")
                browser.screenshot(base + path, png, args.width, args.height, args.settle)
                print(f"{png}: {base + path}")
        finally:
            if browser is not None:
                browser.close()
            stop(server)
    print(f"done in {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
