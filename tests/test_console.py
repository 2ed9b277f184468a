"""What a run prints and logs besides its numbers: window means, number formats, the banner, the closing
summary, and the TensorBoard text / hparams entries (imas/logging.py)."""

import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

import imas.precision
from imas.logging import (
    RunWriter,
    WindowMeans,
    banner,
    eval_scalars,
    format_duration,
    format_miou,
    format_number,
    model_results,
    scalars_layout,
    summary,
    tag_part,
)
from imas.metrics import ConfusionMatrix
from imas.report import reading


def test_window_mean_is_the_mean_of_the_window_steps():
    means = WindowMeans()
    steps = [{"loss": 1.0, "acc": 0.5}, {"loss": 2.0, "acc": 0.25}, {"loss": 6.0, "acc": 0.0}]
    for values in steps:
        means.add({k: torch.tensor(v) for k, v in values.items()})
    assert means.pop() == pytest.approx({"loss": 3.0, "acc": 0.25})
    # The next window starts empty: nothing of the previous one (or of an earlier epoch) is in its mean.
    assert means.pop() == {}
    means.add({"loss": torch.tensor(10.0), "acc": torch.tensor(1.0)})
    means.add({"loss": torch.tensor(20.0)})  # a key absent from a step is averaged over the steps with it
    assert means.pop() == pytest.approx({"loss": 15.0, "acc": 1.0})


def test_window_means_are_reduced_in_one_call_in_key_order():
    calls = []

    def reduce(values: torch.Tensor) -> torch.Tensor:
        calls.append(values.clone())
        return values * 2  # stands in for the mean over processes

    means = WindowMeans()
    means.add({"b": torch.tensor(1.0), "a": torch.tensor(3.0)})
    assert means.pop(reduce) == {"b": 2.0, "a": 6.0}
    assert len(calls) == 1 and calls[0].tolist() == [1.0, 3.0]


def test_number_formats():
    assert [format_number(v) for v in (0.60761, 1.0, 12.345, 0.0, 1.2345e-5)] == [
        "0.6076",
        "1.000",
        "12.35",
        "0.000",
        "1.234e-05",
    ]
    assert (
        format_miou(0.472349) == "47.23" and format_miou(None) == "n/a" and format_miou(float("nan")) == "n/a"
    )
    assert format_duration(3725.9) == "1:02:05" and format_duration(float("nan")) == "?"
    assert tag_part("traffic light") == "traffic_light" and tag_part("car/truck") == "car_truck"


def test_banner_names_config_method_seed_world_device_precision_and_run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    text = banner(
        tmp_path / "run",
        "exps/toy/imas.yaml",
        ["train.epochs=2"],
        "imas",
        ["teacher", "student"],
        3,
        2,
        "cuda:0",
        "bf16",
    )
    first, *rows = text.splitlines()
    # the legacy train.log reader (imas.rundir) splits an old run's train.log into attempts at this line
    assert re.match(r"^run .+ on \S+ x \d+", first) and first.endswith("on cuda:0 x 2 (bf16)")
    fields = dict(re.match(r"^  (\S+(?: \S+)?)\s{2,}(.*)$", row).groups() for row in rows)
    assert fields["config"] == "exps/toy/imas.yaml --opt train.epochs=2"
    assert fields["method"] == "imas (reported model: teacher; also evaluated: student)"
    assert fields["seed"] == "3"
    assert fields["world size"] == "2 processes on cuda:0, precision bf16"
    assert "  hardware     NVIDIA H100 80GB HBM3, 4 GPUs" in rows  # the GPU's name and this machine's count
    assert fields["run dir"] == str((tmp_path / "run").resolve())
    tensorboard = f"tensorboard --logdir {tmp_path / 'run'}, then open http://localhost:6006/?smoothing=0"
    assert fields["tensorboard"] == tensorboard  # eval curves unsmoothed: TensorBoard's default is 0.6


def test_banner_hardware_row_of_a_cpu_run_is_read_back_from_train_log(tmp_path, monkeypatch):
    monkeypatch.setattr(imas.precision, "cpu_model", lambda: "Test CPU Model 9000")
    monkeypatch.setattr(imas.precision, "cpu_description", lambda: "AVX2, no native bf16")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    text = banner(tmp_path, "exps/toy/imas.yaml", [], "supervised", ["student"], 0, 1, "cpu", "fp32")
    hardware = "Test CPU Model 9000, 3 cores, AVX2, no native bf16"
    assert f"  hardware     {hardware}" in text.splitlines()
    # imas-report reads the row back from train.log, where each record starts with a time stamp
    (tmp_path / "train.log").write_text(f"2026-12-02 10:00:00 INFO {text}\n")
    assert reading.recorded_hardware(tmp_path) == [hardware]


