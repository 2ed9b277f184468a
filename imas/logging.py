"""Run logs: text log (rank 0), TensorBoard scalars, text and panels, one JSON line per evaluation in
metrics.jsonl and per logging window in train_scalars.jsonl, the per-image histories, and the console's
banner, number formats and closing summary (docs/run-directory.md).

Number formats, the same in every line: mIoU in percent with 2 decimals (47.23), losses and other training
scalars with 4 significant digits (0.6076, 1.000), times as h:mm:ss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from imas.errors import RunDirError, failure_reason

LOGGER_NAME = "imas"
# The run directory's machine files (docs/run-directory.md), written here and read by imas.rundir.
METRICS_NAME = "metrics.jsonl"  # one line per evaluation
SCALARS_NAME = "train_scalars.jsonl"  # one line per logging window of training
PER_IMAGE_COLUMNS = ("image_id", "epoch", "iteration")  # a per-image history's header, then its quantity


def setup_logging(run_dir: Path | None, is_main: bool) -> logging.Logger:
    """Log INFO to stdout and run_dir/train.log on rank 0; only warnings and errors on other ranks."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if is_main and run_dir is not None:
        path = Path(run_dir) / "train.log"
        try:
            file_handler = RunLogHandler(path)
        except OSError as exc:
            raise write_failure(path, exc) from None
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def write_failure(path: Path | str, exc: OSError) -> RunDirError:
    """One sentence for a run file that could not be written (a full disk, a quota, a read-only folder),
    also put in train.log where it still takes it (the console gets it from the command's error line). These
    writes never touch the checkpoints, so the last one is kept."""
    message = (
        f"cannot write {path} ({failure_reason(exc)}); the checkpoints are untouched: free space or fix the "
        "folder, then start the same command again (it resumes from the last checkpoint, if there is one)"
    )
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, RunLogHandler):  # one that failed itself writes nothing more
            handler.log_only_here(f"error: {message}")
    return RunDirError(message)


class RunLogHandler(logging.FileHandler):
    """train.log. A failed write (a full disk) is one sentence raised from the logging call that met it,
    where logging.FileHandler would print a traceback on stderr at every later record and go on; after it,
    the handler writes nothing more."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.path = path  # as the run names it, for the sentence
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        failure = sys.exc_info()[1]
        if not isinstance(failure, OSError):
            super().handleError(record)  # a programming error in a message: logging's own report
            return
        self.failed = True
        stream, self.stream = self.stream, None
        with contextlib.suppress(OSError):  # its buffer cannot be written either
            if stream is not None:
                stream.close()
        raise write_failure(self.path, failure) from None

    def log_only_here(self, message: str) -> None:
        """An error line in train.log alone, best effort (the disk may be full)."""
        record = logging.LogRecord(LOGGER_NAME, logging.ERROR, __file__, 0, message, None, None)
        with contextlib.suppress(RunDirError):
            self.handle(record)


def format_duration(seconds: float) -> str:
    """h:mm:ss ('0:07:05'); '?' for an unknown (NaN or infinite) time."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_number(value: float) -> str:
    """A training scalar with 4 significant digits, trailing zeros kept: 0.6076, 1.000, 12.35, 1.234e-05."""
    return f"{value:#.4g}"


def format_miou(fraction: float | None) -> str:
    """An mIoU (a fraction, as metrics.jsonl stores it) in percent with 2 decimals; 'n/a' when undefined."""
    if fraction is None or not math.isfinite(fraction):
        return "n/a"
    return f"{100 * fraction:.2f}"


def tag_part(name: str) -> str:
    """A class or model name as one TensorBoard tag component: spaces and slashes become underscores (a
    slash would nest the tag a level deeper)."""
    return "_".join(name.replace("/", " ").split())


# The TensorBoard tags of an evaluation, in percent (docs/run-directory.md). TensorBoard's Time Series groups
# cards by a tag's first component, orders groups and cards by tag ('/' and digits before letters) and
# expands the first two groups: "eval" (every evaluated model's mIoU, the best mIoU, the eval/views panel),
# then "eval_iou" (per-class IoU, each other model's card right after the reported model's), then "train".
MIOU_TAG = "eval/miou"  # the reported model's mIoU: the same tag for every method, compared across runs
BEST_MIOU_TAG = "eval/best_miou"
IOU_GROUP = "eval_iou"
TRAIN_GROUP = "train"


