"""Everything a GPU must show about this code, as one command that ends within minutes and writes as it goes.

    python -m tools.gpu_check --out benchmarks/gpu_h100.json       # one CUDA GPU, at most about 7 minutes
    python -m tools.gpu_check --out benchmarks/gpu_h100.json --resume   # the rows the first call left
    python -m tools.gpu_check --out benchmarks/gpu_h100.json --force    # replace an earlier JSON
    python -m tools.gpu_check --dry-run --out /tmp/gpu_check.json  # the same on the CPU with tiny shapes

Every check runs in this one command under a deadline, so a few minutes on a GPU measure everything.
--out is tried before the first row (a folder that is a file, a read-only folder, a path that is a folder:
refused in one sentence), and an existing --out is refused unless --resume continues it or --force replaces
it, so a finished measurement is never overwritten by mistake. The rows run in order of importance under a
global deadline (--deadline, 400 s) and each under its own time budget; the JSON is rewritten atomically
after every row (a temporary file beside it, then a rename; a failed write, e.g. a full disk, keeps the
previous version, or writes nothing on the first write, and stops in one sentence), so a run that is killed
keeps what it measured, and a row that runs out of memory is recorded as "oom" and the next one starts. The
first row of a call always runs; the rows the deadline leaves are "not started", and the call ends by
printing the command that runs them: the same with --resume, which reads --out, keeps its finished rows and
appends the rest (each row once). The JSON records the options its rows were timed under ("settings":
--dry-run, --cutmix-rate, --torchrun-procs), and --resume refuses other values of them, which would mix rows
timed under two settings. Rows (the JSON's "section" of each), first those the projection needs:

  voc_step    one training step (the method's step, optimiser step, EMA update) of the VOC R101 os16 config
              at crop 513 on random inputs, SupOnly and iMAS, at the released per-GPU batch (4 + 4) and the
              single-GPU one (16 + 16), fp32 / bf16 (train.precision), channels_last off / on: the step time
              and CUDA's peak allocated and reserved memory over the timed steps
  voc_eval    whole-image evaluation of a 500 x 375 image, and the cost of an image of a new size (cuDNN
              autotunes each new shape; VOC's val images come in many sizes)
  compiled    the iMAS (and SupOnly) 16 + 16 bf16 channels_last step with torch.compile of the models'
              forward: compile seconds apart from the step, and how often dynamo compiled; a row cut by its
              budget is "over budget" and says how long the compile had run
  gpu_tests   the tests that skip without CUDA (pytest in a subprocess): passed / failed; skipped without CUDA
  shares      instance hardness (imas.hardness) and the EMA update (imas.ema) alone at the 16 + 16 shapes, as
              shares of the fastest iMAS 16 + 16 step
  cityscapes  the Cityscapes R50 os8 769 iMAS step at the released per-GPU batch (2 + 2), bf16; sliding-window
              evaluation of a 1024 x 2048 image (window 769), images per second
  vit_step    the UniMatch V2 step and the iMAS step on a DINOv2-B encoder with the DPT head (no pretrained
              file) at crop 518, the released per-GPU batch (4 + 4), bf16, with UniMatch V2's released
              optimiser (AdamW, lr 5e-6, head x 40, weight decay 0.01): eager right after the rows the
              projection needs, compiled (train.compile true: imas.compile.compile_nets of the trained
              networks, as a training run compiles them) after the torchrun row; each with its peak memory
              and, for comparison, the released UniMatch V2 runs' seconds per iteration and memory per GPU
              ("released")
  torchrun    a 1-GPU torchrun of iMAS (bf16, 4 + 4 at 513) on generated files in the VOC layout: 10
              iterations, stopped (1 epoch), resumed to 20 (2 epochs, --resume-anyway); checks that both exit
              0, that train.log says it resumed at iteration 10 and that metrics.jsonl has iterations 10, 20

and, recomputed after every row, "projection": the 80-epoch VOC R101 1/8 run's wall time from the fastest
iMAS 16 + 16 step and the evaluation time, against the 4-hour goal and the released runs' 25 hours.

CutMix in the iMAS rows. iMAS mixes a group of unlabeled images with probability = the group's mean easiness,
which comes from the student's and the teacher's predictions; under random weights they agree on almost
nothing, easiness is near 0 and CutMix almost never fires, so the step would be timed without the CutMix
images that a trained model's steps carry. The rows therefore force the share of groups that fire
(--cutmix-rate, 0.7 by default): the step is timed with the two whole numbers of fired groups around
rate x groups, and step_s is their mix weighted to that rate. 0.7 is a chosen value, not a measurement of
a VOC run (none has been run with this code); the toy's iMAS runs (training-imas-logs/toy_w32) fired at
0.36-0.39 over their 24 epochs and 0.50-0.54 in the last quarter, and a higher rate errs towards a slower
step, the safe side for a projection against a goal. --cutmix-rate drawn keeps the method's own draw. Each
iMAS row records the rate it ran at ("cutmix_rate"), how ("cutmix_how": "forced 0.7" or "as drawn") and the
rate the method's own scalar reported over the timed steps ("cutmix_rate_timed").

Warm-up and memory. Before any timed step, a row runs its warm-up steps at every student batch its timed
steps will see (labeled + weak + intensity views, plus each number of CutMix images: the two forced ones, or
every possible one as drawn), so cuDNN's autotuning and torch.compile's recompilations stay out of the timed
steps; "warmed_batches" and "timed_batches" record both sets. CUDA's peak statistics are reset after the
warm-up, so "peak_allocated_gib" and "peak_reserved_gib" cover the timed steps; on a CPU both are null and
"peak_missing" says why.

--dry-run runs every row on the CPU (ResNet-18 of width 8, crops of 33-49 pixels, batches 2 and 4, two
timed steps, torch.compile with the "eager" backend; the DINOv2-B rows on vit_toy, patch 6, at crop 48 and
2 + 2), which is what the tests run; its numbers only show that the rows work. A torchrun of one process has
no process group (imas.dist makes none at world size 1): --torchrun-procs 2 runs two, with NCCL on two GPUs
or gloo in a dry run. --only runs the rows whose name contains a given text. The step, evaluation and compile
rows use one CUDA device.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from imas import cutmix
from imas.checkpoint import load_checkpoint
from imas.cli import run_command
from imas.dist import DistInfo
from imas.errors import UserError, failure_reason
from imas.experiment import load_experiment
from imas.hardness import instance_hardness
from imas.inference import inference_options, predict
from imas.methods.imas import CutMixTrigger, TeacherStudentSettings
from imas.methods.unimatch_v2 import UniMatchV2Settings
from imas.models import build_model
from imas.normalization import normalize
from imas.precision import AUTOCAST_DTYPES, cpu_description
from imas.rundir import read_evaluations
from imas.train import build_trainer, train_step, wrap_nets
from tools import benchmark

REPO = Path(__file__).resolve().parents[1]
VOC_IMAS = REPO / "exps/pascal/blended/r101_1323/imas.yaml"
VOC_SUPONLY = REPO / "exps/pascal/blended/r101_1323/supervised.yaml"  # iMAS's model (multi-grid), no teacher
CITYSCAPES_IMAS = REPO / "exps/cityscapes/r50_372/imas_os8.yaml"

# The 80-epoch VOC R101 1/8 run (blended 1323): 10582 - 1323 unlabeled images set the epoch, 16 + 16 a step.
VOC_EPOCHS, VOC_UNLABELED, VOC_GLOBAL_BATCH, VOC_VAL = 80, 10582 - 1323, 16, 1449
VOC_STEPS = VOC_EPOCHS * (VOC_UNLABELED // VOC_GLOBAL_BATCH)  # 46,240
GOAL_HOURS = 4.0  # on one H100-class GPU
RELEASED_HOURS = 25.0  # the released run: 4 V100s, fp32, about 1.8 s per step
CITYSCAPES_VAL = 500
# The share of CutMix groups that fire in the timed iMAS steps: a chosen value, not a VOC measurement (see the
# module's docstring); above the toy's 0.50-0.54 late in training, so the step errs on the slow side.
CUTMIX_RATE = 0.7

# The DINOv2-B rows train with UniMatch V2's released optimiser (unimatch_v2.py: AdamW over the encoder at lr
# and the rest at lr x lr_multi, betas (0.9, 0.999), weight decay 0.01; configs/pascal.yaml: lr 5e-6,
# lr_multi 40). The VOC configs set multi_grid (a ResNet option a ViT refuses), hence its default back.
VIT_RECIPE = (
    "model.head=dpt",
    "model.multi_grid=false",
    "optim.kind=adamw",
    "optim.lr=5e-6",
    "optim.decoder_lr_mult=40",
    "optim.weight_decay=0.01",
    "optim.momentum=0.9",
)
# What the DINOv2-B rows compare with: the released UniMatch V2 VOC runs of DINOv2-B at crop 518, 4 + 4 images
# per GPU on 4 GPUs, fp32 (the released step runs no autocast). Seconds per iteration: the wall time between
# the logged iterations of LiheYoung/UniMatch-V2's training-logs/table01-pascal_unimatch_v2_*labels_
# dinov2_base.log (median 1.157-1.164 s in each of the five; data loading and DDP included). The logs name no
# GPU: the GPU and the memory are the authors' answers in that repository's GitHub discussions.
RELEASED_UNIMATCH_V2: dict[str, Any] = {
    "what": "UniMatch V2, DINOv2-B + DPT, VOC crop 518, 4 + 4 images per GPU x 4 GPUs, fp32, AdamW",
    "s_per_iteration": 1.16,
    "s_per_iteration_from": (
        "LiheYoung/UniMatch-V2 training-logs/table01-pascal_unimatch_v2_{92,183,366,732,1464}labels_"
        "dinov2_base.log: median 1.157-1.164 s between logged iterations, ngpus 4, batch_size 4"
    ),
    "gpu": "A100 (40 GB mostly, 80 GB sometimes)",
    "gpu_from": "the authors, github.com/LiheYoung/UniMatch-V2/issues/21 and /issues/1",
    "memory_gb_per_gpu": 20,
    "memory_from": (
        "the authors, github.com/LiheYoung/UniMatch-V2/issues/5: '20G/GPU x 4GPUs for DINOv2 base'"
    ),
}


@dataclass(frozen=True)
class Scale:
    """Shapes, counts and budgets of a run: the real ones on a GPU, tiny ones for --dry-run."""

    dry_run: bool
    device: torch.device
    voc_crop: int
    city_crop: int
    batches: tuple[int, int]  # the released per-GPU batch, the single-GPU batch
    city_batch: int
    steps: int
    warmup: int
    compile_warmup: int
    model: tuple[str, ...]  # config overrides that shrink the network
    voc_image: tuple[int, int]  # (H, W)
    city_image: tuple[int, int]
    window: int
    compile_backend: str
    torchrun_procs: int
    torchrun_image: tuple[int, int]  # (W, H) of the generated files
    deadline_s: float
    budget_s: dict[str, float] = field(default_factory=dict)
    cutmix_rate: float | None = CUTMIX_RATE  # None: as the method draws it
    vit_encoder: str = "dinov2_vitb14"
    vit_crop: int = 518  # a multiple of the encoder's patch (the config refuses others)
    vit_batch: int = 4  # UniMatch V2's released per-GPU batch

    def overrides(self, method: str, batch: int, crop: int, vit: bool = False) -> list[str]:
        """Config overrides of every row: no pretrained file, the batch, the network's size in a dry run;
        with `vit`, the ViT encoder with the DPT head and UniMatch V2's optimiser instead of the config's
        ResNet."""
        model = (f"model.encoder={self.vit_encoder}", *VIT_RECIPE) if vit else self.model
        out = ["model.pretrained=", f"train.batch_size={batch}", f"data.crop_size={crop}", *model]
        if self.dry_run and method == "imas":
            out.append(f"imas.group_size={min(self.batches)}")
        return out


# Seconds each kind of row may take on a GPU (estimates for an H100/H200: an R101 513 iMAS 16 + 16 step takes
# 0.3-0.6 s in bf16 and about twice that in fp32, cuDNN autotunes each new shape once, a torch.compile of
# R101 takes 1-2 min per graph; the DINOv2-B rows are not measured yet and share these budgets); a row that
# runs past its budget is cut and recorded as "timeout".
GPU_BUDGETS = {
    "gpu_tests": 150,
    "step": 90,
    "shares": 60,
    "eval": 60,
    "torchrun": 180,
    "compiled": 240,
}


def make_scale(
    dry_run: bool, deadline: float | None, torchrun_procs: int = 1, cutmix_rate: float | None = CUTMIX_RATE
) -> Scale:
    """The Scale of this run; a UserError when a real run finds no CUDA device."""
    if dry_run:
        return Scale(
            dry_run=True,
            device=torch.device("cpu"),
            voc_crop=33,
            city_crop=49,
            batches=(2, 4),
            city_batch=2,
            steps=2,
            warmup=1,
            compile_warmup=2,
            model=("model.encoder=resnet18", "model.backbone_width=8", "model.decoder_channels=16"),
            voc_image=(24, 32),
            city_image=(64, 128),
            window=49,
            compile_backend="eager",
            torchrun_procs=torchrun_procs,
            torchrun_image=(40, 30),
            deadline_s=deadline or 300.0,
            budget_s=dict.fromkeys(GPU_BUDGETS, 120.0),
            cutmix_rate=cutmix_rate,
            vit_encoder="vit_toy",  # patch 6, 8 x 8 tokens at crop 48 (DINOv2-B: 37 x 37 at 518)
            vit_crop=48,
            vit_batch=2,
        )
    if not torch.cuda.is_available():
        raise UserError(
            "no CUDA device is available; run this on a GPU machine, or add --dry-run to run every check on "
            "the CPU with tiny shapes"
        )
    return Scale(
        dry_run=False,
        device=torch.device("cuda", 0),
        voc_crop=513,
        city_crop=769,
        batches=(4, 16),
        city_batch=2,
        steps=8,
        warmup=3,
        compile_warmup=6,
        model=(),
        voc_image=(375, 500),
        city_image=(1024, 2048),
        window=769,
        compile_backend="inductor",
        torchrun_procs=torchrun_procs,
        torchrun_image=(500, 375),
        deadline_s=deadline or 400.0,
        budget_s=dict(GPU_BUDGETS),
        cutmix_rate=cutmix_rate,
        vit_encoder="dinov2_vitb14",
        vit_crop=518,
        vit_batch=4,
    )


@dataclass
class Context:
    """What a row function sees: the run's scale, the rows so far, the seconds it may take, and `partial`:
    what the row has learnt so far, kept in the JSON if the row is cut (a timeout, an OOM, an error)."""

    scale: Scale
    results: list[dict[str, Any]]
    limit_s: float = 0.0
    partial: dict[str, Any] = field(default_factory=dict)


class Row(NamedTuple):
    name: str
    section: str
    budget: str  # key of Scale.budget_s
    fn: Callable[[Context], dict[str, Any]]
    min_s: float = 10.0  # not started with less time than this left before the deadline


class RowTimeout(Exception):
    """A row ran past its time budget (raised by the timer inside the row)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise RowTimeout in the main thread after `seconds` (SIGALRM), so that a row that hangs or compiles
    for too long is cut and the run goes on to write what it has. Elsewhere than the main thread, no limit."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise RowTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_process(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run cmd in the repository in a process group of its own; (exit status, stdout + stderr, seconds).

    On a timeout (or a RowTimeout from the row's timer) the whole group is killed, torchrun's workers too,
    and the status is 124 as timeout(1) reports it."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = 124
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        return rc, log.read(), time.perf_counter() - start


def child_env(dry_run: bool) -> dict[str, str]:
    """The environment of the subprocesses: the checkout importable (also when the package is not
    installed, as on a bare GPU machine), one thread per process in a dry run (as the tests run)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    if dry_run:
        env["OMP_NUM_THREADS"] = "1"
    return env


def free_memory(device: torch.device) -> None:
    """Give the GPU back what the last row held (collected cycles included, an OOM's traceback above all) and
    restart the peak; on a CPU the rows' tiny tensors go by reference counting, and a collection per row
    would cost more than the row."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def reset_peak(device: torch.device) -> None:
    """Restart CUDA's peak statistics, so that the peak read after the timed steps is theirs, not the
    warm-up's (whose autotuning workspaces and compile-time buffers a training run pays once)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> dict[str, Any]:
    """Peak memory since the last reset_peak: CUDA's max allocated (the tensors) and max reserved (what the
    caching allocator held, the figure that decides an OOM). A CPU has neither: null, with the reason, and the
    process's peak resident size so far (which cannot be reset, so it only grows from row to row)."""
    if device.type == "cuda":
        return {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 2),
        }
    return {
        "peak_allocated_gib": None,
        "peak_reserved_gib": None,
        "peak_missing": "no CUDA device: CUDA's allocator statistics do not exist on a CPU",
        "process_rss_gib": round(benchmark.rss_mib() / 1024, 2),
    }


