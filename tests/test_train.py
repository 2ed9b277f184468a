"""End-to-end: train + evaluate on a small toy subset, resume, bad input, torchrun with gloo."""

import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

import numpy as np
import pytest
import torch
from conftest import FEW_STEP_SECTIONS, REPO, small_config, stop_after_save, torchrun

from imas import evaluate as eval_cli
from imas import precision as mixed_precision
from imas import predict as predict_cli
from imas import train as train_cli
from imas.config import Config, Precision
from imas.methods import METHODS
from imas.methods.supervised import SupOnly


@pytest.mark.slow
def test_train_then_eval(tmp_path, toy, capsys):
    config = small_config(tmp_path, toy)
    run_dir = tmp_path / "run"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    for name in ("config.yaml", "train.log", "metrics.jsonl", "latest.pth", "best.pth"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0.0 <= r["miou"] <= 1.0 for r in records)

    ckpt = torch.load(run_dir / "latest.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == 2 * (16 // 4)
    assert {"model", "optimizer", "scaler", "rng", "config", "version", "best_miou"} <= set(ckpt)
    assert ckpt["config"]["data"]["num_classes"] == 6
    log = (run_dir / "train.log").read_text()
    assert "eta" in log and "mIoU" in log
    # One model: a summary row for the student only, with metrics.jsonl's numbers.
    assert "done: 2 epochs, " in log and "(reported)" not in log
    student = records_row(log, "student")
    best = max(records, key=lambda r: r["miou"])
    assert student == [f"{100 * best['miou']:.2f}", str(best["epoch"]), f"{100 * records[-1]['miou']:.2f}"]

    out = tmp_path / "eval.json"
    code = eval_cli.main(
        [
            "--config",
            str(config),
            "--checkpoint",
            str(run_dir / "latest.pth"),
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["miou"] == pytest.approx(records[-1]["miou"], abs=1e-9)
    assert "mIoU" in capsys.readouterr().out


# Settings that let the teacher-student methods' few toy steps see confident pixels and whole CutMix groups.
def method_config(tmp_path, toy, method: str, **train) -> Path:
    """small_config training `method` (with the settings its few toy steps need)."""
    return small_config(tmp_path, toy, train={"method": method} | train, **FEW_STEP_SECTIONS.get(method, {}))


def kept_models(method: str) -> set[str]:
    """The checkpoint keys of the models `method` keeps: what it trains plus what it evaluates (an ensemble
    keeps its members)."""
    return {n.key for n in METHODS[method].networks if not n.members}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_resume_equals_uninterrupted(tmp_path, toy, monkeypatch, method):
    config = method_config(tmp_path, toy, method)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train_cli.main(["--config", str(config), "--run-dir", str(full), "--device", "cpu"]) == 0

    # the job is killed right after the first epoch's checkpoint
    resume_saving = stop_after_save(
        monkeypatch, lambda path, state: path.name == "latest.pth" and state.epoch == 1
    )
    assert train_cli.main(["--config", str(config), "--run-dir", str(resumed), "--device", "cpu"]) == 130
    assert torch.load(resumed / "latest.pth", weights_only=True)["epoch"] == 1
    resume_saving()
    assert train_cli.main(["--config", str(config), "--run-dir", str(resumed), "--device", "cpu"]) == 0

    a = torch.load(full / "latest.pth", weights_only=True)
    b = torch.load(resumed / "latest.pth", weights_only=True)
    assert a["iteration"] == b["iteration"]
    assert kept_models(method) <= set(a) and kept_models(method) <= set(b)
    for name in kept_models(method):
        for key, tensor in a[name].items():
            assert torch.equal(tensor, b[name][key]), (name, key)
    # State that is not a network (U2PL's queues) resumes exactly too.
    assert a.get("method_state", {}).keys() == b.get("method_state", {}).keys()
    for key, tensor in a.get("method_state", {}).items():
        assert torch.equal(tensor, b["method_state"][key]), key
    if method == "u2pl":
        assert a["method_state"]["fill"].sum() > 0  # negative keys were queued
    metrics_a = (full / "metrics.jsonl").read_text().splitlines()
    metrics_b = (resumed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["miou"] for x in metrics_a] == [json.loads(x)["miou"] for x in metrics_b]
    assert "resumed from" in (resumed / "train.log").read_text()


# The toy ViT with the DPT head in place of small_config's ResNet (its ResNet and DeepLabv3+ options set back
# to their defaults, which a ViT requires; with a crop its patch of 6 divides).
VIT_MODEL = {"encoder": "vit_toy", "head": "dpt", "backbone_width": 64, "decoder_channels": 256}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["unimatch_v2", "imas"])
def test_a_vit_trains_under_torchrun_and_resumes_exactly(tmp_path, toy, monkeypatch, method):
    """DDP over 2 CPU processes (gloo) on the ViT + DPT (every parameter that takes a gradient gets one in
    every step, or DDP stops at the second); a single-process run stopped after its first epoch resumes to
    the uninterrupted weights."""
    sections = FEW_STEP_SECTIONS.get(method, {}) | {"model": VIT_MODEL, "data": {"crop_size": 60}}
    config = small_config(tmp_path, toy, train={"method": method, "epochs": 2}, **sections)
    run_dir = tmp_path / "ddp"
    train = torchrun("train_semi.py", "--config", str(config), "--run-dir", str(run_dir), "--device", "cpu")
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    ddp = torch.load(run_dir / "latest.pth", weights_only=True)
    assert ddp["iteration"] == 2 * 16 // (4 * 2) and kept_models(method) <= set(ddp)
    assert {"head.scratch.output_conv.2.weight", "backbone.blocks.0.ls1.gamma"} <= set(ddp["model"])

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train_cli.main(["--config", str(config), "--run-dir", str(full), "--device", "cpu"]) == 0
    resume_saving = stop_after_save(
        monkeypatch, lambda path, state: path.name == "latest.pth" and state.epoch == 1
    )
    assert train_cli.main(["--config", str(config), "--run-dir", str(resumed), "--device", "cpu"]) == 130
    resume_saving()
    assert train_cli.main(["--config", str(config), "--run-dir", str(resumed), "--device", "cpu"]) == 0
    a = torch.load(full / "latest.pth", weights_only=True)
    b = torch.load(resumed / "latest.pth", weights_only=True)
    for name in kept_models(method):
        for key, tensor in a[name].items():
            assert torch.equal(tensor, b[name][key]), (name, key)


@pytest.mark.slow
def test_nonfinite_loss_stops_without_checkpoint(tmp_path, toy, monkeypatch, capsys):
    config = small_config(tmp_path, toy)
    original = SupOnly.step
    calls = []

    def nan_on_second_step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SupOnly, "step", nan_on_second_step)
    run_dir = tmp_path / "nan"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the loss became NaN") and "\n" not in err
    assert not (run_dir / "latest.pth").exists() and not (run_dir / "best.pth").exists()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"root": "/no/such/root"}, "/no/such/root"),
        ({"labeled_split": "/no/such/split.txt"}, "/no/such/split.txt"),
    ],
)
def test_bad_data_is_one_sentence(tmp_path, toy, capsys, data, needle):
    config = small_config(tmp_path, toy, data=data)
    assert train_cli.main(["--config", str(config), "--run-dir", str(tmp_path / "r"), "--device", "cpu"]) == 2
    assert needle in one_error_line(capsys)


