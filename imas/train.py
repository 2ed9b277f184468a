"""Train a DeepLabv3+ semantic segmentation model with one of the methods of imas.methods (train.method), all
through this one loop.

    imas-train --config exps/toy/imas.yaml [--opt key.path=value ...] [--run-dir DIR] [--seed N]
    torchrun --nproc_per_node 4 -m imas.train --config ...

(`imas-train`, `python train_semi.py` and `torchrun ... train_semi.py` in a checkout parse the command line
in imas.arguments before torch is imported, then run `main`.)

An existing run directory is resumed from its latest.pth, under the settings that made it (other
result-changing settings are refused unless --resume-anyway); one process at a time holds a run directory
(run.lock); a start that stops before training begins removes what it created (imas.rundir.StartUndo).
What a run writes and shows: docs/run-directory.md; on a crash, a divergence or a misuse:
docs/reliability.md.

The loop reads top-down: `main` (arguments, signals) -> `train` (the claim on the run directory) -> `setup`
(-> Run) -> `fit`, which repeats `train_one_epoch`, `end_epoch`, `evaluate` (-> EvalRecord), `record` and
`save_checkpoints`, then `finish`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imas.arguments import parse_train
from imas.checkpoint import (
    TrainState,
    gather_rng_states,
    load_checkpoint,
    method_state,
    repair_best,
    resume_training_state,
    rng_untouched,
    save_training_state,
)
from imas.cli import on_exit, run_command
from imas.compile import compile_nets, compiled_graphs
from imas.config import Config, save_config, to_dict
from imas.data import build_datasets, build_train_loaders, build_val_loader, class_names, palette
from imas.data.datasets import split_digests
from imas.data.loaders import TrainLoaders, to_device
from imas.data.preflight import check_run
from imas.dist import (
    DistInfo,
    all_gather_cat,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    cleanup,
    init_distributed,
    run_on_main,
)
from imas.divergence import DivergenceGuard
from imas.errors import RunDirError
from imas.experiment import load_experiment
from imas.inference import evaluate_model
from imas.logging import (
    BEST_MIOU_TAG,
    METRICS_NAME,
    MIOU_TAG,
    SCALARS_NAME,
    PerImageWriter,
    Progress,
    RunWriter,
    WindowMeans,
    banner,
    eval_scalars,
    format_duration,
    format_miou,
    format_number,
    setup_logging,
    summary,
)
from imas.losses import build_supervised_loss
from imas.methods import METHODS, Method, StepOutput
from imas.methods import Progress as StepProgress  # where training is; imas.logging's Progress prints it
from imas.metrics import ConfusionMatrix
from imas.models import build_model
from imas.panels import PANEL_ROWS, val_panel
from imas.precision import make_grad_scaler, optimizer_step, precision_warning
from imas.rundir import (
    LOCK_NAME,
    RunLock,
    StartUndo,
    check_latest_method,
    check_run_dir,
    describe_changes,
    read_evaluations,
    remove_stale_temporaries,
    result_changes,
    truncate_metrics,
    truncate_per_image,
    truncate_train_scalars,
)
from imas.schedule import make_optimizer, poly_lr, set_lr
from imas.visualize import format_notes

log = logging.getLogger("imas")

RESUME_HINT = "starting the same command again resumes from the last checkpoint"


# ------------------------------------------------------------------- main: arguments, claim, signals


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (imas.arguments: parsed there without torch for `imas-train --help`)."""
    return parse_train(argv)


