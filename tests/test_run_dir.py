"""A run directory holds one run's results: settings checked on resume, one process at a time, nothing
non-finite or stale kept, a full disk reported in a sentence (docs/reliability.md)."""

import errno
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, small_config, start_training, stop_after_save, torchrun

from imas import checkpoint as checkpoint_module
from imas import errors as errors_module
from imas import train as train_cli
from imas.checkpoint import nonfinite_count, save_checkpoint
from imas.config import Config, to_dict
from imas.errors import CheckpointError, ConfigError, RunDirError, UserError
from imas.rundir import (
    LOCK_NAME,
    TEMPORARIES,
    RunLock,
    check_run_dir,
    legacy_train_log,
    read_run,
    remove_stale_temporaries,
    result_changes,
    truncate_train_scalars,
)


def train(config: Path, run_dir: Path, *extra: str) -> int:
    return train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu", *extra])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def epochs_of(metrics: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]


# ------------------------------------------------------------------------------ settings on resume


@pytest.mark.slow
def test_resume_under_other_settings_is_refused_unless_asked(tmp_path, toy, capsys):
    config = small_config(tmp_path, toy, train={"epochs": 1})
    run_dir = tmp_path / "run"
    assert train(config, run_dir) == 0
    stored = (run_dir / "config.yaml").read_text()

    assert train(config, run_dir, "--opt", "optim.lr=0.02") == 2
    err = error_line(capsys)
    assert "optim.lr 0.01 -> 0.02" in err and "--resume-anyway" in err and "--run-dir" in err
    assert (run_dir / "config.yaml").read_text() == stored  # written only after the check passes
    assert train(config, run_dir, "--seed", "5") == 2
    assert "train.seed 0 -> 5" in error_line(capsys)
    assert train(config, run_dir, "--opt", "train.method=imas", "imas.group_size=2") == 2
    assert "train.method supervised -> imas" in error_line(capsys)

    # Logging cadence and evaluation options do not change the weights: accepted as they are. The number
    # of loader workers does (each worker has its own random stream).
    assert train(config, run_dir, "--opt", "train.log_every=1", "eval.flip=true") == 0
    assert train(config, run_dir, "--opt", "data.num_workers=1") == 2
    assert "data.num_workers 0 -> 1" in error_line(capsys)

    # Accepted changes that then fail (a diverging lr) leave config.yaml describing the checkpoint.
    stored = (run_dir / "config.yaml").read_text()
    assert train(config, run_dir, "--resume-anyway", "--opt", "optim.lr=1e6", "train.epochs=2") == 2
    assert "lower optim.lr (now 1e+06)" in error_line(capsys)
    assert (run_dir / "config.yaml").read_text() == stored

    # Opting in continues the run under the new settings, and says so in train.log and the checkpoint.
    # Switching the optimiser's kind restarts its state instead of failing on a missing key.
    opts = ["--opt", "train.epochs=2", "optim.kind=adamw", "optim.lr=0.001"]
    assert train(config, run_dir, "--resume-anyway", *opts) == 0
    ckpt = torch.load(run_dir / "latest.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["optim"]["kind"] == "adamw"
    (record,) = ckpt["resumed_with_changes"]
    assert record["epoch"] == 1 and ["optim.kind", "sgd", "adamw"] in record["changes"]
    log = (run_dir / "train.log").read_text()
    assert "resuming under changed settings (--resume-anyway)" in log and "train.epochs 1 -> 2" in log
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["kind"] == "adamw"
    assert epochs_of(run_dir / "metrics.jsonl") == [1, 2]


@pytest.mark.slow
def test_a_supervised_run_continued_as_imas_starts_its_teacher_from_the_student(tmp_path, toy, capsys):
    config = small_config(tmp_path, toy, train={"epochs": 1})
    run_dir = tmp_path / "run"
    assert train(config, run_dir) == 0
    opts = ["--opt", "train.method=imas", "imas.group_size=2", "imas.threshold=0.5", "train.epochs=2"]
    assert train(config, run_dir, "--resume-anyway", *opts) == 0
    ckpt = torch.load(run_dir / "latest.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and "teacher" in ckpt
    assert "the EMA teacher starts as a copy of the student" in (run_dir / "train.log").read_text()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["method"] == "imas"


def test_a_resume_into_fp16_starts_loss_scaling_afresh(tmp_path, toy):
    """An fp32 or bf16 checkpoint holds an empty scaler state, which an fp16 GradScaler refuses to load."""
    from imas.checkpoint import TrainState, resume_training_state, save_training_state
    from imas.dist import DistInfo
    from imas.experiment import load_experiment
    from imas.models import build_model
    from imas.precision import make_grad_scaler
    from imas.schedule import make_optimizer

    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    cfg = load_experiment(small_config(tmp_path, toy), ["model.pretrained="])
    model = build_model(cfg, info, pretrained=False)
    optimizer = make_optimizer(cfg, [model])
    path = tmp_path / "latest.pth"
    save_training_state(path, cfg, TrainState(1, 4, 0.5, 1), {"model": model}, optimizer, None, None)
    ckpt = torch.load(path, weights_only=True) | {"scaler": make_grad_scaler(cfg, info.device).state_dict()}
    assert ckpt["scaler"] == {}
    cfg.train.precision = type(cfg.train.precision)("fp16")
    scaler = make_grad_scaler(cfg, info.device)
    state = resume_training_state(path, ckpt, cfg, info, {"model": model}, optimizer, scaler)
    assert state.epoch == 1 and scaler.is_enabled() and scaler.get_scale() == 2.0**16


def test_a_cps_checkpoint_older_than_labeled_term_resumes_with_the_term_it_trained_with():
    from imas.config import upgrade_stored

    stored = {"train": {"method": "cps"}, "cps": {"weight": 1.5, "n_boxes": 3}}
    assert upgrade_stored(stored)["cps"] == {"weight": 1.5, "n_boxes": 3, "labeled_term": True}
    assert "labeled_term" not in stored["cps"]  # the stored mapping itself is left as it was
    new = {"train": {"method": "cps"}, "cps": {"weight": 1.0, "labeled_term": False}}
    assert upgrade_stored(new) == new


def test_result_changes_ignore_neutral_keys_and_treat_new_keys_as_defaults():
    from imas.methods.imas import ImasSettings

    cfg = Config(method_settings=ImasSettings())
    cfg.train.method = "imas"
    stored = to_dict(cfg)
    cfg.train.log_every, cfg.eval.scales, cfg.train.run_dir = 3, [0.5, 1.0], "elsewhere"
    assert result_changes(stored, cfg) == []
    del stored["imas"]["mask_padding"]  # a checkpoint older than the key: its default is what it ran
    assert result_changes(stored, cfg) == []
    # Older checkpoints kept the iMAS settings in a section "semi" (for every method): the same settings.
    older = {key: value for key, value in stored.items() if key != "imas"} | {"semi": stored["imas"]}
    assert result_changes(older, cfg) == []
    # Older checkpoints named the encoder model.backbone.
    model = {("backbone" if key == "encoder" else key): value for key, value in stored["model"].items()}
    assert result_changes(stored | {"model": model}, cfg) == []
    cfg.imas.mask_padding = True
    cfg.model.encoder = "resnet50"
    assert result_changes(stored | {"model": model}, cfg) == [
        ("model.encoder", "resnet101", "resnet50"),
        ("imas.mask_padding", False, True),
    ]


# ------------------------------------------------------------------------------------- the lock


HOLD_LOCK = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": "earlier"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def lock_holder(tmp_path):
    """A process that holds a run directory's run.lock the way a run does; yields (run_dir, process)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    yield run_dir, proc
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_second_run_on_a_directory_is_refused_and_a_dead_owner_taken_over(tmp_path, toy, capsys, lock_holder):
    config = small_config(tmp_path, toy, train={"epochs": 1})
    run_dir, holder = lock_holder
    assert train(config, run_dir) == 2
    err = error_line(capsys)
    assert f"in use by process {holder.pid} on host {os.uname().nodename} (since earlier)" in err
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing written

    holder.kill()  # like kill -9: the kernel releases the lock, the record stays behind
    holder.wait()
    assert (run_dir / LOCK_NAME).read_text()
    assert train(config, run_dir) == 0
    assert not (run_dir / LOCK_NAME).exists()  # released at exit
    assert f"took over {LOCK_NAME} from process {holder.pid}" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_two_real_runs_on_one_directory(tmp_path, toy, capsys):
    """A second start while the first trains is refused and leaves the first run's files alone."""
    import time

    config = small_config(tmp_path, toy, train={"epochs": 2})
    run_dir = tmp_path / "run"
    first = start_training(config, run_dir)
    try:
        deadline = time.monotonic() + 120
        lock = run_dir / LOCK_NAME
        while not (lock.exists() and lock.stat().st_size) and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert train(config, run_dir) == 2
        assert f"in use by process {first.pid} on host {os.uname().nodename}" in error_line(capsys)
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert epochs_of(run_dir / "metrics.jsonl") == [1, 2]
    assert not (run_dir / LOCK_NAME).exists()


def test_lock_is_exclusive_and_released(tmp_path):
    first = RunLock.acquire(tmp_path)
    with pytest.raises(RunDirError, match=f"in use by process {os.getpid()} on host"):
        RunLock.acquire(tmp_path)
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    # A record without a lock (its writer ended, on this host or another) is taken over, and said so.
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-host", "started": "x"}))
    second = RunLock.acquire(tmp_path)
    assert second.took_over == "process 1 on host another-host (since x)"
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    second.release()


def test_a_full_disk_while_locking_is_one_sentence_and_leaves_no_lock(tmp_path, monkeypatch):
    def no_space(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(RunDirError, match="cannot write .*run.lock \\(no space left on device\\)"):
        RunLock.acquire(tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / LOCK_NAME).exists()
    RunLock.acquire(tmp_path).release()


@pytest.mark.slow
def test_refusal_under_torchrun_stops_every_process(tmp_path, toy, lock_holder):
    """Rank 0 finds the directory locked; rank 1 must not wait for it at a barrier."""
    config = small_config(tmp_path, toy, train={"epochs": 1})
    run_dir, _ = lock_holder
    result = torchrun(
        "train_semi.py", "--config", str(config), "--run-dir", str(run_dir), "--device", "cpu", timeout=180
    )
    assert result.returncode != 0
    assert result.stderr.count(f"error: run directory {run_dir} is in use") == 1, result.stderr[-2000:]


# ------------------------------------------------------------------------------ what is saved


def test_nonfinite_count_flags_nan_and_inf_but_not_large_values():
    big = torch.full((4,), 3e31)  # its sum of squares would overflow fp32; its max does not
    nan, inf = torch.tensor([0.0, float("nan")]), torch.tensor([float("-inf")], dtype=torch.bfloat16)
    assert nonfinite_count([big, torch.zeros(0), torch.ones(3, dtype=torch.float16)]).item() == 0
    assert nonfinite_count([big, nan, inf, nan.double()]).item() == 3
    assert nonfinite_count([]).item() == 0


@pytest.mark.slow
def test_nonfinite_state_stops_before_evaluation_and_keeps_checkpoints(tmp_path, toy, capsys, monkeypatch):
    """A finite loss but an infinite BN running variance (what lr 1e6 does): the epoch is not saved."""
    config = small_config(tmp_path, toy, train={"epochs": 2})
    run_dir = tmp_path / "run"
    original = train_cli.broadcast_buffers
    calls = []

    def poison_bn_after_epoch_2(module):
        original(module)
        calls.append(1)
        if len(calls) == 2:  # one model, called once per epoch
            bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var[0] = float("inf")

    monkeypatch.setattr(train_cli, "broadcast_buffers", poison_bn_after_epoch_2)
    assert train(config, run_dir) == 2
    err = error_line(capsys)
    assert "after epoch 2 the model or optimiser state holds NaN or infinite values" in err
    assert "(1 tensors, e.g. model." in err and "running_var" in err
    assert "(epoch 1, checked finite when written) is kept" in err
    for name in ("latest.pth", "best.pth"):
        ckpt = torch.load(run_dir / name, weights_only=True)
        assert ckpt["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert epochs_of(run_dir / "metrics.jsonl") == [1]  # the broken epoch was not evaluated


# ----------------------------------------------------------------------------- crash leftovers


@pytest.mark.slow
def test_best_is_repaired_after_a_stop_between_the_two_writes(tmp_path, toy, monkeypatch):
    config = small_config(tmp_path, toy, train={"epochs": 1})
    run_dir = tmp_path / "run"
    # killed between latest.pth and best.pth
    resume_saving = stop_after_save(monkeypatch, lambda path, state: path.name == "latest.pth")
    assert train(config, run_dir) == 130
    assert not (run_dir / "best.pth").exists()
    resume_saving()
    assert train(config, run_dir) == 0  # finished already: only the repair happens
    latest = torch.load(run_dir / "latest.pth", weights_only=True)
    best = torch.load(run_dir / "best.pth", weights_only=True)
    assert best["epoch"] == latest["best_epoch"] == 1 and best["best_miou"] == latest["best_miou"]
    assert "optimizer" not in best
    assert all(torch.equal(best["model"][k], v) for k, v in latest["model"].items())
    assert "rewritten from" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_rerun_epoch_is_recorded_once_and_temporaries_removed(tmp_path, toy, monkeypatch):
    config = small_config(tmp_path, toy, train={"epochs": 2})
    run_dir = tmp_path / "run"
    resume_saving = stop_after_save(
        monkeypatch, lambda path, state: path.name == "best.pth" and state.epoch == 1
    )
    assert train(config, run_dir) == 130
    resume_saving()
    # A crash after epoch 2's evaluation but before its checkpoint: its metrics line and a torn temporary.
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 2, "iteration": 8, "miou": 0.5}) + "\n" + '{"epoch": 3, "mi')
    (run_dir / ".latest.pth.tmp").write_bytes(b"half a checkpoint")
    assert train(config, run_dir) == 0
    assert epochs_of(run_dir / "metrics.jsonl") == [1, 2]
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))
    assert ".latest.pth.tmp" in (run_dir / "train.log").read_text()