def dynamo_counts() -> tuple[int, int]:
    """(frames dynamo compiled, graphs it made) so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["frames"].get("total", 0)), int(counters["stats"].get("unique_graphs", 0))


# ----------------------------------------------------------------------------------------------- the rows


def gpu_tests(ctx: Context) -> dict[str, Any]:
    """pytest on the tests that skip without CUDA (found by their skip reason), in a subprocess."""
    ids = cuda_test_ids(REPO / "tests")
    if not ids:
        return {"status": "failed", "notes": "no test marked 'needs a CUDA device' was found"}
    if not torch.cuda.is_available():
        # They would only skip themselves; pytest's start-up is not worth it (a dry run is a CI test).
        return {"status": "skipped", "tests": ids, "notes": f"no CUDA: {len(ids)} tests not run"}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *ids]
    rc, output, seconds = run_process(cmd, ctx.limit_s - 5, child_env(ctx.scale.dry_run))
    counts = pytest_counts(output)
    passed, failed = counts.get("passed", 0), counts.get("failed", 0) + counts.get("error", 0)
    out: dict[str, Any] = {"tests": ids, "rc": rc, "counts": counts, "seconds": round(seconds, 1)}
    if rc == 0 and passed == len(ids):
        return out | {"status": "ok", "notes": f"{passed} passed"}
    return out | {
        "status": "failed",
        "notes": f"rc {rc}: {passed} passed, {failed} failed",
        "output": output[-3000:],
    }


def pytest_counts(output: str) -> dict[str, int]:
    """The counts of pytest's summary line (its last): {"passed": 2, "skipped": 1, "error": 1, ...}."""
    last = output.strip().splitlines()[-1] if output.strip() else ""
    found = re.findall(r"(\d+) (passed|failed|skipped|deselected|xfailed|xpassed|errors?)\b", last)
    return {word.rstrip("s") if word.startswith("error") else word: int(n) for n, word in found}