def default_run_dir(config_path: str) -> Path:
    """runs/<path below exps/ without .yaml>, e.g. exps/toy/imas.yaml -> runs/toy/imas."""
    path = Path(config_path).resolve().with_suffix("")
    parts = path.parts
    if "exps" in parts:
        return Path("runs", *parts[len(parts) - parts[::-1].index("exps") :])
    return Path("runs", path.name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(
        lambda: train(args), terminate=True, interrupted=RESUME_HINT, quiet_error=printed_by_rank_0
    )


def printed_by_rank_0(exc: Exception) -> bool:
    """One sentence per run: an error that rank 0 found and shared is printed by rank 0 only."""
    return int(os.environ.get("RANK", "0")) != 0 and getattr(exc, "shared", False)


def train(args: argparse.Namespace) -> None:
    """Load the config, claim the run directory (rank 0), then set up and fit."""
    cfg = load_experiment(args.config, args.opt)
    run_dir = Path(args.run_dir or cfg.train.run_dir or default_run_dir(args.config))
    check_run_dir(run_dir)
    info = init_distributed(args.device)
    on_exit(cleanup)
    start = StartUndo(run_dir)  # a start that stops before training leaves nothing behind
    changes, notes = run_on_main(lambda: claim(run_dir, cfg, args.resume_anyway, start), info)
    run = setup(cfg, info, run_dir, changes, notes, config_path=args.config, overrides=args.opt)
    start.began()
    fit(run)


def claim(
    run_dir: Path, cfg: Config, resume_anyway: bool, start: StartUndo
) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """Create and lock the run directory (released however the command ends); return the settings accepted
    with --resume-anyway and the notes to log. What it creates is removed if the start stops before training
    (`start`)."""
    on_exit(start.remove_folders)  # runs last: after the lock's release
    try:
        start.make_folders()
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir} ({exc.strerror or exc})") from None
    claimed = RunLock.acquire(run_dir)
    on_exit(claimed.release)
    start.locked(exclusive=not claimed.warning)
    on_exit(start.remove_files)  # runs first, the lock still held
    notes = []
    if claimed.took_over:
        notes.append(f"took over {LOCK_NAME} from {claimed.took_over}, which has ended")
    if claimed.warning:
        notes.append(claimed.warning)
    changes = check_resume_settings(run_dir / "latest.pth", cfg, resume_anyway)
    if not changes:  # under accepted changes, config.yaml follows the first checkpoint made under them
        save_config(cfg, run_dir / "config.yaml")
    removed = remove_stale_temporaries(run_dir, METHODS[cfg.train.method].per_image)
    if removed:
        notes.append(f"removed temporary files of an interrupted write: {', '.join(removed)}")
    return changes, notes


def check_resume_settings(latest: Path, cfg: Config, resume_anyway: bool) -> list[tuple[str, Any, Any]]:
    """The result-changing settings in which `cfg` differs from the checkpoint it would resume; a
    RunDirError unless the user accepted them with --resume-anyway."""
    if not latest.is_file():
        return []
    ckpt = load_checkpoint(latest, mmap=True)
    check_latest_method(latest.parent, ckpt)  # another run's checkpoint put here: say so, not "settings"
    changes = result_changes(ckpt.get("config", {}), cfg)
    changes += edited_splits(ckpt.get("split_digests", {}), split_digests(cfg.data), [c[0] for c in changes])
    if changes and not resume_anyway:
        raise RunDirError(
            f"run directory {latest.parent} holds a run made under other settings "
            f"({describe_changes(changes)}); use a new --run-dir (or train.run_dir) for these settings, "
            "or add --resume-anyway to continue this run under them (recorded in train.log)"
        )
    return changes


def edited_splits(
    saved: dict[str, str], current: dict[str, str], changed_keys: list[str]
) -> list[tuple[str, Any, Any]]:
    """The split files whose bytes differ from those the checkpoint trained on, as settings changes
    ("data.labeled_split contents", "sha256 <first 12>", ...), where the path itself is unchanged (a new path
    is a change already). Checkpoints that predate the digests compare nothing."""
    return [
        (f"{key} contents", f"sha256 {saved[key][:12]}", f"sha256 {digest[:12]}")
        for key, digest in current.items()
        if key in saved and saved[key] != digest and key not in changed_keys
    ]


# ----------------------------------------------------------------------- one step, for every caller