# ------------------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("failure", ["oserror", "zip_writer"])
def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "latest.pth"
    save_checkpoint({"epoch": 1}, path)

    def full_disk(obj, target):
        Path(target).write_bytes(b"partial")
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    monkeypatch.setattr(
        errors_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0)
    )
    with pytest.raises(CheckpointError) as info:
        save_checkpoint({"epoch": 2}, path)
    message = str(info.value)
    assert f"checkpoint {path} could not be written (no space left on device)" in message
    assert "the previous one is kept" in message
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth"]


@pytest.mark.slow
def test_full_disk_during_training_is_one_sentence(tmp_path, toy, capsys, monkeypatch):
    config = small_config(tmp_path, toy, train={"epochs": 2})
    run_dir = tmp_path / "run"
    real_save = torch.save
    calls = []

    def disk_fills_up(obj, target):
        calls.append(target)
        if len(calls) > 2:  # epoch 1's latest and best are written; epoch 2's fail
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, target)

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_fills_up)
    assert train(config, run_dir) == 2
    assert "could not be written (no space left on device); the previous one is kept" in error_line(capsys)
    assert torch.load(run_dir / "latest.pth", weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------------------------- small ones


def test_run_dir_that_is_a_file_is_one_sentence(tmp_path, toy, capsys):
    config = small_config(tmp_path, toy, train={"epochs": 1})
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert train(config, target) == 2
    assert "run directory" in error_line(capsys)
    assert target.read_text() == "mine"
    with pytest.raises(ConfigError, match="is a file"):
        check_run_dir(target)
    assert train(config, target / "sub" / "run") == 2
    assert f"lies under the file {target}" in error_line(capsys)


@pytest.mark.slow
def test_sigterm_ends_a_run_like_ctrl_c(tmp_path, toy):
    """A scheduler's SIGTERM (preemption, scancel) releases the lock and keeps the last checkpoint."""
    import signal
    import time

    config = small_config(tmp_path, toy, train={"epochs": 50})
    run_dir = tmp_path / "run"
    proc = start_training(config, run_dir)
    deadline = time.monotonic() + 120
    while not (run_dir / "latest.pth").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated; starting the same command again resumes from the last checkpoint" in err
    assert not (run_dir / LOCK_NAME).exists()
    assert torch.load(run_dir / "latest.pth", weights_only=True)["epoch"] >= 1


@pytest.mark.parametrize("shared", [False, True])
def test_errors_of_other_ranks_are_printed_once(monkeypatch, capsys, shared):
    """Under torchrun an error that rank 0 found and shared is printed by rank 0 only; one that another
    rank met on its own (a corrupt image in its share of the data) is printed by that rank."""

    def fail(args):
        exc = RunDirError("the sentence")
        if shared:
            exc.shared = True
        raise exc

    monkeypatch.setattr(train_cli, "train", fail)
    monkeypatch.setenv("RANK", "1")
    assert train_cli.main(["--config", "x.yaml"]) == 2
    assert capsys.readouterr().err == ("" if shared else "error: the sentence\n")


def test_single_run_prepares_toy_data_only_when_the_config_reads_it(tmp_path):
    """single_run.sh reads data.root from the resolved config, not from a grep that matches comments."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            case "$1" in
                -c) exec {sys.executable} "$@" ;;
            esac
            echo "$@" >> {calls}
            """
        )
    )
    fake.chmod(0o755)
    config = tmp_path / "mine.yaml"
    config.write_text("# copied from exps/toy: data/toy is where the toy lives\ndata:\n  root: /my/data\n")
    env = dict(os.environ, PYTHON=str(fake), PYTHONPATH=str(REPO))

    def run(*args: str) -> list[str]:
        calls.unlink(missing_ok=True)
        subprocess.run(["sh", "single_run.sh", *args], cwd=REPO, env=env, check=True, timeout=60)
        return calls.read_text().splitlines()

    lines = run(str(config), "1", "train.epochs=3", "--resume-anyway")
    assert lines == [f"train_semi.py --config {config} --resume-anyway --opt train.epochs=3"]
    lines = run(str(config), "1", "data.root=data/toy")  # no backbone file named: nothing to pretrain
    assert lines[0] == "-m imas.data.toy --out data/toy --ensure" and lines[1].startswith("train_semi.py")
    toy = ["data.root=data/toy", "model.pretrained=pre/my r18.pth", "model.backbone_width=16"]
    lines = run(str(config), "1", *toy)
    assert lines[0] == "-m imas.data.toy --out data/toy --ensure"
    assert lines[1] == "-m tools.toy_pretrain --out pre/my r18.pth --width 16 --ensure"
    assert lines[2].startswith("train_semi.py")
    assert run() == ["-m tools.quick_start"]  # no arguments: the quick start