RECORDS = [
    {"epoch": 2, "miou": 0.40, "others": {"student": {"miou": 0.41}}},
    {"epoch": 4, "miou": 0.4723, "others": {"student": {"miou": 0.39}}},
    {"epoch": 6, "miou": 0.4723, "others": {"student": {"miou": 0.4510}}},
    {"epoch": 8, "miou": 0.4680, "others": {"student": {"miou": None}}},
]


def test_model_results_first_best_and_final():
    assert model_results(RECORDS, "teacher", reported=True) == {
        "best": 0.4723,
        "best_epoch": 4,  # the first of the tied evaluations, as best.pth keeps it
        "final": 0.4680,
        "final_epoch": 8,
    }
    student = model_results(RECORDS, "student", reported=False)
    assert (student["best"], student["best_epoch"], student["final"]) == (0.4510, 6, None)
    assert model_results([], "teacher", reported=True)["best"] is None


def test_summary_lines(tmp_path):
    text = summary(RECORDS, ["teacher", "student"], 8, 754.2, tmp_path, histories=[tmp_path / "hardness.csv"])
    lines = text.splitlines()
    assert lines[0] == "done: 8 epochs, 0:12:34; best teacher mIoU 47.23 at epoch 4, final 46.80"
    assert lines[1].split() == ["model", "best", "mIoU", "at", "epoch", "final", "mIoU"]
    assert lines[2].split() == ["teacher", "47.23", "4", "46.80", "(reported)"]
    assert lines[3].split() == ["student", "45.10", "6", "n/a"]
    assert f"{tmp_path / 'best.pth'} (epoch 4), {tmp_path / 'latest.pth'} (epoch 8)" in text
    for path in ("metrics.jsonl", "train_scalars.jsonl", "hardness.csv", "train.log"):
        assert str(tmp_path / path) in text
    assert f"tensorboard --logdir {tmp_path}" in text
    resumed = summary(RECORDS[:1], ["student"], 1, 5, tmp_path, resumed_epoch=1).splitlines()
    assert resumed[0] == (
        "done: 1 epoch, 0:00:05 since resuming after epoch 1; best student mIoU 40.00 at epoch 2, final 40.00"
    )
    assert "(reported)" not in resumed[2] and "per image" not in "\n".join(resumed)


def test_run_writer_text_hparams_and_finite_scalars(tmp_path):
    writer = RunWriter(tmp_path, enabled=True)
    writer.text("config", "```yaml\ntrain:\n  seed: 0\n```", 0)
    writer.scalars({"eval_iou/a": 50.0, "eval_iou/b": float("nan")}, 4)
    writer.scalars({"eval/best_miou": 0.5}, 4)
    writer.hparams({"method": "imas", "seed": 0, "lr": 0.01, "labeled_split": tmp_path}, ["eval/best_miou"])
    writer.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1 and not [
        p for p in tmp_path.iterdir() if p.is_dir()
    ]
    events = EventAccumulator(str(tmp_path)).Reload()
    assert set(events.Tags()["scalars"]) == {"eval_iou/a", "eval/best_miou"}  # NaN is not drawn
    (text,) = events.Tensors("config/text_summary")
    assert text.tensor_proto.string_val[0].decode().startswith("```yaml\ntrain:")
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["method"].string_value == "imas" and values["lr"].number_value == pytest.approx(0.01)
    assert values["labeled_split"].string_value == str(tmp_path)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["eval/best_miou"]


def test_run_writer_off_rank_0_writes_nothing(tmp_path):
    writer = RunWriter(tmp_path, enabled=False)
    writer.text("config", "x", 0)
    writer.hparams({"method": "imas"}, ["eval/best_miou"])
    writer.evaluation({"epoch": 1})
    writer.close()
    assert list(tmp_path.iterdir()) == []


def confusion(pred: list[int], target: list[int], classes: int = 3) -> ConfusionMatrix:
    matrix = ConfusionMatrix(classes, "cpu")
    matrix.update(torch.tensor([pred]), torch.tensor([target]))
    return matrix


CLASSES = ["background", "traffic light", "sky"]  # sky: in no image, so its IoU is NaN
# One evaluation of a method with two evaluated networks (CPS: the reported student and the second network)
TWO = {
    "student": confusion([0, 1, 1, 1], [0, 0, 1, 1]),
    "second network": confusion([0, 0, 1, 1], [0, 0, 1, 1]),
}


