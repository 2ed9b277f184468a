"""train.compile: torch.compile (inductor, on the CPU here) gives the eager run's losses, its checkpoints keep
the eager key names, and compiled and eager runs resume each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import small_config, stop_after_save
from test_train import method_config

from imas import train as train_cli
from imas.methods import METHODS

# Inductor's fused kernels reorder float sums. On the first steps that is round-off (the first logged window,
# iterations 1-2, printed to 4 significant digits, is the same); afterwards the tiny randomly initialised
# network (BN over 4 x 4 maps at layer3) amplifies fp32 round-off from step to step: one step's gradients
# of eager and compiled differ by 1 % in fp32 but by 4e-14 in float64 (measured with this model), so later
# windows are compared loosely, as two fp32 runs on different hardware would be.
FIRST_RTOL, LATER_RTOL = 1e-3, 0.1
LOG_LINE = re.compile(r" it (\d+)/\d+ .* loss_x (\S+) loss_u (\S+)")


def logged_losses(run_dir: Path) -> dict[int, tuple[float, float]]:
    """iteration -> (loss_x, loss_u) window means of train.log (the last line of an iteration wins)."""
    losses = {}
    for line in (run_dir / "train.log").read_text().splitlines():
        match = LOG_LINE.search(line)
        if match:
            losses[int(match.group(1))] = (float(match.group(2)), float(match.group(3)))
    return losses


def run(config: Path, run_dir: Path, *opts: str) -> int:
    args = ["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]
    return train_cli.main(args + (["--opt", *opts] if opts else []))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toy) -> dict[str, Path]:
    """iMAS (CutMix fired at random per group of 2, so the student's batch changes from step to step) for
    2 epochs eagerly, and the same run compiled for epoch 1 and resumed eagerly for epoch 2."""
    tmp = tmp_path_factory.mktemp("compile")
    imas = {"threshold": 0.5, "group_size": 2, "cutmix": "fixed", "cutmix_p": 0.5}
    config = small_config(tmp, toy, train={"method": "imas", "epochs": 2}, imas=imas)
    eager, crossed = tmp / "eager", tmp / "crossed"
    assert run(config, eager) == 0
    with pytest.MonkeyPatch.context() as patch:  # stopped as a killed job would be, after epoch 1's save
        stop_after_save(patch, lambda path, state: path.name == "latest.pth" and state.epoch == 1)
        assert run(config, crossed, "train.compile=true") == 130
    assert run(config, crossed) == 0
    return {"eager": eager, "crossed": crossed}


@pytest.mark.slow
@pytest.mark.slow
def test_compiled_steps_give_the_eager_losses(runs):
    eager, crossed = logged_losses(runs["eager"]), logged_losses(runs["crossed"])
    assert eager.keys() == crossed.keys() and len(eager) >= 4
    first = min(eager)
    assert crossed[first] == pytest.approx(eager[first], rel=FIRST_RTOL, abs=1e-6)
    for iteration, losses in eager.items():
        assert crossed[iteration] == pytest.approx(losses, rel=LATER_RTOL, abs=1e-3), iteration
    log = (runs["crossed"] / "train.log").read_text()
    graphs = [int(n) for n in re.findall(r"torch\.compile: (\d+) graphs compiled", log)]
    # The student's train-mode forward: a first graph, and at most one recompilation with a symbolic batch
    # size when CutMix changes the batch, not one per size.
    assert graphs and 1 <= graphs[-1] <= 2


@pytest.mark.slow
def test_checkpoints_cross_between_compiled_and_eager_runs(runs):
    eager = torch.load(runs["eager"] / "latest.pth", weights_only=True)
    crossed = torch.load(runs["crossed"] / "latest.pth", weights_only=True)
    for name in ("model", "teacher"):
        assert eager[name].keys() == crossed[name].keys()
        assert not any("_orig_mod" in key for key in crossed[name])
        for key, tensor in eager[name].items():
            assert crossed[name][key].shape == tensor.shape and crossed[name][key].dtype == tensor.dtype
    # The eager resume of the compiled run's checkpoint went on from where it stopped, without a refusal.
    assert "resumed from" in (runs["crossed"] / "train.log").read_text()


REAL_COMPILE = torch.compile


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,opts",
    [
        ("supervised", []),
        ("mean_teacher", []),
        ("fixmatch", ["train.precision=bf16", "train.channels_last=true"]),
        ("unimatch", []),
        ("cps", []),
    ],
)
def test_every_method_trains_compiled(tmp_path, toy, monkeypatch, method, opts):
    """dynamo captures every method's training forwards (FixMatch's two calls, UniMatch's fp_dropout keyword,
    CPS's two networks), also under bf16 autocast and channels_last, without a graph break. The eager backend
    keeps this short; inductor's kernels are tested on iMAS above."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", lambda model: REAL_COMPILE(model, backend="eager"))
    config = method_config(tmp_path, toy, method, epochs=1)
    assert run(config, tmp_path / "run", "train.compile=true", *opts) == 0
    graphs = [
        int(n)
        for n in re.findall(
            r"torch\.compile: (\d+) graphs compiled", (tmp_path / "run" / "train.log").read_text()
        )
    ]
    assert graphs and 1 <= graphs[-1] <= 2 * len(METHODS[method].trained_keys())
    assert sum(counters["graph_break"].values()) == 0
