"""How good would a checkpoint's pseudo-labels be? Coverage and precision of its confident pixels, per class.

    imas-pseudo-labels --config exps/toy/imas.yaml --checkpoint runs/toy/imas/latest.pth \
        [--model NAME] [--split val|unlabeled|labeled] [--threshold 0.95] [--limit N] [--output F]

iMAS trains the student on the teacher's pseudo-labels wherever the teacher's confidence is at least tau
(imas.threshold). On images that do have masks (the val split, or unlabeled images whose masks you hold back,
as the toy's are) this counts, per ground-truth class, the share of its pixels where the model is confident
(coverage) and the share of those it labels correctly (correct); over all pixels and over the non-background
ones, the coverage and the precision of the confident pixels; and the share of non-background pixels
confidently called background (class 0), the usual direction of confirmation bias. Prediction follows
the config's eval section (whole or sliding, scales, flip). Unlabeled entries without a mask are skipped.
The report goes to stdout; stderr shows progress (images done / total, img/s, ETA: one line redrawn in place
on a terminal, a plain line every 10 s otherwise). --output also writes the numbers as JSON, atomically,
marked "written_by": "imas-pseudo-labels"; it replaces only such a file (--force: any file but the config,
the checkpoint and a run's own files), checked before the work (imas.outputs). Exit status 0, or 2 with one
sentence on stderr for bad input.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from imas.arguments import parse_pseudo_labels
from imas.checkpoint import load_checkpoint
from imas.cli import discard_new_folders, run_command
from imas.data import class_names
from imas.data.io import check_writable_file, read_image, read_label
from imas.data.layouts import resolve_entries
from imas.data.splits import read_split
from imas.dist import init_distributed
from imas.errors import UserError
from imas.experiment import load_experiment
from imas.inference import inference_options, predict
from imas.methods.imas import ImasSettings
from imas.networks import load_trained_model
from imas.normalization import normalize
from imas.outputs import MARK_KEY, check_output, write_text_atomic
from imas.progress import ImageProgress

COMMAND = "imas-pseudo-labels"  # the mark of the JSON it writes (imas.outputs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (imas.arguments: parsed there without torch for `imas-pseudo-labels --help`)."""
    return parse_pseudo_labels(argv)


def confident_confusion(
    probs: torch.Tensor, label: torch.Tensor, threshold: float, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """probs [K, H, W], label long [H, W] -> (confusion of the confident pixels [K, K] (rows: ground truth,
    columns: prediction), ground-truth pixel count per class [K]); label 255 is left out of both."""
    confidence, prediction = probs.max(dim=0)
    valid = label != 255
    gt_count = torch.bincount(label[valid], minlength=num_classes)
    keep = valid & (confidence >= threshold)
    pairs = label[keep] * num_classes + prediction[keep]
    return torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes), gt_count


def summarize(confusion: np.ndarray, gt_count: np.ndarray, names: list[str]) -> dict:
    """The report's numbers from the summed confident confusion [K, K] and ground-truth counts [K]."""
    confident = confusion.sum(axis=1)
    objects = slice(1, None)

    def share(a: float, b: float) -> float | None:
        return round(float(a) / float(b), 4) if b else None

    return {
        "coverage": share(confident.sum(), gt_count.sum()),
        "precision": share(np.trace(confusion), confident.sum()),
        "object_coverage": share(confident[objects].sum(), gt_count[objects].sum()),
        "object_precision": share(np.trace(confusion[objects, objects]), confident[objects].sum()),
        "object_called_background": share(confusion[objects, 0].sum(), gt_count[objects].sum()),
        "per_class": {
            name: {
                "pixels": int(gt_count[k]),
                "coverage": share(confident[k], gt_count[k]),
                "correct": share(confusion[k, k], confident[k]),
            }
            for k, name in enumerate(names)
        },
    }


