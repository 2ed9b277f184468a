"""A run directory's records in either form the tools read (docs/run-directory.md), made from a copy of a
real run: the current form (train_scalars.jsonl, time and wall_s in metrics.jsonl) and the form runs were
written in before it (train.log only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def text_copy(run_dir: Path, target: Path, keep_checkpoints: bool = False) -> Path:
    """The run folder without its TensorBoard events, reports (and checkpoints, unless asked)."""
    ignored = ["events.out.tfevents.*", "*.html"] + ([] if keep_checkpoints else ["*.pth"])
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(*ignored))
    return target


def legacy_form(run_dir: Path) -> Path:
    """Rewrite a run folder's records as a run written before train_scalars.jsonl existed wrote them: no
    train_scalars.jsonl, no time or wall_s in metrics.jsonl (train.log, as the loop wrote it, stays)."""
    (run_dir / "train_scalars.jsonl").unlink(missing_ok=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stripped = [{k: v for k, v in r.items() if k not in ("time", "wall_s")} for r in records]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped))
    return run_dir


def new_form(run_dir: Path, iters_per_epoch: int = 4, log_every: int = 2) -> dict[str, list]:
    """Rewrite a run folder's training scalars as train_scalars.jsonl with known values (loss 1 / iteration,
    easiness iteration / 100, ...; wall_s 10 s an iteration), add time and wall_s to metrics.jsonl, and drop
    train.log, so that nothing can come from it. Returns the values written, by scalar name."""
    (run_dir / "train.log").unlink(missing_ok=True)
    last = max(json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    written: dict[str, list] = {}
    lines = []
    for iteration in range(log_every, last + 1, log_every):
        scalars = {
            "loss": 1 / iteration,
            "loss_x": 0.5 / iteration,
            "loss_u": 0.25 / iteration,
            "easiness": iteration / 100,
            "confident": iteration / 50,
            "cutmix_rate": 0.5,
        }
        for name, value in scalars.items():
            written.setdefault(name, []).append((iteration, value))
        epoch = (iteration - 1) // iters_per_epoch + 1
        line = {"epoch": epoch, "iteration": iteration, "time": 1.8e9 + 10 * iteration}
        lines.append(line | {"wall_s": 10.0 * iteration, "lr": 0.01, "scalars": scalars})
    (run_dir / "train_scalars.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [
        r | {"time": 1.8e9 + 10 * r["iteration"] + 5, "wall_s": 10.0 * r["iteration"] + 5} for r in records
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in timed))
    return written
