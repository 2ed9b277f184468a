"""tools/benchmark.py's modes for the reliability checks run and report positive costs."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import benchmark  # noqa: E402


def test_state_check_mode(tmp_path):
    out = tmp_path / "state.json"
    args = ["--mode", "state", "--crop", "32", "--batch", "2", "--steps", "1", "--warmup", "0"]
    assert benchmark.main([*args, "--device", "cpu", "--threads", "1", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    # student + teacher + momentum: the parameters three times, and the BN buffers twice
    assert result["checked_tensors"] > 300 and result["checked_mib"] > 0 and result["state_check_s"] > 0


def test_preflight_mode(tmp_path):
    out = tmp_path / "preflight.json"
    args = ["--mode", "preflight", "--steps", "1", "--threads", "1"]
    assert benchmark.main([*args, "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["entries"] == {"voc": 20, "cityscapes": 2}
    assert result["voc_ms_per_entry"] > 0 and result["cityscapes_ms_per_entry"] > result["voc_ms_per_entry"]
