"""Evaluate a checkpoint on the config's val split: per-class IoU table, mIoU, and a JSON file.

imas-eval --config exps/toy/suponly.yaml --checkpoint runs/toy/suponly/best.pth
imas-eval --config ... --checkpoint ... --model student --mode sliding --opt eval.flip=true
torchrun --nproc_per_node 4 -m imas.evaluate --config ... --checkpoint ...   (each val image counted once)

(`python eval.py` and `torchrun ... eval.py` in a checkout run the same.)

--output's folder is created if needed; an --output that cannot be written (a folder, a path under a file,
no permission), that is the checkpoint, the config or a run's own file (metrics.jsonl, ...), or that is an
existing file imas-eval did not write (its JSON says "written_by": "imas-eval") unless --force is given, is
refused in one sentence before the evaluation starts (imas.outputs). The JSON is written atomically: a full
disk leaves the previous file as it was.

The log's first line names what is evaluated, from what the checkpoint records, e.g.
    evaluating the teacher of runs/x/best.pth (epoch 12, iteration 3000, val mIoU 47.23 at save time) on
    150 val images, whole inference
and stderr shows progress (images done / total, img/s, ETA): one line redrawn in place on a terminal, a plain
line every 10 s otherwise; under torchrun only rank 0 reports, counting every rank's images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from imas.arguments import parse_eval
from imas.checkpoint import load_checkpoint
from imas.cli import discard_new_folders, on_exit, run_command
from imas.data import build_datasets, build_val_loader, class_names
from imas.data.io import check_writable_file
from imas.dist import cleanup, init_distributed
from imas.experiment import load_experiment
from imas.inference import evaluate_model
from imas.logging import setup_logging
from imas.networks import describe_model, load_trained_model
from imas.outputs import MARK_KEY, check_output, write_text_atomic
from imas.progress import ImageProgress

COMMAND = "imas-eval"  # the mark of the JSON it writes (imas.outputs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (imas.arguments: parsed there without torch for `imas-eval --help`)."""
    return parse_eval(argv)


def run(args: argparse.Namespace) -> dict:
    overrides = list(args.opt)
    if args.model:
        overrides.append(f"eval.model={args.model}")
    if args.mode:
        overrides.append(f"eval.mode={args.mode}")
    cfg = load_experiment(args.config, overrides)
    info = init_distributed(args.device)
    log = setup_logging(None, info.is_main)
    ckpt = load_checkpoint(args.checkpoint)
    model, which = load_trained_model(cfg, ckpt, args.checkpoint, cfg.eval.model, info)
    output = Path(args.output or f"{args.checkpoint}.{which}.eval.json")
    # Checked on every rank (not only the one that writes) so that all of them stop before evaluating,
    # instead of a traceback after the whole evaluation or ranks waiting on one that stopped.
    inputs = {"checkpoint": args.checkpoint, "config": args.config}
    check_output(output, COMMAND, f"--output {output}", inputs=inputs, force=args.force)
    discard_new_folders(output.parent)  # a failure before the JSON is written leaves no empty folder
    check_writable_file(output, "--output")

    datasets = build_datasets(cfg.data, with_unlabeled=False)
    loader = build_val_loader(cfg.data, datasets.val, info.rank, info.world_size)
    processes = f" on {info.world_size} processes" if info.world_size > 1 else ""
    log.info(
        "evaluating %s on %d val images, %s inference%s",
        describe_model(ckpt, args.checkpoint, which, cfg.eval.model),
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
        MARK_KEY: COMMAND,
    }
    if info.is_main:
        print(confusion.table(names))
        write_text_atomic(output, json.dumps(result, indent=2) + "\n")
        log.info("%d images in %.1fs; wrote %s", len(datasets.val), seconds, output)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        on_exit(cleanup)  # the process group, however the evaluation ends
        run(args)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
