"""tools/gpu_check.py: the dry run goes through every row on the CPU, and the runner records rows that time
out, run out of memory, fail or do not fit before the deadline, and keeps going; --out is tried before the
first row, an existing one is only continued (--resume) or replaced (--force), and it is written atomically;
the iMAS rows time a forced CutMix rate after warming up every shape they
time; peaks cover the timed steps; a call the deadline cuts says how to resume, --resume finishes, and it
refuses a JSON timed under other settings; the DINOv2-B rows run UniMatch V2 and iMAS on a ViT with the DPT
head, eager and under train.compile, beside the released UniMatch V2 runs."""

import dataclasses
import errno
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tools import gpu_check

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"gpu_tests", "voc_step", "shares", "voc_eval", "cityscapes", "torchrun", "compiled", "vit_step"}
VIT_ROWS = [
    "voc DINOv2-B UniMatch V2 {b} + {b} bf16",
    "voc DINOv2-B iMAS {b} + {b} bf16",
    "voc DINOv2-B UniMatch V2 {b} + {b} bf16 compiled",
    "voc DINOv2-B iMAS {b} + {b} bf16 compiled",
]


@pytest.mark.slow
def test_dry_run_goes_through_every_row(tmp_path):
    """The whole check on the CPU with tiny shapes, as a command: every section has rows that finished, step
    rows report a step time and memory, the torchrun run resumed, and the table is printed."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "tools.gpu_check", "--dry-run", "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["complete"] and report["torch"] == torch.__version__
    rows = report["rows"]
    assert {row["section"] for row in rows} == SECTIONS
    for row in rows:
        assert row["status"] == ("skipped" if row["section"] == "gpu_tests" else "ok"), row
    gpu_tests = next(row for row in rows if row["section"] == "gpu_tests")
    assert "no CUDA" in gpu_tests["notes"] and len(gpu_tests["tests"]) >= 2
    steps = [row for row in rows if row["section"] in ("voc_step", "compiled")]
    assert len(steps) == 18  # 2 methods x 2 batches x 2 precisions x channels_last on/off, and 2 compiled
    vit = [row for row in rows if row["section"] == "vit_step"]
    assert [row["name"] for row in vit] == [name.format(b=2) for name in VIT_ROWS]
    city = next(row for row in rows if row["name"].startswith("cityscapes iMAS"))
    for row in steps + vit + [city]:
        assert row["step_s"] > 0 and row["process_rss_gib"] > 0 and "no CUDA" in row["peak_missing"]
        assert row["peak_allocated_gib"] is None and row["peak_reserved_gib"] is None
        assert set(row["timed_batches"]) <= set(row["warmed_batches"]), row
        if row["method"] == "imas":
            assert row["cutmix_how"] == "forced 0.7" and row["cutmix_rate_timed"] == pytest.approx(0.7)
    compiled = [row for row in steps + vit if row["compiled"]]
    assert all(row["dynamo_compiles"] >= 1 and row["compile_s"] >= 0 for row in compiled)
    for row in vit:  # the dry run's stand-in for DINOv2-B: vit_toy (patch 6) at crop 48
        assert (row["encoder"], row["head"], row["optimizer"]) == ("vit_toy", "dpt", "adamw")
        assert (row["crop"], row["batch"], row["precision"], row["channels_last"]) == (48, 2, "bf16", False)
        assert row["released"]["s_per_iteration"] == 1.16 and row["released"]["memory_gb_per_gpu"] == 20
        assert row["step_s_over_released"] == pytest.approx(row["step_s"] / 1.16, abs=1e-3)
        assert ("train.compile=true" in row["overrides"]) == row["compiled"]
    # train.compile compiles the trained student; the EMA teacher's no-grad forward stays eager.
    assert all(row["compiled_modules"] == ["model"] for row in vit if row["compiled"])
    assert [row["method"] for row in vit] == ["unimatch_v2", "imas"] * 2
    shares = next(row for row in rows if row["section"] == "shares")
    assert 0 < shares["hardness_share"] < 1 and 0 < shares["ema_share"] < 1
    torchrun = next(row for row in rows if row["section"] == "torchrun")
    assert torchrun["resumed"] and torchrun["resumed_at_iteration"] == 10
    assert torchrun["metrics_iterations"] == [10, 20] and [p["rc"] for p in torchrun["phases"]] == [0, 0]
    assert report["projection"]["steps"] == 46_240 and report["projection"]["total_hours"] > 0
    assert "| row | status | step s | peak GiB allocated / reserved | notes |" in result.stdout
    assert all(f"| {row['name']} | {row['status']} |" in result.stdout for row in rows)


def fake_row(name: str, fn, min_s: float = 0.0) -> gpu_check.Row:
    return gpu_check.Row(name, "voc_step", "step", fn, min_s=min_s)


def test_rows_that_fail_are_recorded_and_the_run_goes_on(tmp_path):
    """A timeout (with what the row learnt before it), an OOM and an error each end their row only; a row
    that would start after the deadline is skipped; the JSON is written whatever happened."""
    scale = dataclasses.replace(gpu_check.make_scale(dry_run=True, deadline=2.0), budget_s={"step": 0.3})

    def slow(ctx):
        ctx.partial["call_s"] = [0.1]
        time.sleep(5)
        return {}

    def oom(ctx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken(ctx):
        raise ValueError("a bad\nvalue")

    rows = [
        fake_row("fine", lambda ctx: {"step_s": 0.5, "batch": scale.batches[1], "method": "imas"}),
        fake_row("slow", slow),
        fake_row("oom", oom),
        fake_row("broken", broken),
        fake_row("late", lambda ctx: {}, min_s=60.0),
    ]
    out = tmp_path / "gpu.json"
    report = gpu_check.run_rows(rows, scale, out, time.monotonic())
    statuses = {row["name"]: row["status"] for row in report["rows"]}
    assert statuses == {
        "fine": "ok",
        "slow": "timeout",
        "oom": "oom",
        "broken": "error",
        "late": "not started",
    }
    by_name = {row["name"]: row for row in report["rows"]}
    assert by_name["slow"]["call_s"] == [0.1] and by_name["slow"]["seconds"] < 2
    assert by_name["broken"]["notes"] == "ValueError: a bad value"
    assert json.loads(out.read_text())["rows"] == report["rows"] and not report["complete"]
    # The projection takes the fastest finished iMAS step at the single-GPU batch: 46,240 x 0.5 s
    assert report["projection"]["train_hours"] == round(46_240 * 0.5 / 3600, 2)


def test_the_dinov2_rows_run_the_new_recipe_at_the_released_size(monkeypatch):
    """On a GPU the DINOv2-B rows come right after the rows the projection needs (compiled: before the long
    tail) and load as configs at the released size: dinov2_vitb14 with the DPT head at crop 518 (a multiple of
    the patch, 14), 4 + 4, bf16, UniMatch V2's optimiser, train.compile for the compiled ones."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the Scale only names the device
    scale = gpu_check.make_scale(dry_run=False, deadline=None)
    names = [row.name for row in gpu_check.plan(scale)]
    vit = [name.format(b=4) for name in VIT_ROWS]
    first = names.index("voc iMAS 16 + 16 bf16 channels_last compiled") + 1
    assert names[first : first + 2] == vit[:2]
    compiled = names.index(vit[2])
    assert names[compiled - 1 : compiled + 3] == [
        "torchrun stop and resume",
        *vit[2:],
        "voc iMAS 16 + 16 fp32 channels_last",  # the long tail's first row
    ]
    for method, config in (("unimatch_v2", gpu_check.VOC_SUPONLY), ("imas", gpu_check.VOC_IMAS)):
        for run_compiled in (False, True):
            overrides = gpu_check.step_overrides(
                scale, method, scale.vit_batch, scale.vit_crop, "bf16", False, run_compiled, vit=True
            )
            cfg = gpu_check.load_experiment(config, overrides)
            m, t, o = cfg.model, cfg.train, cfg.optim
            assert (m.encoder, m.head.value, m.pretrained) == ("dinov2_vitb14", "dpt", "")
            assert cfg.data.crop_size == 518
            assert (t.method, t.batch_size, t.precision.value) == (method, 4, "bf16")
            assert (t.compile, t.channels_last) == (run_compiled, False)
            assert (o.kind.value, o.lr, o.decoder_lr_mult, o.weight_decay) == ("adamw", 5e-6, 40.0, 0.01)
    # A UniMatch V2 step trains the labeled images and the two strong views; its CutMix adds no image.
    assert gpu_check.StepShapes(batch=4, base=12).student_batch(0.5) == 12


