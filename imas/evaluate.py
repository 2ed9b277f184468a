"""Evaluate a checkpoint on the config's val split: per-class IoU table, mIoU, and a JSON file.

imas-eval --config exps/toy/suponly.yaml --checkpoint runs/toy/suponly/best.pth
imas-eval --config ... --checkpoint ... --model student --mode sliding --opt eval.flip=true
torchrun --nproc_per_node 4 -m imas.evaluate --config ... --checkpoint ...   (each val image counted once)

(`python eval.py` and `torchrun ... eval.py` in a checkout run the same.)

--output's folder is created if needed; an --output that cannot be written (a folder, a path under a file,
no permission), that is the checkpoint or the config, or that is an existing file other than an earlier
imas-eval result, is refused in one sentence before the evaluation starts.

The log's first line names what is evaluated, from what the checkpoint records, e.g.
    evaluating the teacher of runs/x/best.pth (epoch 12, iteration 3000, val mIoU 47.23 at save time) on
    150 val images, whole inference
and stderr shows progress (images done / total, img/s, ETA): one line redrawn in place on a terminal, a plain
line every 10 s otherwise; under torchrun only rank 0 reports, counting every rank's images.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from imas.checkpoint import load_checkpoint
from imas.config import EvalMode, EvalModel, load_config
from imas.data import build_datasets, build_val_loader, class_names
from imas.data.io import check_writable_file
from imas.dist import cleanup, init_distributed
from imas.errors import UserError, user_message
from imas.inference import evaluate_model, load_trained_model
from imas.logging import format_duration, setup_logging

# How often progress is shown: a terminal line is redrawn at most every PROGRESS_TTY_SECONDS; where stderr is
# a file or a pipe (a job log) a plain line is written every PROGRESS_PLAIN_SECONDS, so thousands of images
# give a few lines a minute, not one each. The last count is always shown.
PROGRESS_TTY_SECONDS = 0.5
PROGRESS_PLAIN_SECONDS = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True, help="latest.pth or best.pth of a run")
    parser.add_argument(
        "--model", choices=[m.value for m in EvalModel], default=None, help="default: eval.model"
    )
    parser.add_argument(
        "--mode", choices=[m.value for m in EvalMode], default=None, help="default: eval.mode"
    )
    parser.add_argument(
        "--opt", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    parser.add_argument("--output", default=None, help="JSON path (default: <checkpoint>.<model>.eval.json)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    overrides = list(args.opt)
    if args.model:
        overrides.append(f"eval.model={args.model}")
    if args.mode:
        overrides.append(f"eval.mode={args.mode}")
    cfg = load_config(args.config, overrides)
    info = init_distributed(args.device)
    log = setup_logging(None, info.is_main)
    ckpt = load_checkpoint(args.checkpoint)
    model, which = load_trained_model(cfg, ckpt, args.checkpoint, cfg.eval.model.value, info)
    output = Path(args.output or f"{args.checkpoint}.{which}.eval.json")
    # Checked on every rank (not only the one that writes) so that all of them stop before evaluating,
    # instead of a traceback after the whole evaluation or ranks waiting on one that stopped.
    check_not_overwriting(output, [Path(args.checkpoint), Path(args.config)])
    check_writable_file(output, "--output")

    datasets = build_datasets(cfg.data, with_unlabeled=False)
    loader = build_val_loader(cfg.data, datasets.val, info.rank, info.world_size)
    processes = f" on {info.world_size} processes" if info.world_size > 1 else ""
    log.info(
        "evaluating %s on %d val images, %s inference%s",
        describe_model(ckpt, args.checkpoint, which, cfg.eval.model.value),
        len(datasets.val),
        cfg.eval.mode.value,
        processes,
    )
    progress = ImageProgress("eval", len(datasets.val), enabled=info.is_main, scale=info.world_size)
    start = time.perf_counter()
    try:
        confusion = evaluate_model(cfg, model, loader, info.device, progress=progress.update)
    finally:
        progress.close()
    seconds = time.perf_counter() - start
    names = class_names(cfg.data)
    result = confusion.to_dict(names) | {
        "checkpoint": str(args.checkpoint),
        "model": which,
        "mode": cfg.eval.mode.value,
        "scales": cfg.eval.scales,
        "flip": cfg.eval.flip,
        "images": len(datasets.val),
        "seconds": round(seconds, 2),
        "epoch": ckpt.get("epoch"),
    }
    if info.is_main:
        print(confusion.table(names))
        output.write_text(json.dumps(result, indent=2) + "\n")
        log.info("%d images in %.1fs; wrote %s", len(datasets.val), seconds, output)
    return result


# ------------------------------------------------------------------ what is evaluated, and how far it is


def model_label(ckpt: dict[str, Any], key: str) -> str:
    """What to call the network under checkpoint key `key` ("teacher", "model", "model2") in a sentence.

    "model" is the student beside a teacher, the first network beside a second (CPS), else the run's only
    network (supervised, FixMatch, UniMatch): "student" would be wrong there, as no teacher exists."""
    if key == "teacher":
        return "teacher"
    if key == "model2":
        return "second network"
    if "teacher" in ckpt:
        return "student"
    return "first network" if "model2" in ckpt else "network"


def reported_key(ckpt: dict[str, Any]) -> str:
    """The checkpoint key of the model whose val mIoU training recorded (best_miou): the method's reported
    model (imas.methods: the teacher for iMAS and mean teacher, else the first network)."""
    from imas.methods import METHODS  # imas.methods imports imas.inference: imported when needed

    method = ckpt.get("config", {}).get("train", {}).get("method")
    if method in METHODS:
        return METHODS[method].evaluated[0]
    return "teacher" if "teacher" in ckpt else "model"


def describe_model(ckpt: dict[str, Any], path: str | Path, key: str, asked: str) -> str:
    """The network a command uses, named with what its checkpoint records, so that a log says which weights
    gave its numbers: 'the teacher of runs/x/best.pth (epoch 12, iteration 3000, val mIoU 47.23 at save
    time)'. latest.pth, saved after a worse epoch than the best, gives 'best val mIoU 47.23 at epoch 12'; a
    mIoU measured on another network of the checkpoint than `key` names that network; `asked` ("teacher" or
    "student", eval.model) that the checkpoint lacks is said (a run without a teacher gives its network)."""
    label = model_label(ckpt, key)
    notes = []
    if asked == "teacher" and key != "teacher":
        notes.append("it holds no teacher")
    facts = [f"{name} {ckpt[name]}" for name in ("epoch", "iteration") if isinstance(ckpt.get(name), int)]
    best = ckpt.get("best_miou")
    if isinstance(best, (int, float)) and math.isfinite(best) and best >= 0:
        reported = reported_key(ckpt)
        of = "" if reported == key else f" of the {model_label(ckpt, reported)}"
        best_epoch = ckpt.get("best_epoch")
        if best_epoch is not None and best_epoch == ckpt.get("epoch"):
            facts.append(f"val mIoU {100 * best:.2f}{of} at save time")
        elif isinstance(best_epoch, int) and best_epoch > 0:
            facts.append(f"best val mIoU {100 * best:.2f}{of} at epoch {best_epoch}")
        else:
            facts.append(f"best val mIoU {100 * best:.2f}{of} so far")
    if not facts:
        facts.append("no epoch or mIoU recorded")
    notes.append(", ".join(facts))
    return f"the {label} of {path} ({'; '.join(notes)})"


class ImageProgress:
    """Images done / total, img/s and time left, on stderr while eval or predict work through many images.

    Why stderr: stdout holds the results (eval's table, predict's summary) and the log, which stay readable
    when progress is redirected away. On a terminal one line is redrawn in place (\\r) at most every
    PROGRESS_TTY_SECONDS; elsewhere (a job log) a plain line every PROGRESS_PLAIN_SECONDS; the last count is
    always shown. `scale`: the processes sharing the work equally (torchrun eval), of which only the one
    with enabled=True (rank 0) reports: its count times `scale`, at most `total`, estimates everyone's.
    """

    def __init__(
        self,
        label: str,
        total: int,
        enabled: bool = True,
        scale: int = 1,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.label, self.total, self.enabled, self.scale = label, total, enabled, scale
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = PROGRESS_TTY_SECONDS if self.tty else PROGRESS_PLAIN_SECONDS
        self.clock = clock
        self.start = self.last = clock()
        self.width = 0  # characters of the line drawn on the terminal; 0: none open

    def line(self, done: int) -> str:
        """'eval 40/150 images (27%), 3.21 img/s, elapsed 0:00:12, eta 0:00:34'."""
        elapsed = self.clock() - self.start
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        percent = f" ({100 * done // self.total}%)" if self.total else ""
        speed = _rate(rate)
        return (
            f"{self.label} {done}/{self.total} images{percent}, {speed} img/s, "
            f"elapsed {format_duration(elapsed)}, eta {format_duration(eta)}"
        )

    def update(self, done: int) -> None:
        """`done` images finished by this process (predict: read or skipped); shown when due."""
        if not self.enabled:
            return
        done = min(self.total, done * self.scale)
        now = self.clock()
        last = done >= self.total
        if not last and now - self.last < self.every:
            return
        self.last = now
        text = self.line(done)
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width) + ("\n" if last else ""))
            self.width = 0 if last else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the terminal line before other output (a log line), which would otherwise run on after it;
        the next update draws it again."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def close(self) -> None:
        """End an open terminal line (work stopped before the last image), so the shell prompt or an error
        starts on a line of its own."""
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _rate(per_second: float) -> str:
    """3.21, 45.6, 152: three significant digits or so, never an exponent; '?' before the first image."""
    if per_second != per_second:
        return "?"
    return (
        f"{per_second:.2f}"
        if per_second < 10
        else f"{per_second:.1f}"
        if per_second < 100
        else f"{per_second:.0f}"
    )


def check_not_overwriting(output: Path, inputs: list[Path]) -> None:
    """Refuse an --output that is one of the inputs (the checkpoint, the config), or an existing file that
    is not an earlier imas-eval result: replacing it with a JSON would destroy it."""
    if not output.is_file():
        return
    here = output.stat()
    for path in inputs:
        if path.exists() and path.samefile(output):
            raise UserError(f"--output {output} is the {path.suffix.lstrip('.')} file this command reads")
    try:
        earlier = json.loads(output.read_text()) if here.st_size < 2**20 else None
    except (OSError, UnicodeDecodeError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and {"miou", "checkpoint", "model"} <= earlier.keys()):
        raise UserError(
            f"--output {output} exists and is not an imas-eval result; choose another path or delete it"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