def cuda_test_ids(tests: Path) -> list[str]:
    """pytest ids of the tests under a skip marker whose reason is 'needs a CUDA device': the function
    below the marker (its decorators may span lines), or the whole file for a module-level `pytestmark`."""
    ids = []
    for path in sorted(tests.glob("test_*.py")):
        name = path.relative_to(tests.parent).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "needs a CUDA device" not in line:
                continue
            if line.startswith("pytestmark"):
                ids.append(name)
                continue
            for following in lines[i + 1 : i + 10]:
                found = re.match(r"\s*(?:async )?def (test_\w+)", following)
                if found:
                    ids.append(f"{name}::{found.group(1)}")
                if found or not following.strip():
                    break
    return ids


@dataclass(frozen=True)
class StepShapes:
    """The student batches a step row's steps can see, and how its timed steps pick among them.

    The student's train forward takes labeled + weak (weak_in_batch) + intensity views, plus the CutMix images
    of the groups that fired: `base` + group_size x fired groups. Forced to `rate`, the timed steps run with
    the two whole numbers of fired groups around rate x groups, weighted so that their mix fires at `rate`;
    as drawn (rate None), the method decides and any number from 0 to `groups` can come. Without groups
    (UniMatch V2 pastes its CutMix boxes into the strong views), CutMix adds no image: always `base`."""

    batch: int
    base: int
    group_size: int = 1
    groups: int = 0  # CutMix groups per batch; 0: the method has no CutMix
    rate: float | None = None

    @property
    def how(self) -> str:
        return "as drawn" if self.rate is None else f"forced {self.rate:g}"

    def mix(self) -> list[tuple[int | None, float]]:
        """(fired groups, weight) of each timed phase; None: the method's own draw."""
        if self.groups == 0 or self.rate is None:
            return [(None, 1.0)]
        exact = self.rate * self.groups
        low = min(math.floor(exact + 1e-9), self.groups)
        high_weight = exact - low
        if high_weight < 1e-9:
            return [(low, 1.0)]
        return [(low, 1.0 - high_weight), (low + 1, high_weight)]

    def warm_counts(self) -> list[int | None]:
        """The fired groups to warm up: those the timed phases force, or every possible one as drawn."""
        if self.groups and self.rate is None:
            return list(range(self.groups + 1))
        return [count for count, _ in self.mix()]

    def student_batch(self, rate: float | None) -> int:
        """The student's train-forward batch of a step whose CutMix fired for `rate` of its images."""
        return self.base + (round(rate * self.batch) if rate is not None and self.groups else 0)