@dataclass
class Trainer:
    """What one optimisation step needs; the loop, tools/benchmark.py and tools/gpu_check.py build it alike.

    trained: the plain modules the optimiser trains (checkpoint keys); nets: the same as the step runs them
    (DDP-wrapped and/or compiled, once `wrap_nets` ran); method.models: every model a checkpoint keeps."""

    method: Method
    trained: dict[str, nn.Module]
    nets: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def build_trainer(cfg: Config, info: DistInfo, pretrained: bool = True) -> Trainer:
    """The method's networks, optimiser, scaler and the method itself. The first network draws from the
    global RNG as the caller seeded it (the loop: train.seed), each next one from train.seed + its index; the
    global RNG then moves to this rank's step stream."""
    method_class = METHODS[cfg.train.method]
    trained: dict[str, nn.Module] = {}
    for index, network in enumerate(n for n in method_class.networks if n.trained):
        if index:  # a second network (CPS): what is not pretrained starts from another seed
            torch.manual_seed(cfg.train.seed + index)
        trained[network.key] = build_model(cfg, info, pretrained=pretrained and network.pretrained)
    optimizer = make_optimizer(cfg, list(trained.values()))
    scaler = make_grad_scaler(cfg, info.device)
    criterion = build_supervised_loss(
        cfg.loss.kind.value, cfg.loss.ohem_thresh, cfg.loss.ohem_min_kept, cfg.loss.aux_weight
    )
    torch.manual_seed(cfg.train.seed + 1_000_003 * (info.rank + 1))
    # The method adds the models it keeps itself (an EMA teacher: a copy of the plain student, never wrapped).
    method = method_class(cfg, trained, criterion, info.device)
    return Trainer(method, trained, dict(trained), optimizer, scaler)


def wrap_nets(trainer: Trainer, info: DistInfo, compile: bool) -> None:
    """The trained networks as the step runs them: in DDP when distributed (after a resume loaded them:
    DDP copies rank 0's weights to every rank), compiled when asked."""
    nets = dict(trainer.trained)
    if info.distributed:
        device_ids = [info.local_rank] if info.device.type == "cuda" else None
        nets = {name: DistributedDataParallel(net, device_ids=device_ids) for name, net in nets.items()}
    trainer.nets = compile_nets(nets) if compile else nets


def train_step(
    trainer: Trainer,
    labeled: dict[str, torch.Tensor],
    unlabeled: dict[str, torch.Tensor] | None,
    progress: StepProgress,
    keep_views: bool = False,
) -> StepOutput:
    """One iteration: the method's step, the optimiser step (under the gradient scaler) and after_step."""
    out = trainer.method.step(trainer.nets, labeled, unlabeled, progress, keep_views=keep_views)
    optimizer_step(out.loss, trainer.optimizer, trainer.scaler)
    trainer.method.after_step(progress)
    return out


# -------------------------------------------------------------------------------------- setup -> Run


def labels_of(method_class: type[Method]) -> list[str]:
    """The labels of the models a method evaluates, the reported one first."""
    return [network.label for network in method_class.evaluated()]


@dataclass
class Run:
    """Everything one training attempt in a claimed run directory holds."""

    cfg: Config
    info: DistInfo
    run_dir: Path
    trainer: Trainer
    loaders: TrainLoaders
    val_loader: Any
    class_names: list[str]
    colours: list[tuple[int, int, int]]
    unlabeled_ids: list[str]
    val_samples: list[dict[str, Any]]  # the validation panel's images (rank 0)
    state: TrainState
    guard: DivergenceGuard
    writer: RunWriter
    history: PerImageWriter
    progress: Progress
    total_iters: int
    changes: list[tuple[str, Any, Any]]  # accepted with --resume-anyway, until a checkpoint holds them
    resumed_epoch: int = 0
    started: float = field(default_factory=time.perf_counter)
    wall_before: float = 0.0  # the training seconds of the attempts before this one

    @property
    def method(self) -> Method:
        return self.trainer.method

    def labels(self) -> list[str]:
        """The evaluated models' labels, the reported one first."""
        return labels_of(type(self.method))

    def wall_s(self) -> float:
        """Seconds of training up to now, over every attempt."""
        return self.wall_before + time.perf_counter() - self.started