# ------------------------------------------------------------------------------------ reading a run


LEGACY_RUN = REPO / "training-imas-logs/toy/imas/seed0"  # written before train_scalars.jsonl existed


def write_lines(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + tail)


def window(iteration: int, loss: float, wall_s: float, epoch: int = 1) -> dict:
    """One train_scalars.jsonl line (the contract of docs/run-directory.md)."""
    scalars = {"loss": loss, "loss_x": loss / 2, "easiness": 0.1 * epoch}
    return {"epoch": epoch, "iteration": iteration, "time": 1.8e9 + wall_s, "wall_s": wall_s, "lr": 0.01,
            "scalars": scalars}  # fmt: skip


def evaluation(epoch: int, iteration: int, miou: float, **extra) -> dict:
    return {
        "epoch": epoch,
        "iteration": iteration,
        "model": "teacher",
        "miou": miou,
        "iou": {"a": miou},
    } | extra


def new_form_run(run_dir: Path) -> Path:
    """A run directory in the form training writes now, made by hand: a run resumed after a crash that
    re-ran iterations 6 and 8 (their first lines were cut back, one line was torn), two per-image
    quantities, and files that only look like per-image histories."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"method": "imas", "epochs": 2}}))
    others = {"student": {"miou": 0.25, "iou": {"a": 0.25}}}
    write_lines(
        run_dir / "metrics.jsonl",
        [
            evaluation(1, 4, 0.3, others=others, time=1.8e9 + 45, wall_s=45.0),
            evaluation(2, 8, 0.4, others=others | {"student": {"miou": 0.35}}, time=1.8e9 + 95, wall_s=95.0),
        ],
    )
    lines = [window(2, 1.0, 20.0), window(4, 0.8, 40.0), window(6, 0.9, 60.0, 2), window(6, 0.6, 70.0, 2)]
    write_lines(run_dir / "train_scalars.jsonl", [*lines, window(8, 0.5, 90.0, 2)], tail='{"epoch": 2, "it')
    # train.log says otherwise: it is not read where train_scalars.jsonl exists.
    (run_dir / "train.log").write_text(
        "2026-01-01 10:00:00 INFO run r on cpu x 1 (fp32)\n"
        "2026-01-01 10:00:01 INFO epoch 1/2 it 2/8 1.0 it/s eta 0:00:06 lr 0.01 loss 9.0\n"
    )
    header = "image_id,epoch,iteration,"
    rows = [("u1", 1, 0, 0.9), ("u2", 1, 1, 0.2), ("u1", 2, 4, 0.7), ("u1", 2, 5, 0.5), ("u,3", 2, 5, 0.1)]
    body = "".join(f"{i},{e},{it},{v}\n" for i, e, it, v in rows)
    (run_dir / "hardness.csv").write_text(header + "hardness\n" + body + "u2,2,7,0.")  # a torn last row
    (run_dir / "margin.csv").write_text(header + "margin\n" + "u1,1,0,3.5\nu2,2,4,-1.0\n")
    (run_dir / "other.csv").write_text(header + "margin\nu1,1,0,1.0\n")  # its quantity is not its name
    (run_dir / "table.csv").write_text("class,iou\na,0.5\n")
    (run_dir / "empty.csv").write_text(header + "empty\n")  # a quantity never measured
    return run_dir


def test_read_run_of_the_new_form(tmp_path) -> None:
    run = read_run(new_form_run(tmp_path / "run"))
    assert run.method == "imas" and run.config["train"]["epochs"] == 2
    assert [r["epoch"] for r in run.evaluations] == [1, 2] and run.iters_per_epoch == 4
    assert run.scalars_source == "train_scalars.jsonl"
    assert set(run.scalars) == {"train/loss", "train/loss_x", "train/easiness", "train/lr"}
    assert run.scalars["train/loss"] == [(2, 1.0), (4, 0.8), (6, 0.6), (8, 0.5)]  # the re-run line wins
    assert run.scalars["train/loss_x"][0] == (2, 0.5) and run.scalars["train/lr"][-1] == (8, 0.01)
    assert run.others == {"student": [(1, 0.25), (2, 0.35)]} and run.others_source == "metrics.jsonl"
    assert (run.wall_s, run.wall_source) == (95.0, "metrics.jsonl")  # the last evaluation ends the run
    assert sorted(run.per_image) == ["hardness", "margin"]
    hardness = run.per_image["hardness"]
    assert hardness.ids == ["u1", "u2", "u,3"] and hardness.last_epoch == 2
    assert hardness.iteration.tolist() == [0, 1, 4, 5, 5]
    assert {e: v.tolist() for e, v in hardness.by_epoch().items()} == {1: [0.9, 0.2], 2: [0.7, 0.5, 0.1]}
    assert hardness.image_values(2) == {"u1": [0.7, 0.5], "u,3": [0.1]}
    assert run.per_image["margin"].value.tolist() == [3.5, -1.0]
    assert read_run(tmp_path / "run", per_image=False).per_image == {}


def test_wall_time_falls_back_to_result_json_then_train_log(tmp_path) -> None:
    run_dir = new_form_run(tmp_path / "run")
    (run_dir / "metrics.jsonl").write_text(json.dumps(evaluation(1, 4, 0.3)) + "\n")
    assert (read_run(run_dir).wall_s, read_run(run_dir).wall_source) == (90.0, "train_scalars.jsonl")
    (run_dir / "train_scalars.jsonl").unlink()
    (run_dir / "result.json").write_text(json.dumps({"config": "exps/toy/imas.yaml", "wall_s": 321.5}))
    run = read_run(run_dir)
    assert (run.wall_s, run.wall_source, run.result["config"]) == (321.5, "result.json", "exps/toy/imas.yaml")
    assert run.scalars_source == "train.log" and run.scalars["train/loss"] == [(2, 9.0)]
    (run_dir / "result.json").unlink()
    assert (read_run(run_dir).wall_s, read_run(run_dir).wall_source) == (1.0, "train.log")
    (run_dir / "train.log").unlink()
    run = read_run(run_dir)
    assert (run.wall_s, run.wall_source, run.scalars, run.scalars_source) == (None, "n/a", {}, "none")


def test_read_run_of_a_committed_run_written_before_train_scalars() -> None:
    """training-imas-logs/ holds train.log, metrics.jsonl (no "others") and hardness.csv: the training
    scalars, the student's mIoU and the wall time come from train.log."""
    run = read_run(LEGACY_RUN)
    assert run.scalars_source == "train.log" and run.method == "imas" and run.iters_per_epoch == 150
    tags = {
        "train/lr",
        "train/loss_x",
        "train/loss_u",
        "train/easiness",
        "train/cutmix_rate",
        "train/confident",
    }
    assert set(run.scalars) == tags
    loss_x = run.scalars["train/loss_x"]
    assert [step for step, _ in loss_x] == list(range(25, 1201, 25))
    assert loss_x[0] == (25, 1.3479) and run.scalars["train/lr"][0] == (25, 0.000982)
    assert run.others_source == "train.log"
    assert run.others["student"] == [(4, pytest.approx(0.4248)), (8, pytest.approx(0.476))]
    assert (run.wall_s, run.wall_source) == (394.9, "result.json")
    rows = (LEGACY_RUN / "hardness.csv").read_text().splitlines()[1:]
    hardness = run.per_image["hardness"]
    assert (
        len(hardness.value) == len(rows) and hardness.last_epoch == 8 and list(run.per_image) == ["hardness"]
    )  # the file counts its 8 epochs from 0; read from 1
    cps = read_run(REPO / "training-imas-logs/toy_methods/cps/seed0", per_image=False)
    assert [epoch for epoch, _ in cps.others["second network"]] == [8, 16, 24, 32, 40]


