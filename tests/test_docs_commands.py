"""Every command that README.md and docs/*.md show runs as written, or is marked with the reason it cannot
run here.

tests/doc_commands.py finds the commands (shell code blocks line by line, Python code blocks, and inline
`code` in the prose that is a whole command line). COMMANDS below classifies each one: `Run` runs it as
written, in a temporary folder laid out like a checkout, against the toy data (a command that trains for
minutes is stopped with SIGTERM once it shows that it works); `Mark` says why it is not run (real data, GPUs,
nodes, the network, longer than CI allows, a synopsis), and where the command's parser is known its
arguments are still read by that parser and its config loaded with its overrides. A command in the docs
that COMMANDS does not classify fails the test, and so does an entry of COMMANDS that no doc shows any
more. Blocks that an HTML comment right above them hands to another test (`<!-- ... tests/test_x.py ...
-->`) are classified by that comment.

    python -m pytest -n 0 tests/test_docs_commands.py                 # everything (about 2 min on one core)
    python -m pytest -n 0 tests/test_docs_commands.py -m "not slow"   # the classification only (1 s)
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from doc_commands import (
    TRACEBACK,
    DocCommand,
    check_arguments,
    command_env,
    commands_in,
    commands_of,
    make_workspace,
    run_shell,
    working_folder,
)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """Run as written. `fresh`: in a workspace of its own that holds the toy data and backbone but no run
    yet; otherwise in the shared one that also holds runs/toy/suponly and runs/toy/imas (short trainings)."""

    instead: str = ""  # a synopsis: the instance that is run (its placeholders filled, [options] left out)
    until: str = ""  # a command that trains for minutes: stopped (SIGTERM) once this regex matches ...
    watch: tuple[str, ...] = ()  # ... in each of these files (else in its output)
    fresh: bool = False
    needs: str = ""  # a module that the dev environment may lack: skipped, saying so, where it is missing
    program: str = ""  # likewise a program that not every machine has (e.g. GNU time's /usr/bin/time)
    replace: tuple[str, str] = ()  # a Python block: (path of a real-data run, toy run path read instead)


@dataclass(frozen=True)
class Mark:
    """Not run, for `reason`. `check`: its arguments are read by its own parser and its config loaded with
    its overrides all the same (tests/doc_commands.check_arguments)."""

    reason: str
    check: bool = True


VOC = "needs Pascal VOC 2012 (and SBD) under data/"
CITYSCAPES = "needs Cityscapes under data/cityscapes"
NODES = "needs several nodes (a torchrun rendezvous across hosts, SLURM)"
NETWORK = "installs packages from the network into the environment the tests run in"
SUITE = "runs the test suite, this test included"
CLONE = "clones the checkout and runs .ci/run there (a new virtualenv from the network, the suite: ~7.5 min)"
SOURCE = "an excerpt of the package's source, shown to explain it"
INSTALL = "install.sh makes .venv and installs into it from the network (.ci/run runs sh install.sh dev)"
TOY_PROGRESS = r"it \d+/\d+ [\d.]+ it/s"  # a training's progress line (imas.logging)
BOTH_LOGS = ("runs/toy/suponly/train.log", "runs/toy/imas/train.log")
STOPPED = (143, -15, 0)  # a clean stop by SIGTERM: imas.cli's 143, killed by it, or the command's own exit


def gpus(count: int, data: str = "") -> str:
    return f"needs {count} CUDA GPUs" + (f" and {data}" if data else "")


def synopsis(what: str) -> Mark:
    return Mark(f"a usage synopsis ({what}), not a command line", check=False)


def named(what: str) -> Mark:
    return Mark(f"a command named in a sentence ({what}), not a whole command line", check=False)


def longer(what: str, check: bool = True) -> Mark:
    return Mark(f"longer than CI allows: {what}", check)


# The quick start under a timer or with another ISA: the same command as `sh single_run.sh`, run above.
TIMED_QUICK_START = Mark("the quick start, timed (sh single_run.sh itself is run)", check=False)
ONE_TOY_EPOCH_MORE = Mark(
    "longer than CI allows: 300 iterations, ~40 s (sh single_run.sh exps/toy/imas.yaml is run, and stopped)"
)
WALKTHROUGH = "needs mine.yaml and data/mine of the walk-through above (tests/test_custom_walkthrough.py)"

COMMANDS: dict[str, Run | Mark] = {
    # ---------------------------------------------------------------- README.md
    "sh install.sh": Mark(INSTALL, check=False),
    "sh single_run.sh": Run(until=TOY_PROGRESS, watch=BOTH_LOGS, fresh=True),
    "TORCH=pypi sh install.sh": Mark(INSTALL, check=False),
    "TORCH=cpu sh install.sh": Mark(INSTALL, check=False),
    "time sh install.sh": Mark(INSTALL, check=False),
    "sh install.sh dev": Mark(INSTALL, check=False),
    "sh install.sh analysis": Mark(INSTALL, check=False),
    "python3 -m venv .venv": Mark(
        "makes a virtual environment; here .venv is the one the tests run in", False
    ),
    ". .venv/bin/activate": Run(),
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu": Mark(NETWORK, False),
    "pip install -e .": Mark(NETWORK, check=False),
    "python -m pytest": Mark(SUITE, check=False),
    "sh single_run.sh CONFIG [NGPU] [key.path=value ...] [--resume-anyway]": synopsis("CONFIG, [options]"),
    "imas-train --config CONFIG [--opt key.path=value ...] [--run-dir DIR] [--seed N] "
    "[--device auto|cpu|cuda] [--resume-anyway]": synopsis("CONFIG, [options]"),
    "torchrun --nproc_per_node 4 train_semi.py --config CONFIG": synopsis("CONFIG; 4 GPUs"),
    "imas-eval --config CONFIG --checkpoint runs/.../best.pth [--model NAME] "
    "[--mode whole|sliding] "
    '[--opt eval.flip=true "eval.scales=[0.75,1.0,1.25]"] [--output result.json] [--force]': Run(
        instead="imas-eval --config exps/toy/imas.yaml --checkpoint runs/toy/imas/best.pth "
        "--output result.json"
    ),
    "imas-predict --checkpoint runs/toy/imas/best.pth --input photos/ [--output DIR] "
    "[--model NAME] [--mode whole|sliding] [--alpha 0.5] [--opt ...] [--force]": Run(
        instead="imas-predict --checkpoint runs/toy/imas/best.pth --input photos/"
    ),
    "sh single_run.sh exps/toy/imas.yaml train.epochs=2": ONE_TOY_EPOCH_MORE,
    "sh single_run.sh exps/toy/imas.yaml 1 train.epochs=2": ONE_TOY_EPOCH_MORE,
    "imas-data sbd --sbd data/benchmark_RELEASE/dataset --voc data/VOC2012": Mark(VOC),
    "imas-data splits pascal --voc data/VOC2012 --sbd data/benchmark_RELEASE/dataset --seed 0": Mark(VOC),
    "imas-data cityscapes data/cityscapes": Mark(CITYSCAPES),
    "imas-data splits cityscapes --root data/cityscapes --seed 0": Mark(CITYSCAPES),
    "imas-data check exps/pascal/blended/r101_1323/imas.yaml": Mark(VOC),
    "sh single_run.sh exps/pascal/blended/r101_1323/imas.yaml 4": Mark(gpus(4, VOC)),
    "sh single_run.sh exps/pascal/blended/r101_1323/suponly.yaml 4": Mark(gpus(4, VOC)),
    "sh single_run.sh exps/cityscapes/r50_744/imas_os16.yaml 4": Mark(gpus(4, CITYSCAPES)),
    "sh single_run.sh exps/cityscapes/r50_744/imas_os8.yaml 8": Mark(gpus(8, CITYSCAPES)),
    "imas-eval --config exps/cityscapes/r50_744/imas_os16.yaml "
    "--checkpoint runs/cityscapes/r50_744/imas_os16/best.pth": Mark(CITYSCAPES + " and a Cityscapes run"),
    "torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint node0:29500 --rdzv_id imas "
    "train_semi.py --config exps/cityscapes/r50_744/imas_os8.yaml": Mark(NODES),
    'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)': Mark(NODES, check=False),
    'srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 4 --rdzv_backend c10d '
    '--rdzv_endpoint "$head:29500" --rdzv_id "$SLURM_JOB_ID" '
    "train_semi.py --config exps/cityscapes/r50_744/imas_os8.yaml": Mark(NODES),
    "python: import pandas as pd": Run(needs="pandas"),
    "imas-report runs/toy/imas [--out page.html] [--force]": Run(instead="imas-report runs/toy/imas"),
    "imas-compare runs/toy/suponly runs/toy/imas [--out table.md] [--csv compare.csv] [--force]": Run(
        instead="imas-compare runs/toy/suponly runs/toy/imas"
    ),
    'python -m pytest -m "not slow"': Mark(SUITE, check=False),
    "python train_semi.py": named("= imas-train"),
    "python eval.py": named("= imas-eval"),
    "python predict.py": named("= imas-predict"),
    'pip install -e ".[report]"': Mark(NETWORK, check=False),
    "pip install scipy": Mark(NETWORK, check=False),
    "python -m tools.quick_start --seed 1": Mark(
        "the quick start with another seed (sh single_run.sh runs tools.quick_start itself, run here)"
    ),
    "sh single_run.sh exps/toy/imas.yaml": Run(until=TOY_PROGRESS, fresh=True),
    "time PYTHON=.venv/bin/python sh single_run.sh": TIMED_QUICK_START,
    "python tools/convert_pretrained.py FILE [--out OUT]": synopsis("FILE: a downloaded ResNet checkpoint"),
    "sh single_run.sh exps/pascal/classic/r101_92/imas.yaml 4": Mark(gpus(4, VOC)),
    "sh single_run.sh exps/pascal/classic/dinov2_b_366/unimatch_v2.yaml 4": Mark(gpus(4, VOC)),
    "sh single_run.sh exps/cityscapes/dinov2_b_744/unimatch_v2.yaml 4": Mark(gpus(4, CITYSCAPES)),
    "sh single_run.sh exps/pascal/classic/dinov2_b_366/imas.yaml 4": Mark(gpus(4, VOC)),
    "sh single_run.sh CONFIG 4": synopsis("CONFIG; 4 GPUs"),
    "sh single_run.sh exps/pascal/blended/r101_1323/imas.yaml 1 train.batch_size=16": Mark(
        "needs a GPU with room for 16 + 16 images and " + VOC
    ),
    "tensorboard --logdir runs/": Run(until=r"TensorBoard \S+ at http"),
    "imas-pseudo-labels --config CONFIG --checkpoint runs/.../latest.pth "
    "[--split val] [--output F] [--force]": Run(
        instead="imas-pseudo-labels --config exps/toy/imas.yaml --checkpoint runs/toy/imas/latest.pth"
    ),
    "bash .ci/run": Mark(
        CLONE.replace("clones the checkout and runs .ci/run there", "runs .ci/run"), check=False
    ),
    "d=$(mktemp -d)": Mark(CLONE, check=False),
    'git clone -q . "$d"': Mark(CLONE, check=False),
    '(cd "$d" && bash .ci/run)': Mark(CLONE, check=False),
    # ---------------------------------------------------------------- docs/commands.md
    "torchrun ... train_semi.py": named("the script under torchrun"),
    "python -m imas.report": named("= imas-report"),
    "torchrun --nproc_per_node 4 -m imas.train --config CONFIG ...": synopsis("CONFIG ...; 4 GPUs"),
    "imas-eval --config CONFIG --checkpoint runs/x/best.pth [--model NAME] [--mode whole|sliding] "
    "[--opt eval.flip=true] [--output result.json] [--force]": Run(
        instead="imas-eval --config exps/toy/imas.yaml --checkpoint runs/toy/imas/best.pth --model student "
        "--opt eval.flip=true --output result.json"
    ),
    "torchrun --nproc_per_node 4 -m imas.evaluate --config ... --checkpoint ...": synopsis("...; 4 GPUs"),
    "imas-predict --checkpoint runs/toy/imas/best.pth --input photos/": Run(),
    'imas-predict --checkpoint ... --input "shots/*.jpg" '
    "--mode sliding --opt eval.flip=true --output mine/": Run(
        instead='imas-predict --checkpoint runs/toy/imas/best.pth --input "photos/*.jpg" --mode sliding '
        "--opt eval.flip=true --output mine/"
    ),
    "imas-predict --checkpoint ... --config exps/toy/imas.yaml "
    "--model student --input one.png --alpha 0.7": Run(
        instead="imas-predict --checkpoint runs/toy/imas/best.pth --config exps/toy/imas.yaml "
        "--model student "
        "--input photos/val_0000.jpg --alpha 0.7"
    ),
    "imas-pseudo-labels --config CONFIG --checkpoint runs/x/latest.pth [--model NAME] "
    "[--split val|unlabeled|labeled] [--threshold 0.95] [--limit N] [--output F] [--force]": synopsis(
        "CONFIG, [options]; an instance from the README is run"
    ),
    "imas-report RUN_DIR [--out RUN_DIR/report.html] [--force] [--device cpu|cuda|auto] [--gallery 8] "
    "[--opt data.root=...]": synopsis("RUN_DIR, [options]; an instance from the README is run"),
    "pip install matplotlib": Mark(NETWORK, check=False),
    "imas-compare RUN_DIR [RUN_DIR ...] [--out table.md] [--csv table.csv] [--force]": Run(
        instead="imas-compare runs/toy/suponly runs/toy/imas --out table.md --csv table.csv"
    ),
    "imas-data sbd --sbd data/benchmark_RELEASE/dataset --voc data/VOC2012 [--overwrite]": synopsis(
        "[--overwrite]; " + VOC
    ),
    "imas-data cityscapes data/cityscapes [--overwrite]": synopsis("[--overwrite]; " + CITYSCAPES),
    "imas-data splits pascal --voc data/VOC2012 "
    "[--sbd data/benchmark_RELEASE/dataset] [--seed 0] [--force]": (synopsis("[options]; " + VOC)),
    "imas-data splits cityscapes --root data/cityscapes [--seed 0] [--force]": synopsis(
        "[options]; " + CITYSCAPES
    ),
    "imas-st-plus-plus --config CONFIG [--opt key.path=value ...] [--run-dir DIR] [--seed N] "
    "[--device auto|cpu|cuda] [--nproc-per-node N]": Run(
        instead="imas-st-plus-plus --config exps/toy/st_plus_plus.yaml --seed 0", until=TOY_PROGRESS
    ),
    "python -m torch.distributed.run --standalone": named("how imas-st-plus-plus starts its stages"),
    # ---------------------------------------------------------------- docs/data.md
    "ln -s VOCdevkit/VOC2012 data/VOC2012": Mark(VOC, check=False),
    "imas-data check exps/cityscapes/r50_744/imas_os16.yaml": Mark(CITYSCAPES),
    "imas-data splits pascal --voc data/VOC2012 [--sbd data/benchmark_RELEASE/dataset]": synopsis(
        "[--sbd ...]; " + VOC
    ),
    "imas-data splits cityscapes --root data/cityscapes": Mark(CITYSCAPES),
    "python -m imas.data.toy --out data/toy [--seed 0] [--labeled 64 --unlabeled 600 --val 150] [--ensure]": (
        synopsis("[options]; its instance python -m imas.data.toy --out data/toy --ensure is run")
    ),
    "imas-data cityscapes ROOT": synopsis("ROOT; " + CITYSCAPES),
    "python -m imas.data.toy": named(
        "the toy data's generator; python -m imas.data.toy --out data/toy --ensure runs"
    ),
    "imas-data cityscapes ROOT [--overwrite]": synopsis("ROOT; " + CITYSCAPES),
    "python tools/convert_pretrained.py FILE --out pretrained/resnet18.pth": synopsis(
        "FILE: a downloaded ResNet checkpoint"
    ),
    "sh single_run.sh mine.yaml 1 train.epochs=1 data.crop_size=64 data.resize=none": Mark(
        WALKTHROUGH, False
    ),
    "imas-train --config mine.yaml": named("the walk-through's training"),
    "imas-eval --model student": named("an evaluation of a toy checkpoint no longer kept"),
    "python tools/toy_benchmark.py --rows SupOnly PS-MT --jobs 2": longer(
        "3 toy trainings of PS-MT, about 50 minutes on 2 cores"
    ),
    'python tools/toy_benchmark.py --rows SupOnly "UniMatch V2" "UniMatch V2 w/o complementary dropout" '
    "--jobs 2": longer("9 toy trainings, about 30 minutes on 2 cores"),
    'python tools/toy_benchmark.py --rows "UniMatch V2 (ViT)" --jobs 2 --opt unimatch_v2.comp_drop=false '
    "--out training-imas-logs/toy_vit_no_comp_drop": longer("3 toy trainings, about 15 minutes on 2 cores"),
    'python tools/toy_benchmark.py --rows SupOnly "mean teacher" FixMatch UniMatch --jobs 2': longer(
        "9 toy trainings, about 30 minutes on 2 cores"
    ),
    'python tools/toy_benchmark.py --rows SupOnly "UniMatch V2" --jobs 2': longer(
        "3 toy trainings of UniMatch V2, about 40 minutes on 2 cores"
    ),
    'python tools/toy_benchmark.py --rows "SupOnly (ViT)" "iMAS (ViT)" "UniMatch V2 (ViT)" --jobs 2': longer(
        "9 toy trainings on the ViT, about 35 minutes on 2 cores"
    ),
    "python tools/toy_pretrain.py --out data/toy/pretrained/vit_toy.pth --encoder vit_toy": longer(
        "pretrains the toy ViT, about 3 minutes on 2 cores"
    ),
    'python tools/toy_benchmark.py --rows "SupOnly (ViT)" "iMAS (ViT)" "UniMatch V2 (ViT)" --jobs 2 --opt '
    "model.pretrained=data/toy/pretrained/vit_toy.pth --out training-imas-logs/toy_vit_pretrained": longer(
        "9 toy trainings on the pretrained ViT, about 35 minutes on 2 cores"
    ),
    "python tools/toy_benchmark.py --rows SupOnly ST++ --jobs 1": longer(
        "3 ST++ chains of 3 toy trainings each, about 35 minutes on 2 cores"
    ),
    "python -m tools.toy_pretrain [--config CONFIG | --out PATH [--width W]] [--ensure]": synopsis(
        "CONFIG, PATH, W"
    ),
    "sh single_run.sh CONFIG": synopsis("CONFIG"),
    "imas-data check CONFIG [--opt key=value ...] [--max-listed 5]": synopsis("CONFIG, [options]"),
    "imas-data SUBCOMMAND --help": synopsis("SUBCOMMAND"),
    # ---------------------------------------------------------------- docs/extending.md, docs/methods.md
    "python: @dataclass": Mark(SOURCE, check=False),
    "python: class FixMatch(Method):": Mark(SOURCE, check=False),
    "python tools/NAME.py": synopsis("NAME"),
    "imas-st-plus-plus --nproc-per-node N": named("imas-st-plus-plus's option"),
    "imas-eval --model teacher": named("imas-eval's --model, on a UniMatch V2 run"),
    "OMP_NUM_THREADS=1 imas-st-plus-plus --config exps/toy/st_plus_plus.yaml --seed 0 --device cpu": longer(
        "the toy's ST++ chain, 3 trainings of 3600 iterations, 13 min (the same command is run, and stopped, "
        "for docs/commands.md)",
        check=False,
    ),
    "python tools/toy_benchmark.py --rows SupOnly ST++": longer("6 toy trainings and 3 ST++ chains, ~50 min"),
    "python -m tools.gpu_check": named("the GPU check"),
    "imas-data check CONFIG": synopsis("CONFIG"),
    "python tools/toy_benchmark.py": longer("all 27 toy trainings of the default table, about 2 hours"),
    # ---------------------------------------------------------------- docs/performance.md
    "python -m tools.gpu_check --out benchmarks/gpu_<name>.json": Mark(gpus(1) + "; <name>: yours", False),
    "python -m tools.gpu_check --out benchmarks/gpu_<name>.json --resume": Mark(gpus(1), check=False),
    "python -m tools.gpu_check --out benchmarks/gpu_<name>.json --force": Mark(gpus(1), check=False),
    "python -m tools.gpu_check --dry-run --out /tmp/gpu_check.json --force": longer(
        "every row on the CPU (tests/test_gpu_check.py runs the dry run)"
    ),
    "imas-train --config CONFIG "
    "--opt train.precision=bf16 train.channels_last=true train.compile=true": synopsis("CONFIG"),
    "python tools/benchmark.py --config CONFIG --backbone resnet50 --output-stride 16 --crop 321 --batch 2 "
    "--precision bf16 --output bench.json": synopsis("CONFIG"),
    "python tools/benchmark.py --mode imas --config exps/toy/imas.yaml": Run(),
    "python tools/benchmark.py --mode hardness --batch 16 --classes 21 --crop 513": longer(
        "13 hardness computations at 513 px, ~15 s of CPU"
    ),
    "python tools/benchmark.py --mode state --config exps/pascal/classic/r101_92/imas.yaml "
    "--opt model.pretrained=": (longer("checks the ResNet-101 iMAS state at crop 513, minutes of CPU")),
    "python tools/benchmark.py --mode preflight --threads 1": longer("~20 s of CPU"),
    "/usr/bin/time -v env PYTHON=.venv/bin/python sh single_run.sh": TIMED_QUICK_START,
    "/usr/bin/time -v env ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 PYTHON=.venv/bin/python "
    "sh single_run.sh": TIMED_QUICK_START,
    "python -m tools.toy_pretrain": longer("pretrains the width-32 toy backbone, ~50 s"),
    "python -m imas.data.toy --out data/toy --ensure": Run(),
    "python tools/toy_pretrain.py --ensure": Run(),
    "python tools/toy_pretrain.py": longer("pretrains the width-32 toy backbone, ~50 s"),
    "python tools/toy_pretrain.py --width 16 --out data/toy/pretrained/resnet18_w16.pth": longer(
        "pretrains a toy backbone, ~25 s"
    ),
    "python tools/benchmark.py --mode imas --config exps/toy/imas.yaml --steps 30 --warmup 5 --device cpu "
    "--threads 1": longer("70 timed steps, ~10 s of CPU (the same measurement as the block's, run above)"),
    "OMP_NUM_THREADS=1 taskset -c 0 python -m cProfile -o prof.out -m imas.train --config exps/toy/imas.yaml "
    "--run-dir /tmp/prof --opt train.epochs=2 train.eval_every=2 train.image_every=0": longer(
        "profiles 300 iterations, ~1 min", check=False
    ),
    "python tools/benchmark.py --mode train --config exps/toy_w64/suponly.yaml --precision fp32 --steps 3 "
    "--warmup 1 --device cpu --threads 1": longer("a measurement of the width-64 toy"),
    "python tools/benchmark.py --mode imas --config exps/toy_w64/imas.yaml --steps 20 --warmup 5 "
    "--device cpu "
    "--threads 1": longer("50 timed width-64 steps"),
    "python tools/benchmark.py --mode imas --config exps/toy_w64/imas.yaml --precision bf16 --steps 20 "
    "--warmup 5 --device cpu": longer("50 timed width-64 steps in bf16 (slow without native bf16)"),
    "python tools/benchmark.py --backbone resnet50 --output-stride 16 --crop 321 --batch 2 --precision fp32 "
    "--steps 5 --warmup 2 --device cpu": longer("7 ResNet-50 steps at 321 px, ~20 s each on a CPU"),
    "python tools/benchmark.py --mode hardness --batch 16 --classes 21 --crop 513 --steps 3 --warmup 1 "
    "--device cpu": longer("4 hardness computations at 513 px"),
    "python tools/benchmark.py --mode preflight --steps 10 --threads 1": longer("~20 s of CPU"),
    "python tools/benchmark.py --config exps/pascal/classic/r101_92/imas.yaml --mode state --threads 1 "
    "--crop 65 --batch 4 --device cpu --opt model.pretrained=": longer("builds the ResNet-101 iMAS state"),
    "pip install opencv-python-headless": Mark(NETWORK, check=False),
    "OMP_NUM_THREADS=1 python benchmarks/decode_pil_vs_cv2.py --seconds 6": longer(
        "needs opencv (not a dependency) and decodes for about a minute", check=False
    ),
    "/usr/bin/time -v python predict.py --checkpoint run/latest.pth --input big --output bigout": longer(
        "a 12000 x 12000 px image, 28 min (run/ and big/ are that measurement's files)", check=False
    ),
    'python tools/toy_benchmark.py --rows SupOnly iMAS "mean teacher" FixMatch UniMatch CPS '
    "--out training-imas-logs/toy_w32": longer("18 toy trainings, 73 min"),
    'python tools/toy_benchmark.py --rows "iMAS w/o loss weighting" "iMAS w/o adaptive intensity" '
    '"iMAS w/ fixed-p random-pair CutMix" --out training-imas-logs/toy_w32_ablations': longer(
        "9 toy trainings, 39 min"
    ),
    "python tools/toy_benchmark.py --seeds 0 1 2 --jobs 2": longer("27 toy trainings"),
    "python tools/toy_benchmark.py --rows SupOnly iMAS --seeds 0 1 2 --jobs 2 --opt train.epochs=40 "
    "train.eval_every=8 --out training-imas-logs/toy_long": longer("6 trainings of 6000 iterations"),
    "python tools/toy_benchmark.py --rows SupOnly iMAS --seeds 0 1 2 --jobs 2 --opt train.epochs=40 "
    "train.eval_every=8 --out training-imas-logs/toy_long_fp32": longer("6 trainings of 6000 iterations"),
    'python tools/toy_benchmark.py --rows FixMatch "mean teacher" UniMatch CPS --seeds 0 --jobs 2 '
    "--opt train.epochs=40 train.eval_every=8 --out training-imas-logs/toy_methods": longer(
        "4 trainings of 6000 iterations"
    ),
    "python tools/benchmark.py --mode data --steps 20": longer("generates and loads image files"),
    'cd "$d"': Mark(CLONE, check=False),
    "time CI=true bash .ci/run": Mark(CLONE, check=False),
    # ---------------------------------------------------------------- docs/reliability.md
    "sh single_run.sh CONFIG N key=value --resume-anyway": synopsis("CONFIG N key=value"),
    "sh single_run.sh CONFIG N key=value": synopsis("CONFIG N key=value"),
    "imas-eval --mode sliding": named("the sliding-window evaluation"),
    "imas-eval --output result.json": named("imas-eval's --output"),
    # ---------------------------------------------------------------- docs/results.md
    'python tools/toy_benchmark.py --rows SupOnly iMAS "mean teacher" FixMatch UniMatch '
    "--out training-imas-logs/toy_w32_eval_neutral": longer("15 toy trainings, about an hour"),
    "python tools/toy_benchmark.py --rows SupOnly iMAS AugSeg U2PL CPS PS-MT ST++ "
    '"UniMatch V2" "mean teacher" FixMatch UniMatch --out training-imas-logs/toy_w32_methods': longer(
        "39 toy trainings (ST++ three per seed), about four hours on 2 cores"
    ),
    "python tools/toy_pretrain.py --width 16 --out data/toy/pretrained/resnet18_w16_standard.pth": longer(
        "pretrains a toy backbone, ~25 s"
    ),
    "python tools/toy_benchmark.py --seeds 0 1 2 --jobs 2 --out training-imas-logs/toy_w16 --opt "
    "model.backbone_width=16 model.decoder_channels=64 "
    "model.pretrained=data/toy/pretrained/resnet18_w16_standard.pth "
    "train.epochs=40 train.eval_every=20 data.num_workers=0": longer("27 trainings of 6000 iterations"),
    "python tools/toy_benchmark.py [--rows ROW ...] [--seeds 0 1 2] [--jobs 2] "
    "[--opt key=value ...] [--out DIR]": synopsis("[options]"),
    "python tools/toy_benchmark.py --out runs/toy_w64 --opt model.backbone_width=64 "
    "model.decoder_channels=128 "
    "model.pretrained=data/toy/pretrained/resnet18_standard.pth optim.poly_power=0.9 train.epochs=8 "
    "train.eval_every=4": longer("27 trainings of the width-64 toy"),
    "python -m tools.toy_pretrain --config exps/toy_w64/imas.yaml": longer(
        "pretrains the width-64 toy backbone"
    ),
    "OMP_NUM_THREADS=1 python train_semi.py --config exps/toy_w64/suponly.yaml --seed 0 --device cpu": longer(
        "1200 iterations of the width-64 toy"
    ),
    "python train_semi.py --config exps/toy_w64/suponly.yaml --opt train.epochs=24 train.eval_every=8 "
    "train.image_every=0": longer("a training of 3600 iterations"),
    "python -m tools.toy_pretrain --config exps/toy_w64/imas.yaml --ensure": longer(
        "pretrains the width-64 toy backbone"
    ),
    "imas-pseudo-labels --config exps/toy_w64/imas.yaml --checkpoint <run>/latest.pth "
    "--model <teacher|student> "
    "--split unlabeled --limit 300": synopsis("<run>, <teacher|student>"),
    # ---------------------------------------------------------------- docs/run-directory.md
    "python: from imas.rundir import read_run": Run(),
}


# ---------------------------------------------------------------------------- the commands of the docs


def _by_key(commands: list[DocCommand]) -> dict[str, list[DocCommand]]:
    found: dict[str, list[DocCommand]] = defaultdict(list)
    for command in commands:
        found[command.key].append(command)
    return dict(found)


DOC_COMMANDS = _by_key(commands_of(REPO))


def _where(key: str) -> str:
    return ", ".join(command.where for command in DOC_COMMANDS[key])


def _param_id(key: str) -> str:
    return f"{DOC_COMMANDS[key][0].where} {key[:70]}"


def test_every_command_of_the_docs_is_classified() -> None:
    """A command added to the docs must be run (Run) or marked with its reason (Mark) in COMMANDS."""
    missing = [
        f"    {key!r}: Run() or Mark(reason),  # {_where(key)}"
        for key, found in DOC_COMMANDS.items()
        if key not in COMMANDS and not all(command.run_by for command in found)
    ]
    assert not missing, "classify in tests/test_docs_commands.py COMMANDS:\n" + "\n".join(missing)


@pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash, a strict POSIX sh")
def test_every_shell_command_of_the_docs_is_posix_sh() -> None:
    """A reader's shell may be any sh: no bash-only syntax (`<(...)`, `[[ ]]`, ...) in a doc command, as
    dash's parser reads it (brace expansion parses everywhere but expands only in bash and zsh)."""

    def parses(command: str) -> bool:
        return subprocess.run(["dash", "-n", "-c", command], capture_output=True).returncode == 0

    assert parses("shuf --random-source=/dev/zero ids.txt") and not parses(
        "shuf --random-source=<(yes) ids.txt"
    )
    keys = [key for key, found in DOC_COMMANDS.items() if found[0].form != "python"]
    bad = [f"{_where(key)}: {key}" for key in keys if not parses(key)]
    assert not bad, "not POSIX sh:\n" + "\n".join(bad)


