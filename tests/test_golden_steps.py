"""Golden values of today's training steps, so that moving the step code changes nothing.

For every method (and four iMAS settings that between them take every branch of its step: the default;
CutMix on every image with padding masked, Beta boxes and random pairing; select adaptation, no weighting,
unweighted IoU, weak view outside the batch; magnitude adaptation with scaled boxes), one step on fixed
inputs in fp32 with one thread: the loss, every logged scalar, the per-image values, and the gradient of a
few parameters of every trained network. The
values in tests/golden/steps.json were written by this file (`python tests/test_golden_steps.py`, only when
a step's behaviour is meant to change) and are compared bit for bit on the CPU that wrote them (the same
vector ISA and processor model: oneDNN picks other kernels on others, so elsewhere they are compared to 1e-5
relative).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import cpu_identity

from imas.dist import DistInfo
from imas.experiment import load_experiment
from imas.methods import Progress
from imas.train import build_trainer

REPO = Path(__file__).resolve().parents[1]

GOLDEN = Path(__file__).with_name("golden") / "steps.json"
B, S = 4, 32
BASE = [
    "model.pretrained=",
    "model.backbone_width=8",
    "model.decoder_channels=16",
    f"train.batch_size={B}",
    f"data.crop_size={S}",
]
IMAS_BASE = ["imas.group_size=2", "imas.threshold=0.4"]
CASES: dict[str, list[str]] = {  # the config (SupOnly's or iMAS's toy config) follows train.method
    "supervised": ["train.method=supervised", "model.aux_head=true"],
    "imas": ["train.method=imas", *IMAS_BASE],
    "imas_cutmix_all_masked": [
        "train.method=imas",
        *IMAS_BASE,
        "imas.cutmix=fixed",
        "imas.cutmix_p=1.0",
        "imas.mask_padding=true",
        "imas.cutmix_box=beta",
        "imas.pairing=random",
    ],
    "imas_select_unweighted": [
        "train.method=imas",
        *IMAS_BASE,
        "imas.adaptive=select",
        "imas.weighting=none",
        "imas.class_weighted=false",
        "imas.weak_in_batch=false",
    ],
    "imas_magnitude_scaled": [
        "train.method=imas",
        *IMAS_BASE,
        "imas.adaptive=magnitude",
        "imas.cutmix_scale=true",
    ],
    "mean_teacher": ["train.method=mean_teacher", "mean_teacher.group_size=2", "mean_teacher.threshold=0.3"],
    "fixmatch": ["train.method=fixmatch", "fixmatch.threshold=0.3", "model.aux_head=true"],
    "unimatch": ["train.method=unimatch", "unimatch.threshold=0.3"],
    "cps": ["train.method=cps", "cps.labeled_term=true", "cps.weight=1.5"],
    "cps_released": ["train.method=cps"],
    "augseg": ["train.method=augseg", "augseg.threshold=0.3"],
    "u2pl": ["train.method=u2pl", "u2pl.sup_only_epochs=0", "model.representation=16"],
    "ps_mt": ["train.method=ps_mt", "ps_mt.threshold=0.3"],
    "self_training": ["train.method=self_training", "self_training.pseudo_from=2"],
    "unimatch_v2": ["train.method=unimatch_v2", "unimatch_v2.threshold=0.3"],
    # The ViT and DPT path (the ResNet options set back to their defaults, which a ViT requires; a crop the
    # patch divides, while the step's 32-pixel inputs take the DPT's resize to a multiple and back).
    "unimatch_v2_vit": [
        "train.method=unimatch_v2",
        "data.crop_size=30",
        "unimatch_v2.threshold=0.3",
        "model.encoder=vit_toy",
        "model.head=dpt",
        "model.backbone_width=64",
        "model.decoder_channels=256",
        "model.stem=deep",
    ],
}
CONFIGS = {"supervised": "suponly.yaml", "self_training": "st_plus_plus.yaml"}  # else exps/toy/<method>.yaml
STEP_SEED = 5  # the step's random draws (augmentation ops, CutMix trigger, boxes, pairing)


def call_step(trainer: Any, labeled: dict, unlabeled: dict | None) -> Any:
    """The method's step as the loop calls it."""
    return trainer.method.step(trainer.nets, labeled, unlabeled, Progress(0, 1, 10, 2))