def test_legacy_train_log_sums_the_attempts_of_a_resumed_run(tmp_path) -> None:
    (tmp_path / "train.log").write_text(
        """2026-01-01 10:00:00 INFO run runs/x on cpu x 1 (fp32)
2026-01-01 10:01:00 INFO epoch 1/2 it 2/4 1.00 it/s eta 0:00:02 lr 0.01 loss_x 1.0000 loss_u 0.5000
2026-01-01 10:05:00 INFO epoch 1 student mIoU 11.00
2026-01-01 10:05:00 INFO epoch 1 eval teacher mIoU 10.00 (best 10.00) in 1.0s
class           IoU %  GT px %
2026-01-01 10:06:00 WARNING something
2026-01-01 12:00:00 INFO run runs/x on cpu x 1 (fp32)
2026-01-01 12:00:01 INFO resumed from runs/x/latest.pth: 0 epochs done, iteration 0
2026-01-01 12:00:30 INFO epoch 1/2 it 2/4 1.00 it/s eta 0:00:02 lr 0.01 loss_x 0.9000 loss_u nan
2026-01-01 12:01:30 INFO done: best mIoU 10.00 after 2 epochs; checkpoints in runs/x
"""
    )
    log = legacy_train_log(tmp_path)
    assert log.wall_s == 6 * 60 + 90
    assert log.scalars["train/loss_x"] == [(2, 0.9)]  # the re-run iteration's last line
    assert math.isnan(log.scalars["train/loss_u"][0][1]) and log.scalars["train/lr"] == [(2, 0.01)]
    assert log.others == {"student": [(1, 0.11)]}
    (tmp_path / "train.log").write_text("no stamped line\n")
    assert legacy_train_log(tmp_path).wall_s is None
    (tmp_path / "train.log").unlink()
    assert legacy_train_log(tmp_path) is None