def miou_tag(label: str | None) -> str:
    """The mIoU tag of the reported model (label None) or of another evaluated model, eval/<label>_miou."""
    return MIOU_TAG if label is None else f"eval/{tag_part(label)}_miou"


def iou_tag(class_name: str, label: str | None) -> str:
    """The IoU tag of one class: eval_iou/<class> for the reported model (label None), else
    eval_iou/<class>/<label>, which TensorBoard sorts right after it."""
    tag = f"{IOU_GROUP}/{tag_part(class_name)}"
    return tag if label is None else f"{tag}/{tag_part(label)}"


def eval_scalars(confusions: Mapping[str, Any], names: Sequence[str], best_miou: float) -> dict[str, float]:
    """One evaluation's TensorBoard scalars, in percent as the console prints them: the mIoU and per-class
    IoU of each imas.metrics.ConfusionMatrix in `confusions` (by model label, the reported one first) and
    the reported model's best mIoU so far (a fraction, as metrics.jsonl keeps it; none while it is below 0,
    the value before any defined mIoU). NaN stays NaN (a class absent from both ground truth and
    prediction), which RunWriter.scalars skips."""
    out = {BEST_MIOU_TAG: 100 * best_miou} if best_miou >= 0 else {}
    for i, (label, confusion) in enumerate(confusions.items()):
        model = None if i == 0 else label
        out[miou_tag(model)] = 100 * confusion.miou()
        for name, iou in zip(names, confusion.iou().tolist()):
            out[iou_tag(name, model)] = 100 * iou
    return out


def tensorboard_command(run_dir: Path) -> str:
    """How to watch the run: TensorBoard smooths every curve (0.6) unless its URL says otherwise, which a
    run's files cannot; eval curves have one point per evaluation, so the banner and the summary name the
    URL that shows them unsmoothed (TensorBoard's default port)."""
    return f"tensorboard --logdir {run_dir}, then open http://localhost:6006/?smoothing=0"


def scalars_layout(class_names: Sequence[str]) -> dict[str, Any]:
    """The custom-scalars dashboard's layout, the same for every method so that runs side by side share its
    charts: {category: (closed, {chart title: [tag regex, ...]})}, a chart drawing every scalar tag that
    re.match finds with one of its regexes (as TensorBoard's backend matches them), every run's.

    "mIoU (%)": every evaluated model's mIoU and the best mIoU in one chart; "per-class IoU (%)" (closed):
    a chart per class with every evaluated model; "training": the losses, the learning rate, and the
    method's other scalars (iMAS: easiness, confident pixels, CutMix rate)."""
    per_class = {f"{name} IoU (%)": [rf"^{re.escape(iou_tag(name, None))}(/[^/]+)?$"] for name in class_names}
    training = {
        "training losses": [rf"^{TRAIN_GROUP}/loss"],
        "learning rate": [rf"^{TRAIN_GROUP}/lr$"],
        "other training scalars": [rf"^{TRAIN_GROUP}/(?!loss|lr$)"],
    }
    return {
        "mIoU (%)": (False, {"mIoU (%) of every evaluated model, and the best": [r"^eval/([^/]+_)?miou$"]}),
        "per-class IoU (%)": (True, per_class),
        "training": (False, training),
    }


def _rows(rows: Sequence[tuple[str, str]], width: int = 0) -> list[str]:
    """Indented 'key  value' lines with the values aligned (the continuation lines of one log record); keys
    padded to `width` at least."""
    width = max(width, *(len(key) for key, _ in rows))
    return [f"  {key:<{width}}  {value}" for key, value in rows]


