"""Every config in exps/ loads; paper-table configs carry the released hyper-parameters (method.md §10)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imas.config import Config, to_dict
from imas.experiment import load_experiment

EXPS = Path(__file__).resolve().parents[1] / "exps"
ALL = sorted(EXPS.rglob("*.yaml"))
# iMAS's published cells: the ResNet ones (the DINOv2 cells carry UniMatch V2's recipe, checked below).
PAPER = [
    p
    for p in ALL
    if (p.parts[-4] in ("pascal", "cityscapes") or p.parts[-3] in ("pascal", "cityscapes"))
    and p.parent.name.split("_")[0] in ("r50", "r101")
    and (p.stem.startswith("imas") or p.stem == "suponly")
]
# Every method beside the reference config's in three cells, under its data, model, optimiser, schedule and
# batch: iMAS's in the ResNet cells; UniMatch V2's released DINOv2 recipe in the ViT cell, where every method
# whose step works with the DPT head has a config (imas.methods: Method.heads).
BASELINE_CELLS = {
    "pascal/blended/r101_1323": "imas.yaml",
    "cityscapes/r50_372": "imas_os16.yaml",
    "pascal/classic/dinov2_b_366": "unimatch_v2.yaml",
}
BASELINES = (
    "supervised",
    "mean_teacher",
    "fixmatch",
    "unimatch",
    "cps",
    "augseg",
    "u2pl",
    "ps_mt",
    "self_training",
    "unimatch_v2",
)
# A method whose config is named otherwise, and how that config is run (default: sh single_run.sh).
CONFIG_NAMES = {"self_training": "st_plus_plus"}
RUN_COMMANDS = {"self_training": "imas-st-plus-plus --config exps/{cell}/{config}.yaml --nproc-per-node 4"}


def test_every_published_cell_has_a_config() -> None:
    names = {p.relative_to(EXPS).as_posix() for p in PAPER}
    expected = set()
    for backbone in ("r50", "r101"):
        for n in (662, 1323, 2646):
            expected |= {f"pascal/blended/{backbone}_{n}/{m}.yaml" for m in ("imas", "imas_os8", "suponly")}
    for n in (92, 183, 366, 732, 1464):
        expected |= {f"pascal/classic/r101_{n}/{m}.yaml" for m in ("imas", "suponly")}
    for n in (186, 372, 744, 1488):
        expected |= {f"cityscapes/r50_{n}/{m}.yaml" for m in ("imas_os16", "imas_os8", "suponly")}
    assert names == expected


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.relative_to(EXPS).as_posix())
def test_config_loads(path: Path) -> None:
    assert isinstance(load_experiment(path), Config)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.relative_to(EXPS).as_posix())
def test_paper_config_hyper_parameters(path: Path) -> None:
    cfg, text = load_experiment(path), path.read_text()
    imas = path.stem.startswith("imas")
    backbone, n = path.parent.name.split("_")
    gpus = int(re.search(r"^# Run: sh single_run.sh (\S+) (\d+)$", text, re.M).group(2))
    assert (
        re.search(r"^# Run: sh single_run.sh exps/(\S+) ", text, re.M).group(1)
        == path.relative_to(EXPS).as_posix()
    )
    # the header states the global batch (and for iMAS the group size) and how to run on fewer GPUs
    batch = f"= {gpus} GPUs x train.batch_size {cfg.train.batch_size}"
    assert (
        f"Global batch 16 labeled + 16 unlabeled {batch}"
        if imas
        else f"Global batch 16 labeled images {batch}"
    ) in text
    assert "scale the\n# learning rate linearly" in text and "Split family" in text
    assert gpus * cfg.train.batch_size == 16
    assert cfg.train.method == ("imas" if imas else "supervised")
    assert cfg.model.encoder == {"r50": "resnet50", "r101": "resnet101"}[backbone]
    assert cfg.model.stem.value == "deep" and cfg.model.multi_grid == imas
    assert cfg.model.pretrained == f"pretrained/{cfg.model.encoder}.pth"
    assert cfg.model.output_stride == (8 if path.stem.endswith("os8") else 16)
    assert cfg.optim.kind.value == "sgd" and cfg.optim.momentum == 0.9 and cfg.optim.poly_power == 0.9
    if imas:
        assert cfg.imas.lambda_u == 3.0 and cfg.imas.ema_decay == 0.996 and cfg.imas.num_ops == 2
        assert (
            cfg.imas.weighting.value,
            cfg.imas.adaptive.value,
            cfg.imas.cutmix.value,
            cfg.imas.pairing.value,
        ) == (
            "easiness",
            "mix",
            "easiness",
            "easy_hard",
        )
        assert cfg.imas.threshold == (0.95 if "pascal" in path.parts else 0.7)
        assert cfg.imas.group_size == cfg.train.batch_size  # one CutMix group per released GPU
    assert cfg.eval.model == ("teacher" if imas else "student")
    d = cfg.data
    if "pascal" in path.parts:
        protocol = path.parts[-3]
        assert d.dataset.value == "voc" and d.num_classes == 21 and d.label_dir == "SegmentationClassAug"
        assert d.labeled_split == f"splits/pascal/{protocol}/{n}/labeled.txt"
        assert d.val_split == "splits/pascal/val.txt"
        assert (d.crop_size, d.resize.value, d.long_side) == (513, "long_side", [250, 1000])
        assert (cfg.optim.lr, cfg.optim.decoder_lr_mult, cfg.optim.weight_decay) == (1e-3, 10.0, 1e-4)
        assert cfg.train.epochs == 80 and cfg.loss.kind.value == "ce" and not cfg.model.aux_head
        assert cfg.eval.mode.value == "whole" and gpus == 4
    else:
        assert d.dataset.value == "cityscapes" and d.num_classes == 19
        assert d.labeled_split == f"splits/cityscapes/{n}/labeled.txt"
        assert d.val_split == "splits/cityscapes/val.txt"
        assert (d.crop_size, d.resize.value, d.base_size, d.scale_range) == (
            769,
            "scale",
            [1024, 2048],
            [0.5, 2.0],
        )
        assert (cfg.optim.lr, cfg.optim.decoder_lr_mult, cfg.optim.weight_decay) == (1e-2, 1.0, 5e-4)
        assert cfg.train.epochs == 240 and cfg.model.aux_head
        assert (cfg.loss.kind.value, cfg.loss.ohem_thresh, cfg.loss.ohem_min_kept, cfg.loss.aux_weight) == (
            "ohem",
            0.7,
            100000,
            0.4,
        )
        assert (cfg.eval.mode.value, cfg.eval.window, cfg.eval.stride) == ("sliding", 769, 0)
        assert gpus == (8 if cfg.model.output_stride == 8 else 4)
    assert d.unlabeled_split == d.labeled_split.replace("labeled.txt", "unlabeled.txt")


@pytest.mark.parametrize("cell", list(BASELINE_CELLS))
def test_baselines_differ_from_the_reference_only_in_method_keys(cell: str) -> None:
    from imas.methods import METHODS

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
        return out

    reference_cfg = load_experiment(EXPS / cell / BASELINE_CELLS[cell])
    reference = flat(to_dict(reference_cfg))
    assert set(BASELINES) | {"imas"} == set(METHODS)  # every method has a config in the ResNet cells
    # Every method whose step works with the cell's head has a config in the cell, and no other.
    head = reference_cfg.model.head.value
    expected = {name for name, method in METHODS.items() if head in method.heads}
    present = {reference_cfg.train.method} | {
        name for name in METHODS if (EXPS / cell / f"{CONFIG_NAMES.get(name, name)}.yaml").is_file()
    }
    assert present == expected
    method_keys = {"train.method", "eval.model"}
    for name in sorted(expected - {reference_cfg.train.method}):
        config_name = CONFIG_NAMES.get(name, name)
        cfg = load_experiment(EXPS / cell / f"{config_name}.yaml")
        assert cfg.train.method == name
        config = flat(to_dict(cfg))
        differing = {
            key
            for key in reference.keys() | config.keys()
            if reference.get(key) != config.get(key) and key.split(".")[0] not in METHODS
        }
        # U2PL's representation head is part of the method (the other methods' models have none).
        own = method_keys | ({"model.representation"} if name == "u2pl" else set())
        assert differing <= own, (name, differing - own)
        header = (EXPS / cell / f"{config_name}.yaml").read_text().split("\ndata:")[0]
        run = RUN_COMMANDS.get(name, "sh single_run.sh exps/{cell}/{config}.yaml")
        assert "Published" in header and run.format(cell=cell, config=config_name) in header
        if name == "unimatch_v2":  # on a ResNet: the published numbers are on DINOv2
            assert "Published: none on this ResNet" in header and "DINOv2" in header


# UniMatch V2 with DINOv2-B: the README's published mIoU (DINOv2-Base rows) of each cell.
UNIMATCH_V2_PUBLISHED = {
    "pascal/classic/dinov2_b_92": 86.3,
    "pascal/classic/dinov2_b_183": 87.9,
    "pascal/classic/dinov2_b_366": 88.9,
    "pascal/classic/dinov2_b_732": 90.0,
    "pascal/classic/dinov2_b_1464": 90.8,
    "cityscapes/dinov2_b_186": 83.6,
    "cityscapes/dinov2_b_372": 84.3,
    "cityscapes/dinov2_b_744": 84.5,
    "cityscapes/dinov2_b_1488": 85.1,
}


def test_every_unimatch_v2_cell_has_a_config() -> None:
    found = {p.parent.relative_to(EXPS).as_posix() for p in ALL if p.parent.name.startswith("dinov2_b_")}
    assert found == set(UNIMATCH_V2_PUBLISHED)
    assert all((EXPS / cell / "unimatch_v2.yaml").is_file() for cell in UNIMATCH_V2_PUBLISHED)


@pytest.mark.parametrize("cell", list(UNIMATCH_V2_PUBLISHED))
def test_unimatch_v2_config_has_the_released_recipe(cell: str) -> None:
    """LiheYoung/UniMatch-V2: configs/pascal.yaml, configs/cityscapes.yaml, unimatch_v2.py (AdamW betas
    (0.9, 0.999), weight decay 0.01, head lr x lr_multi, poly 0.9), supervised.py's evaluate."""
    path = EXPS / cell / "unimatch_v2.yaml"
    cfg, text = load_experiment(path), path.read_text()
    header = text.split("\ndata:")[0]
    n = cell.rsplit("_", 1)[1]
    gpus = int(re.search(r"^# Run: sh single_run.sh exps/(\S+) (\d+)$", header, re.M).group(2))
    assert f"# Run: sh single_run.sh exps/{cell}/unimatch_v2.yaml {gpus}" in header and gpus == 4
    assert f"# Published mIoU: {UNIMATCH_V2_PUBLISHED[cell]} (UniMatch V2 README" in header
    assert "DINOv2-Base" in header and "Split family" in header
    m, o, t, s = cfg.model, cfg.optim, cfg.train, cfg.unimatch_v2
    assert t.method == "unimatch_v2" and cfg.eval.model == "teacher"  # the published numbers are the EMA's
    assert (m.encoder, m.head.value, m.pretrained) == (
        "dinov2_vitb14",
        "dpt",
        "pretrained/dinov2_vitb14_pretrain.pth",
    )
    assert not m.freeze_encoder
    assert (o.kind.value, o.lr, o.decoder_lr_mult, o.weight_decay, o.momentum, o.poly_power) == (
        "adamw",
        5e-6,
        40.0,
        0.01,
        0.9,
        0.9,
    )
    assert t.precision.value == "fp32"  # the released step has no autocast
    assert (s.threshold, s.cutmix_p, s.ema_decay) == (0.95, 0.5, 0.996)
    d = cfg.data
    assert d.unlabeled_split == d.labeled_split.replace("labeled.txt", "unlabeled.txt") and d.flip
    if cell.startswith("pascal"):
        assert d.dataset.value == "voc" and d.num_classes == 21 and d.label_dir == "SegmentationClassAug"
        assert (d.labeled_split, d.val_split) == (
            f"splits/pascal/classic/{n}/labeled.txt",
            "splits/pascal/val.txt",
        )
        assert (d.crop_size, d.resize.value, d.long_side) == (518, "long_side", [250, 1000])
        assert (t.epochs, t.batch_size, cfg.loss.kind.value, cfg.eval.mode.value) == (60, 4, "ce", "whole")
    else:
        assert d.dataset.value == "cityscapes" and d.num_classes == 19
        assert (d.labeled_split, d.val_split) == (
            f"splits/cityscapes/{n}/labeled.txt",
            "splits/cityscapes/val.txt",
        )
        assert (d.crop_size, d.resize.value, d.base_size, d.scale_range) == (
            798,
            "scale",
            [1024, 2048],
            [0.5, 2.0],
        )
        assert (t.epochs, t.batch_size) == (180, 2)
        assert (cfg.loss.kind.value, cfg.loss.ohem_thresh, cfg.loss.ohem_min_kept) == ("ohem", 0.7, 200000)
        assert (cfg.eval.mode.value, cfg.eval.window, cfg.eval.stride) == ("sliding", 798, 532)


