"""A run directory holds one run's results: settings checked on resume, one process at a time, nothing
non-finite or stale kept, a full disk reported in a sentence (docs/reliability.md)."""

import errno
import json
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
from imas import train as train_cli
from imas.checkpoint import nonfinite_count, save_checkpoint
from imas.config import Config, to_dict
from imas.errors import CheckpointError, ConfigError, RunDirError
from imas.rundir import LOCK_NAME, RunLock, check_run_dir, result_changes


def train(config: Path, run_dir: Path, *extra: str) -> int:
    return train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu", *extra])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def epochs_of(metrics: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]


# ------------------------------------------------------------------------------ settings on resume


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
    from imas.config import load_config
    from imas.dist import DistInfo
    from imas.models import build_model
    from imas.precision import make_grad_scaler
    from imas.schedule import make_optimizer

    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    cfg = load_config(small_config(tmp_path, toy), ["model.pretrained="])
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


def test_result_changes_ignore_neutral_keys_and_treat_new_keys_as_defaults():
    cfg = Config()
    cfg.train.method = "imas"
    stored = to_dict(cfg)
    cfg.train.log_every, cfg.eval.scales, cfg.train.run_dir = 3, [0.5, 1.0], "elsewhere"
    assert result_changes(stored, cfg) == []
    del stored["imas"]["mask_padding"]  # a checkpoint older than the key: its default is what it ran
    assert result_changes(stored, cfg) == []
    # Older checkpoints kept the iMAS settings in a section "semi" (for every method): the same settings.
    older = {key: value for key, value in stored.items() if key != "imas"} | {"semi": stored["imas"]}
    assert result_changes(older, cfg) == []
    cfg.imas.mask_padding = True
    cfg.model.backbone = "resnet50"
    assert result_changes(stored, cfg) == [
        ("model.backbone", "resnet101", "resnet50"),
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
        checkpoint_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0)
    )
    with pytest.raises(CheckpointError) as info:
        save_checkpoint({"epoch": 2}, path)
    message = str(info.value)
    assert f"checkpoint {path} could not be written (no space left on device)" in message
    assert "the previous one is kept" in message
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth"]


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
    lines = run(str(config), "1", "data.root=data/toy")
    assert lines[0] == "-m imas.data.toy --out data/toy --ensure"
    assert lines[1] == "tools/toy_pretrain.py --ensure"
    assert lines[2].startswith("train_semi.py")