def test_a_synopsis_is_run_as_an_instance_of_the_same_command() -> None:
    for key, entry in COMMANDS.items():
        if isinstance(entry, Run) and entry.instead:
            words = 2 if key.split()[0] in ("python", "sh") else 1
            assert entry.instead.split()[:words] == key.split()[:words], key


def test_every_classified_command_is_in_the_docs() -> None:
    stale = sorted(set(COMMANDS) - set(DOC_COMMANDS))
    assert not stale, "no doc shows these any more; remove them from COMMANDS:\n" + "\n".join(stale)


def test_the_tests_that_blocks_are_handed_to_exist() -> None:
    named_tests = {command.run_by for found in DOC_COMMANDS.values() for command in found if command.run_by}
    assert sorted(name for name in named_tests if not (REPO / name).is_file()) == []


def test_commands_are_found_in_blocks_prose_and_chains() -> None:
    text = "\n".join(
        [
            "Run `sh single_run.sh exps/toy/imas.yaml 1` or read `imas-report`, `imas-data splits pascal`,",
            "`imas-eval --output` and `python -m pytest -m",
            '"not slow"`.',
            "```sh",
            "imas-eval --config a.yaml \\",
            "    --checkpoint 'b #1.pth'   # the comment",
            "pip install -e . && sh single_run.sh; ls data |",
            "  wc -l",
            "```",
            "```console",
            "$ imas-compare runs/a runs/b",
            "| method | mIoU |",
            "```",
            "<!-- tests/test_x.py runs this block -->",
            "```python",
            "import json",
            "```",
            "```text",
            "python not_a_command.py",
            "```",
        ]
    )
    found = [(c.text, c.line, c.form, c.run_by) for c in commands_in(text, "x.md")]
    assert found == [
        ("imas-eval --config a.yaml --checkpoint 'b #1.pth'", 5, "block", ""),
        ("pip install -e .", 7, "block", ""),
        ("sh single_run.sh", 7, "block", ""),
        ("ls data | wc -l", 7, "block", ""),
        ("imas-compare runs/a runs/b", 11, "block", ""),
        ("import json\n", 16, "python", "tests/test_x.py"),
        ("sh single_run.sh exps/toy/imas.yaml 1", 1, "inline", ""),
        ('python -m pytest -m "not slow"', 2, "inline", ""),
    ]
    assert commands_in(text, "x.md")[5].key == "python: import json"


