"""Train a DeepLabv3+ semantic segmentation model with one of the methods of imas.methods (train.method:
supervised, mean_teacher, imas, fixmatch, unimatch, cps), all through this one loop.

    imas-train --config exps/toy/imas.yaml [--opt key.path=value ...] [--run-dir DIR] [--seed N]
    torchrun --nproc_per_node 4 -m imas.train --config ...

(`python train_semi.py` and `torchrun ... train_semi.py` in a checkout run the same.)

An existing run directory is resumed from its latest.pth, under the settings that made it (other
result-changing settings are refused unless --resume-anyway); one process at a time holds a run directory
(run.lock). Outputs: config.yaml, train.log, metrics.jsonl, TensorBoard events, latest.pth and best.pth in the
run directory. What happens on a crash, a divergence or a misuse: docs/reliability.md.

What a run shows: train.log / the console (rank 0) starts with a banner (config, method, seed, world size,
device, precision, run directory), prints the means of the training scalars over each logging window, each
evaluation, each new best.pth, and ends with a summary (best epoch, best and final mIoU of every evaluated
model, wall time, where the files are). TensorBoard (the run directory is its log dir): train/* (the same
window means, train/lr, histograms of per-image values, the train/views panel), eval/* (mIoU and per-class
IoU of every evaluated model, the eval/views panel of the first val images), the config as text, and the
run's settings in the HParams tab once it ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imas.checkpoint import (
    TrainState,
    gather_rng_states,
    load_checkpoint,
    nonfinite_state,
    repair_best,
    resume_training_state,
    save_training_state,
)
from imas.config import Config, Precision, load_config, save_config, to_dict
from imas.data import build_datasets, build_train_loaders, build_val_loader, class_names, palette
from imas.data.loaders import to_device
from imas.data.preflight import check_data
from imas.dist import (
    DistInfo,
    all_gather_cat,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    broadcast_flag,
    cleanup,
    init_distributed,
    run_on_main,
)
from imas.errors import RunDirError, TrainingDiverged, UserError, user_message
from imas.inference import evaluate_model, inference_options, normalize, predict
from imas.logging import (
    HardnessHistory,
    Progress,
    RunWriter,
    WindowMeans,
    banner,
    format_duration,
    format_miou,
    format_number,
    setup_logging,
    summary,
    tag_part,
)
from imas.losses import build_supervised_loss
from imas.methods import LABELS, METHODS
from imas.metrics import ConfusionMatrix
from imas.models import build_model
from imas.precision import AUTOCAST_DTYPES, make_grad_scaler, optimizer_step, precision_warning
from imas.rundir import (
    LOCK_NAME,
    RunLock,
    check_run_dir,
    describe_changes,
    read_evaluations,
    remove_stale_temporaries,
    result_changes,
    truncate_metrics,
)
from imas.schedule import make_optimizer, poly_lr, set_lr
from imas.visualize import colorize, fit, format_notes

log = logging.getLogger("imas")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML, e.g. exps/toy/suponly.yaml")
    parser.add_argument(
        "--opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="overrides, e.g. optim.lr=0.01",
    )
    parser.add_argument(
        "--run-dir", default=None, help="output folder (default: train.run_dir or runs/<exp>)"
    )
    parser.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--resume-anyway",
        action="store_true",
        help="resume an existing run directory although result-changing settings differ from its "
        "checkpoint's (the changes are recorded in train.log and the checkpoint)",
    )
    return parser.parse_args(argv)


def default_run_dir(config_path: str) -> Path:
    """runs/<path below exps/ without .yaml>, e.g. exps/toy/imas.yaml -> runs/toy/imas."""
    path = Path(config_path).resolve().with_suffix("")
    parts = path.parts
    if "exps" in parts:
        return Path("runs", *parts[len(parts) - parts[::-1].index("exps") :])
    return Path("runs", path.name)


# ------------------------------------------------------------------------------------------- the loop


def train(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.opt)
    if args.seed is not None:
        cfg.train.seed = args.seed
    run_dir = Path(args.run_dir or cfg.train.run_dir or default_run_dir(args.config))
    check_run_dir(run_dir)
    info = init_distributed(args.device)
    lock: list[RunLock] = []  # rank 0's claim on the run directory, released however the run ends

    def claim() -> tuple[list[tuple[str, Any, Any]], list[str]]:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {run_dir} ({exc.strerror or exc})") from None
        claimed = RunLock.acquire(run_dir)
        lock.append(claimed)
        notes = []
        if claimed.took_over:
            notes.append(f"took over {LOCK_NAME} from {claimed.took_over}, which has ended")
        if claimed.warning:
            notes.append(claimed.warning)
        changes = check_resume_settings(run_dir / "latest.pth", cfg, args.resume_anyway)
        if not changes:  # under accepted changes, config.yaml follows the first checkpoint made under them
            save_config(cfg, run_dir / "config.yaml")
        removed = remove_stale_temporaries(run_dir)
        if removed:
            notes.append(f"removed temporary files of an interrupted write: {', '.join(removed)}")
        return changes, notes

    try:
        changes, notes = run_on_main(claim, info)
        run(cfg, info, run_dir, changes, notes, config_path=args.config, overrides=args.opt)
    finally:
        for held in lock:
            held.release()


def check_resume_settings(latest: Path, cfg: Config, resume_anyway: bool) -> list[tuple[str, Any, Any]]:
    """The result-changing settings in which `cfg` differs from the checkpoint it would resume; a
    RunDirError unless the user accepted them with --resume-anyway."""
    if not latest.is_file():
        return []
    changes = result_changes(load_checkpoint(latest, mmap=True).get("config", {}), cfg)
    if changes and not resume_anyway:
        raise RunDirError(
            f"run directory {latest.parent} holds a run made under other settings "
            f"({describe_changes(changes)}); use a new --run-dir (or train.run_dir) for these settings, "
            "or add --resume-anyway to continue this run under them (recorded in train.log)"
        )
    return changes


def run(
    cfg: Config,
    info: DistInfo,
    run_dir: Path,
    changes: list[tuple[str, Any, Any]],
    notes: list[str],
    config_path: str = "",
    overrides: Sequence[str] = (),
) -> None:
    """Build, resume, train, evaluate and checkpoint in a run directory that this process has claimed.
    config_path and overrides (--opt) are for the banner only."""
    started = time.perf_counter()
    barrier()
    setup_logging(run_dir, info.is_main)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    method_class = METHODS[cfg.train.method]
    evaluated_labels = [LABELS[name] for name in method_class.evaluated]
    log.info(
        banner(
            run_dir,
            config_path,
            overrides,
            cfg.train.method,
            evaluated_labels,
            cfg.train.seed,
            info.world_size,
            str(info.device),
            cfg.train.precision.value,
        )
    )
    slow = precision_warning(cfg.train.precision, info.device)
    if slow and info.is_main:
        log.warning(slow)
    for note in notes:
        log.warning(note)

    semi = method_class.uses_unlabeled
    # Every file of every split is checked before the first iteration (rank 0; a bad file stops all ranks).
    for warning in run_on_main(lambda: check_data(cfg.data, with_unlabeled=semi), info):
        log.warning(warning)

    # Every rank builds the same initial weights; the data and augmentation streams then differ per rank.
    torch.manual_seed(cfg.train.seed)
    datasets = build_datasets(cfg.data, with_unlabeled=semi)
    loaders = build_train_loaders(
        cfg.data, datasets, cfg.train.batch_size, cfg.train.seed, info.rank, info.world_size
    )
    val_loader = build_val_loader(cfg.data, datasets.val, info.rank, info.world_size)
    names = class_names(cfg.data)
    trained: dict[str, nn.Module] = {}
    for index, name in enumerate(method_class.trained):
        if index:  # a second network (CPS): what is not pretrained starts from another seed
            torch.manual_seed(cfg.train.seed + index)
        trained[name] = build_model(cfg, info)
    optimizer = make_optimizer(cfg, list(trained.values()))
    scaler = make_grad_scaler(cfg, info.device)
    criterion = build_supervised_loss(
        cfg.loss.kind.value, cfg.loss.ohem_thresh, cfg.loss.ohem_min_kept, cfg.loss.aux_weight
    )
    torch.manual_seed(cfg.train.seed + 1_000_003 * (info.rank + 1))
    # The method adds the models it keeps itself (an EMA teacher: a copy of the plain student, never wrapped).
    method = method_class(cfg, trained, criterion, info.device)
    models = method.models

    state = TrainState()
    resumed_epoch = 0
    latest, best = run_dir / "latest.pth", run_dir / "best.pth"
    saved_epoch: int | None = None  # the epoch latest.pth holds
    if latest.is_file():
        ckpt = load_checkpoint(latest)
        state = resume_training_state(latest, ckpt, cfg, info, models, optimizer, scaler)
        saved_epoch = resumed_epoch = state.epoch
        log.info("resumed from %s: %d epochs done, iteration %d", latest, state.epoch, state.iteration)
        if changes:
            described = describe_changes(changes, limit=100)
            log.warning("resuming under changed settings (--resume-anyway): %s", described)
            state.resumed_with_changes.append(
                {"epoch": state.epoch, "iteration": state.iteration, "changes": [list(c) for c in changes]}
            )
        if info.is_main:
            repair_best(best, latest, ckpt, state)
        del ckpt
    if info.is_main:
        dropped = truncate_metrics(run_dir / "metrics.jsonl", state.epoch)
        if dropped:
            log.info("dropped %d metrics.jsonl lines of epochs after the checkpoint", dropped)
    nets = dict(trained)  # the trained models as the step runs them
    if info.distributed:
        device_ids = [info.local_rank] if info.device.type == "cuda" else None
        nets = {name: DistributedDataParallel(net, device_ids=device_ids) for name, net in trained.items()}
    if cfg.train.compile:
        nets = compile_nets(nets)

    total_iters = cfg.train.epochs * loaders.iters_per_epoch
    log.info(
        "%d labeled, %d unlabeled, %d val images; %d epochs x %d iterations",
        len(datasets.labeled),
        datasets.unlabeled_count,
        len(datasets.val),
        cfg.train.epochs,
        loaders.iters_per_epoch,
    )
    writer = RunWriter(run_dir, enabled=info.is_main, purge_step=state.iteration)
    # The settings this attempt runs under (a resume under accepted changes logs its new ones).
    writer.text("config", f"```yaml\n{yaml.safe_dump(to_dict(cfg), sort_keys=False)}```", state.iteration)
    history = HardnessHistory(
        run_dir, enabled=info.is_main and "hardness" in method.per_image, resume_iteration=state.iteration
    )
    unlabeled_ids = datasets.unlabeled.ids if datasets.unlabeled is not None else []
    progress = Progress(state.iteration, total_iters)
    colours = palette(cfg.data)
    every = cfg.train.image_every
    # The validation panel's images: the first of the val split, the same at every evaluation (rank 0).
    shown_val = range(min(PANEL_ROWS, len(datasets.val)) if info.is_main and every > 0 else 0)
    val_samples = [datasets.val[i] | {"id": datasets.val.ids[i]} for i in shown_val]
    means = WindowMeans()  # the training scalars since the last log line
    window: dict[str, list[torch.Tensor]] = {}  # per-image values of every image since the last log line
    nonfinite = torch.zeros((), dtype=torch.bool, device=info.device)
    for model in trained.values():
        model.train()
    for epoch in range(state.epoch, cfg.train.epochs):
        loaders.set_epoch(epoch)
        unlabeled_batches = loaders.unlabeled if semi else [None] * loaders.iters_per_epoch
        for step, (labeled, unlabeled) in enumerate(zip(loaders.labeled, unlabeled_batches)):
            lr = poly_lr(cfg.optim.lr, state.iteration, total_iters, cfg.optim.poly_power)
            set_lr(optimizer, lr)
            batch = to_device(labeled, info.device, cfg.train.channels_last)
            u_batch = to_device(unlabeled, info.device, cfg.train.channels_last) if semi else None
            # A panel every `every` iterations and at the last one, to show what training ended on.
            due = every > 0 and (state.iteration % every == 0 or state.iteration + 1 == total_iters)
            panel = semi and info.is_main and due
            out = method.step(nets, batch, u_batch, keep_views=panel)
            for key, value in out.per_image.items():
                gathered = all_gather_cat(value)
                window.setdefault(key, []).append(gathered)
                if key == "hardness":
                    history.add(epoch, state.iteration, all_gather_cat(u_batch["index"]), gathered)
            if out.views:
                rows = format_notes(out.notes, PANEL_ROWS)
                writer.panel("train/views", out.views, colours, state.iteration, names, rows)
            loss, values = out.loss, out.scalars
            nonfinite |= ~torch.isfinite(loss.detach())
            optimizer_step(loss, optimizer, scaler)
            method.after_step(state.iteration, epoch)
            state.iteration += 1
            means.add(values)
            if state.iteration % cfg.train.log_every == 0 or step + 1 == loaders.iters_per_epoch:
                stop_if_diverged(nonfinite, info, state, epoch, latest, saved_epoch, cfg)
                history.flush(unlabeled_ids)
                window_means = means.pop(all_reduce_mean)  # the one host sync of the window's scalars
                log.info(
                    "epoch %d/%d %s lr %s %s",
                    epoch + 1,
                    cfg.train.epochs,
                    progress.line(state.iteration),
                    format_number(lr),
                    " ".join(f"{k} {format_number(v)}" for k, v in window_means.items()),
                )
                scalars = {f"train/{k}": v for k, v in window_means.items()} | {"train/lr": lr}
                writer.scalars(scalars, state.iteration)
                for key, values_seen in window.items():
                    writer.histogram(f"train/{key}", torch.cat(values_seen), state.iteration)
                window = {}
        stop_if_diverged(nonfinite, info, state, epoch, latest, saved_epoch, cfg)
        history.flush(unlabeled_ids)
        state.epoch = epoch + 1
        if cfg.train.compile:
            log.info("torch.compile: %d graphs compiled so far", compiled_graphs())

        # Without SyncBN each rank's BN running statistics drift apart (student and teacher alike): rank 0's
        # go to every rank, so that all evaluate, and rank 0 saves, the same models.
        for module in models.values():
            broadcast_buffers(module)
        # A finite loss does not make a finite state (BN statistics overflow first): check what would be
        # saved before it is evaluated or written, so that no broken epoch reaches metrics or checkpoints.
        bad = nonfinite_state(models, optimizer, info)
        if bad:
            raise TrainingDiverged(
                f"after epoch {state.epoch} the model or optimiser state holds NaN or infinite values "
                f"({len(bad)} tensors, e.g. {bad[0]}); nothing of this epoch was saved and "
                f"{kept_checkpoint(latest, saved_epoch)}; {divergence_advice(cfg)}"
            )
        new_best = False
        if state.epoch % cfg.train.eval_every == 0 or state.epoch == cfg.train.epochs:
            start = time.perf_counter()
            # The reported model last (metrics, best.pth); the others are evaluated and logged beside it:
            # eval/<label>_miou and eval/<label>/iou/<class>, and in its metrics.jsonl line under "others".
            others: dict[str, dict[str, Any]] = {}
            for other in method.evaluated[1:]:
                label = LABELS[other]
                other_confusion = evaluate_model(cfg, models[other], val_loader, info.device)
                other_miou = other_confusion.miou()
                scalars = {f"eval/{tag_part(label)}_miou": other_miou}
                writer.scalars(
                    scalars | iou_scalars(f"eval/{tag_part(label)}/iou", other_confusion, names),
                    state.iteration,
                )
                log.info("epoch %d %s mIoU %s", state.epoch, label, format_miou(other_miou))
                others[label] = other_confusion.to_dict(names)
            confusion = evaluate_model(cfg, models[method.reported], val_loader, info.device)
            miou = confusion.miou()
            new_best = miou > state.best_miou
            state.best_miou = max(state.best_miou, miou)
            if new_best:
                state.best_epoch = state.epoch
            log.info(
                "epoch %d eval %s mIoU %s (best %s) in %s\n%s",
                state.epoch,
                LABELS[method.reported],
                format_miou(miou),
                f"{format_miou(state.best_miou)} at epoch {state.best_epoch}"
                if state.best_epoch
                else "none yet",
                format_duration(time.perf_counter() - start),
                confusion.table(names),
            )
            scalars = {"eval/miou": miou, "eval/best_miou": state.best_miou}
            writer.scalars(scalars | iou_scalars("eval/iou", confusion, names), state.iteration)
            record = {"epoch": state.epoch, "iteration": state.iteration, "model": LABELS[method.reported]}
            record |= confusion.to_dict(names) | {"best_miou": state.best_miou}
            writer.evaluation(record | ({"others": others} if others else {}))
            if val_samples:
                shown = {LABELS[name]: models[name] for name in method.evaluated}
                columns, rows = val_panel(cfg, shown, val_samples, colours, info.device)
                writer.panel("eval/views", columns, colours, state.iteration, names, rows, legend=True)

        rng_states = gather_rng_states(info)
        if info.is_main:
            # latest.pth first: it names the best epoch, so a stop before best.pth is written is repaired
            # on resume from latest.pth's own weights (imas.checkpoint.repair_best).
            save_training_state(latest, cfg, state, models, optimizer, scaler, rng_states)
            if new_best:
                save_training_state(best, cfg, state, models, None, None, None)
                log.info(
                    "new best: %s mIoU %s at epoch %d -> %s",
                    LABELS[method.reported],
                    format_miou(state.best_miou),
                    state.epoch,
                    best,
                )
            if changes:  # the first checkpoint made under settings accepted with --resume-anyway
                save_config(cfg, run_dir / "config.yaml")
                changes = []
        saved_epoch = state.epoch
        barrier()
    writer.hparams(
        {
            "method": cfg.train.method,
            "backbone": cfg.model.backbone,
            "labeled_split": cfg.data.labeled_split,
            "seed": cfg.train.seed,
            "batch_size": cfg.train.batch_size,
            "world_size": info.world_size,
            "lr": cfg.optim.lr,
            "epochs": cfg.train.epochs,
        },
        ["eval/best_miou", "eval/miou"],
    )
    writer.close()
    if info.is_main:  # the numbers are metrics.jsonl's, read back, whatever attempts wrote them
        records = read_evaluations(run_dir)
        log.info(
            summary(
                records,
                evaluated_labels,
                state.epoch,
                time.perf_counter() - started,
                run_dir,
                resumed_epoch,
                history.path if history.enabled else None,
            )
        )


# ------------------------------------------------------------------------------------- what is shown

PANEL_ROWS = 4  # images shown by the train/views and eval/views panels
VAL_CELL = 192  # px: the height of the validation panel's cells (whole val images, scaled to fit)


def compile_nets(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """torch.compile the modules the step trains through (train.compile).

    The DDP wrapper, where there is one, is compiled rather than wrapped around a compiled module: dynamo
    then splits the graph at DDP's bucket boundaries, so gradient communication still overlaps the backward.
    The plain modules in method.models stay as they are: checkpoints keep their key names (no `_orig_mod.`
    prefix), so compiled and eager runs resume each other, and the forwards without gradient (an EMA
    teacher, the student's eval-mode pass, evaluation) run eagerly. Methods call their networks with
    batches of several sizes (iMAS's CutMix view holds only the groups that fired; FixMatch runs labeled +
    weak, then strong): dynamo's automatic dynamic shapes recompile at the first other size with a symbolic
    batch, so the graphs stay few (two in the test's iMAS run: the convolutions guard a batch range), and
    `compiled_graphs` counts them, recompilations included.
    """
    # A fresh start, so that the count is this run's and no earlier compile in the process (tests train many
    # runs in one) fills dynamo's per-function cache of compiled variants.
    torch._dynamo.reset()
    _dynamo_counters().clear()
    return {name: torch.compile(net) for name, net in nets.items()}


def _dynamo_counters() -> Any:
    from torch._dynamo.utils import counters  # only touched when compiling

    return counters


def compiled_graphs() -> int:
    """How many graphs torch.compile has built since `compile_nets` (its recompilations included)."""
    return int(_dynamo_counters()["stats"]["unique_graphs"])


def iou_scalars(prefix: str, confusion: ConfusionMatrix, names: Sequence[str]) -> dict[str, float]:
    """Per-class IoU as TensorBoard scalars {prefix/<class>: IoU} (NaN for a class that is absent from both
    ground truth and prediction, which RunWriter.scalars skips)."""
    return {f"{prefix}/{tag_part(name)}": value for name, value in zip(names, confusion.iou().tolist())}


def val_panel(
    cfg: Config,
    models: dict[str, nn.Module],
    samples: Sequence[dict[str, Any]],
    colours: Sequence[tuple[int, int, int]],
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
    """The eval/views panel's columns (image, ground truth, then each model's prediction, the reported one
    first, as `models` orders them) and row notes (each image's id), as uint8 RGB [N, 3, VAL_CELL, width].

    Each model predicts each whole image as the evaluation does (cfg.eval's mode, scales and flip). The
    images are shrunk or enlarged to VAL_CELL px high (all to one width; aspect kept, the rest grey):
    photos bilinearly, label maps nearest-neighbour after colouring. Run on rank 0 alone: the models are the
    plain modules, whose eval-mode forward needs no other process.
    """
    aspect = max(s["image"].shape[2] / s["image"].shape[1] for s in samples)
    height, width = VAL_CELL, min(3 * VAL_CELL, max(VAL_CELL // 2, round(VAL_CELL * aspect)))
    columns: dict[str, list[torch.Tensor]] = {"image": [], "ground truth": []}
    # The reported model's column says so where there are others (its mIoU is eval/miou).
    headers = {
        label: f"{label} (reported)" if i == 0 and len(models) > 1 else label
        for i, label in enumerate(models)
    }
    columns |= {headers[label]: [] for label in models}
    for sample in samples:
        columns["image"].append(fit(sample["image"], height, width, smooth=True))
        columns["ground truth"].append(fit(colorize(sample["mask"][None], colours)[0], height, width, False))
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    for label, model in models.items():
        was_training = model.training
        model.eval()
        try:
            for sample in samples:
                image = normalize(sample["image"][None].to(device))
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    labels = predict(model, image, **inference_options(cfg)).argmax(1).cpu()
                columns[headers[label]].append(fit(colorize(labels, colours)[0], height, width, smooth=False))
        finally:
            model.train(was_training)
    rows = [[str(s["id"])] for s in samples]
    return {name: torch.stack(images) for name, images in columns.items()}, rows


def kept_checkpoint(latest: Path, saved_epoch: int | None) -> str:
    """What a stopped run leaves: 'runs/x/latest.pth (epoch 3, checked finite when written) is kept', or 'no
    checkpoint was written'."""
    if saved_epoch is None:
        return "no checkpoint was written"
    return f"{latest} (epoch {saved_epoch}, checked finite when written) is kept"


def divergence_advice(cfg: Config) -> str:
    fp32 = "" if cfg.train.precision is Precision.fp32 else " or use train.precision fp32"
    return f"lower optim.lr (now {cfg.optim.lr:g}){fp32}"


def stop_if_diverged(
    nonfinite: torch.Tensor,
    info: DistInfo,
    state: TrainState,
    epoch: int,
    latest: Path,
    saved_epoch: int | None,
    cfg: Config,
) -> None:
    """Stop before a NaN/inf loss can reach a checkpoint (one host sync, at logging time only)."""
    if broadcast_flag(bool(nonfinite.item()), info.device):
        raise TrainingDiverged(
            f"the loss became NaN or infinite before iteration {state.iteration} in epoch {epoch + 1}; "
            f"{kept_checkpoint(latest, saved_epoch)}; {divergence_advice(cfg)}"
        )


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption or scancel, docker stop, torchrun stopping its workers), raised so
    that the run ends like one interrupted by Ctrl-C: the lock released, the last checkpoint kept."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        train(args)
    except UserError as exc:
        # One sentence per run: an error that rank 0 found and shared is printed by rank 0 only.
        if int(os.environ.get("RANK", "0")) == 0 or not getattr(exc, "shared", False):
            print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{how}; starting the same command again resumes from the last checkpoint", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