def setup(
    cfg: Config,
    info: DistInfo,
    run_dir: Path,
    changes: list[tuple[str, Any, Any]],
    notes: list[str],
    config_path: str = "",
    overrides: Sequence[str] = (),
) -> Run:
    """Check the data, build the loaders and the trainer, resume from latest.pth, open the outputs.
    config_path and overrides (--opt) are for the banner only."""
    started = time.perf_counter()
    barrier()
    setup_logging(run_dir, info.is_main)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    announce(cfg, info, run_dir, notes, config_path, overrides)
    semi = METHODS[cfg.train.method].uses_unlabeled
    # The pretrained file and every file of every split are checked before the first iteration, as
    # `imas-data check` checks them (rank 0; a bad file stops all ranks).
    for warning in run_on_main(lambda: check_run(cfg, semi, world_size=info.world_size), info):
        log.warning(warning)

    # Every rank builds the same initial weights; the data and augmentation streams then differ per rank.
    torch.manual_seed(cfg.train.seed)
    datasets = build_datasets(cfg.data, with_unlabeled=semi)
    loaders = build_train_loaders(
        cfg.data, datasets, cfg.train.batch_size, cfg.train.seed, info.rank, info.world_size
    )
    val_loader = build_val_loader(cfg.data, datasets.val, info.rank, info.world_size)
    trainer = build_trainer(cfg, info)
    state, saved_epoch = resume(cfg, info, run_dir, trainer, changes)
    state.split_digests = split_digests(cfg.data)  # what this attempt trains on (checked at a resume)
    wrap_nets(trainer, info, cfg.train.compile)
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
    writer.layout(class_names(cfg.data))  # the custom-scalars dashboard's charts
    shown = range(min(PANEL_ROWS, len(datasets.val)) if info.is_main and cfg.train.image_every > 0 else 0)
    return Run(
        cfg=cfg,
        info=info,
        run_dir=run_dir,
        trainer=trainer,
        loaders=loaders,
        val_loader=val_loader,
        class_names=class_names(cfg.data),
        colours=palette(cfg.data),
        unlabeled_ids=datasets.unlabeled.ids if datasets.unlabeled is not None else [],
        val_samples=[datasets.val[i] | {"id": datasets.val.ids[i]} for i in shown],
        state=state,
        guard=DivergenceGuard(cfg, info, run_dir / "latest.pth", saved_epoch),
        writer=writer,
        history=PerImageWriter(run_dir, trainer.method.per_image, info.is_main),
        progress=Progress(state.iteration, cfg.train.epochs * loaders.iters_per_epoch),
        total_iters=cfg.train.epochs * loaders.iters_per_epoch,
        changes=changes,
        resumed_epoch=state.epoch,
        started=started,
        wall_before=state.wall_s,
    )


def announce(
    cfg: Config, info: DistInfo, run_dir: Path, notes: list[str], config_path: str, overrides: Sequence[str]
) -> None:
    """The banner, then the warnings this attempt starts with (slow precision, the claim's notes)."""
    labels = labels_of(METHODS[cfg.train.method])
    device, precision = str(info.device), cfg.train.precision.value
    seed, world = cfg.train.seed, info.world_size
    log.info(
        banner(run_dir, config_path, overrides, cfg.train.method, labels, seed, world, device, precision)
    )
    slow = precision_warning(cfg.train.precision, info.device)
    if slow and info.is_main:
        log.warning(slow)
    for note in notes:
        log.warning(note)


def resume(
    cfg: Config, info: DistInfo, run_dir: Path, trainer: Trainer, changes: list[tuple[str, Any, Any]]
) -> tuple[TrainState, int | None]:
    """Load latest.pth, where there is one, into the trainer; repair best.pth and cut metrics.jsonl,
    train_scalars.jsonl and the per-image histories back to what the checkpoint covers (rank 0). Returns the
    state and the epoch latest.pth holds (or None)."""
    latest, state, saved_epoch = run_dir / "latest.pth", TrainState(), None
    if latest.is_file():
        ckpt = load_checkpoint(latest)
        models = trainer.method.models
        ema_sources = {n.key: n.ema_of for n in trainer.method.networks if n.ema_of}
        state = resume_training_state(
            latest, ckpt, cfg, info, models, trainer.optimizer, trainer.scaler, ema_sources
        )
        trainer.method.load_state_dict(method_state(latest, ckpt, trainer.method.state_dict()))
        saved_epoch = state.epoch
        log.info("resumed from %s: %d epochs done, iteration %d", latest, state.epoch, state.iteration)
        if changes:
            described = describe_changes(changes, limit=100)
            log.warning("resuming under changed settings (--resume-anyway): %s", described)
            state.resumed_with_changes.append(
                {"epoch": state.epoch, "iteration": state.iteration, "changes": [list(c) for c in changes]}
            )
        if info.is_main:
            repair_best(run_dir / "best.pth", latest, ckpt, state)
        del ckpt
    run_on_main(lambda: cut_back(run_dir, trainer.method.per_image, state), info)
    return state, saved_epoch


