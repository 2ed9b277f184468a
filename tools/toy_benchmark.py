"""Every method (SupOnly, iMAS, mean teacher, FixMatch, UniMatch, CPS, AugSeg, U2PL, PS-MT, UniMatch V2,
ST++), the iMAS ablations and UniMatch V2 without its complementary dropout on the toy data, and SupOnly,
iMAS and UniMatch V2 on the toy's ViT with the DPT head (rows "... (ViT)"), several seeds each; a markdown
table of the results.

    python tools/toy_benchmark.py [--seeds 0 1 2] [--jobs 2] [--out training-imas-logs/toy]

Every (config, seed) trains with `python -m imas.train` (imas-train) in its own run directory
OUT/<config>/seed<N> (config.yaml, train.log, metrics.jsonl, train_scalars.jsonl, hardness.csv, TensorBoard
events; the checkpoints are deleted once the run is done unless --keep-checkpoints). A config of
train.method self_training (ST++) runs its whole chain with `python -m imas.st_plus_plus`
(imas-st-plus-plus) in OUT/<config>/seed<N>: its result is the chain's last stage run, its wall time the
whole chain's. `--jobs` runs that many
trainings at once, the CPU threads split between them. A finished run (its result.json exists) is not trained
again, so an interrupted benchmark resumes where it stopped. The table (OUT/results.md) and the raw numbers
(OUT/results.json) give, per config, the mean ± std over seeds of the final and the best teacher mIoU (student
mIoU for SupOnly) and of the wall time (of the whole training process). Runs are read through
imas.rundir.read_run, like imas-report and imas-compare read them.

Exit status 0; 1 when a training fails; 2 with one sentence on stderr for bad input (an unknown row, a bad
--opt, a finished run made under other settings).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from imas import st_plus_plus
from imas.cli import run_command
from imas.config import load_config, to_dict
from imas.errors import RunDirError, UserError
from imas.experiment import load_experiment  # the method's settings class builds its section
from imas.models import ENCODERS
from imas.rundir import best_record, miou_of, read_run

REPO = Path(__file__).resolve().parents[1]  # the configs' paths are relative to the checkout

CONFIGS = {  # table row -> config; the first row is the baseline the others are compared with
    "SupOnly": "exps/toy/suponly.yaml",
    "iMAS": "exps/toy/imas.yaml",
    "mean teacher": "exps/toy/mean_teacher.yaml",
    "FixMatch": "exps/toy/fixmatch.yaml",
    "UniMatch": "exps/toy/unimatch.yaml",
    "CPS": "exps/toy/cps.yaml",
    "AugSeg": "exps/toy/augseg.yaml",
    "U2PL": "exps/toy/u2pl.yaml",
    "PS-MT": "exps/toy/ps_mt.yaml",
    "UniMatch V2": "exps/toy/unimatch_v2.yaml",
    "ST++": "exps/toy/st_plus_plus.yaml",  # a chain of three trainings (imas-st-plus-plus)
    "iMAS w/o loss weighting": "exps/toy/ablation_no_weighting.yaml",
    "iMAS w/o adaptive intensity": "exps/toy/ablation_no_adaptive_intensity.yaml",
    "iMAS w/ fixed-p random-pair CutMix": "exps/toy/ablation_fixed_cutmix.yaml",
    "UniMatch V2 w/o complementary dropout": "exps/toy/ablation_unimatch_v2_no_comp_drop.yaml",
    # The toy's ViT with the DPT head, from random weights: compare these rows with each other (their Δ
    # column is against the first row, the ResNet's SupOnly).
    "SupOnly (ViT)": "exps/toy/vit_suponly.yaml",
    "iMAS (ViT)": "exps/toy/vit_imas.yaml",
    "UniMatch V2 (ViT)": "exps/toy/vit_unimatch_v2.yaml",
}


_print_lock = threading.Lock()  # the pool's threads print whole lines


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="trainings run at once (default 2)")
    p.add_argument("--out", default="training-imas-logs/toy", help="output folder")
    p.add_argument("--rows", nargs="+", default=list(CONFIGS), help="subset of the table rows to run")
    p.add_argument("--data", default="data/toy", help="toy data folder (generated if missing)")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--opt", nargs="*", action="extend", default=[], help="overrides for every run")
    return p.parse_args(argv)


def run_name(config: str) -> str:
    return Path(config).stem


class BenchmarkError(Exception):
    """A training (or the preparation of its data) failed: one sentence for the user, exit status 1."""


def run_options(args: argparse.Namespace) -> list[str]:
    """The --opt overrides every training gets: the toy data folder, then the user's own."""
    return [f"data.root={args.data}", *args.opt]