def test_cuda_tests_are_found_and_pytest_summaries_read():
    ids = gpu_check.cuda_test_ids(REPO / "tests")
    assert any(i.startswith("tests/test_hardness.py::test_") for i in ids)
    assert any(i.startswith("tests/test_augment.py::test_") for i in ids)
    assert gpu_check.pytest_counts("..\n2 passed, 1 skipped in 3.10s\n") == {"passed": 2, "skipped": 1}
    assert gpu_check.pytest_counts("1 failed, 1 passed, 2 errors in 1s") == {
        "failed": 1,
        "passed": 1,
        "error": 2,
    }
    assert gpu_check.pytest_counts("") == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_a_real_run_is_refused_in_one_sentence(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CUDA device") and "--dry-run" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "gpu.json").exists()


# ------------------------------------------------------------------------------------------------ --out


@pytest.fixture
def torch_settings():
    """One thread, as a dry run sets (tiny tensors are slower on more); main() also turns on cuDNN's
    autotuning: the test process gets its own settings back."""
    threads, autotune = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = autotune


def no_row_may_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a row ran although --out cannot be written")

    monkeypatch.setattr(gpu_check, "run_row", refuse)


def read_only_folder(tmp_path, monkeypatch) -> Path:
    """A folder in which no file can be created: chmod 555, and where the tests run as root (whom the mode
    does not stop) creating a file in it fails as it would for anyone else."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        mkstemp = gpu_check.tempfile.mkstemp

        def denied(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise PermissionError(errno.EACCES, "Permission denied")
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(gpu_check.tempfile, "mkstemp", denied)
    return folder


@pytest.mark.parametrize("case", ["folder is a file", "read-only folder", "path is a folder"])
def test_an_out_that_cannot_be_written_is_refused_before_the_first_row(tmp_path, monkeypatch, capsys, case):
    no_row_may_run(monkeypatch)
    if case == "folder is a file":
        (tmp_path / "results").write_text("not a folder")
        out, expected = tmp_path / "results" / "gpu.json", "is a file, not a folder"
    elif case == "read-only folder":
        out, expected = read_only_folder(tmp_path, monkeypatch) / "gpu.json", "Permission denied"
    else:
        out, expected = tmp_path, "is a folder"
    try:
        assert gpu_check.main(["--dry-run", "--out", str(out), "--only", "voc iMAS"]) == 2
    finally:
        (tmp_path / "read-only").exists() and (tmp_path / "read-only").chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and str(out) in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------------------- atomic write


def only_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_failed_write_keeps_the_previous_json_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "gpu.json"
    gpu_check.write({"rows": [{"name": "first"}]}, out)
    gpu_check.write({"rows": [{"name": "second"}]}, out)
    assert json.loads(out.read_text()) == {"rows": [{"name": "second"}]} and only_files(tmp_path) == [
        "gpu.json"
    ]
    assert out.stat().st_mode & 0o777 == 0o644

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gpu_check.os, "fsync", disk_full)
    with pytest.raises(gpu_check.UserError) as error:
        gpu_check.write({"rows": [{"name": "third"}] * 1000}, out)
    assert (
        str(error.value)
        == f"{out} could not be written (no space left on device); the previous gpu.json is kept"
    )
    assert json.loads(out.read_text()) == {"rows": [{"name": "second"}]}
    assert only_files(tmp_path) == ["gpu.json"]


def test_a_failed_first_write_says_nothing_was_written(tmp_path, monkeypatch):
    """With no earlier file there is no previous version to keep: the sentence says so."""
    out = tmp_path / "gpu.json"

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gpu_check.os, "fsync", disk_full)
    with pytest.raises(gpu_check.UserError) as error:
        gpu_check.write({"rows": []}, out)
    assert str(error.value) == f"{out} could not be written (no space left on device); nothing was written"
    assert only_files(tmp_path) == []


def fake_rows(monkeypatch, only_first: bool = False) -> list[str]:
    """Rows that finish at once without measuring anything (with only_first, the deadline leaves all but
    the first of a call): the names of those run, in order."""
    ran = []

    def finished(row, scale, results, deadline, first):
        if only_first and not first:
            return {"name": row.name, "section": row.section, "status": "not started"}
        ran.append(row.name)
        return {"name": row.name, "section": row.section, "status": "ok", "seconds": 0.0}

    monkeypatch.setattr(gpu_check, "run_row", finished)
    return ran


@pytest.mark.parametrize("existing", [True, False])
def test_a_full_disk_during_a_run_stops_it_in_one_sentence(
    tmp_path, monkeypatch, capsys, torch_settings, existing
):
    out = tmp_path / "gpu.json"
    if existing:
        out.write_text('{"previous": true}\n')
    fake_rows(monkeypatch)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gpu_check.os, "fsync", disk_full)
    argv = ["--dry-run", "--out", str(out), "--only", "gpu tests"] + (["--force"] if existing else [])
    assert gpu_check.main(argv) == 2
    err = capsys.readouterr().err.strip()
    kept = "the previous gpu.json is kept" if existing else "nothing was written"
    assert err == f"error: {out} could not be written (no space left on device); {kept}"
    assert only_files(tmp_path) == (["gpu.json"] if existing else [])
    if existing:
        assert json.loads(out.read_text()) == {"previous": True}


def test_an_existing_out_is_refused_unless_resume_or_force(tmp_path, monkeypatch, capsys, torch_settings):
    """A finished measurement is not overwritten by a call that forgot --resume: refused before any row in
    one sentence that names both ways on; --force replaces it, --resume continues it, both together are
    refused."""
    out = tmp_path / "gpu.json"
    out.write_text('{"finished": true}\n')
    no_row_may_run(monkeypatch)
    argv = ["--dry-run", "--out", str(out), "--only", "whole-image"]
    assert gpu_check.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --out {out} exists already and would be overwritten; add --resume to continue it or --force "
        "to replace it"
    )
    assert json.loads(out.read_text()) == {"finished": True}
    assert gpu_check.main([*argv, "--resume", "--force"]) == 2
    assert "not both" in capsys.readouterr().err and json.loads(out.read_text()) == {"finished": True}
    ran = fake_rows(monkeypatch, only_first=True)
    argv = ["--dry-run", "--out", str(out), "--only", "whole-image", "voc iMAS 2 + 2 fp32"]
    assert gpu_check.main([*argv, "--force"]) == 0 and ran == ["voc whole-image eval bf16"]
    report = json.loads(out.read_text())
    assert [row["name"] for row in report["rows"]][:1] == ran and "finished" not in report
    # The command that continues resumes the JSON just written instead of replacing it again.
    assert report["resume_command"] == shlex.join(["python", "-m", "tools.gpu_check", *argv, "--resume"])
    assert f"continue with: {report['resume_command']}" in capsys.readouterr().out


# --------------------------------------------------------------------------------- CutMix and warm-up


def imas_row(tmp_path: Path, rate, compiled: bool = False, budget: float | None = None) -> dict:
    """A real dry-run iMAS step row at batch 4: two CutMix groups of 2 (the 16 + 16 row has four of 4)."""
    scale = gpu_check.make_scale(dry_run=True, deadline=60.0, cutmix_rate=rate)
    section = "compiled" if compiled else "voc_step"
    budget_key = section if compiled else "step"
    if budget is not None:
        scale = dataclasses.replace(scale, budget_s=scale.budget_s | {budget_key: budget})
    precision = "bf16" if compiled else "fp32"
    fn = gpu_check.step_row(gpu_check.VOC_IMAS, "imas", 4, precision, compiled, compiled, "voc_crop")
    row = gpu_check.Row("iMAS 4 + 4", section, budget_key, fn, min_s=0.0)
    return gpu_check.run_rows([row], scale, tmp_path / "gpu.json", time.monotonic())["rows"][0]


def test_the_cutmix_rate_is_forced_and_recorded(tmp_path, torch_settings):
    """Under random weights iMAS's easiness is about 0 and CutMix about never fires; forced to 0.7, two groups
    per batch fire 1 and 2 times with weights 0.6 and 0.4, which the method's own cutmix_rate scalar confirms,
    and the row says so. The trigger is the package's again afterwards."""
    original = gpu_check.cutmix.trigger
    row = imas_row(tmp_path, 0.7)
    assert row["status"] == "ok", row
    assert (row["cutmix_rate"], row["cutmix_how"], row["cutmix_groups_per_batch"]) == (0.7, "forced 0.7", 2)
    assert row["cutmix_rate_timed"] == pytest.approx(0.7)
    phases = [(p["cutmix_groups"], p["weight"], set(p["cutmix_rates"])) for p in row["phases"]]
    assert phases == [(1, pytest.approx(0.6), {0.5}), (2, pytest.approx(0.4), {1.0})]
    assert row["step_s"] == pytest.approx(
        0.6 * row["phases"][0]["step_s"] + 0.4 * row["phases"][1]["step_s"], abs=2e-4
    )
    assert "CutMix forced 0.7" in row["notes"] and gpu_check.cutmix.trigger is original
    drawn = imas_row(tmp_path, None)
    assert drawn["cutmix_how"] == "as drawn" and drawn["cutmix_rate"] == drawn["cutmix_rate_timed"] < 0.5
    every = imas_row(tmp_path, 1.0)
    assert every["cutmix_rate_timed"] == 1.0 and every["timed_batches"] == [16]  # 4 + 4 + 4 views + 4 mixed


def test_forced_rates_mix_the_two_whole_numbers_of_groups_around_them():
    def shapes(rate, groups=4):
        return gpu_check.StepShapes(batch=16, base=48, group_size=4, groups=groups, rate=rate)

    mix = shapes(0.7).mix()
    assert [count for count, _ in mix] == [2, 3] and sum(c * w for c, w in mix) == pytest.approx(0.7 * 4)
    assert (
        shapes(0.5).mix() == [(2, 1.0)]
        and shapes(1.0).mix() == [(4, 1.0)]
        and shapes(0.0).mix() == [(0, 1.0)]
    )
    assert shapes(None).mix() == [(None, 1.0)] and shapes(None).warm_counts() == [0, 1, 2, 3, 4]
    assert shapes(0.7).warm_counts() == [2, 3] and shapes(0.7).student_batch(0.75) == 60
    assert gpu_check.split_steps([0.2, 0.8], 8) == [2, 6] and gpu_check.split_steps([0.3, 0.7], 2) == [1, 1]
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--out", "x.json", "--cutmix-rate", "1.5"])
    assert gpu_check.parse_args(["--out", "x.json", "--cutmix-rate", "drawn"]).cutmix_rate is None


def test_the_warm_up_covers_every_shape_the_timed_steps_see(tmp_path, torch_settings):
    """As drawn, any number of groups can fire: the warm-up forces each of them (student batches 12, 14 and
    16 at 4 + 4) before the draws are timed; forced, the two timed shapes are warmed."""
    drawn = imas_row(tmp_path, None)
    assert drawn["warmed_batches"] == [12, 14, 16] and drawn["warmup_steps"] == 3
    assert set(drawn["timed_batches"]) <= set(drawn["warmed_batches"])
    forced = imas_row(tmp_path, 0.7)
    assert forced["warmed_batches"] == forced["timed_batches"] == [14, 16]


def test_peaks_cover_only_the_timed_steps(monkeypatch):
    """The peak statistics are reset after the last warm-up step and before the first timed one; CUDA's
    allocated and reserved peaks are both reported, and on a CPU both are None with the reason."""
    events = []
    monkeypatch.setattr(gpu_check, "reset_peak", lambda device: events.append("reset"))

    def step():
        events.append("step")
        return torch.tensor(0.5)

    shapes = gpu_check.StepShapes(batch=4, base=12, group_size=2, groups=2, rate=0.7)
    ctx = gpu_check.Context(gpu_check.make_scale(dry_run=True, deadline=10.0), [])
    out = gpu_check.measure_step(step, shapes, 2, ctx, lambda seconds: None)
    assert events == ["step"] * 4 + ["reset"] + ["step"] * 2 and out["warmup_steps"] == 4
    cpu = gpu_check.peak(torch.device("cpu"))
    assert cpu["peak_allocated_gib"] is None and cpu["peak_reserved_gib"] is None and cpu["peak_missing"]
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: 5 * 2**30)
    assert gpu_check.peak(torch.device("cuda", 0)) == {"peak_allocated_gib": 3.0, "peak_reserved_gib": 5.0}


