"""tools/tensorboard_view.py: screenshots of TensorBoard's pages of a run, and its one-sentence errors."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import struct

import pytest

from imas.logging import RunWriter
from tools import tensorboard_view


@pytest.fixture
def run_dir(tmp_path):
    writer = RunWriter(tmp_path / "run", enabled=True)
    writer.layout(["background", "disk"])
    for step, miou in ((150, 30.0), (300, 45.0)):
        writer.scalars({"eval/miou": miou, "eval/best_miou": miou, "train/loss_x": 1.0 - miou / 100}, step)
    writer.close()
    return tmp_path / "run"


def test_a_missing_browser_is_one_sentence(run_dir, capsys):
    assert tensorboard_view.main([str(run_dir), "--chromium", "no-such-browser", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: no-such-browser not found: install Debian's chromium (apt-get install chromium) or pass "
        "--chromium PATH"
    )
    assert not list(run_dir.glob("*.png"))


def test_a_folder_without_events_and_a_missing_tensorboard_are_one_sentence(tmp_path, run_dir, capsys):
    assert tensorboard_view.main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'empty'} holds no TensorBoard event files (events.out.tfevents.*)"
    )
    real = importlib.util.find_spec
    missing = {"tensorboard"}

    def find_spec(name, *args):
        return None if name in missing else real(name, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", find_spec)
        assert tensorboard_view.main([str(run_dir)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: tensorboard is not installed in this Python environment: pip install tensorboard"
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
@pytest.mark.skipif(
    not any(map(shutil.which, tensorboard_view.BROWSERS)), reason="needs chromium (apt-get install chromium)"
)
def test_both_pages_are_screenshot_and_tensorboard_is_stopped(run_dir, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [str(run_dir), "--out", str(tmp_path / "png"), "--port", str(port), "--settle", "3"]
    assert tensorboard_view.main([*args, "--width", "900", "--height", "700"]) == 0
    for name in ("default", "custom_scalars"):
        assert png_size((tmp_path / "png" / f"{name}.png").read_bytes()) == (900, 700)
    assert "done in" in capsys.readouterr().out
    with (
        socket.socket() as s
    ):  # TensorBoard is gone: nothing listens on its port (its closed connections may)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