def hardware(device: str) -> str:
    """What a run computes on, for the banner's hardware row: for a CUDA device the GPU's name and how many
    GPUs this machine shows ("NVIDIA H100 80GB HBM3, 4 GPUs"), for the CPU its model, the cores this process
    may use and its vector ISA ("Intel(R) Xeon(R) Processor, 2 cores, AVX512, native bf16")."""
    from imas.precision import cpu_description, cpu_model

    kind = torch.device(device).type
    if kind == "cuda":
        count = torch.cuda.device_count()
        return f"{torch.cuda.get_device_name(torch.device(device))}, {count} GPU{'' if count == 1 else 's'}"
    if kind != "cpu":
        return kind
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"{cpu_model()}, {cores} core{'' if cores == 1 else 's'}, {cpu_description()}"


def banner(
    run_dir: Path,
    config_path: str,
    overrides: Sequence[str],
    method: str,
    evaluated: Sequence[str],
    seed: int,
    world_size: int,
    device: str,
    precision: str,
) -> str:
    """The start of a run (or of a resumed attempt) as one log record: its first line
    'run DIR on DEVICE x WORLD_SIZE (PRECISION)' (imas.rundir's reader of runs made before
    train_scalars.jsonl splits an old train.log into attempts at it), then the config, the method and its
    models, the seed, the hardware (a row "  hardware     <hardware(device)>", which imas.report reads back
    from train.log) and where the outputs go.
    evaluated: the labels of the evaluated models, the reported one first."""
    models = f"reported model: {evaluated[0]}"
    if len(evaluated) > 1:
        models += f"; also evaluated: {', '.join(evaluated[1:])}"
    processes = f"{world_size} process{'es' if world_size > 1 else ''} on {device}, precision {precision}"
    rows = [
        ("config", config_path + (f" --opt {' '.join(overrides)}" if overrides else "")),
        ("method", f"{method} ({models})"),
        ("seed", str(seed)),
        ("world size", processes),
        ("hardware", hardware(device)),
        ("run dir", str(Path(run_dir).resolve())),
        ("tensorboard", tensorboard_command(run_dir)),
    ]
    return "\n".join([f"run {run_dir} on {device} x {world_size} ({precision})", *_rows(rows)])


def model_results(records: Sequence[Mapping[str, Any]], label: str, reported: bool) -> dict[str, Any]:
    """Best and final mIoU of one model over metrics.jsonl's records: {"best", "best_epoch", "final",
    "final_epoch"} (fractions; None where the model has no value). The reported model's values are the
    records' own "miou", another model's its "others"[label]["miou"]. The best is the first evaluation with
    the highest value, as best.pth keeps it."""
    values = []
    for record in records:
        value = record.get("miou") if reported else record.get("others", {}).get(label, {}).get("miou")
        values.append((record.get("epoch"), value))
    defined = [(epoch, v) for epoch, v in values if v is not None and math.isfinite(v)]
    out: dict[str, Any] = {"best": None, "best_epoch": None, "final": None, "final_epoch": None}
    if values:
        out["final_epoch"], out["final"] = values[-1]
    if defined:
        top = max(v for _, v in defined)
        out["best_epoch"], out["best"] = next((e, v) for e, v in defined if v == top)
    return out