def test_eval_scalars_are_percent_under_the_group_tags():
    scalars = eval_scalars(TWO, CLASSES, best_miou=0.6)
    reported = 100 * (1 / 2 + 2 / 3) / 2  # IoU of background 1/2, of traffic light 2/3
    assert scalars["eval/miou"] == pytest.approx(reported) and scalars["eval/best_miou"] == pytest.approx(60)
    assert scalars["eval/second_network_miou"] == pytest.approx(100)
    assert (
        scalars["eval_iou/background"] == pytest.approx(50)
        and scalars["eval_iou/traffic_light/second_network"] == 100
    )
    nan = [tag for tag, value in scalars.items() if value != value]
    assert nan == ["eval_iou/sky", "eval_iou/sky/second_network"]  # skipped by RunWriter.scalars
    assert len(scalars) == 3 + 2 * len(CLASSES)
    assert "eval/best_miou" not in eval_scalars(TWO, CLASSES, best_miou=-1.0)  # no defined mIoU yet
    # TensorBoard's Time Series: one group per first tag component, groups and cards in tag order ('/' first),
    # the first two groups open: the mIoU cards first, then the per-class cards, each model's beside the other
    order = sorted([*scalars, "train/loss_x", "train/lr"])
    assert list(dict.fromkeys(tag.split("/")[0] for tag in order)) == ["eval", "eval_iou", "train"]
    assert order[:3] == ["eval/best_miou", "eval/miou", "eval/second_network_miou"]
    assert order[3:5] == ["eval_iou/background", "eval_iou/background/second_network"]


def charts_matching(layout: dict, tag: str) -> list[str]:
    """The charts that draw `tag`: as TensorBoard's custom-scalars backend, re.match of any of its regexes."""
    return [
        title
        for _, charts in layout.values()
        for title, regexes in charts.items()
        if any(re.match(regex, tag) for regex in regexes)
    ]


@pytest.mark.parametrize("evaluated", [["student"], ["student", "second network"]])
def test_custom_scalars_layout_puts_every_networks_miou_in_one_chart(evaluated):
    confusions = {label: TWO[label] for label in evaluated}
    train = ["train/loss_x", "train/loss_cps", "train/agreement", "train/lr"]
    tags = [*eval_scalars(confusions, CLASSES, 0.5), *train]
    layout = scalars_layout(CLASSES)
    assert [(title, closed) for title, (closed, _) in layout.items()] == [
        ("mIoU (%)", False),
        ("per-class IoU (%)", True),
        ("training", False),
    ]
    (miou_chart,) = layout["mIoU (%)"][1]
    others = [f"eval/{tag_part(label)}_miou" for label in evaluated[1:]]
    drawn = {tag for tag in tags if charts_matching(layout, tag) == [miou_chart]}
    assert drawn == {"eval/miou", "eval/best_miou", *others}
    for name in CLASSES:  # one chart per class, with every network's IoU of it
        chart = f"{name} IoU (%)"
        drawn = {tag for tag in tags if charts_matching(layout, tag) == [chart]}
        tag = f"eval_iou/{tag_part(name)}"
        assert drawn == {tag, *(f"{tag}/{tag_part(label)}" for label in evaluated[1:])}
    assert [charts_matching(layout, tag) for tag in train] == [
        ["training losses"],
        ["training losses"],
        ["other training scalars"],
        ["learning rate"],
    ]
    assert all(len(charts_matching(layout, tag)) == 1 for tag in tags)  # every curve, in one chart
    assert charts_matching(layout, "eval_iou/traffic_lights") == []  # a class name that merely starts alike


def test_run_writer_writes_the_custom_scalars_layout(tmp_path):
    writer = RunWriter(tmp_path, enabled=True)
    writer.layout(CLASSES)
    writer.close()
    events = EventAccumulator(str(tmp_path)).Reload()
    (layout_event,) = events.Tensors("custom_scalars__config__")
    written = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    assert "custom_scalars__config__" in events.PluginTagToContent("custom_scalars")
    expected = scalars_layout(CLASSES)
    assert [(c.title, c.closed) for c in written.category] == [
        (t, closed) for t, (closed, _) in expected.items()
    ]
    for category, (_, charts) in zip(written.category, expected.values()):
        assert {chart.title: list(chart.multiline.tag) for chart in category.chart} == charts
    off = tmp_path / "off"
    RunWriter(off, enabled=False).layout(CLASSES)
    assert not off.exists()