def cut_back(run_dir: Path, per_image: Sequence[str], state: TrainState) -> None:
    """Drop from the appended files what an interrupted attempt wrote past the checkpoint, and a last line a
    kill or a full disk cut short, each drop logged (rank 0; a damaged line is one sentence)."""
    dropped = truncate_metrics(run_dir / METRICS_NAME, state.epoch)
    if dropped:
        log.info("dropped %d metrics.jsonl lines of epochs after the checkpoint or cut short", dropped)
    dropped = truncate_train_scalars(run_dir, state.iteration)
    if dropped:
        log.info("dropped %d %s lines of iterations after the checkpoint or cut short", dropped, SCALARS_NAME)
    for name in per_image:
        dropped = truncate_per_image(run_dir, name, state.iteration)
        if dropped:
            log.info("dropped %d %s.csv rows of iterations after the checkpoint or cut short", dropped, name)


# ------------------------------------------------------------------------------------------- the loop


def fit(run: Run) -> None:
    """Train the remaining epochs: each trained, checked, evaluated when due, recorded and saved."""
    cfg, state = run.cfg, run.state
    for model in run.trainer.trained.values():
        model.train()
    for epoch in range(state.epoch, cfg.train.epochs):
        train_one_epoch(run, epoch)
        end_epoch(run, epoch)
        new_best = False
        if state.epoch % cfg.train.eval_every == 0 or state.epoch == cfg.train.epochs:
            with rng_untouched():  # so train.eval_every and train.image_every leave the weights as they are
                result = evaluate(run)
                new_best = result.miou > state.best_miou
                state.best_miou = max(state.best_miou, result.miou)
                if new_best:
                    state.best_epoch = state.epoch
                record(run, result)
        save_checkpoints(run, new_best)
    finish(run)


def train_one_epoch(run: Run, epoch: int) -> None:
    """The iterations of one epoch, with a console line, TensorBoard scalars and histograms and a line of
    train_scalars.jsonl at the end of each logging window."""
    cfg, info, state, trainer = run.cfg, run.info, run.state, run.trainer
    semi, every = trainer.method.uses_unlabeled, cfg.train.image_every
    run.loaders.set_epoch(epoch)
    unlabeled_batches = run.loaders.unlabeled if semi else [None] * run.loaders.iters_per_epoch
    means = WindowMeans()  # the training scalars since the last log line
    window: dict[str, list[torch.Tensor]] = {}  # per-image values of every image since the last log line
    for step, (labeled, unlabeled) in enumerate(zip(run.loaders.labeled, unlabeled_batches)):
        lr = poly_lr(cfg.optim.lr, state.iteration, run.total_iters, cfg.optim.poly_power)
        set_lr(trainer.optimizer, lr)
        batch = to_device(labeled, info.device, cfg.train.channels_last)
        u_batch = to_device(unlabeled, info.device, cfg.train.channels_last) if semi else None
        # A panel every `every` iterations and at the last one, to show what training ended on.
        due = every > 0 and (state.iteration % every == 0 or state.iteration + 1 == run.total_iters)
        progress = StepProgress(
            state.iteration, epoch, run.loaders.iters_per_epoch, cfg.train.epochs, run.loaders.labeled_iters
        )
        out = train_step(trainer, batch, u_batch, progress, keep_views=semi and info.is_main and due)
        run.guard.watch(out.loss)
        if out.per_image.keys() != set(trainer.method.per_image):  # the same on every rank: none waits
            declared = trainer.method.per_image
            raise ValueError(
                f"the step returned per-image {sorted(out.per_image)}, not the declared {declared}"
            )
        if out.per_image:
            gathered = {key: all_gather_cat(value) for key, value in out.per_image.items()}
            run.history.add(epoch, state.iteration, all_gather_cat(u_batch["index"]), gathered)
            for key, value in gathered.items():
                window.setdefault(key, []).append(value)
        if out.views:
            rows = format_notes(out.notes, PANEL_ROWS)
            run.writer.panel("train/views", out.views, run.colours, state.iteration, run.class_names, rows)
        state.iteration += 1
        means.add(out.scalars)
        if state.iteration % cfg.train.log_every == 0 or step + 1 == run.loaders.iters_per_epoch:
            log_window(run, epoch, lr, means, window)
            window = {}