def config_difference(saved: dict, config: str, seed: int, opts: list[str]) -> str | None:
    """How the resolved config a finished run saved (`saved`, its config.yaml) differs from what this
    invocation would train, e.g. "train.precision is bf16 there, fp32 now"; None if they agree (keys only one
    side has are skipped: they were added to, or removed from, the config schema in between)."""
    wanted = to_dict(load_experiment(REPO / config, opts))
    wanted["train"]["seed"] = seed
    for section, values in wanted.items():
        for key, value in values.items():
            if key == "run_dir" or key not in saved.get(section, {}):
                continue
            if saved[section][key] != value:
                return f"{section}.{key} is {saved[section][key]!r} there, {value!r} now"
    return None


def chain_result(config: str, opts: list[str]) -> str | None:
    """The run directory name, inside a chain's folder, of the run that is its result, for a config that
    imas-st-plus-plus runs; None for a config of one training."""
    cfg = load_experiment(REPO / config, opts)
    if cfg.train.method != st_plus_plus.METHOD:
        return None
    return st_plus_plus.final_stage(cfg)


def train_one(config: str, seed: int, out: Path, threads: int, args: argparse.Namespace) -> dict:
    """Train one (config, seed) unless it is already done; return its result record."""
    folder = out / run_name(config) / f"seed{seed}"  # the run directory, or the chain's folder
    result_file = folder / "result.json"
    stage = chain_result(config, run_options(args))
    run_dir = folder / stage if stage else folder  # the run whose evaluations are the result
    if result_file.is_file():
        finished = read_run(run_dir, per_image=False)  # one sentence where it is no run directory
        result = json.loads(result_file.read_text()) if stage else finished.result
        if result is None:
            raise RunDirError(
                f"{result_file} is not a result this script wrote: delete that folder to train it again"
            )
        saved = yaml.safe_load((folder / st_plus_plus.CHAIN_CONFIG).read_text()) if stage else finished.config
        difference = config_difference(saved, config, seed, run_options(args))
        if difference:
            raise RunDirError(
                f"{run_dir} was trained with other settings ({difference}): delete that folder to train it "
                "again, or choose another --out"
            )
        return result
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        "-m",
        "imas.st_plus_plus" if stage else "imas.train",
        "--config",
        config,
        "--run-dir",
        str(folder),
        "--seed",
        str(seed),
        "--device",
        "cpu",
    ]
    command += ["--opt", *run_options(args)]
    say(f"start  {run_name(config)} seed {seed}")
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "stdout.txt").open("a") as stdout:
        code = subprocess.call(command, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if code != 0:
        raise BenchmarkError(f"{config} seed {seed} failed with exit code {code}; see {folder}/stdout.txt")
    records = read_run(run_dir, per_image=False).evaluations
    if not records:
        raise BenchmarkError(f"{config} seed {seed} recorded no evaluation; see {folder}/stdout.txt")
    result = {
        "config": config,
        "seed": seed,
        "final_miou": 100 * miou_of(records[-1]),
        "best_miou": 100 * miou_of(best_record(records)),
        "epochs": records[-1]["epoch"],
        "model": records[-1]["model"],
        "wall_s": round(wall, 1),
        "threads": threads,
    }
    if not args.keep_checkpoints:
        for checkpoint in folder.rglob("*.pth"):  # a chain: every stage's
            checkpoint.unlink()
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    say(
        f"done   {run_name(config)} seed {seed}: final {result['final_miou']:.2f} "
        f"best {result['best_miou']:.2f} in {wall / 60:.1f} min"
    )
    return result


def cpu_description() -> str:
    """The CPU's model, ISA and native bf16, e.g. "AMD EPYC 7B13: AVX2, no native bf16" (imas.precision),
    asked in a subprocess like the trainings: this script never imports torch."""
    code = (
        "from imas.precision import cpu_description, cpu_model; print(f'{cpu_model()}: {cpu_description()}')"
    )
    return subprocess.check_output([sys.executable, "-c", code], cwd=REPO, text=True).strip()


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {std(values):.2f}"


def std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: dict[str, list[dict]]) -> str:
    """Markdown: one row per config, mean ± std over its seeds. A difference from the first row counts as
    beyond the seed spread when it is larger than the two rows' standard deviations added up."""
    lines = [
        "| method | config | seeds | final mIoU | best mIoU | Δ final vs first row | beyond the seed spread "
        "| wall time (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baseline: list[float] | None = None
    for name, results in rows.items():
        finals = [r["final_miou"] for r in results]
        if baseline is None:
            baseline, beyond = finals, "—"
        else:
            beyond = (
                "yes"
                if abs(statistics.mean(finals) - statistics.mean(baseline)) > std(finals) + std(baseline)
                else "no"
            )
        lines.append(
            f"| {name} | `{results[0]['config']}` | {', '.join(str(r['seed']) for r in results)} | "
            f"{mean_std(finals)} | {mean_std([r['best_miou'] for r in results])} | "
            f"{statistics.mean(finals) - statistics.mean(baseline):+.2f} | {beyond} | "
            f"{mean_std([r['wall_s'] / 60 for r in results])} |"
        )
    return "\n".join(lines) + "\n"


def prepare(args: argparse.Namespace) -> None:
    """The toy data and the pretrained backbones the rows start from, made once (kept when current)."""
    steps = [[sys.executable, "-m", "imas.data.toy", "--out", args.data, "--ensure"]]
    backbones = {}  # file -> what tools.toy_pretrain makes it from: a ViT's name, or a ResNet-18's width
    for row in args.rows:
        model = load_config(REPO / CONFIGS[row], run_options(args)).model
        if model.pretrained:
            vit = ENCODERS.get(model.encoder) == "vit"
            backbones[model.pretrained] = (
                ["--encoder", model.encoder] if vit else ["--width", str(model.backbone_width)]
            )
    for path, target in backbones.items():
        steps.append([sys.executable, "-m", "tools.toy_pretrain", "--out", path, *target, "--ensure"])
    for command in steps:
        try:
            subprocess.check_call(command, cwd=REPO)
        except subprocess.CalledProcessError as exc:
            raise BenchmarkError(f"{' '.join(command[1:])} failed with exit code {exc.returncode}") from None


def benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    unknown = [row for row in args.rows if row not in CONFIGS]
    if unknown:
        raise UserError(f"unknown row {unknown[0]!r}; the rows are: {', '.join(CONFIGS)}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    out = Path(args.out)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    work = [(CONFIGS[row], seed) for row in args.rows for seed in args.seeds]
    if any(not (out / run_name(c) / f"seed{s}" / "result.json").is_file() for c, s in work):
        prepare(args)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: train_one(*job, out, threads, args), work))
    total = time.perf_counter() - start
    rows = {row: [r for r in results if r["config"] == CONFIGS[row]] for row in args.rows}
    header = (
        f"Toy benchmark: {len(args.seeds)} seeds x {len(args.rows)} configs, {args.jobs} trainings at once "
        f"with {threads} CPU thread(s) each on {os.cpu_count()} cores ({cpu_description()}); "
        f"this invocation took {total / 60:.1f} min (runs already done are reused, not retimed).\n"
        f"Command: python tools/toy_benchmark.py {' '.join(argv if argv is not None else sys.argv[1:])}\n\n"
    )
    text = header + table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps({"total_s": round(total, 1), "runs": results}, indent=2) + "\n"
    )
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = parse_args(argv)
        try:
            return benchmark(args, argv)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