# The earlier toy as overrides of today's (docs/results.md, "Reproducing a table"): its committed logs stay
# reproducible with the toy benchmark, which trains exps/toy only.
EARLIER_TOY = [
    "model.backbone_width=64",
    "model.decoder_channels=128",
    "model.pretrained=data/toy/pretrained/resnet18_standard.pth",
    "optim.poly_power=0.9",
    "train.epochs=8",
    "train.eval_every=4",
]


@pytest.mark.parametrize("path", sorted((EXPS / "toy_w64").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_earlier_toy_is_todays_toy_with_the_documented_overrides(path: Path) -> None:
    assert to_dict(load_experiment(EXPS / "toy" / path.name, EARLIER_TOY)) == to_dict(load_experiment(path))


def test_the_custom_templates_say_which_to_pick_and_the_cpu_one_fits_a_cpu() -> None:
    """exps/custom: imas_cpu.yaml trains on a small CPU as it is; imas.yaml is the 4-GPU VOC recipe."""
    cpu, gpu = EXPS / "custom" / "imas_cpu.yaml", EXPS / "custom" / "imas.yaml"
    assert "imas_cpu.yaml" in gpu.read_text().split("\ndata:")[0]
    assert "imas.yaml" in cpu.read_text().split("\ndata:")[0]
    c = load_experiment(cpu)
    assert c.data.dataset.value == "custom" and c.train.method == "imas"
    assert c.model.encoder in ("resnet18", "resnet50") and c.train.precision.value == "fp32"
    # No file to fetch first: random weights, or a file the checkout holds.
    assert c.model.pretrained == "" or (EXPS.parent / c.model.pretrained).is_file()
    assert c.data.num_workers <= 1 and c.data.crop_size <= 321 and c.train.batch_size <= 4
    assert "pretrained/README.md" in cpu.read_text() and "tools/convert_pretrained.py" in cpu.read_text()
    # The same data section but for the sizes, so a dataset set up for one runs with the other.
    g = load_experiment(gpu)
    sizes = {"crop_size", "long_side", "num_workers"}
    assert {k: v for k, v in to_dict(c)["data"].items() if k not in sizes} == {
        k: v for k, v in to_dict(g)["data"].items() if k not in sizes
    }
    assert g.model.encoder == "resnet101" and g.model.pretrained == "pretrained/resnet101.pth"