def log_window(
    run: Run, epoch: int, lr: float, means: WindowMeans, window: dict[str, list[torch.Tensor]]
) -> None:
    """The end of a logging window: the divergence check, then the window's means everywhere they go."""
    state = run.state
    run.guard.check_losses(state.iteration, epoch)
    run.history.flush(run.unlabeled_ids)
    window_means = means.pop(all_reduce_mean)  # the one host sync of the window's scalars
    log.info(
        "epoch %d/%d %s lr %s %s",
        epoch + 1,
        run.cfg.train.epochs,
        run.progress.line(state.iteration),
        format_number(lr),
        " ".join(f"{k} {format_number(v)}" for k, v in window_means.items()),
    )
    scalars = {f"train/{k}": v for k, v in window_means.items()} | {"train/lr": lr}
    run.writer.scalars(scalars, state.iteration)
    for key, values_seen in window.items():
        run.writer.histogram(f"train/{key}", torch.cat(values_seen), state.iteration)
    line = {"epoch": epoch + 1, "iteration": state.iteration, "time": time.time(), "wall_s": run.wall_s()}
    run.writer.train_window(line | {"lr": lr, "scalars": window_means})


def end_epoch(run: Run, epoch: int) -> None:
    """Close the epoch: the last check of its losses, one set of BN statistics on every rank, a finite
    state."""
    run.guard.check_losses(run.state.iteration, epoch)
    run.history.flush(run.unlabeled_ids)
    run.state.epoch = epoch + 1
    if run.cfg.train.compile:
        log.info("torch.compile: %d graphs compiled so far", compiled_graphs())
    # Without SyncBN each rank's BN running statistics drift apart (student and teacher alike): rank 0's
    # go to every rank, so that all evaluate, and rank 0 saves, the same models.
    for module in run.method.models.values():
        broadcast_buffers(module)
    run.guard.check_state(run.method.models, run.trainer.optimizer, run.state.epoch)


@dataclass
class EvalRecord:
    """One evaluation: a confusion matrix per evaluated model, by label, the reported one first."""

    epoch: int
    iteration: int
    confusions: dict[str, ConfusionMatrix]
    seconds: float

    @property
    def reported(self) -> str:
        return next(iter(self.confusions))

    @property
    def miou(self) -> float:
        return self.confusions[self.reported].miou()


def evaluate(run: Run) -> EvalRecord:
    """Evaluate every model the method evaluates on the val split (the reported one last, as it always
    was)."""
    start = time.perf_counter()
    evaluated = run.method.evaluated()
    confusions = {}
    for network in (*evaluated[1:], evaluated[0]):
        model = run.method.module_of(network)
        confusions[network.label] = evaluate_model(run.cfg, model, run.val_loader, run.info.device)
    reported = evaluated[0].label
    ordered = {reported: confusions.pop(reported)} | confusions
    return EvalRecord(run.state.epoch, run.state.iteration, ordered, time.perf_counter() - start)


