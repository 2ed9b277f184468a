"""Confusion matrix against a brute-force count, IoU / mIoU, reports, and the all_reduce over 2 processes."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from imas.metrics import ConfusionMatrix

NAMES = ["road", "car", "sky", "tree", "person"]


def random_maps(
    seed: int, k: int = 5, shape: tuple[int, ...] = (3, 7, 9)
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, k, shape, generator=gen)
    target = torch.randint(0, k, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.25] = 255
    return pred, target


def brute_force(pred: torch.Tensor, target: torch.Tensor, k: int) -> list[list[int]]:
    counts = [[0] * k for _ in range(k)]
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
        if t != 255:
            counts[t][p] += 1
    return counts


def test_matches_brute_force_over_several_updates():
    cm = ConfusionMatrix(5, "cpu")
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for seed in range(3):
        pred, target = random_maps(seed)
        cm.update(pred, target)
        expected += torch.tensor(brute_force(pred, target, 5))
    pred, target = random_maps(9, shape=(6, 4))  # a single [H, W] map works too
    cm.update(pred, target)
    expected += torch.tensor(brute_force(pred, target, 5))
    assert cm.matrix.dtype == torch.int64
    assert torch.equal(cm.matrix, expected)


def test_inputs_not_modified():
    pred, target = random_maps(1)
    before = (pred.clone(), target.clone())
    ConfusionMatrix(5, "cpu").update(pred, target)
    assert torch.equal(pred, before[0]) and torch.equal(target, before[1])


def test_iou_nan_for_absent_class_and_nanmean():
    cm = ConfusionMatrix(4, "cpu")
    # class 0: 2 right; class 1: 1 right, 1 predicted as 2; class 2 never in GT but predicted once;
    # class 3 absent from both -> NaN.
    target = torch.tensor([0, 0, 1, 1, 255])
    pred = torch.tensor([0, 0, 1, 2, 3])
    cm.update(pred, target)
    iou = cm.iou()
    assert iou.dtype == torch.float64
    assert iou[:3].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx(0.5)
    assert cm.pixel_accuracy() == pytest.approx(3 / 4)


def test_empty_matrix():
    cm = ConfusionMatrix(3, "cpu")
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())
    assert cm.to_dict(["a", "b", "c"])["miou"] is None


def test_table_and_dict():
    cm = ConfusionMatrix(5, "cpu")
    pred, target = random_maps(2)
    target[target == 4] = 255
    pred[pred == 4] = 0  # class 4 ("person") absent from both
    cm.update(pred, target)
    table = cm.table(NAMES)
    for name in NAMES:
        assert name in table
    assert table.splitlines()[-1].startswith("mIoU")
    assert f"{100 * cm.miou():.2f}" in table.splitlines()[-1]

    result = cm.to_dict(NAMES)
    assert json.loads(json.dumps(result)) == result  # JSON-able, no NaN
    assert result["num_classes"] == 5
    assert result["miou"] == pytest.approx(cm.miou())
    assert result["pixel_accuracy"] == pytest.approx(cm.pixel_accuracy())
    assert list(result["iou"]) == NAMES and result["iou"]["person"] is None
    assert result["iou"]["car"] == pytest.approx(cm.iou()[1].item())
    with pytest.raises(ValueError):
        cm.table(NAMES[:3])


def test_all_reduce_is_noop_without_process_group():
    cm = ConfusionMatrix(5, "cpu")
    cm.update(*random_maps(0))
    before = cm.matrix.clone()
    cm.all_reduce()
    assert torch.equal(cm.matrix, before)


def _all_reduce_worker(rank: int, world_size: int, folder: str) -> None:
    init = f"file://{folder}/rendezvous"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    try:
        cm = ConfusionMatrix(5, "cpu")
        cm.update(*random_maps(rank))
        cm.all_reduce()
        torch.save(cm.matrix, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_two_processes_gloo(tmp_path):
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    expected = torch.tensor(brute_force(*random_maps(0), 5)) + torch.tensor(brute_force(*random_maps(1), 5))
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), expected)
