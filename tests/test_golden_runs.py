"""Golden values of whole short runs, one per method, so that reshaping the loop changes nothing it computes.

Each run trains two epochs of the `toy` fixture's short splits (one thread, fp32, a panel every iteration,
the student and the teacher/second network evaluated each epoch) and records what it produced: every model's
weights (a digest per tensor of latest.pth), every evaluation's numbers in metrics.jsonl, the console's
training and evaluation lines without their times, the per-image history and the TensorBoard tags. The values
in tests/golden/runs.json were written by this file (`python tests/test_golden_runs.py`, only when a change
is meant to change them), and are compared exactly on the CPU that wrote them (conftest.cpu_identity);
elsewhere (oneDNN picks other kernels) only what does not depend on rounding is compared.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FEW_STEP_SECTIONS, cpu_identity, make_toy_dataset, small_config

from imas import train as train_cli
from imas.methods import METHODS

GOLDEN = Path(__file__).with_name("golden") / "runs.json"
SETTINGS = {"image_every": 1, "log_every": 3}
# What changes from one run to the next: times, rates, paths.
TIMES = re.compile(r"\d+\.\d+ it/s eta \S+|in \d+:\d\d:\d\d|eta \S+|nan it/s")


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def console_lines(log: str) -> list[str]:
    """The training and evaluation lines of train.log, without the timestamp and times."""
    lines = []
    for line in log.splitlines():
        body = line.split(" ", 3)[-1] if re.match(r"\d{4}-\d\d-\d\d ", line) else None
        if body is not None and re.match(r"epoch \d+", body):
            lines.append(TIMES.sub("<time>", body))
    return lines


def tensorboard_tags(run_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    return sorted(tags["scalars"] + tags["images"] + tags["histograms"])


def run(tmp_path: Path, toy: Path, method: str) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sections = FEW_STEP_SECTIONS.get(method, {})
    config = small_config(tmp_path, toy, train={"method": method} | SETTINGS, **sections)
    run_dir = tmp_path / "run"
    try:
        assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    ckpt = torch.load(run_dir / "latest.pth", weights_only=True)
    keys = sorted({n.key for n in METHODS[method].networks if not n.members})  # an ensemble: its members
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    history = run_dir / "hardness.csv"
    return {
        "weights": {f"{k}/{name}": digest(t) for k in keys for name, t in sorted(ckpt[k].items())},
        "metrics": [{k: v for k, v in r.items() if k not in ("time", "wall_s")} for r in metrics],
        "console": console_lines((run_dir / "train.log").read_text()),
        "hardness.csv": history.read_text() if history.is_file() else None,
        "tensorboard": tensorboard_tags(run_dir),
    }


def rounding_free(values: dict[str, Any]) -> dict[str, Any]:
    """What another ISA must reproduce too: the shape of the outputs, not their digits."""
    return {
        "weights": sorted(values["weights"]),
        "metrics": [sorted(r) for r in values["metrics"]],
        "console": [re.sub(r"-?\d+\.\d+(e-?\d+)?", "<n>", line) for line in values["console"]],
        "tensorboard": values["tensorboard"],
    }


def write(tmp: Path) -> None:
    toy = make_toy_dataset(tmp / "toy", seed=0)
    for name, count in (("labeled", 8), ("unlabeled", 16), ("val", 6)):
        ids = (toy / "splits" / f"{name}.txt").read_text().split()[:count]
        (toy / "splits" / f"small_{name}.txt").write_text("\n".join(ids) + "\n")
    runs = {}
    for method in METHODS:
        (tmp / method).mkdir()
        runs[method] = run(tmp / method, toy, method)
    golden = {"cpu": cpu_identity(), "torch": torch.__version__}
    GOLDEN.write_text(json.dumps(golden | {"runs": runs}, indent=1) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_run_matches_its_golden_values(tmp_path, toy, method):
    golden = json.loads(GOLDEN.read_text())
    expected = golden["runs"][method]
    actual = run(tmp_path, toy, method)
    if golden.get("cpu") == cpu_identity():
        for key in expected:
            assert actual[key] == expected[key], key
    else:
        assert rounding_free(actual) == rounding_free(expected)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder))
    print(f"wrote {GOLDEN}")
