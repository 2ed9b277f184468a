"""docs/data.md's walk-through of a custom dataset, run as written: the commands of its marked blocks, one by
one with /bin/sh, in a folder holding the CPU template (the first command writes the tiny dataset)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imas.data.example import LABELED, NEW, SIDE, UNLABELED

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "data.md"
MARK = "<!-- walk-through:"  # the HTML comment before each block that is run


def walkthrough_blocks(text: str) -> list[str]:
    """The ```sh blocks that follow a walk-through mark, in order."""
    blocks = re.findall(re.escape(MARK) + r"[^\n]*-->\n+```sh\n(.*?)```", text, flags=re.S)
    assert len(blocks) == text.count(MARK), "every mark is followed by a ```sh block"
    return blocks


def commands(block: str) -> list[str]:
    """The commands of a block: comment lines dropped, a line ending in a backslash (or a pipe) continued."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line + "\n"
        if not line.rstrip().endswith(("|", "\\", "&&")):
            out.append(pending.strip())
            pending = ""
    assert not pending, f"a command runs past the end of its block: {pending!r}"
    return out


def test_the_walkthrough_is_marked_and_posix() -> None:
    text = DOC.read_text(encoding="utf-8")
    # The layout the walk-through shows is the one its first command (imas.data.example) writes.
    for name in (
        f"data/mine/images/img01.jpg ... img{LABELED + UNLABELED:02d}.jpg",
        f"data/mine/masks/img01.png ... img{LABELED:02d}.png",
        "new_photos/photo1.jpg, photo2.jpg",
    ):
        assert name in text, name
    blocks = walkthrough_blocks(text)
    script = "\n".join(c for block in blocks for c in commands(block))
    needed_commands = (
        "python -m imas.data.example",
        "imas-data check",
        "imas-train",
        "imas-eval",
        "imas-predict",
    )
    for needed in (*needed_commands, "imas-predict", "exps/custom/imas_cpu.yaml"):
        assert needed in script, needed
    # bash-only syntax (process substitution, [[ ]], $RANDOM, brace ranges, source) and GNU-only shuf
    for pattern in (r"<\(", r">\(", r"\[\[", r"\bshuf\b", r"\$RANDOM", r"\{\d+\.\.", r"^source "):
        assert not re.search(pattern, script, flags=re.M), pattern
    # /bin/sh parses every command (dash on Debian: no bash extensions)
    result = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    template = tmp_path / "exps/custom/imas_cpu.yaml"
    template.parent.mkdir(parents=True)
    shutil.copy(REPO / "exps/custom/imas_cpu.yaml", template)
    # The installed commands (imas-train, ...) of this interpreter, one thread each.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, PATH=path, OMP_NUM_THREADS="1")
    outputs = []
    for block in walkthrough_blocks(DOC.read_text(encoding="utf-8")):
        for command in commands(block):
            result = subprocess.run(
                ["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            outputs.append(result.stdout + result.stderr)
    mine = tmp_path / "data/mine"
    counts = {
        name: len((mine / f"{name}.txt").read_text().split()) for name in ("labeled", "val", "unlabeled")
    }
    assert counts == {"labeled": 8, "val": 4, "unlabeled": 12}, counts
    assert any("every file checked, no problems" in out for out in outputs)
    assert (tmp_path / "runs/mine/best.pth").is_file()
    assert (tmp_path / "runs/mine/best.pth.teacher.eval.json").is_file()
    for n in range(1, NEW + 1):
        prediction = tmp_path / f"runs/predictions/mine/best/photo{n}.png"
        assert Image.open(prediction).size == (SIDE, SIDE)
        assert (tmp_path / f"runs/predictions/mine/best/photo{n}_overlay.jpg").is_file()


def test_the_example_dataset_is_written_once_and_never_over_yours(tmp_path: Path, capsys) -> None:
    from imas.data.example import main

    assert main([str(tmp_path)]) == 0
    masks = sorted(p.name for p in (tmp_path / "data/mine/masks").iterdir())
    assert masks == [f"img{n:02d}.png" for n in range(1, LABELED + 1)]
    assert len(list((tmp_path / "data/mine/images").iterdir())) == LABELED + UNLABELED
    mask = np.asarray(Image.open(tmp_path / "data/mine/masks/img01.png"))
    assert mask.shape == (SIDE, SIDE) and set(np.unique(mask)) == {0, 1, 2}
    before = (tmp_path / "data/mine/images/img01.jpg").read_bytes()
    assert main([str(tmp_path)]) == 2
    assert "data/mine exists already; move it or give another folder" in capsys.readouterr().err
    assert (tmp_path / "data/mine/images/img01.jpg").read_bytes() == before