def test_truncate_train_scalars_keeps_what_the_checkpoint_covers(tmp_path) -> None:
    path = tmp_path / "train_scalars.jsonl"
    assert truncate_train_scalars(tmp_path, 4) == 0 and not path.exists()
    write_lines(path, [window(2, 1.0, 2.0), window(4, 0.9, 4.0), window(6, 0.8, 6.0)], tail='{"epoch": 2, "i')
    before = os.stat(path).st_ino
    assert truncate_train_scalars(tmp_path, 4) == 2  # iteration 6 and the torn line
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [2, 4]
    assert path.read_text().endswith("\n") and os.stat(path).st_ino != before  # replaced, not rewritten
    assert truncate_train_scalars(tmp_path, 4) == 0
    # A whole last record whose newline a crash cut: kept, and the newline put back for the next append.
    path.write_text(path.read_text() + json.dumps(window(4, 0.9, 4.0)))
    assert truncate_train_scalars(tmp_path, 8) == 0 and path.read_text().endswith("}\n")
    assert not list(tmp_path.glob("*.tmp"))
    assert "train_scalars.jsonl.tmp" in TEMPORARIES
    (tmp_path / "train_scalars.jsonl.tmp").write_text("half")
    assert remove_stale_temporaries(tmp_path) == ["train_scalars.jsonl.tmp"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("missing", "does not exist"),
        ("file", "is a file, not a run directory"),
        ("empty", "holds no config.yaml"),
        ("bad_yaml", "cannot be read as a config (ParserError)"),
        ("list", "does not hold a config (a mapping of sections)"),
    ],
)
def test_read_run_of_what_is_not_a_run_is_one_sentence(make, expected, tmp_path) -> None:
    run_dir = tmp_path / "run"
    if make == "file":
        run_dir.write_text("x")
    elif make != "missing":
        run_dir.mkdir()
        text = {"empty": None, "bad_yaml": "train: [", "list": "- a\n"}[make]
        if text is not None:
            (run_dir / "config.yaml").write_text(text)
    with pytest.raises(UserError) as info:
        read_run(run_dir)
    assert expected in str(info.value)