# ---------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="session")
def docs_data(toy, tmp_path_factory) -> Path:
    """data/ of the workspaces: the toy dataset (the `toy` fixture's, which `python -m imas.data.toy --ensure`
    finds current) and, in place of its pretrained backbone, a random-weight stand-in whose record says the
    default settings, so that `tools/toy_pretrain.py --ensure` keeps it (pretraining takes ~50 s)."""
    import torch

    from tools import toy_pretrain

    data = tmp_path_factory.mktemp("docs_data")
    shutil.copytree(toy, data / "toy")
    args = toy_pretrain.parse_args(["--out", str(data / "toy/pretrained/resnet18_w32.pth"), "--width", "32"])
    torch.manual_seed(0)
    backbone = toy_pretrain.Classifier(len(toy_pretrain.PRETRAIN_CLASSES), args.width).backbone
    Path(args.out).parent.mkdir(parents=True)
    torch.save(backbone.state_dict(), args.out)
    record = toy_pretrain.settings(args) | {"train_accuracy": 0.0, "val_accuracy": 0.0, "seconds": 0.0}
    Path(args.out).with_suffix(".json").write_text(json.dumps(record) + "\n")
    return data


SHORT = [  # the toy configs' schedule cut to 4 iterations on the `toy` fixture's short split lists
    "train.epochs=1",
    "train.log_every=2",
    "data.num_workers=0",
    *(f"data.{split}_split=data/toy/splits/small_{split}.txt" for split in ("labeled", "unlabeled", "val")),
]