def test_bad_val_file_stops_before_the_first_iteration(tmp_path, toy, capsys):
    """A missing val image used to be found at the first evaluation, after an epoch of training."""
    val = tmp_path / "val.txt"
    val.write_text((toy / "splits/small_val.txt").read_text() + "val_missing\n")
    config = small_config(tmp_path, toy, data={"val_split": str(val)})
    run_dir = tmp_path / "r"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    assert "val_missing" in one_error_line(capsys)
    assert not run_dir.exists()  # stopped before training began: that start leaves no files


def test_bad_config_is_one_sentence(tmp_path, toy, capsys):
    config = small_config(tmp_path, toy)
    assert train_cli.main(["--config", str(config), "--opt", "train.epoch=3"]) == 2
    assert "train.epoch" in one_error_line(capsys)
    assert train_cli.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in one_error_line(capsys)


@pytest.mark.slow
def test_eval_refuses_checkpoint_with_other_classes(tmp_path, toy, capsys):
    config = small_config(tmp_path, toy, train={"epochs": 1})
    run_dir = tmp_path / "run"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    capsys.readouterr()
    args = ["--config", str(config), "--checkpoint", str(run_dir / "best.pth"), "--device", "cpu"]
    assert eval_cli.main([*args, "--opt", "data.num_classes=5"]) == 2
    assert "6 classes" in one_error_line(capsys)
    assert eval_cli.main(["--config", str(config), "--checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "none.pth" in one_error_line(capsys)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_torchrun_two_processes_gloo(tmp_path, toy, method):
    """DDP over 2 CPU processes (gloo): every method trains, evaluates every val image once (the reported
    model) and checkpoints; iMAS all-gathers the hardness of both ranks' images. For SupOnly and iMAS, a
    2-process eval.py of the checkpoint gives the single-process result."""
    config = method_config(tmp_path, toy, method, epochs=1)
    run_dir = tmp_path / "ddp"
    train = torchrun("train_semi.py", "--config", str(config), "--run-dir", str(run_dir), "--device", "cpu")
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    ckpt = torch.load(run_dir / "latest.pth", weights_only=True)
    assert ckpt["iteration"] == 16 // (4 * 2)  # each of 2 ranks takes 4 images per step
    assert len(ckpt["rng"]) == 2
    assert kept_models(method) <= set(ckpt)
    assert (run_dir / "hardness.csv").exists() == ("hardness" in METHODS[method].per_image)
    if method == "imas":
        rows = [row.split(",") for row in (run_dir / "hardness.csv").read_text().splitlines()[1:]]
        # 2 iterations x 4 images x 2 ranks: one epoch over the 16 unlabeled images, each once
        assert sorted(row[0] for row in rows) == sorted(
            (toy / "splits/small_unlabeled.txt").read_text().split()
        )
        assert sorted({int(row[2]) for row in rows}) == [0, 1]
    ddp_miou = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["miou"]
    if method not in ("supervised", "imas"):
        return

    out = tmp_path / "ddp_eval.json"
    evaluation = torchrun(
        "eval.py",
        "--config",
        str(config),
        "--checkpoint",
        str(run_dir / "latest.pth"),
        "--output",
        str(out),
        "--device",
        "cpu",
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    single = tmp_path / "single_eval.json"
    assert (
        eval_cli.main(
            [
                "--config",
                str(config),
                "--checkpoint",
                str(run_dir / "latest.pth"),
                "--output",
                str(single),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    two, one = json.loads(out.read_text()), json.loads(single.read_text())
    assert two["miou"] == pytest.approx(one["miou"], abs=1e-12) == pytest.approx(ddp_miou, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_on_cpu(tmp_path, toy, precision):
    """The CPU stand-in for CUDA AMP: autocast (and a GradScaler for fp16) with channels_last inputs."""
    # A narrow model: fp16 backward kernels on some CPUs run at a fraction of bf16's speed.
    config = small_config(
        tmp_path,
        toy,
        train={"epochs": 1, "precision": precision, "channels_last": True, "eval_every": 1},
        model={"backbone_width": 8, "decoder_channels": 16},
    )
    run_dir = tmp_path / precision
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    ckpt = torch.load(run_dir / "latest.pth", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0 if precision == "fp16" else ckpt["scaler"] == {}
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    # The run warns about emulated low precision exactly when this CPU lacks native kernels for it.
    warned = "no native" in (run_dir / "train.log").read_text()
    assert warned == (not mixed_precision.cpu_has_native(Precision(precision)))


def test_precision_warning_names_the_fix(monkeypatch):
    cpu = torch.device("cpu")
    assert mixed_precision.cpu_has_native(Precision.fp32)
    assert mixed_precision.precision_warning(Precision.fp32, cpu) is None
    monkeypatch.setattr(mixed_precision, "cpu_has_native", lambda precision: precision is Precision.fp32)
    message = mixed_precision.precision_warning(Precision.bf16, cpu)
    assert "bf16" in message and "train.precision: fp32" in message and " train.precision=fp32" in message
    assert "--opt" not in message  # single_run.sh takes the override without it
    assert mixed_precision.cpu_description().endswith(", no native bf16")
    cuda = torch.device("cuda")
    assert mixed_precision.precision_warning(Precision.bf16, cuda) is None  # CUDA: native or refused
    monkeypatch.setattr(mixed_precision, "cpu_has_native", lambda precision: True)
    assert mixed_precision.precision_warning(Precision.bf16, cpu) is None
    assert mixed_precision.cpu_description().endswith(", native bf16")


def records_row(log: str, label: str) -> list[str]:
    """The closing summary's row of one model in train.log: [best mIoU, its epoch, final mIoU]."""
    head = log.index("INFO done: ")
    (row,) = [line for line in log[head:].splitlines()[2:] if line.split()[:1] == [label]]
    return row.split()[1:4]


def scalars_at(events, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in events.Scalars(tag)}


@pytest.mark.slow
def test_imas_trains_and_reports_the_teacher(tmp_path, toy):
    """A short iMAS run: teacher in the checkpoint, teacher mIoU reported, logged easiness and CutMix rate;
    what TensorBoard and train.log show of it."""
    config = small_config(
        tmp_path,
        toy,
        train={"method": "imas", "epochs": 2, "image_every": 3},
        imas={"threshold": 0.5, "group_size": 2},
    )
    run_dir = tmp_path / "imas"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = events.Tags()
    assert {
        "train/easiness",
        "train/cutmix_rate",
        "train/confident",
        "train/loss_u",
        "train/loss_int",
        "train/loss_cm",
    } <= set(tags["scalars"])
    assert {"eval/miou", "eval/student_miou", "train/lr"} <= set(tags["scalars"]) and "lr" not in tags[
        "scalars"
    ]
    assert [h.step for h in events.Histograms("train/hardness")] == [2, 4, 6, 8]  # every log line
    assert events.Histograms("train/hardness")[0].histogram_value.num == 2 * 4  # 2 iterations x 4 images
    panels = events.Images("train/views")
    assert [p.step for p in panels] == [0, 3, 6, 7]  # iterations 0, 3, 6 of 8, and the last one
    # 4 images a row (batch 4), 5 columns (weak, intensity, CutMix, pseudo-label, prediction) of 64 px
    # crops shown as 128 px cells, with header, notes and legend (tests/test_visualize.py: the layout)
    assert panels[0].height > 4 * 128 and panels[0].width > 5 * 128
    # mIoU and per-class IoU of both models at each evaluation (every class the toy's val images hold has
    # one), in percent where metrics.jsonl keeps fractions.
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        step = record["iteration"]
        for name, iou in record["iou"].items():
            if iou is not None:
                assert scalars_at(events, f"eval_iou/{name}")[step] == pytest.approx(100 * iou)
        for name, iou in record["others"]["student"]["iou"].items():
            if iou is not None:
                student_iou = scalars_at(events, f"eval_iou/{name}/student")[step]
                assert student_iou == pytest.approx(100 * iou)
        assert scalars_at(events, "eval/miou")[step] == pytest.approx(100 * record["miou"])
        assert scalars_at(events, "eval/best_miou")[step] == pytest.approx(100 * record["best_miou"])
        student_miou = scalars_at(events, "eval/student_miou")[step]
        assert student_miou == pytest.approx(100 * record["others"]["student"]["miou"])
    assert "eval_iou/background" in tags["scalars"] and "eval_iou/background/student" in tags["scalars"]
    assert "custom_scalars__config__" in tags["tensors"]  # the custom-scalars dashboard's layout
    # The validation panel at each evaluation: 4 val images x (image, ground truth, teacher, student).
    val_panels = events.Images("eval/views")
    assert [p.step for p in val_panels] == [4, 8]
    assert val_panels[0].height > 4 * 192 and val_panels[0].width > 4 * 128
    (config_text,) = events.Tensors("config/text_summary")
    text = config_text.tensor_proto.string_val[0].decode()
    assert text.startswith("```yaml\n") and "method: imas" in text and "image_every: 3" in text
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    ckpt = torch.load(run_dir / "latest.pth", weights_only=True)
    assert {"model", "teacher"} <= set(ckpt)
    assert any(
        not torch.equal(ckpt["model"][k], ckpt["teacher"][k]) for k in ckpt["model"]
    )  # EMA, not a copy
    assert [r["model"] for r in records] == ["teacher", "teacher"]
    log = (run_dir / "train.log").read_text()
    assert "easiness" in log and "cutmix_rate" in log and "student mIoU" in log
    check_console(log, config, run_dir, records, events)
    # eval.py evaluates either model of an iMAS checkpoint.
    for which in ("teacher", "student"):
        out = tmp_path / f"{which}.json"
        args = ["--config", str(config), "--checkpoint", str(run_dir / "latest.pth"), "--model", which]
        assert eval_cli.main(args + ["--output", str(out), "--device", "cpu"]) == 0
        assert json.loads(out.read_text())["model"] == {"teacher": "teacher", "student": "model"}[which]
    teacher_miou = json.loads((tmp_path / "teacher.json").read_text())["miou"]
    assert teacher_miou == pytest.approx(records[-1]["miou"], abs=1e-6)
    check_predict(tmp_path, toy, run_dir / "latest.pth")


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def check_console(log: str, config: Path, run_dir: Path, records: list[dict], events) -> None:
    """train.log of the 2-epoch iMAS run: banner, window means equal to TensorBoard's, new-best lines and the
    closing summary with metrics.jsonl's numbers."""
    assert f"INFO run {run_dir} on cpu x 1 (fp32)\n" in log
    assert f"  config       {config}\n" in log and "  seed         0\n" in log
    assert "  method       imas (reported model: teacher; also evaluated: student)\n" in log
    assert "  world size   1 process on cpu, precision fp32\n" in log
    assert f"  run dir      {run_dir.resolve()}\n" in log
    # Each training line shows TensorBoard's window means of its iteration, with 4 significant digits.
    lines = re.findall(r" it (\d+)/8 .*? lr \S+ (.*)$", log, re.M)
    assert [int(step) for step, _ in lines] == [2, 4, 6, 8]
    for step, values in lines:
        tokens = values.split()
        for name, text in zip(tokens[::2], tokens[1::2]):
            assert text == f"{float(text):#.4g}", text
            logged = scalars_at(events, f"train/{name}")[int(step)]
            assert float(text) == pytest.approx(logged, rel=5e-4, abs=1e-12), name
    # A new best is announced with the file it went to, once per improvement.
    best_so_far, announced = -1.0, []
    for r in records:
        if r["miou"] > best_so_far:
            best_so_far = r["miou"]
            announced.append(f"teacher mIoU {pct(r['miou'])} at epoch {r['epoch']} -> {run_dir / 'best.pth'}")
    assert re.findall(r"new best: (.*)", log) == announced
    # The summary: best (first highest) and final mIoU of both models, as metrics.jsonl holds them.
    best, final = max(records, key=lambda r: r["miou"]), records[-1]
    assert (
        f"best teacher mIoU {pct(best['miou'])} at epoch {best['epoch']}, final {pct(final['miou'])}" in log
    )
    assert records_row(log, "teacher") == [pct(best["miou"]), str(best["epoch"]), pct(final["miou"])]
    student = [(r["others"]["student"]["miou"], r["epoch"]) for r in records]
    student_best = max(student, key=lambda p: p[0])
    assert records_row(log, "student") == [pct(student_best[0]), str(student_best[1]), pct(student[-1][0])]
    assert torch.load(run_dir / "best.pth", weights_only=True)["epoch"] == best["epoch"]
    for name in ("metrics.jsonl", "hardness.csv", "train.log"):
        assert str(run_dir / name) in log
    assert f"tensorboard --logdir {run_dir}" in log


def check_predict(tmp_path: Path, toy: Path, checkpoint: Path) -> None:
    """predict.py on a folder with two images and a broken file, then on a glob, then on nothing readable."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for image_id in ("val_0000", "val_0001"):
        (photos / f"{image_id}.jpg").write_bytes((toy / "JPEGImages" / f"{image_id}.jpg").read_bytes())
    (photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "pred"
    code = predict_cli.main(["--checkpoint", str(checkpoint), "--input", str(photos), "--output", str(out)])
    assert code == 0
    for image_id in ("val_0000", "val_0001"):
        index = Image.open(out / f"{image_id}.png")
        source = Image.open(photos / f"{image_id}.jpg")
        assert index.mode == "P" and index.size == source.size
        assert int(np.asarray(index).max()) < 6  # class indices, not colours
        assert Image.open(out / f"{image_id}_overlay.jpg").size == source.size
    assert not (out / "broken.png").exists()
    code = predict_cli.main(
        ["--checkpoint", str(checkpoint), "--input", str(photos / "val_*.jpg"), "--output", str(out / "g")]
    )
    assert code == 0 and len(list((out / "g").glob("*_overlay.jpg"))) == 2
    code = predict_cli.main(
        ["--checkpoint", str(checkpoint), "--input", str(photos / "broken.jpg"), "--output", str(out / "b")]
    )
    assert code == 2


def test_repeated_opt_flags_accumulate():
    args = train_cli.parse_args(["--config", "x.yaml", "--opt", "a.b=1", "c.d=2", "--opt", "e.f=3"])
    assert args.opt == ["a.b=1", "c.d=2", "e.f=3"]
    assert eval_cli.parse_args(
        ["--config", "x", "--checkpoint", "y", "--opt", "a.b=1", "--opt", "c.d=2"]
    ).opt == [
        "a.b=1",
        "c.d=2",
    ]


def test_seed_is_an_override_and_the_loaded_config_is_not_changed(monkeypatch):
    """--seed N is --opt train.seed=N, given last; the loop trains the config exactly as loaded."""
    args = train_cli.parse_args(["--config", "x.yaml", "--opt", "train.seed=1", "--seed", "7"])
    assert args.opt == ["train.seed=1", "train.seed=7"]
    loaded = []
    monkeypatch.setattr(train_cli, "load_experiment", lambda path, opts: loaded.append(opts) or Config())
    monkeypatch.setattr(train_cli, "check_run_dir", lambda run_dir: (_ for _ in ()).throw(KeyboardInterrupt))
    assert train_cli.main(["--config", "x.yaml", "--seed", "3", "--device", "cpu"]) == 130
    assert loaded == [["train.seed=3"]]


# The commands a checkout also has as scripts: its module, the script that runs it.
COMMANDS = {
    "imas-train": (train_cli, "train_semi.py"),
    "imas-eval": (eval_cli, "eval.py"),
    "imas-predict": (predict_cli, "predict.py"),
}
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"] if tomllib else {}


def test_commands_and_checkout_scripts_run_the_same_main(monkeypatch):
    """pyproject.toml's console commands each call a function of imas.entry, which parses the command line
    (before torch is imported) and hands the same arguments to one package module's main(); the checkout's
    scripts (which torchrun and single_run.sh run) call the same functions, so the tests of the modules cover
    both."""
    import imas.entry

    if not SCRIPTS:
        pytest.skip("tomllib needs Python 3.11+")
    assert set(COMMANDS) <= set(SCRIPTS)
    for target in SCRIPTS.values():
        module_name, function = target.split(":")
        assert module_name == "imas.entry" and callable(getattr(imas.entry, function))
    argvs = {
        "imas-train": ["--config", "c.yaml"],
        "imas-eval": ["--config", "c.yaml", "--checkpoint", "best.pth"],
        "imas-predict": ["--checkpoint", "best.pth", "--input", "x"],
    }
    for command, (module, script) in COMMANDS.items():
        entry = getattr(imas.entry, SCRIPTS[command].split(":")[1])
        # run_path's module name is not "__main__": the script only imports
        assert runpy.run_path(str(REPO / script))["main"] is entry
        given = []
        monkeypatch.setattr(module, "main", lambda argv, given=given: given.append(argv) or 7)
        assert entry(argvs[command]) == 7 and given == [argvs[command]]


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_installed_command_answers_help(command):
    """The console script pip made next to this interpreter (pip install -e ".[dev]") names itself."""
    path = Path(sys.executable).parent / command
    if not path.is_file():
        pytest.skip(f"{command} is not installed next to {sys.executable}")
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {command} ")


@pytest.mark.slow
def test_imas_hardness_history_continues_after_resume(tmp_path, toy, monkeypatch):
    """hardness.csv: one row per unlabeled image and iteration; a crash + resume writes the same file."""
    config = small_config(
        tmp_path, toy, train={"method": "imas", "epochs": 2}, imas={"threshold": 0.5, "group_size": 2}
    )
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train_cli.main(["--config", str(config), "--run-dir", str(full), "--device", "cpu"]) == 0
    rows = (full / "hardness.csv").read_text().splitlines()
    assert rows[0] == "image_id,epoch,iteration,hardness"
    assert len(rows) - 1 == 2 * (16 // 4) * 4  # epochs x iterations x images per batch
    unlabeled_ids = set((toy / "splits/small_unlabeled.txt").read_text().split())
    for row in rows[1:]:
        image_id, _, _, value = row.split(",")
        assert image_id in unlabeled_ids and 0.0 <= float(value) <= 1.0

    resume_saving = stop_after_save(
        monkeypatch, lambda path, state: path.name == "latest.pth" and state.epoch == 1
    )
    assert train_cli.main(["--config", str(config), "--run-dir", str(resumed), "--device", "cpu"]) == 130
    checkpoint_iteration = torch.load(resumed / "latest.pth", weights_only=True)["iteration"]
    with (resumed / "hardness.csv").open("a") as f:  # rows of a crashed epoch after the checkpoint
        # the first iteration after the checkpoint (its index is the checkpoint's count) and a later one
        f.write(f"stale,2,{checkpoint_iteration},0.5\nstale,2,{checkpoint_iteration + 3},0.5\n")
    resume_saving()
    assert train_cli.main(["--config", str(config), "--run-dir", str(resumed), "--device", "cpu"]) == 0
    assert (resumed / "hardness.csv").read_text() == (full / "hardness.csv").read_text()


@pytest.mark.slow
def test_imas_with_padding_masked_and_every_cutmix_firing(tmp_path, toy):
    config = small_config(
        tmp_path,
        toy,
        train={"method": "imas", "epochs": 1},
        imas={"mask_padding": True, "cutmix": "fixed", "cutmix_p": 1.0, "group_size": 2},
    )
    run_dir = tmp_path / "masked"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    assert "cutmix_rate 1.000 " in (run_dir / "train.log").read_text()


def test_val_panel_columns_and_sizes():
    """eval/views: image, ground truth, then each model's whole-image prediction (the reported one first
    and marked), all scaled to one cell size; the models' train mode is restored."""
    from imas.config import Config
    from imas.panels import VAL_CELL, val_panel

    class Constant(torch.nn.Module):
        def __init__(self, cls: int) -> None:
            super().__init__()
            self.cls = cls

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 4, *x.shape[2:])
            logits[:, self.cls] = 1.0
            return logits

    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    samples = [
        {"image": torch.full((3, 40, 80), 7, dtype=torch.uint8), "mask": torch.ones(40, 80), "id": "wide"},
        {"image": torch.full((3, 60, 30), 7, dtype=torch.uint8), "mask": torch.ones(60, 30), "id": "tall"},
    ]
    models = {"teacher": Constant(2), "student": Constant(3)}
    columns, rows = val_panel(Config(), models, samples, palette, torch.device("cpu"))
    assert list(columns) == ["image", "ground truth", "teacher (reported)", "student"]
    cell = VAL_CELL
    assert all(v.shape == (2, 3, cell, 2 * cell) and v.dtype == torch.uint8 for v in columns.values())
    assert rows == [["wide"], ["tall"]]
    centre = (slice(None), cell // 2, cell)
    assert columns["ground truth"][0][centre].tolist() == list(palette[1])
    assert columns["teacher (reported)"][1][centre].tolist() == list(palette[2])
    assert columns["student"][0][centre].tolist() == list(palette[3])
    assert all(m.training for m in models.values())
    single, _ = val_panel(Config(), {"student": Constant(1)}, samples[:1], palette, torch.device("cpu"))
    assert list(single) == ["image", "ground truth", "student"]