# ------------------------------------------------------------------------------------- over budget


def test_a_compiled_row_past_its_budget_says_how_long_it_compiled(tmp_path):
    """A compiled row cut by its budget is "over budget" with the compile seconds so far, in the JSON and
    the table, whether its first (compiling) step had finished or not; a deadline cut is told apart."""
    scale = dataclasses.replace(gpu_check.make_scale(dry_run=True, deadline=30.0), budget_s={"compiled": 0.4})

    def compiling(ctx):
        time.sleep(5)

    def compiled_then_slow(ctx):
        ctx.partial["call_s"] = [0.25, 0.01]
        time.sleep(5)

    rows = [
        gpu_check.Row("first step compiling", "compiled", "compiled", compiling, min_s=0.0),
        gpu_check.Row("compiled, steps slow", "compiled", "compiled", compiled_then_slow, min_s=0.0),
    ]
    report = gpu_check.run_rows(rows, scale, tmp_path / "gpu.json", time.monotonic())
    first, second = report["rows"]
    assert first["status"] == second["status"] == "over budget" and first["cut_by"] == "budget"
    assert first["notes"].startswith("over budget: compile took at least 0 s of the 0.4 s budget")
    assert 0.3 < first["compile_s_at_cut"] < 2 and first["steps_done"] == 0
    assert second["compile_s_at_cut"] == 0.2 and second["steps_done"] == 2 and not report["complete"]
    assert json.loads((tmp_path / "gpu.json").read_text())["rows"] == report["rows"]
    assert "| first step compiling | over budget |" in gpu_check.table(report)
    late = dataclasses.replace(scale, budget_s={"compiled": 60.0}, deadline_s=0.4)
    cut = gpu_check.run_rows(rows[:1], late, tmp_path / "late.json", time.monotonic())["rows"][0]
    assert (
        cut["cut_by"] == "deadline"
        and "left before the deadline" in cut["notes"]
        and gpu_check.unfinished(cut)
    )


