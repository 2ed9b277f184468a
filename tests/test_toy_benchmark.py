"""tools/toy_benchmark.py: finished runs are reused, and the table is the mean ± std over seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import toy_benchmark  # noqa: E402


def fake_result(out: Path, row: str, seed: int, final: float, best: float) -> None:
    config = toy_benchmark.CONFIGS[row]
    run_dir = out / toy_benchmark.run_name(config) / f"seed{seed}"
    run_dir.mkdir(parents=True)
    record = {"config": config, "seed": seed, "final_miou": final, "best_miou": best, "wall_s": 120.0}
    (run_dir / "result.json").write_text(json.dumps(record))


def test_table_from_finished_runs(tmp_path, capsys):
    fake_result(tmp_path, "SupOnly", 0, 40.0, 41.0)
    fake_result(tmp_path, "SupOnly", 1, 42.0, 43.0)
    fake_result(tmp_path, "iMAS", 0, 46.0, 47.0)
    fake_result(tmp_path, "iMAS", 1, 48.0, 49.0)
    args = ["--out", str(tmp_path), "--seeds", "0", "1", "--rows", "SupOnly", "iMAS"]
    assert toy_benchmark.main(args) == 0  # nothing to train: every run has its result.json
    table = (tmp_path / "results.md").read_text()
    assert "native bf16)" in table.splitlines()[0]  # the header names the CPU's ISA and native bf16
    assert (
        "| SupOnly | `exps/toy/suponly.yaml` | 0, 1 | 41.00 ± 1.41 | 42.00 ± 1.41 | +0.00 | 2.00 ± 0.00 |"
        in table
    )
    assert "| iMAS | `exps/toy/imas.yaml` | 0, 1 | 47.00 ± 1.41 | 48.00 ± 1.41 | +6.00 |" in table
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == 4


def test_unknown_row_is_one_sentence(capsys):
    assert toy_benchmark.main(["--rows", "FixMatch"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown row 'FixMatch'")
