"""imas-compare on two tiny real runs of different methods: the table's numbers are those of their
metrics.jsonl, the wall time is the run's own record (or, for runs written before it, result.json or
train.log's timestamps, and the table says which), and runs of other class lists or bad folders are one
sentence with exit status 2."""

from __future__ import annotations

import csv
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from run_forms import legacy_form, new_form, text_copy

from imas import compare
from imas.rundir import read_run

# The session's tiny runs (imas_run, suponly_run), trained once for this file and test_report.py.
pytest_plugins = ["run_fixtures"]

REPO = Path(__file__).resolve().parents[1]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def best_of(run_dir: Path) -> dict:
    """The first evaluation of highest mIoU, worked out here without the tool."""
    rows = records(run_dir)
    top = max(r["miou"] for r in rows)
    return next(r for r in rows if r["miou"] == top)


def log_span(run_dir: Path) -> float:
    """First to last timestamp of a train.log written by one attempt."""
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ", (run_dir / "train.log").read_text(), re.M)
    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def markdown_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.mark.slow
def test_table_holds_the_numbers_of_metrics_jsonl(imas_run, suponly_run, tmp_path, capsys) -> None:
    out_csv = tmp_path / "table.csv"
    assert compare.main([str(imas_run), str(suponly_run), "--csv", str(out_csv)]) == 0
    table = markdown_rows(capsys.readouterr().out)
    with out_csv.open(newline="") as f:
        table_csv = list(csv.DictReader(f))
    assert len(table) == len(table_csv) == 2
    classes = list(records(imas_run)[-1]["iou"])
    assert classes == ["background", "disk", "square", "triangle", "ring", "cross"]
    for run_dir, row, row_csv in zip((imas_run, suponly_run), table, table_csv):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        best, last = best_of(run_dir), records(run_dir)[-1]
        assert row["run"] == row_csv["run"] == str(run_dir)
        assert row["method"] == row_csv["method"] == config["train"]["method"]
        assert row["config"] == str(run_dir / "config.yaml")  # no result.json: the run's own copy
        assert row["model"] == best["model"]
        assert row["best mIoU"] == f"{100 * best['miou']:.2f}"
        assert float(row_csv["best mIoU"]) == 100 * best["miou"]
        assert row["best epoch"] == row_csv["best epoch"] == str(best["epoch"])
        assert row["final mIoU"] == f"{100 * last['miou']:.2f}"
        assert float(row_csv["final mIoU"]) == 100 * last["miou"]
        assert row["seed"] == row_csv["seed"] == str(config["train"]["seed"])  # runs of other seeds or
        assert row["precision"] == row_csv["precision"] == config["train"]["precision"]  # precisions apart
        for name in classes:
            assert row[name] == f"{100 * best['iou'][name]:.2f}"
            assert float(row_csv[name]) == 100 * best["iou"][name]
        run = read_run(run_dir, per_image=False)  # the run's own record, or train.log before it existed
        assert row["wall time source"] == row_csv["wall_s_source"] == run.wall_source
        assert run.wall_source in ("metrics.jsonl", "train_scalars.jsonl", "train.log")
        assert float(row_csv["wall_s"]) == run.wall_s
    assert [row["method"] for row in table] == ["imas", "supervised"]
    assert [row["model"] for row in table] == ["teacher", "student"]


def test_wall_time_is_the_runs_own_record(imas_run, tmp_path) -> None:
    run_dir = text_copy(imas_run, tmp_path / "run")
    new_form(run_dir)  # wall_s 10 s an iteration, 5 s more for each evaluation
    (run_dir / "result.json").write_text(json.dumps({"config": "exps/toy/imas.yaml", "wall_s": 1234.5}))
    row = compare.read_row(run_dir)
    assert (row.wall_s, row.wall_source, row.config) == (85.0, "metrics.jsonl", "exps/toy/imas.yaml")
    assert "| 0:01:25 | metrics.jsonl |" in compare.markdown([row], list(row.iou))


def test_wall_time_of_a_run_written_before_its_own_record(imas_run, tmp_path) -> None:
    """result.json's wall_s, else train.log's timestamps, else n/a."""
    run_dir = legacy_form(text_copy(imas_run, tmp_path / "run"))
    (run_dir / "result.json").write_text(json.dumps({"config": "exps/toy/imas.yaml", "wall_s": 1234.5}))
    row = compare.read_row(run_dir)
    assert (row.wall_s, row.wall_source, row.config) == (1234.5, "result.json", "exps/toy/imas.yaml")
    (run_dir / "result.json").unlink()
    row = compare.read_row(run_dir)
    assert (row.wall_s, row.wall_source, row.config) == (
        log_span(run_dir),
        "train.log",
        str(run_dir / "config.yaml"),
    )
    (run_dir / "train.log").unlink()
    row = compare.read_row(run_dir)
    assert (row.wall_s, row.wall_source) == (None, "n/a")
    assert "| n/a | n/a |" in compare.markdown([row], list(row.iou))


def test_committed_log_folders_compare(capsys) -> None:
    runs = [REPO / f"training-imas-logs/toy/{name}/seed0" for name in ("suponly", "imas")]
    assert compare.main([str(run) for run in runs]) == 0
    table = markdown_rows(capsys.readouterr().out)
    assert [row["config"] for row in table] == ["exps/toy/suponly.yaml", "exps/toy/imas.yaml"]
    assert table[1]["best mIoU"] == "47.87" and table[1]["wall time"] == "0:06:34"
    assert [row["wall time source"] for row in table] == ["result.json", "result.json"]


def rename_class(run_dir: Path, old: str, new: str | None) -> None:
    """Rewrite metrics.jsonl as if the run's dataset named class `old` `new` (None: had no such class)."""
    lines = []
    for record in records(run_dir):
        iou = {}
        for name, value in record["iou"].items():
            if name != old:
                iou[name] = value
            elif new is not None:
                iou[new] = value
        lines.append(json.dumps(record | {"iou": iou}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "new, expected",
    [("car", "class 1 is 'disk' in one and 'car' in the other"), (None, "6 classes against 5")],
)
def test_runs_of_other_class_lists_are_refused(
    new, expected, imas_run, suponly_run, tmp_path, capsys
) -> None:
    other = text_copy(suponly_run, tmp_path / "other")
    rename_class(other, "disk", new)
    assert compare.main([str(imas_run), str(other)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "different class lists" in err and expected in err


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist"),
        ("empty", "is not a run directory"),
        ("no_metrics", "has no evaluation in metrics.jsonl yet"),
        ("bad_config", "cannot be read as a config"),
    ],
)
def test_bad_folders_are_one_sentence(case, expected, imas_run, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    if case != "missing":
        run_dir.mkdir()
    if case == "no_metrics":
        shutil.copy(imas_run / "config.yaml", run_dir)
    if case == "bad_config":
        (run_dir / "config.yaml").write_text("train: [")
    assert compare.main([str(imas_run), str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_an_unwritable_csv_is_one_sentence(imas_run, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert compare.main([str(imas_run), "--csv", str(blocker / "table.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --csv {blocker / 'table.csv'} cannot be written") and err.count("\n") == 1