def step_shapes(trainer: Any, batch: int, rate: float | None) -> StepShapes:
    """The StepShapes of the trainer's method at `batch`: iMAS's CutMix groups, or one shape (SupOnly;
    UniMatch V2: the labeled images and the two strong views)."""
    settings = trainer.method.settings
    if isinstance(settings, UniMatchV2Settings):
        return StepShapes(batch, 3 * batch)
    if not isinstance(settings, TeacherStudentSettings):
        return StepShapes(batch, batch)
    base = batch * (3 if settings.weak_in_batch else 2)
    if settings.cutmix is CutMixTrigger.off:
        return StepShapes(batch, base)
    return StepShapes(batch, base, settings.group_size, batch // settings.group_size, rate)


class CutMixForcing:
    """How many CutMix groups fire in the next step (None: as the method draws them)."""

    def __init__(self) -> None:
        self.groups: int | None = None


@contextmanager
def forced_trigger(forcing: CutMixForcing) -> Iterator[None]:
    """imas.cutmix.trigger replaced for one row by one that fires the first `forcing.groups` groups, so the
    benchmark chooses what a trained model's easiness would (the package's files stay as they are). The
    trigger decides nothing else: pairing, boxes and losses run as in training."""
    original = cutmix.trigger

    def trigger(
        easiness: torch.Tensor,
        group_size: int,
        generator: torch.Generator | None = None,
        fixed_p: float | None = None,
    ) -> torch.Tensor:
        if forcing.groups is None:
            return original(easiness, group_size, generator, fixed_p)
        return torch.arange(easiness.shape[0] // group_size, device=easiness.device) < forcing.groups

    cutmix.trigger = trigger
    try:
        yield
    finally:
        cutmix.trigger = original


def training_step(
    trainer: Any, labeled: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor]
) -> Callable[[], torch.Tensor | None]:
    """One iteration as imas.train runs it (benchmark.method_step's), returning the method's own CutMix rate
    scalar (a tensor, read only after the timed steps so that it adds no host sync to them)."""
    batch_u = unlabeled if trainer.method.uses_unlabeled else None
    iteration = [0]

    def step() -> torch.Tensor | None:
        out = train_step(trainer, labeled, batch_u, benchmark.past_epoch_0(iteration[0]))
        iteration[0] += 1
        return out.scalars.get("cutmix_rate")

    return step


def split_steps(weights: list[float], steps: int) -> list[int]:
    """`steps` timed steps shared by the phases in proportion to their weights, at least one each."""
    counts = [max(1, round(steps * w)) for w in weights[:-1]]
    return [*counts, max(1, steps - sum(counts))]


def as_rate(value: torch.Tensor | None) -> float | None:
    return None if value is None else round(float(value), 6)


def measure_step(
    step: Callable[[], torch.Tensor | None],
    shapes: StepShapes,
    warmup: int,
    ctx: Context,
    on_call: Callable[[float], None],
) -> dict[str, Any]:
    """Warm up every shape the timed steps will see, reset the peak, then time each phase of shapes.mix()."""
    device, forcing = ctx.scale.device, CutMixForcing()
    warmed: set[int] = set()
    ctx.partial |= {"phase": "warm-up", "warmed_batches": []}
    with forced_trigger(forcing):
        started = time.perf_counter()
        for count in shapes.warm_counts():
            forcing.groups = count
            for _ in range(warmup):
                call_start = time.perf_counter()
                rate = as_rate(step())  # a host sync: the warm-up is not timed
                on_call(time.perf_counter() - call_start)
                warmed.add(shapes.student_batch(rate))
                ctx.partial["warmed_batches"] = sorted(warmed)
        benchmark.synchronize(device)
        warm_s = time.perf_counter() - started
        ctx.partial["phase"] = "timed"
        reset_peak(device)
        phases = []
        for (count, weight), steps in zip(
            shapes.mix(), split_steps([w for _, w in shapes.mix()], ctx.scale.steps), strict=True
        ):
            forcing.groups = count
            times, rates = [], []
            for _ in range(steps):
                start = time.perf_counter()
                rates.append(step())
                benchmark.synchronize(device)
                times.append(time.perf_counter() - start)
                on_call(times[-1])
            phases.append(phase_record(count, weight, times, [as_rate(r) for r in rates], shapes))
    return timing(phases, warm_s, shapes, sorted(warmed), sum(1 for _ in shapes.warm_counts()) * warmup)


def phase_record(
    count: int | None, weight: float, times: list[float], rates: list[float | None], shapes: StepShapes
) -> dict[str, Any]:
    return {
        "cutmix_groups": count,
        "weight": round(weight, 6),
        "steps": len(times),
        "step_s": statistics.median(times),
        "times_s": [round(t, 4) for t in times],
        "cutmix_rates": rates,
        "student_batches": [shapes.student_batch(r) for r in rates],
    }


def timing(
    phases: list[dict[str, Any]], warm_s: float, shapes: StepShapes, warmed: list[int], warm_steps: int
) -> dict[str, Any]:
    """The row's step time: the phases' medians weighted to the CutMix rate (one phase: its median)."""
    times = [t for phase in phases for t in phase["times_s"]]
    step_s = sum(phase["weight"] * phase["step_s"] for phase in phases)
    for phase in phases:
        phase["step_s"] = round(phase["step_s"], 4)
    out: dict[str, Any] = {
        "step_s": round(step_s, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "steps": len(times),
        "warmup_s": round(warm_s, 2),
        "warmup_steps": warm_steps,
        "warmed_batches": warmed,
        "timed_batches": sorted({b for phase in phases for b in phase["student_batches"]}),
        "phases": phases,
    }
    if shapes.groups:
        rates = [
            phase["weight"] * statistics.mean(r for r in phase["cutmix_rates"] if r is not None)
            for phase in phases
        ]
        timed_rate = round(sum(rates), 4)
        out |= {
            "cutmix_rate": shapes.rate if shapes.rate is not None else timed_rate,
            "cutmix_how": shapes.how,
            "cutmix_rate_timed": timed_rate,
            "cutmix_groups_per_batch": shapes.groups,
        }
    return out


def step_overrides(
    scale: Scale,
    method: str,
    batch: int,
    crop: int,
    precision: str,
    channels_last: bool,
    compiled: bool,
    vit: bool = False,
) -> list[str]:
    """The config overrides of a step row: Scale.overrides, the method (the UniMatch V2 rows take a config of
    another method), precision and memory format; a ViT row also says train.compile, which it compiles by."""
    out = scale.overrides(method, batch, crop, vit)
    out += [
        f"train.method={method}",
        f"train.precision={precision}",
        f"train.channels_last={str(channels_last).lower()}",
    ]
    if vit:
        out.append(f"train.compile={str(compiled).lower()}")
    return out


@contextmanager
def compile_backend(backend: str) -> Iterator[None]:
    """torch.compile with `backend` for the calls inside: imas.compile.compile_nets takes torch's default
    (inductor), and a dry run compiles every row with its "eager" backend (Scale.compile_backend), which
    traces with dynamo as a GPU run does without inductor's code generation. The backend is bound when
    torch.compile is called, so the patch need only cover compile_nets."""
    original = torch.compile
    if backend != "inductor":
        torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


def step_row(
    config: Path,
    method: str,
    batch: int,
    precision: str,
    channels_last: bool,
    compiled: bool,
    crop_key: str,
    vit: bool = False,
) -> Callable[[Context], dict[str, Any]]:
    """A row timing one training step of `config` (see benchmark.method_step) at the given settings. With
    `vit`: on the scale's ViT encoder with the DPT head (Scale.overrides), compiled as train.compile compiles
    a training run (imas.train.wrap_nets: the trained networks, the EMA teacher eager; the ResNet rows
    compile every model of the method in place), and the released UniMatch V2 runs in the record for
    comparison."""

    def row(ctx: Context) -> dict[str, Any]:
        scale, device = ctx.scale, ctx.scale.device
        crop = getattr(scale, crop_key)
        overrides = step_overrides(scale, method, batch, crop, precision, channels_last, compiled, vit)
        cfg = load_experiment(config, overrides)
        out: dict[str, Any] = {
            "config": config.relative_to(REPO).as_posix(),
            "method": method,
            "encoder": cfg.model.encoder,
            "head": cfg.model.head.value,
            "optimizer": cfg.optim.kind.value,
            "batch": batch,
            "crop": crop,
            "precision": precision,
            "channels_last": channels_last,
            "compiled": compiled,
        }
        if vit:
            out["overrides"] = overrides
        labeled, unlabeled = benchmark.random_batches(
            batch, crop, cfg.data.num_classes, device, channels_last
        )
        _, trainer = benchmark.method_step(cfg, labeled, unlabeled, device)
        shapes = step_shapes(trainer, batch, scale.cutmix_rate)
        warmup = scale.compile_warmup if compiled else scale.warmup
        if compiled:
            from torch import _dynamo

            if vit:
                with compile_backend(scale.compile_backend):
                    wrap_nets(trainer, DistInfo(0, 1, 0, device), cfg.train.compile)
                names = list(trainer.nets)
                before = dynamo_counts()  # compile_nets started dynamo afresh (its counters too)
            else:
                _dynamo.reset()
                before = dynamo_counts()
                # the student, and the EMA teacher where there is one
                names = list(trainer.method.models)
                for module in trainer.method.models.values():
                    module.compile(backend=scale.compile_backend)
        ctx.partial |= {"call_s": []}

        def logged(seconds: float) -> None:
            """Each call's seconds (and dynamo's compiles so far), kept for a row cut in its warm-up."""
            ctx.partial["call_s"].append(round(seconds, 3))
            if compiled:
                ctx.partial["dynamo_compiles"] = dynamo_counts()[0] - before[0]

        free_memory(device)
        out |= measure_step(training_step(trainer, labeled, unlabeled), shapes, warmup, ctx, logged)
        out |= peak(device)
        out["images_per_s"] = round(batch * (2 if trainer.method.uses_unlabeled else 1) / out["step_s"], 1)
        if compiled:
            after = dynamo_counts()
            compiles = after[0] - before[0]
            out |= {
                "compile_backend": scale.compile_backend,
                "compiled_modules": names,
                # What the warm-up took beyond its steps: compilation, mostly.
                "compile_s": round(max(0.0, out["warmup_s"] - out["warmup_steps"] * out["step_s"]), 1),
                "dynamo_compiles": compiles,
                "recompiles": compiles - len(names),
                "dynamo_graphs": after[1] - before[1],
            }
            _dynamo.reset()
        out["notes"] = f"{out['step_s']:.3f} s/step, {out['images_per_s']} img/s"
        if "cutmix_how" in out:
            out["notes"] += f", CutMix {out['cutmix_how']} ({out['cutmix_rate_timed']:.2f} timed)"
        if compiled:
            out["notes"] += f", compile {out['compile_s']} s, {out['recompiles']} recompiles"
        if vit:
            released = RELEASED_UNIMATCH_V2["s_per_iteration"]
            out["released"] = RELEASED_UNIMATCH_V2
            out["step_s_over_released"] = round(out["step_s"] / released, 3)
            out["notes"] += (
                f"; released UniMatch V2 {released} s/it, {RELEASED_UNIMATCH_V2['memory_gb_per_gpu']} GB "
                "per GPU (4 A100s, fp32)"
            )
        return out

    return row


def best_imas_step(results: list[dict[str, Any]], batch: int) -> dict[str, Any] | None:
    """The fastest finished VOC iMAS row at `batch` (eager or compiled)."""
    rows = [
        r
        for r in results
        if r.get("status") == "ok"
        and r.get("section") in ("voc_step", "compiled")
        and r.get("method") == "imas"
        and r.get("batch") == batch
    ]
    return min(rows, key=lambda r: r["step_s"]) if rows else None


def hardness_times(batch: int, k: int, crop: int, tau: float, scale: Scale) -> list[float]:
    """Seconds of instance_hardness on the float32 logits the step hands it: teacher and student on the
    weak view, [B, K, S, S] each."""
    device = scale.device
    gen = torch.Generator(device=device).manual_seed(0)
    teacher = 3 * torch.randn(batch, k, crop, crop, device=device, generator=gen)
    student = teacher + 2 * torch.randn(teacher.shape, device=device, generator=gen)
    return benchmark.step_times(lambda: instance_hardness(student, teacher, tau), scale.steps, 2, device)[0]


def shares_row(ctx: Context) -> dict[str, Any]:
    """Hardness and EMA update alone at the 16 + 16 shapes, and their shares of the fastest iMAS step."""
    scale, device = ctx.scale, ctx.scale.device
    batch, crop = scale.batches[1], scale.voc_crop
    cfg = load_experiment(VOC_IMAS, scale.overrides("imas", batch, crop))
    hard = hardness_times(batch, cfg.data.num_classes, crop, cfg.imas.threshold, scale)
    trainer = build_trainer(cfg, DistInfo(0, 1, 0, device), pretrained=False)
    model, ema = trainer.trained["model"], trainer.method.emas["teacher"]
    ema_times, _ = benchmark.step_times(lambda: ema.update(model, 1000, epoch=1), scale.steps, 2, device)
    out: dict[str, Any] = {
        "batch": batch,
        "crop": crop,
        "hardness_s": round(statistics.median(hard), 5),
        "ema_update_s": round(statistics.median(ema_times), 5),
        "ema_tensors": sum(1 for _ in model.state_dict()),
    }
    reference = best_imas_step(ctx.results, batch)
    if reference is None:
        return out | {"notes": "no iMAS step row finished to take shares of"}
    step = reference["step_s"]
    out |= {
        "reference_row": reference["name"],
        "reference_step_s": step,
        "hardness_share": round(out["hardness_s"] / step, 4),
        "ema_share": round(out["ema_update_s"] / step, 4),
    }
    out["notes"] = (
        f"hardness {1000 * out['hardness_s']:.1f} ms ({100 * out['hardness_share']:.1f} %), "
        f"EMA {1000 * out['ema_update_s']:.1f} ms ({100 * out['ema_share']:.1f} %) of {reference['name']}"
    )
    return out


def eval_row(
    config: Path, image_key: str, val_images: int, precision: str
) -> Callable[[Context], dict[str, Any]]:
    """A row timing evaluation as imas.train runs it each epoch (the config's eval mode, window, stride,
    under autocast) on a random image of the dataset's size, and an image of a new size."""

    def row(ctx: Context) -> dict[str, Any]:
        scale, device = ctx.scale, ctx.scale.device
        overrides = scale.overrides("imas", scale.batches[0], scale.voc_crop)  # both are iMAS configs
        overrides += [f"train.precision={precision}", f"eval.window={scale.window}"]
        cfg = load_experiment(config, overrides)
        h, w = getattr(scale, image_key)
        model = build_model(cfg, DistInfo(0, 1, 0, device), pretrained=False).eval()
        options = inference_options(cfg)
        dtype = AUTOCAST_DTYPES[cfg.train.precision]

        def evaluate(height: int, width: int) -> Callable[[], None]:
            image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, device=device)

            def run() -> None:
                autocast = torch.autocast(
                    device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                )
                with torch.inference_mode(), autocast:
                    predict(model, normalize(image), **options).argmax(1)

            return run

        free_memory(device)
        _, warm = benchmark.step_times(evaluate(h, w), 0, scale.warmup, device)
        reset_peak(device)
        times, _ = benchmark.step_times(evaluate(h, w), scale.steps, 0, device)
        memory = peak(device)  # of the timed evaluations, before the new sizes' autotuning
        # Images of sizes not seen before: each pays cuDNN's autotuning (imas.train turns it on) once.
        new = [benchmark.step_times(evaluate(h - 2 * i, w - 4 * i), 1, 0, device)[0][0] for i in range(1, 4)]
        image_s = statistics.median(times)
        evaluated = 2  # imas.train evaluates the teacher and the student every epoch (IMAS.evaluated)
        out: dict[str, Any] = {
            "config": config.relative_to(REPO).as_posix(),
            "image": [h, w],
            "mode": options["mode"],
            "window": options["window"] if options["mode"] == "sliding" else None,
            "precision": precision,
            "image_s": round(image_s, 4),
            "images_per_s": round(1 / image_s, 2),
            "new_size_image_s": round(statistics.median(new), 4),
            "warmup_s": round(warm, 2),
            "val_images": val_images,
            "eval_per_epoch_s": round(evaluated * val_images * image_s, 1),
        } | memory
        out["notes"] = (
            f"{out['images_per_s']} img/s, new size {out['new_size_image_s']:.3f} s; "
            f"teacher + student on {val_images} val images {out['eval_per_epoch_s']} s per epoch"
        )
        return out

    return row


def torchrun_row(ctx: Context) -> dict[str, Any]:
    """iMAS under torchrun on generated VOC-layout files: 1 epoch of 10 iterations, then resumed to 2."""
    scale = ctx.scale
    procs, batch, iters = scale.torchrun_procs, scale.batches[0], 10
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        root = Path(folder) / "VOC"
        rng = np.random.default_rng(0)
        names = {"labeled": 8, "unlabeled": iters * batch * procs, "val": 2}
        for split, count in names.items():
            ids = [f"{split}_{i:04d}" for i in range(count)]
            benchmark.write_voc(root, ids, scale.torchrun_image, rng)
            (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
        run_dir = Path(folder) / "run"
        opts = [f"data.root={root}", *(f"data.{s}_split={root / f'{s}.txt'}" for s in names)]
        opts += scale.overrides("imas", batch, scale.voc_crop) + ["train.log_every=5", "train.image_every=0"]
        if scale.dry_run:
            opts += ["train.precision=fp32", "data.num_workers=0", "data.long_side=[24, 48]"]
        else:
            opts += ["train.precision=bf16", "data.num_workers=2"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        cmd += ["train_semi.py", "--config", str(VOC_IMAS), "--run-dir", str(run_dir)]
        cmd += ["--device", scale.device.type]
        env = child_env(scale.dry_run)
        out: dict[str, Any] = {"processes": procs, "batch": batch, "iterations_per_epoch": iters}
        out["process_group"] = ("nccl" if scale.device.type == "cuda" else "gloo") if procs > 1 else "none"
        phases = []
        for epochs, extra in ((1, []), (2, ["--resume-anyway"])):
            left = ctx.limit_s - (time.monotonic() - started) - 5
            rc, output, seconds = run_process(
                [*cmd, *extra, "--opt", *opts, f"train.epochs={epochs}"], left, env
            )
            phases.append({"epochs": epochs, "rc": rc, "seconds": round(seconds, 1)})
            if rc != 0:
                out |= {"status": "failed", "phases": phases, "output": output[-3000:]}
                out["notes"] = f"the {'first' if epochs == 1 else 'resumed'} run exited {rc}"
                return out
        # The run's machine files: latest.pth records the resume it accepted, metrics.jsonl the evaluations.
        resumes = load_checkpoint(run_dir / "latest.pth", mmap=True).get("resumed_with_changes", [])
        iterations = [record["iteration"] for record in read_evaluations(run_dir)]
    resumed_at = resumes[0]["iteration"] if resumes else None
    ok = resumed_at == iters and iterations == [iters, 2 * iters]
    out |= {
        "phases": phases,
        "resumed": resumed_at is not None,
        "resumed_at_iteration": resumed_at,
        "metrics_iterations": iterations,
        "status": "ok" if ok else "failed",
    }
    group = f"{procs} process{'es' if procs > 1 else ''}, process group {out['process_group']}"
    out["notes"] = (
        f"{group}; resumed at iteration {out['resumed_at_iteration']}, metrics at {iterations}; "
        f"{phases[0]['seconds']} s + {phases[1]['seconds']} s"
    )
    return out


def plan(scale: Scale) -> list[Row]:
    """The rows in order of importance: the deadline cuts the last ones. First what the projection needs (the
    iMAS 16 + 16 steps that can be the fastest, the evaluation time), then the DINOv2-B steps, correctness,
    the other checks, the DINOv2-B compiled steps, then the rest."""
    small, large = scale.batches

    def voc(method: str, batch: int, precision: str, cl: bool, compiled: bool = False) -> Row:
        config = VOC_IMAS if method == "imas" else VOC_SUPONLY
        label = "iMAS" if method == "imas" else "SupOnly"
        images = f"{batch} + {batch}" if method == "imas" else f"{batch}"
        name = f"voc {label} {images} {precision}" + " channels_last" * cl + " compiled" * compiled
        fn = step_row(config, method, batch, precision, cl, compiled, "voc_crop")
        if compiled:
            return Row(name, "compiled", "compiled", fn, min_s=90.0 if not scale.dry_run else 10.0)
        return Row(name, "voc_step", "step", fn)

    second = [
        voc("imas", large, "fp32", False),
        voc("imas", small, "fp32", False),
        voc("supervised", large, "bf16", True),
        voc("supervised", small, "fp32", False),
    ]
    rest = [
        voc("imas", large, "fp32", True),
        voc("imas", small, "bf16", True),
        voc("imas", small, "bf16", False),
        voc("imas", small, "fp32", True),
        voc("supervised", large, "bf16", False),
        voc("supervised", large, "fp32", False),
        voc("supervised", large, "fp32", True),
        voc("supervised", small, "bf16", True),
        voc("supervised", small, "bf16", False),
        voc("supervised", small, "fp32", True),
    ]

    def vit(method: str, compiled: bool = False) -> Row:
        """A DINOv2-B (DPT) step at the released per-GPU batch, bf16: UniMatch V2 on the SupOnly config (which
        has no other method's section), iMAS on iMAS's; no channels_last, as released."""
        config = VOC_IMAS if method == "imas" else VOC_SUPONLY
        label = "iMAS" if method == "imas" else "UniMatch V2"
        b = scale.vit_batch
        name = f"voc DINOv2-B {label} {b} + {b} bf16" + " compiled" * compiled
        fn = step_row(config, method, b, "bf16", False, compiled, "vit_crop", vit=True)
        if compiled:
            return Row(name, "vit_step", "compiled", fn, min_s=90.0 if not scale.dry_run else 10.0)
        return Row(name, "vit_step", "step", fn)

    city_step = step_row(CITYSCAPES_IMAS, "imas", scale.city_batch, "bf16", False, False, "city_crop")
    return [
        voc("imas", large, "bf16", True),
        Row(
            "voc whole-image eval bf16", "voc_eval", "eval", eval_row(VOC_IMAS, "voc_image", VOC_VAL, "bf16")
        ),
        voc("imas", large, "bf16", False),
        voc("imas", large, "bf16", True, compiled=True),
        # The new recipe's steps next, eager; their compiles, which can take minutes, wait until the quicker
        # checks below have run.
        vit("unimatch_v2"),
        vit("imas"),
        Row("gpu tests", "gpu_tests", "gpu_tests", gpu_tests),
        *second,
        Row("hardness and EMA shares", "shares", "shares", shares_row),
        Row(f"cityscapes iMAS {scale.city_batch} + {scale.city_batch} bf16", "cityscapes", "step", city_step),
        Row(
            "cityscapes sliding eval bf16",
            "cityscapes",
            "eval",
            eval_row(CITYSCAPES_IMAS, "city_image", CITYSCAPES_VAL, "bf16"),
        ),
        Row("torchrun stop and resume", "torchrun", "torchrun", torchrun_row, min_s=30.0),
        vit("unimatch_v2", compiled=True),
        vit("imas", compiled=True),
        *rest,
        voc("supervised", large, "bf16", True, compiled=True),
    ]


# -------------------------------------------------------------------------------------------- the report


def projection(results: list[dict[str, Any]], scale: Scale) -> dict[str, Any]:
    """The 80-epoch VOC R101 1/8 run's wall time on this GPU: VOC_STEPS x the fastest iMAS 16 + 16 step
    (the released global batch on one GPU, so the same steps as the released 4-GPU run) plus the
    evaluations of teacher and student after every epoch; against the goal and the released runs."""
    best = best_imas_step(results, scale.batches[1])
    if best is None:
        return {"notes": "no iMAS 16 + 16 step row has finished"}
    train_h = VOC_STEPS * best["step_s"] / 3600
    evaluation = next(
        (r for r in results if r.get("section") == "voc_eval" and r.get("status") == "ok"), None
    )
    eval_h = VOC_EPOCHS * evaluation["eval_per_epoch_s"] / 3600 if evaluation else None
    total_h = train_h + (eval_h or 0.0)
    out: dict[str, Any] = {
        "dry_run": scale.dry_run,
        "steps": VOC_STEPS,
        "step_row": best["name"],
        "step_s": best["step_s"],
        "train_hours": round(train_h, 2),
        "eval_hours": round(eval_h, 2) if eval_h is not None else None,
        "total_hours": round(total_h, 2),
        "goal_hours": GOAL_HOURS,
        "meets_goal": total_h <= GOAL_HOURS,
        "step_s_for_goal": round(GOAL_HOURS * 3600 / VOC_STEPS, 3),
        "released_hours": RELEASED_HOURS,
        "speedup_over_released": round(RELEASED_HOURS / total_h, 2) if total_h > 0 else None,
    }
    evaluated = "" if eval_h is not None else " (evaluation not measured)"
    out["notes"] = (
        f"{VOC_STEPS:,} steps x {best['step_s']:.3f} s = {train_h:.2f} h + eval {eval_h or 0:.2f} h = "
        f"{total_h:.2f} h{evaluated}: goal {GOAL_HOURS:g} h {'met' if out['meets_goal'] else 'missed'}, "
        f"{out['speedup_over_released']}x the released {RELEASED_HOURS:g} h"
    )
    return out


def environment(scale: Scale) -> dict[str, Any]:
    device = scale.device
    out: dict[str, Any] = {
        "device": benchmark.device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": cpu_description(),
        "cpu_cores": os.cpu_count(),
        "dry_run": scale.dry_run,
        "deadline_s": scale.deadline_s,
        "flags": {
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_conv": torch.backends.cudnn.allow_tf32,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        },
    }
    if device.type == "cuda":
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return out


def table(report: dict[str, Any]) -> str:
    """The report as a markdown table: one line per row, then the projection."""
    lines = [
        f"{report['device']}, torch {report['torch']}{' (dry run)' if report['dry_run'] else ''}",
        "",
        "| row | status | step s | peak GiB allocated / reserved | notes |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        step = f"{row['step_s']:.4f}" if "step_s" in row and row.get("status") == "ok" else ""
        memory = ""
        if row.get("peak_allocated_gib") is not None:
            memory = f"{row['peak_allocated_gib']:.2f} / {row['peak_reserved_gib']:.2f}"
        elif "peak_missing" in row:
            memory = "none (no CUDA)"
        notes = str(row.get("notes", "")).replace("|", "/")
        lines.append(f"| {row['name']} | {row['status']} | {step} | {memory} | {notes} |")
    lines.append(f"| projection: 80-epoch VOC R101 1/8 | | | | {report['projection'].get('notes', '')} |")
    return "\n".join(lines)


def check_out(out: Path) -> None:
    """Refuse an --out that cannot be written before any row runs: found at the first row's write, it would
    cost that row's measurement. Tried for real (a file created and removed beside it), which also catches a
    read-only file system or folder."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a JSON file, e.g. --out {out / 'gpu_check.json'}")
    existing = next(p for p in [out.parent, *out.parent.parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot write --out {out}: {existing} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write --out {out}: {exc.strerror or exc} in {out.parent}") from None


def write(report: dict[str, Any], out: Path) -> None:
    """Write the JSON atomically: a temporary file in the same folder, flushed to the disk, then renamed over
    `out`. A kill or a failed write (a full disk) leaves the previous version whole (or no file, when there
    was none) and no temporary file; the failure stops the run in one sentence, in the words of the
    package's other write failures, since the next rows could not be kept either."""
    text = json.dumps(report, indent=2) + "\n"
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make the JSON unreadable to other users
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = f"the previous {out.name} is kept" if out.is_file() else "nothing was written"
        raise UserError(f"{out} could not be written ({failure_reason(exc, out.parent)}); {kept}") from None


def unfinished(result: dict[str, Any]) -> bool:
    """Whether --resume runs the row again: the deadline left it no time, or cut it before its own budget
    (a row cut by its budget would only be cut again)."""
    return result.get("status") == "not started" or result.get("cut_by") == "deadline"


def cut_result(row: Row, ctx: Context, budget: float, elapsed: float) -> dict[str, Any]:
    """A row stopped by its timer: which limit cut it, and for a compiled row how far its compile had got
    (otherwise a compile that needs more than the budget would only show as a missing step time)."""
    limit = ctx.limit_s
    cut_by = "budget" if limit >= budget else "deadline"
    what = f"{limit:.3g} s budget" if cut_by == "budget" else f"{limit:.3g} s left before the deadline"
    out: dict[str, Any] = {
        "status": "timeout",
        "cut_by": cut_by,
        "limit_s": round(limit, 1),
        "budget_s": budget,
    }
    out["notes"] = f"stopped after its {what}"
    if row.budget == "compiled":  # the compiled ResNet rows and the compiled ViT rows
        calls = ctx.partial.get("call_s", [])
        # The calls' seconds beyond the fastest call's are compilation; before the first call ends, all are.
        compile_s = sum(calls) - len(calls) * min(calls) if calls else elapsed
        bound = "" if calls else "at least "
        out |= {"status": "over budget", "compile_s_at_cut": round(compile_s, 1), "steps_done": len(calls)}
        out["notes"] = (
            f"over budget: compile took {bound}{compile_s:.0f} s of the {what}, {len(calls)} steps done"
        )
    return ctx.partial | out


def run_row(row: Row, scale: Scale, results: list[dict[str, Any]], deadline: float, first: bool) -> dict:
    """One row under its budget and the deadline; its result whatever happened. The first row of a call
    always starts (at least its min_s), so that every call, --resume included, makes progress."""
    left = deadline - time.monotonic()
    result: dict[str, Any] = {"name": row.name, "section": row.section}
    if left < row.min_s and not first:
        return result | {"status": "not started", "notes": f"{max(left, 0):.0f} s left before the deadline"}
    budget = scale.budget_s[row.budget]
    limit = min(budget, max(left, row.min_s))
    start = time.monotonic()
    ctx = Context(scale, results, limit)
    try:
        with time_limit(limit):
            result |= {"status": "ok"} | row.fn(ctx)
    except RowTimeout:
        result |= cut_result(row, ctx, budget, time.monotonic() - start)
    except torch.cuda.OutOfMemoryError:
        result |= {"status": "oom", "notes": "out of memory"} | ctx.partial
    except Exception as exc:  # one row's failure must not cost the others
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        result |= {"status": "error", "notes": message[:300]} | ctx.partial
    result["seconds"] = round(time.monotonic() - start, 1)
    free_memory(scale.device)
    return result


def run_rows(
    rows: list[Row],
    scale: Scale,
    out: Path,
    started: float,
    command: str = "",
    previous: dict[str, Any] | None = None,
    resume_command: str = "",
) -> dict[str, Any]:
    """Run `rows` under the deadline, each under its budget; rewrite `out` after every row. With `previous`
    (the JSON a --resume read), its rows stay, those run again are replaced, and the new ones follow."""
    names = {row.name for row in rows}
    kept = [r for r in (previous or {}).get("rows", []) if r.get("name") not in names]
    report = environment(scale) | {
        "settings": settings(scale),
        "command": command,
        "commands": [*(previous or {}).get("commands", []), command],
        "started": (previous or {}).get("started", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "rows": kept,
        "projection": {},
    }
    results: list[dict[str, Any]] = report["rows"]
    deadline = started + scale.deadline_s
    for i, row in enumerate(rows):
        result = run_row(row, scale, results, deadline, first=i == 0)
        results.append(result)
        report["projection"] = projection(results, scale)
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        write(report, out)
        print(
            f"[{report['elapsed_s']:6.1f} s] {row.name}: {result['status']} {result.get('notes', '')}",
            flush=True,
        )
    report["complete"] = all(r["status"] not in ("not started", "timeout", "over budget") for r in results)
    if any(unfinished(r) for r in results) and resume_command:
        report["resume_command"] = resume_command
    write(report, out)
    return report


def settings(scale: Scale) -> dict[str, Any]:
    """The options that change what the rows measure, as the JSON records them: a --resume under other
    values would mix rows timed under two settings in one report."""
    return {
        "dry_run": scale.dry_run,
        "cutmix_rate": scale.cutmix_rate,
        "torchrun_procs": scale.torchrun_procs,
    }


def recorded_settings(report: dict[str, Any]) -> dict[str, Any]:
    """The settings of a JSON: as recorded, or, in a JSON written before they were, as far as its rows
    show them (an option no row shows is left out, so it is not compared)."""
    if isinstance(report.get("settings"), dict):
        return report["settings"]
    out: dict[str, Any] = {}
    if "dry_run" in report:
        out["dry_run"] = report["dry_run"]
    for row in report["rows"]:
        how = str(row.get("cutmix_how", ""))
        if how.startswith("forced"):
            out.setdefault("cutmix_rate", row.get("cutmix_rate"))
        elif how == "as drawn":
            out.setdefault("cutmix_rate", None)
        if row.get("section") == "torchrun" and "processes" in row:
            out.setdefault("torchrun_procs", row["processes"])
    return out


def setting_text(key: str, value: Any) -> str:
    """A setting as its option is written: '--cutmix-rate 0.7', '--cutmix-rate drawn', '--dry-run on'."""
    option = "--" + key.replace("_", "-")
    if key == "dry_run":
        return f"{option} {'on' if value else 'off'}"
    if key == "cutmix_rate":
        return f"{option} {'drawn' if value is None else f'{value:g}'}"
    return f"{option} {value}"


def load_previous(out: Path, scale: Scale) -> dict[str, Any]:
    """The JSON that --resume continues; a UserError if it is missing, unreadable, timed under other
    settings or from another device."""
    try:
        report = json.loads(out.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"--resume continues {out}, which does not exist; run without --resume first"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume cannot read {out} ({exc}); run without --resume to start again") from None
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
        raise UserError(f"--resume: {out} has no rows, so it is not a gpu_check JSON")
    recorded = recorded_settings(report)
    for key, value in settings(scale).items():
        if key in recorded and recorded[key] != value:
            then, now = setting_text(key, recorded[key]), setting_text(key, value)
            same = (
                ("with --dry-run" if recorded[key] else "without --dry-run")
                if key == "dry_run"
                else f"with {then}"
            )
            raise UserError(
                f"--resume: {out} was timed with {then} and this call has {now}, which would mix rows timed "
                f"under two settings; resume {same} or give another --out"
            )
    here = benchmark.device_name(scale.device) + (" (dry run)" if scale.dry_run else "")
    there = f"{report.get('device')}" + (" (dry run)" if report.get("dry_run") else "")
    if here != there:
        raise UserError(f"--resume: {out} was measured on {there}, not on {here}; give another --out")
    return report


def parse_rate(text: str) -> float | None:
    """--cutmix-rate: a share in [0, 1], or "drawn"."""
    if text == "drawn":
        return None
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1] or 'drawn', got {text!r}")
    return rate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file, rewritten after every row")
    p.add_argument("--dry-run", action="store_true", help="every row on the CPU with tiny shapes")
    p.add_argument("--deadline", type=float, default=None, help="seconds for all rows (400; dry run 300)")
    p.add_argument("--only", nargs="*", default=[], help="run only the rows whose name contains one of these")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue --out: keep its finished rows, run those the deadline left and append them",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out (without it, or --resume, an existing --out is refused)",
    )
    p.add_argument(
        "--cutmix-rate",
        type=parse_rate,
        default=CUTMIX_RATE,
        help=f"share of CutMix groups that fire in the timed iMAS steps ({CUTMIX_RATE}, a chosen value), "
        "or 'drawn' for the method's own draw (rare under random weights)",
    )
    p.add_argument(
        "--torchrun-procs",
        type=int,
        default=1,
        help="processes of the torchrun row: 1 (one GPU; no process group at world size 1), or 2+ on as many "
        "GPUs (NCCL) or on the CPU in a dry run (gloo)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    return run_command(lambda: check(args, started, argv))


def planned_rows(scale: Scale, only: list[str]) -> list[Row]:
    rows = [r for r in plan(scale) if not only or any(text in r.name for text in only)]
    if not rows:
        names = ", ".join(repr(text) for text in only)
        raise UserError(f"--only {names} matches no row (names are like 'voc iMAS 16 + 16 bf16', 'torchrun')")
    return rows


def check(args: argparse.Namespace, started: float, argv: list[str] | None) -> int:
    """Every planned row (or those --only names, less those --resume finds done); 1 if a row failed."""
    out = Path(args.out)
    check_out(out)
    if args.resume and args.force:
        raise UserError("--resume continues --out and --force replaces it; give one of them, not both")
    if out.exists() and not (args.resume or args.force):
        raise UserError(
            f"--out {out} exists already and would be overwritten; add --resume to continue it or --force to "
            "replace it"
        )
    scale = make_scale(args.dry_run, args.deadline, args.torchrun_procs, args.cutmix_rate)
    if args.torchrun_procs < 1:
        raise UserError(f"--torchrun-procs must be at least 1, got {args.torchrun_procs}")
    rows = planned_rows(scale, args.only)
    previous = load_previous(out, scale) if args.resume else None
    if previous is not None:
        done = {r.get("name") for r in previous["rows"] if not unfinished(r)}
        rows = [row for row in rows if row.name not in done]
        if not rows:
            print(f"every row asked for is already in {out}; nothing to resume")
            return 0
    torch.backends.cudnn.benchmark = True  # as imas.train runs (train.deterministic false)
    if scale.dry_run:
        torch.set_num_threads(1)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "tools.gpu_check", *arguments])
    # The command that continues: the same options, --resume instead of --force (the JSON now exists).
    kept = [a for a in arguments if a != "--force"]
    resume = shlex.join(["python", "-m", "tools.gpu_check", *kept, *([] if args.resume else ["--resume"])])
    report = run_rows(rows, scale, out, started, command, previous, resume)
    print()
    print(table(report))
    left = [r["name"] for r in report["rows"] if unfinished(r)]
    if left:
        print(f"\n{len(left)} rows did not run before the deadline; they are kept for a second call.")
        print(f"continue with: {resume}")
    failed = [r["name"] for r in report["rows"] if r["status"] in ("failed", "error")]
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The JSON is written; a row cut in the middle of torch.compile can leave compile workers behind that
    # would hold the interpreter's exit, so leave without waiting for them.
    os._exit(code)
