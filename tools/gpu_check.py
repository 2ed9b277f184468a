"""Everything a GPU must show about this code, as one command that ends within minutes and writes as it goes.

    python -m tools.gpu_check --out benchmarks/gpu_h100.json       # one CUDA GPU, at most about 7 minutes
    python -m tools.gpu_check --dry-run --out /tmp/gpu_check.json  # the same on the CPU with tiny shapes

GPUs are lent rarely and briefly, so the checks are prepared here and run there in one go. The rows run in
order of importance under a global deadline (--deadline) and each under its own time budget; the JSON is
rewritten after every row, so a run that is killed keeps what it measured, and a row that runs out of memory
is recorded as "oom" and the next one starts. Rows (the JSON's "section" of each):

  gpu_tests   the tests that skip without CUDA (pytest in a subprocess): passed / failed; skipped without CUDA
  voc_step    one training step (the method's step, optimiser step, EMA update) of the VOC R101 os16 config
              at crop 513 on random inputs, SupOnly and iMAS, at the released per-GPU batch (4 + 4) and the
              single-GPU one (16 + 16), fp32 / bf16 (train.precision), channels_last off / on: median of
              the timed steps and CUDA's peak allocated memory
  shares      instance hardness (imas.hardness) and the EMA update (imas.ema) alone at the 16 + 16 shapes, as
              shares of the fastest iMAS 16 + 16 step
  voc_eval    whole-image evaluation of a 500 x 375 image, and the cost of an image of a new size (cuDNN
              autotunes each new shape; VOC's val images come in many sizes)
  cityscapes  the Cityscapes R50 os8 769 iMAS step at the released per-GPU batch (2 + 2), bf16; sliding-window
              evaluation of a 1024 x 2048 image (window 769), images per second
  torchrun    a 1-GPU torchrun of iMAS (bf16, 4 + 4 at 513) on generated files in the VOC layout: 10
              iterations, stopped (1 epoch), resumed to 20 (2 epochs, --resume-anyway); checks that both exit
              0, that train.log says it resumed at iteration 10 and that metrics.jsonl has iterations 10, 20
  compiled    the iMAS (and SupOnly) 16 + 16 bf16 channels_last step with torch.compile of the models'
              forward: compile seconds apart from the step, and how often dynamo compiled

and, recomputed after every row, "projection": the 80-epoch VOC R101 1/8 run's wall time from the fastest
iMAS 16 + 16 step and the evaluation time, against the 4-hour goal and the released runs' 25 hours.

--dry-run runs every row on the CPU (ResNet-18 of width 8, crops of 33-49 pixels, batches 2 and 4, two
timed steps, torch.compile with the "eager" backend), which is what the tests run; its numbers only show that
the rows work. A torchrun of one process has no process group (imas.dist makes none at world size 1):
--torchrun-procs 2 runs two, with NCCL on two GPUs or gloo in a dry run. --only runs the rows whose name
contains a given text (e.g. a second try of the rows a first run did not reach). The step, evaluation and
compile rows use one CUDA device.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
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

from imas.checkpoint import load_checkpoint
from imas.cli import run_command
from imas.dist import DistInfo
from imas.errors import UserError
from imas.experiment import load_experiment
from imas.hardness import instance_hardness
from imas.inference import inference_options, predict
from imas.models import build_model
from imas.normalization import normalize
from imas.precision import AUTOCAST_DTYPES, cpu_description
from imas.rundir import read_evaluations
from imas.train import build_trainer
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

    def overrides(self, method: str, batch: int, crop: int) -> list[str]:
        """Config overrides of every row: no pretrained file, the batch, the network's size in a dry run."""
        out = ["model.pretrained=", f"train.batch_size={batch}", f"data.crop_size={crop}", *self.model]
        if self.dry_run and method == "imas":
            out.append(f"imas.group_size={min(self.batches)}")
        return out


# Seconds each kind of row may take on a GPU (estimates for an H100/H200: an R101 513 iMAS 16 + 16 step takes
# 0.3-0.6 s in bf16 and about twice that in fp32, cuDNN autotunes each new shape once, a torch.compile of
# R101 takes 1-2 min per graph); a row that runs past its budget is cut and recorded as "timeout".
GPU_BUDGETS = {
    "gpu_tests": 150,
    "step": 90,
    "shares": 60,
    "eval": 60,
    "torchrun": 180,
    "compiled": 240,
}


