"""tools/toy_benchmark.py: finished runs are reused, the table is the mean ± std over seeds, runs are read
through imas.rundir.read_run, and bad input is one sentence with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tools import toy_benchmark


def fake_result(out: Path, row: str, seed: int, final: float, best: float) -> None:
    config = toy_benchmark.CONFIGS[row]
    run_dir = out / toy_benchmark.run_name(config) / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"train": {"seed": seed}})
    )  # training writes it first
    record = {"config": config, "seed": seed, "final_miou": final, "best_miou": best, "wall_s": 120.0}
    (run_dir / "result.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_table_from_finished_runs(tmp_path, capsys):
    fake_result(tmp_path, "SupOnly", 0, 40.0, 41.0)
    fake_result(tmp_path, "SupOnly", 1, 42.0, 43.0)
    fake_result(tmp_path, "iMAS", 0, 46.0, 47.0)
    fake_result(tmp_path, "iMAS", 1, 48.0, 49.0)
    fake_result(tmp_path, "mean teacher", 0, 42.0, 43.0)
    fake_result(tmp_path, "mean teacher", 1, 44.0, 45.0)
    args = ["--out", str(tmp_path), "--seeds", "0", "1", "--rows", "SupOnly", "iMAS", "mean teacher"]
    assert toy_benchmark.main(args) == 0  # nothing to train: every run has its result.json
    table = (tmp_path / "results.md").read_text()
    assert "native bf16)" in table.splitlines()[0]  # the header names the CPU's ISA and native bf16
    assert (
        "| SupOnly | `exps/toy/suponly.yaml` | 0, 1 | 41.00 ± 1.41 | 42.00 ± 1.41 | +0.00 | — | 2.00 ± 0.00 |"
        in table
    )
    # +6.00 is beyond the seed spread (1.41 + 1.41); +2.00 (mean teacher) is not
    assert "| iMAS | `exps/toy/imas.yaml` | 0, 1 | 47.00 ± 1.41 | 48.00 ± 1.41 | +6.00 | yes |" in table
    assert (
        "| mean teacher | `exps/toy/mean_teacher.yaml` | 0, 1 | 43.00 ± 1.41 | 44.00 ± 1.41 | +2.00 | no |"
        in table
    )
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == 6


def test_unknown_row_is_one_sentence(capsys):
    assert toy_benchmark.main(["--rows", "FixMatsch"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown row 'FixMatsch'")


@pytest.mark.slow
def test_finished_run_with_other_settings_is_not_reused(tmp_path, capsys):
    """A result made with another config (here another precision) stops the benchmark with one sentence."""
    fake_result(tmp_path, "SupOnly", 0, 40.0, 41.0)
    run_dir = tmp_path / "suponly" / "seed0"
    saved = {"train": {"precision": "bf16", "seed": 0, "epochs": 24}, "data": {"root": "data/toy"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    args = ["--out", str(tmp_path), "--seeds", "0", "--rows", "SupOnly"]
    assert toy_benchmark.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "train.precision is 'bf16' there, 'fp32' now" in err and "delete that folder" in err
    saved["train"]["precision"] = "fp32"  # the same settings: reused, nothing trains
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert toy_benchmark.main(args) == 0


def test_failed_training_is_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(toy_benchmark.subprocess, "check_call", lambda *a, **k: 0)  # data already there
    monkeypatch.setattr(toy_benchmark.subprocess, "call", lambda *a, **k: 3)  # the training fails
    args = ["--out", str(tmp_path), "--seeds", "0", "--rows", "SupOnly", "--jobs", "1"]
    assert toy_benchmark.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: exps/toy/suponly.yaml seed 0 failed with exit code 3; see ")
    assert "Traceback" not in err


def test_jobs_below_one_is_one_sentence(capsys):
    assert toy_benchmark.main(["--jobs", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --jobs must be at least 1, got 0\n"


@pytest.mark.slow
def test_a_finished_training_is_read_through_the_run_reader(tmp_path, capsys, monkeypatch):
    """What a training wrote is read with imas.rundir.read_run: the last record of an epoch, a line cut
    short by a crash skipped, the best evaluation the first of the highest mIoU."""

    def fake_training(command, **kwargs):
        run_dir = Path(command[command.index("--run-dir") + 1])
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"method": "supervised"}}))
        lines = [
            {"epoch": 1, "iteration": 4, "model": "student", "miou": 0.30, "iou": {"a": 0.3}},
            {"epoch": 2, "iteration": 8, "model": "student", "miou": 0.50, "iou": {"a": 0.5}},
            {"epoch": 3, "iteration": 12, "model": "student", "miou": 0.40, "iou": {"a": 0.4}},
        ]
        text = "".join(json.dumps(line) + "\n" for line in lines) + '{"epoch": 4, "itera'
        (run_dir / "metrics.jsonl").write_text(text)
        return 0

    monkeypatch.setattr(toy_benchmark.subprocess, "check_call", lambda *a, **k: 0)  # data already there
    monkeypatch.setattr(toy_benchmark.subprocess, "call", fake_training)
    args = ["--out", str(tmp_path), "--seeds", "0", "--rows", "SupOnly", "--jobs", "1"]
    assert toy_benchmark.main(args) == 0
    result = json.loads((tmp_path / "suponly" / "seed0" / "result.json").read_text())
    assert result["final_miou"] == 40.0 and result["best_miou"] == 50.0 and result["epochs"] == 3


def test_a_result_json_that_is_no_result_is_one_sentence(tmp_path, capsys, monkeypatch):
    """result.json is read through RunRecord.result: one that cannot be read, or one outside a run
    directory, stops the benchmark with one sentence instead of being trusted or a traceback."""
    monkeypatch.setattr(toy_benchmark.subprocess, "check_call", lambda *a, **k: 0)  # data already there
    monkeypatch.setattr(toy_benchmark.subprocess, "call", lambda *a, **k: pytest.fail("nothing may train"))
    fake_result(tmp_path, "SupOnly", 0, 40.0, 41.0)
    result_file = tmp_path / "suponly" / "seed0" / "result.json"
    result_file.write_text('{"config": "exps/toy/supo')  # cut short
    args = ["--out", str(tmp_path), "--seeds", "0", "--rows", "SupOnly", "--jobs", "1"]
    assert toy_benchmark.main(args) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {result_file} is not a result this script wrote: delete that folder to train it again\n"
    )
    (result_file.parent / "config.yaml").unlink()
    assert toy_benchmark.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no config.yaml" in err and err.count("\n") == 1