def summary(
    records: Sequence[Mapping[str, Any]],
    evaluated: Sequence[str],
    epochs: int,
    wall_seconds: float,
    run_dir: Path,
    resumed_epoch: int = 0,
    histories: Sequence[Path] = (),
) -> str:
    """The end of a run as one log record: the reported model's best (the epoch best.pth holds) and final
    mIoU, a row per evaluated model, the wall time and where the results are.

    records: metrics.jsonl's lines, so that the numbers are the file's; evaluated: the model labels, the
    reported one first. resumed_epoch: the epoch this process resumed from (0: it trained from the start),
    which makes the wall time this attempt's. histories: the per-image history files (e.g. hardness.csv).
    """
    since = f" since resuming after epoch {resumed_epoch}" if resumed_epoch else ""
    head = f"done: {epochs} epoch{'' if epochs == 1 else 's'}, {format_duration(wall_seconds)}{since}"
    results = {label: model_results(records, label, reported=i == 0) for i, label in enumerate(evaluated)}
    best = results[evaluated[0]]
    if best["best"] is None:
        head += "; no mIoU recorded"
    else:
        head += (
            f"; best {evaluated[0]} mIoU {format_miou(best['best'])} at epoch {best['best_epoch']},"
            f" final {format_miou(best['final'])}"
        )
    # One key column for the model rows and the file rows below them.
    width = max(len("model"), len("checkpoints"), len("tensorboard"), *(len(label) for label in evaluated))
    lines = [head, f"  {'model':<{width}}  best mIoU  at epoch  final mIoU"]
    for i, label in enumerate(evaluated):
        r = results[label]
        epoch = "-" if r["best_epoch"] is None else str(r["best_epoch"])
        row = f"  {label:<{width}}  {format_miou(r['best']):>9}  {epoch:>8}  {format_miou(r['final']):>10}"
        lines.append(row + ("  (reported)" if i == 0 and len(evaluated) > 1 else ""))
    run_dir = Path(run_dir)
    checkpoints = f"{run_dir / 'best.pth'} (epoch {best['best_epoch']}), {run_dir / 'latest.pth'}"
    rows = [
        ("checkpoints", checkpoints + f" (epoch {epochs})"),
        ("metrics", f"{run_dir / METRICS_NAME} (one JSON line per evaluation)"),
        ("scalars", f"{run_dir / SCALARS_NAME} (one JSON line per logging window)"),
    ]
    for path in histories:
        rows.append(("per image", f"{path} (the {path.stem} of each unlabeled image at each iteration)"))
    rows += [("log", str(run_dir / "train.log")), ("tensorboard", tensorboard_command(run_dir))]
    return "\n".join(lines + _rows(rows, width))


class WindowMeans:
    """Means of the training scalars over the logging window: the iterations since the previous log line
    (train.log_every of them; fewer where an epoch ends between two multiples). The console's training line
    and TensorBoard's train/* scalars both show these means, so they agree, and no curve jumps at an epoch
    boundary as a mean since the start of the epoch would.

    `add` keeps per-key sums on the scalars' device (no host synchronisation: it runs every iteration);
    `pop` synchronises once, at logging time.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        """One iteration's scalars (0-d tensors); a key missing from some iterations is averaged over the
        iterations that had it."""
        for key, value in values.items():
            value = value.detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
            self._counts[key] = self._counts.get(key, 0) + 1

    def pop(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """The window's means, then an empty window. reduce: averages a 1-D tensor over the processes (e.g.
        imas.dist.all_reduce_mean; one collective for all keys, which every rank holds in the same order)."""
        keys = list(self._sums)
        self._sums, sums = {}, self._sums
        self._counts, counts = {}, self._counts
        if not keys:
            return {}
        means = torch.stack([sums[key] / counts[key] for key in keys])
        if reduce is not None:
            means = reduce(means)
        return dict(zip(keys, means.tolist()))


class Progress:
    """Iterations per second and time left, measured from the first iteration of this process."""

    def __init__(self, start_iteration: int, total_iterations: int) -> None:
        self.start_iteration = start_iteration
        self.total = total_iterations
        self.start_time = time.perf_counter()

    def line(self, iteration: int) -> str:
        elapsed = time.perf_counter() - self.start_time
        done = iteration - self.start_iteration
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        eta = (self.total - iteration) / rate if rate == rate and rate > 0 else float("nan")
        return f"it {iteration}/{self.total} {rate:.2f} it/s eta {format_duration(eta)}"


def append_lines(path: Path, text: str) -> None:
    """Append whole lines to a run file; a failed write (a full disk) is one sentence (write_failure). What
    a failed write leaves is a last line without its newline, which the readers and the resume drop."""
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise write_failure(path, exc) from None


class _GuardedRecords:
    """TensorBoard's record writer as its background thread calls it: a failed write (a full disk) is kept
    for RunWriter to raise as one sentence, where the thread would print a traceback, die, and leave the
    error to surface at some later call; the writes after it are dropped."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failure: OSError | None = None

    def write(self, data: bytes) -> None:
        self._call(self.inner.write, data)

    def flush(self) -> None:
        self._call(self.inner.flush)

    def close(self) -> None:
        self._call(self.inner.close)

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        if self.failure is None:
            try:
                method(*args)
            except OSError as exc:
                self.failure = exc