def run_case(overrides: list[str]) -> dict[str, Any]:
    """One step on seeded inputs; every number it produces, as float lists."""
    torch.set_num_threads(1)
    method_name = overrides[0].partition("=")[2]
    config = CONFIGS.get(method_name, f"{method_name}.yaml")
    cfg = load_experiment(REPO / "exps/toy" / config, BASE + overrides)
    device = torch.device("cpu")
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    torch.manual_seed(0)
    trainer = build_trainer(cfg, info)
    gen = torch.Generator().manual_seed(1)
    labeled = {
        "image": torch.randint(0, 256, (B, 3, S, S), dtype=torch.uint8, generator=gen),
        "mask": torch.randint(0, cfg.data.num_classes, (B, S, S), generator=gen),
        "index": torch.arange(B),
    }
    labeled["mask"][:, :2] = 255  # ignored rows, as crop padding gives
    valid = torch.ones(B, S, S, dtype=torch.bool)
    valid[:, :, -5:] = False
    unlabeled = {
        "image": torch.randint(0, 256, (B, 3, S, S), dtype=torch.uint8, generator=gen),
        "valid": valid,
        "index": torch.arange(B),
    }
    out: dict[str, Any] = {}
    method = trainer.method
    for network in method.networks:
        if network.ema_of:  # a teacher that disagrees with the student, so the hardness is not trivial
            with torch.no_grad():
                for param in method.models[network.key].parameters():
                    param.add_(0.1 * torch.randn(param.shape, generator=gen))
    for model in trainer.trained.values():
        model.train()
    torch.manual_seed(STEP_SEED)
    step = call_step(trainer, labeled, unlabeled if method.uses_unlabeled else None)
    loss, values = step.loss, step.scalars
    out |= {key: value.tolist() for key, value in sorted(step.per_image.items())}
    loss.backward()
    out["loss"] = [loss.item()]
    out |= {f"value/{key}": [value.item()] for key, value in sorted(values.items())}
    for name, model in trainer.trained.items():
        if all(p.grad is None for p in model.parameters()):
            continue  # a network this step does not train (PS-MT's teachers): no key, so a change shows
        backbone, decoder = model.param_groups()
        for group, params in (("backbone", backbone), ("decoder", decoder)):
            for index in (0, -1):
                key = f"grad/{group}[{index}]" if name == "model" else f"grad/{name}/{group}[{index}]"
                out[key] = params[index].grad.flatten()[:16].tolist()
    return out


def write() -> None:
    golden = {
        "cpu": cpu_identity(),
        "torch": torch.__version__,
        "cases": {
            name: {key: [v.hex() for v in values] for key, values in run_case(overrides).items()}
            for name, overrides in CASES.items()
        },
    }
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")


@pytest.mark.parametrize("name", list(CASES))
def test_step_matches_its_golden_values(name):
    golden = json.loads(GOLDEN.read_text())
    expected = {key: [float.fromhex(v) for v in values] for key, values in golden["cases"][name].items()}
    threads = torch.get_num_threads()
    try:
        actual = run_case(CASES[name])
    finally:
        torch.set_num_threads(threads)
    assert actual.keys() == expected.keys()
    same_isa = golden.get("cpu") == cpu_identity()
    for key, values in expected.items():
        if same_isa:
            assert actual[key] == values, key
        else:
            assert actual[key] == pytest.approx(values, rel=1e-5, abs=1e-7), key


if __name__ == "__main__":
    write()
    print(f"wrote {GOLDEN}")
