"""Train a DeepLabv3+ semantic segmentation model with one of the methods of imas.methods (train.method:
supervised, mean_teacher, imas, fixmatch, unimatch, cps), all through this one loop.

    imas-train --config exps/toy/imas.yaml [--opt key.path=value ...] [--run-dir DIR] [--seed N]
    torchrun --nproc_per_node 4 -m imas.train --config ...

(`python train_semi.py` and `torchrun ... train_semi.py` in a checkout run the same.)

An existing run directory is resumed from its latest.pth, under the settings that made it (other
result-changing settings are refused unless --resume-anyway); one process at a time holds a run directory
(run.lock). Outputs: config.yaml, train.log, metrics.jsonl, TensorBoard events, latest.pth and best.pth in the
run directory. What happens on a crash, a divergence or a misuse: docs/reliability.md.
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
from imas.config import Config, Precision, load_config, save_config
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
from imas.inference import evaluate_model
from imas.logging import HardnessHistory, Progress, RunWriter, setup_logging
from imas.losses import build_supervised_loss
from imas.methods import LABELS, METHODS
from imas.models import build_model
from imas.precision import make_grad_scaler, optimizer_step, precision_warning
from imas.rundir import (
    LOCK_NAME,
    RunLock,
    check_run_dir,
    describe_changes,
    remove_stale_temporaries,
    result_changes,
    truncate_metrics,
)
from imas.schedule import make_optimizer, poly_lr, set_lr

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
        run(cfg, info, run_dir, changes, notes)
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
) -> None:
    """Build, resume, train, evaluate and checkpoint in a run directory that this process has claimed."""
    barrier()
    setup_logging(run_dir, info.is_main)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    log.info("run %s on %s x %d (%s)", run_dir, info.device, info.world_size, cfg.train.precision.value)
    slow = precision_warning(cfg.train.precision, info.device)
    if slow and info.is_main:
        log.warning(slow)
    for note in notes:
        log.warning(note)

    method_class = METHODS[cfg.train.method]
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
    latest, best = run_dir / "latest.pth", run_dir / "best.pth"
    saved_epoch: int | None = None  # the epoch latest.pth holds
    if latest.is_file():
        ckpt = load_checkpoint(latest)
        state = resume_training_state(latest, ckpt, cfg, info, models, optimizer, scaler)
        saved_epoch = state.epoch
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
    history = HardnessHistory(
        run_dir, enabled=info.is_main and "hardness" in method.per_image, resume_iteration=state.iteration
    )
    unlabeled_ids = datasets.unlabeled.ids if datasets.unlabeled is not None else []
    progress = Progress(state.iteration, total_iters)
    colours = palette(cfg.data)
    window: dict[str, list[torch.Tensor]] = {}  # per-image values of every image since the last log line
    nonfinite = torch.zeros((), dtype=torch.bool, device=info.device)
    for model in trained.values():
        model.train()
    for epoch in range(state.epoch, cfg.train.epochs):
        loaders.set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}
        unlabeled_batches = loaders.unlabeled if semi else [None] * loaders.iters_per_epoch
        for step, (labeled, unlabeled) in enumerate(zip(loaders.labeled, unlabeled_batches)):
            lr = poly_lr(cfg.optim.lr, state.iteration, total_iters, cfg.optim.poly_power)
            set_lr(optimizer, lr)
            batch = to_device(labeled, info.device, cfg.train.channels_last)
            u_batch = to_device(unlabeled, info.device, cfg.train.channels_last) if semi else None
            every = cfg.train.image_every
            panel = semi and info.is_main and every > 0 and state.iteration % every == 0
            out = method.step(nets, batch, u_batch, keep_views=panel)
            for key, value in out.per_image.items():
                gathered = all_gather_cat(value)
                window.setdefault(key, []).append(gathered)
                if key == "hardness":
                    history.add(epoch, state.iteration, all_gather_cat(u_batch["index"]), gathered)
            if out.views:
                writer.panel("train/views", out.views, colours, state.iteration)
            loss, values = out.loss, out.scalars
            nonfinite |= ~torch.isfinite(loss.detach())
            optimizer_step(loss, optimizer, scaler)
            method.after_step(state.iteration, epoch)
            state.iteration += 1
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value.float()
            if state.iteration % cfg.train.log_every == 0 or step + 1 == loaders.iters_per_epoch:
                stop_if_diverged(nonfinite, info, state, epoch, latest, saved_epoch, cfg)
                history.flush(unlabeled_ids)
                means = {k: all_reduce_mean(v / (step + 1)).item() for k, v in sums.items()}
                log.info(
                    "epoch %d/%d %s lr %.3g %s",
                    epoch + 1,
                    cfg.train.epochs,
                    progress.line(state.iteration),
                    lr,
                    " ".join(f"{k} {v:.4f}" for k, v in means.items()),
                )
                writer.scalars({f"train/{k}": v for k, v in means.items()} | {"lr": lr}, state.iteration)
                for key, values_seen in window.items():
                    writer.histogram(f"train/{key}", torch.cat(values_seen), state.iteration)
                window = {}
        stop_if_diverged(nonfinite, info, state, epoch, latest, saved_epoch, cfg)
        history.flush(unlabeled_ids)
        state.epoch = epoch + 1

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
            # The reported model first (metrics, best.pth); the others are logged beside it.
            for other in method.evaluated[1:]:
                other_miou = evaluate_model(cfg, models[other], val_loader, info.device).miou()
                writer.scalars({f"eval/{LABELS[other].replace(' ', '_')}_miou": other_miou}, state.iteration)
                log.info("epoch %d %s mIoU %.2f", state.epoch, LABELS[other], 100 * other_miou)
            confusion = evaluate_model(cfg, models[method.reported], val_loader, info.device)
            miou = confusion.miou()
            new_best = miou > state.best_miou
            state.best_miou = max(state.best_miou, miou)
            if new_best:
                state.best_epoch = state.epoch
            log.info(
                "epoch %d eval mIoU %.2f (best %.2f) in %.1fs\n%s",
                state.epoch,
                100 * miou,
                100 * state.best_miou,
                time.perf_counter() - start,
                confusion.table(names),
            )
            writer.scalars({"eval/miou": miou, "eval/best_miou": state.best_miou}, state.iteration)
            record = {"epoch": state.epoch, "iteration": state.iteration, "model": LABELS[method.reported]}
            writer.evaluation(record | confusion.to_dict(names) | {"best_miou": state.best_miou})

        rng_states = gather_rng_states(info)
        if info.is_main:
            # latest.pth first: it names the best epoch, so a stop before best.pth is written is repaired
            # on resume from latest.pth's own weights (imas.checkpoint.repair_best).
            save_training_state(latest, cfg, state, models, optimizer, scaler, rng_states)
            if new_best:
                save_training_state(best, cfg, state, models, None, None, None)
            if changes:  # the first checkpoint made under settings accepted with --resume-anyway
                save_config(cfg, run_dir / "config.yaml")
                changes = []
        saved_epoch = state.epoch
        barrier()
    writer.close()
    log.info(
        "done: best mIoU %.2f after %d epochs; checkpoints in %s", 100 * state.best_miou, state.epoch, run_dir
    )


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