def _quiet_writer_thread_errors() -> Callable[[], None]:
    """Leave out the traceback of TensorBoard's writing thread when a write of it fails (a full disk before
    _GuardedRecords was put in place, e.g. of the event file's first record): the same error reaches
    RunWriter at its next call, as one sentence. Returns what puts the previous threading.excepthook back."""
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    threading.excepthook = hook

    def restore() -> None:
        if threading.excepthook is hook:  # a hook installed after ours stays
            threading.excepthook = previous

    return restore


def _guard_events(tb: Any, run_dir: Path) -> tuple[_GuardedRecords | None, Path]:
    """Put a _GuardedRecords between a SummaryWriter's event file and its writing thread; return it and the
    event file's path. These are private attributes of torch's FileWriter and tensorboard's
    EventFileWriter: where they differ, (None, run_dir) and the errors surface as the writer raises them."""
    try:
        events = tb._get_file_writer().event_writer
        queue = events._async_writer
        guard = _GuardedRecords(queue._writer)
        queue._writer = queue._worker._record_writer = guard
        return guard, Path(run_dir) / Path(events._file_name).name
    except AttributeError:
        return None, Path(run_dir)


class RunWriter:
    """TensorBoard (scalars train/* and eval/*, the config as text, image panels, hparams) and metrics.jsonl;
    does nothing off rank 0. A failed write of any of its files (a full disk) is one sentence naming it."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int = 0) -> None:
        """purge_step: the iteration the run starts from; TensorBoard hides the events an earlier, crashed
        attempt logged from that step on, so a re-run stretch is shown once."""
        self.enabled = enabled
        self.metrics_path = Path(run_dir) / METRICS_NAME
        self.train_scalars_path = Path(run_dir) / SCALARS_NAME
        self._tb: Any = None
        self._guard: _GuardedRecords | None = None
        self._restore_excepthook: Callable[[], None] = lambda: None
        self.events_path = Path(run_dir)
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only where it is used

            self._restore_excepthook = _quiet_writer_thread_errors()
            try:
                self._tb = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
            except OSError as exc:
                raise write_failure(Path(run_dir) / "events.out.tfevents.*", exc) from None
            self._guard, self.events_path = _guard_events(self._tb, Path(run_dir))

    def _tensorboard(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Call the SummaryWriter, then raise a write its thread failed (it writes in the background: a
        failure shows at the next call, or at flush)."""
        try:
            getattr(self._tb, method)(*args, **kwargs)
        except OSError as exc:
            raise write_failure(self.events_path, exc) from None
        if self._guard is not None and self._guard.failure is not None:
            raise write_failure(self.events_path, self._guard.failure)

    def flush(self) -> None:
        """Write what TensorBoard holds, so that a full disk is said now (at the end of each epoch)."""
        if self._tb is not None:
            self._tensorboard("flush")

    def scalars(self, values: dict[str, float], step: int) -> None:
        """One point per tag; NaN values (e.g. the IoU of a class in neither ground truth nor prediction)
        are skipped rather than drawn as gaps and spikes."""
        if self._tb is None:
            return
        for tag, value in values.items():
            if math.isfinite(value):
                self._tensorboard("add_scalar", tag, value, step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        """A text entry, which TensorBoard's Text tab renders as markdown (stored as tag/text_summary)."""
        if self._tb is not None:
            self._tensorboard("add_text", tag, markdown, step)

    def hparams(self, values: dict[str, Any], metric_tags: Sequence[str]) -> None:
        """The run's settings for TensorBoard's HParams tab, with scalar tags already logged (eval/best_miou)
        as its metrics, which the tab reads from this run's scalars.

        SummaryWriter.add_hparams is not used: it writes into a new subfolder, which TensorBoard lists as a
        second run. The three summaries it would write go into this run's own event file instead.
        """
        if self._tb is None:
            return
        from torch.utils.tensorboard.summary import hparams

        clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}
        writer = self._tb._get_file_writer()
        for summary in hparams(clean, {tag: 0.0 for tag in metric_tags}):
            writer.add_summary(summary)

    def layout(self, class_names: Sequence[str]) -> None:
        """The custom-scalars dashboard's layout (scalars_layout), written once per start of the run.

        SummaryWriter.add_custom_scalars is not used: it cannot start a category closed."""
        if self._tb is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.plugins.custom_scalar import layout_pb2, metadata

        categories = []
        for title, (closed, charts) in scalars_layout(class_names).items():
            content = [
                layout_pb2.Chart(title=name, multiline=layout_pb2.MultilineChartContent(tag=tags))
                for name, tags in charts.items()
            ]
            categories.append(layout_pb2.Category(title=title, chart=content, closed=closed))
        tensor = TensorProto(
            dtype="DT_STRING",
            string_val=[layout_pb2.Layout(category=categories).SerializeToString()],
            tensor_shape=TensorShapeProto(),
        )
        value = Summary.Value(
            tag=metadata.CONFIG_SUMMARY_TAG, tensor=tensor, metadata=metadata.create_summary_metadata()
        )
        self._tb._get_file_writer().add_summary(Summary(value=[value]))

    def evaluation(self, record: dict[str, Any]) -> None:
        """Append one evaluation (epoch, iteration, mIoU, ...) as a JSON line."""
        if self.enabled:
            append_lines(self.metrics_path, json.dumps(record) + "\n")

    def train_window(self, record: dict[str, Any]) -> None:
        """Append one logging window's means (the numbers of one console line) to train_scalars.jsonl."""
        if self.enabled:
            append_lines(self.train_scalars_path, json.dumps(record) + "\n")

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """A TensorBoard histogram of a 1-D tensor (e.g. the hardness of every image since the last log)."""
        if self._tb is not None:
            self._tensorboard("add_histogram", tag, values.detach().float().cpu(), step, bins=20)

    def panel(
        self,
        tag: str,
        views: Mapping[str, Any],
        palette: Sequence[tuple[int, int, int]],
        step: int,
        class_names: Sequence[str] | None = None,
        notes: Sequence[Sequence[str]] | None = None,
        legend: bool | None = None,
    ) -> None:
        """One TensorBoard image (imas.visualize.panel): a row per image (at most 4), a column per view in
        `views`' order under its name, `notes` left of each row, a legend of the class colours.

        uint8 images [B, 3, H, W] are shown as they are; label maps [B, H, W] in the dataset palette
        (255, the ignored or unconfident pixels, in white).
        """
        if self._tb is None:
            return
        from imas.visualize import panel

        self._tensorboard("add_image", tag, panel(views, palette, class_names, notes, legend=legend), step)

    def close(self) -> None:
        if self._tb is not None:
            try:
                self._tensorboard("close")
            finally:
                self._restore_excepthook()