def test_per_image_history_is_cut_back_to_the_checkpoint(tmp_path):
    """On resume a per-image CSV keeps the rows of iterations the checkpoint covers; a row cut short by a
    kill, a foreign line and the rows of iterations after it go, atomically; a missing file gets its
    header."""
    from imas.rundir import remove_stale_temporaries, truncate_per_image

    path = tmp_path / "hardness.csv"
    path.write_text(
        "image_id,epoch,iteration,hardness\n"
        "a,1,0,0.50000\nb,1,1,0.25000\nnot a row\nc,2,2,0.12500\nd,2,3,0.1"  # the last row cut short
    )
    assert truncate_per_image(tmp_path, "hardness", 2) == 3
    assert path.read_text() == "image_id,epoch,iteration,hardness\na,1,0,0.50000\nb,1,1,0.25000\n"
    assert not (tmp_path / "hardness.csv.tmp").exists()
    assert truncate_per_image(tmp_path, "easiness", 0) == 0
    assert (tmp_path / "easiness.csv").read_text() == "image_id,epoch,iteration,easiness\n"
    (tmp_path / "hardness.csv.tmp").write_text("left by a kill")
    (tmp_path / "mine.csv.tmp").write_text("not ours")
    assert remove_stale_temporaries(tmp_path, ["hardness"]) == ["hardness.csv.tmp"]
    assert (tmp_path / "mine.csv.tmp").is_file()