@pytest.mark.slow
def test_a_real_compile_past_its_budget_is_over_budget(tmp_path, torch_settings):
    """torch.compile's first step (the eager backend, a dry run) cut by a budget shorter than it."""
    torch._dynamo.reset()  # a graph cached by an earlier test would compile in no time
    row = imas_row(tmp_path, 0.7, compiled=True, budget=0.05)
    assert row["status"] == "over budget" and row["notes"].startswith("over budget: compile took"), row


# ------------------------------------------------------------------------------------------ resume


def test_a_deadline_cut_says_how_to_continue_and_resume_finishes(tmp_path, capsys, torch_settings):
    """--deadline 1: the first row of each call runs and the others wait; the call prints the exact command
    that continues, which runs with --resume until every row is in the JSON exactly once."""
    out = tmp_path / "gpu.json"
    only = ["voc iMAS 2 + 2 fp32", "whole-image"]
    argv = ["--dry-run", "--out", str(out), "--deadline", "1", "--only", *only]
    expected = [
        row.name
        for row in gpu_check.plan(gpu_check.make_scale(True, 1.0))
        if any(t in row.name for t in only)
    ]
    assert len(expected) == 3
    calls = 0
    while argv is not None:
        assert gpu_check.main(argv) == 0
        calls += 1
        lines = capsys.readouterr().out.splitlines()
        report = json.loads(out.read_text())
        if calls == 1:
            statuses = [row["status"] for row in report["rows"]]
            assert statuses == ["ok", "not started", "not started"] and not report["complete"]
        follow = [
            line.removeprefix("continue with: ") for line in lines if line.startswith("continue with: ")
        ]
        if not follow:
            break
        command = shlex.split(follow[0])
        assert command[:3] == ["python", "-m", "tools.gpu_check"] and "--resume" in command
        assert report["resume_command"] == follow[0]
        argv = command[3:]
    assert calls == 3
    names = [row["name"] for row in report["rows"]]
    assert sorted(names) == sorted(expected) and len(names) == len(set(names))
    assert all(row["status"] == "ok" for row in report["rows"]) and report["complete"]
    assert len(report["commands"]) == 3 and "resume_command" not in report
    assert gpu_check.main(argv) == 0  # nothing left: said so, the JSON as it was
    assert "nothing to resume" in capsys.readouterr().out and json.loads(out.read_text()) == report