def record(run: Run, rec: EvalRecord) -> None:
    """The one place an evaluation goes out: the console, TensorBoard, metrics.jsonl and the eval panel."""
    state, writer, class_list = run.state, run.writer, run.class_names
    others = {label: c for label, c in rec.confusions.items() if label != rec.reported}
    for label, confusion in others.items():
        log.info("epoch %d %s mIoU %s", rec.epoch, label, format_miou(confusion.miou()))
    reported = rec.confusions[rec.reported]
    best = f"{format_miou(state.best_miou)} at epoch {state.best_epoch}" if state.best_epoch else "none yet"
    log.info(
        "epoch %d eval %s mIoU %s (best %s) in %s\n%s",
        rec.epoch,
        rec.reported,
        format_miou(rec.miou),
        best,
        format_duration(rec.seconds),
        reported.table(class_list),
    )
    writer.scalars(eval_scalars(rec.confusions, class_list, state.best_miou), rec.iteration)  # percent
    line = {"epoch": rec.epoch, "iteration": rec.iteration, "model": rec.reported}
    line |= reported.to_dict(class_list) | {"best_miou": state.best_miou}
    line |= {"others": {label: c.to_dict(class_list) for label, c in others.items()}} if others else {}
    writer.evaluation(line | {"time": time.time(), "wall_s": run.wall_s()})
    if run.val_samples:
        shown = {network.label: run.method.module_of(network) for network in run.method.evaluated()}
        columns, rows = val_panel(run.cfg, shown, run.val_samples, run.colours, run.info.device)
        writer.panel("eval/views", columns, run.colours, rec.iteration, class_list, rows, legend=True)


def save_checkpoints(run: Run, new_best: bool) -> None:
    """latest.pth (and best.pth on a new best, epoch_<N>.pth for an epoch of train.keep_epochs) by rank 0;
    every rank's RNG state goes into latest.pth."""
    state = run.state
    state.wall_s = run.wall_s()
    rng_states = gather_rng_states(run.info)
    if run.info.is_main:
        run.writer.flush()  # TensorBoard writes in the background: a full disk is said before the save
        latest, best = run.run_dir / "latest.pth", run.run_dir / "best.pth"
        models, trainer = run.method.models, run.trainer
        if state.epoch in run.cfg.train.keep_epochs:
            # Before latest.pth: a stop between the two writes re-trains this epoch, which writes it again.
            save_training_state(
                kept_checkpoint(run.run_dir, state.epoch), run.cfg, state, models, None, None, None
            )
        # latest.pth first: it names the best epoch, so a stop before best.pth is written is repaired
        # on resume from latest.pth's own weights (imas.checkpoint.repair_best).
        save_training_state(
            latest,
            run.cfg,
            state,
            models,
            trainer.optimizer,
            trainer.scaler,
            rng_states,
            run.method.state_dict(),
        )
        if new_best:
            save_training_state(best, run.cfg, state, models, None, None, None)
            label = run.method.reported().label
            log.info(
                "new best: %s mIoU %s at epoch %d -> %s",
                label,
                format_miou(state.best_miou),
                state.epoch,
                best,
            )
        if run.changes:  # the first checkpoint made under settings accepted with --resume-anyway
            save_config(run.cfg, run.run_dir / "config.yaml")
            run.changes = []
    run.guard.saved_epoch = state.epoch
    barrier()


def kept_checkpoint(run_dir: Path, epoch: int) -> Path:
    """Where the models of an epoch of train.keep_epochs are kept."""
    return run_dir / f"epoch_{epoch}.pth"


def finish(run: Run) -> None:
    """The run's settings for TensorBoard's HParams tab, then the summary from metrics.jsonl (rank 0)."""
    cfg = run.cfg
    settings = {
        "method": cfg.train.method,
        "encoder": cfg.model.encoder,
        "labeled_split": cfg.data.labeled_split,
        "seed": cfg.train.seed,
        "batch_size": cfg.train.batch_size,
        "world_size": run.info.world_size,
        "lr": cfg.optim.lr,
        "epochs": cfg.train.epochs,
    }
    run.writer.hparams(settings, [BEST_MIOU_TAG, MIOU_TAG])
    run.writer.close()
    if run.info.is_main:  # the numbers are metrics.jsonl's, read back, whatever attempts wrote them
        records = read_evaluations(run.run_dir)
        seconds = time.perf_counter() - run.started
        histories = run.history.paths
        log.info(
            summary(
                records, run.labels(), run.state.epoch, seconds, run.run_dir, run.resumed_epoch, histories
            )
        )


if __name__ == "__main__":
    raise SystemExit(main())