class PerImageWriter:
    """Appends each per-image value a method declares to run_dir/<name>.csv: one row per (image, iteration),
    columns image_id,epoch,iteration,<name> (iMAS: hardness.csv). On resume imas.rundir.truncate_per_image
    first cuts each file back to the rows the checkpoint covers (and writes the header of a new one).

    Rows are buffered on the device and written at logging time, so training never waits on the host.
    """

    def __init__(self, run_dir: Path, names: Sequence[str], enabled: bool) -> None:
        self.paths = [Path(run_dir) / f"{name}.csv" for name in names] if enabled else []
        self._pending: list[tuple[int, int, Any, dict[str, Any]]] = []

    def add(self, epoch: int, iteration: int, indices: Any, values: Mapping[str, Any]) -> None:
        """Queue one iteration: indices LongTensor [N] into the dataset, values {name: Tensor [N]} (all
        ranks)."""
        if self.paths:
            detached = {name: value.detach().float() for name, value in values.items()}
            self._pending.append((epoch, iteration, indices.detach(), detached))

    def flush(self, ids: list[str]) -> None:
        """Write the queued rows (rank 0), with `ids[index]` naming each image."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        for path in self.paths:
            rows = []
            for epoch, iteration, indices, values in pending:
                for index, value in zip(indices.tolist(), values[path.stem].tolist()):  # epochs from 1
                    rows.append(f"{ids[index]},{epoch + 1},{iteration},{value:.5f}\n")
            append_lines(path, "".join(rows))