def test_resume_refuses_a_missing_or_foreign_json(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--resume"]) == 2
    assert "does not exist; run without --resume first" in capsys.readouterr().err
    out.write_text(json.dumps({"device": "another cpu", "dry_run": True, "rows": []}))
    assert gpu_check.main(["--dry-run", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was measured on another cpu (dry run), not on cpu" in err and len(err.splitlines()) == 1


def test_resume_refuses_a_json_timed_under_other_settings(tmp_path, monkeypatch, capsys, torch_settings):
    """Rows timed at one CutMix rate (or in a dry run, or with another torchrun) are not continued under
    another: one sentence names the option and both values; the same options resume."""
    out = tmp_path / "gpu.json"
    ran = fake_rows(monkeypatch)
    first = ["--dry-run", "--out", str(out), "--deadline", "1", "--only", "voc iMAS 2 + 2 fp32"]
    assert gpu_check.main([*first, "--cutmix-rate", "0.7"]) == 0
    written = json.loads(out.read_text())
    assert written["settings"] == {"dry_run": True, "cutmix_rate": 0.7, "torchrun_procs": 1}
    written["rows"][1:] = [dict(row, status="not started") for row in written["rows"][1:]]
    out.write_text(json.dumps(written))
    ran.clear()
    assert gpu_check.main([*first, "--cutmix-rate", "drawn", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --resume: {out} was timed with --cutmix-rate 0.7 and this call has --cutmix-rate drawn, "
        "which would mix rows timed under two settings; resume with --cutmix-rate 0.7 or give another --out"
    )
    assert gpu_check.main([*first, "--torchrun-procs", "2", "--resume"]) == 2
    assert "--torchrun-procs 1 and this call has --torchrun-procs 2" in capsys.readouterr().err
    assert ran == [] and json.loads(out.read_text()) == written
    assert gpu_check.main([*first, "--resume"]) == 0 and ran == [row["name"] for row in written["rows"][1:]]
    capsys.readouterr()
    # A JSON of a real run (no --dry-run) is not continued by a dry run, whatever its device.
    real = dict(written, dry_run=False, settings=dict(written["settings"], dry_run=False))
    out.write_text(json.dumps(real))
    assert gpu_check.main([*first, "--resume"]) == 2
    err = capsys.readouterr().err
    assert (
        "was timed with --dry-run off and this call has --dry-run on" in err
        and "resume without --dry-run" in err
    )
    # A JSON written before the settings were recorded: its iMAS rows say the rate they were forced to.
    old = {key: value for key, value in written.items() if key != "settings"}
    old["rows"] = [dict(row, cutmix_rate=0.5, cutmix_how="forced 0.5") for row in written["rows"]]
    out.write_text(json.dumps(old))
    assert gpu_check.main([*first, "--resume"]) == 2
    assert "--cutmix-rate 0.5 and this call has --cutmix-rate 0.7" in capsys.readouterr().err
