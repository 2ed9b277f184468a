"""tools/gpu_check.py: the dry run goes through every row on the CPU, and the runner records rows that time
out, run out of memory, fail or do not fit before the deadline, and keeps going."""

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tools import gpu_check

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"gpu_tests", "voc_step", "shares", "voc_eval", "cityscapes", "torchrun", "compiled"}


@pytest.mark.slow
def test_dry_run_goes_through_every_row(tmp_path):
    """The whole check on the CPU with tiny shapes, as a command: every section has rows that finished, step
    rows report a step time and memory, the torchrun run resumed, and the table is printed."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "tools.gpu_check", "--dry-run", "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["complete"] and report["torch"] == torch.__version__
    rows = report["rows"]
    assert {row["section"] for row in rows} == SECTIONS
    for row in rows:
        assert row["status"] == ("skipped" if row["section"] == "gpu_tests" else "ok"), row
    gpu_tests = next(row for row in rows if row["section"] == "gpu_tests")
    assert "no CUDA" in gpu_tests["notes"] and len(gpu_tests["tests"]) >= 2
    steps = [row for row in rows if row["section"] in ("voc_step", "compiled")]
    assert len(steps) == 18  # 2 methods x 2 batches x 2 precisions x channels_last on/off, and 2 compiled
    for row in steps + [next(row for row in rows if row["name"].startswith("cityscapes iMAS"))]:
        assert row["step_s"] > 0 and row["peak_gib"] > 0 and row["peak_kind"] == "process rss"
    compiled = [row for row in steps if row["compiled"]]
    assert all(row["dynamo_compiles"] >= 1 and row["compile_s"] >= 0 for row in compiled)
    shares = next(row for row in rows if row["section"] == "shares")
    assert 0 < shares["hardness_share"] < 1 and 0 < shares["ema_share"] < 1
    torchrun = next(row for row in rows if row["section"] == "torchrun")
    assert torchrun["resumed"] and torchrun["resumed_at_iteration"] == 10
    assert torchrun["metrics_iterations"] == [10, 20] and [p["rc"] for p in torchrun["phases"]] == [0, 0]
    assert report["projection"]["steps"] == 46_240 and report["projection"]["total_hours"] > 0
    assert "| row | status | step s | peak GiB | notes |" in result.stdout
    assert all(f"| {row['name']} | {row['status']} |" in result.stdout for row in rows)


def fake_row(name: str, fn, min_s: float = 0.0) -> gpu_check.Row:
    return gpu_check.Row(name, "voc_step", "step", fn, min_s=min_s)


def test_rows_that_fail_are_recorded_and_the_run_goes_on(tmp_path):
    """A timeout (with what the row learnt before it), an OOM and an error each end their row only; a row
    that would start after the deadline is skipped; the JSON is written whatever happened."""
    scale = dataclasses.replace(gpu_check.make_scale(dry_run=True, deadline=2.0), budget_s={"step": 0.3})

    def slow(ctx):
        ctx.partial["call_s"] = [0.1]
        time.sleep(5)
        return {}

    def oom(ctx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken(ctx):
        raise ValueError("a bad\nvalue")

    rows = [
        fake_row("fine", lambda ctx: {"step_s": 0.5, "batch": scale.batches[1], "method": "imas"}),
        fake_row("slow", slow),
        fake_row("oom", oom),
        fake_row("broken", broken),
        fake_row("late", lambda ctx: {}, min_s=60.0),
    ]
    out = tmp_path / "gpu.json"
    report = gpu_check.run_rows(rows, scale, out, time.monotonic())
    statuses = {row["name"]: row["status"] for row in report["rows"]}
    assert statuses == {
        "fine": "ok",
        "slow": "timeout",
        "oom": "oom",
        "broken": "error",
        "late": "not started",
    }
    by_name = {row["name"]: row for row in report["rows"]}
    assert by_name["slow"]["call_s"] == [0.1] and by_name["slow"]["seconds"] < 2
    assert by_name["broken"]["notes"] == "ValueError: a bad value"
    assert json.loads(out.read_text())["rows"] == report["rows"] and not report["complete"]
    # The projection takes the fastest finished iMAS step at the single-GPU batch: 46,240 x 0.5 s
    assert report["projection"]["train_hours"] == round(46_240 * 0.5 / 3600, 2)


def test_cuda_tests_are_found_and_pytest_summaries_read():
    ids = gpu_check.cuda_test_ids(REPO / "tests")
    assert any(i.startswith("tests/test_hardness.py::test_") for i in ids)
    assert any(i.startswith("tests/test_augment.py::test_") for i in ids)
    assert gpu_check.pytest_counts("..\n2 passed, 1 skipped in 3.10s\n") == {"passed": 2, "skipped": 1}
    assert gpu_check.pytest_counts("1 failed, 1 passed, 2 errors in 1s") == {
        "failed": 1,
        "passed": 1,
        "error": 2,
    }
    assert gpu_check.pytest_counts("") == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_a_real_run_is_refused_in_one_sentence(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CUDA device") and "--dry-run" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "gpu.json").exists()
