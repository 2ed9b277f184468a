"""ST++ as a chain of runs (imas.st_plus_plus, imas.methods.self_training): the selection against
hand-computed numbers, the released strong augmentation, a chain stopped in every stage that ends with the
weights of an unstopped one, and the bad inputs refused in one sentence before any training."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import stop_after_save, toy_data
from PIL import Image

from imas import st_plus_plus as chain_cli
from imas.dist import DistInfo
from imas.errors import DataError
from imas.experiment import load_experiment
from imas.methods.self_training import CUTOUT_AREA, CUTOUT_RATIO, cutout_boxes, strong_view
from imas.st_plus_plus import (
    MANIFEST,
    check_files,
    folder_digest,
    rank,
    read_manifest,
    reliable_count,
    sha256_file,
    snapshot_epochs,
    stability,
)

# ------------------------------------------------------------------------------ selection, by hand


def test_stability_is_the_mean_miou_against_the_last_snapshot() -> None:
    """Two 2 x 3 maps against the last one, the IoUs counted by hand (ST++ utils.meanIOU)."""
    last = torch.tensor([[0, 0, 1], [1, 2, 2]])
    same = last.clone()
    other = torch.tensor([[0, 1, 1], [1, 2, 0]])
    # other vs last: class 0: inter 1 (pixel 0), union 3 (last 0s at 0,1; other 0s at 0,5) -> 1/3;
    # class 1: inter 2 (pixels 2, 3), union 3 -> 2/3; class 2: inter 1 (pixel 4), union 2 -> 1/2.
    reliability, mious = stability(torch.stack([same, other, last]), num_classes=4)  # class 3: in no map
    expected = (1.0 + (1 / 3 + 2 / 3 + 1 / 2) / 3) / 2
    assert mious.tolist() == pytest.approx([1.0, (1 / 3 + 2 / 3 + 1 / 2) / 3])
    assert reliability.item() == pytest.approx(expected)
    assert reliability.dtype == torch.float64


def test_ranking_is_descending_and_keeps_ties_in_split_order() -> None:
    values = [0.5, 0.9, 0.5, 1.0, 0.2, 0.9]
    assert rank(values) == [3, 1, 5, 0, 2, 4]
    assert reliable_count(601, 0.5) == 300 == 601 // 2  # the released len // 2


def test_the_selection_ranks_by_hand_computed_reliability(tmp_path, toy, monkeypatch) -> None:
    """The chain's selection step on 4 images whose snapshot predictions are given (2 x 2 maps): the
    ranking, its reliabilities and the reliable / unreliable lists, against numbers counted by hand."""
    ids = (toy / "splits/small_unlabeled.txt").read_text().split()[:4]
    split = tmp_path / "four.txt"
    split.write_text("\n".join(ids) + "\n")
    cfg = load_experiment(chain_config(tmp_path, toy), [f"data.unlabeled_split={split}"])
    chain = chain_cli.Chain(cfg, tmp_path / "chain", DistInfo(0, 1, 0, torch.device("cpu")))
    last = torch.tensor([[0, 0], [1, 1]])
    swapped = torch.tensor([[1, 1], [0, 0]])  # against last: no class shared, mIoU 0
    one_off = torch.tensor([[0, 1], [1, 1]])  # against last: class 0 IoU 1/2, class 1 IoU 2/3
    maps = [[swapped, swapped, last], [last, last, last], [last, one_off, last], [last, last, last]]
    given = iter([m for per_image in maps for m in per_image])  # the images in order, 3 snapshots each
    monkeypatch.setattr(chain_cli, "predict_labels", lambda *args, **kwargs: next(given))
    fake = {"path": "", "sha256": "", "epoch": 0}
    monkeypatch.setattr(chain, "load", lambda path, stage, epoch=None: (None, fake | {"path": str(path)}))
    (tmp_path / "chain").mkdir()
    chain.select(chain_cli.Select("1_supervised"), "selection")
    rows = [line.split(",") for line in (tmp_path / "chain/selection/ranking.csv").read_text().splitlines()]
    # reliabilities: 0, 1, (1 + (1/2 + 2/3) / 2) / 2, 1; the tie keeps the split's order
    assert [row[1] for row in rows[1:]] == [ids[1], ids[3], ids[2], ids[0]]
    assert [float(row[2]) for row in rows[1:]] == pytest.approx(
        [1.0, 1.0, (1 + (1 / 2 + 2 / 3) / 2) / 2, 0.0]
    )
    assert (tmp_path / "chain/selection/reliable.txt").read_text().split() == [ids[1], ids[3]]
    assert (tmp_path / "chain/selection/unreliable.txt").read_text().split() == [ids[2], ids[0]]
    manifest = json.loads((tmp_path / "chain/selection" / MANIFEST).read_text())
    assert (manifest["images"], manifest["reliable"]) == (4, 2)
    assert [Path(s["path"]).name for s in manifest["snapshots"]] == [
        "epoch_1.pth",
        "epoch_2.pth",
        "latest.pth",
    ]


def test_snapshots_are_the_released_epochs() -> None:
    assert snapshot_epochs(80) == [26, 53, 80]
    assert snapshot_epochs(24) == [8, 16, 24]
    assert snapshot_epochs(3) == [1, 2, 3]


# ---------------------------------------------------------------------------- strong augmentation


def released_cutout(rng: np.random.Generator, h: int, w: int) -> tuple[int, int]:
    """(height, width) of one box of the released loop (ST++ dataset/transform.py, cutout), p = 1."""
    while True:
        size = rng.uniform(*CUTOUT_AREA) * h * w
        ratio = rng.uniform(*CUTOUT_RATIO)
        box_w, box_h = int(np.sqrt(size / ratio)), int(np.sqrt(size * ratio))
        x, y = rng.integers(0, w), rng.integers(0, h)
        if x + box_w <= w and y + box_h <= h:
            return box_h, box_w


def test_cutout_boxes_fit_and_follow_the_released_loop() -> None:
    torch.manual_seed(0)
    boxes = cutout_boxes(4000, 40, 60, p=1.0)
    heights, widths = boxes.any(2).sum(1), boxes.any(1).sum(1)
    assert bool((heights > 0).all())  # p = 1: every image has a box, inside the image by construction
    assert bool((boxes.sum((1, 2)) == heights * widths).all())  # one rectangle each
    rng = np.random.default_rng(0)
    released = np.array([released_cutout(rng, 40, 60) for _ in range(4000)], dtype=float)
    ours = torch.stack([heights, widths], 1).double().numpy()
    for stat in (lambda b: b[:, 0] * b[:, 1] / 2400, lambda b: b[:, 0], lambda b: b[:, 1]):
        assert stat(ours).mean() == pytest.approx(stat(released).mean(), rel=0.05)
    assert not cutout_boxes(50, 40, 60, p=0.0).any()
    fired = cutout_boxes(4000, 32, 32, p=0.5).flatten(1).any(1).float().mean()
    assert abs(float(fired) - 0.5) < 0.03


def test_strong_view_ignores_the_cutout_pixels() -> None:
    torch.manual_seed(1)
    image = torch.randint(0, 256, (16, 3, 24, 24), dtype=torch.uint8)
    mask = torch.randint(0, 6, (16, 24, 24))
    strong, strong_mask, boxes = strong_view(image, mask)
    assert strong.dtype == torch.uint8 and strong.shape == image.shape
    assert bool((strong_mask[boxes] == 255).all()) and torch.equal(strong_mask[~boxes], mask[~boxes])
    assert bool(boxes.any())


# ------------------------------------------------------------------------------------- manifests


def test_manifest_check_finds_missing_and_changed_files(tmp_path: Path) -> None:
    folder = tmp_path / "labels"
    folder.mkdir()
    for name, value in (("a.png", 1), ("b.png", 2)):
        Image.fromarray(np.full((4, 4), value, np.uint8), mode="L").save(folder / name)
    files = {name: sha256_file(folder / name) for name in ("a.png", "b.png")}
    check_files(folder, files)
    assert folder_digest(files) == folder_digest(dict(reversed(files.items())))
    with pytest.raises(DataError, match="holds no readable manifest.json"):
        read_manifest(folder)
    Image.fromarray(np.full((4, 4), 3, np.uint8), mode="L").save(folder / "b.png")
    with pytest.raises(DataError, match="b.png differs from the file its manifest.json records"):
        check_files(folder, files)
    (folder / "a.png").unlink()
    with pytest.raises(DataError, match=r"lacks 1 of the 2 files .* \(first: a.png\)"):
        check_files(folder, files)


# -------------------------------------------------------------------------------- whole chains


def chain_config(tmp_path: Path, toy: Path, **train) -> Path:
    """A tiny ST++ chain: 3 epochs of 4 iterations per stage, a quarter-width ResNet-18, two TTA scales."""
    cfg = {
        "data": toy_data(toy, "small_", crop_size=64, long_side=[64, 96], num_workers=0),
        "model": {"encoder": "resnet18", "output_stride": 16, "backbone_width": 16, "decoder_channels": 32},
        "optim": {"lr": 0.01, "decoder_lr_mult": 1.0},
        "train": {"method": "self_training", "epochs": 3, "batch_size": 4, "log_every": 2, "image_every": 0}
        | train,
        "self_training": {"tta_scales": [0.75, 1.0]},
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(config: Path, folder: Path, *opts: str) -> int:
    argv = ["--config", str(config), "--run-dir", str(folder), "--device", "cpu"]
    return chain_cli.main(argv + (["--opt", *opts] if opts else []))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, toy) -> tuple[Path, Path]:
    """(config, chain folder) of a tiny chain run to its end once."""
    tmp = tmp_path_factory.mktemp("chain")
    config = chain_config(tmp, toy)
    assert run(config, tmp / "full") == 0
    return config, tmp / "full"


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.slow
def test_chain_layout_and_result(finished) -> None:
    _, folder = finished
    for name in ("chain.yaml", "chain.log", "selection/ranking.csv", "selection/reliable.txt"):
        assert (folder / name).is_file(), name
    for stage in ("1_supervised", "2_reliable", "3_all"):
        assert (folder / stage / "latest.pth").is_file() and (folder / stage / "config.yaml").is_file()
    assert {p.name for p in (folder / "1_supervised").glob("epoch_*.pth")} == {"epoch_1.pth", "epoch_2.pth"}
    reliable = (folder / "selection/reliable.txt").read_text().split()
    unreliable = (folder / "selection/unreliable.txt").read_text().split()
    assert len(reliable) == len(unreliable) == 8
    ranking = (folder / "selection/ranking.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in ranking[1:]] == reliable + unreliable
    for name, ids in (("reliable", reliable), ("unreliable", unreliable)):
        manifest = json.loads((folder / "pseudo_labels" / name / MANIFEST).read_text())
        assert sorted(manifest["files"]) == sorted(f"{i}.png" for i in ids)
        assert manifest["inference"]["scales"] == [0.75, 1.0] and manifest["inference"]["flip"] is True
    by = json.loads((folder / "pseudo_labels/unreliable" / MANIFEST).read_text())["checkpoint"]["path"]
    assert by == str(folder / "2_reliable" / "best.pth")
    stage2 = yaml.safe_load((folder / "2_reliable/config.yaml").read_text())
    assert stage2["self_training"]["pseudo_from"] == 8  # 8 labeled images x ceil(8 / 8)
    assert len((folder / "splits/3_all.txt").read_text().splitlines()) == 8 * 2 + 16
    stage1 = yaml.safe_load((folder / "1_supervised/config.yaml").read_text())
    assert stage1["train"]["method"] == "supervised" and stage1["train"]["keep_epochs"] == [1, 2]


@pytest.mark.slow
def test_a_chain_stopped_in_every_stage_ends_as_an_unstopped_one(tmp_path, finished, monkeypatch) -> None:
    config, full = finished
    folder = tmp_path / "stopped"

    def stop_in(stage: str, epoch: int):
        return stop_after_save(
            monkeypatch,
            lambda path, state: (
                path.name == "latest.pth" and path.parent.name == stage and state.epoch == epoch
            ),
        )

    resume = stop_in("1_supervised", 1)  # mid-training of stage 1
    assert run(config, folder) == 130
    resume()
    resume = stop_in("2_reliable", 2)  # mid-training of stage 2
    assert run(config, folder) == 130
    assert (folder / "selection").is_dir() and not (folder / "pseudo_labels/unreliable").exists()
    resume()
    calls = []  # between stages: in the middle of labeling the unreliable images

    def stop_labeling(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = chain_cli.predict_labels
    monkeypatch.setattr(chain_cli, "predict_labels", stop_labeling)
    assert run(config, folder) == 130
    assert not (folder / "pseudo_labels/unreliable").exists()
    monkeypatch.setattr(chain_cli, "predict_labels", original)
    resume = stop_in("3_all", 1)
    assert run(config, folder) == 130
    resume()
    assert run(config, folder) == 0
    assert not list(folder.rglob(".*.tmp"))

    a = torch.load(full / "3_all/latest.pth", weights_only=True)
    b = torch.load(folder / "3_all/latest.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 12
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    for name in ("selection/ranking.csv", "selection/reliable.txt", "splits/3_all.txt"):
        assert (full / name).read_text().replace(str(full), "") == (folder / name).read_text().replace(
            str(folder), ""
        ), name
    for name in ("reliable", "unreliable"):  # the same files (checkpoints differ in their wall times)
        a, b = (json.loads((f / "pseudo_labels" / name / MANIFEST).read_text()) for f in (full, folder))
        assert a["digest"] == b["digest"] and a["checkpoint"]["epoch"] == b["checkpoint"]["epoch"], name
    assert "step 1/6 1_supervised: done" in (folder / "chain.log").read_text()


@pytest.mark.slow
def test_a_stop_between_latest_and_best_is_repaired_and_a_path_may_be_spelled_otherwise(
    tmp_path, toy, monkeypatch
) -> None:
    """latest.pth is written before best.pth: a stop between the two in a stage's last epoch leaves best.pth
    behind (here: stage 1 stopped after its last latest.pth, which names that epoch as the best while
    best.pth holds epoch 1), and the stage's own resume rebuilds it before the chain goes on. Then the same
    chain under a relative --run-dir is the same chain."""
    config, folder = chain_config(tmp_path, toy), tmp_path / "chain"
    resume = stop_after_save(monkeypatch, lambda path, state: path.name == "latest.pth" and state.epoch == 3)
    assert run(config, folder) == 130
    resume()
    stage = folder / "1_supervised"
    latest = torch.load(stage / "latest.pth", weights_only=True)
    latest["best_epoch"] = latest["epoch"]
    torch.save(latest, stage / "latest.pth")
    shutil.copy(stage / "epoch_1.pth", stage / "best.pth")
    assert run(config, folder) == 0
    assert torch.load(stage / "best.pth", weights_only=True)["epoch"] == 3
    assert "rewritten from" in (stage / "train.log").read_text()
    monkeypatch.chdir(tmp_path)
    assert run(config, Path("chain")) == 0
    assert "step 6/6 3_all: done" in (folder / "chain.log").read_text()


@pytest.mark.slow
def test_a_finished_step_is_not_redone(finished, monkeypatch) -> None:
    config, full = finished
    made = [
        full / "selection" / MANIFEST,
        full / "pseudo_labels/unreliable" / MANIFEST,
        full / "3_all/latest.pth",
    ]
    before = [path.stat().st_mtime_ns for path in made]

    def no_training(args):
        raise AssertionError(f"{args.run_dir} trained again")

    monkeypatch.setattr(chain_cli.training, "train", no_training)
    monkeypatch.setattr(chain_cli, "predict_labels", no_training)
    assert run(config, full) == 0
    assert [path.stat().st_mtime_ns for path in made] == before
    assert "step 6/6 3_all: done" in (full / "chain.log").read_text()


@pytest.mark.slow
def test_a_changed_setting_is_refused(finished, capsys) -> None:
    config, full = finished
    assert run(config, full, "optim.lr=0.02") == 2
    assert "holds a chain made under other settings (optim.lr 0.01 -> 0.02)" in one_error(capsys)
    assert run(config, full, "eval.flip=true") == 2  # evaluation picks best.pth, which pseudo-labels
    assert "eval.flip False -> True" in one_error(capsys)
    assert run(config, full, "train.log_every=3") == 0  # changes nothing the chain makes


@contextmanager
def restored(folder: Path, tmp_path: Path) -> Iterator[None]:
    """`folder` as it was before the block, whatever the block did to it."""
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    try:
        yield
    finally:
        shutil.rmtree(folder)
        shutil.copytree(backup, folder)


def first_png(folder: Path) -> Path:
    return sorted(folder.glob("*.png"))[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda f: first_png(f / "pseudo_labels/reliable").unlink(), "lacks 1 of the 8 files"),
        (
            lambda f: first_png(f / "pseudo_labels/unreliable").write_bytes(b"png"),
            "differs from the file its",
        ),
        (lambda f: (f / "pseudo_labels/unreliable" / MANIFEST).unlink(), "holds no readable manifest.json"),
        (
            lambda f: (f / "pseudo_labels/reliable" / MANIFEST).write_text(
                (f / "pseudo_labels/reliable" / MANIFEST).read_text().replace('"images": 8', '"images": 7')
            ),
            "records images 7 where this chain has 8",
        ),
        (lambda f: (f / "selection/reliable.txt").write_text("unlabeled_0001\n"), "reliable.txt differs"),
    ],
    ids=["missing file", "changed file", "no manifest", "manifest mismatch", "edited selection"],
)
def test_an_incomplete_folder_is_refused_before_training(
    tmp_path, finished, capsys, monkeypatch, damage, needle
) -> None:
    config, full = finished

    def no_training(args):
        raise AssertionError(f"{args.run_dir} trained")

    monkeypatch.setattr(chain_cli.training, "train", no_training)
    with restored(full, tmp_path):
        shutil.rmtree(full / "3_all")  # the chain would train stage 3 next
        damage(full)
        assert run(config, full) == 2
        assert needle in one_error(capsys)


@pytest.mark.slow
def test_a_stage_directory_of_another_chain_is_refused(tmp_path, finished, toy, capsys) -> None:
    _, full = finished
    config = chain_config(tmp_path, toy, seed=5)
    folder = tmp_path / "other"
    folder.mkdir()
    shutil.copytree(full / "1_supervised", folder / "1_supervised")
    assert run(config, folder) == 2
    message = one_error(capsys)
    assert f"stage directory {folder / '1_supervised'} holds a run made under other settings" in message
    assert "train.seed 0 -> 5" in message
    assert not (folder / "selection").exists()


def test_bad_configs_are_one_sentence_before_anything_is_made(tmp_path, toy, capsys) -> None:
    config = chain_config(tmp_path, toy)
    folder = tmp_path / "never"
    assert run(config, folder, "data.unlabeled_split=") == 2
    assert "pseudo-labels the unlabeled images: set data.unlabeled_split" in one_error(capsys)
    supervised = yaml.safe_load(config.read_text())
    del supervised["self_training"]
    supervised["train"]["method"] = "supervised"
    (tmp_path / "supervised.yaml").write_text(yaml.safe_dump(supervised))
    assert run(tmp_path / "supervised.yaml", folder) == 2
    assert "runs configs of train.method self_training; " in one_error(capsys)
    assert run(config, folder, "train.epochs=2") == 2
    assert "train.epochs must be at least 3" in one_error(capsys)
    assert not folder.exists()


@pytest.mark.slow  # the table's header asks a subprocess for the CPU
def test_the_toy_benchmark_reads_a_chain_from_its_last_stage(tmp_path, capsys):
    """tools/toy_benchmark.py's ST++ row: a finished chain is reused, its settings read from chain.yaml."""
    from tools import toy_benchmark

    folder = tmp_path / "st_plus_plus" / "seed0"
    (folder / "3_all").mkdir(parents=True)
    (folder / "3_all" / "config.yaml").write_text(yaml.safe_dump({"train": {"seed": 0}}))
    saved = {"train": {"precision": "bf16", "seed": 0}, "data": {"root": "data/toy"}}
    (folder / "chain.yaml").write_text(yaml.safe_dump(saved))
    record = {"config": toy_benchmark.CONFIGS["ST++"], "seed": 0, "final_miou": 50.0, "best_miou": 51.0}
    (folder / "result.json").write_text(json.dumps(record | {"wall_s": 600.0}))
    args = ["--out", str(tmp_path), "--seeds", "0", "--rows", "ST++"]
    assert toy_benchmark.main(args) == 2
    assert "train.precision is 'bf16' there, 'fp32' now" in one_error(capsys)
    saved["train"]["precision"] = "fp32"
    (folder / "chain.yaml").write_text(yaml.safe_dump(saved))
    assert toy_benchmark.main(args) == 0
    assert (
        "| ST++ | `exps/toy/st_plus_plus.yaml` | 0 | 50.00 ± 0.00 | 51.00 ± 0.00 |"
        in (tmp_path / "results.md").read_text()
    )


def test_imas_train_refuses_a_chain_config(tmp_path, toy, capsys) -> None:
    from imas import train as train_cli

    config = chain_config(tmp_path, toy)
    run_dir = tmp_path / "run"
    assert train_cli.main(["--config", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    assert "run this config with imas-st-plus-plus" in one_error(capsys)
    assert not run_dir.exists()