def make_scale(dry_run: bool, deadline: float | None, torchrun_procs: int = 1) -> Scale:
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
            model=("model.backbone=resnet18", "model.backbone_width=8", "model.decoder_channels=16"),
            voc_image=(24, 32),
            city_image=(64, 128),
            window=49,
            compile_backend="eager",
            torchrun_procs=torchrun_procs,
            torchrun_image=(40, 30),
            deadline_s=deadline or 300.0,
            budget_s=dict.fromkeys(GPU_BUDGETS, 120.0),
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


def peak(device: torch.device) -> dict[str, Any]:
    """Peak memory of the row: CUDA's max allocated (reset before each row), or on a CPU the process's peak
    resident size so far (which cannot be reset, so it only grows from row to row)."""
    if device.type == "cuda":
        return {"peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2), "peak_kind": "cuda"}
    return {"peak_gib": round(benchmark.rss_mib() / 1024, 2), "peak_kind": "process rss"}


def timing(times: list[float], warm_s: float) -> dict[str, Any]:
    return {
        "step_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "steps": len(times),
        "warmup_s": round(warm_s, 2),
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


def step_row(
    config: Path, method: str, batch: int, precision: str, channels_last: bool, compiled: bool, crop_key: str
) -> Callable[[Context], dict[str, Any]]:
    """A row timing one training step of `config` (see benchmark.method_step) at the given settings."""

    def row(ctx: Context) -> dict[str, Any]:
        scale, device = ctx.scale, ctx.scale.device
        crop = getattr(scale, crop_key)
        overrides = scale.overrides(method, batch, crop)
        overrides += [f"train.precision={precision}", f"train.channels_last={str(channels_last).lower()}"]
        cfg = load_experiment(config, overrides)
        out: dict[str, Any] = {
            "config": config.relative_to(REPO).as_posix(),
            "method": method,
            "batch": batch,
            "crop": crop,
            "precision": precision,
            "channels_last": channels_last,
            "compiled": compiled,
        }
        labeled, unlabeled = benchmark.random_batches(
            batch, crop, cfg.data.num_classes, device, channels_last
        )
        step, trainer = benchmark.method_step(cfg, labeled, unlabeled, device)
        warmup = scale.compile_warmup if compiled else scale.warmup
        if compiled:
            from torch import _dynamo

            _dynamo.reset()
            before = dynamo_counts()
            # the student, and the EMA teacher where there is one
            modules = list(trainer.method.models.values())
            for module in modules:
                module.compile(backend=scale.compile_backend)
        ctx.partial |= {"call_s": []}

        def logged() -> None:
            """The step, its seconds (and dynamo's compiles so far) kept for a row cut in its warm-up."""
            start = time.perf_counter()
            step()
            benchmark.synchronize(device)
            ctx.partial["call_s"].append(round(time.perf_counter() - start, 3))
            if compiled:
                ctx.partial["dynamo_compiles"] = dynamo_counts()[0] - before[0]

        free_memory(device)
        times, warm = benchmark.step_times(logged, scale.steps, warmup, device)
        out |= timing(times, warm) | peak(device)
        out["images_per_s"] = round(batch * (2 if trainer.method.uses_unlabeled else 1) / out["step_s"], 1)
        if compiled:
            after = dynamo_counts()
            compiles = after[0] - before[0]
            out |= {
                "compile_backend": scale.compile_backend,
                # What the warm-up took beyond its steps: compilation, mostly.
                "compile_s": round(max(0.0, warm - warmup * out["step_s"]), 1),
                "dynamo_compiles": compiles,
                "recompiles": compiles - len(modules),
                "dynamo_graphs": after[1] - before[1],
            }
            _dynamo.reset()
        out["notes"] = f"{out['step_s']:.3f} s/step, {out['images_per_s']} img/s"
        if compiled:
            out["notes"] += f", compile {out['compile_s']} s, {out['recompiles']} recompiles"
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
    model, ema = trainer.trained["model"], trainer.method.teacher
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
        times, warm = benchmark.step_times(evaluate(h, w), scale.steps, scale.warmup, device)
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
        } | peak(device)
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
    """The rows in order of importance: the deadline cuts the last ones."""
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

    first = [
        voc("imas", large, "bf16", True),
        voc("imas", large, "bf16", False),
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
    city_step = step_row(CITYSCAPES_IMAS, "imas", scale.city_batch, "bf16", False, False, "city_crop")
    return [
        Row("gpu tests", "gpu_tests", "gpu_tests", gpu_tests),
        *first,
        Row("hardness and EMA shares", "shares", "shares", shares_row),
        Row(
            "voc whole-image eval bf16", "voc_eval", "eval", eval_row(VOC_IMAS, "voc_image", VOC_VAL, "bf16")
        ),
        Row(f"cityscapes iMAS {scale.city_batch} + {scale.city_batch} bf16", "cityscapes", "step", city_step),
        Row(
            "cityscapes sliding eval bf16",
            "cityscapes",
            "eval",
            eval_row(CITYSCAPES_IMAS, "city_image", CITYSCAPES_VAL, "bf16"),
        ),
        Row("torchrun stop and resume", "torchrun", "torchrun", torchrun_row, min_s=30.0),
        voc("imas", large, "bf16", True, compiled=True),
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
        "| row | status | step s | peak GiB | notes |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        step = f"{row['step_s']:.4f}" if "step_s" in row and row.get("status") == "ok" else ""
        memory = f"{row['peak_gib']:.2f}" if row.get("peak_gib") is not None else ""
        notes = str(row.get("notes", "")).replace("|", "/")
        lines.append(f"| {row['name']} | {row['status']} | {step} | {memory} | {notes} |")
    lines.append(f"| projection: 80-epoch VOC R101 1/8 | | | | {report['projection'].get('notes', '')} |")
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path) -> None:
    """Write the JSON atomically: a kill during the write leaves the previous version whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)


def run_rows(rows: list[Row], scale: Scale, out: Path, started: float, command: str = "") -> dict[str, Any]:
    """Run `rows` under the deadline, each under its budget; rewrite `out` after every row."""
    report = environment(scale) | {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [],
        "projection": {},
    }
    results: list[dict[str, Any]] = report["rows"]
    deadline = started + scale.deadline_s
    for row in rows:
        left = deadline - time.monotonic()
        result: dict[str, Any] = {"name": row.name, "section": row.section}
        if left < row.min_s:
            result |= {"status": "not started", "notes": f"{left:.0f} s left before the deadline"}
        else:
            limit = min(scale.budget_s[row.budget], left)
            start = time.monotonic()
            ctx = Context(scale, results, limit)
            try:
                with time_limit(limit):
                    result |= {"status": "ok"} | row.fn(ctx)
            except RowTimeout:
                result |= {"status": "timeout", "notes": f"stopped after its {limit:.3g} s"} | ctx.partial
            except torch.cuda.OutOfMemoryError:
                result |= {"status": "oom", "notes": "out of memory"} | ctx.partial
            except Exception as exc:  # one row's failure must not cost the others
                message = " ".join(f"{type(exc).__name__}: {exc}".split())
                result |= {"status": "error", "notes": message[:300]} | ctx.partial
            result["seconds"] = round(time.monotonic() - start, 1)
            free_memory(scale.device)
        results.append(result)
        report["projection"] = projection(results, scale)
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        write(report, out)
        print(
            f"[{report['elapsed_s']:6.1f} s] {row.name}: {result['status']} {result.get('notes', '')}",
            flush=True,
        )
    report["complete"] = all(r["status"] not in ("not started", "timeout") for r in results)
    write(report, out)
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file, rewritten after every row")
    p.add_argument("--dry-run", action="store_true", help="every row on the CPU with tiny shapes")
    p.add_argument("--deadline", type=float, default=None, help="seconds for all rows (400; dry run 300)")
    p.add_argument("--only", nargs="*", default=[], help="run only the rows whose name contains one of these")
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


def check(args: argparse.Namespace, started: float, argv: list[str] | None) -> int:
    """Every planned row (or those --only names); 1 if a row failed."""
    scale = make_scale(args.dry_run, args.deadline, args.torchrun_procs)
    rows = [r for r in plan(scale) if not args.only or any(text in r.name for text in args.only)]
    if not rows:
        names = ", ".join(repr(text) for text in args.only)
        raise UserError(f"--only {names} matches no row (names are like 'voc iMAS 16 + 16 bf16', 'torchrun')")
    if args.torchrun_procs < 1:
        raise UserError(f"--torchrun-procs must be at least 1, got {args.torchrun_procs}")
    torch.backends.cudnn.benchmark = True  # as imas.train runs (train.deterministic false)
    if scale.dry_run:
        torch.set_num_threads(1)
    command = " ".join(["python -m tools.gpu_check", *(sys.argv[1:] if argv is None else argv)])
    report = run_rows(rows, scale, Path(args.out), started, command)
    print()
    print(table(report))
    failed = [r["name"] for r in report["rows"] if r["status"] in ("failed", "error")]
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The JSON is written; a row cut in the middle of torch.compile can leave compile workers behind that
    # would hold the interpreter's exit, so leave without waiting for them.
    os._exit(code)