def run(args: argparse.Namespace) -> dict:
    cfg = load_experiment(args.config, args.opt)
    # The method's own threshold where it has one in (0, 1) (imas, mean_teacher, fixmatch, ...; 0 keeps every
    # pixel), else iMAS's default.
    own = getattr(cfg.method_settings, "threshold", ImasSettings.threshold)
    own = own if 0 < own < 1 else ImasSettings.threshold
    threshold = own if args.threshold is None else args.threshold
    if not 0 < threshold < 1:
        raise UserError(f"--threshold must be in (0, 1), got {threshold}")
    if args.limit < 0:
        raise UserError(f"--limit must be >= 0 (0: every image), got {args.limit}")
    if args.output:  # before the work, not after it
        inputs = {"config": args.config, "checkpoint": args.checkpoint}
        check_output(Path(args.output), COMMAND, f"--output {args.output}", inputs=inputs, force=args.force)
        discard_new_folders(Path(args.output).parent)  # a failure before the JSON leaves no empty folder
        check_writable_file(Path(args.output), "--output")
    split_file = {
        "val": cfg.data.val_split,
        "unlabeled": cfg.data.unlabeled_split,
        "labeled": cfg.data.labeled_split,
    }
    path = split_file[args.split]
    if not path:
        raise UserError(f"the config names no {args.split} split")
    entries = resolve_entries(read_split(path), cfg.data, path)
    entries = [e for e in entries if e[2].is_file()]  # unlabeled images may have no mask
    if args.limit:
        entries = entries[: args.limit]
    if not entries:
        raise UserError(f"no image of the {args.split} split ({path}) has a mask to compare with")
    info = init_distributed(args.device)
    model, which = load_trained_model(
        cfg, load_checkpoint(args.checkpoint), args.checkpoint, args.model, info
    )
    k = cfg.data.num_classes
    confusion = torch.zeros(k, k, dtype=torch.long)
    gt_count = torch.zeros(k, dtype=torch.long)
    progress = ImageProgress("pseudo-labels", len(entries))
    with torch.inference_mode():
        try:
            for number, (_, image_path, label_path) in enumerate(entries, start=1):
                image = torch.from_numpy(np.array(read_image(image_path))).permute(2, 0, 1)[None]
                label = torch.from_numpy(np.array(read_label(label_path, k))).long()
                probs = predict(model, normalize(image.to(info.device)), **inference_options(cfg))[0].cpu()
                c, g = confident_confusion(probs, label, threshold, k)
                confusion += c
                gt_count += g
                progress.update(number)
        finally:
            progress.close()
    run_info = {"checkpoint": args.checkpoint, "model": which, "split": args.split, "images": len(entries)}
    return (
        run_info
        | {"threshold": threshold}
        | summarize(confusion.numpy(), gt_count.numpy(), class_names(cfg.data))
    )


def print_report(result: dict) -> None:
    def pct(v: float | None) -> str:
        return "  -  " if v is None else f"{100 * v:5.1f}"

    r = result
    print(f"{r['model']} of {r['checkpoint']} on {r['images']} {r['split']} images, tau {r['threshold']}")
    print(f"{'class':<16} {'pixels':>10} {'coverage %':>11} {'correct %':>10}")
    for name, row in r["per_class"].items():
        print(f"{name:<16} {row['pixels']:>10} {pct(row['coverage']):>11} {pct(row['correct']):>10}")
    print(f"{'all':<16} {'':>10} {pct(r['coverage']):>11} {pct(r['precision']):>10}")
    print(
        f"{'objects (k > 0)':<16} {'':>10} {pct(r['object_coverage']):>11} {pct(r['object_precision']):>10}"
    )
    print(f"object pixels confidently called background: {pct(result['object_called_background']).strip()} %")


def write_output(path: str, result: dict) -> None:
    """The numbers as JSON, marked as ours and written atomically (the folder exists: run checked it)."""
    write_text_atomic(Path(path), json.dumps(result | {MARK_KEY: COMMAND}, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> None:
        args = parse_args(argv)
        result = run(args)
        print_report(result)
        if args.output:
            write_output(args.output, result)

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