@pytest.fixture(scope="session")
def trained_workspace(docs_data, tmp_path_factory) -> Path:
    """A workspace holding the runs the docs name, runs/toy/suponly and runs/toy/imas, as short trainings of
    exps/toy/suponly.yaml and exps/toy/imas.yaml (the quick start makes these folders: its test here watches
    their train.log), and photos/, a reader's two photos."""
    import torch

    from imas.train import main as train

    folder = make_workspace(tmp_path_factory.mktemp("docs") / "checkout", REPO, docs_data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with working_folder(folder):
            for name in ("suponly", "imas"):
                argv = [
                    "--config",
                    f"exps/toy/{name}.yaml",
                    "--run-dir",
                    f"runs/toy/{name}",
                    "--device",
                    "cpu",
                ]
                assert train([*argv, "--opt", *SHORT]) == 0, f"the short {name} run failed"
    finally:
        torch.set_num_threads(threads)
    (folder / "photos").mkdir()
    for name in ("val_0000.jpg", "val_0001.jpg"):
        shutil.copy(docs_data / "toy/JPEGImages" / name, folder / "photos" / name)
    return folder


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------- running them


def run_command(key: str, entry: Run, folder: Path) -> None:
    """Run one doc command (or the instance of a synopsis) in `folder`; assert it ended as documented."""
    command = entry.instead or key
    if key.startswith("python: "):
        code = DOC_COMMANDS[key][0].text
        if entry.replace:
            assert entry.replace[0] in code, f"{entry.replace[0]} is no longer in the block"
            code = code.replace(*entry.replace)
        (folder / "doc_block.py").write_text(code)
        command = "python doc_block.py"
    outcome = run_shell(command, folder, timeout=180, until=entry.until, watch=entry.watch)
    what = f"{command!r} ({_where(key)}) "
    assert TRACEBACK not in outcome.stdout + outcome.stderr, (
        what + "printed a traceback:\n" + outcome.tail(30)
    )
    if entry.until:
        assert outcome.stopped, (
            what + f"ended (status {outcome.status}) before {entry.until!r}:\n" + outcome.tail()
        )
        assert outcome.status in STOPPED, what + f"stopped by SIGTERM, ended with {outcome.status}"
    else:
        assert outcome.status == 0, what + f"ended with exit status {outcome.status}:\n" + outcome.tail()


@pytest.mark.slow
@pytest.mark.parametrize("key", list(DOC_COMMANDS), ids=_param_id)
def test_doc_command(key: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Run the command as written, or check what its Mark allows and skip with the reason."""
    entry = COMMANDS.get(key)
    if entry is None:
        run_by = DOC_COMMANDS[key][0].run_by
        if run_by and all(command.run_by for command in DOC_COMMANDS[key]):
            pytest.skip(f"run as written by {run_by}")
        pytest.fail(f"{_where(key)}: {key!r} is not classified in COMMANDS")
    if isinstance(entry, Mark):
        if entry.check:
            problem = check_arguments(key, request.getfixturevalue("trained_workspace"))
            assert problem is not None, f"{key!r}: no parser is known for it; mark it with check=False"
            assert not problem, f"{key!r} ({_where(key)}): {problem}"
        pytest.skip(entry.reason + (" (its arguments checked)" if entry.check else ""))
    if entry.needs and importlib.util.find_spec(entry.needs) is None:
        pytest.skip(f"needs {entry.needs}, which this environment lacks")
    if entry.program and shutil.which(entry.program) is None:
        pytest.skip(f"needs {entry.program}, which this machine lacks")
    if "tensorboard" in key and port_in_use(6006):
        pytest.skip("port 6006 is in use")
    if entry.fresh:
        folder = make_workspace(tmp_path / "checkout", REPO, request.getfixturevalue("docs_data"))
    else:
        folder = request.getfixturevalue("trained_workspace")
    run_command(key, entry, folder)


def test_a_stopped_command_is_seen_stopping(tmp_path: Path) -> None:
    """A long command is stopped by SIGTERM as soon as its output shows the line it is waited for."""
    outcome = run_shell("echo started; sleep 30", tmp_path, timeout=20, until="started", env=command_env())
    assert outcome.stopped and outcome.status in (143, -15) and outcome.seconds < 10
    assert run_shell("exit 3", tmp_path, timeout=20).status == 3


def test_a_bad_argument_is_named_by_the_commands_own_parser(tmp_path: Path) -> None:
    (tmp_path / "exps").symlink_to(REPO / "exps")
    assert check_arguments("imas-train --config exps/toy/imas.yaml --opt train.epochs=2", tmp_path) == ""
    assert "unrecognized arguments" in check_arguments(
        "imas-train --config exps/toy/imas.yaml --epochs 2", tmp_path
    )
    assert "optim.lrr" in check_arguments(
        "imas-train --config exps/toy/imas.yaml --opt optim.lrr=1", tmp_path
    )
    assert check_arguments("pip install -e .", tmp_path) is None
